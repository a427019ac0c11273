"""Prompt zoom (`echosam.zoom`): the crop around the prompts, the same crop in training clips, and a
zoom-trained MemSAM through `echosam segment` / `correct` / `batch` options and the loop evaluation."""
import json

import numpy as np
import pytest
import torch

from echosam import cli, pipeline, zoom
from echosam.checkpoints import save_checkpoint
from echosam.errors import EchoSAMError
from echosam.fan import FanRegion
from echosam.io import read_labels, write_labels
from echosam.models.memsam import MemSAMConfig
from echosam.models.registry import build_model, preset_config
from screen_fixtures import make_screen_capture, write_screen_dicom


# ---- geometry -----------------------------------------------------------------------------------
def test_zoom_box_grows_keeps_aspect_and_clips():
    # a 31 x 41 box grown by 25 % per side: 46.5 x 61.5, rounded outwards, about the same centre
    x0, y0, x1, y1 = zoom.zoom_box((40, 30, 70, 70), (200, 300), 0.25)
    assert 47 <= x1 - x0 + 1 <= 48 and 62 <= y1 - y0 + 1 <= 63
    assert (x0 + x1) / 2 == pytest.approx(55, abs=0.5) and (y0 + y1) / 2 == pytest.approx(50, abs=0.5)
    # a thin box is widened to MIN_ASPECT of its long side
    x0, y0, x1, y1 = zoom.zoom_box((50, 10, 54, 110), (200, 300), 0.0)
    assert x1 - x0 + 1 == pytest.approx(zoom.MIN_ASPECT * 101, abs=1.5) and (y0, y1) == (10, 110)
    # clipped to the frame, never moved
    assert zoom.zoom_box((0, 0, 20, 20), (50, 60), 0.5) == (0, 0, 31, 31)
    assert zoom.zoom_box((40, 30, 59, 49), (50, 60), 1.0) == (20, 10, 59, 49)
    with pytest.raises(EchoSAMError, match="margin"):
        zoom.zoom_box((0, 0, 5, 5), (50, 60), -0.1)
    with pytest.raises(EchoSAMError, match="wrong way"):
        zoom.zoom_box((5, 0, 0, 5), (50, 60), 0.1)


def test_zoom_region_narrows_the_fan_and_is_recorded(tmp_path):
    fan_mask = np.zeros((100, 120), bool)
    fan_mask[10:90, 20:110] = True
    fan_mask[10:30, 20:40] = False                       # a corner outside the fan stays outside
    region = FanRegion.from_mask(fan_mask, "detected")
    z = zoom.zoom_region(region, (30, 20, 50, 40), 0.5)
    x0, y0, x1, y1 = z.bbox
    assert z.zoom["box"] == [19, 9, 61, 51] and (x0, y0, x1, y1) == (20, 10, 61, 51)   # the fan starts at (20, 10)
    assert np.array_equal(z.mask, fan_mask & _rect(fan_mask.shape, z.zoom["box"]))
    assert z.source == "detected" and z.zoom["margin"] == 0.5 and "zoomed" in z.zoom["note"]
    assert z.summary()["zoom"]["box"] == [19, 9, 61, 51]
    # labels of the crop land back on the original pixels, nothing outside the zoomed fan
    lab = np.ones((3,) + z.crop_shape, np.uint8)
    back = z.uncrop(lab)
    assert np.array_equal(back[0] > 0, z.mask)
    z.save(tmp_path)
    again = FanRegion.load(tmp_path, json.loads(json.dumps(z.summary())), fan_mask.shape)
    assert again.bbox == z.bbox and again.zoom == z.zoom and np.array_equal(again.mask, z.mask)
    # a box that covers the whole region changes nothing; one off the fan is refused
    assert zoom.zoom_region(region, (20, 10, 109, 89), 0.25) is region
    assert region.meets_box((0, 0, 20, 10)) and not region.meets_box((0, 0, 19, 9))   # crop box (20, 10, 109, 89)
    with pytest.raises(EchoSAMError, match="does not meet the imaging fan"):
        zoom.zoom_region(region, (20, 10, 25, 14), 0.0)


def _rect(shape, box):
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


def test_an_lv_box_alone_is_given_its_walls():
    # an LV cavity box is grown by a sixth of its size per side (its walls and annulus) unless the myocardium's
    # own extent is prompted too; other boxes stay as they are
    assert zoom.with_context("lv", (10, 20, 39, 79)) == pytest.approx((5, 10, 44, 89))
    assert zoom.with_context("myo", (10, 20, 39, 79)) == (10, 20, 39, 79)
    assert zoom.joint_extent({"lv": (10, 20, 39, 79)}) == pytest.approx((5, 10, 44, 89))
    assert zoom.joint_extent({"lv": (10, 20, 39, 79), "myo": (8, 18, 41, 81), "la": None}) == (8, 18, 41, 81)
    assert zoom.joint_extent({"lv": None}) is None
    # include points widen a box, exclude points do not; a mask gives its pixels' box; points alone give nothing
    assert zoom.prompt_extent((10, 10, 20, 20), [(30, 15), (0, 0)], [1, 0]) == (10, 10, 30, 20)
    m = np.zeros((50, 60), bool)
    m[5:9, 7:12] = True
    assert zoom.prompt_extent(mask=m) == (7, 5, 11, 8)
    assert zoom.prompt_extent(points=[(3, 3)], labels=[1]) is None
    assert zoom.union_box([None, (0, 0, 1, 1), (5, -1, 6, 0)]) == (0, -1, 6, 1) and zoom.union_box([None]) is None


def test_memsam_config_checks_the_zoom_margin():
    assert MemSAMConfig(prompt_zoom=0.25).prompt_zoom == 0.25
    assert MemSAMConfig.from_dict(MemSAMConfig(prompt_zoom=0.3).to_dict()).prompt_zoom == 0.3
    for bad in (-0.1, 3.0, "wide"):
        with pytest.raises(Exception, match="prompt_zoom"):
            MemSAMConfig(prompt_zoom=bad)


# ---- training clips see the crop the engine makes ---------------------------------------------------
class _Source:
    """One labelled loop: an LV disc growing over the frames, a myocardial ring, an LA below."""

    on_bad_sample = "stop"

    def __init__(self):
        from training.datasets import Sequence
        T, H, W = 12, 120, 160
        yy, xx = np.mgrid[:H, :W]
        labels = np.zeros((T, H, W), np.uint8)
        for t in range(T):
            r = 14 + t
            d = np.hypot(yy - 50, xx - 70)
            labels[t][d < r + 5] = 2
            labels[t][d < r] = 1
            labels[t][np.hypot(yy - 95, xx - 70) < 12] = 3
        frames = (labels * 60 + 20).astype(np.uint8)
        self.seq = Sequence(name="disc", frames=frames, labels={t: labels[t] for t in range(T)}, spacing=(0.3, 0.3),
                            ed=T - 1, es=0, ef=50.0)
        self.labels = labels

    def __len__(self):
        return 1

    def load(self, i):
        return self.seq


def test_evaluation_clips_are_the_engine_crop_and_training_clips_vary():
    from training.datasets import ClipDataset

    src = _Source()
    zcfg = {"p": 1.0, "margin": 0.25, "margin_jitter": 0.1, "union_p": 0.5}
    ev = ClipDataset(src, classes=["lv", "myo", "la"], clip_frames=None, supervision="full", train=False,
                     prompted=True, prompt_mix={"box": 1.0}, prompt_zoom=zcfg)
    clip = ev[0]
    x0, y0, x1, y1 = zoom.zoom_box(zoom.mask_extent(src.labels[0] > 0), src.labels.shape[1:], 0.25)
    want = (src.labels[:, y0:y1 + 1, x0:x1 + 1] == 1).astype(np.int64)       # class 0 of the three: the LV
    assert np.array_equal(np.asarray(clip["masks"]), want)
    assert np.array_equal(np.asarray(clip["frames"]), src.seq.frames[:, y0:y1 + 1, x0:x1 + 1].astype(np.float32))
    # training: a margin drawn per clip, own-structure or joint boxes, and some clips left whole
    tr = ClipDataset(src, classes=["lv", "myo", "la"], clip_frames=4, supervision="full", train=True, prompted=True,
                     prompt_mix={"box": 1.0}, prompt_zoom=dict(zcfg, p=0.7), sampling="window")
    shapes = set()
    for epoch in range(12):
        tr.set_epoch(epoch)
        shapes.add(tuple(np.asarray(tr[0]["frames"]).shape[1:]))
    assert (120, 160) in shapes and len(shapes) >= 4
    with pytest.raises(Exception, match="prompt_zoom"):
        ClipDataset(src, prompt_zoom={"p": 1.0, "zoom": 2})
    with pytest.raises(Exception, match="margin_jitter"):
        ClipDataset(src, prompt_zoom={"margin": 0.1, "margin_jitter": 0.2})



def test_training_crop_of_a_lone_lv_box_is_the_engines_crop():
    # an LV box alone: the engine grows it by its walls' context before the margin; training must crop the same
    from training.datasets.clips import zoom_clip

    src = _Source()
    zcfg = {"p": 1.0, "margin": 0.25, "margin_jitter": 0.0, "union_p": 0.0}
    lab = src.labels[0]
    frames, masks, box = zoom_clip(src.seq.frames.astype(np.float32), lab[None].astype(np.int64), lab, "lv",
                                   ["lv", "myo", "la"], zcfg, True, np.random.default_rng(0))
    lv = zoom.mask_extent(lab == 1)
    want = zoom.zoom_box(zoom.joint_extent({"lv": lv}), lab.shape, 0.25)
    assert box == want and want != zoom.zoom_box(lv, lab.shape, 0.25)
    assert frames.shape[1:] == (want[3] - want[1] + 1, want[2] - want[0] + 1)

# ---- the engine: segment, correct, batch options, loop evaluation ----------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoom")
    cap = make_screen_capture(n_frames=6, seed=4, apex=(90, 20))
    write_screen_dicom(cap, d / "screen.dcm", region="none")
    torch.manual_seed(0)
    cfg = preset_config("memsam", "tiny")
    cfg.classes = ["lv", "myo", "la"]
    cfg.prompt_zoom = 0.25
    save_checkpoint(build_model("memsam", cfg), "memsam", cfg, d / "zoomed.safetensors")
    from echosam.cine import Cine
    write_labels(cap.labels, Cine.from_array(cap.frames, spacing=cap.spacing), d / "truth.seq.nrrd")
    return d, cap


def _box(mask):
    yx = np.argwhere(mask)
    (y0, x0), (y1, x1) = yx.min(0), yx.max(0)
    return int(x0), int(y0), int(x1), int(y1)


def test_segment_zooms_to_the_box_and_correct_reuses_it(data, capsys):
    d, cap = data
    out = d / "out"
    box = _box(cap.labels[0] == 1)
    rc = cli.main(["segment", str(d / "screen.dcm"), "-o", str(out), "--model", str(d / "zoomed.safetensors"),
                   "--box", ",".join(map(str, box)), "--device", "cpu", "-q", "--no-overlay"])
    assert rc == 0
    assert "zoomed to the prompts" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    want = zoom.zoom_box(zoom.with_context("lv", box), cap.fan.shape, 0.25)
    assert run["zoom"] is True and run["region"]["zoom"]["box"] == list(want)
    fan = FanRegion.load(out, run["region"], cap.fan.shape)
    assert fan.mask.any() and not (fan.mask & ~_rect(cap.fan.shape, want)).any()     # the detected fan, inside the box
    lab, _ = read_labels(out / "labels.seq.nrrd")
    assert not (lab[:, ~fan.mask] > 0).any()                      # nothing outside the zoomed region

    # a correction inside the zoomed region is kept bit for bit; one reaching outside is refused plainly
    small = np.zeros_like(cap.labels)
    small[2][(cap.labels[2] == 1) & fan.mask] = 1
    from echosam.cine import Cine
    write_labels(small, Cine.from_array(cap.frames, spacing=cap.spacing), d / "inside.seq.nrrd")
    pipeline.correct(out, d / "inside.seq.nrrd", 2, "lv", device="cpu")
    new, _ = read_labels(out / "labels.seq.nrrd")
    assert np.array_equal(new[2] == 1, small[2] == 1)
    outside = small.copy()
    outside[2][cap.fan & ~fan.mask] = 1
    write_labels(outside, Cine.from_array(cap.frames, spacing=cap.spacing), d / "outside.seq.nrrd")
    assert cli.main(["correct", str(out), "--mask", str(d / "outside.seq.nrrd"), "--frame", "2", "--device", "cpu",
                     "-q"]) == 2
    assert "outside the region this result was zoomed to" in capsys.readouterr().err
    after, _ = read_labels(out / "labels.seq.nrrd")
    assert np.array_equal(after, new)                            # the refused correction changed nothing


def test_no_zoom_and_points_only_see_the_whole_fan(data, capsys):
    d, cap = data
    box = _box(cap.labels[0] == 1)
    out = d / "whole"
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(out), "--model", str(d / "zoomed.safetensors"),
                     "--box", ",".join(map(str, box)), "--no-zoom", "--device", "cpu", "-q", "--no-overlay"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["zoom"] is False and run["region"]["zoom"] is None and run["region"]["source"] == "detected"
    x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    out2 = d / "points"
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(out2), "--model", str(d / "zoomed.safetensors"),
                     "--points", f"{x},{y},1", "--device", "cpu", "-q", "--no-overlay"]) == 0
    assert "give no extent" in capsys.readouterr().err
    assert json.loads((out2 / "run.json").read_text())["region"]["zoom"] is None
    from echosam.cli.batch import segment_options
    from echosam.cli import build_parser
    args = build_parser().parse_args(["batch", str(d), "-o", str(d / "b"), "--no-zoom"])
    assert segment_options(args)["zoom"] is False
    # without the flag the options (and so the key of a batch run before the zoom existed) are unchanged
    assert "zoom" not in segment_options(build_parser().parse_args(["batch", str(d), "-o", str(d / "b")]))


def test_a_seed_model_gives_the_zoom_its_extent(data, capsys):
    # --seed-model: the bundled prompt-free MA-SAM runs on the fan (what it was trained on); its frame-0 labels
    # give the zoom its extent and seed the prompt-zoomed MemSAM on the crop around them
    d, cap = data
    out = d / "seeded"
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(out), "--model", str(d / "zoomed.safetensors"),
                     "--seed-model", "echosam-sim-masam-small", "--structures", "lv,myo,la", "--device", "cpu", "-q",
                     "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert "zoomed to the prompts" in err and "give no extent" not in err
    run = json.loads((out / "run.json").read_text())
    x0, y0, x1, y1 = run["region"]["zoom"]["box"]
    lx0, ly0, lx1, ly1 = _box(cap.labels[0] == 1)
    assert x0 <= lx0 and y0 <= ly0 and lx1 <= x1 and ly1 <= y1            # the seed found the heart: its LV is inside
    assert (x1 - x0 + 1) * (y1 - y0 + 1) < 0.8 * cap.fan.shape[0] * cap.fan.shape[1]
    lab, _ = read_labels(out / "labels.seq.nrrd")
    fan = FanRegion.load(out, run["region"], cap.fan.shape)
    assert (lab[0] == 1).any() and not (lab[:, ~fan.mask] > 0).any()
    # a seed frame the cine does not have: one line, nothing written
    bad = d / "seeded_bad"
    assert cli.main(["segment", str(d / "screen.dcm"), "-o", str(bad), "--model", str(d / "zoomed.safetensors"),
                     "--seed-model", "echosam-sim-masam-small", "--frame", "99", "--device", "cpu", "-q"]) == 2
    assert "Frame 99 does not exist" in capsys.readouterr().err and not bad.exists()


def test_loop_evaluation_runs_a_zoomed_model_on_its_crop(data):
    from echosam.checkpoints import load_model
    from training import loop_eval as le

    d, cap = data
    loaded = load_model(str(d / "zoomed.safetensors"), device="cpu")
    case = {"name": "cap", "frames": cap.grey, "labels": cap.labels, "spacing": cap.spacing, "fps": 30.0,
            "fan": cap.fan}
    boxes = le.truth_boxes(case["labels"][0])
    lab = le.one_reading(loaded, case, le.STRUCT, boxes)
    extent = zoom.joint_extent(boxes)
    x0, y0, x1, y1 = zoom.zoom_box(extent, case["fan"].shape, 0.25)
    outside = ~_rect(case["fan"].shape, (x0, y0, x1, y1)) | ~case["fan"]
    assert lab.shape == case["labels"].shape and not (lab[:, outside] > 0).any()
