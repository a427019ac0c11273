"""MediViSTA v2: tiny-model behaviour, ViT-B trainable split, partial released layout."""
from pathlib import Path

import pytest
import torch

from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.errors import ModelError
from echosam.models.medivista import MediViSTA, MediViSTAConfig, convert_official_report
from echosam.models.peft import temporal_kernel
from echosam.models.registry import build_model, get_family
from echosam.models.sam import load_state_dict_strict

from reference_listings import read_listing as read_tsv


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    model = build_model("medivista", preset="tiny")
    for p in model.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_registry_and_config():
    spec = get_family("medivista")
    assert spec.prompted is False and {"vit_b", "tiny"} <= set(spec.presets)
    cfg = MediViSTAConfig()
    assert (cfg.sam.img_size, cfg.clip_frames, cfg.temporal_lambda, cfg.fact_rank) == (256, 10, 3.0, 32)
    assert cfg.intensity == "minmax" and cfg.temporal_kernel == "exp" and cfg.wavelet == "haar"
    assert MediViSTAConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ModelError):
        MediViSTAConfig(temporal_kernel="gauss")
    with pytest.raises(ModelError):
        MediViSTAConfig(wavelet="db2")


def test_window_of_clip_length_equals_plain_forward_and_frames_interact(tiny):
    images = tiny.prepare_frames(torch.rand(10, 64, 64) * 255)
    with torch.no_grad():
        plain = torch.softmax(tiny(images[None])[0], dim=1)
        torch.testing.assert_close(tiny.segment_video(images), plain, rtol=1e-5, atol=1e-6)
        other = images.clone()
        other[9] = 1 - other[9]
        assert (tiny(other[None])[0, 0] - tiny(images[None])[0, 0]).abs().max() > 1e-6   # temporal fusion


def test_normalised_kernel_option_changes_the_model(tiny):
    cfg = MediViSTAConfig.from_dict({**tiny.config.to_dict(), "temporal_kernel": "exp_normalised"})
    other = MediViSTA(cfg).eval()
    other.load_state_dict(tiny.state_dict())
    x = torch.rand(1, 10, 3, 64, 64)
    with torch.no_grad():
        assert (other(x) - tiny(x)).abs().max() > 1e-6
    assert other.image_encoder.blocks[0].temporal_adapter.normalised
    torch.testing.assert_close(temporal_kernel(10, 3.0, True).sum(1), torch.ones(10))


def test_minmax_intensity_conventions(tiny):
    frames = torch.rand(2, 64, 64) * 200 + 30
    out = tiny.prepare_frames(frames)[:, 0]
    lo, hi = frames.amin((1, 2), keepdim=True), frames.amax((1, 2), keepdim=True)
    torch.testing.assert_close(out, (frames - lo) / (hi - lo))
    released = MediViSTA(MediViSTAConfig.from_dict({**tiny.config.to_dict(), "intensity": "minmax_released"}))
    torch.testing.assert_close(released.prepare_frames(frames)[:, 0], (frames - lo) / hi)


def test_gradients_reach_only_trainable_parameters(tiny):
    tiny.train()
    out = tiny(torch.rand(1, 10, 3, 64, 64))
    torch.nn.functional.cross_entropy(out[0], torch.randint(0, 4, (10, 64, 64))).backward()
    last_global = max(i for i, b in enumerate(tiny.image_encoder.blocks) if b.window_size == 0)
    for name, p in tiny.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and name.startswith("image_encoder."), name
        elif any(s in name for s in ("_adapter", ".fact.", ".freq.", "temporal_norm")) and \
                f"blocks.{last_global}.refine_adapter" not in name:   # refined F_c after the last global block is unused
            assert p.grad is not None, name
    assert tiny.image_encoder.freq.fusion.weight.grad.abs().sum() > 0
    assert tiny.image_encoder.blocks[0].temporal_adapter.k.weight.grad.abs().sum() > 0


def test_checkpoint_round_trip(tiny, tmp_path):
    x = torch.rand(1, 10, 3, 64, 64)
    with torch.no_grad():
        ref = tiny(x)
    loaded = load_checkpoint(save_checkpoint(tiny, "medivista", tiny.config, tmp_path / "mv.safetensors"))
    assert loaded.family == "medivista"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref)


def test_vit_b_partial_release_layout_converts_with_documented_gaps():
    listing = read_tsv("medivista_vit_b_256.tsv")
    g = torch.Generator().manual_seed(5)
    state = {k: (torch.zeros(s, dtype=torch.int64) if d == "int64" else torch.randn(s, generator=g))
             for k, (s, d) in listing.items()}
    cfg = MediViSTAConfig()
    converted, report = convert_official_report(state, cfg)
    windowed = [b for b in range(12) if b not in (2, 5, 8, 11)]
    expected_dropped = sorted(k for k in state for b in windowed
                              if k.startswith((f"image_encoder.blocks.{b}.Space_Adapter.",
                                               f"image_encoder.blocks.{b}.refine_Adapter.")))
    assert report.layout == "medivista_v2" and report.dropped == expected_dropped and len(expected_dropped) == 8 * 11
    expected_init = sorted(["image_encoder.fact.u.weight", "image_encoder.fact.v.weight",
                            "image_encoder.freq.fusion.weight", "image_encoder.freq.fusion.bias"]
                           + [f"image_encoder.blocks.{b}.attn.fact.{w}.weight" for b in range(12) for w in "qv"]
                           + [f"image_encoder.blocks.{b}.temporal_norm.{w}" for b in range(12) for w in ("weight", "bias")])
    assert report.initialised == expected_init
    model = MediViSTA(cfg)
    load_state_dict_strict(model, converted, "synthetic MediViSTA v2 state")
    enc = model.image_encoder
    assert torch.equal(enc.blocks[4].temporal_adapter.k.weight, state["image_encoder.blocks.4.Temporal_Adapter.k.weight"])
    assert torch.equal(enc.blocks[8].space_adapter.proj.bias, state["image_encoder.blocks.8.Space_Adapter.proj.bias"])
    assert torch.equal(enc.blocks[11].refine_adapter.conv[1].weight, state["image_encoder.blocks.11.refine_Adapter.conv.1.weight"])
    assert torch.equal(enc.freq.msag.vote[0].weight, state["image_encoder.msag.voteConv.0.weight"])
    assert torch.equal(enc.freq.embed[3][1].weight, state["image_encoder.cnn_embed.downs.3.maxpool_conv.1.weight"])
    assert torch.equal(enc.freq.stem[4].running_var, state["image_encoder.Conv.conv.4.running_var"])
    assert torch.equal(enc.pos_embed, state["image_encoder.pos_embed"])
    assert torch.equal(model.mask_decoder.output_upscaling[9].weight, state["mask_decoder.output_upscaling.9.weight"])

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"\nMediViSTA ViT-B 256, 3 classes: trainable {trainable:,}; frozen {frozen:,}")
    assert frozen == 90_737_200 - 6_220 - 4_058_340          # sam_vit_b_256: the whole SAM image encoder
    new = sum(p.numel() for m in model.new_encoder_modules() for p in m.parameters())
    heads = sum(p.numel() for p in model.prompt_encoder.parameters()) + sum(p.numel() for p in model.mask_decoder.parameters())
    assert trainable == new + heads
    assert sum(p.numel() for b in enc.blocks for p in b.temporal_adapter.parameters()) == 12 * 4 * (768 * 768 + 768)
