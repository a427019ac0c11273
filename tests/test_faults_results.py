"""Fault injection, class "silently wrong results": partial checkpoints, masks and label maps on the wrong
grid, grey images used as label maps, EF on a cine without an image. Each case: the exact exit code, a
one-line message naming the cause, no new files, an existing result folder byte-identical."""
import json

import numpy as np
import pytest
import torch

from echosam import cardiac
from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.cine import Cine
from echosam.errors import CheckpointError
from echosam.io import write_cine, write_labels
from echosam.models.registry import build_model, preset_config
from faults_common import assert_refused, copy_result, make_data, names, run_cli, tree


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults_results"))


def test_partial_checkpoint_without_base_is_refused(data, tmp_path, capsys):
    torch.manual_seed(1)
    cfg = preset_config("medivista", "tiny")
    model = build_model("medivista", cfg)
    model.set_paper_trainable()
    save_checkpoint(model, "medivista", cfg, tmp_path / "partial.safetensors", only_trainable=True)
    with pytest.raises(CheckpointError, match="partial checkpoint.*names no base"):
        load_checkpoint(tmp_path / "partial.safetensors")
    before = names(tmp_path)
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "out", "--model", tmp_path / "partial.safetensors",
                       "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "partial checkpoint", "names no base")
    assert names(tmp_path) == before


def test_partial_checkpoint_loads_on_its_named_base(tmp_path):
    torch.manual_seed(2)
    cfg = preset_config("medivista", "tiny")
    full = build_model("medivista", cfg)
    save_checkpoint(full, "medivista", cfg, tmp_path / "base.safetensors")
    full.set_paper_trainable()
    with torch.no_grad():
        for p in full.parameters():
            if p.requires_grad:
                p.add_(0.5)
    save_checkpoint(full, "medivista", cfg, tmp_path / "tuned.safetensors", only_trainable=True, base="base.safetensors")
    loaded = load_checkpoint(tmp_path / "tuned.safetensors")
    for k, v in full.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0)


def _moved(cine: Cine, **kw) -> Cine:
    return Cine.from_array(cine.frames, frame_times=cine.frame_times, ijk_to_ras=kw.get("m", cine.ijk_to_ras))


@pytest.mark.parametrize("fault", ["spacing", "origin", "frames"])
def test_mask_on_another_grid_is_refused(data, tmp_path, capsys, fault):
    ph = data["phantom"]
    m = ph.cine.ijk_to_ras.copy()
    labels, cine = ph.labels, ph.cine
    if fault == "spacing":
        m[:3, :2] *= 1.5
        cine = _moved(ph.cine, m=m)
    elif fault == "origin":
        m[:3, 3] += 7.0
        cine = _moved(ph.cine, m=m)
    else:
        cine, labels = ph.cine.subset(0, 6), ph.labels[:6]
    write_labels(labels, cine, tmp_path / "mask.seq.nrrd")
    out = copy_result(data, tmp_path / "out")
    before, listing = tree(out), names(tmp_path)
    rc, err = run_cli(["correct", out, "--mask", tmp_path / "mask.seq.nrrd", "--frame", "3", "--device", "cpu", "-q"],
                      capsys)
    words = {"spacing": ("another grid", "spacing"), "origin": ("another grid", "origin"), "frames": ("6 frame",)}[fault]
    assert_refused(rc, err, "mask.seq.nrrd", *words)
    assert tree(out) == before and names(tmp_path) == listing
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "new", "--model", data["memsam"], "--mask",
                       tmp_path / "mask.seq.nrrd", "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "mask.seq.nrrd", *words)
    assert names(tmp_path) == listing
    rc, err = run_cli(["report", tmp_path / "mask.seq.nrrd", "--cine", data["cine"], "-o", tmp_path / "rep"], capsys)
    assert_refused(rc, err, "mask.seq.nrrd", *words)
    assert names(tmp_path) == listing


def test_grey_image_is_not_a_label_map(data, tmp_path, capsys):
    listing = names(tmp_path)
    rc, err = run_cli(["report", data["cine"], "-o", tmp_path / "rep"], capsys)
    assert_refused(rc, err, "cine.seq.nrrd", "not a label map")
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "out", "--model", data["memsam"], "--mask",
                       data["cine"], "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "cine.seq.nrrd", "not a label map")
    out = copy_result(data, tmp_path / "res")
    before = tree(out)
    rc, err = run_cli(["correct", out, "--mask", data["cine"], "--frame", "2", "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "cine.seq.nrrd", "not a label map")
    assert tree(out) == before and names(tmp_path) == listing | {"res", "cine.seq.nrrd"}
    # a flat cine (all values 0..3) still says it is a grey image: the node class
    flat = Cine.from_array(np.ones((4, 48, 48), np.uint8), fps=30)
    write_cine(flat, tmp_path / "flat.seq.nrrd")
    rc, err = run_cli(["report", tmp_path / "flat.seq.nrrd", "-o", tmp_path / "rep"], capsys)
    assert_refused(rc, err, "flat.seq.nrrd", "grey image")
    # an integer .npy of grey values too
    np.save(tmp_path / "grey.npy", data["phantom"].cine.frames[0].astype(np.int64))
    rc, err = run_cli(["correct", out, "--mask", tmp_path / "grey.npy", "--frame", "2", "--device", "cpu", "-q"], capsys)
    assert_refused(rc, err, "grey.npy", "not a label map")
    assert tree(out) == before


def test_black_cine_gets_no_ef(data, tmp_path, capsys):
    black = Cine.from_array(np.zeros((10, 48, 48), np.uint8), fps=30)
    write_cine(black, tmp_path / "black.seq.nrrd")
    rc, _ = run_cli(["segment", tmp_path / "black.seq.nrrd", "-o", tmp_path / "out", "--model", data["medivista"],
                     "--structures", "lv", "--device", "cpu", "--no-overlay", "-q"], capsys)
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "report.json").read_text())["summary"]
    assert summary["ef_percent"] is None and summary["edv_ml"] is None
    assert summary["status"] in ("no LV", "no plausible LV")
    # the rule itself, on labels that do hold an LV
    lab = np.zeros((10, 48, 48), np.uint8)
    lab[:, 10:30, 10:30] = 1
    res = cardiac.analyse(lab, (1, 1), np.arange(10) / 30, frames=black.frames, predicted=True)
    assert res.status == "no plausible LV" and not np.isfinite(res.ef_percent) and "no image" in res.message
    lab[3:] = 0
    res = cardiac.analyse(lab, (1, 1), np.arange(10) / 30, frames=data["phantom"].cine.frames, predicted=True)
    assert res.status == "no plausible LV" and "3 of 10" in res.message
