"""Fast inference path shared by every family.

- `enable_fast_attention(model)`: every SAM ``Attention`` (segment_anything) inside ``model``
  computes ``softmax(q k^T / sqrt(d) + B_rel) v`` with ``torch.nn.functional.scaled_dot_product_attention``,
  passing the decomposed relative-position bias ``B_rel`` (SAM's ``add_decomposed_rel_pos`` terms)
  as the additive mask. Same math as the reference; SDPA picks fused kernels (memory-efficient /
  cuDNN on GPU, flash-style on CPU) and avoids materialising the scaled logits separately.
- `inference_context(device, precision)`: ``torch.inference_mode`` + the autocast dtype of the compute
  path (`echosam.compute.choose_path`: bf16 on CUDA and on CPUs with native bf16, else fp32);
  `full_precision` switches autocast off for the final mask logits.
- `quantize_linears_int8(module)`: int8 dynamic quantisation (measured in the bench, not the default).
- `maybe_compile(module)`: optional ``torch.compile``; falls back to eager with a warning.
- `optimise_for_inference(model, device)`: all of the above that applies, once; what `Session` uses.

The fast path agrees with the fp32 reference within 1e-4 in fp32, within bf16 rounding in bf16, and
its labels agree with fp32 labels (Dice >= 0.99; tests/test_fast_path.py, tests/test_cpu_fast_path.py).
"""
from __future__ import annotations

import contextlib
import types
import warnings

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


@contextlib.contextmanager
def full_precision(device_type: str):
    """Autocast off inside (callers cast their inputs with ``.float()``): for the few ops whose rounding
    decides labels, e.g. the final mask logits and their upsampling (a bf16 logit near the threshold
    flips border pixels)."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple) -> torch.Tensor:
    """Decomposed relative-position bias (MViTv2, as in SAM).

    q: (B, heads, H*W, C) unscaled queries; returns (B, heads, H*W, H*W) additive bias.
    """
    h, w = hw
    b, n_heads, _, c = q.shape
    r_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)
    r_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)
    r_q = q.reshape(b * n_heads, h, w, c)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, r_h)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, r_w)
    bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]
    return bias.reshape(b, n_heads, h * w, h * w)


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias=None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` by SDPA, in fp32 even under bf16 autocast; q (B, heads, N, C)
    unscaled. Measured: with bf16 attention a tiny MediViSTA's EF moved 0.6 points from fp32 (bound 0.5);
    in fp32 it costs ~7 % of the ViT-B MemSAM encoder's time (the projections and MLPs stay bf16)."""
    with full_precision(q.device.type):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              attn_mask=None if bias is None else bias.float())


def attend_qkv(attn: Attention, qkv: torch.Tensor, hw: tuple) -> torch.Tensor:
    """The fast path's attention of a SAM ``Attention`` from its projected ``qkv`` (3, B, heads, HW, C):
    relative-position bias and softmax in fp32, then ``proj`` -> (B, H, W, dim). Shared by SAM's blocks
    (`sdpa_attention`) and FacT's (`echosam.models.peft.fact_attention`)."""
    h, w = hw
    q, k, v = qkv.unbind(0)  # each (B, heads, HW, C)
    with full_precision(q.device.type):
        bias = rel_pos_bias(q.float(), attn.rel_pos_h, attn.rel_pos_w, (h, w)) if attn.use_rel_pos else None
    out = attention_core(q, k, v, bias)
    out = out.view(q.shape[0], attn.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(q.shape[0], h, w, -1)
    return attn.proj(out)


def sdpa_attention(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """Drop-in ``Attention.forward``: x (B, H, W, dim) -> (B, H, W, dim)."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    return attend_qkv(self, qkv, (h, w))


def enable_fast_attention(model: torch.nn.Module) -> int:
    """Switch every SAM Attention in ``model`` to SDPA; returns how many were switched."""
    n = 0
    for m in model.modules():
        if isinstance(m, Attention) and getattr(m, "_echosam_fast", False) is False:
            m.forward = types.MethodType(sdpa_attention, m)
            m._echosam_fast = True
            n += 1
    return n


def disable_fast_attention(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Attention) and getattr(m, "_echosam_fast", False):
            del m.forward
            m._echosam_fast = False


def autocast_dtype(device: torch.device, precision: str = "auto", width=None):
    """The autocast dtype `echosam.compute.choose_path` picks for ``device``, ``precision`` and a model
    ``width`` wide (None = fp32): bf16 on CUDA (fp16 on older GPUs) and on CPUs with native bf16
    (AMX / AVX512-BF16) for models wide enough to gain from it, else fp32."""
    from ..compute import choose_path
    return choose_path(str(device), precision, set_threads=False, width=width).torch_dtype()


@contextlib.contextmanager
def inference_context(device: torch.device, precision: str = "auto", width=None):
    """inference_mode plus the compute path's mixed-precision autocast (CUDA, or a CPU with native bf16)."""
    dtype = autocast_dtype(device, precision, width)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def quantize_linears_int8(module: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantisation of every ``nn.Linear`` in ``module`` (weights int8, activations quantised
    per batch), in place; CPU only. An option measured by bench/bench_models.py, not the default (bf16
    autocast is faster on CPUs with AMX and keeps closer to fp32)."""
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def maybe_compile(module, enabled: bool = False):
    """torch.compile when asked and available; eager otherwise (compile needs a C compiler)."""
    if not enabled:
        return module
    try:
        return torch.compile(module, dynamic=False)
    except Exception as e:  # compile backends vary by platform; eager is always correct
        warnings.warn(f"torch.compile unavailable ({e}); running eagerly.")
        return module


def optimise_for_inference(model: torch.nn.Module, device: torch.device, compile_encoder: bool = False):
    """Apply the fast path to a model used for inference (idempotent; weights and their names unchanged).

    SDPA attention everywhere; on CUDA, channels-last weights so the convolutions (MemSAM's CNN branch
    and value encoder, MediViSTA's frequency branch, the neck) use the tensor-core friendly layout;
    optionally ``torch.compile`` of the image encoder's forward (the bulk of the FLOPs).
    """
    enable_fast_attention(model)
    if device.type == "cuda" and not getattr(model, "_echosam_channels_last", False):
        model.to(memory_format=torch.channels_last)   # once per model, not once per Session
        model._echosam_channels_last = True
    encoder = getattr(model, "image_encoder", None)
    if compile_encoder and encoder is not None and not getattr(encoder, "_echosam_compiled", False):
        # compile the bound forward itself: a compiled module's forward would call the patched one again
        encoder.forward = maybe_compile(encoder.forward, enabled=True)
        encoder._echosam_compiled = True
    return model
