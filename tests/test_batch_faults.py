"""`echosam batch` under faults, on a fake EchoNet-Dynamic tree (phantom AVIs, FileList.csv, one corrupt
video): a worker killed mid-run loses only its cases; a batch interrupted (Ctrl-C) and then killed
(SIGKILL, driver and workers) reruns to a summary identical to an uninterrupted run's."""
import csv
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_data import OPTIONS, make_echonet, prompt_free_model, subprocess_env
from echosam import cli
from echosam.batch import BatchConfig, read_summary_csv, run_batch, without_timing
from echosam.batch.state import STATE_DIR


def config(**kw):
    kw.setdefault("model", prompt_free_model())
    kw.setdefault("options", dict(OPTIONS))
    kw.setdefault("threads_per_worker", 1)        # the same arithmetic in every run compared
    return BatchConfig(**kw)


@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    return make_echonet(tmp_path_factory.mktemp("echonet"), n=4)


@pytest.fixture(scope="module")
def reference(echonet, tmp_path_factory):
    """The uninterrupted run (in this process: the same per-case arithmetic as a pool worker's)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    res = run_batch(echonet, out, config(backend="inline"))
    return out, res


# ---- faults -------------------------------------------------------------------------------------------
def kill_a_worker_after_the_first_case(pause_s: float = 0.0):
    """(progress callback, pids killed): the callback SIGKILLs one pool worker when the first case is done,
    then waits ``pause_s`` seconds (long enough and the pool notices the death before its next hand-over)."""
    killed = []

    def progress(done, total, message=""):
        if done == 1 and not killed:
            victim = mp.active_children()[0]
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim.pid)
            time.sleep(pause_s)

    return progress, killed


def test_a_killed_worker_loses_only_its_cases(echonet, reference, tmp_path):
    progress, killed = kill_a_worker_after_the_first_case()
    res = run_batch(echonet, tmp_path / "out", config(workers=2, backend="pool"), progress=progress)
    assert killed and res.pending == 0
    assert without_timing(res.rows) == without_timing(read_summary_csv(reference[0] / "summary.csv"))


def _rows(out: Path) -> int:
    folder = out / STATE_DIR / "cases"
    return len([p for p in folder.glob("*.json")]) if folder.is_dir() else 0


def _start_and_stop(argv, out, rows_before, stop):
    proc = subprocess.Popen([sys.executable, "-m", "echosam.cli"] + argv, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            # Ctrl-C as a user's shell delivers it: an ignored SIGINT inherited from the test
                            # process (an earlier test's pool worker set-up) would make the child deaf to it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while _rows(out) <= rows_before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    stop(proc)
    proc.communicate(timeout=120)
    return proc.returncode


def test_interrupted_then_killed_batch_reruns_to_the_same_summary(echonet, reference, tmp_path):
    out = tmp_path / "out"
    argv = ["batch", str(echonet), "-o", str(out), "--model", prompt_free_model(), "--no-overlay", "--workers", "2",
            "--threads-per-worker", "1", "-q"]
    rc = _start_and_stop(argv, out, 0, lambda p: p.send_signal(signal.SIGINT))          # Ctrl-C
    assert rc == 130 and 1 <= _rows(out) < 5 and not (out / "summary.csv").exists()
    n = _rows(out)
    rc = _start_and_stop(argv, out, n, lambda p: os.killpg(p.pid, signal.SIGKILL))     # the job is killed
    # killed mid-run (on fast cores the remaining cases may all have finished just before the kill)
    assert rc == -signal.SIGKILL and n <= _rows(out) <= 5
    assert cli.main(argv + ["--backend", "inline"]) == 0                              # the rerun finishes the job
    assert without_timing(read_summary_csv(out / "summary.csv")) == without_timing(
        read_summary_csv(reference[0] / "summary.csv"))
    with open(out / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 5


def test_a_pool_broken_before_the_next_case_is_handed_over_loses_no_case(echonet, reference, tmp_path):
    """The worker dies between cases and the pool notices before the driver submits the next one: that case
    was never run and must still be run (submitting to a broken pool raises; the case goes back in the queue)."""
    progress, killed = kill_a_worker_after_the_first_case(3.0)   # the next submit meets a broken pool
    res = run_batch(echonet, tmp_path / "out", config(workers=2, backend="pool"), progress=progress)
    assert killed and res.pending == 0
    assert without_timing(res.rows) == without_timing(read_summary_csv(reference[0] / "summary.csv"))
