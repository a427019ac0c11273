"""MemSAM's image encoder: the SAMUS ViT (Lin et al. 2023) that MemSAM (Deng et al., CVPR 2024) uses.

Deltas vs SAM's ``ImageEncoderViT`` (reference/models.md §1.2; MemSAM:modeling/image_encoder.py):

- **Patch embed** ``Conv2d(3, C, k=16, s=8)`` (SAM's k16 weights, stride halved) on the input resized
  bilinearly to ``(S+8) x (S+8)`` -> ``t = S/8`` tokens per side (32 x 32 at S=256).
- **input_Adapter** (``C -> C/4 -> C`` bottleneck with skip) right after the patch embed.
- **Absolute position table** kept at ``2t x 2t`` (SAM ViT's own 64 x 64 table at S=256) and mapped to
  ``t x t`` by the trainable **post_pos_embed** (MaxPool2 -> Conv3x3 -> LayerNorm2d -> GELU).
- **CNN branch** ``cnn_embed``: Conv3x3+LN2d+GELU at full resolution, then 3 x [MaxPool2, Conv3x3,
  LN2d, GELU] -> ``cnnx (B, t, t, C)``.
- **Global blocks** (``ParaBlock``): ``h = LN1(x); h = h + Space_Adapter(q=h, k=v=cnnx)``;
  ``cnnx = refine_Adapter(cnnx)``; ``x = x + Attn(h)``; ``x = x + MLP(LN2(x)) + 0.5 * MLP_Adapter(LN2(x))``.
  Windowed blocks are SAM's ``Block`` unchanged.
- After the blocks ``x = x + 0.5 * cnnx``, then SAM's neck -> image embedding ``(B, out_chans, t, t)``.

Parameter names equal the released MemSAM ``image_encoder.*`` keys (memsam_vit_b_256.tsv), so an
official MemSAM state dict loads without renaming.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import Block, PatchEmbed
from torch import nn

from .sam import SamConfig, build_image_encoder

PATCH_STRIDE = 8  # SAMUS: tokens = S / 8


class Adapter(nn.Module):
    """Bottleneck adapter ``D_fc2(GELU(D_fc1(x)))`` (hidden = ratio * dim), optional skip. Tokens ``(..., dim)``."""

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.skip = skip
        self.D_fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.D_fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.D_fc2(self.act(self.D_fc1(x)))
        return x + y if self.skip else y


class CrossAttention(nn.Module):
    """SAMUS ``Space_Adapter``: multi-head attention with queries from ViT tokens and keys/values from
    the CNN branch, separate q/k/v projections, no relative position. ``q, kv: (B, H, W, C)``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        return x.reshape(b, h * w, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, h, w, c = q.shape
        out = F.scaled_dot_product_attention(self._heads(self.q(q)), self._heads(self.k(kv)), self._heads(self.v(kv)))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


def conv_ln_gelu(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3 (no bias) -> LayerNorm2d -> GELU, on ``(B, C, H, W)`` (SAMUS ``SingleConv``)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), LayerNorm2d(cout), nn.GELU())


class ConvUnit(nn.Module):
    """Holds ``conv`` = Conv3x3 + LN2d + GELU (keeps the released ``*.conv.{0,1}`` key names)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_ln_gelu(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Down(nn.Module):
    """MaxPool2 -> Conv3x3 (no bias) -> LN2d -> GELU (SAMUS ``SingleDown``); ``(B,Cin,H,W) -> (B,Cout,H/2,W/2)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), *conv_ln_gelu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class CNNEmbed(nn.Module):
    """CNN branch: ``(B, 3, S, S) -> (B, S/8, S/8, embed_dim)`` through widths ``dims`` (released: 64, 128, 256)."""

    def __init__(self, embed_dim: int, dims: Sequence[int] = (64, 128, 256)) -> None:
        super().__init__()
        d0, d1, d2 = (int(d) for d in dims)
        self.inc = ConvUnit(3, d0)
        self.downs = nn.ModuleList([Down(d0, d1), Down(d1, d2), Down(d2, embed_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc(x)
        for down in self.downs:
            x = down(x)
        return x.permute(0, 2, 3, 1)


class PostPosEmbed(nn.Module):
    """``(1, 2t, 2t, C)`` position table -> ``(1, t, t, C)`` with one trainable ``Down`` (SAMUS ``PostPosEmbed``)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.downs = nn.ModuleList([Down(embed_dim, embed_dim)])

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        x = pos.permute(0, 3, 1, 2)
        for down in self.downs:
            x = down(x)
        return x.permute(0, 2, 3, 1)


class ParaBlock(Block):
    """SAM global-attention ``Block`` plus SAMUS's three adapters (names as released).

    ``forward(x (B,t,t,C), cnnx (B,t,t,C)) -> (x, cnnx)``; the SAM sub-modules (norm1, attn, norm2, mlp)
    keep SAM's names so the official SAM weights load into them.
    """

    def __init__(self, dim: int, num_heads: int, tokens: int, mlp_ratio: float = 4.0, adapter_ratio: float = 0.25) -> None:
        super().__init__(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                         norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), act_layer=nn.GELU, use_rel_pos=True,
                         rel_pos_zero_init=True, window_size=0, input_size=(tokens, tokens))
        self.MLP_Adapter = Adapter(dim, adapter_ratio, skip=False)
        self.Space_Adapter = CrossAttention(dim, num_heads)
        self.refine_Adapter = ConvUnit(dim, dim)
        self.adapter_scale = 0.5

    def forward(self, x: torch.Tensor, cnnx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shortcut = x
        h = self.norm1(x)
        h = h + self.Space_Adapter(h, cnnx)
        cnnx = self.refine_Adapter(cnnx.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = shortcut + self.attn(h)
        xn = self.norm2(x)
        return x + self.mlp(xn) + self.adapter_scale * self.MLP_Adapter(xn), cnnx


class MemSAMImageEncoder(nn.Module):
    """SAMUS-style ViT: ``(B, 3, S, S)`` (any intensity convention) -> ``(B, out_chans, S/8, S/8)``."""

    def __init__(self, cfg: SamConfig, cnn_dims: Sequence[int] = (64, 128, 256), adapter_ratio: float = 0.25) -> None:
        super().__init__()
        self.img_size = cfg.img_size
        self.tokens = cfg.img_size // PATCH_STRIDE
        t, c = self.tokens, cfg.embed_dim
        base = build_image_encoder(cfg, token_grid=t)   # SAM blocks (rel-pos sized for t) + neck
        self.cnn_embed = CNNEmbed(c, cnn_dims)
        self.patch_embed = PatchEmbed(kernel_size=(cfg.patch_size, cfg.patch_size),
                                      stride=(PATCH_STRIDE, PATCH_STRIDE), in_chans=3, embed_dim=c)
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 * t, 2 * t, c))
        self.post_pos_embed = PostPosEmbed(c)
        self.global_attn_indexes = tuple(cfg.global_attn_indexes)
        blocks = list(base.blocks)
        for i in self.global_attn_indexes:
            blocks[i] = ParaBlock(c, cfg.num_heads, t, cfg.mlp_ratio, adapter_ratio)
        self.blocks = nn.ModuleList(blocks)
        self.neck = base.neck
        self.input_Adapter = Adapter(c, adapter_ratio, skip=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cnnx = self.cnn_embed(x)
        side = self.img_size + PATCH_STRIDE
        x = self.patch_embed(F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False))
        x = self.input_Adapter(x)
        x = x + self.post_pos_embed(self.pos_embed)
        for blk in self.blocks:
            if isinstance(blk, ParaBlock):
                x, cnnx = blk(x, cnnx)
            else:
                x = blk(x)
        x = x + 0.5 * cnnx
        return self.neck(x.permute(0, 3, 1, 2))
