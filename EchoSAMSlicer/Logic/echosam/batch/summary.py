"""The batch summary: one row per case, in manifest order, as ``summary.csv`` (and ``summary.parquet``
when pyarrow is installed).

Columns (`COLUMNS`): ``case`` (id = output folder below OUT), ``input`` (path relative to the
manifest root; no absolute paths), ``split``, ``status`` (``ok``: EF measured; ``error``: the case
failed or no EF could be measured; ``pending``: not run yet), ``error`` (the message), ``notice`` (what
the pipeline said about a case that still ran, e.g. no ultrasound fan found), ``ef_percent``,
``edv_ml``, ``esv_ml`` (empty for a cine without pixel spacing), ``ed_frames`` / ``es_frames`` (``;``-separated
0-based frames), ``glitch_frames`` (frames where the LV volume jumps alone,
`cardiac_cycles.one_frame_glitches`: look at them), ``systole_frames`` (the fewest frames from an ED to
its ES; under `cardiac_cycles.SPARSE_SYSTOLE_FRAMES` the EF tends to read low), ``n_beats``,
``cardiac_status`` (`cardiac.analyse`'s status), ``n_frames``, ``seconds`` (wall time of the case in
its worker), ``compute_path`` (how it was computed, `echosam.compute`: e.g. "cpu bf16 autocast (amx_bf16),
1 thread"), ``model``, ``model_sha256``, ``options`` (JSON of the options that decide the result),
``prompt`` (the manifest's prompt, JSON), ``true_ef`` / ``true_edv`` / ``true_esv`` (the manifest's
truth). Two runs of the same batch give the same summary except ``seconds`` (and ``compute_path`` on another machine).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..io.atomic import atomic_file

COLUMNS = (("case", str), ("input", str), ("split", str), ("status", str), ("error", str), ("notice", str),
           ("ef_percent", float), ("edv_ml", float), ("esv_ml", float), ("ed_frames", str), ("es_frames", str),
           ("glitch_frames", str), ("systole_frames", int), ("n_beats", int), ("cardiac_status", str),
           ("n_frames", int), ("seconds", float), ("compute_path", str),
           ("model", str), ("model_sha256", str), ("options", str), ("prompt", str), ("true_ef", float),
           ("true_edv", float), ("true_esv", float))
NAMES = tuple(c for c, _ in COLUMNS)
TIMING_COLUMNS = ("seconds", "compute_path")     # where and how fast a case ran, not what it gave


def _frames(v) -> str:
    return ";".join(str(int(f)) for f in v) if isinstance(v, (list, tuple)) else (v or "")


def summary_row(case, row, model: str, model_sha256: str, options: dict) -> dict:
    """The summary row of ``case`` from its stored result ``row`` (None: not run yet)."""
    row = row or {"status": "pending", "error": ""}
    out = {"case": case.case_id, "input": case.input, "split": case.split, "status": row.get("status", "pending"),
           "error": row.get("error") or "", "notice": row.get("notice") or "", "ef_percent": row.get("ef_percent"),
           "edv_ml": row.get("edv_ml"), "esv_ml": row.get("esv_ml"), "ed_frames": _frames(row.get("ed_frames")),
           "es_frames": _frames(row.get("es_frames")), "glitch_frames": _frames(row.get("glitch_frames")),
           "systole_frames": row.get("systole_frames"),
           "n_beats": row.get("n_beats"),
           "cardiac_status": row.get("cardiac_status") or "", "n_frames": row.get("n_frames"),
           "seconds": row.get("seconds"), "compute_path": row.get("compute_path") or "", "model": model,
           "model_sha256": model_sha256,
           "options": json.dumps(options, sort_keys=True), "prompt": json.dumps(
               {k: v for k, v in case.prompt.items() if k != "mask_path"}, sort_keys=True) if case.prompt else "",
           "true_ef": case.truth.get("ef"), "true_edv": case.truth.get("edv"), "true_esv": case.truth.get("esv")}
    return out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 4))
    return str(v)


def summary_csv(rows: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NAMES)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in NAMES])
    return buf.getvalue()


def read_summary_csv(path) -> list:
    """``summary.csv`` back as a list of dicts with typed values (empty cells None)."""
    types = dict(COLUMNS)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (None if v == "" and types.get(k, str) is not str else types.get(k, str)(v))
                    for k, v in r.items()})
    return out


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_parquet(rows: list, path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = {str: pa.string(), float: pa.float64(), int: pa.int64()}
    schema = pa.schema([(c, kind[t]) for c, t in COLUMNS])
    table = pa.table({c: [r.get(c) for r in rows] for c in NAMES}, schema=schema)
    path = Path(path)
    with atomic_file(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return path


def write_summary(rows: list, out) -> dict:
    """``summary.csv`` (and ``summary.parquet`` with pyarrow) into ``out``, atomically; returns the paths."""
    out = Path(out)
    paths = {"csv": out / "summary.csv"}
    with atomic_file(paths["csv"], suffix=".csv") as tmp:
        tmp.write_text(summary_csv(rows))
    if have_pyarrow():
        paths["parquet"] = write_parquet(rows, out / "summary.parquet")
    return paths


def without_timing(rows: list) -> list:
    """The rows without the measured-time columns: what two runs of one batch must agree on."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]
