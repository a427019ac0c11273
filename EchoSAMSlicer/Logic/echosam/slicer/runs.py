"""Runs: the worker jobs of one user action, and what each worker message means for the panel."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .. import worker as wk

STEP_NAMES = {"load": "Loading model", "session": "Preparing the cine", "prompts": "Applying prompts",
              "encode": "Encoding frames", "propagate": "Propagating", "segment_auto": "Segmenting", "segment": "Segmenting",
              "result": "Collecting the result", "download": "Downloading", "use_file": "Checking the file",
              "ef_check": "Checking the EF against the box"}


@dataclass
class Run:
    """One user action: ``kind`` (segment, download, use_file), its jobs' roles and the role whose
    result finishes it; ``early``: roles whose results are shown before the run finishes (a segmentation,
    before its EF check). ``data`` keeps what the result is applied to (input node, cine, prompts...)."""

    kind: str
    roles: dict = field(default_factory=dict)        # job id -> role
    final: str = "result"
    early: tuple = ()
    data: dict = field(default_factory=dict)
    done_roles: list = field(default_factory=list)
    finished: bool = False


@dataclass
class Action:
    """What the panel does for one worker message. ``kind``: progress, result, error, cancelled or
    ignore. For progress, ``bar_value`` / ``bar_max`` / ``bar_format`` fit a QProgressBar (ints)."""

    kind: str
    run: Optional[Run] = None
    role: str = ""
    text: str = ""
    details: str = ""
    value: Any = None
    bar_value: int = 0
    bar_max: int = 0
    bar_format: str = ""


def progress_action(run: Run, role: str, msg: wk.Message) -> Action:
    step = STEP_NAMES.get(role, role)
    if role in ("download", "use_file") and msg.total > 1:
        mb = f"{msg.done / 1e6:.1f} / {msg.total / 1e6:.1f} MB"
        per = int(1000 * msg.done / max(msg.total, 1))
        return Action("progress", run, role, f"{step}: {mb}", bar_value=per, bar_max=1000, bar_format=f"{mb} (%p%)")
    if msg.total > 1 or role in ("encode", "propagate", "segment_auto", "segment", "ef_check"):
        return Action("progress", run, role, f"{step}: {msg.done}/{msg.total} frames", bar_value=msg.done,
                      bar_max=max(msg.total, 1), bar_format=f"{step}: {msg.done}/{msg.total} frames")
    return Action("progress", run, role, f"{step}...", bar_value=0, bar_max=0, bar_format=step)


class RunTracker:
    """Maps worker messages to `Action` s; after an error or a cancel the run's remaining messages
    are ignored (the caller drops its queued jobs with ``Worker.cancel()``)."""

    def __init__(self) -> None:
        self._by_job: dict = {}

    def add(self, run: Run) -> Run:
        for jid in run.roles:
            self._by_job[jid] = run
        return run

    @property
    def active(self) -> list:
        return [r for r in {id(r): r for r in self._by_job.values()}.values() if not r.finished]

    def handle(self, msg: wk.Message) -> Action:
        run = self._by_job.get(msg.job_id)
        if run is None or run.finished:
            if msg.kind != wk.PROGRESS:
                self._by_job.pop(msg.job_id, None)
            return Action("ignore")
        role = run.roles[msg.job_id]
        if msg.kind == wk.PROGRESS:
            return progress_action(run, role, msg)
        self._by_job.pop(msg.job_id, None)
        if msg.kind == wk.RESULT:
            run.done_roles.append(role)
            if role in run.early:
                return Action("result", run, role, value=msg.value)
            if role != run.final:
                return Action("progress", run, role, STEP_NAMES.get(role, role) + ": done", bar_max=0)
            run.finished = True
            return Action("result", run, role, value=msg.value)
        run.finished = True
        if msg.kind == wk.CANCELLED and any(r in run.done_roles for r in run.early):
            return Action("cancelled", run, role, "Check cancelled: the result shown is kept, its EF not checked.")
        if msg.kind == wk.CANCELLED:
            return Action("cancelled", run, role, "Cancelled. Frames already computed are kept for the next run.")
        return Action("error", run, role, msg.text, details=msg.details)
