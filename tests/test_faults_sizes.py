"""Fault injection, class "small files that allocate huge memory": gzip NRRD/NIfTI bombs (a header that
declares too much, and a small header with a payload that inflates past it), a run-length mask claiming
billions of pixels in a session's prompts.json, model JSONs with absurd sizes. Each is refused before the
allocation, with a message saying what was refused."""
import gzip
import json
import shutil
import time

import numpy as np
import pytest

from echosam.checkpoints import load_checkpoint
from echosam.errors import CheckpointError
from faults_common import assert_refused, copy_result, make_data, names, run_cli, tree


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults_sizes"))


def _nrrd_header(sizes, encoding="gzip") -> bytes:
    return ("NRRD0004\ntype: uint8\ndimension: 4\nspace: left-posterior-superior\n"
            f"sizes: {' '.join(map(str, sizes))}\nspace directions: (1,0,0) (0,1,0) (0,0,1) none\n"
            f"kinds: domain domain domain list\nencoding: {encoding}\nspace origin: (0,0,0)\n\n").encode()


def test_nrrd_declaring_more_than_the_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ECHOSAM_MAX_BYTES", str(8 << 20))
    sizes = (1024, 1024, 1, 64)                                  # 64 MB of zeros in a 64 KB gzip
    (tmp_path / "bomb.seq.nrrd").write_bytes(_nrrd_header(sizes) + gzip.compress(bytes(1 << 26), 9))
    listing = names(tmp_path)
    t = time.time()
    rc, err = run_cli(["info", tmp_path / "bomb.seq.nrrd"], capsys)
    assert_refused(rc, err, "bomb.seq.nrrd", "declares 67.1 MB", "limit")
    assert time.time() - t < 5 and names(tmp_path) == listing


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
def test_payload_inflating_past_its_header(tmp_path, capsys, encoding):
    import bz2
    payload = bytes(64 << 20)
    packed = gzip.compress(payload, 9) if encoding == "gzip" else bz2.compress(payload, 9)
    (tmp_path / "bomb.seq.nrrd").write_bytes(_nrrd_header((32, 32, 1, 4), encoding) + packed)
    rc, err = run_cli(["segment", tmp_path / "bomb.seq.nrrd", "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert_refused(rc, err, "bomb.seq.nrrd", "inflates to more than")
    assert names(tmp_path) == {"bomb.seq.nrrd"}


def test_nifti_gzip_bomb(tmp_path, capsys):
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(np.zeros((4, 1, 16, 16), np.uint8))
    sitk.WriteImage(img, str(tmp_path / "small.nii"))
    raw = (tmp_path / "small.nii").read_bytes()
    (tmp_path / "small.nii").unlink()
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(raw + bytes(64 << 20), 9))
    rc, err = run_cli(["info", tmp_path / "bomb.nii.gz"], capsys)
    assert_refused(rc, err, "bomb.nii.gz", "inflates to more than")


def test_rle_mask_claiming_billions_of_pixels(data, tmp_path, capsys):
    out = copy_result(data, tmp_path / "out")
    p = out / "session" / "prompts.json"
    d = json.loads(p.read_text())
    d["prompts"].append({"structure": "lv", "frame": 3, "mask": {"size": [50000, 100000], "counts": [5000000000]}})
    p.write_text(json.dumps(d))
    before, listing = tree(out), names(tmp_path)
    rc, err = run_cli(["correct", out, "--mask", data["truth"], "--frame", "4", "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "damaged", "50000x100000")
    assert tree(out) == before and names(tmp_path) == listing


@pytest.mark.parametrize("key,value,words", [("embed_dim", 131072, ("embed_dim", "131072")),
                                             ("img_size", 0, ("img_size", "0")),
                                             ("depth", 100000, ("depth", "100000"))])
def test_model_json_with_absurd_sizes(data, tmp_path, capsys, key, value, words):
    shutil.copy2(data["medivista"], tmp_path / "m.safetensors")
    meta = json.loads(data["medivista"].with_suffix(".json").read_text())
    meta["config"]["sam"][key] = value
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "m.safetensors")
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "out", "--model", tmp_path / "m.safetensors",
                       "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "m.safetensors", *words)
    assert names(tmp_path) == {"m.safetensors", "m.json"}
