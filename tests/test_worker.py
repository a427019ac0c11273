"""The background worker: jobs in order on one thread, progress via a queue, cancel, errors as messages."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from echosam import worker as w
from echosam.errors import PromptError


@pytest.fixture
def wk():
    worker = w.Worker()
    yield worker
    worker.shutdown()


def collect(worker, until_kinds=(w.RESULT, w.ERROR, w.CANCELLED), n=1, timeout=20.0):
    """Poll like the GUI timer does until ``n`` final messages arrived."""
    msgs, deadline = [], time.monotonic() + timeout
    while sum(m.kind in until_kinds for m in msgs) < n and time.monotonic() < deadline:
        msgs += worker.poll()
        time.sleep(0.005)
    return msgs


def frame_job(state, progress, cancel, n=20, delay=0.0):
    """Real per-frame work: a cumulative FFT of random frames, checked for cancel between frames."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        cancel.raise_if_cancelled()
        out.append(float(np.abs(np.fft.fft2(rng.random((64, 64)))).sum()))
        state.setdefault("frames_done", []).append(i)
        progress(i + 1, n, f"frame {i + 1}")
        time.sleep(delay)
    return out


def test_jobs_run_in_order_on_one_thread_with_progress(wk):
    threads = []
    wk.submit("a", lambda s, p, c: threads.append(threading.current_thread().name) or "A")
    jid = wk.submit("frames", frame_job, n=12)
    msgs = collect(wk, n=2)
    results = [m for m in msgs if m.kind == w.RESULT]
    assert [m.value for m in results][0] == "A" and len(results[1].value) == 12 and results[1].job_id == jid
    progress = [m for m in msgs if m.kind == w.PROGRESS]
    assert progress and progress[-1].done == 12 and progress[-1].total == 12
    assert all(a.done <= b.done for a, b in zip(progress, progress[1:]))
    assert threads == ["EchoSAM worker"] and threading.current_thread().name != threads[0]
    assert wk.state["frames_done"] == list(range(12))       # state persists on the worker
    assert wk.wait_idle(5) and not wk.busy


def test_cancel_between_frames_keeps_finished_frames(wk):
    wk.submit("slow", frame_job, n=400, delay=0.005)
    queued = wk.submit("never", frame_job, n=3)
    deadline = time.monotonic() + 10
    while not wk.state.get("frames_done") and time.monotonic() < deadline:
        time.sleep(0.005)
    wk.cancel()
    msgs = collect(wk, n=2)
    kinds = {m.job_id: m.kind for m in msgs if m.kind != w.PROGRESS}
    assert set(kinds.values()) == {w.CANCELLED} and queued in kinds
    done = wk.state["frames_done"]
    assert 0 < len(done) < 400 and done == list(range(len(done)))
    # the worker is still usable after a cancel
    wk.submit("after", lambda s, p, c: 7)
    assert [m.value for m in collect(wk) if m.kind == w.RESULT] == [7]


def test_errors_become_messages_not_exceptions(wk):
    def user_error(s, p, c):
        raise PromptError("Place at least one point on the left ventricle.")

    def bug(s, p, c):
        return {}["missing"]

    def oom(s, p, c):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    for fn in (user_error, bug, oom):
        wk.submit(fn.__name__, fn)
    errors = [m for m in collect(wk, n=3) if m.kind == w.ERROR]
    assert [m.name for m in errors] == ["user_error", "bug", "oom"]
    assert errors[0].text == "Place at least one point on the left ventricle."
    assert "KeyError" in errors[1].text and "Traceback" in errors[1].details
    assert "ran out of memory" in errors[2].text and "CPU" in errors[2].text
    assert w.readable_error(ValueError("x"))[1] is False


def test_session_jobs_need_a_model(wk):
    wk.submit("propagate", w.job_propagate)
    (msg,) = [m for m in collect(wk) if m.kind == w.ERROR]
    assert "Segment" in msg.text
    wk.submit("session", w.job_new_session, cine=None)
    assert "No model is loaded" in [m for m in collect(wk) if m.kind == w.ERROR][0].text


def test_real_session_on_the_worker(wk):
    import torch

    from echosam.checkpoints import LoadedModel
    from echosam.cine import Cine
    from echosam.models.registry import build_model, preset_config

    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 255, (5, 48, 48)).astype(np.uint8)
    cine = Cine.from_array(frames)
    config = preset_config("memsam", "tiny")
    wk.state["loaded"] = LoadedModel(build_model("memsam", config).eval(), "memsam", config, meta={"classes": ["lv"]})
    wk.submit("session", w.job_new_session, cine=cine, structures=("lv",))
    mask = np.zeros((48, 48), bool)
    mask[15:30, 12:28] = True
    wk.submit("seed", lambda s, p, c: s["session"].set_mask(0, "lv", mask))
    wk.submit("encode", w.job_encode)
    jid = wk.submit("propagate", w.job_propagate)
    msgs = collect(wk, n=4, timeout=60)
    assert not [m for m in msgs if m.kind == w.ERROR], [m.details for m in msgs if m.kind == w.ERROR]
    labels = [m.value for m in msgs if m.kind == w.RESULT and m.job_id == jid][0]
    assert labels.shape == (5, 48, 48) and np.array_equal(labels[0] == 1, mask)
    rid = wk.submit("result", w.job_result)
    res = [m.value for m in collect(wk) if m.kind == w.RESULT and m.job_id == rid][0]
    assert res.compute_path.startswith("cpu ") and "in-between" not in res.compute_path


def test_the_panel_hears_of_in_between_frames(wk):
    """A model that asks for in-between frames (here 30 fps -> 3 steps) says so in the line the Slicer panel
    shows under "Computed with"."""
    from echosam.cine import Cine
    from tiny_models import tiny_loaded

    frames = np.random.default_rng(1).integers(0, 255, (4, 48, 48)).astype(np.uint8)
    wk.state["loaded"] = tiny_loaded(substep_fps=90.0)
    wk.submit("session", w.job_new_session, cine=Cine.from_array(frames, fps=30), structures=("lv",))
    wk.submit("box", lambda s, p, c: s["session"].add_box(0, "lv", (10, 10, 30, 30)))
    wk.submit("propagate", w.job_propagate)
    rid = wk.submit("result", w.job_result)
    msgs = collect(wk, n=4, timeout=60)
    assert not [m for m in msgs if m.kind == w.ERROR], [m.details for m in msgs if m.kind == w.ERROR]
    res = [m.value for m in msgs if m.kind == w.RESULT and m.job_id == rid][0]
    assert res.compute_path.endswith("; in-between frames: 3 steps a frame")
    assert wk.state["session"].features.n_frames == 10 and res.labels.shape == (4, 48, 48)
