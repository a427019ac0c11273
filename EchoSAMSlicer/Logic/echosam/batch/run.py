"""The batch driver: manifest -> cases still to do -> workers -> rows -> one summary.

`run_batch(input, out, config)`:
1. `manifest.discover` lists the cases (fixed order);
2. the model and options are named by content (`state.options_key`: weights SHA-256, options);
3. cases already done (`state.CaseStore.is_done`) are skipped, the others (of this ``shard``) run on
   the chosen backend (``pool``: processes on this machine, ``ray``: Ray actors, ``inline``: this
   process), one result row stored per case as it finishes;
4. once every case of the manifest has a row, ``summary.csv`` (+ ``summary.parquet``) is written, and,
   when the manifest has truth, ``agreement.json`` and the scatter / Bland-Altman figures.

Several machines: run the same command with ``shard=(k, n)`` (case i belongs to shard i mod n) into
one shared output folder; whichever shard finishes last finds every row and writes the summary (a
later run without a shard, or ``summary_only``, writes it too).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import EchoSAMError
from ..io.lock import folder_lock
from ..progress import no_progress
from .agreement import write_agreement
from .manifest import Manifest, discover
from .runner import WorkerSpec
from .state import CaseStore, options_key, weights_identity
from .summary import summary_row, write_summary

BACKENDS = ("pool", "ray", "inline")


@dataclass
class BatchConfig:
    """How to run a batch. ``options`` are keyword options of `pipeline.segment_cine` (structures,
    precision, formats, overlay, ...): they, the model and the seed model decide a case's result and
    are part of its key; device, workers, threads and backend decide only where it runs."""

    model: Optional[str] = None
    family: Optional[str] = None
    seed_model: Optional[str] = None
    seed_frame: int = 0
    options: dict = field(default_factory=dict)
    device: str = "auto"
    workers: Optional[int] = None
    threads_per_worker: Optional[int] = None
    backend: str = "pool"
    ray_address: Optional[str] = None
    gpus_per_worker: Optional[float] = None
    retry_failed: bool = False
    shard: Optional[tuple] = None
    summary_only: bool = False


@dataclass
class BatchResult:
    manifest: Manifest
    rows: list                      # summary rows, manifest order
    ran: int = 0
    skipped: int = 0
    failed: int = 0                 # rows with status "error" (this run's and earlier ones)
    pending: int = 0                # cases with no row yet (other shards, or interrupted)
    paths: dict = field(default_factory=dict)
    metrics: Optional[dict] = None
    workers: dict = field(default_factory=dict)      # pid -> {"device", "peak_rss_mb", "cases"}
    seconds: float = 0.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # macOS
        return os.cpu_count() or 1


def default_workers(device: str) -> int:
    """One worker per GPU when the device is CUDA (one for ``cuda:N``); on CPU one per core, at most 4
    (more processes with fewer threads each beat one process with many threads on small models, and
    degrade far less on a machine whose cores are shared: bench/bench_batch.py)."""
    from ..device import resolve_device

    dev = resolve_device(device)
    if dev == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return 1 if dev.startswith("cuda") else max(1, min(4, cpu_count()))


def model_identity(config: BatchConfig) -> dict:
    """The model, the seed model and the options by content (what `state.options_key` hashes)."""
    from ..model_zoo import default_model_name, resolve_model

    name = config.model or default_model_name()
    ident = {"model": Path(name).name, "weights": weights_identity(resolve_model(name)), "family": config.family,
             "options": dict(sorted(config.options.items()))}
    if config.seed_model:
        ident.update(seed_model=Path(config.seed_model).name, seed_weights=weights_identity(
            resolve_model(config.seed_model)), seed_frame=int(config.seed_frame))
    return ident


def model_family(name: str, family: Optional[str]) -> Optional[str]:
    from ..model_zoo import get_entry, resolve_model

    if family:
        return family
    p = resolve_model(name)
    cfg = p.with_suffix(".json")
    if p.suffix == ".safetensors" and cfg.is_file():
        return json.loads(cfg.read_text()).get("family")
    try:
        return get_entry(name).family
    except EchoSAMError:
        return None


def check_prompts(manifest: Manifest, config: BatchConfig) -> None:
    """A prompted model (MemSAM, SAM) needs a prompt per case or a seed model; say so before starting."""
    from ..model_zoo import default_model_name, load_registry
    from ..models.registry import is_prompted

    name = config.model or default_model_name()
    fam = model_family(name, config.family)
    if fam is None or not is_prompted(fam) or config.seed_model:
        return
    bare = [c.input for c in manifest.cases if not (c.prompt.get("points") or c.prompt.get("box")
                                                     or c.prompt.get("mask"))]
    if bare:
        free = [e.name for e in load_registry() if not e.prompted]
        raise EchoSAMError(f"{Path(name).name} is a prompted model ({fam}) and {len(bare)} case(s) have no prompt "
                           f"(first: {bare[0]}): give points/box/mask columns in a CSV manifest, --seed-model NAME "
                           f"(a prompt-free model: {', '.join(free)}), or --model with a prompt-free model.")


def _backend_runs(config: BatchConfig, spec: WorkerSpec, todo: list, workers: int):
    if config.backend == "pool":
        from .pool import run_pool
        return run_pool(todo, spec, workers)
    if config.backend == "ray":
        from .ray_backend import run_ray
        return run_ray(todo, spec, workers=workers if config.workers else None, address=config.ray_address,
                       gpus_per_worker=config.gpus_per_worker)
    return _run_inline(todo, spec)


def _run_inline(todo: list, spec: WorkerSpec):
    """This process as the one worker; its thread settings are restored afterwards."""
    import torch

    from .pool import check_setup
    from .runner import THREAD_VARS, CaseRunner

    saved = torch.get_num_threads(), {v: os.environ.get(v) for v in THREAD_VARS}
    try:
        try:
            runner = CaseRunner(spec)
        except Exception as exc:      # noqa: BLE001 - the same message as a pool worker's
            check_setup({"setup_error": " ".join(str(exc).split()) or type(exc).__name__})
        for case in todo:
            yield case, runner.run(case)
    finally:
        torch.set_num_threads(saved[0])
        for var, value in saved[1].items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def run_batch(input_spec, out, config: Optional[BatchConfig] = None, split: Optional[str] = None,
              progress: Callable = no_progress, log: Callable = lambda message: None) -> BatchResult:
    """Run (or resume) a batch; see the module docstring. ``progress(done, total, message)`` counts the
    cases of this run; ``log(message)`` gets one line per failed case."""
    t0 = time.perf_counter()
    config = config or BatchConfig()
    if config.backend not in BACKENDS:
        raise EchoSAMError(f"Unknown backend {config.backend!r}; choose {', '.join(BACKENDS)}.")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise EchoSAMError(f"{out} exists and is not a folder; give a folder for the batch results.")
    manifest = discover(input_spec, split, exclude=out)
    if config.shard:                # shards of one manifest share the output folder by design
        return _run(manifest, out, config, t0, progress, log)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):          # one batch per output folder (another one refuses at once)
        return _run(manifest, out, config, t0, progress, log)


def _run(manifest: Manifest, out: Path, config: BatchConfig, t0: float, progress: Callable,
         log: Callable) -> BatchResult:
    ident = model_identity(config)
    key = options_key(ident)
    store = CaseStore(out)
    mine = manifest.cases
    if config.shard:
        k, n = config.shard
        if not (n >= 1 and 0 <= k < n):
            raise EchoSAMError(f"--shard {k}/{n}: give K/N with 0 <= K < N.")
        mine = [c for i, c in enumerate(manifest.cases) if i % n == k]
    stored, todo = {}, []
    for case in mine:
        done, row = store.is_done(case, key, config.retry_failed)
        if done:
            stored[case.case_id] = row
        else:
            todo.append(case)
    result = BatchResult(manifest, [], skipped=len(mine) - len(todo))
    if todo and not config.summary_only:
        check_prompts(manifest, config)
        workers = 1 if config.backend == "inline" else (config.workers or default_workers(config.device))
        threads = config.threads_per_worker or max(1, cpu_count() // workers)
        spec = WorkerSpec(out=str(out), options_key=key, model=config.model, family=config.family,
                          seed_model=config.seed_model, seed_frame=config.seed_frame, device=config.device,
                          threads=threads, options=dict(config.options))
        failed = 0
        progress(0, len(todo), "")
        for case, row in _backend_runs(config, spec, todo, workers):
            store.write(row)
            stored[case.case_id] = row
            result.ran += 1
            if row.get("status") != "ok":
                failed += 1
                log(f"failed: {case.input}: {row.get('error')}")
            w = row.get("worker") or {}
            if w.get("pid") is not None:
                info = result.workers.setdefault(w["pid"], {"device": w.get("device"), "peak_rss_mb": 0.0, "cases": 0})
                info["peak_rss_mb"] = max(info["peak_rss_mb"], w.get("peak_rss_mb") or 0.0)
                info["cases"] += 1
            progress(result.ran, len(todo), f"failed {failed}")
    model, sha = ident["model"], ident["weights"]["sha256"]
    shown = {k: v for k, v in ident.items() if k not in ("model", "weights", "seed_weights")}
    for case in manifest.cases:
        row = stored.get(case.case_id)
        if row is None:
            ok, row = store.is_done(case, key, False)
            row = row if ok else None
        result.rows.append(summary_row(case, row, model, sha, shown))
    result.pending = sum(r["status"] == "pending" for r in result.rows)
    result.failed = sum(r["status"] == "error" for r in result.rows)
    if result.pending == 0 or config.summary_only:
        result.paths = write_summary(result.rows, out)
        result.metrics = write_agreement(result.rows, out)
    result.seconds = time.perf_counter() - t0
    return result
