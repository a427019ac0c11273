"""Exact parity with the papers' released code on the four points where the project used to differ,
each against the formula written out here (tiny random models, fp32)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echosam.checkpoints import LoadedModel
from echosam.models.memory import MemoryBank
from echosam.models.peft import Adapter3D, TemporalFusionAttention, temporal_kernel
from echosam.models.registry import build_model, preset_config
from echosam.models.sam import SamConfig, build_sam, fit_state_dict_to_model, resize_rel_pos
from echosam.phantom import make_phantom
from echosam.session import Session


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# 1. MA-SAM 3D adapter: LayerNorm eps 1e-6 ---------------------------------------------------------------
def test_masam_adapter_layernorm_uses_the_released_eps():
    a = Adapter3D(8, channels=6).eval()
    _randomise(a)
    assert a.norm.eps == 1e-6
    x = torch.randn(2 * 3, 2, 2, 8) * 1e-3 + 0.01          # tiny variance: eps 1e-5 vs 1e-6 matters
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + 1e-6) * a.norm.weight + a.norm.bias
    y = y @ a.down.weight.t()
    y = y.view(2, 3, 2, 2, 6).permute(0, 4, 1, 2, 3)
    y = F.conv3d(y, a.conv.weight, a.conv.bias, padding=(1, 0, 0)).permute(0, 2, 3, 4, 1).reshape(6, 2, 2, 6)
    want = F.gelu(y) @ a.up.weight.t()
    got = a(x, frames=3)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    a.norm.eps = 1e-5                                     # the old eps gives a visibly different output
    assert not torch.allclose(a(x, frames=3), want, atol=1e-5, rtol=1e-4)


def test_masam_blocks_build_adapters_with_eps_1e6():
    m = build_model("masam", preset="tiny")
    eps = {mod.norm.eps for mod in m.modules() if isinstance(mod, Adapter3D)}
    assert eps == {1e-6}


# 2. global rel_pos: 2-D bilinear as the references' loaders ------------------------------------------------
def _bilinear_rows(rel: torch.Tensor, length: int) -> torch.Tensor:
    """align_corners=False bilinear along the rows of (L, C), columns unchanged, written out."""
    L = rel.shape[0]
    src = ((torch.arange(length, dtype=torch.float64) + 0.5) * (L / length) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=L - 1)
    i1 = (i0 + 1).clamp(max=L - 1)
    w = (src - i0).unsqueeze(1)
    r = rel.double()
    return ((1 - w) * r[i0] + w * r[i1]).float()


def test_rel_pos_resize_is_the_references_bilinear_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for L, n in ((127, 31), (63, 127), (27, 15), (31, 63)):
        rel = torch.randn(L, 16, generator=g)
        got = resize_rel_pos(rel, n)
        ref = F.interpolate(rel.unsqueeze(0).unsqueeze(0), (n, 16), mode="bilinear", align_corners=False)[0, 0]
        assert torch.equal(got, ref)                                        # bit-identical to the loaders' call
        assert torch.allclose(got, _bilinear_rows(rel, n), atol=5e-5)       # the linear formula (fp32 coords)


def test_loading_sam_at_another_size_gives_the_references_tensors():
    src = build_sam(SamConfig.tiny(img_size=128))
    _randomise(src, 1)
    state = src.state_dict()
    dst = build_sam(SamConfig.tiny(img_size=64))
    fitted = fit_state_dict_to_model(state, dst)
    g = dst.image_encoder.global_attn_indexes if hasattr(dst.image_encoder, "global_attn_indexes") else (1,)
    for i in g:
        k = f"image_encoder.blocks.{i}.attn.rel_pos_h"
        ref = F.interpolate(state[k][None, None], (2 * 4 - 1, state[k].shape[1]), mode="bilinear",
                            align_corners=False)[0, 0]
        assert torch.equal(fitted[k], ref)


# 3. MediViSTA temporal adapter: the released logit scale as a switch ---------------------------------------
def _tfa_formula(tfa, x, frames, scale):
    n, h, w, c = x.shape
    b = n // frames
    q, k, v = (lin(x).reshape(b, frames, h * w, c) for lin in (tfa.q, tfa.k, tfa.v))
    phi = torch.exp(-(torch.arange(frames)[:, None] - torch.arange(frames)[None, :]).abs().float() / tfa.lam)
    kh, vh = torch.einsum("ts,bslc->btlc", phi, k), torch.einsum("ts,bslc->btlc", phi, v)
    att = torch.softmax(torch.einsum("btlc,btmc->btlm", q, kh) * scale, dim=-1)
    return tfa.proj(torch.einsum("btlm,btmc->btlc", att, vh).reshape(n, h, w, c))


def test_temporal_adapter_default_and_released_scales():
    x = torch.randn(2 * 4, 3, 3, 16)
    std = TemporalFusionAttention(16, lam=3.0).eval()
    _randomise(std, 2)
    assert torch.allclose(std(x, 4), _tfa_formula(std, x, 4, 1 / math.sqrt(16)), atol=1e-4, rtol=1e-4)
    rel = TemporalFusionAttention(16, lam=3.0, logit_scale=8.0).eval()
    rel.load_state_dict(std.state_dict())
    assert torch.allclose(rel(x, 4), _tfa_formula(rel, x, 4, 8.0), atol=1e-4, rtol=1e-4)   # released: x 8
    assert torch.equal(temporal_kernel(4, 3.0)[0], torch.exp(-torch.arange(4.0) / 3.0))


def test_medivista_config_switch_reproduces_the_release():
    cfg = preset_config("medivista", "tiny")
    assert cfg.temporal_scale == "standard"
    m = build_model("medivista", cfg)
    assert {b.temporal_adapter.logit_scale for b in m.image_encoder.blocks} == {None}
    cfg.temporal_scale = "released"
    m = build_model("medivista", cfg)
    head_dim = cfg.sam.embed_dim // cfg.sam.num_heads     # released: logits / (head_dim ** -0.5)
    assert {b.temporal_adapter.logit_scale for b in m.image_encoder.blocks} == {math.sqrt(head_dim)}
    assert build_model("medivista", preset="vit_b").image_encoder.blocks[0].temporal_adapter.logit_scale is None
    from echosam.models.medivista import MediViSTAConfig
    assert MediViSTAConfig.from_dict(dict(cfg.to_dict())).temporal_scale == "released"
    with pytest.raises(ValueError, match="temporal_scale"):
        MediViSTAConfig(sam=cfg.sam, temporal_scale="x8")


# 4. MemSAM: the prompted bootstrap always deep-updates ------------------------------------------------------
@pytest.mark.parametrize("at_eval", [True, False])
def test_session_bootstrap_deep_updates_whatever_the_eval_switch(at_eval):
    torch.manual_seed(4)
    cfg = preset_config("memsam", "tiny")
    cfg.deep_update_at_eval = at_eval
    model = build_model("memsam", cfg).eval()
    _randomise(model.memory, 5)
    lm = LoadedModel(model, "memsam", cfg, {}, None, "cpu")
    ph = make_phantom(n_frames=3, seed=2, size=(64, 64))
    s = Session(ph.cine, lm, structures=("lv",), keep_connected=False)     # the released loop alone
    s.add_points(0, "lv", [[32.0, 32.0]], [1])
    s.propagate()

    def key_frame(boot_deep):
        """Released loop for frame 0: prompt logits -> value (deep update = boot_deep) -> readout."""
        with torch.no_grad():
            images = model.prepare_frames(torch.from_numpy(ph.cine.frames[:1].astype(np.float32)))
            f = model.encode(images)
            boot = model.decode_prompt(f, points=torch.tensor([[[32.0, 32.0]]]),
                                       point_labels=torch.ones(1, 1, dtype=torch.int64))
            value, hidden = model.encode_value(images, f, boot, model.init_hidden(1), deep_update=boot_deep)
            bank = MemoryBank(None)
            bank.add(f.key, f.shrinkage, value, permanent=True)
            return model.segment_from_memory(f, bank, hidden)

    logits, hidden = s.propagator.key_output("lv", 0)                # fp32: what the session continues from
    want_logits, want_hidden = key_frame(True)
    assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(hidden, want_hidden, atol=1e-5)
    assert torch.allclose(s.results.logits["lv"][0].float(), want_logits[0, 0], atol=2e-2, rtol=1e-2)
    if not at_eval:          # the released rule differs from following the switch: the test can tell them apart
        assert not torch.allclose(hidden, key_frame(False)[1], atol=1e-5)


# 5. MemSAM: key_frame_reads repeats the key frame's prediction from a memory of the last one --------------------
def test_key_frame_reads_predict_the_key_frame_again_from_its_last_prediction():
    torch.manual_seed(5)
    cfg = preset_config("memsam", "tiny")
    cfg.key_frame_reads = {"myo": 3}
    cfg.classes = ["lv", "myo"]
    model = build_model("memsam", cfg).eval()
    _randomise(model.memory, 6)
    _randomise(model.mask_decoder, 7)
    lm = LoadedModel(model, "memsam", cfg, {}, None, "cpu")
    ph = make_phantom(n_frames=3, seed=2, size=(64, 64))
    s = Session(ph.cine, lm, structures=("lv", "myo"), keep_connected=False)
    box = [16.0, 16.0, 48.0, 48.0]
    s.add_box(0, "lv", box)
    s.add_box(0, "myo", box)
    s.propagate()

    with torch.no_grad():
        images = model.prepare_frames(torch.from_numpy(ph.cine.frames[:1].astype(np.float32)))
        f = model.encode(images)

        def reads(key, n):
            """The key frame's output after n reads, each from a fresh memory of the last prediction."""
            logits = s.propagator.key_logits(key, 0)
            for _ in range(n):
                value, hidden = model.encode_value(images, f, logits, model.init_hidden(1), deep_update=True)
                bank = MemoryBank(None)
                bank.add(f.key, f.shrinkage, value, permanent=True)
                logits, hidden = model.segment_from_memory(f, bank, hidden)
            return logits, hidden

    for key, n in (("lv", 1), ("myo", 3)):         # structures not named read once, as the released loop
        logits, hidden = s.propagator.key_output(key, 0)
        want_logits, want_hidden = reads(key, n)
        assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(hidden, want_hidden, atol=1e-5)
    three, once = s.propagator.key_output("myo", 0)[0], reads("myo", 1)[0]
    assert (three - once).abs().max() > 100 * 1e-5, "the test cannot tell 3 reads from 1"
    for bad in ({"myo": 0}, {"myo": 1.5}, ["myo"], 3, {"myocardium": 3}):
        with pytest.raises(ValueError, match="key_frame_reads"):
            cfg.__class__(sam=cfg.sam, key_frame_reads=bad)
