"""One cine end to end: read, segment (prompted or prompt-free), report, publish. The CLI
(`echosam segment | correct | report | demo`), batch work and tests call these functions.

- `segment_cine`: a cine file -> an output folder with labels (``labels.seq.nrrd`` and/or
  ``labels.nii.gz``), ``overlay.mp4``, ``report.json/csv``, ``lv_curve.png``, ``run.json`` and the saved
  ``session/`` (embeddings + prompts, for `correct`).
- `correct`: a corrected mask on frame K of a saved result, re-propagated without re-encoding.
- `report_labels`: the clinical table (EF, volumes, ED/ES) of an existing label map.
- `run_demo`: a phantom cine segmented with the bundled demo model, Dice and EF vs the truth.

Outputs are built in a temporary folder next to the output folder and swapped in only when complete,
so an error never leaves a half-written result (an existing folder stays as it was).
Points/box prompts apply to the FIRST structure; a mask file (label map) seeds every listed structure
present on its frame.

The ultrasound region (`echosam.fan`, ``region="auto" | "off" | (x0, y0, x1, y1)``) comes first: the
model sees only the fan's crop (0 outside the fan), prompts in full-frame pixels are mapped into the
crop (`map_prompts`), and labels are mapped back onto the full frame (nothing outside the fan) before
anything is written. ``run.json`` records the region (``region``: source, bbox, fan fraction, notice)
and ``fan_mask.png`` holds its mask, so that `correct` reuses exactly the same crop.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EchoSAMError, PromptError
from .structures import get_structure

RUN_FILE = "run.json"
OUR_FILES = {"run.json", "session", "report.json", "report.csv", "lv_curve.png", "overlay.mp4",
             "labels.seq.nrrd", "labels.nii.gz", "labels.nrrd", "labels.nii", "fan_mask.png"}
LABEL_FORMATS = ("seq.nrrd", "nrrd", "nii.gz", "nii")
# The demo weights were trained on phantom seeds 0-95 (validation 500000+, test 900000+): the demo
# cine uses a seed none of them saw.
DEMO_SEED = 424242


@dataclass
class Prompts:
    """What the user gives a prompted model: points ``(N, 2)`` cine pixels (x = column) with 1/0
    labels and/or a box (x0, y0, x1, y1) on ``frame``; a label file whose ``mask_frame`` locks that
    frame; or a prompt-free ``seed_model`` run on ``frame`` when nothing else is given."""

    frame: int = 0
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[tuple] = None
    mask: Optional[str] = None
    mask_frame: int = 0
    seed_model: Optional[str] = None
    seed_loaded: Optional[object] = None      # ``seed_model`` already loaded (batch workers keep one)

    @property
    def given(self) -> bool:
        return self.points is not None or self.box is not None or self.mask is not None


def parse_points(text: str) -> tuple:
    """``"x,y,1;x,y,0"`` (cine pixels, x = column; label 1 include, 0 exclude, default 1) -> points
    (N, 2) float and labels (N,) int. The one text form of points: CLI options and batch manifests."""
    pts, labs = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) not in (2, 3):
            raise PromptError(f"Point {item!r} is not 'x,y' or 'x,y,label' (label 1 include, 0 exclude).")
        try:
            pts.append((float(parts[0]), float(parts[1])))
            labs.append(int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise PromptError(f"Point {item!r} has a non-numeric value; write points as 'x,y,1;x,y,0'.") from None
    if not pts:
        raise PromptError("--points is empty; write points as 'x,y,1;x,y,0' (cine pixels, x = column).")
    return np.asarray(pts), np.asarray(labs)


def parse_box(text: str) -> tuple:
    """``"x0,y0,x1,y1"`` (cine pixels) -> a 4-tuple of floats. The one text form of a box."""
    try:
        v = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).") from None
    if len(v) != 4:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).")
    return v


# ---- inputs --------------------------------------------------------------------------------------
def read_mask_frame(path, frame: int, shape_hw: tuple) -> np.ndarray:
    """One (H, W) label frame from a label file (.seq.nrrd/.nrrd/.nii.gz, (T,H,W) or one frame) or .npy."""
    p = Path(path)
    if not p.exists():
        raise PromptError(f"Mask file {p} does not exist.")
    if p.suffix == ".npy":
        lab = np.load(p, allow_pickle=False)
    else:
        from .io import read_labels
        lab, _ = read_labels(p)
    lab = np.asarray(lab)
    if lab.ndim == 2:
        lab = lab[None]
    if lab.ndim != 3 or tuple(lab.shape[1:]) != tuple(shape_hw):
        raise PromptError(f"Mask file {p.name} has shape {lab.shape}; it must be (H, W) or (T, H, W) with "
                          f"(H, W) = {tuple(shape_hw)} (the cine grid).")
    if lab.shape[0] == 1:
        return lab[0]
    if not 0 <= frame < lab.shape[0]:
        raise PromptError(f"Mask file {p.name} has {lab.shape[0]} frames; frame {frame} does not exist.")
    return lab[frame]


def structure_mask(lab: np.ndarray, key: str) -> np.ndarray:
    """The mask of ``key`` in a label frame (a binary 0/1 file counts as that structure)."""
    m = lab == get_structure(key).label
    if not m.any() and set(np.unique(lab).tolist()) <= {0, 1}:
        m = lab == 1
    return m


def load(model: Optional[str], device: str = "auto", family: Optional[str] = None):
    """A Models.json name or a weights file (None: Models.json's default) on ``device`` ("auto" resolved)."""
    from .checkpoints import load_model
    from .device import resolve_device
    from .model_zoo import default_model_name
    return load_model(model or default_model_name(), device=resolve_device(device), family=family)


# ---- output folder -------------------------------------------------------------------------------
def check_outdir(outdir: Path) -> None:
    outdir = Path(outdir)
    if outdir.exists():
        if not outdir.is_dir():
            raise EchoSAMError(f"{outdir} exists and is not a folder; give a folder for the results.")
        foreign = [p.name for p in outdir.iterdir() if p.name not in OUR_FILES]
        if foreign:
            raise EchoSAMError(f"{outdir} holds files that are not EchoSAM results ({', '.join(sorted(foreign)[:3])}); "
                               "choose a new or empty folder.")


def check_formats(formats) -> list:
    out = [f.strip().lstrip(".") for f in formats if f.strip()]
    for f in out:
        if f not in LABEL_FORMATS:
            raise EchoSAMError(f"Label format {f!r}: choose from {', '.join(LABEL_FORMATS)}.")
    return out


def write_outputs(session, outdir, run: dict, formats=("seq.nrrd",), overlay: bool = True, region=None,
                  cine=None) -> dict:
    """Labels, overlay, report, run.json and the saved session into ``outdir``, swapped in atomically.
    With a `FanRegion` (``region``) the session ran on the fan's crop: its labels are mapped back onto
    ``cine`` (the full-frame cine) and the region's mask is saved next to run.json."""
    from . import cardiac
    from .io import write_labels, write_overlay
    from .io.atomic import atomic_folder
    from .report import write_report

    outdir = Path(outdir)
    check_outdir(outdir)
    labels = session.labels if region is None else region.uncrop(session.labels)
    cine = session.cine if cine is None else cine
    res = cardiac.analyse(labels, cine.spacing, cine.frame_times)
    with atomic_folder(outdir) as tmp:
        for fmt in formats:
            write_labels(labels, cine, tmp / f"labels.{fmt.lstrip('.')}")
        if overlay:
            write_overlay(cine, labels, tmp / "overlay.mp4")
        info = dict(run, key_frames=session.key_frames, locked_frames=session.locked_frames)
        write_report(res, tmp, info=info, title=cine.name)
        session.save(tmp / "session")
        if region is not None:
            region.save(tmp)
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    return {"result": res, "outdir": outdir}


# ---- one cine ------------------------------------------------------------------------------------
def map_prompts(prompts: Prompts, region, shape_hw) -> Prompts:
    """Prompts in full-frame cine pixels -> the same prompts in the region's crop pixels (points shifted,
    the box shifted and clipped; a mask file is cropped when it is read, see `apply_prompts`).
    A point off the frame, or a point/box off the fan's crop, is a PromptError."""
    h, w = shape_hw
    x0, y0, x1, y1 = region.bbox
    where = f"the imaging fan's box (x {x0}..{x1}, y {y0}..{y1}); move it onto the fan, or use --region off"
    pts = prompts.points
    if pts is not None:
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        for x, y in pts:
            if not (0 <= round(x) < w and 0 <= round(y) < h):
                raise PromptError(f"Point (x={x:g}, y={y:g}) is outside the {w}x{h} image; place it on the image.")
            if not region.contains_xy(x, y):
                raise PromptError(f"Point (x={x:g}, y={y:g}) is outside {where}.")
        pts = region.to_crop_xy(pts)
    box = prompts.box
    if box is not None:
        if box[2] < x0 or box[0] > x1 or box[3] < y0 or box[1] > y1:
            raise PromptError(f"Box {tuple(box)} is outside {where}.")
        box = region.box_to_crop(box)
    return replace(prompts, points=pts, box=box)


def prepare_cine(cine_path, region="auto", notify=None) -> tuple:
    """(full-frame cine, `FanRegion`, the model's cine) of a cine file. A notice of the region (no fan
    found) goes to ``notify`` (default: one line on stderr)."""
    from .fan import prepare_region
    from .io import read_cine

    cine = read_cine(cine_path)
    fan, model_cine = prepare_region(cine, region)
    if fan.notice:
        (notify or _to_stderr)(fan.notice)
    return cine, fan, model_cine


def _to_stderr(message: str) -> None:
    print(f"echosam: {message}", file=sys.stderr)


def apply_prompts(session, prompts: Prompts, device: str = "auto", region=None) -> None:
    """Put ``prompts`` into a session (points/box on the first structure, a mask file on each structure it
    holds, else a seed from ``seed_model``). Nothing to do for a prompt-free model given no prompt.
    With a `FanRegion`, ``prompts`` are in full-frame pixels and the session runs on the region's crop."""
    keys = session.structures
    if region is not None:
        prompts = map_prompts(prompts, region, region.shape)
    if prompts.points is not None or prompts.box is not None:
        session.add_new_points_or_box(prompts.frame, keys[0], prompts.points, prompts.labels, prompts.box)
    if prompts.mask:
        lab = read_mask_frame(prompts.mask, prompts.mask_frame, region.shape if region else session.cine.shape[1:])
        lab = region.crop(lab) if region is not None else lab
        found = [k for k in keys if structure_mask(lab, k).any()]
        if not found:
            raise PromptError(f"Mask file {prompts.mask} has none of {', '.join(keys)} on frame {prompts.mask_frame}.")
        for k in found:
            session.set_mask(prompts.mask_frame, k, structure_mask(lab, k))
    if session.prompted and not any(session.key_frames.values()):
        if not (prompts.seed_model or prompts.seed_loaded):
            raise PromptError(f"{session.loaded.family} is a prompted model and no prompt was given: add --points, "
                              "--box or --mask, or --seed-model NAME (a prompt-free model) to seed it.")
        session.seed_from_auto(prompts.frame, auto=prompts.seed_loaded or load(prompts.seed_model, device))


def segment_cine(cine_path, output, model: Optional[str] = None, family: Optional[str] = None,
                 structures=("lv",), prompts: Optional[Prompts] = None, device: str = "auto",
                 precision: str = "auto", formats=("seq.nrrd",), overlay: bool = True, progress=None,
                 loaded=None, region="auto", keep_connected: bool = True, notify=None) -> dict:
    """Segment one cine file into ``output`` (see the module docstring). ``loaded`` skips loading
    ``model``; ``region`` the ultrasound region (`echosam.fan.find_region`); ``keep_connected`` the
    connected-region rule (`echosam.consistency`). Returns {"result": cardiac analysis, "outdir",
    "session" (on the region's crop), "region"}."""
    from .session import Session
    from .structures import parse_structures

    keys = [s.key for s in parse_structures(structures)] if isinstance(structures, str) else \
        [get_structure(s).key for s in structures]
    formats = check_formats(formats)
    check_outdir(Path(output))
    cine, fan, model_cine = prepare_cine(cine_path, region, notify)
    loaded = loaded or load(model, device, family)
    s = Session(model_cine, loaded, structures=keys, precision=precision, keep_connected=keep_connected)
    apply_prompts(s, prompts or Prompts(), device, region=fan)
    s.segment(progress=progress)
    run = {"command": "segment", "cine": str(Path(cine_path).resolve()), "model": model or str(loaded.path),
           "family": loaded.family, "model_path": str(loaded.path) if loaded.path else None, "structures": keys,
           "formats": formats, "overlay": bool(overlay), "region": fan.summary(),
           "keep_connected": bool(keep_connected)}
    out = write_outputs(s, output, run, formats, overlay=overlay, region=fan, cine=cine)
    return dict(out, session=s, region=fan)


def correct(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
            loaded=None, progress=None):
    """`correct_outputs` returning only the session (on the region's crop)."""
    return correct_outputs(outdir, mask_path, frame, structure, cine_path, device, loaded, progress)["session"]


def correct_outputs(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
                    loaded=None, progress=None) -> dict:
    """Apply a corrected mask on ``frame`` to the saved session in ``outdir``, re-propagate (no encoder
    run: the saved embeddings are used) and rewrite every output. The region stored with the result
    (run.json + fan_mask.png) is reused; the mask file is in full-frame pixels. Returns {"result": the
    cardiac analysis of the labels written, "outdir", "session", "region"}."""
    from .fan import FanRegion
    from .io import read_cine
    from .session import Session

    outdir = Path(outdir)
    run_path = outdir / RUN_FILE
    if not run_path.exists() or not (outdir / "session").exists():
        raise EchoSAMError(f"{outdir} is not an `echosam segment` output with a saved session (no {RUN_FILE} or "
                           "session/); run `echosam segment` first.")
    run = json.loads(run_path.read_text())
    if not (cine_path or run.get("cine")):
        raise EchoSAMError(f"{outdir} does not record its cine; give it with --cine.")
    cine = read_cine(cine_path or run["cine"])
    if loaded is None:
        loaded = load(run.get("model_path") or run["model"], device, run.get("family"))
    fan = FanRegion.load(outdir, run["region"], cine.shape[1:]) if run.get("region") else \
        FanRegion.whole_frame(cine.shape[1:])
    s = Session.load(outdir / "session", fan.crop_cine(cine), loaded)
    lab = fan.crop(read_mask_frame(mask_path, frame, cine.shape[1:]))
    key = get_structure(structure).key
    s.set_mask(frame, key, structure_mask(lab, key))
    s.propagate(progress=progress)
    run = dict(run, corrections=list(run.get("corrections", [])) + [{"frame": int(frame), "structure": key,
                                                                       "mask": str(Path(mask_path).resolve())}])
    out = write_outputs(s, outdir, run, run.get("formats", ["seq.nrrd"]), overlay=run.get("overlay", True),
                        region=fan, cine=cine)
    return dict(out, session=s, region=fan)


def report_labels(labels_path, output, cine_path=None):
    """EF / volumes / ED-ES of a label map file (spacing and times from ``cine_path`` if given)."""
    from . import cardiac
    from .io import read_cine, read_labels
    from .report import write_report

    labels, geo = read_labels(labels_path)
    if cine_path:
        geo = read_cine(cine_path)
        if geo.shape != labels.shape:
            raise EchoSAMError(f"Labels {labels.shape} and cine {geo.shape} differ in size; give the cine they belong to.")
    res = cardiac.analyse(labels, geo.spacing, geo.frame_times)
    write_report(res, output, info={"labels": str(Path(labels_path).resolve())}, title=geo.name)
    return res


# ---- the demo ------------------------------------------------------------------------------------
def fixed_click(mask: np.ndarray) -> tuple:
    """MemSAM's deterministic test click: the foreground pixel at the median index of the raster-order
    foreground list (reference/models.md §1.2), as (x, y)."""
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return float(x), float(y)


def run_demo(out=None, device: str = "auto", model: Optional[str] = None, n_frames: int = 40,
             seed: int = DEMO_SEED, loaded=None) -> dict:
    """Segment a phantom cine (64 x 64 px per model input) with the demo model from one click per
    structure on frame 0 (MemSAM's protocol; a prompt-free model needs none); mean LV Dice and EF
    against the phantom truth."""
    from . import cardiac
    from .phantom import make_phantom
    from .session import Session

    ph = make_phantom(n_frames=n_frames, seed=seed, size=(128, 128))
    loaded = loaded or load(model, device)
    keys = [k for k in ("lv", "myo", "la") if k in (loaded.classes or ["lv"])] if loaded.prompted else None
    s = Session(ph.cine, loaded, structures=keys)
    if s.prompted:
        for k in s.structures:
            s.add_points(0, k, [fixed_click(ph.labels[0] == get_structure(k).label)], [1])
    s.segment()
    lab = s.labels
    truth = ph.labels == 1
    pred = lab == 1
    inter = (truth & pred).reshape(len(lab), -1).sum(1)
    dice = 2 * inter / np.maximum(truth.reshape(len(lab), -1).sum(1) + pred.reshape(len(lab), -1).sum(1), 1)
    res = cardiac.analyse(lab, ph.cine.spacing, ph.cine.frame_times)
    if out:
        write_outputs(s, out, {"command": "demo", "model": model or str(loaded.path), "family": loaded.family,
                               "model_path": str(loaded.path) if loaded.path else None, "structures": s.structures,
                               "formats": ["seq.nrrd"], "overlay": True, "cine": None})
    return {"mean_dice": float(dice.mean()), "dice": dice, "ef_estimated": float(res.ef_percent),
            "ef_true": float(ph.true_ef), "result": res, "session": s, "phantom": ph}
