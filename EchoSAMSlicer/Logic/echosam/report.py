"""The clinical report of a segmented loop: ``report.json``, ``report.csv`` and ``lv_curve.png``.

- ``report.json``: summary (EF %, EDV/ESV ml, ED/ES frames, status), the per-beat table, the
  per-frame curves and free-form ``info`` (cine, model, prompts).
- ``report.csv``: one row per frame: ``frame, time_s, lv_area_mm2, lv_length_mm,
  lv_volume_al_ml`` (area-length), ``lv_volume_disks_ml`` (method of disks), ``phase`` (ED/ES/"").
- ``lv_curve.png``: LV volume (both methods) against time with ED and ES marked (matplotlib Agg).

Every file is written atomically (temp file + rename); see `cardiac` for the definitions.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from .cardiac import CardiacResult
from .io.atomic import atomic_file

REPORT_FILES = ("report.json", "report.csv", "lv_curve.png")


def report_dict(res: CardiacResult, info: Optional[dict] = None) -> dict:
    r = lambda a: [None if not np.isfinite(v) else round(float(v), 4) for v in a]  # noqa: E731
    return {"format": "echosam-report", "version": 1, "summary": res.summary(), "info": dict(info or {}),
            "frames": {"time_s": r(res.times_s), "lv_area_mm2": r(res.area_mm2), "lv_length_mm": r(res.length_mm),
                       "lv_volume_al_ml": r(res.volume_al_ml), "lv_volume_disks_ml": r(res.volume_disks_ml)}}


def report_csv(res: CardiacResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["frame", "time_s", "lv_area_mm2", "lv_length_mm", "lv_volume_al_ml", "lv_volume_disks_ml", "phase"])
    ed, es = set(res.ed_frames), set(res.es_frames)
    for t in range(len(res.times_s)):
        phase = "ED" if t in ed else "ES" if t in es else ""
        w.writerow([t, f"{res.times_s[t]:.4f}", f"{res.area_mm2[t]:.3f}", f"{res.length_mm[t]:.3f}",
                    f"{res.volume_al_ml[t]:.4f}", f"{res.volume_disks_ml[t]:.4f}", phase])
    return buf.getvalue()


def plot_lv_curve(res: CardiacResult, path, title: str = "LV volume") -> Path:
    """LV volume curve with ED (triangles up) and ES (triangles down) to a PNG, atomically."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot(111)
    t = res.times_s
    ax.plot(t, res.volume_al_ml, "-", color="#c0392b", label="area-length")
    ax.plot(t, res.volume_disks_ml, "--", color="#2c7fb8", label="method of disks")
    if res.ed_frames:
        ax.plot(t[res.ed_frames], res.volume_al_ml[res.ed_frames], "^", color="k", label="ED")
    if res.es_frames:
        ax.plot(t[res.es_frames], res.volume_al_ml[res.es_frames], "v", color="#7f7f7f", label="ES")
    if res.glitch_frames:               # shown, so that the user looks at those frames
        ax.plot(t[res.glitch_frames], res.volume_al_ml[res.glitch_frames], "x", color="#e67e22", ms=8,
                label="one-frame glitch")
    ef = "n/a" if not np.isfinite(res.ef_percent) else f"{res.ef_percent:.1f} %"
    ax.set_title(f"{title}: EF {ef} ({res.status})", fontsize=10, parse_math=False)   # a name may hold $...$
    ax.set_xlabel("time (s)")
    ax.set_ylabel("volume (ml)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def write_report(res: CardiacResult, outdir, info: Optional[dict] = None, title: str = "LV volume") -> list:
    """Write report.json, report.csv and lv_curve.png into ``outdir`` (a folder being built: callers
    publish the whole result folder at once, `pipeline`); returns the paths."""
    outdir = Path(outdir)
    paths = [outdir / n for n in REPORT_FILES]
    with atomic_file(paths[0]) as tmp:
        tmp.write_text(json.dumps(report_dict(res, info), indent=1) + "\n")
    with atomic_file(paths[1]) as tmp:
        tmp.write_text(report_csv(res))
    plot_lv_curve(res, paths[2], title)
    return paths


def ef_accuracy_note(meta: Optional[dict]) -> Optional[str]:
    """One line on how far this model's EF was from the truth where the truth was known (its checkpoint's
    ``provenance.ef_accuracy``, written by ``training.package_demo`` from its held-out evaluation), so an EF
    is never shown without the error the model is known to make; None when the checkpoint records none."""
    acc = ((meta or {}).get("provenance") or {}).get("ef_accuracy") or {}
    sets = [r for r in acc.get("sets") or [] if np.isfinite(r.get("mae", np.nan))]
    if not sets:
        return None
    mae = [float(r["mae"]) for r in sets]
    bias = [float(r["bias"]) for r in sets]
    loops = sum(int(r.get("loops", 0)) for r in sets)
    span = lambda v, f: f.format(v[0]) if min(v) == max(v) else f"{f.format(min(v))} to {f.format(max(v))}"  # noqa: E731
    return (f"EF error of this model where the truth was known ({acc.get('data', 'held-out loops')}): mean "
            f"absolute {span(mae, '{:.1f}')} points, bias {span(bias, '{:+.1f}')} "
            f"({len(sets)} set{'s' if len(sets) > 1 else ''}, {loops} loops); treat its EF as indicative.")


def calibration_note(metadata: Optional[dict]) -> Optional[str]:
    """One line when the cine's file gives no pixel spacing (``metadata["spacing_known"]`` False: a DICOM
    without PixelSpacing or an ultrasound region, a video, PNGs): its areas and volumes were computed with
    1 mm pixels and are not mm² / ml. The EF and the ED/ES frames do not depend on the spacing."""
    if (metadata or {}).get("spacing_known", True):
        return None
    return ("the file gives no pixel spacing: 1 mm pixels assumed, so LV areas and volumes are not mm² / ml (the EF "
            "and ED/ES frames do not depend on it); for volumes, give the cine its calibration (a DICOM ultrasound "
            "region or PixelSpacing, an NRRD's spacing).")


def format_summary(res: CardiacResult) -> str:
    """One short human-readable block for the terminal."""
    if res.status in ("no LV", "too short", "no plausible LV", "implausible EF", "no cardiac cycle"):
        return res.message
    lines = [f"EF {res.ef_percent:.1f} %  EDV {res.edv_ml:.1f} ml  ESV {res.esv_ml:.1f} ml  ({res.status})"]
    shown = 6  # a long loop has dozens of beats: the full table is in report.csv
    for b in res.beats[:shown]:
        lines.append(f"  beat ED {b.ed_frame} -> ES {b.es_frame}: EDV {b.edv_ml:.1f} ml, ESV {b.esv_ml:.1f} ml, "
                     f"EF {b.ef_percent:.1f} %")
    if len(res.beats) > shown:
        lines.append(f"  ... {len(res.beats) - shown} more beats in report.csv")
    if res.status != "cycles":
        lines.append("  " + res.message)
    return "\n".join(lines)
