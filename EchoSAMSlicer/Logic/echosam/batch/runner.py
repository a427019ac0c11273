"""One batch worker: one loaded model (and seed model), any number of cases, one result row each.

A `CaseRunner` is what a process-pool worker or a Ray actor holds. It loads its model once, then
`run(case)` calls the same per-cine function as ``echosam segment`` (`pipeline.segment_cine`), so a
batch case gets exactly what ``segment`` writes (labels, overlay, report, run.json, session) and
every later pipeline step (ultrasound region, post-processing) without batch knowing about it.

A case that fails (unreadable video, no LV, a prompt off the image, out of memory) becomes an error
row; only Ctrl-C / termination leave `run`. Threads: ``threads`` intra-op threads per worker (the
default, set by the driver, divides the machine's cores among the workers), one inter-op thread.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import EchoSAMError, is_out_of_memory
from ..prompt_text import split_cell
from .state import content_sha256, stat_signature


@dataclass
class WorkerSpec:
    """Everything a worker needs, picklable: model, seed model, device, threads and the segment
    options (keyword arguments of `pipeline.segment_cine`), the output root and the options key."""

    out: str
    options_key: str
    model: Optional[str] = None
    family: Optional[str] = None
    seed_model: Optional[str] = None
    seed_frame: int = 0
    device: str = "auto"
    threads: int = 1
    options: dict = field(default_factory=dict)


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def configure_threads(threads: int) -> None:
    """``threads`` intra-op threads (OpenMP/MKL and torch), one inter-op thread, for this process."""
    n = str(max(1, int(threads)))
    for var in THREAD_VARS:
        os.environ[var] = n
    import torch

    torch.set_num_threads(int(n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:              # already set, or parallel work already ran: keep what is there
        pass


def worker_device(device: str, index: int = 0) -> str:
    """The device of worker ``index``: `device.resolve_device`, and with several visible GPUs and no
    index given, GPU ``index % count`` (Ray actors see only their own GPU)."""
    from ..device import resolve_device

    dev = resolve_device(device)
    if dev == "cuda":
        import torch

        count = torch.cuda.device_count()
        if count > 1:
            return f"cuda:{index % count}"
    return dev


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0, 1)


def _value(v):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


class CaseRunner:
    """Holds one loaded model; `run(case)` segments one case into ``OUT/<case id>/`` and returns its row."""

    def __init__(self, spec: WorkerSpec, index: int = 0) -> None:
        from .. import pipeline

        configure_threads(spec.threads)
        self.spec = spec
        self.device = worker_device(spec.device, index)
        self.loaded = pipeline.load(spec.model, self.device, spec.family)
        self.seed = pipeline.load(spec.seed_model, self.device) if spec.seed_model else None

    def prompts(self, case):
        from .. import pipeline

        p = case.prompt
        return pipeline.Prompts.from_text(split_cell(p.get("points")), split_cell(p.get("box")),
                                          self.spec.options.get("structures", "lv"), ("points column", "box column"),
                                          frame=int(p.get("frame", self.spec.seed_frame)), mask=p.get("mask_path"),
                                          mask_frame=int(p.get("mask_frame", 0)), seed_model=self.spec.seed_model,
                                          seed_loaded=self.seed)

    def run(self, case) -> dict:
        from .. import pipeline

        t0 = time.perf_counter()
        row = {"case": case.case_id, "options_key": self.spec.options_key, "prompt": dict(case.prompt),
               "input_stat": stat_signature(case.path), "input_sha256": None, "status": "error", "error": ""}
        try:
            if not Path(case.path).exists():
                raise EchoSAMError(f"{case.input} does not exist.")
            row["input_sha256"] = content_sha256(case.path)
            notices = []
            options = dict(self.spec.options)
            if "orientation" in case.prompt:           # the manifest's word for this case's display
                options["orientation"] = case.prompt["orientation"]
            out = pipeline.segment_cine(case.path, Path(self.spec.out) / case.case_id, loaded=self.loaded,
                                        prompts=self.prompts(case), device=self.device, notify=notices.append,
                                        **options)
            row["notice"] = " ".join(notices)
            s = out["result"].summary()
            if out["run"].get("calibrated") is False:       # volumes from 1 mm pixels are not ml (the notice says so)
                s = dict(s, edv_ml=None, esv_ml=None)
            ok = s["ef_percent"] is not None
            row.update(status="ok" if ok else "error", error="" if ok else s["message"],
                       ef_percent=_value(s["ef_percent"]), edv_ml=_value(s["edv_ml"]), esv_ml=_value(s["esv_ml"]),
                       ed_frames=s["ed_frames"], es_frames=s["es_frames"], glitch_frames=s["glitch_frames"],
                       systole_frames=s["systole_frames"], n_beats=s["n_beats"],
                       cardiac_status=s["status"], n_frames=int(out["session"].n_frames),
                       compute_path=out["session"].compute_path)
        except EchoSAMError as exc:
            row["error"] = " ".join(str(exc).split())
        except Exception as exc:          # noqa: BLE001 - a case's failure must not stop the batch
            what = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
            row["error"] = " ".join(f"internal error ({what}); rerun this case with `echosam segment --debug`".split())
        row["error"] = row["error"].replace(str(case.path), case.input)     # no absolute paths in the summary
        row["seconds"] = round(time.perf_counter() - t0, 3)
        row["worker"] = {"pid": os.getpid(), "device": self.device, "peak_rss_mb": peak_rss_mb()}
        return row
