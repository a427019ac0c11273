"""`echosam segment / correct` on scanner screen captures: the model sees only the fan, labels land on
the original pixels and never outside the fan, the region is recorded and reused, overrides work."""
import json

import numpy as np
import pytest
import torch

from echosam import cli, pipeline
from echosam.checkpoints import save_checkpoint
from echosam.io import read_labels, write_labels
from echosam.models.registry import build_model, preset_config
from screen_fixtures import make_screen_capture, write_screen_dicom


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("region")
    cap = make_screen_capture(n_frames=8, seed=4, apex=(90, 20))
    write_screen_dicom(cap, d / "screen.dcm", region="none")          # a screen capture: no US regions
    torch.manual_seed(0)
    for fam in ("memsam", "medivista"):
        cfg = preset_config(fam, "tiny")
        cfg.classes = ["lv", "myo", "la"]
        save_checkpoint(build_model(fam, cfg), fam, cfg, d / f"{fam}.safetensors")
    from echosam.cine import Cine
    write_labels(cap.labels, Cine.from_array(cap.frames, spacing=cap.spacing), d / "truth.seq.nrrd")
    return d, cap


def _centre_click(mask):
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return int(x), int(y)


def test_segment_and_correct_stay_in_the_fan(data, capsys):
    d, cap = data
    out = d / "out"
    x, y = _centre_click(cap.labels[0] == 1)
    rc = cli.main(["segment", str(d / "screen.dcm"), "-o", str(out), "--model", str(d / "memsam.safetensors"),
                   "--points", f"{x},{y},1", "--structures", "lv,myo", "--device", "cpu", "-q", "--no-overlay"])
    assert rc == 0
    lab, geo = read_labels(out / "labels.seq.nrrd")
    assert lab.shape == cap.labels.shape and geo.spacing == pytest.approx(cap.spacing)
    run = json.loads((out / "run.json").read_text())
    region = run["region"]
    assert region["source"] == "detected" and region["notice"] is None and run["keep_connected"] is True
    assert (out / "fan_mask.png").is_file()
    from echosam.fan import FanRegion
    fan = FanRegion.load(out, region, cap.fan.shape)
    assert region["fan_fraction"] == pytest.approx(fan.fraction, abs=1e-4)
    assert not (lab[:, ~fan.mask] > 0).any() and not (lab[:, ~cap.fan] > 0).any()    # nothing outside the fan
    assert json.loads((out / "report.json").read_text())["info"]["region"] == region

    # correct: a full-frame mask on frame 3, mapped into the crop and back: bit for bit on the fan
    s = pipeline.correct(out, d / "truth.seq.nrrd", 3, "lv", device="cpu")
    new, _ = read_labels(out / "labels.seq.nrrd")
    assert np.array_equal(new[3] == 1, (cap.labels[3] == 1) & fan.mask)
    assert s.cine.shape[1:] == fan.crop_shape and s.locked_frames["lv"] == [3]
    assert not (new[:, ~cap.fan] > 0).any()
    assert json.loads((out / "run.json").read_text())["region"] == region

    # a prompt off the fan's crop is refused plainly
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(d / "bad"), "--model", str(d / "memsam.safetensors"),
                     "--points", "2,2,1", "--device", "cpu", "-q"]) == 2
    assert "imaging fan" in capsys.readouterr().err and not (d / "bad").exists()


def test_prompt_free_overrides_and_no_fan(data, tmp_path, capsys):
    d, cap = data
    common = ["--model", str(d / "medivista.safetensors"), "--structures", "lv,myo,la", "--device", "cpu", "-q",
              "--no-overlay"]
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(tmp_path / "auto"), *common]) == 0
    lab, _ = read_labels(tmp_path / "auto" / "labels.seq.nrrd")
    assert not (lab[:, ~cap.fan] > 0).any()

    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(tmp_path / "box"), "--region", "20,30,150,140",
                     "--no-keep-connected", *common]) == 0
    run = json.loads((tmp_path / "box" / "run.json").read_text())
    assert run["region"]["source"] == "user" and run["region"]["bbox"] == [20, 30, 150, 140]
    assert run["keep_connected"] is False
    lab, _ = read_labels(tmp_path / "box" / "labels.seq.nrrd")
    inside = np.zeros(cap.fan.shape, bool)
    inside[30:141, 20:151] = True
    assert not (lab[:, ~inside] > 0).any()

    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(tmp_path / "off"), "--region", "off", *common]) == 0
    assert json.loads((tmp_path / "off" / "run.json").read_text())["region"]["source"] == "none"

    # no fan: a still cine (every frame the same) -> one plain line on stderr, whole frame, recorded
    from echosam.cine import Cine
    from echosam.io import write_cine
    still = np.repeat(cap.frames[:1], 4, axis=0)
    write_cine(Cine.from_array(still), tmp_path / "still.seq.nrrd")
    capsys.readouterr()
    assert cli.main(["segment", str(tmp_path / "still.seq.nrrd"), "-o", str(tmp_path / "still"), *common]) == 0
    err = capsys.readouterr().err
    notice = [line for line in err.splitlines() if "no imaging fan found" in line]
    assert len(notice) == 1 and "whole frame" in notice[0]
    region = json.loads((tmp_path / "still" / "run.json").read_text())["region"]
    assert region["source"] == "none" and region["fan_fraction"] == 1.0 and "no imaging fan" in region["notice"]

    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(tmp_path / "x"), "--region", "1,2,3", *common]) == 2
    assert "--region" in capsys.readouterr().err
