"""Vanilla SAM as a family: per-frame prompted segmentation of a cine (a `protocols.PromptedVideoModel`),
and the source of weights that every other family is initialised from.

SAM has no temporal memory, so the adapter tracks with boxes, the way SAM is commonly run on video:

- the **key frame** (the frame the user prompted) is SAM's prediction for the user's points and/or
  box: one mask (``multimask_output=False``), except for a lone point, where SAM's three candidate
  masks are scored by its IoU head and the best is kept (SAM's own advice for ambiguous prompts);
- **every next frame** (forward or backward from the key frame) is prompted with the bounding box of
  the previous frame's mask (logits > 0), widened by ``box_margin`` of its width/height on each side
  so a growing ventricle is not cut off; an empty mask keeps the last box seen;
- a user-corrected mask on any frame restarts the chain from that mask's box;
- while every mask so far is empty there is nothing to track: those frames are background.

The "hidden state" of the protocol is that box, ``(B, 4)`` x0, y0, x1, y1 in model-input pixels
(NaN before any mask). The values written to the memory bank are the same boxes (``(B, 4, 1, 1)``
with one-cell keys): SAM reads no spatial memory. Frames are stretched to the square S x S model
input (as for MemSAM, so one coordinate transform serves every family) and normalised with SAM's
ImageNet mean/std (``intensity="imagenet"``, as ``Sam.preprocess``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from ..errors import ModelError, PromptError
from .features import FrameTensors
from .registry import FamilySpec, register_family
from .sam import SamConfig, build_image_encoder, build_mask_decoder, build_prompt_encoder, config_from_dict

INTENSITIES = ("imagenet", "unit", "raw255")
EMPTY_LOGIT = 10.0     # "nothing here": the same +-10 logit scale as a user mask


@dataclass
class SamFamilyConfig:
    """``box_margin``: fraction of the previous mask's box width/height added on each side of the
    next frame's box prompt. ``memory_cap``: boxes kept in the bank besides the key frame's."""

    sam: SamConfig = field(default_factory=SamConfig.vit_b)
    intensity: str = "imagenet"   # SAM's pixel_mean/std on 0..255 RGB
    box_margin: float = 0.05
    memory_cap: Optional[int] = 1
    classes: list = field(default_factory=lambda: ["lv", "myo", "la"])   # SAM is class-agnostic

    def __post_init__(self) -> None:
        if isinstance(self.sam, dict):
            self.sam = SamConfig.from_dict(self.sam)
        if self.intensity not in INTENSITIES:
            raise ModelError(f"SAM intensity {self.intensity!r} is not one of {', '.join(INTENSITIES)}.")
        if not 0.0 <= float(self.box_margin) <= 1.0:
            raise ModelError(f"box_margin {self.box_margin} is not in [0, 1].")
        self.classes = list(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sam"] = self.sam.to_dict()
        return d

    @classmethod
    def from_dict(cls, d) -> "SamFamilyConfig":
        return config_from_dict(cls, d)


@dataclass
class SamFeatures(FrameTensors):
    """Per-frame SAM image embeddings ``(N, C, S/16, S/16)``."""

    embedding: torch.Tensor

    @property
    def key(self) -> torch.Tensor:
        """One-cell memory keys ``(N, 1, 1, 1)``: SAM reads no spatial memory (module docstring)."""
        return self.embedding.new_zeros(len(self), 1, 1, 1)

    @property
    def shrinkage(self) -> torch.Tensor:
        return self.embedding.new_zeros(len(self), 1, 1, 1)


def mask_box(mask_logits: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """``(B, 1, S, S)`` logits -> ``(B, 4)`` box x0, y0, x1, y1 (pixel indices) of ``logits > 0``, widened
    by ``margin`` x width/height on each side and clipped to the image; NaN rows for empty masks."""
    b, s = mask_logits.shape[0], mask_logits.shape[-1]
    fg = mask_logits[:, 0] > 0
    out = torch.full((b, 4), float("nan"), device=mask_logits.device)
    for i in range(b):
        ys, xs = torch.nonzero(fg[i], as_tuple=True)
        if len(xs):
            x0, x1, y0, y1 = xs.min().float(), xs.max().float(), ys.min().float(), ys.max().float()
            dx, dy = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
            out[i] = torch.stack([x0 - dx, y0 - dy, x1 + dx, y1 + dy]).clamp(0, s - 1)
    return out


class SamVideo(Sam):
    """Meta's `Sam` (same weights and key names as the official files) with the prompted-video verbs."""

    key_frame_from_memory = False
    feature_type = SamFeatures

    def __init__(self, config: SamFamilyConfig) -> None:
        cfg = config.sam
        super().__init__(image_encoder=build_image_encoder(cfg), prompt_encoder=build_prompt_encoder(cfg),
                         mask_decoder=build_mask_decoder(cfg), pixel_mean=[123.675, 116.28, 103.53],
                         pixel_std=[58.395, 57.12, 57.375])
        self.config = config

    @property
    def img_size(self) -> int:
        return self.config.sam.img_size

    def prepare_frames(self, frames) -> torch.Tensor:
        """``(N, H, W)`` grey 0..255 -> ``(N, 3, S, S)``: antialiased bilinear resize, grey to RGB, ``intensity``."""
        x = torch.as_tensor(frames).to(self.device, torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise ModelError(f"SAM.prepare_frames expects (N, H, W) frames, got {tuple(x.shape)}.")
        s = self.img_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
        if self.config.intensity == "imagenet":
            return (x - self.pixel_mean) / self.pixel_std
        return x / 255.0 if self.config.intensity == "unit" else x

    def encode(self, images: torch.Tensor) -> SamFeatures:
        s = self.img_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ModelError(f"SAM.encode expects (N, 3, {s}, {s}) images from prepare_frames, got {tuple(images.shape)}.")
        return SamFeatures(self.image_encoder(images))

    def decode_prompt(self, feats: SamFeatures, points=None, point_labels=None, box=None) -> torch.Tensor:
        """SAM on encoded frame(s) with points ``(B,P,2)`` + labels ``(B,P)`` and/or box ``(B,4)`` in
        model-input pixels -> logits ``(B,1,S,S)`` (see the module docstring for multimask)."""
        b, dev = len(feats), feats.embedding.device
        if (points is None) != (point_labels is None):
            raise PromptError("Give both points and point_labels (1 include / 0 exclude), or neither.")
        if points is not None:
            points = torch.as_tensor(points, dtype=torch.float32, device=dev).reshape(b, -1, 2)
            point_labels = torch.as_tensor(point_labels, device=dev).to(torch.int64).reshape(b, -1)
        if box is not None:
            box = torch.as_tensor(box, dtype=torch.float32, device=dev).reshape(b, 4)
        pe = self.prompt_encoder.get_dense_pe()
        out = []
        for i in range(b):
            pts = None if points is None else (points[i:i + 1], point_labels[i:i + 1])
            bx = None if box is None else box[i:i + 1]
            sparse, dense = self.prompt_encoder(points=pts, boxes=bx, masks=None)
            multimask = bx is None and pts is not None and pts[0].shape[1] == 1
            low, iou = self.mask_decoder(image_embeddings=feats.embedding[i:i + 1], image_pe=pe,
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=multimask)
            if multimask:
                low = low[:, int(iou[0].argmax())][:, None]
            out.append(low)
        low = torch.cat(out, 0)
        return F.interpolate(low, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)

    def init_hidden(self, n: int = 1) -> torch.Tensor:
        """No box yet: ``(n, 4)`` NaN."""
        return torch.full((n, 4), float("nan"), device=self.device)

    def encode_value(self, image, feats: SamFeatures, mask_logits: torch.Tensor, hidden: torch.Tensor,
                     deep_update: Optional[bool] = None) -> tuple:
        """The box of ``mask_logits`` (widened by ``box_margin``) becomes the next prompt; an empty mask
        keeps ``hidden``. -> (value ``(B,4,1,1)``, hidden ``(B,4)``)."""
        box = mask_box(mask_logits.float(), self.config.box_margin)
        box = torch.where(torch.isnan(box), hidden.to(box.device, box.dtype), box)
        return box[:, :, None, None], box

    def segment_from_memory(self, feats: SamFeatures, bank, hidden: torch.Tensor) -> tuple:
        """SAM prompted with the remembered box ``hidden`` -> (logits ``(B,1,S,S)``, hidden). Rows with no
        box yet (every mask so far empty: nothing to track) are background, -10 logits."""
        b, s = len(feats), self.img_size
        lost = torch.isnan(hidden).any(dim=1)
        out = feats.embedding.new_full((b, 1, s, s), -EMPTY_LOGIT, dtype=torch.float32)
        if not bool(lost.all()):
            keep = torch.nonzero(~lost).flatten()
            out[keep] = self.decode_prompt(feats.index(keep), box=hidden[keep]).float()
        return out, hidden


def _convert(state, config):
    return dict(state)


register_family(FamilySpec(
    name="sam", config_cls=SamFamilyConfig, build=SamVideo,
    description="Segment Anything (Kirillov et al. 2023), frame by frame: each frame prompted with the box of "
                "the previous frame's mask", convert_official=_convert,
    presets={"vit_b": lambda: SamFamilyConfig(SamConfig.vit_b()), "vit_l": lambda: SamFamilyConfig(SamConfig.vit_l()),
             "vit_h": lambda: SamFamilyConfig(SamConfig.vit_h()), "tiny": lambda: SamFamilyConfig(SamConfig.tiny())}))
