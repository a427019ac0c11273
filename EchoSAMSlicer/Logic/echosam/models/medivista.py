"""MediViSTA v2 (Kim et al., IEEE JBHI 2025, arXiv 2309.13539; github SekeunKim/MediViSTA):
prompt-free multi-class echo segmentation (LV, myocardium, LA) of whole clips with temporal-fusion
adapters, a Haar-wavelet frequency branch and FacT on a frozen SAM ViT-B at 256 px.

Per block i (models.md section 2.2; the released block loop is missing, wiring is ours)::

    x = x + TFA_i(LN_t(x))                         # temporal fusion over the clip's frames
    h = LN1(x)
    if block i is global (window_size == 0):       # released code: ParaBlock, global blocks only
        h = h + CrossAttn_i(q=h, k=F_c, v=F_c);  F_c = Refine_i(F_c)
    x = x + Attn(h)                                # frozen qkv + FacT dQ/dV
    x = x + MLP(LN2(x))

Frequency branch: HF = Haar high-frequency map of each frame (`peft.high_frequency_map`);
FusionBlock([RGB, HF]) -> conv_block (2x[Conv3x3, BN, ReLU], 3->64) -> MSAG gate -> CNN embed
(log2(patch) x [MaxPool2, Conv3x3, LN2d, GELU], 64->128->256->512->dim) = F_c ``(N, h, w, dim)``.
ASSUMPTION (FusionBlock not released): ``concat [RGB, HF] -> Conv1x1 -> 3 channels``
(models.md section 5 note 5). The HF map is computed inside ``forward`` from the prepared frames;
it is invariant to the per-image min-max, so it equals the released dataloader's map up to its
uint8 rounding.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from ..errors import ModelError
from .masam import rename_masam_key
from .peft import CrossBranchAttention, RefineAdapter, TemporalFusionAttention, high_frequency_map
from .prompt_free import ConversionReport, PromptFreeConfig, PromptFreeSAM, assemble_state
from .registry import FamilySpec, register_family
from .sam import SamConfig

TEMPORAL_KERNELS = ("exp", "exp_normalised")
TEMPORAL_SCALES = ("standard", "released")


@dataclass
class MediViSTAConfig(PromptFreeConfig):
    """MediViSTA v2 sizes. ``clip_frames`` 10 (hard-coded D in the release); windows overlap by
    half (``window_stride`` 5, ours). ``temporal_kernel``: ``exp`` = unnormalised
    ``exp(-|t-tau|/lambda)`` (paper figure), ``exp_normalised`` = rows summing to 1.
    ``temporal_scale``: ``standard`` = attention logits times 1/sqrt(d) (ours, documented choice);
    ``released`` = times sqrt(embed_dim / num_heads) (8 for ViT-B), exactly the released code."""

    sam: SamConfig = field(default_factory=lambda: SamConfig.vit_b(img_size=256))
    clip_frames: int = 10
    window_stride: int = 5
    temporal_lambda: float = 3.0
    temporal_kernel: str = "exp"
    temporal_heads: int = 1
    temporal_scale: str = "standard"
    cross_heads: int = 12
    cnn_channels: int = 64
    wavelet: str = "haar"
    intensity: str = "minmax"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temporal_kernel not in TEMPORAL_KERNELS:
            raise ModelError(f"Unknown temporal_kernel {self.temporal_kernel!r}; choose from {', '.join(TEMPORAL_KERNELS)}.")
        if self.temporal_scale not in TEMPORAL_SCALES:
            raise ModelError(f"Unknown temporal_scale {self.temporal_scale!r}; choose from {', '.join(TEMPORAL_SCALES)}.")
        if self.wavelet != "haar":
            raise ModelError(f"Only the Haar wavelet is implemented (MediViSTA v2); got {self.wavelet!r}.")
        if self.sam.patch_size & (self.sam.patch_size - 1):
            raise ModelError("The CNN branch halves the resolution per stage: patch_size must be a power of two.")

    @classmethod
    def vit_b(cls) -> "MediViSTAConfig":
        return cls(sam=SamConfig.vit_b(img_size=256))

    @classmethod
    def tiny(cls) -> "MediViSTAConfig":
        return cls(sam=SamConfig.tiny(img_size=64), fact_rank=4, cross_heads=2, cnn_channels=4)


# ---- frequency (CNN) branch -------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation), nn.BatchNorm2d(cout))


class MSAG(nn.Module):
    """Multi-scale attention gate: 1x1, 3x3 and dilated 3x3 (Conv+BN) branches,
    ``gate = sigmoid(BN(Conv1x1(ReLU(concat))))``, output ``x * gate``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = _conv_bn(channels, channels, 1)
        self.ordinary = _conv_bn(channels, channels, 3)
        self.dilation = _conv_bn(channels, channels, 3, dilation=2)
        self.vote = _conv_bn(3 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([self.pointwise(x), self.ordinary(x), self.dilation(x)], dim=1)
        return x * torch.sigmoid(self.vote(torch.relu(cat)))


class FrequencyBranch(nn.Module):
    """``images (N, 3, S, S)`` -> CNN tokens ``F_c (N, S/patch, S/patch, dim)``."""

    def __init__(self, dim: int, patch_size: int, channels: int = 64) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(4, 3, kernel_size=1)          # FusionBlock: documented assumption
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))
        self.msag = MSAG(channels)
        stages = int(math.log2(patch_size))
        widths = [channels * 2 ** (i + 1) for i in range(stages - 1)] + [dim]
        downs, cin = [], channels
        for cout in widths:
            downs.append(nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                       LayerNorm2d(cout), nn.GELU()))
            cin = cout
        self.embed = nn.ModuleList(downs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hf = high_frequency_map(images.mean(dim=1))
        x = self.msag(self.stem(self.fusion(torch.cat([images, hf[:, None]], dim=1))))
        for down in self.embed:
            x = down(x)
        return x.permute(0, 2, 3, 1)


# ---- model ----------------------------------------------------------------------------------------
class MediViSTA(PromptFreeSAM):
    """MediViSTA v2 on SAM. ``forward(clip (B,T,3,S,S)) -> (B,T,C+1,S,S)`` logits."""

    def __init__(self, config: MediViSTAConfig) -> None:
        super().__init__(config)
        cfg = config.sam
        self.image_encoder.freq = FrequencyBranch(cfg.embed_dim, cfg.patch_size, config.cnn_channels)
        # released qkvAttention_: logits / (head_dim ** -0.5) with the encoder's head_dim
        scale = math.sqrt(cfg.head_dim) if config.temporal_scale == "released" else None
        for blk in self.image_encoder.blocks:
            blk.temporal_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
            blk.temporal_adapter = TemporalFusionAttention(cfg.embed_dim, config.temporal_lambda,
                                                           config.temporal_kernel == "exp_normalised",
                                                           config.temporal_heads, logit_scale=scale)
            if blk.window_size == 0:
                blk.space_adapter = CrossBranchAttention(cfg.embed_dim, config.cross_heads)
                blk.refine_adapter = RefineAdapter(cfg.embed_dim)
        self.set_paper_trainable()

    def new_encoder_modules(self) -> list[nn.Module]:
        mods = [self.image_encoder.freq]
        for blk in self.image_encoder.blocks:
            mods += [blk.temporal_norm, blk.temporal_adapter]
            if blk.window_size == 0:
                mods += [blk.space_adapter, blk.refine_adapter]
        return super().new_encoder_modules() + mods

    def _blocks(self, x: torch.Tensor, frames: int, clip: torch.Tensor) -> torch.Tensor:
        f = self.image_encoder.freq(clip)
        for blk in self.image_encoder.blocks:
            x = x + blk.temporal_adapter(blk.temporal_norm(x), frames)
            h = blk.norm1(x)
            if blk.window_size == 0:
                h = h + blk.space_adapter(h, f)
                f = blk.refine_adapter(f)
            x = x + self._attend(blk, h)
            x = x + blk.mlp(blk.norm2(x))
        return x


# ---- official checkpoints ---------------------------------------------------------------------
_MSAG = {"pointwiseConv": "pointwise", "ordinaryConv": "ordinary", "dilationConv": "dilation", "voteConv": "vote"}
_BLOCK_RE = re.compile(r"^image_encoder\.blocks\.(\d+)\.(Temporal_Adapter|Space_Adapter|refine_Adapter)\.(.+)$")


def rename_medivista_key(key: str, global_blocks: set) -> str | None:
    """One key of the released v2 layout (medivista_vit_b_256.tsv) -> our name, or None when it
    has no place here: ``FusionBlock.*`` (unreleased, unknown layout) and the Space/refine
    adapters of windowed blocks (built in every block by the release but used only in global
    blocks; we build them only there)."""
    if key.startswith("image_encoder.FusionBlock."):
        return None
    if key.startswith("image_encoder.Conv.conv."):
        return "image_encoder.freq.stem." + key[len("image_encoder.Conv.conv."):]
    m = re.match(r"^image_encoder\.msag\.(\w+?)\.(.+)$", key)
    if m and m.group(1) in _MSAG:
        return f"image_encoder.freq.msag.{_MSAG[m.group(1)]}.{m.group(2)}"
    m = re.match(r"^image_encoder\.cnn_embed\.downs\.(\d+)\.maxpool_conv\.(.+)$", key)
    if m:
        return f"image_encoder.freq.embed.{m.group(1)}.{m.group(2)}"
    m = _BLOCK_RE.match(key)
    if m:
        block, kind, rest = int(m.group(1)), m.group(2), m.group(3)
        if kind == "Temporal_Adapter":
            return f"image_encoder.blocks.{block}.temporal_adapter.{rest}"
        if block not in global_blocks:
            return None
        return f"image_encoder.blocks.{block}.{'space_adapter' if kind == 'Space_Adapter' else 'refine_adapter'}.{rest}"
    # FacT keys, if a future release follows MA-SAM's Fact_tt_Sam naming (hypothesis in the TSV header)
    return rename_masam_key(key)


def detect_layout(state: Mapping) -> str:
    if any(_BLOCK_RE.match(k) or k.startswith(("image_encoder.msag.", "image_encoder.cnn_embed.")) for k in state):
        return "medivista_v2"
    return "sam"


def convert_official_report(state: Mapping[str, torch.Tensor], config: MediViSTAConfig) -> tuple[dict, ConversionReport]:
    """SAM ``.pth`` or the released v2 layout -> our full state dict plus a report.

    For the v2 layout the report's ``dropped`` keys are the FusionBlock placeholder and the
    unused Space/refine adapters of windowed blocks; ``initialised`` keys (fresh init) are our
    FusionBlock 1x1 conv, the temporal adapters' LayerNorms (our residual wiring) and the FacT
    factors (the FacT wrapper was not released)."""
    model = MediViSTA(config)
    layout = detect_layout(state)
    if layout == "sam":
        full, initialised = assemble_state(model, state, "SAM checkpoint", strict=False)
        return full, ConversionReport(layout, dropped=sorted(k for k in state if k not in full), initialised=initialised)
    global_blocks = {i for i, blk in enumerate(model.image_encoder.blocks) if blk.window_size == 0}
    renamed, dropped = {}, []
    for k, v in state.items():
        new = rename_medivista_key(k, global_blocks)
        if new is None:
            dropped.append(k)
        else:
            renamed[new] = v
    full, initialised = assemble_state(model, renamed, "MediViSTA v2 checkpoint", strict=True)
    return full, ConversionReport(layout, dropped=sorted(dropped), initialised=initialised)


def convert_official(state: Mapping[str, torch.Tensor], config: MediViSTAConfig) -> dict:
    return convert_official_report(state, config)[0]


register_family(FamilySpec(
    name="medivista", config_cls=MediViSTAConfig, build=MediViSTA,
    description="MediViSTA v2 (Kim et al., JBHI 2025): temporal fusion + wavelet branch + FacT on SAM, prompt-free",
    convert_official=convert_official,
    presets={"vit_b": MediViSTAConfig.vit_b, "tiny": MediViSTAConfig.tiny}))
