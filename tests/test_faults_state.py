"""Fault injection, classes "concurrency", "corrupt session folders" and "bad options": a second `correct`
on a folder in use, every session file damaged one by one, unknown devices, a prompted seed model, a
pickled .npy mask, negative coordinates. Each: exit code 2, one line naming the cause, no new files, the
result folder byte-identical."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from echosam.io.lock import folder_lock
from faults_common import assert_refused, copy_result, make_data, names, run_cli, tree
from test_faults_publish import ENV


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults_state"))


def _correct(out, data, frame=4):
    return ["correct", out, "--mask", data["truth"], "--frame", frame, "--device", "cpu", "-q"]


def test_second_correct_on_a_busy_folder_is_refused(data, tmp_path, capsys):
    out = copy_result(data, tmp_path / "out")
    before, listing = tree(out), names(tmp_path)
    with folder_lock(out):                                    # a first `correct` (this test) holds the folder
        rc, err = run_cli(_correct(out, data), capsys)
        assert_refused(rc, err, str(out), "another echosam command")
        assert tree(out) == before and names(tmp_path) == listing
    rc, _ = run_cli(_correct(out, data), capsys)              # once it is free, the correction goes through
    assert rc == 0
    assert [c["frame"] for c in json.loads((out / "run.json").read_text())["corrections"]] == [4]


HOLD = textwrap.dedent("""
    import sys, time
    from echosam.io.lock import folder_lock
    with folder_lock(sys.argv[1]):
        print("LOCKED", flush=True)
        sys.stdin.readline()
""")


def test_lock_holds_across_processes(data, tmp_path, capsys):
    out = copy_result(data, tmp_path / "out")
    before = tree(out)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=ENV, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "LOCKED"
        rc, err = run_cli(_correct(out, data, 6), capsys)
        assert_refused(rc, err, "another echosam command")
        assert tree(out) == before
    finally:
        p.communicate("\n", timeout=30)


def _truncate(path, keep=0.5):
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])


DAMAGE = {
    "session.json missing key": lambda s: s.joinpath("session.json").write_text(json.dumps(
        {k: v for k, v in json.loads(s.joinpath("session.json").read_text()).items() if k != "structures"})),
    "session.json truncated": lambda s: _truncate(s / "session.json"),
    "prompts.json corrupt": lambda s: s.joinpath("prompts.json").write_text('{"prompts": [{"frame": "x"'),
    "prompts.json wrong type": lambda s: s.joinpath("prompts.json").write_text('[1, 2, 3]'),
    "results.npz truncated at 30%": lambda s: _truncate(s / "results.npz", 0.3),
    "results.npz truncated at 90%": lambda s: _truncate(s / "results.npz", 0.9),
    "results.npz missing": lambda s: (s / "results.npz").unlink(),
    "embeddings truncated at 10%": lambda s: _truncate(s / "embeddings.safetensors", 0.1),
    "embeddings truncated at 70%": lambda s: _truncate(s / "embeddings.safetensors", 0.7),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_session_says_start_over(data, tmp_path, capsys, damage):
    out = copy_result(data, tmp_path / "out")
    DAMAGE[damage](out / "session")
    before, listing = tree(out), names(tmp_path)
    rc, err = run_cli(_correct(out, data), capsys)
    assert_refused(rc, err, "damaged", "echosam segment")
    assert tree(out) == before and names(tmp_path) == listing


def test_embeddings_of_the_wrong_shape(data, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    out = copy_result(data, tmp_path / "out")
    emb = out / "session" / "embeddings.safetensors"
    t = load_file(str(emb))
    save_file({k: v[:, :, :-1].contiguous() if v.ndim > 2 else v for k, v in t.items()}, str(emb))
    before = tree(out)
    rc, err = run_cli(_correct(out, data), capsys)
    assert_refused(rc, err, "damaged", "embeddings", "shape")
    assert tree(out) == before


@pytest.mark.parametrize("damage", ["truncated", "not a record"])
def test_damaged_run_json(data, tmp_path, capsys, damage):
    out = copy_result(data, tmp_path / "out")
    if damage == "truncated":
        _truncate(out / "run.json")
    else:
        (out / "run.json").write_text("[]")
    before = tree(out)
    rc, err = run_cli(_correct(out, data), capsys)
    assert_refused(rc, err, "run.json", "damaged", "echosam segment")
    assert tree(out) == before


def test_bad_options(data, tmp_path, capsys):
    listing = names(tmp_path)
    base = ["segment", data["cine"], "-o", tmp_path / "out", "--model", data["memsam"], "-q"]
    rc, err = run_cli(base + ["--device", "tpu", "--points", data["point"]], capsys)
    assert_refused(rc, err, "unknown device", "tpu")
    rc, err = run_cli(base + ["--device", "cpu", "--seed-model", data["memsam"]], capsys)
    assert_refused(rc, err, "seed-model", "prompted")
    np.save(tmp_path / "objs.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    listing = names(tmp_path)
    rc, err = run_cli(base + ["--device", "cpu", "--mask", tmp_path / "objs.npy"], capsys)
    assert_refused(rc, err, "objs.npy", "python objects")
    for pts in ("-5,-3,1", "-5.5,10,1;3,4,0"):
        rc, err = run_cli(base + ["--device", "cpu", "--points", pts], capsys)
        assert_refused(rc, err, "outside")
    rc, err = run_cli(base + ["--device", "cpu", "--box", "-4,-4,10,10"], capsys)
    assert_refused(rc, err, "outside")
    assert names(tmp_path) == listing
