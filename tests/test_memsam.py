"""MemSAM family: shapes, memory bank policy, readout maths, official key layouts (TSV listings),
paper trainable split, save/load round trip, user-mask seeding, determinism."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.errors import CheckpointError, ModelError, PromptError
from echosam.models.memory import MemoryBank, affinity, readout
from echosam.models.memsam import FrameFeatures, MemSAM, MemSAMConfig
from echosam.models.memsam_convert import convert_official
from echosam.models.registry import build_model, get_family
from echosam.models.sam import fit_state_dict_to_model, load_state_dict_strict

from reference_listings import read_listing as read_tsv
PAPER_TRAINABLE = 58_376_375     # memsam_vit_b_256.tsv header (released MemSAM.__init__ freezing)
PAPER_UNIQUE = 152_046_823       # same header: unique parameters of the released model


def synthetic_state(layout: dict, seed: int) -> dict:
    """Random tensors with exactly the listed keys/shapes; memory.key_encoder.* share image_encoder.* tensors
    (as in the released model, where both names point at one module)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, (shape, dtype) in layout.items():
        if k.startswith("memory.key_encoder."):
            continue
        state[k] = torch.zeros(shape, dtype=torch.int64) if dtype == "int64" else torch.randn(shape, generator=g)
    for k in layout:
        if k.startswith("memory.key_encoder."):
            state[k] = state["image_encoder." + k[len("memory.key_encoder."):]]
    return state


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("memsam", preset="tiny").eval()


@pytest.fixture(scope="module")
def clip(tiny):
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(4, 48, 80, generator=g) * 255
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(80), indexing="ij")
    frames[:, (yy - 24) ** 2 + (xx - 40) ** 2 < 100] = 20.0   # a dark "cavity"
    return tiny.prepare_frames(frames)


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return MemSAM(MemSAMConfig.vit_b())


# ---- config and registry ---------------------------------------------------------------------------
def test_config_json_round_trip_and_validation():
    cfg = MemSAMConfig.tiny()
    d = json.loads(json.dumps(cfg.to_dict()))
    assert MemSAMConfig.from_dict(d) == cfg
    assert MemSAMConfig.vit_b().sam.img_size == 256 and MemSAMConfig.vit_b().tokens == 32
    with pytest.raises(ModelError, match="intensity"):
        MemSAMConfig(intensity="zscore")
    with pytest.raises(ModelError, match="reinforce_input"):
        MemSAMConfig(reinforce_input="mask")
    with pytest.raises(ModelError, match="Unknown MemSAM config"):
        MemSAMConfig.from_dict({**d, "bogus": 1})
    spec = get_family("MemSAM")
    assert spec.prompted and set(spec.presets) >= {"vit_b", "tiny"}


def test_tiny_preset_is_small(tiny):
    n_bytes = sum(p.numel() * p.element_size() for p in tiny.state_dict().values())
    assert 0.5e6 < n_bytes < 3e6
    assert "memory.key_encoder.pos_embed" not in tiny.state_dict()   # alias, not a second copy
    assert tiny.memory.key_encoder is tiny.image_encoder


def test_prepare_frames_conventions(tiny):
    frames = np.full((2, 30, 50), 200, dtype=np.uint8)
    x = tiny.prepare_frames(frames)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 200.0))                  # raw255: no normalisation (released)
    unit = MemSAM(dataclasses.replace(MemSAMConfig.tiny(), intensity="unit"))
    assert torch.allclose(unit.prepare_frames(frames), torch.full((2, 3, 64, 64), 200 / 255))
    imagenet = MemSAM(dataclasses.replace(MemSAMConfig.tiny(), intensity="imagenet")).prepare_frames(frames)
    assert torch.allclose(imagenet[:, 0], torch.full((2, 64, 64), (200 - 123.675) / 58.395))
    assert torch.allclose(imagenet[:, 2], torch.full((2, 64, 64), (200 - 103.53) / 57.375))
    with pytest.raises(ModelError, match="prepare_frames"):
        tiny.prepare_frames(np.zeros((2, 2, 30, 50)))


# ---- shapes ------------------------------------------------------------------------------------------
@torch.no_grad()
def test_tiny_shapes_every_verb(tiny, clip):
    f = tiny.encode(clip, batch_size=3)
    assert f.embedding.shape == (4, 32, 8, 8) and f.key.shape == (4, 8, 8, 8)
    assert f.shrinkage.shape == (4, 1, 8, 8) and f.selection.shape == (4, 8, 8, 8)
    assert bool((f.shrinkage >= 1).all()) and bool(((f.selection > 0) & (f.selection < 1)).all())
    assert torch.allclose(FrameFeatures.cat([f.index(0), f.index(1)]).embedding, f.embedding[:2])
    f0 = f.index(0)
    by_point = tiny.decode_prompt(f0, points=[[[40.0, 24.0]]], point_labels=[[1]])
    by_box = tiny.decode_prompt(f0, box=[[20, 10, 60, 40]])
    by_mask = tiny.decode_prompt(f0, mask_logits=by_point)
    no_prompt = tiny.decode_prompt(f0)
    for out in (by_point, by_box, by_mask, no_prompt):
        assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()
    assert not torch.allclose(by_point, by_box)
    hidden = tiny.init_hidden()
    assert hidden.shape == (1, 8, 8, 8) and not hidden.any()
    value, hidden = tiny.encode_value(clip[:1], f0, by_point, hidden)
    assert value.shape == (1, 16, 8, 8) and hidden.shape == (1, 8, 8, 8) and hidden.abs().sum() > 0
    bank = MemoryBank(4)
    bank.add(f0.key, f0.shrinkage, value, permanent=True)
    logits, hidden2 = tiny.segment_from_memory(f.index(1), bank, hidden)
    assert logits.shape == (1, 1, 64, 64) and not torch.equal(hidden2, hidden)
    out = tiny(clip.view(2, 2, 3, 64, 64), torch.tensor([[[40.0, 24.0]], [[30.0, 30.0]]]), torch.ones(2, 1))
    assert out.shape == (2, 2, 1, 64, 64)
    with pytest.raises(PromptError):
        tiny.decode_prompt(f0, points=[[[1.0, 2.0]]])
    with pytest.raises(PromptError):
        tiny.decode_prompt(f0, box=[[30, 30, 10, 10]])
    with pytest.raises(ModelError):
        tiny.segment_from_memory(f.index(1), MemoryBank(2), hidden)


@torch.no_grad()
def test_batched_decoder_equals_sam_mask_decoder(tiny, clip):
    f = tiny.encode(clip[:1])
    pts = (torch.tensor([[[40.0, 24.0], [10.0, 50.0]]]), torch.tensor([[1, 0]]))
    sparse, dense = tiny.prompt_encoder(points=pts, boxes=None, masks=None)
    low, _ = tiny.mask_decoder(image_embeddings=f.embedding, image_pe=tiny.prompt_encoder.get_dense_pe(),
                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    want = F.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(tiny.decode_prompt(f, *pts), want, atol=1e-5)


@torch.no_grad()
def test_forward_batch_equals_single_items(tiny, clip):
    imgs = clip.view(2, 2, 3, 64, 64)
    pts, lab = torch.tensor([[[40.0, 24.0]], [[30.0, 30.0]]]), torch.ones(2, 1)
    both = tiny(imgs, pts, lab)
    for b in range(2):
        assert torch.allclose(both[b:b + 1], tiny(imgs[b:b + 1], pts[b:b + 1], lab[b:b + 1]), atol=1e-4)


# ---- memory -------------------------------------------------------------------------------------------
def _entry(v: float, ck: int = 2, cv: int = 3):
    return torch.full((1, ck, 2, 2), v), torch.ones(1, 1, 2, 2), torch.full((1, cv, 2, 2), v)


def test_memory_bank_keeps_permanent_and_evicts_oldest():
    bank = MemoryBank(cap=3)
    bank.add(*_entry(-1.0), permanent=True, frame=0)
    for i in range(1, 11):
        bank.add(*_entry(float(i)), frame=i)
        assert len(bank) <= 4
    assert bank.frames == [0, 8, 9, 10] and bank.num_permanent == 1
    k, s, v = bank.tensors()
    assert k.shape == (1, 2, 16) and s.shape == (1, 1, 16) and v.shape == (1, 3, 16)
    assert v[0, 0, :4].eq(-1).all() and v[0, 0, 4:8].eq(8).all()
    only_keys = MemoryBank(cap=0)
    only_keys.add(*_entry(1.0), permanent=True, frame=3)
    only_keys.add(*_entry(2.0), frame=4)
    assert only_keys.frames == [3]
    unbounded = MemoryBank(None)
    for i in range(30):
        unbounded.add(*_entry(float(i)))
    assert len(unbounded) == 30
    with pytest.raises(ModelError):
        MemoryBank(-1)
    with pytest.raises(ModelError):
        bank.add(torch.zeros(1, 4, 2, 2), torch.ones(1, 1, 2, 2), torch.zeros(1, 3, 2, 2))
    bank.clear()
    with pytest.raises(ModelError, match="empty"):
        bank.tensors()


def test_readout_is_xmem_anisotropic_l2():
    g = torch.Generator().manual_seed(3)
    mk, qk = torch.randn(1, 4, 6, generator=g), torch.randn(1, 4, 5, generator=g)
    ms, qe = 1 + torch.rand(1, 1, 6, generator=g), torch.rand(1, 4, 5, generator=g)
    sim = torch.empty(6, 5)
    for i in range(6):
        for j in range(5):
            sim[i, j] = -ms[0, 0, i] * (qe[0, :, j] * (mk[0, :, i] - qk[0, :, j]) ** 2).sum() / math.sqrt(4)
    assert torch.allclose(affinity(mk, ms, qk, qe)[0], torch.softmax(sim, dim=0), atol=1e-6)
    # a query identical to one memory element with large shrinkage reads out (almost only) that element's value
    mv = torch.randn(1, 3, 6, generator=g)
    q = mk[:, :, 2:3].reshape(1, 4, 1, 1)
    out = readout(mk, torch.full((1, 1, 6), 1e4), mv, q, torch.ones(1, 4, 1, 1))
    assert torch.allclose(out.flatten(), mv[0, :, 2], atol=1e-4)


@torch.no_grad()
def test_padded_point_batches_decode_and_bad_labels_are_refused(tiny, clip):
    """Training batches pad shorter point lists with label -1 (SAM's not-a-point): they decode (a run once died
    here mid-epoch); any other label is a clear error."""
    f = tiny.encode(clip[:2])
    pts = torch.tensor([[[40.0, 24.0], [10.0, 10.0]], [[30.0, 30.0], [0.0, 0.0]]])
    out = tiny.decode_prompt(f, points=pts, point_labels=torch.tensor([[1, 0], [1, -1]]), box=[[20, 10, 60, 40]] * 2)
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    alone = tiny.decode_prompt(f.index(0), points=pts[:1], point_labels=torch.tensor([[1, 0]]), box=[[20, 10, 60, 40]])
    assert torch.allclose(out[:1], alone, atol=1e-4)           # the other sample's padding does not leak
    with pytest.raises(PromptError, match="-1 \\(padding\\)"):
        tiny.decode_prompt(f, points=pts, point_labels=torch.tensor([[1, 2], [1, 1]]))


@torch.no_grad()
def test_user_mask_seeded_into_memory_changes_next_frame(tiny, clip):
    f = tiny.encode(clip[:2])
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disk = ((yy - 30) ** 2 + (xx - 32) ** 2 < 150).float()[None, None]
    preds, same = [], []
    for mask in (disk, torch.zeros_like(disk), disk):
        bank, hidden = MemoryBank(tiny.config.memory_cap), tiny.init_hidden()
        value, hidden = tiny.encode_value(clip[:1], f.index(0), mask * 20 - 10, hidden)
        bank.add(f.index(0).key, f.index(0).shrinkage, value, permanent=True)
        preds.append(tiny.segment_from_memory(f.index(1), bank, hidden)[0])
    assert torch.equal(preds[0], preds[2])                     # same seed mask -> same prediction
    # random weights give small logits; the change is still a sizeable fraction of their spread
    assert (preds[0] - preds[1]).abs().max() > 0.01 * preds[0].std()


@torch.no_grad()
def test_eval_is_deterministic_and_deep_update_only_changes_hidden(tiny, clip):
    imgs, pts, lab = clip[None], torch.tensor([[[40.0, 24.0]]]), torch.ones(1, 1)
    torch.manual_seed(5)
    a = tiny(imgs, pts, lab)
    torch.manual_seed(6)
    assert torch.equal(a, tiny(imgs, pts, lab))
    f0, h = tiny.encode(clip[:1]), tiny.init_hidden()
    m = tiny.decode_prompt(f0, pts, lab)
    v1, h1 = tiny.encode_value(clip[:1], f0, m, h, deep_update=True)
    v2, h2 = tiny.encode_value(clip[:1], f0, m, h, deep_update=False)
    assert torch.equal(v1, v2) and torch.equal(h2, h) and not torch.equal(h1, h)


@torch.no_grad()
def test_without_sensory_memory_a_frame_ignores_the_carried_hidden_state(tiny, clip):
    f = tiny.encode(clip[:2])
    bank = MemoryBank(tiny.config.memory_cap)
    value, _ = tiny.encode_value(clip[:1], f.index(0), torch.full((1, 1, 64, 64), 10.0), tiny.init_hidden())
    bank.add(f.index(0).key, f.index(0).shrinkage, value, permanent=True)
    g = torch.Generator().manual_seed(3)
    carried = torch.randn(tiny.init_hidden().shape, generator=g) * 3
    # released (sensory memory on): what the previous frames left in the hidden state changes this frame
    with_hidden = tiny.segment_from_memory(f.index(1), bank, carried)[0]
    assert (with_hidden - tiny.segment_from_memory(f.index(1), bank, tiny.init_hidden())[0]).abs().max() > 1e-4
    off = build_model("memsam", config=dataclasses.replace(tiny.config, sensory_memory=False)).eval()
    off.load_state_dict(tiny.state_dict())
    a, h = off.segment_from_memory(f.index(1), bank, carried)
    b, _ = off.segment_from_memory(f.index(1), bank, tiny.init_hidden())
    assert torch.equal(a, b)
    assert torch.allclose(b, tiny.segment_from_memory(f.index(1), bank, tiny.init_hidden())[0])
    # the switch travels with the checkpoint's config; older files without it keep the released behaviour
    assert MemSAMConfig.from_dict(off.config.to_dict()).sensory_memory is False
    legacy = {k: v for k, v in tiny.config.to_dict().items() if k != "sensory_memory"}
    assert MemSAMConfig.from_dict(legacy).sensory_memory is True


# ---- training split ------------------------------------------------------------------------------------
def test_paper_trainable_split_gradients_tiny(clip):
    torch.manual_seed(2)
    model = build_model("memsam", preset="tiny").train()
    n = model.set_paper_trainable()
    assert 0 < n < sum(p.numel() for p in model.parameters())
    out = model(clip[None, :3], torch.tensor([[[40.0, 24.0]]]), torch.ones(1, 1))
    out.sigmoid().mean().backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    for frozen in ("mask_decoder.", "prompt_encoder.", "image_encoder.neck.", "image_encoder.patch_embed.",
                   "image_encoder.blocks.0.attn.qkv.", "image_encoder.pos_embed"):
        assert all(g is None for k, g in grads.items() if k.startswith(frozen)), frozen
    for trained in ("memory.decoder.", "memory.key_proj.key_proj", "memory.value_encoder.fuser.", "memory.memory_reinforce.",
                    "image_encoder.cnn_embed.", "image_encoder.post_pos_embed.", "image_encoder.blocks.1.Space_Adapter.",
                    "image_encoder.input_Adapter.", "image_encoder.blocks.1.attn.rel_pos_h"):
        assert any(g is not None and g.abs().sum() > 0 for k, g in grads.items() if k.startswith(trained)), trained


def test_save_load_round_trip_identical_outputs(tiny, clip, tmp_path):
    path = save_checkpoint(tiny, "memsam", tiny.config, tmp_path / "memsam_tiny.safetensors", provenance={"test": 1})
    loaded = load_checkpoint(path)
    assert loaded.family == "memsam" and loaded.config == tiny.config and loaded.prompted
    with torch.no_grad():
        args = (clip[None], torch.tensor([[[40.0, 24.0]]]), torch.ones(1, 1))
        assert torch.equal(tiny(*args), loaded.model(*args))


# ---- official layouts (ViT-B) -----------------------------------------------------------------------------
def test_vit_b_matches_released_layout_and_counts(vit_b):
    ours = {k: tuple(v.shape) for k, v in vit_b.state_dict().items()}
    released = {k: s for k, (s, _) in read_tsv("memsam_vit_b_256.tsv").items() if not k.startswith("memory.key_encoder.")}
    assert ours == released
    assert sum(p.numel() for p in vit_b.parameters()) == PAPER_UNIQUE
    n = vit_b.set_paper_trainable()
    print(f"MemSAM ViT-B trainable parameters: {n:,} (paper/released: {PAPER_TRAINABLE:,}, difference {n - PAPER_TRAINABLE:+,})")
    assert n == PAPER_TRAINABLE


def test_released_memsam_state_dict_converts_and_loads(vit_b):
    state = synthetic_state(read_tsv("memsam_vit_b_256.tsv"), seed=4)
    converted = convert_official(state, vit_b.config)
    assert not any(k.startswith("memory.key_encoder.") for k in converted)
    load_state_dict_strict(vit_b, fit_state_dict_to_model(converted, vit_b), what="synthetic MemSAM")
    sd = vit_b.state_dict()
    for k in ("image_encoder.blocks.11.Space_Adapter.q.weight", "memory.decoder.fuser.block1.conv1.weight",
              "memory.value_encoder.layer3.1.conv2.weight", "image_encoder.blocks.2.attn.rel_pos_h"):
        assert torch.equal(sd[k], state[k])
    state["memory.key_encoder.neck.0.weight"] = state["image_encoder.neck.0.weight"] + 1
    with pytest.raises(CheckpointError, match="key_encoder"):
        convert_official(state, vit_b.config)


def test_official_sam_vit_b_initialises_memsam(vit_b):
    layout = read_tsv("sam_vit_b.tsv")
    state = synthetic_state(layout, seed=5)
    converted = convert_official(state, vit_b.config)
    load_state_dict_strict(vit_b, fit_state_dict_to_model(converted, vit_b), what="synthetic SAM")
    sd = vit_b.state_dict()
    assert torch.equal(sd["image_encoder.patch_embed.proj.weight"], state["image_encoder.patch_embed.proj.weight"])
    assert torch.equal(sd["image_encoder.pos_embed"], state["image_encoder.pos_embed"])   # 64x64 kept at S=256
    assert sd["image_encoder.blocks.5.attn.rel_pos_w"].shape == (63, 64)                  # 127 -> 63
    assert torch.equal(sd["image_encoder.blocks.4.attn.rel_pos_w"], state["image_encoder.blocks.4.attn.rel_pos_w"])
    assert torch.equal(sd["mask_decoder.mask_tokens.weight"], state["mask_decoder.mask_tokens.weight"])
    del state, converted
    bad = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}
    with pytest.raises(CheckpointError, match="vit_l"):
        convert_official(bad, vit_b.config)
    with pytest.raises(CheckpointError, match="Neither"):
        convert_official({"foo.weight": torch.zeros(1)}, vit_b.config)
