"""Dependency check, install plan and a background installer (Qt-free, Slicer-free, no torch import).

The panel asks once, then `BackgroundInstall` runs each step as a child process of Slicer's Python
(``PythonSlicer -m ...``) on a plain thread, while the panel polls its events from a timer: Slicer
stays responsive on every version (5.8 and 5.10 have no ``slicer.packaging`` and no non-blocking
``executePythonModule``). The steps:

1. torch with light-the-torch, the tool and arguments the PyTorch extension's
   ``PyTorchUtilsLogic.installTorch`` uses (``ltt install torch>=2.1 torchvision``: the build that
   matches the NVIDIA driver, else CPU; no backend forced), after installing light-the-torch itself;
2. the missing packages of ``Resources/requirements.txt`` with pip, under a constraints file that
   pins the installed versions of the packages Slicer ships (SimpleITK, vtk, numpy), so they are
   never replaced (SlicerTotalSegmentator #4).

The process runner is injected (`ProcessRunner`), as SlicerNNUnet injects its process, so tests run
real child processes of their own. The end says whether a restart is needed: when a package could
not be imported afterwards, or one that was already loaded was changed.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

SKIP_PACKAGES = ("torch", "SimpleITK")
PROTECTED = ("SimpleITK", "vtk", "numpy")     # shipped with Slicer: pinned while installing
TORCH_REQUIREMENTS = ("torch>=2.1", "torchvision")
# distribution name -> import name, where they differ
IMPORT_NAMES = {"pynrrd": "nrrd", "segment-anything": "segment_anything", "PyWavelets": "pywt", "PyYAML": "yaml",
                "Pillow": "PIL", "pydicom": "pydicom", "safetensors": "safetensors"}


def load_requirements(path) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def has_module(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is not None


def missing_requirements(path) -> list[str]:
    """Requirements whose package cannot be imported (import check only; where slicer.packaging exists
    the module uses its pip_check instead, which also enforces the version floors)."""
    missing = []
    for req in load_requirements(path):
        name = requirement_name(req)
        if name in SKIP_PACKAGES:
            continue
        if not has_module(IMPORT_NAMES.get(name, name.replace("-", "_"))):
            missing.append(req)
    return missing


def install_message(missing: list, need_torch: bool) -> str:
    parts = ["EchoSAM needs some Python packages before the first segmentation:"]
    if need_torch:
        parts.append("- PyTorch (light-the-torch picks the build for your GPU or CPU)")
    if missing:
        parts.append("- " + ", ".join(requirement_name(r) for r in missing))
    parts.append("This downloads several hundred MB once and can take a few minutes; it runs in the background "
                 "with progress shown in the panel, and Slicer stays usable. Slicer's own SimpleITK, VTK and numpy "
                 "are not touched. Continue?")
    return "\n".join(parts)


# ---- the background installer ----------------------------------------------------------------------
def python_executable() -> str:
    """Slicer's ``PythonSlicer`` (on PATH inside Slicer), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


@dataclass(frozen=True)
class InstallStep:
    title: str
    argv: tuple


def constraints_text(packages=PROTECTED) -> str:
    """``name==version`` lines for the installed ``packages`` (absent ones are skipped)."""
    from importlib import metadata
    lines = []
    for name in packages:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return "\n".join(lines) + "\n"


def plan_steps(missing: list, need_torch: bool, python: Optional[str] = None,
               constraints: Optional[str] = None) -> list:
    """The child processes to run, in order (see the module docstring)."""
    python = python or python_executable()
    steps = []
    if need_torch:
        if not has_module("light_the_torch"):
            steps.append(InstallStep("Installing light-the-torch", (python, "-m", "pip", "install", "light-the-torch>=0.5")))
        steps.append(InstallStep("Installing PyTorch (the build for this GPU or CPU)",
                                 (python, "-m", "light_the_torch", "install", *TORCH_REQUIREMENTS)))
    if missing:
        extra = ("-c", constraints) if constraints else ()
        steps.append(InstallStep(f"Installing {', '.join(requirement_name(r) for r in missing)}",
                                 (python, "-m", "pip", "install", *extra, *missing)))
    return steps


class ProcessRunner(Protocol):
    def run(self, argv: tuple, on_line: Callable[[str], None], should_stop: Callable[[], bool]) -> int:
        """Run ``argv``, call ``on_line`` per output line; return the exit status (stop early when asked)."""


class SubprocessRunner:
    """Runs a child process with ``subprocess`` (no Qt), merging stdout and stderr."""

    def run(self, argv, on_line, should_stop) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", env=env) as proc:
            for line in proc.stdout:
                on_line(line.rstrip())
                if should_stop():
                    proc.kill()
                    break
            return proc.wait()


@dataclass
class InstallEvent:
    kind: str                  # "step", "line", "done" or "failed"
    text: str
    step: int = 0
    steps: int = 0


@dataclass
class InstallOutcome:
    ok: bool
    restart_required: bool
    message: str
    log: list = field(default_factory=list)


class BackgroundInstall:
    """Run install steps on a thread; `poll` (GUI thread) returns the events so far. ``import_names``:
    the modules that must import afterwards (a failure, or one already loaded before, -> restart)."""

    def __init__(self, steps: list, import_names=(), runner: Optional[ProcessRunner] = None) -> None:
        self.steps, self.import_names = list(steps), list(import_names)
        self.runner = runner or SubprocessRunner()
        self._events: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.outcome: Optional[InstallOutcome] = None
        self._loaded_before = [n for n in self.import_names if n in sys.modules]
        self._thread = threading.Thread(target=self._run, name="EchoSAM install", daemon=True)

    def start(self) -> "BackgroundInstall":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    @property
    def finished(self) -> bool:
        with self._lock:
            return self.outcome is not None and not self._events

    def _emit(self, event: InstallEvent) -> None:
        with self._lock:
            self._events.append(event)

    def poll(self) -> list:
        with self._lock:
            out, self._events = self._events, []
        return out

    def _run(self) -> None:
        log: list = []
        n = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            self._emit(InstallEvent("step", step.title, i, n))

            def line(text, _i=i):
                log.append(text)
                self._emit(InstallEvent("line", text, _i, n))

            try:
                code = self.runner.run(step.argv, line, self._stop.is_set)
            except OSError as exc:
                code, log = -1, log + [str(exc)]
            if self._stop.is_set() or code != 0:
                why = "cancelled" if self._stop.is_set() else f"failed (exit status {code})"
                msg = f"{step.title} {why}. " + (f"Last output: {log[-1]}" if log else "")
                self._finish(InstallOutcome(False, False, msg.strip(), log), "failed")
                return
        importlib.invalidate_caches()
        broken = [m for m in self.import_names if not has_module(m)]
        restart = bool(broken or self._loaded_before)
        msg = "Installed. " + ("Restart Slicer to use the new packages." if restart else "Ready.")
        self._finish(InstallOutcome(True, restart, msg, log), "done")

    def _finish(self, outcome: InstallOutcome, kind: str) -> None:
        with self._lock:
            self.outcome = outcome
            self._events.append(InstallEvent(kind, outcome.message, len(self.steps), len(self.steps)))


def import_names_of(requirements: list, need_torch: bool) -> list:
    names = [IMPORT_NAMES.get(requirement_name(r), requirement_name(r).replace("-", "_")) for r in requirements]
    return (["torch"] if need_torch else []) + names


def start_install(missing: list, need_torch: bool, runner: Optional[ProcessRunner] = None,
                  python: Optional[str] = None) -> BackgroundInstall:
    """Plan and start a background install; the constraints file lives in a temporary folder."""
    folder = tempfile.mkdtemp(prefix="echosam-install-")
    constraints = os.path.join(folder, "constraints.txt")
    Path(constraints).write_text(constraints_text(), encoding="utf-8")
    steps = plan_steps(missing, need_torch, python=python, constraints=constraints)
    return BackgroundInstall(steps, import_names_of(missing, need_torch), runner=runner).start()
