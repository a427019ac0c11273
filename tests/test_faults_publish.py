"""Fault injection, class "outputs that are not atomic": a failure while a report is built, a kill between
the two renames of a folder swap, SIGTERM during a segment run, stale temporaries of killed runs,
symlinked output folders, 250-character names, names with $...$, unwritable outputs."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from echosam import pipeline, report
from echosam.io import atomic, write_cine
from echosam.io.atomic import atomic_file, atomic_folder
from faults_common import assert_refused, copy_result, make_data, names, run_cli, tree

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "EchoSAMSlicer" / "Logic"), str(REPO / "tests"),
                                                    os.environ.get("PYTHONPATH", "")]),
           OMP_NUM_THREADS="1", MPLBACKEND="Agg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults_publish"))


def test_report_is_published_whole(data, tmp_path, capsys, monkeypatch):
    rc, _ = run_cli(["report", data["truth"], "-o", tmp_path / "rep"], capsys)
    assert rc == 0
    before, listing = tree(tmp_path / "rep"), names(tmp_path)

    def crash(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(report, "plot_lv_curve", crash)          # json and csv written, then the plot fails
    rc, err = run_cli(["report", data["truth"], "--cine", data["cine"], "-o", tmp_path / "rep"], capsys)
    assert_refused(rc, err, "no space left")
    assert tree(tmp_path / "rep") == before and names(tmp_path) == listing


def test_report_into_a_segment_folder_keeps_its_other_files(data, tmp_path, capsys):
    out = copy_result(data, tmp_path / "out")
    before = tree(out)
    rc, _ = run_cli(["report", out / "labels.seq.nrrd", "--cine", data["cine"], "-o", out], capsys)
    assert rc == 0
    after = tree(out)
    assert {k: v for k, v in after.items() if not k.startswith(("report.", "lv_curve"))} == \
           {k: v for k, v in before.items() if not k.startswith(("report.", "lv_curve"))}


KILL_BETWEEN = textwrap.dedent("""
    import os, sys
    from echosam.io import atomic
    atomic.exchange = lambda a, b: False                       # the two-rename fallback
    atomic.between_renames = lambda: os._exit(9)               # killed between the renames
    with atomic.atomic_folder(sys.argv[1]) as tmp:
        (tmp / "report.json").write_text("new")
""")


def test_kill_between_the_renames_is_rolled_back(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "report.json").write_text("old")
    (dest / "session").mkdir()
    (dest / "session" / "prompts.json").write_text("{}")
    before = tree(dest)
    r = subprocess.run([sys.executable, "-c", KILL_BETWEEN, str(dest)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert not dest.exists()                                   # the crash left the swap half done
    old = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert len(old) == 1
    for p in tmp_path.iterdir():                               # the dead run's leftovers are not brand new
        os.utime(p, (time.time() - 60, time.time() - 60))
    atomic.recover(dest)                                       # what the next publish of `out` runs first
    assert tree(dest) == before and names(tmp_path) == {"out"}
    with atomic_folder(dest) as tmp:                           # and publishing works again
        (tmp / "report.json").write_text("newer")
    assert (dest / "report.json").read_text() == "newer" and names(tmp_path) == {"out"}


def test_linux_swap_is_one_atomic_exchange(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux only")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert atomic.exchange(a, b)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
    monkeypatch.setattr(atomic, "between_renames", lambda: pytest.fail("the fallback ran"))
    with atomic_folder(a) as tmp:
        (tmp / "x").write_text("new")
    assert (a / "x").read_text() == "new" and names(tmp_path) == {"a", "b"}


SIGTERM_RUN = textwrap.dedent("""
    import sys, time
    from echosam import cli, report
    real = report.write_report
    def slow(*a, **k):
        real(*a, **k)
        print("READY", flush=True)
        time.sleep(60)
    report.write_report = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_is_handled_like_ctrl_c(data, tmp_path):
    out = copy_result(data, tmp_path / "out")
    before, listing = tree(out), names(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_RUN, "segment", str(data["cine"]), "-o", str(out),
                          "--model", str(data["memsam"]), "--points", data["point"], "--device", "cpu", "-q",
                          "--no-overlay"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "READY", p.stderr.read()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 143, err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["echosam: terminated (SIGTERM); nothing was half-written"]
    assert tree(out) == before and names(tmp_path) == listing


def test_stale_temporaries_are_swept_only_when_ours_and_old(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = atomic._HOST
    old = time.time() - 3600
    stale = [tmp_path / f".out.{host}-{dead.pid}-0123abcd.tmp", tmp_path / f".out.{host}-{dead.pid}-0123abce.tmp.png"]
    keep = [tmp_path / f".out.{host}-{os.getpid()}-0123abcf.tmp",        # a live writer
            tmp_path / f".out.{host}-{dead.pid}-0123abd0.tmpx",          # brand new (below)
            tmp_path / f".out.b.{host}-{dead.pid}-0123abd1.tmp",         # another destination (out.b)
            tmp_path / ".out.notours.tmp", tmp_path / "user.tmp"]
    for p in stale + keep:
        p.mkdir()
    for p in stale + keep[:1] + keep[2:]:
        os.utime(p, (old, old))
    with atomic_folder(tmp_path / "out") as tmp:
        (tmp / "x").write_text("x")
    assert names(tmp_path) == {"out"} | {p.name for p in keep}


def test_symlinked_output_folder_is_followed(data, tmp_path, capsys):
    target = copy_result(data, tmp_path / "real")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    old_report = (target / "report.json").read_bytes()
    rc, _ = run_cli(["report", data["truth"], "--cine", data["cine"], "-o", tmp_path / "link"], capsys)
    assert rc == 0
    assert (tmp_path / "link").is_symlink() and os.path.realpath(tmp_path / "link") == str(target)
    assert (target / "report.json").read_bytes() != old_report and (target / "session").is_dir()
    assert names(tmp_path) == {"real", "link", "cine.seq.nrrd"}


def test_long_names_and_math_looking_names(data, tmp_path, capsys):
    name = "a" * 241 + ".seq.nrrd"                               # 250 characters: legal
    assert len(name) == 250
    with atomic_file(tmp_path / name, suffix=".seq.nrrd") as tmp:
        tmp.write_bytes(b"x")
    assert names(tmp_path) == {name}
    os.unlink(tmp_path / name)
    math = tmp_path / "pat $x^2_{1}$ $\\alpha$.seq.nrrd"
    shutil.copy2(data["cine"], math)
    out = tmp_path / ("o" * 250)
    rc, err = run_cli(["segment", math, "-o", out, "--model", data["medivista"], "--device", "cpu", "-q"], capsys)
    assert rc == 0, err
    rc, err = run_cli(["report", out / "labels.seq.nrrd", "--cine", math, "-o", tmp_path / "rep $\\x$"], capsys)
    assert rc == 0, err
    assert names(tmp_path) == {math.name, out.name, "rep $\\x$"}


def test_unwritable_output_is_refused_before_any_work(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "afile").write_text("x")
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "afile" / "out", "--device", "cpu"], capsys)
    assert_refused(rc, err, "afile", "not a folder")
    if os.geteuid() != 0:                                       # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            rc, err = run_cli(["segment", data["cine"], "-o", ro / "out", "--device", "cpu"], capsys)
            assert_refused(rc, err, "not writable")
        finally:
            ro.chmod(0o755)
    assert names(tmp_path) == {"afile"} | ({"ro"} if os.geteuid() != 0 else set())
