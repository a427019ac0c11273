"""One machine: a standard-library process pool, one `CaseRunner` (one loaded model) per worker process.

`run_pool(cases, spec, workers)` yields ``(case, row)`` as cases finish. At most ``workers`` cases are
in flight, so an interruption loses at most that many. Workers are started with ``spawn`` (safe with
torch and CUDA), each takes its index from a shared counter (its GPU when several are visible) and
loads its model on its first case.

Faults:
- a worker that dies (killed, out of host memory) breaks the pool: the cases it was running with the
  others in flight are submitted again to a fresh pool; a case in flight at ``max_attempts`` breaks
  becomes an error row ("worker process died"); a case the broken pool refused never ran and goes back
  in the queue;
- Ctrl-C / SIGTERM in the driver: workers ignore SIGINT (the driver decides); the driver terminates
  them (SIGTERM, default action: a worker never lingers) and the interrupt propagates to the caller.
  A case cut short leaves no result row and at most a hidden temporary folder next to its output
  (never a half-written output folder: the pipeline publishes by rename).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import EchoSAMError
from .runner import CaseRunner

MAX_PIDS = 4096
_RUNNER = {}          # this worker process's state: index, spec, runner (loaded on the first case)


def _init_worker(spec, counter, pids) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the whole process group: the driver decides
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    pids[index % MAX_PIDS] = os.getpid()
    _RUNNER.update(index=index, spec=spec, runner=None)


def _run_case(case) -> dict:
    if _RUNNER["runner"] is None:
        try:
            _RUNNER["runner"] = CaseRunner(_RUNNER["spec"], _RUNNER["index"])
        except Exception as exc:          # noqa: BLE001 - a model that cannot load stops the batch
            return {"setup_error": " ".join(str(exc).split()) or type(exc).__name__}
    return _RUNNER["runner"].run(case)


def died_row(case, spec, attempts: int) -> dict:
    """The error row of a case whose worker process died every time it ran it."""
    return {"case": case.case_id, "options_key": spec.options_key, "prompt": dict(case.prompt), "status": "error",
            "error": f"the worker process died while running this case ({attempts} times: killed, or out of "
                     "memory); rerun with --retry-failed, or fewer workers", "input_sha256": None,
            "input_stat": None, "seconds": None}


def check_setup(row: dict) -> dict:
    if "setup_error" in row:
        raise EchoSAMError(f"A batch worker could not start: {row['setup_error']}")
    return row


def _terminate(pids) -> None:
    for pid in set(pids[:]):
        if pid > 0:
            try:
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def run_pool(cases, spec, workers: int = 1, max_attempts: int = 2):
    """Run ``cases`` on ``workers`` processes; yields (case, row) in completion order (see the module doc)."""
    ctx = mp.get_context("spawn")
    pending = deque(cases)
    attempts = Counter()
    while pending:
        counter, pids = ctx.Value("i", 0), ctx.Array("i", MAX_PIDS)
        ex = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx, initializer=_init_worker,
                                 initargs=(spec, counter, pids))
        inflight = {}
        clean = False
        try:
            while pending or inflight:
                while pending and len(inflight) < workers:
                    case = pending.popleft()
                    try:
                        fut = ex.submit(_run_case, case)
                    except BrokenProcessPool:       # a worker died before this case was handed over: never run
                        pending.appendleft(case)
                        raise
                    inflight[fut] = case
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    case = inflight.pop(fut)
                    try:
                        row = fut.result()
                    except BrokenProcessPool:
                        inflight[fut] = case
                        raise
                    except BaseException as exc:  # a worker stopped by a signal: the batch is interrupted
                        raise KeyboardInterrupt(f"worker stopped ({type(exc).__name__})") from exc
                    yield case, check_setup(row)
            clean = True
        except BrokenProcessPool:
            for case in inflight.values():
                attempts[case.case_id] += 1
                if attempts[case.case_id] >= max_attempts:
                    yield case, died_row(case, spec, attempts[case.case_id])
                else:
                    pending.appendleft(case)
        finally:
            if not clean:
                _terminate(pids)
            ex.shutdown(wait=True, cancel_futures=True)
