"""SAM base + checkpoint loading: official key layout, resizing, own format, clear errors."""
import collections
import json
from pathlib import Path

import pytest
import torch

from echosam.checkpoints import (load_checkpoint, load_model, load_official, read_official_state_dict,
                                 save_checkpoint)
from echosam.errors import CheckpointError, ModelError
from echosam.models.registry import build_model, get_family
from echosam.models.sam import SamConfig, build_sam, resize_rel_pos

from reference_listings import read_listing as read_tsv


@pytest.mark.parametrize("tsv,size", [("sam_vit_b.tsv", 1024), ("sam_vit_b_256.tsv", 256), ("sam_vit_b_512.tsv", 512)])
def test_sam_vit_b_matches_official_key_layout(tsv, size):
    expected = {k: shape for k, (shape, _dtype) in read_tsv(tsv).items()}
    got = {k: tuple(v.shape) for k, v in build_sam(SamConfig.vit_b(size)).state_dict().items()}
    assert "pixel_mean" not in got  # non-persistent buffers, as in the official file
    assert got == expected


def _randomised_state(model: torch.nn.Module, seed: int = 0) -> collections.OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return collections.OrderedDict((k, torch.randn(v.shape, generator=g) * 0.1 if v.is_floating_point() else v)
                                   for k, v in model.state_dict().items())


def _run(sam, size):
    x = torch.linspace(0, 255, 3 * size * size).reshape(1, 3, size, size)
    with torch.no_grad():
        emb = sam.image_encoder(sam.preprocess(x))
        sparse, dense = sam.prompt_encoder(points=(torch.tensor([[[size / 2, size / 2]]]), torch.tensor([[1]])),
                                           boxes=None, masks=None)
        masks, iou = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    return masks


def test_official_layout_loads_resized_and_round_trips_own_format(tmp_path):
    # an "official" file: a plain state_dict saved with torch.save at 128 px, keys as Meta writes them
    src = build_sam(SamConfig.tiny(img_size=128))
    state = _randomised_state(src)
    pth = tmp_path / "sam_tiny_official.pth"
    torch.save(state, pth)

    fam = get_family("sam")
    cfg = fam.presets["tiny"]()              # built at 64 px: pos_embed 4x4, global rel-pos 7
    cfg.sam = SamConfig.tiny(img_size=64)
    loaded = load_official(pth, family="sam", config=cfg)
    enc = loaded.model.image_encoder
    assert enc.pos_embed.shape == (1, 4, 4, 32)
    g = cfg.sam.global_attn_indexes[0]
    assert torch.allclose(enc.blocks[g].attn.rel_pos_h, resize_rel_pos(state[f"image_encoder.blocks.{g}.attn.rel_pos_h"], 7))
    # windowed blocks and everything size-independent are copied exactly
    assert torch.equal(loaded.model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])

    before = _run(loaded.model, 64)
    out = save_checkpoint(loaded.model, "sam", cfg, tmp_path / "own" / "sam_tiny", provenance={"test": True})
    assert out.suffix == ".safetensors" and out.with_suffix(".json").exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["family"] == "sam" and meta["config"]["sam"]["img_size"] == 64 and meta["format_version"] == 1
    again = load_checkpoint(out)
    assert torch.equal(before, _run(again.model, 64))
    # the sidecar JSON is optional: the safetensors header carries a copy
    out.with_suffix(".json").unlink()
    assert torch.equal(before, _run(load_model(str(out)).model, 64))


def test_wrong_architecture_names_the_keys(tmp_path):
    state = build_sam(SamConfig.tiny(img_size=64, depth=3)).state_dict()
    pth = tmp_path / "deeper.pth"
    torch.save(state, pth)
    with pytest.raises(CheckpointError, match=r"unexpected: image_encoder\.blocks\.2"):
        load_official(pth, family="sam", preset="tiny")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x02garbage"])
def test_corrupt_official_files_are_refused_clearly(tmp_path, content):
    p = tmp_path / "bad.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pth"):
        read_official_state_dict(p)


def test_truncated_official_file(tmp_path):
    p = tmp_path / "sam.pth"
    torch.save(build_sam(SamConfig.tiny()).state_dict(), p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_official_state_dict(p)


class _Payload:  # a pickled object whose loading would need to run this module's code
    pass


def test_pickle_that_needs_code_is_refused(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(2), "obj": _Payload()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        read_official_state_dict(p)


def test_own_format_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    model = build_model("sam", preset="tiny")
    out = save_checkpoint(model, "sam", get_family("sam").presets["tiny"](), tmp_path / "m")
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated|not a safetensors"):
        load_checkpoint(out)
    out.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(out)
    out.with_suffix(".json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not an EchoSAM checkpoint"):
        load_checkpoint(out)


def test_official_pth_without_family_asks_for_it(tmp_path):
    p = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError, match="--family"):
        load_model(str(p))


def test_bad_configs_and_names():
    with pytest.raises(ModelError, match="multiple of patch_size"):
        SamConfig(img_size=100)
    with pytest.raises(ModelError, match="Unknown model family"):
        get_family("unet")
