"""One persistent background worker thread that owns the model and its cached `Session`.

The GUI thread submits jobs (load a model, encode, propagate, segment automatically, or any
callable) and polls `Worker.poll()` from a timer (a ``qt.QTimer`` in Slicer); it never blocks and
never receives an exception: every outcome is a `Message` (progress, result or error) taken from a
thread-safe queue. Results are applied to MRML by the caller, on the main thread.

Cancel is cooperative: `Worker.cancel()` sets the `CancelToken` the running job checks between
frames (`echosam.progress`), so finished frames stay consistent. CUDA out-of-memory becomes a
readable `ModelError` message instead of a crash. No Qt, no MRML.
"""
from __future__ import annotations

import itertools
import queue
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import CancelledError, EchoSAMError, ModelError, is_out_of_memory
from .progress import CancelToken

PROGRESS, RESULT, ERROR, CANCELLED = "progress", "result", "error", "cancelled"


@dataclass
class Message:
    """What the GUI receives: ``kind`` is progress / result / error / cancelled."""

    job_id: int
    name: str
    kind: str
    done: int = 0
    total: int = 0
    text: str = ""
    value: Any = None
    details: str = ""          # traceback for errors (for the log / "details" box)


@dataclass
class _Job:
    job_id: int
    name: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)


def readable_error(exc: BaseException) -> tuple:
    """``(message, is_user_error)`` for an exception raised by a job."""
    if is_out_of_memory(exc):
        return ("The GPU ran out of memory. Choose a smaller model, close other GPU programs, "
                "or select the CPU device (slower), then try again.", True)
    if isinstance(exc, EchoSAMError):
        return str(exc), True
    return f"Unexpected error ({type(exc).__name__}: {exc}). See the log for details.", False


class Worker:
    """A single daemon thread running jobs in order; state (model, session) lives on the worker.

    ``state`` is a dict shared with jobs: a job is called as ``fn(state, progress, cancel, **kwargs)``
    and may keep the loaded model / session there for the next job (embeddings stay cached).
    """

    def __init__(self, name: str = "EchoSAM worker"):
        self.state: dict = {}
        self._jobs: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._messages: "queue.Queue[Message]" = queue.Queue()
        self._ids = itertools.count(1)
        self._cancel = CancelToken()
        self._lock = threading.Lock()
        self._unread = 0              # jobs whose final message the GUI has not polled yet
        self._current: Optional[_Job] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- GUI side --------------------------------------------------------------------------------
    def submit(self, name: str, fn: Callable, **kwargs) -> int:
        """Queue a job; returns its id. ``fn(state, progress, cancel, **kwargs)`` returns the result."""
        if not self._thread.is_alive():
            raise ModelError("The EchoSAM worker has stopped; reload the module.")
        job = _Job(next(self._ids), name, fn, kwargs)
        with self._lock:
            self._unread += 1
        self._jobs.put(job)
        return job.job_id

    def poll(self, max_messages: int = 1000) -> list:
        """All messages waiting (never blocks); consecutive progress messages of a job are merged."""
        out: list = []
        for _ in range(max_messages):
            try:
                msg = self._messages.get_nowait()
            except queue.Empty:
                break
            if msg.kind != PROGRESS:
                with self._lock:
                    self._unread -= 1
            if out and msg.kind == PROGRESS and out[-1].kind == PROGRESS and out[-1].job_id == msg.job_id:
                out[-1] = msg
            else:
                out.append(msg)
        return out

    def cancel(self) -> None:
        """Ask the running job to stop between frames, and drop queued jobs."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._messages.put(Message(job.job_id, job.name, CANCELLED, text="Cancelled before it started."))
        self._cancel.cancel()

    @property
    def busy(self) -> bool:
        """True until the GUI has polled the final message (result, error or cancelled) of every job
        it submitted. Only `poll` clears it, on the GUI's own thread, so a timer that stops when
        ``busy`` is False can never stop with a result still unread (whatever the worker does between
        the GUI's poll and its check)."""
        with self._lock:
            return self._unread > 0

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until every submitted job has finished (tests, CLI, Slicer self-test)."""
        done = threading.Event()

        def mark(state, progress, cancel):
            done.set()

        self._jobs.put(_Job(0, "_idle", mark))
        return done.wait(timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        self.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)
        self.state.clear()

    # ---- worker side -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.job_id == 0:
                job.fn(self.state, None, None)
                continue
            self._cancel.reset()
            self._current = job

            def progress(done, total, message="", _job=job):
                self._messages.put(Message(_job.job_id, _job.name, PROGRESS, int(done), int(total), message))

            try:
                value = job.fn(self.state, progress, self._cancel, **job.kwargs)
                self._messages.put(Message(job.job_id, job.name, RESULT, value=value))
            except CancelledError as exc:
                self._messages.put(Message(job.job_id, job.name, CANCELLED, text=str(exc)))
            except BaseException as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
                text, _ = readable_error(exc)
                self._messages.put(Message(job.job_id, job.name, ERROR, text=text, details=traceback.format_exc()))
                _free_gpu_memory()
            finally:
                self._current = None


def _free_gpu_memory() -> None:
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- standard jobs (the Slicer module and the CLI submit these) ---------------------------------
@dataclass
class SegmentationResult:
    """What a segmentation (or undo) leaves for the main thread to write into the scene."""

    labels: Any                 # (T, H, W) uint8 label map (structures.py values), a copy
    locked: dict                # {structure: sorted locked frames}
    prompts: dict               # Session.prompts_to_dict() (JSON-able; on the session's region crop)
    structures: list            # structure keys of the session
    prompted: bool
    compute_path: str = ""      # Session.compute_path (device, precision, threads), plus in-between steps when > 1
    ef_accuracy: str = ""       # the model's known EF error (`report.ef_accuracy_note`), "" if not recorded
    notices: tuple = ()         # what the user should know about the region (no fan found, no zoom), one line each


def job_load_model(state, progress, cancel, spec: str, device: str = "cpu", family: Optional[str] = None):
    """Load weights (Models.json name or path) once; a new cine/session is made by `job_new_session`."""
    from .checkpoints import load_model
    key = (str(spec), device, family or None)
    if state.get("model_key") != key:
        if progress is not None:
            progress(0, 1, "loading model")
        state["loaded"] = load_model(str(spec), device=device, family=family or None)
        state["model_key"] = key
        state.pop("session", None)
    return state["loaded"].family


def job_new_session(state, progress, cancel, cine, structures=("lv",), **session_kwargs):
    from .session import Session
    if "loaded" not in state:
        raise ModelError("No model is loaded; choose a model first.")
    state.pop("region", None)          # a session on the cine as given (`slicer.jobs` sets the region it crops to)
    state["session"] = Session(cine, state["loaded"], structures=tuple(structures), **session_kwargs)
    return state["session"]


def session_of(state):
    """The session a job works on (made by `job_new_session`)."""
    if "session" not in state:
        raise ModelError("Nothing to segment yet: select an input cine and a model, then press Segment.")
    return state["session"]


def job_encode(state, progress, cancel):
    """Encode every frame once (prompted models); prompt-free models encode inside `job_segment`."""
    session_of(state).encode(progress=progress, cancel=cancel)


def job_segment(state, progress, cancel):
    """Bring the labels up to date: propagation (prompted) or prompt-free segmentation (`Session.segment`)."""
    return session_of(state).segment(progress=progress, cancel=cancel).copy()


def job_propagate(state, progress, cancel):
    return session_of(state).propagate(progress=progress, cancel=cancel).copy()


def job_segment_auto(state, progress, cancel):
    return session_of(state).segment_auto(progress=progress, cancel=cancel).copy()


def job_result(state, progress, cancel) -> SegmentationResult:
    """The session's current labels, locks and prompts (submit after propagate / segment_auto)."""
    from .report import ef_accuracy_note
    s = session_of(state)
    region = state.get("region")
    labels = region.uncrop(s.labels) if region is not None else s.labels.copy()     # back onto the full frame
    path = s.compute_path + (f"; in-between frames: {s.substeps} steps a frame" if s.substeps > 1 else "")
    return SegmentationResult(labels, s.locked_frames, s.prompts_to_dict(), list(s.structures), s.prompted,
                              path, ef_accuracy_note(s.loaded.meta) or "",
                              tuple(state.get("region_notices", ())) + ((s.auto_zoom.note(),) if s.auto_zoom else ()))


def job_undo(state, progress, cancel) -> Optional[SegmentationResult]:
    """Undo the last prompt change of the session; the restored result, or None when there was nothing."""
    return job_result(state, progress, cancel) if session_of(state).undo() else None


def _entry(model):
    from . import model_zoo
    return model if isinstance(model, model_zoo.ModelEntry) else model_zoo.get_entry(model)


def job_download(state, progress, cancel, model) -> str:
    """Download a Models.json entry (name or `ModelEntry`) into the cache, SHA256 checked; returns the path."""
    from . import model_zoo
    return str(model_zoo.download(_entry(model), progress=progress or (lambda *a: None), cancel=cancel))


def job_use_file(state, progress, cancel, path: str, model) -> str:
    """Register a checkpoint file the user already has for an entry (SHA256 checked, copied into the cache)."""
    from . import model_zoo
    if progress is not None:
        progress(0, 1, "checking SHA256")
    return str(model_zoo.use_existing_file(path, _entry(model)))
