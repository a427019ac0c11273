"""PEFT building blocks (FacT-TT, 3D adapter, temporal fusion, Haar map) and sliding windows."""
import math

import numpy as np
import pytest
import torch

from echosam.errors import CancelledError, ModelError
from echosam.models.peft import (Adapter3D, CrossBranchAttention, FacTCores, FacTShared, TemporalFusionAttention,
                                 fact_attention, haar_dwt2, high_frequency_map, high_frequency_map_pywt,
                                 temporal_kernel)
from echosam.models.sam import SamConfig, build_image_encoder
from echosam.models.windows import plan_windows, sliding_window_probs
from echosam.progress import CancelToken

pywt = pytest.importorskip("pywt")


@pytest.mark.parametrize("shape", [(8, 12), (7, 9), (1, 1), (5, 2)])
def test_haar_dwt2_matches_pywavelets(shape):
    x = np.random.default_rng(0).normal(size=shape) * 40
    ll, lh, hl, hh = (b.numpy() for b in haar_dwt2(torch.from_numpy(x)))
    ref_ll, (ref_lh, ref_hl, ref_hh) = pywt.dwt2(x, "haar")
    for ours, ref in ((ll, ref_ll), (lh, ref_lh), (hl, ref_hl), (hh, ref_hh)):
        np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_high_frequency_map_matches_pywt_path_and_is_affine_invariant():
    rng = np.random.default_rng(1)
    frames = rng.uniform(0, 255, size=(3, 20, 18)).astype(np.float32)
    frames[:, 5:12, 4:9] += 60                      # an edge: high frequencies concentrate there
    ours = high_frequency_map(torch.from_numpy(frames)).numpy()
    for i in range(3):
        np.testing.assert_allclose(ours[i], high_frequency_map_pywt(frames[i]), atol=1e-5)
    assert ours.min() == 0.0 and abs(ours.max() - 1.0) < 1e-6 and ours.shape == frames.shape
    scaled = high_frequency_map(torch.from_numpy(frames) * 0.01 + 3.0).numpy()
    np.testing.assert_allclose(scaled, ours, atol=1e-4)
    assert not high_frequency_map(torch.full((1, 8, 8), 7.0)).any()


def _tiny_attn():
    torch.manual_seed(0)
    enc = build_image_encoder(SamConfig.tiny(img_size=64))
    blk = enc.blocks[1]                              # the global block, with rel-pos
    for p in blk.attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return blk.attn


def test_fact_attention_equals_sam_attention_until_v_is_trained():
    attn = _tiny_attn()
    x = torch.randn(2, 4, 4, 32)
    shared, cores = FacTShared(32, 4), FacTCores(4).eval()
    torch.testing.assert_close(fact_attention(attn, x), attn(x))
    torch.testing.assert_close(fact_attention(attn, x, cores, shared), attn(x))   # V zero-initialised
    torch.nn.init.normal_(shared.v.weight)
    changed = fact_attention(attn, x, cores, shared, scale=1.0)
    assert (changed - attn(x)).abs().max() > 1e-3
    # with a zero v-core only dQ acts; zeroing the q-core too brings back the frozen output
    torch.nn.init.zeros_(cores.q.weight)
    torch.nn.init.zeros_(cores.v.weight)
    torch.testing.assert_close(fact_attention(attn, x, cores, shared), attn(x))


def test_adapter3d_mixes_only_neighbouring_frames_of_the_same_clip():
    torch.manual_seed(0)
    ad = Adapter3D(16, 8)
    x = torch.randn(2 * 5, 3, 3, 16)                 # B=2 clips of T=5 frames
    base = ad(x, frames=5)
    x2 = x.clone()
    x2[1] += 1.0                                     # clip 0, frame 1
    diff = (ad(x2, frames=5) - base).abs().amax(dim=(1, 2, 3))
    assert diff[0] > 0 and diff[1] > 0 and diff[2] > 0
    assert torch.all(diff[3:] == 0)                  # frames 3, 4 and the whole second clip untouched
    assert sum(p.numel() for p in Adapter3D(768, 384).parameters()) == 1_034_112   # MA-SAM ViT-B adapter


def test_temporal_kernel_values():
    w = temporal_kernel(4, 3.0)
    assert w[0, 0] == 1 and math.isclose(w[0, 3].item(), math.exp(-1.0), rel_tol=1e-6)
    torch.testing.assert_close(w, w.t())
    torch.testing.assert_close(temporal_kernel(4, 3.0, normalised=True).sum(1), torch.ones(4))


def test_temporal_fusion_attention_is_scaled_dot_product_over_fused_keys():
    torch.manual_seed(0)
    tfa = TemporalFusionAttention(8, lam=3.0)
    x = torch.randn(3, 2, 2, 8)                      # one clip of 3 frames, 4 tokens each
    out = tfa(x, frames=3)
    q, k, v = (m(x).reshape(3, 4, 8) for m in (tfa.q, tfa.k, tfa.v))
    phi = temporal_kernel(3, 3.0)
    for t in range(3):
        kh = sum(phi[t, s] * k[s] for s in range(3))
        vh = sum(phi[t, s] * v[s] for s in range(3))
        ref = torch.softmax(q[t] @ kh.t() / math.sqrt(8), dim=-1) @ vh
        torch.testing.assert_close(out[t].reshape(4, 8), tfa.proj(ref), rtol=1e-4, atol=1e-5)
    # frames of two clips in one batch stay separate
    both = tfa(torch.cat([x, torch.randn(3, 2, 2, 8)]), frames=3)
    torch.testing.assert_close(both[:3], out, rtol=1e-5, atol=1e-6)


def test_cross_branch_attention_reads_the_cnn_tokens():
    torch.manual_seed(0)
    ca = CrossBranchAttention(8, heads=2)
    h, f = torch.randn(2, 2, 2, 8), torch.randn(2, 2, 2, 8)
    out = ca(h, f)
    assert out.shape == h.shape
    assert (ca(h, f + 1) - out).abs().max() > 1e-4


# ---- windows -----------------------------------------------------------------------------------
def test_plan_windows_rules():
    (only,) = plan_windows(1, 5)
    assert only.sources == (0, 0, 0, 0, 0) and only.keep == (False, False, True, False, False)
    (one,) = plan_windows(5, 5)
    assert one.sources == (0, 1, 2, 3, 4) and all(one.keep)
    ws = plan_windows(17, 5, stride=1)
    assert len(ws) == 13 and ws[-1].sources == (12, 13, 14, 15, 16)
    ws = plan_windows(32, 10, stride=5)
    assert [w.sources[0] for w in ws] == [0, 5, 10, 15, 20, 22]
    ws = plan_windows(7, 5, stride=1, pad_ends=True)  # MA-SAM test.py: every frame centred once
    assert len(ws) == 7 and [w.sources[2] for w in ws] == list(range(7))
    assert ws[0].sources == (0, 0, 0, 1, 2) and ws[0].keep == (False, False, True, True, True)
    with pytest.raises(ModelError):
        plan_windows(0, 5)
    with pytest.raises(ModelError):
        plan_windows(10, 5, stride=6)


def test_sliding_windows_average_flat_memory_progress_and_cancel():
    seen, reports = [], []

    def run(x):                                      # logits depend on frame content and clip position
        seen.append(x.shape[1])
        pos = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1, 1)
        return torch.cat([x[:, :, :1] * 3, pos.expand_as(x[:, :, :1])], dim=2)

    images = torch.rand(23, 3, 4, 4)
    probs = sliding_window_probs(run, images, clip=5, stride=2, progress=lambda d, t, m="": reports.append((d, t)))
    assert probs.shape == (23, 2, 4, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(23, 4, 4))
    assert set(seen) == {5}                          # never more than one clip on the device
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1] == (23, 23)
    # frame 0 is only in window 0 (position 0): its probability is exactly that window's softmax
    expect0 = torch.softmax(torch.stack([images[0, 0] * 3, torch.zeros(4, 4)]), dim=0)
    torch.testing.assert_close(probs[0], expect0)
    # frame 4 sits at positions 4, 2, 0 of the windows starting at 0, 2, 4: averaged
    p4 = [torch.softmax(torch.stack([images[4, 0] * 3, torch.full((4, 4), float(k))]), dim=0) for k in (4, 2, 0)]
    torch.testing.assert_close(probs[4], sum(p4) / 3)

    token, calls = CancelToken(), []

    def cancelling(x):
        calls.append(1)
        token.cancel()
        return run(x)

    with pytest.raises(CancelledError):
        sliding_window_probs(cancelling, images, clip=5, stride=1, cancel=token)
    assert len(calls) == 1


@pytest.mark.parametrize("family", ["masam", "medivista"])
def test_batched_windows_equal_one_window_at_a_time(family):
    from echosam.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(family, preset="tiny").eval()
    frames = torch.rand(13, 40, 48, generator=torch.Generator().manual_seed(2)) * 255
    images = model.prepare_frames(frames)
    one = model.segment_video(images, window_batch=1)
    three = model.segment_video(images, window_batch=3)
    assert one.shape == (13, 4, model.config.sam.img_size, model.config.sam.img_size)
    assert torch.allclose(one, three, atol=1e-5)


@pytest.mark.parametrize("family,frames", [("masam", 1), ("masam", 5), ("masam", 17),
                                           ("medivista", 1), ("medivista", 10), ("medivista", 32)])
def test_segment_video_any_length(family, frames, end_frame_probs):
    """One frame, one clip and several clips: probabilities per frame, end windows placed and padded
    exactly as plain clip forwards (MA-SAM clips of 5, MediViSTA clips of 10)."""
    from echosam.models.registry import build_model

    torch.manual_seed(0)
    tiny = build_model(family, preset="tiny").eval()
    images = tiny.prepare_frames(torch.rand(frames, 50, 70) * 255)
    probs = tiny.segment_video(images)
    assert probs.shape == (frames, 4, 64, 64)
    torch.testing.assert_close(probs.sum(1), torch.ones(frames, 64, 64))
    first, last = end_frame_probs(tiny, images)       # plain clip forwards: padding / window placement
    torch.testing.assert_close(probs[0], first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs[-1], last, rtol=1e-5, atol=1e-6)
