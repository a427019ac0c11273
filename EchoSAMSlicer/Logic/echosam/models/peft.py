"""Parameter-efficient pieces shared by the prompt-free families (MA-SAM, MediViSTA).

Token tensors follow SAM's image encoder: ``(N, H, W, C)`` channels-last, with ``N = B*T``
frames of ``B`` clips stored contiguously (frame axis fastest-varying inside a clip, as MA-SAM's
encoder flattens ``(B, D)`` to ``B*D``). Layers that mix frames take ``frames=T`` to view them back.

- `FacTShared` + `FacTCores` + `fact_attention`: FacT-TT low-rank update of the frozen qkv
  projection (MA-SAM paper eq. 1-2, ``sam_fact_tt_image_encoder.py``): ``dQ = s*V(drop(Sq(U(x))))``,
  ``dV = s*V(drop(Sv(U(x))))`` added to the q and v slices of ``qkv(x)``; U, V shared by all
  blocks, V zero-initialised, per-block r x r cores; dropout 0.1.
- `Adapter3D`: MA-SAM 3D adapter (paper eq. 3): LN (eps 1e-6, as the released code builds it) ->
  Linear(dim->c, no bias) -> Conv3d k=(3,1,1) over the frame axis -> GELU -> Linear(c->dim, no bias).
  Returns the branch only; the block adds the residual.
- `TemporalFusionAttention`: MediViSTA v2 temporal adapter ("qkvAttention_").
- `CrossBranchAttention`, `RefineAdapter`: MediViSTA v2 ``ParaBlock`` Space/refine adapters.
- `haar_dwt2`, `high_frequency_map`: MediViSTA v2 wavelet input (``utils/wavelet.py``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import add_decomposed_rel_pos
from torch import nn

from ..errors import ModelError
from .fast import attend_qkv


# ---- FacT-TT ------------------------------------------------------------------------------------
class FacTShared(nn.Module):
    """The factors shared by all blocks: ``u: Linear(dim->r)``, ``v: Linear(r->dim)`` (both no
    bias; ``v`` zero-initialised so the model starts exactly as the frozen SAM, as in MA-SAM)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Linear(dim, rank, bias=False)
        self.v = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.v.weight)


class FacTCores(nn.Module):
    """Per-block r x r cores for the q and v projections, with MA-SAM's dropout (p=0.1)."""

    def __init__(self, rank: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.q = nn.Linear(rank, rank, bias=False)
        self.v = nn.Linear(rank, rank, bias=False)
        self.drop = nn.Dropout(dropout)

    def deltas(self, x: torch.Tensor, shared: FacTShared, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (..., dim)`` -> ``(dQ, dV)`` each ``(..., dim)``."""
        u = shared.u(x)
        return scale * shared.v(self.drop(self.q(u))), scale * shared.v(self.drop(self.v(u)))


def fact_attention(attn: nn.Module, x: torch.Tensor, cores: FacTCores | None = None,
                   shared: FacTShared | None = None, scale: float = 1.0) -> torch.Tensor:
    """SAM's ``Attention.forward`` on ``x (B, H, W, C)`` with the FacT update added to q and v.

    Same arithmetic as ``segment_anything.modeling.image_encoder.Attention`` (scale, decomposed
    rel-pos, softmax); with ``cores=None`` (or V = 0) the result equals ``attn(x)``.
    """
    b, h, w, c = x.shape
    qkv = attn.qkv(x)
    if cores is not None:
        dq, dv = cores.deltas(x, shared, scale)
        qkv = torch.cat([qkv[..., :c] + dq, qkv[..., c:2 * c], qkv[..., 2 * c:] + dv], dim=-1)
    qkv = qkv.reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    if getattr(attn, "_echosam_fast", False):       # the fast path (models/fast.py): SDPA, fp32 softmax
        return attend_qkv(attn, qkv, (h, w))
    q, k, v = qkv.reshape(3, b * attn.num_heads, h * w, -1).unbind(0)
    weights = (q * attn.scale) @ k.transpose(-2, -1)
    if attn.use_rel_pos:
        weights = add_decomposed_rel_pos(weights, q, attn.rel_pos_h, attn.rel_pos_w, (h, w), (h, w))
    out = (weights.softmax(dim=-1) @ v).view(b, attn.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)


# ---- MA-SAM 3D adapter ----------------------------------------------------------------------------
class Adapter3D(nn.Module):
    """``x (B*T, H, W, dim)`` -> branch ``(B*T, H, W, dim)``; the Conv3d mixes frames t-1, t, t+1
    (zero padding at the clip ends, as ``padding=(1,0,0)`` in MA-SAM) with full channel mixing."""

    def __init__(self, dim: int, channels: int = 384) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)     # released MA-SAM: norm_layer eps 1e-6, not torch's 1e-5
        self.down = nn.Linear(dim, channels, bias=False)
        self.conv = nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0))
        self.up = nn.Linear(channels, dim, bias=False)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        n, h, w, _ = x.shape
        y = self.down(self.norm(x))
        c = y.shape[-1]
        y = y.view(n // frames, frames, h, w, c).permute(0, 4, 1, 2, 3)      # (B, c, T, H, W)
        y = self.conv(y).permute(0, 2, 3, 4, 1).reshape(n, h, w, c)
        return self.up(F.gelu(y))


# ---- MediViSTA temporal-fusion adapter --------------------------------------------------------
def temporal_kernel(frames: int, lam: float, normalised: bool = False, device=None, dtype=None) -> torch.Tensor:
    """``(T, T)`` weights ``phi(t - tau) = exp(-|t - tau| / lam)`` (MediViSTA v2, lambda = 3).
    The paper figure sums them unnormalised; ``normalised=True`` makes each row sum to 1."""
    t = torch.arange(frames, device=device, dtype=torch.float32)
    w = torch.exp(-(t[:, None] - t[None, :]).abs() / float(lam))
    if normalised:
        w = w / w.sum(dim=1, keepdim=True)
    return w.to(dtype) if dtype is not None else w


class TemporalFusionAttention(nn.Module):
    """MediViSTA v2 temporal-fusion attention on ``x (B*T, H, W, dim)`` -> ``(B*T, H, W, dim)``.

    ``k_hat_t = sum_tau phi(t-tau) k_tau`` and ``v_hat_t`` likewise, then attention of frame t's
    queries over frame t's fused keys/values: ``softmax(q_t k_hat_t^T / sqrt(d)) v_hat_t``.
    ``logit_scale`` multiplies ``q k_hat^T``: None = the standard ``1/sqrt(d)`` (d = dim / heads, as
    models.md section 2.2 recommends, our default); the released ``qkvAttention_`` single-head
    attention DIVIDES by ``(dim / encoder_heads) ** -0.5``, i.e. multiplies by 8 for ViT-B
    (``MediViSTAConfig.temporal_scale="released"`` passes that). ``heads=1`` is the released
    single-head form. The caller wires ``x <- x + TFA(LN(x))`` (our choice; the release has no
    residual/norm wiring).
    """

    def __init__(self, dim: int, lam: float = 3.0, normalised: bool = False, heads: int = 1,
                 logit_scale: float | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ModelError(f"temporal adapter: dim {dim} is not divisible by heads {heads}")
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.lam, self.normalised, self.heads = float(lam), bool(normalised), int(heads)
        self.logit_scale = None if logit_scale is None else float(logit_scale)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        n, h, w, c = x.shape
        b, hd = n // frames, c // self.heads

        def split(t):  # (n,H,W,C) -> (B, T, heads, L, d)
            return t.reshape(b, frames, h * w, self.heads, hd).transpose(2, 3)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        phi = temporal_kernel(frames, self.lam, self.normalised, device=x.device, dtype=x.dtype)
        k = torch.einsum("ts,bsnld->btnld", phi, k)
        v = torch.einsum("ts,bsnld->btnld", phi, v)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.logit_scale)   # None: 1/sqrt(d)
        return self.proj(out.transpose(2, 3).reshape(n, h, w, c))


# ---- MediViSTA cross-branch attention ---------------------------------------------------------
class CrossBranchAttention(nn.Module):
    """``Space_Adapter``: multi-head attention with queries from ViT tokens ``h (N,H,W,dim)`` and
    keys/values from the CNN-branch tokens ``f (N,H,W,dim)``; returns ``(N,H,W,dim)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.heads = int(heads)

    def forward(self, h: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        n, hh, ww, c = h.shape

        def split(t):
            return t.reshape(n, hh * ww, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(f)), split(self.v(f)))
        return self.proj(out.transpose(1, 2).reshape(n, hh, ww, c))


class RefineAdapter(nn.Module):
    """``refine_Adapter``: CNN tokens ``(N,H,W,dim)`` -> Conv3x3 (no bias) -> LN2d -> GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), LayerNorm2d(dim), nn.GELU())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.conv(f.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


# ---- Haar wavelet high-frequency map ----------------------------------------------------------
def haar_dwt2(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Single-level 2-D Haar DWT of ``x (..., H, W)``, exactly ``pywt.dwt2(x, 'haar')``
    (mode 'symmetric': an odd side repeats its last row/column). Returns ``(LL, LH, HL, HH)`` =
    pywt's ``(cA, (cH, cV, cD))``, each ``(..., ceil(H/2), ceil(W/2))``."""
    if x.shape[-2] % 2:
        x = torch.cat([x, x[..., -1:, :]], dim=-2)
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., :, -1:]], dim=-1)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max each image of ``(N, H, W)`` to [0, 1]; a constant image gives zeros."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    rng = x.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(rng > 0, (x - lo) / rng.clamp_min(1e-12), torch.zeros_like(x))


def _combine_high_bands(lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor, size) -> torch.Tensor:
    s = 255.0 * (_minmax(lh) + _minmax(hl) + _minmax(hh))
    s = F.interpolate(s[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return _minmax(s)


def high_frequency_map(gray: torch.Tensor) -> torch.Tensor:
    """MediViSTA v2 high-frequency map: ``gray (N, H, W)`` -> ``(N, H, W)`` in [0, 1].

    Haar DWT; LH, HL, HH each min-max scaled to [0, 255] and summed; LL dropped; bilinear
    resize back to H x W; min-max. The release stores the result as uint8 0..255; we keep it
    as float in [0, 1] (no quantisation). Every step after the DWT is a min-max, so the map is
    invariant to a positive affine change of the input intensities: computing it from the
    normalised model input equals computing it from the raw frame.
    """
    _, lh, hl, hh = haar_dwt2(gray.float())
    return _combine_high_bands(lh, hl, hh, gray.shape[-2:]).to(gray.dtype)


def high_frequency_map_pywt(gray: np.ndarray) -> np.ndarray:
    """Reference path with PyWavelets for one frame ``(H, W)`` -> ``(H, W)`` float32 in [0, 1]."""
    import pywt

    _, (lh, hl, hh) = pywt.dwt2(np.asarray(gray, dtype=np.float64), "haar")
    bands = [torch.from_numpy(np.ascontiguousarray(b))[None] for b in (lh, hl, hh)]
    return _combine_high_bands(*bands, size=np.shape(gray))[0].float().numpy()


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["FacTShared", "FacTCores", "fact_attention", "Adapter3D", "temporal_kernel", "TemporalFusionAttention",
           "CrossBranchAttention", "RefineAdapter", "haar_dwt2", "high_frequency_map", "high_frequency_map_pywt",
           "count_parameters"]
