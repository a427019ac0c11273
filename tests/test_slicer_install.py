"""The background installer (issue 15, defect 6): real child processes run by the injected runner on
a thread while the caller keeps going, with progress, a clear end and the restart decision."""
from __future__ import annotations

import sys
import time

from echosam.slicer import install


def drain(job, timeout=60.0):
    events, deadline = [], time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        events += job.poll()
        time.sleep(0.02)
    return events + job.poll()


def step(title, code):
    return install.InstallStep(title, (sys.executable, "-c", code))


def test_steps_run_in_the_background_with_progress_and_a_clear_end():
    job = install.BackgroundInstall([step("one", "import time; print('downloading'); time.sleep(0.5); print('ok')"),
                                     step("two", "print('installed')")], import_names=["json"]).start()
    assert not job.finished                          # the caller (Slicer's main thread) was not blocked
    events = drain(job)
    kinds = [(e.kind, e.text) for e in events]
    assert ("step", "one") in kinds and ("line", "downloading") in kinds and ("line", "installed") in kinds
    assert kinds[-1][0] == "done" and job.outcome.ok and job.outcome.restart_required   # json was loaded before
    assert [e.step for e in events if e.kind == "step"] == [1, 2] and events[-1].steps == 2


def test_a_failing_step_stops_with_its_output_and_no_restart():
    job = install.BackgroundInstall([step("bad", "import sys; print('no such package'); sys.exit(3)"),
                                     step("never", "print('x')")], import_names=["not_a_module_xyz"]).start()
    events = drain(job)
    assert events[-1].kind == "failed" and not job.outcome.ok and not job.outcome.restart_required
    assert "bad failed (exit status 3)" in job.outcome.message and "no such package" in job.outcome.message
    assert not any(e.text == "never" for e in events)


def test_the_plan_installs_torch_with_light_the_torch_and_pins_slicers_packages(tmp_path):
    steps = install.plan_steps(["pynrrd>=1.0"], need_torch=True, python="PythonSlicer", constraints="c.txt")
    argvs = [s.argv for s in steps]
    assert ("PythonSlicer", "-m", "light_the_torch", "install", "torch>=2.1", "torchvision") in argvs
    assert argvs[-1] == ("PythonSlicer", "-m", "pip", "install", "-c", "c.txt", "pynrrd>=1.0")
    assert "numpy==" in install.constraints_text() and not install.plan_steps([], need_torch=False)
    assert "background" in install.install_message(["pynrrd>=1.0"], True)
