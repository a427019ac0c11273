"""MA-SAM: tiny-model behaviour, ViT-B trainable split, official checkpoint layouts."""
import gc
from pathlib import Path

import pytest
import torch

from echosam.checkpoints import load_checkpoint, load_official, save_checkpoint
from echosam.errors import CheckpointError, ModelError
from echosam.models.masam import MASAM, MASAMConfig, convert_official_report
from echosam.models.registry import build_model, get_family
from echosam.models.sam import SamConfig, build_sam, load_state_dict_strict, resize_pos_embed

from reference_listings import read_listing as read_tsv


def synthetic_state(listing, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.zeros(s, dtype=torch.int64) if d == "int64" else torch.randn(s, generator=g))
            for k, (s, d) in listing.items()}


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    model = build_model("masam", preset="tiny")
    for name, p in model.named_parameters():     # randomise zero-initialised tensors (FacT V, pos tables)
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_registry_and_config_round_trip():
    spec = get_family("MA-SAM")
    assert spec.name == "masam" and spec.prompted is False and {"vit_b", "vit_h", "tiny"} <= set(spec.presets)
    cfg = MASAMConfig()
    assert cfg.sam.img_size == 512 and cfg.clip_frames == 5 and cfg.window_stride == 1
    assert cfg.classes == ["lv", "myo", "la"] and cfg.intensity == "unit" and cfg.adapter_channels == 384
    again = MASAMConfig.from_dict(cfg.to_dict())
    assert again == cfg and MASAMConfig.vit_h().sam.embed_dim == 1280
    with pytest.raises(ModelError):
        MASAMConfig(intensity="zscore")
    with pytest.raises(ModelError):
        MASAMConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_window_of_clip_length_equals_plain_forward(tiny):
    images = tiny.prepare_frames(torch.rand(5, 64, 64) * 255)
    with torch.no_grad():
        plain = torch.softmax(tiny(images[None])[0], dim=1)
    torch.testing.assert_close(tiny.segment_video(images), plain, rtol=1e-5, atol=1e-6)
    # the 3D adapters really mix frames: changing frame 0 changes frame 1's logits
    other = images.clone()
    other[0] = 1 - other[0]
    with torch.no_grad():
        assert (tiny(other[None])[0, 1] - tiny(images[None])[0, 1]).abs().max() > 1e-5


def test_prepare_frames_unit_intensity_and_errors(tiny):
    frames = torch.rand(2, 64, 64) * 255
    out = tiny.prepare_frames(frames)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out[:, 1], frames / 255)
    with pytest.raises(ModelError):
        tiny(torch.rand(1, 5, 1, 64, 64))
    with pytest.raises(ValueError):
        tiny.prepare_frames(torch.full((2, 8, 8), float("nan")))


def test_gradients_reach_only_trainable_parameters(tiny):
    tiny.train()
    out = tiny(torch.rand(1, 5, 3, 64, 64))
    torch.nn.functional.cross_entropy(out[0], torch.randint(0, 4, (5, 64, 64))).backward()
    for name, p in tiny.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
            assert name.startswith("image_encoder.") and ".adapter" not in name and ".fact." not in name
    for m in tiny.new_encoder_modules():
        for p in m.parameters():
            assert p.requires_grad and p.grad is not None
    assert tiny.image_encoder.blocks[0].adapter1.conv.weight.grad.abs().sum() > 0
    assert tiny.mask_decoder.output_upscaling[9].weight.grad.abs().sum() > 0
    assert not tiny.image_encoder.patch_embed.proj.weight.requires_grad


def test_checkpoint_round_trip(tiny, tmp_path):
    x = torch.rand(1, 5, 3, 64, 64)
    with torch.no_grad():
        ref = tiny(x)
    path = save_checkpoint(tiny, "masam", tiny.config, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.family == "masam" and loaded.classes == ["lv", "myo", "la"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref)


def test_load_official_tiny_sam_pth(tmp_path):
    torch.manual_seed(1)
    sam = build_sam(SamConfig.tiny(img_size=128))        # an "official" SAM at another size
    torch.save(sam.state_dict(), tmp_path / "sam_tiny.pth")
    loaded = load_official(tmp_path / "sam_tiny.pth", "masam", preset="tiny")
    model = loaded.model
    torch.testing.assert_close(model.image_encoder.blocks[0].attn.qkv.weight, sam.image_encoder.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(model.image_encoder.pos_embed, resize_pos_embed(sam.image_encoder.pos_embed, 4))
    assert model.segment_video(model.prepare_frames(torch.rand(2, 64, 64) * 255)).shape == (2, 4, 64, 64)


# ---- ViT-B at 512 with the released 12-class layout -----------------------------------------------
@pytest.fixture(scope="module")
def vitb12():
    cfg = MASAMConfig(classes=[f"c{i}" for i in range(12)])
    model = MASAM(cfg)
    yield cfg, model
    del model
    gc.collect()


def test_vit_b_trainable_split_matches_reference(vitb12):
    cfg, model = vitb12
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    adapters_fact = sum(p.numel() for m in model.new_encoder_modules() for p in m.parameters())
    print(f"\nMA-SAM ViT-B 512, 12 classes: trainable {trainable:,}; adapters+FacT {adapters_fact:,}; frozen {frozen:,}")
    assert adapters_fact == 24_818_688 + 73_728            # README: 3D adapters + FacT elements
    assert trainable == 30_142_361                         # README: MA-SAM ViT-B trainable
    assert frozen == 117_421_209 - 30_142_361              # SAM ViT-B encoder at 512
    # with the 3 echo classes, 9 hyper-MLPs, 9 mask tokens and 9 IoU outputs fewer
    three = sum(p.numel() for p in MASAM(MASAMConfig()).parameters() if p.requires_grad)
    print(f"MA-SAM ViT-B 512, 3 classes: trainable {three:,}")
    assert three == 30_142_361 - 9 * (2 * 256 * 256 + 2 * 256 + 8 * 256 + 8) - 9 * 256 - 9 * 257


def test_vit_b_adapter_checkpoint_converts_strictly(vitb12):
    cfg, model = vitb12
    adapter = synthetic_state(read_tsv("masam_vit_b_512.tsv"), seed=1)
    base = synthetic_state(read_tsv("sam_vit_b.tsv"), seed=2)
    with pytest.raises(CheckpointError, match="base_sam"):
        convert_official_report(adapter, cfg)
    merged = {**base, **adapter}
    state, report = convert_official_report(merged, cfg)
    assert report.layout == "adapter" and report.initialised == [] and report.dropped == []
    load_state_dict_strict(model, state, "synthetic MA-SAM adapter file")
    blk = model.image_encoder.blocks[7]
    assert torch.equal(model.image_encoder.blocks[3].attn.fact.q.weight, adapter["q_FacTs_003"])
    assert torch.equal(blk.attn.fact.v.weight, adapter["v_FacTs_007"])
    assert torch.equal(model.image_encoder.fact.u.weight, adapter["image_encoder.FacTu.weight"])
    assert torch.equal(blk.adapter2.conv.weight, adapter["image_encoder.ImageEncoderViT.blocks.7.Block.adapter_conv_2.weight"])
    assert torch.equal(blk.adapter1.down.weight, adapter["image_encoder.ImageEncoderViT.blocks.7.Block.adapter_linear_down.weight"])
    assert torch.equal(model.mask_decoder.mask_tokens.weight, adapter["mask_decoder.mask_tokens.weight"])
    assert torch.equal(blk.attn.qkv.weight, base["image_encoder.blocks.7.attn.qkv.weight"])
    torch.testing.assert_close(model.image_encoder.pos_embed, resize_pos_embed(base["image_encoder.pos_embed"], 32))
    wrong = MASAMConfig()                                   # 3 classes vs the file's 12
    with pytest.raises(CheckpointError, match="12 classes"):
        convert_official_report(merged, wrong)


def test_vit_b_module_layout_and_sam_init(vitb12):
    cfg, model = vitb12
    module = synthetic_state(read_tsv("masam_vit_b_512_module.tsv"), seed=3)
    module["FacTu.weight"] = module["sam.image_encoder.FacTu.weight"]
    module["FacTv.weight"] = module["sam.image_encoder.FacTv.weight"]
    state, report = convert_official_report(module, cfg)
    assert report.layout == "module" and report.initialised == [] and report.dropped == ["FacTu.weight", "FacTv.weight"]
    load_state_dict_strict(model, state, "synthetic MA-SAM module state")
    assert torch.equal(model.image_encoder.blocks[2].attn.rel_pos_h,
                       module["sam.image_encoder.ImageEncoderViT.blocks.2.Block.attn.Attention.rel_pos_h"])
    assert torch.equal(model.image_encoder.blocks[5].attn.qkv.bias,
                       module["sam.image_encoder.ImageEncoderViT.blocks.5.Block.attn.Attention.qkv.qkv.bias"])
    assert torch.equal(model.image_encoder.blocks[5].attn.fact.q.weight,
                       module["sam.image_encoder.ImageEncoderViT.blocks.5.Block.attn.Attention.qkv.q_FacTs.weight"])
    module["FacTu.weight"] = module["FacTu.weight"] + 1
    with pytest.raises(CheckpointError, match="alias"):
        convert_official_report(module, cfg)
    del module, state
    # plain SAM init: exactly the reference's NEW + changed-shape keys keep their fresh init (243 tensors)
    sam = synthetic_state(read_tsv("sam_vit_b.tsv"), seed=4)
    state, report = convert_official_report(sam, cfg)
    assert report.layout == "sam" and len(report.initialised) == 26 + 144 + 11 + 8 + 54
    assert all(".adapter" in k or ".fact." in k or k.startswith("mask_decoder.") for k in report.initialised)
    load_state_dict_strict(model, state, "SAM-initialised MA-SAM")
    assert torch.equal(model.mask_decoder.output_hypernetworks_mlps[2].layers[1].weight,
                       sam["mask_decoder.output_hypernetworks_mlps.2.layers.1.weight"])
