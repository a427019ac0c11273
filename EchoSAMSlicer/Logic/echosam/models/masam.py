"""MA-SAM (Chen et al., Medical Image Analysis 2024; github cchen-cc/MA-SAM): prompt-free
multi-class segmentation of frame windows with 3D adapters and FacT-TT on a frozen SAM.

Per block (``sam_fact_tt_image_encoder.py``)::

    x = x + A1(x)                       # 3D adapter, Conv3d k=(3,1,1) over the frame axis
    x = x + Attn(LN1(x))                # frozen qkv + FacT-TT dQ/dV, windowed or global
    x = x + A2(x)
    x = x + MLP(LN2(x))

Input: clips ``(B, T, 3, S, S)`` (paper: T = 5 slices/frames, S = 512, values in [0, 1] with
pixel mean 0 / std 1, i.e. ``intensity="unit"``). Output: ``(B, T, C+1, S, S)`` logits from the
"progressive up-sampling" decoder (`prompt_free.ProgressiveMaskDecoder`). Paper default backbone
is ViT-H; ViT-B is ours (echo at 512 px) and ViT-H is offered as a preset.

Official checkpoints (`convert_official`), three layouts (shared/reference/checkpoints):
- an official SAM ``.pth`` (init: SAM keys, same-shape heads copied, new modules fresh);
- MA-SAM's released adapter file (``Fact_tt_Sam.save_parameters``: ``q_FacTs_000``,
  ``image_encoder.FacTu.weight``, ``image_encoder.ImageEncoderViT.blocks.N.Block.adapter_*``,
  ``prompt_encoder.*``, ``mask_decoder.*``) merged over the SAM base (``base_sam``);
- MA-SAM's full in-memory module layout (``sam.image_encoder.ImageEncoderViT...``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from .peft import Adapter3D
from .prompt_free import ConversionReport, PromptFreeConfig, PromptFreeSAM, assemble_state
from .registry import FamilySpec, register_family
from .sam import SamConfig


@dataclass
class MASAMConfig(PromptFreeConfig):
    """MA-SAM sizes. ``clip_frames`` 5 and ``window_stride`` 1 follow MA-SAM ``test.py``
    (``window_pad_ends=True`` reproduces its end padding exactly; the default keeps windows
    inside the loop so that T = clip_frames is one plain forward)."""

    sam: SamConfig = field(default_factory=lambda: SamConfig.vit_b(img_size=512))
    clip_frames: int = 5
    window_stride: int = 1
    adapter_channels: int = 384
    intensity: str = "unit"

    @classmethod
    def vit_b(cls) -> "MASAMConfig":
        return cls(sam=SamConfig.vit_b(img_size=512))

    @classmethod
    def vit_h(cls) -> "MASAMConfig":
        return cls(sam=SamConfig.vit_h(img_size=512))

    @classmethod
    def tiny(cls) -> "MASAMConfig":
        return cls(sam=SamConfig.tiny(img_size=64), adapter_channels=8, fact_rank=4)


class MASAM(PromptFreeSAM):
    """MA-SAM on SAM. ``forward(clip (B,T,3,S,S)) -> (B,T,C+1,S,S)`` logits; see `PromptFreeSAM`."""

    def __init__(self, config: MASAMConfig) -> None:
        super().__init__(config)
        dim = config.sam.embed_dim
        for blk in self.image_encoder.blocks:
            blk.adapter1 = Adapter3D(dim, config.adapter_channels)
            blk.adapter2 = Adapter3D(dim, config.adapter_channels)
        self.set_paper_trainable()

    def new_encoder_modules(self) -> list[nn.Module]:
        adapters = [a for blk in self.image_encoder.blocks for a in (blk.adapter1, blk.adapter2)]
        return super().new_encoder_modules() + adapters

    def _blocks(self, x: torch.Tensor, frames: int, clip: torch.Tensor) -> torch.Tensor:
        for blk in self.image_encoder.blocks:
            x = x + blk.adapter1(x, frames)
            x = x + self._attend(blk, blk.norm1(x))
            x = x + blk.adapter2(x, frames)
            x = x + blk.mlp(blk.norm2(x))
        return x


# ---- official checkpoints ---------------------------------------------------------------------
_ADAPTER_PARTS = {"linear_down": "down", "linear_up": "up", "conv": "conv", "norm": "norm"}
_ADAPTER_RE = re.compile(r"^image_encoder\.blocks\.(\d+)\.adapter_(linear_down|linear_up|conv|norm)(_2)?\.(\w+)$")
_CORE_RE = re.compile(r"^([qv])_FacTs_(\d+)$")
_MODULE_CORE_RE = re.compile(r"^(image_encoder\.blocks\.\d+\.attn)\.qkv\.([qv])_FacTs\.weight$")


def detect_layout(state: Mapping) -> str:
    """``module`` (full Fact_tt_Sam state), ``adapter`` (released file) or ``sam`` (SAM / ours)."""
    if any(k.startswith("sam.") for k in state):
        return "module"
    if any(_CORE_RE.match(k) or ".ImageEncoderViT." in k for k in state):
        return "adapter"
    return "sam"


def rename_masam_key(key: str) -> str | None:
    """One MA-SAM key (either layout) -> our name; None for the duplicate top-level FacTu/FacTv."""
    if key in ("FacTu.weight", "FacTv.weight"):
        return None
    k = key[4:] if key.startswith("sam.") else key
    k = k.replace(".ImageEncoderViT.", ".").replace(".Block.", ".").replace(".Attention.", ".")
    k = k.replace(".qkv.qkv.", ".qkv.")
    m = _CORE_RE.match(k)
    if m:
        return f"image_encoder.blocks.{int(m.group(2))}.attn.fact.{m.group(1)}.weight"
    m = _MODULE_CORE_RE.match(k)
    if m:
        return f"{m.group(1)}.fact.{m.group(2)}.weight"
    if k in ("image_encoder.FacTu.weight", "image_encoder.FacTv.weight"):
        return "image_encoder.fact." + ("u" if "FacTu" in k else "v") + ".weight"
    m = _ADAPTER_RE.match(k)
    if m:
        which = "adapter2" if m.group(3) else "adapter1"
        return f"image_encoder.blocks.{m.group(1)}.{which}.{_ADAPTER_PARTS[m.group(2)]}.{m.group(4)}"
    return k


def convert_official_report(state: Mapping[str, torch.Tensor], config: MASAMConfig) -> tuple[dict, ConversionReport]:
    """Official SAM / MA-SAM state dict -> our full state dict, and what was not taken from it."""
    layout = detect_layout(state)
    model = MASAM(config)
    if layout == "sam":
        full, initialised = assemble_state(model, state, "SAM checkpoint", strict=False)
        return full, ConversionReport(layout, dropped=sorted(k for k in state if k not in full), initialised=initialised)
    if layout == "module":
        for a, b in (("FacTu.weight", "sam.image_encoder.FacTu.weight"), ("FacTv.weight", "sam.image_encoder.FacTv.weight")):
            if a in state and b in state and not torch.equal(state[a], state[b]):
                raise CheckpointError(f"MA-SAM module state: {a} differs from its alias {b}; the file is inconsistent.")
    elif "image_encoder.patch_embed.proj.weight" not in state:
        raise CheckpointError("This MA-SAM adapter checkpoint holds only the adapters, FacT and decoder: load it with "
                              "the official SAM checkpoint of the same backbone as base_sam (sam_vit_b/sam_vit_h .pth).")
    renamed = {}
    for k, v in state.items():
        new = rename_masam_key(k)
        if new is not None:
            renamed[new] = v
    full, initialised = assemble_state(model, renamed, f"MA-SAM {layout} checkpoint", strict=True)
    dropped = sorted(k for k in state if rename_masam_key(k) is None)
    return full, ConversionReport(layout, dropped=dropped, initialised=initialised)


def convert_official(state: Mapping[str, torch.Tensor], config: MASAMConfig) -> dict:
    return convert_official_report(state, config)[0]


register_family(FamilySpec(
    name="masam", config_cls=MASAMConfig, build=MASAM,
    description="MA-SAM (Chen et al., MedIA 2024): 3D adapters + FacT-TT on SAM, prompt-free, 5-frame windows",
    convert_official=convert_official,
    presets={"vit_b": MASAMConfig.vit_b, "vit_h": MASAMConfig.vit_h, "tiny": MASAMConfig.tiny}))
