"""Every registered family, `sam` included: its declared Protocol, a Session, and `echosam segment`
through the real entry point, on tiny random-weight models saved as real checkpoint files."""
import json

import numpy as np
import pytest
import torch

from echosam import cli
from echosam.checkpoints import LoadedModel, load_checkpoint, load_official, save_checkpoint
from echosam.errors import ModelError
from echosam.fan import prepare_region
from echosam.io import read_labels, write_cine
from echosam.models.memory import MemoryBank
from echosam.models.protocols import CLIP, PROMPTED, ClipSegmenter, PromptedVideoModel
from echosam.models.registry import FAMILIES, build_model, check_model, get_family, is_prompted, preset_config
from echosam.phantom import make_phantom
from echosam.session import Session

T = 8


@pytest.fixture(scope="module")
def ph():
    return make_phantom(n_frames=T, seed=5, size=(64, 64), heart_rate=110)


@pytest.fixture(scope="module")
def files(tmp_path_factory, ph):
    d = tmp_path_factory.mktemp("families")
    write_cine(ph.cine, d / "cine.seq.nrrd")
    torch.manual_seed(0)
    for fam in FAMILIES:
        cfg = preset_config(fam, "tiny")
        save_checkpoint(build_model(fam, cfg), fam, cfg, d / f"{fam}.safetensors")
    return d


def _lv_box(ph, t=0):
    yx = np.argwhere(ph.labels[t] == 1)
    (y0, x0), (y1, x1) = yx.min(0), yx.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def test_every_family_declares_a_kind_and_implements_it():
    assert set(FAMILIES) == {"memsam", "medivista", "masam", "sam"}
    for fam in FAMILIES:
        spec = get_family(fam)
        model = build_model(fam, preset="tiny")
        assert spec.kind in (PROMPTED, CLIP) and spec.prompted == is_prompted(fam) == (spec.kind == PROMPTED)
        assert isinstance(model, spec.protocol)
        check_model(fam, model)
    assert is_prompted("sam") and is_prompted("MemSAM") and not is_prompted("MA-SAM")
    assert not isinstance(build_model("masam", preset="tiny"), PromptedVideoModel)
    assert not isinstance(torch.nn.Linear(2, 2), ClipSegmenter)
    with pytest.raises(ModelError, match="does not implement"):
        check_model("memsam", build_model("masam", preset="tiny"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_through_session_and_echosam_segment(family, files, ph, capsys):
    d = files
    loaded = load_checkpoint(d / f"{family}.safetensors")
    region, crop = prepare_region(ph.cine)                # what `echosam segment` does first (echosam.fan)
    s = Session(crop, loaded, structures=("lv",))
    if s.prompted:
        s.add_box(0, "lv", region.box_to_crop(_lv_box(ph)))
    lab = region.uncrop(s.segment())
    assert lab.shape == ph.labels.shape and lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
    if s.prompted:
        assert s.done_frames["lv"] == list(range(T))

    out = d / f"out-{family}"
    argv = ["-q", "segment", str(d / "cine.seq.nrrd"), "-o", str(out), "--model", str(d / f"{family}.safetensors"),
            "--device", "cpu", "--no-overlay"]
    if is_prompted(family):
        argv += ["--box", ",".join(str(v) for v in _lv_box(ph))]
    assert cli.main(argv) == 0, capsys.readouterr().err
    got, lcine = read_labels(out / "labels.seq.nrrd")
    assert lcine.same_grid(ph.cine)
    assert np.array_equal(got, lab)                      # the CLI writes what the Session computes
    run = json.loads((out / "run.json").read_text())
    assert run["family"] == family and (out / "report.json").is_file()


# ---- the SAM adapter ----------------------------------------------------------------------------------
def _box_of(logits, margin):
    """The adapter's rule written out: bounding box of logits > 0, widened by margin * side, clipped."""
    m = logits[0, 0] > 0
    ys, xs = np.nonzero(m.numpy())
    S = m.shape[-1]
    w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    box = np.array([xs.min() - margin * w, ys.min() - margin * h, xs.max() + margin * w, ys.max() + margin * h])
    return torch.tensor(np.clip(box, 0, S - 1), dtype=torch.float32)[None]


def test_sam_prompts_each_frame_with_the_previous_masks_box(ph):
    """Key frame = SAM on the user's box; frame t+1 = SAM on the (widened) box of frame t's mask."""
    torch.manual_seed(3)
    cfg = preset_config("sam", "tiny")
    model = build_model("sam", cfg).eval()
    with torch.no_grad():                      # weights that give non-empty masks: bias the mask hypernetwork
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.normal_(0, 2.0)
    lm = LoadedModel(model, "sam", cfg, {}, None, "cpu")
    s = Session(ph.cine, lm, structures=("lv",), memory_cap=1, keep_connected=False)   # the adapter's rule alone
    box = _lv_box(ph)
    s.add_box(0, "lv", box)
    s.propagate()
    S = cfg.sam.img_size
    with torch.no_grad():
        images = model.prepare_frames(torch.from_numpy(ph.cine.frames.astype(np.float32)))
        feats = model.encode(images)
        sx = [(v + 0.5) * S / 64 - 0.5 for v in box]
        expect = [model.decode_prompt(feats.index(0), box=torch.tensor([sx]))]
        for t in range(1, T):
            if not (expect[-1] > 0).any():
                break
            expect.append(model.decode_prompt(feats.index(t), box=_box_of(expect[-1], cfg.box_margin)))
    assert len(expect) >= 3, "the test weights must give masks to track"
    for t, e in enumerate(expect):
        assert torch.allclose(s.results.logits["lv"][t].float(), e[0, 0], atol=2e-2, rtol=1e-2), t


def test_sam_single_point_takes_the_best_of_three_masks():
    torch.manual_seed(1)
    model = build_model("sam", preset="tiny").eval()
    with torch.no_grad():
        f = model.encode(model.prepare_frames(torch.rand(1, 64, 64) * 255))
        pts, lab = torch.tensor([[[20.0, 30.0]]]), torch.ones(1, 1, dtype=torch.int64)
        got = model.decode_prompt(f, points=pts, point_labels=lab)
        sparse, dense = model.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
        low, iou = model.mask_decoder(f.embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, True)
        best = torch.nn.functional.interpolate(low[:, iou[0].argmax()][:, None], size=(64, 64), mode="bilinear",
                                               align_corners=False)
    assert got.shape == (1, 1, 64, 64) and torch.equal(got, best)


def test_sam_with_nothing_to_track_gives_background():
    model = build_model("sam", preset="tiny").eval()
    with torch.no_grad():
        f = model.encode(model.prepare_frames(torch.rand(1, 64, 64) * 255))
        hidden = model.init_hidden(1)
        value, hidden = model.encode_value(None, f, torch.full((1, 1, 64, 64), -5.0), hidden)
        logits, _ = model.segment_from_memory(f, MemoryBank(1), hidden)
    assert torch.isnan(hidden).all() and (logits < 0).all()


def test_official_sam_file_loads_as_the_sam_family(tmp_path):
    """A SAM .pth (here a tiny one, same key layout as Meta's) loads and runs as `--family sam`."""
    from echosam.models.sam import SamConfig, build_sam

    torch.save(build_sam(SamConfig.tiny(img_size=64)).state_dict(), tmp_path / "sam_tiny.pth")
    cfg = preset_config("sam", "tiny")
    loaded = load_official(tmp_path / "sam_tiny.pth", "sam", config=cfg)
    assert loaded.prompted and isinstance(loaded.model, PromptedVideoModel)
    ph = make_phantom(n_frames=4, seed=2, size=(48, 48))
    s = Session(ph.cine, loaded, structures=("lv", "myo"))
    s.add_points(0, "lv", [[24, 24]], [1])
    s.add_box(0, "myo", (5, 5, 40, 40))
    assert s.propagate().shape == ph.labels.shape
