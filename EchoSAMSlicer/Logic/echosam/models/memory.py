"""MemSAM's memory: XMem-style keys/values, sensory GRU and memory reinforcement.

Follows reference/models.md §1.2 (MemSAM:modeling/mem.py, mem_modules.py, which adapt XMem,
Cheng & Schwing ECCV 2022). Single object per model call (MemSAM is a binary propagator), so the
released code's "object" axis is dropped; parameter names equal the released ``memory.*`` keys.
Shapes use ``t`` = token side (32 at S=256), ``Ck`` key, ``Cv`` value, ``Ch`` hidden channels,
``C`` the image-embedding width (256).

- `KeyProjection`: embedding -> key ``(B,Ck,t,t)``, shrinkage ``s = d^2 + 1`` ``(B,1,t,t)``,
  selection ``e = sigmoid(.)`` ``(B,Ck,t,t)``.
- `readout`: anisotropic L2 affinity ``S_ij = -s_i sum_c e_cj (k_ci - q_cj)^2 / sqrt(Ck)``, softmax over all
  memory elements i (no top-k: the released training/test path), ``F = V W``.
- `MemoryBank(cap)`: the working memory; permanent entries (prompted / corrected key frames) are
  never evicted, the others FIFO beyond ``cap``.
- `MemoryDecoder`: ``FeatureFusionBlock(E, [F | h])`` -> memory embedding ``M (B,C,t,t)`` (the dense prompt),
  then `GatedUpdate` (XMem's "GRU") updates the sensory memory ``h``.
- `ValueEncoder`: ResNet trunk on ``[image | mask | others]`` fused with the (reinforced) embedding ->
  value ``(B,Cv,t,t)``; on a deep update also reinforces ``h``.
- `ForegroundReinforcing`: ``alpha = softmax_c(Conv1x1(Conv3x3([P_d | E])))``, output ``P_d * alpha``.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..errors import ModelError
from .fast import full_precision


# ---- keys and readout -------------------------------------------------------------------------
class KeyProjection(nn.Module):
    """Conv3x3 heads on the embedding: key (orthogonal init, zero bias), shrinkage, selection."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight.data)
        nn.init.zeros_(self.key_proj.bias.data)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.key_proj(x), self.d_proj(x) ** 2 + 1, torch.sigmoid(self.e_proj(x))


def affinity(mem_key: torch.Tensor, mem_shrink: torch.Tensor, query_key: torch.Tensor,
             query_sel: torch.Tensor) -> torch.Tensor:
    """XMem anisotropic-L2 affinity.

    mem_key (B,Ck,N), mem_shrink (B,1,N), query_key / query_sel (B,Ck,HW) -> softmax weights (B,N,HW)
    (normalised over the N memory elements).
    """
    with full_precision(query_key.device.type):     # the expanded L2 distance cancels badly in bf16
        return _affinity_fp32(mem_key.float(), mem_shrink.float(), query_key.float(), query_sel.float())


def _affinity_fp32(mem_key, mem_shrink, query_key, query_sel) -> torch.Tensor:
    ck = mem_key.shape[1]
    mk = mem_key.transpose(1, 2)                                         # (B, N, Ck)
    sim = 2 * (mk @ (query_key * query_sel)) - (mk ** 2) @ query_sel     # (B, N, HW)
    sim = sim - (query_sel * query_key ** 2).sum(1, keepdim=True)
    sim = sim * mem_shrink.transpose(1, 2) / math.sqrt(ck)
    return torch.softmax(sim, dim=1)


def readout(mem_key, mem_shrink, mem_value, query_key, query_sel) -> torch.Tensor:
    """Memory readout ``(B,Cv,t,t)`` for a query key/selection ``(B,Ck,t,t)``; memory tensors flattened
    as (B,Ck,N), (B,1,N), (B,Cv,N)."""
    b, _, h, w = query_key.shape
    w_ = affinity(mem_key, mem_shrink, query_key.flatten(2), query_sel.flatten(2))
    return (mem_value @ w_.to(mem_value.dtype)).view(b, mem_value.shape[1], h, w)


class MemoryBank:
    """Working memory of one object: entries ``(key (B,Ck,t,t), shrinkage (B,1,t,t), value (B,Cv,t,t))``.

    ``cap`` bounds the non-permanent entries (FIFO: the oldest is evicted first); ``None`` = unbounded.
    Permanent entries (the prompted or user-corrected key frames) are never evicted, so memory stays
    flat on long loops while the user's information is kept. ``frame`` is an optional label.
    """

    def __init__(self, cap: Optional[int] = None) -> None:
        if cap is not None and int(cap) < 0:
            raise ModelError(f"memory cap must be >= 0 or None (unbounded), got {cap}.")
        self.cap = None if cap is None else int(cap)
        self._permanent: list = []
        self._working: deque = deque()

    def add(self, key: torch.Tensor, shrinkage: torch.Tensor, value: torch.Tensor, permanent: bool = False,
            frame: Optional[int] = None) -> None:
        if key.ndim != 4 or shrinkage.shape[1] != 1 or value.ndim != 4 or key.shape[-2:] != value.shape[-2:] \
                or shrinkage.shape[-2:] != key.shape[-2:] or not (key.shape[0] == shrinkage.shape[0] == value.shape[0]):
            raise ModelError(f"memory entry shapes do not fit: key {tuple(key.shape)}, shrinkage "
                             f"{tuple(shrinkage.shape)}, value {tuple(value.shape)}; expected (B,Ck,t,t), (B,1,t,t), (B,Cv,t,t).")
        if len(self):
            k0, _, v0, _ = self.entries[0]
            if k0.shape != key.shape or v0.shape != value.shape:
                raise ModelError(f"memory entry {tuple(key.shape)}/{tuple(value.shape)} differs from the entries already "
                                 f"stored {tuple(k0.shape)}/{tuple(v0.shape)}; use one bank per object and model.")
        entry = (key, shrinkage, value, frame)
        if permanent:
            self._permanent.append(entry)
            return
        self._working.append(entry)
        while self.cap is not None and len(self._working) > self.cap:
            self._working.popleft()

    @property
    def entries(self) -> list:
        """Permanent entries first, then working entries oldest first: ``(key, shrinkage, value, frame)``."""
        return self._permanent + list(self._working)

    @property
    def frames(self) -> list:
        return [e[3] for e in self.entries]

    @property
    def num_permanent(self) -> int:
        return len(self._permanent)

    def __len__(self) -> int:
        return len(self._permanent) + len(self._working)

    def clear(self) -> None:
        self._permanent.clear()
        self._working.clear()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Concatenated memory: keys (B,Ck,N), shrinkage (B,1,N), values (B,Cv,N), N = entries * t * t."""
        if not len(self):
            raise ModelError("The memory is empty: seed it with a prompted or user-drawn frame first "
                             "(encode_value on that frame, then bank.add).")
        ents = self.entries
        return tuple(torch.cat([e[i].flatten(2) for e in ents], dim=2) for i in range(3))


# ---- building blocks (XMem) -------------------------------------------------------------------
class ResBlock(nn.Module):
    """Pre-activation block ``conv2(relu(conv1(relu(g)))) + shortcut(g)``; 3x3 conv shortcut when widths differ."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(cin, cout, 3, padding=1) if cin != cout else None
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        return out + (g if self.downsample is None else self.downsample(g))


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP (reduction r) on global avg- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        mid = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, mid), nn.ReLU(), nn.Linear(mid, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(att)[:, :, None, None]


class SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7x7 conv on [channel max, channel mean]."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """``block2(g1 + CBAM(g1))`` with ``g1 = block1([x | g])``: (B,Cx,t,t) + (B,Cg,t,t) -> (B,Cout,t,t)."""

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = ResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = ResBlock(mid_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.block1(torch.cat([x, g], dim=1))
        return self.block2(g + self.attention(g))


class GatedUpdate(nn.Module):
    """XMem's sensory-memory "GRU" (HiddenUpdater / HiddenReinforcer): one Conv3x3 on ``[g | h]`` gives
    forget f, update u (sigmoid) and candidate n (tanh); ``h <- f * h * (1 - u) + u * n``. Xavier init."""

    def __init__(self, g_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = nn.Conv2d(g_dim + hidden_dim, 3 * hidden_dim, 3, padding=1)
        nn.init.xavier_normal_(self.transform.weight)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        f, u, n = self.transform(torch.cat([g, h], dim=1)).split(self.hidden_dim, dim=1)
        f, u = torch.sigmoid(f), torch.sigmoid(u)
        return f * h * (1 - u) + u * torch.tanh(n)


class MemoryDecoder(nn.Module):
    """Readout + hidden -> memory embedding ``M (B,C,t,t)`` (paper eq. 3), then ``h`` update (eq. 5)."""

    def __init__(self, embed_dim: int, value_dim: int, hidden_dim: int, mid_dim: int = 512) -> None:
        super().__init__()
        self.fuser = FeatureFusionBlock(embed_dim, value_dim + hidden_dim, mid_dim, embed_dim)
        self.hidden_update = GatedUpdate(embed_dim, hidden_dim)

    def forward(self, embedding: torch.Tensor, hidden: torch.Tensor, mem_readout: torch.Tensor):
        m = self.fuser(embedding, torch.cat([mem_readout, hidden], dim=1))
        return m, self.hidden_update(m, hidden)


class ForegroundReinforcing(nn.Module):
    """Memory reinforcement (paper eq. 4): mask nearest-resized to t x t (``P_d``);
    ``P_d * softmax_c(Conv1x1(Conv3x3([P_d | E])))`` -> (B, out_dim, t, t)."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv_wxh = nn.Conv2d(in_dim + 1, mid_dim, kernel, padding=kernel // 2)
        self.conv_1x1 = nn.Conv2d(mid_dim, out_dim, 1)

    def forward(self, feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = F.interpolate(mask, size=feat.shape[-2:], mode="nearest")
        alpha = torch.softmax(self.conv_1x1(self.conv_wxh(torch.cat([p, feat], dim=1))), dim=1)
        return alpha * p


def _basic_layer(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    layers = [BasicBlock(cin, cout, stride=stride, downsample=down)]
    layers += [BasicBlock(cout, cout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


TRUNKS = {
    # name: (stem width, layer widths, blocks per layer); "resnet18" = torchvision ResNet-18 conv1..layer3
    "resnet18": (64, (64, 128, 256), 2),
    "tiny": (8, (8, 16), 1),
}


class ValueEncoder(nn.Module):
    """Value encoder: ``[image (3) | mask (1) | others (1)]`` at S x S -> conv1 (s2) -> bn1 -> maxpool -> relu ->
    layer1 -> layer2 (s2) -> ``(B, Cg, t, t)``; fused with the image feature by `FeatureFusionBlock` ->
    value ``(B, Cv, t, t)``; a deep update also runs ``hidden_reinforce``.

    "resnet18" is torchvision's ResNet-18 with 5 input channels. The released code starts from ImageNet
    weights; they cannot be downloaded here, so the trunk is randomly initialised (kaiming, as torchvision).
    Its ``layer3`` exists in the released state dict but MemSAM's forward never uses it (stride 16 would
    not match the 32 x 32 keys); it is kept, unused, so official files load strictly and the paper's
    trainable-parameter count is reproduced. "tiny" is a two-layer trunk with the same strides.
    """

    def __init__(self, embed_dim: int, value_dim: int, hidden_dim: int, trunk: str = "resnet18") -> None:
        super().__init__()
        if trunk not in TRUNKS:
            raise ModelError(f"Unknown value trunk {trunk!r}; choose from {', '.join(TRUNKS)}.")
        stem, widths, blocks = TRUNKS[trunk]
        self.conv1 = nn.Conv2d(5, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _basic_layer(stem, widths[0], blocks, 1)
        self.layer2 = _basic_layer(widths[0], widths[1], blocks, 2)
        if len(widths) > 2:
            self.layer3 = _basic_layer(widths[1], widths[2], blocks, 2)   # unused (see class doc)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.fuser = FeatureFusionBlock(embed_dim, widths[1], value_dim, value_dim)
        self.hidden_reinforce = GatedUpdate(value_dim, hidden_dim)

    def forward(self, image: torch.Tensor, feat: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor,
                deep_update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.cat([image, mask, torch.zeros_like(mask)], dim=1)
        g = self.relu(self.maxpool(self.bn1(self.conv1(g))))
        g = self.layer2(self.layer1(g))
        value = self.fuser(feat, g)
        if deep_update:
            hidden = self.hidden_reinforce(value, hidden)
        return value, hidden


class MemoryModule(nn.Module):
    """The released ``Mem`` container (``memory.*`` keys): key_proj, value_encoder, decoder, memory_reinforce.

    The key encoder is the image encoder itself; MemSAM sets ``memory.key_encoder`` as a plain attribute
    (not a registered sub-module) so that the weights exist once in the state dict.
    """

    def __init__(self, embed_dim: int, key_dim: int, value_dim: int, hidden_dim: int, trunk: str = "resnet18",
                 decoder_mid_dim: int = 512, reinforce: bool = True, reinforce_dim: int = 128) -> None:
        super().__init__()
        self.key_dim, self.value_dim, self.hidden_dim = key_dim, value_dim, hidden_dim
        self.value_encoder = ValueEncoder(embed_dim, value_dim, hidden_dim, trunk)
        self.key_proj = KeyProjection(embed_dim, key_dim)
        self.decoder = MemoryDecoder(embed_dim, value_dim, hidden_dim, decoder_mid_dim)
        self.memory_reinforce = ForegroundReinforcing(embed_dim, reinforce_dim, embed_dim) if reinforce else None
