"""SAM base: build Meta's SAM (`segment_anything.modeling`) at any input size, and load official
checkpoints (`sam_vit_b_01ec64.pth`, `sam_vit_l_0b3195.pth`, `sam_vit_h_4b8939.pth`) into it.

Size-dependent keys (see shared/reference/checkpoints/README.md): only
``image_encoder.pos_embed`` ``(1, S/16, S/16, C)`` and the global-attention blocks'
``attn.rel_pos_h/_w`` ``(2*S/16-1, head_dim)`` change with the input size S. Loading resizes
them the way the papers' loaders do, with the same calls so the tensors are bit-identical:
pos_embed bilinearly (MA-SAM/MediViSTA ``load_from``), rel-pos as a one-channel image
``(1, 1, L, head_dim)`` resized bilinearly to ``(length, head_dim)`` (SAMUS/MemSAM ``load_from2``,
MA-SAM ``load_from``: the same maths as a 1-D linear resize, but not the same rounding).

Tiny configurations (a few blocks, small width) keep the real code paths for tests and the
bundled demo weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from ..errors import CheckpointError, ModelError


@dataclass
class SamConfig:
    """Sizes of a SAM model. ``img_size`` is the square model input in pixels."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256            # neck / prompt embedding width
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    name: str = "vit_b"

    def __post_init__(self) -> None:
        self.global_attn_indexes = tuple(int(i) for i in self.global_attn_indexes)
        self.check_sizes()
        if self.img_size % self.patch_size:
            raise ModelError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}.")
        if self.embed_dim % self.num_heads:
            raise ModelError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}.")
        if any(i >= self.depth for i in self.global_attn_indexes):
            raise ModelError(f"global_attn_indexes {self.global_attn_indexes} exceed depth {self.depth}.")

    def check_sizes(self) -> None:
        """Every size positive and within what a SAM-style model uses (ViT-H: 1280 wide, 32 deep, 1024 px),
        with headroom, and at most 3e9 encoder parameters: a config file cannot make us allocate 200 GB."""
        limits = {"img_size": 4096, "patch_size": 64, "embed_dim": 4096, "depth": 128, "num_heads": 128,
                  "out_chans": 4096, "decoder_depth": 32, "decoder_heads": 64, "decoder_mlp_dim": 16384,
                  "iou_head_hidden_dim": 4096, "mask_in_chans": 1024}
        for name, top in limits.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                raise ModelError(f"SAM config {name} = {v!r} must be an integer in 1..{top}.")
        if isinstance(self.window_size, bool) or not isinstance(self.window_size, int) or not 0 <= self.window_size <= 1024:
            raise ModelError(f"SAM config window_size = {self.window_size!r} must be an integer in 0..1024.")
        if not 0 < float(self.mlp_ratio) <= 16:
            raise ModelError(f"SAM config mlp_ratio = {self.mlp_ratio!r} must be in (0, 16].")
        params = self.depth * (4 + 2 * float(self.mlp_ratio)) * self.embed_dim ** 2
        if params > 3e9:
            raise ModelError(f"SAM config declares about {params / 1e9:.0f} billion encoder parameters "
                             f"(embed_dim {self.embed_dim}, depth {self.depth}); refused.")

    @property
    def tokens(self) -> int:
        """Side of the token grid (= image-embedding side) for a stride-``patch_size`` patch embed."""
        return self.img_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "SamConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"Unknown SAM config fields: {sorted(unknown)}.")
        return cls(**dict(d))

    # presets -------------------------------------------------------------------------------
    @classmethod
    def vit_b(cls, img_size: int = 1024) -> "SamConfig":
        return cls(img_size=img_size, embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11), name="vit_b")

    @classmethod
    def vit_l(cls, img_size: int = 1024) -> "SamConfig":
        return cls(img_size=img_size, embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23), name="vit_l")

    @classmethod
    def vit_h(cls, img_size: int = 1024) -> "SamConfig":
        return cls(img_size=img_size, embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31), name="vit_h")

    @classmethod
    def tiny(cls, img_size: int = 64, embed_dim: int = 32, depth: int = 2, num_heads: int = 2,
             out_chans: int = 32) -> "SamConfig":
        """A few-block SAM with every code path of the real one (windowed + global blocks,
        rel-pos, two-way decoder) for tests and demo weights."""
        return cls(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                   global_attn_indexes=tuple(range(depth - 1, depth)), window_size=4, out_chans=out_chans,
                   decoder_depth=2, decoder_heads=2, decoder_mlp_dim=4 * out_chans, iou_head_hidden_dim=out_chans,
                   mask_in_chans=4, name="tiny")

    @classmethod
    def preset(cls, name: str, img_size: int = 1024) -> "SamConfig":
        makers = {"vit_b": cls.vit_b, "vit_l": cls.vit_l, "vit_h": cls.vit_h, "tiny": cls.tiny}
        if name not in makers:
            raise ModelError(f"Unknown SAM backbone {name!r}; choose from {', '.join(makers)}.")
        return makers[name](img_size=img_size)


def config_from_dict(cls, d: Mapping):
    """A family config dataclass from its JSON dict: unknown fields are an error (a file from a newer
    EchoSAM), the nested ``sam`` dict becomes a `SamConfig`."""
    from dataclasses import fields

    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        what = cls.__name__.replace("Config", " config")
        raise ModelError(f"Unknown {what} fields: {sorted(unknown)}; was the file written by a newer EchoSAM?")
    d = dict(d)
    if isinstance(d.get("sam"), Mapping):
        d["sam"] = SamConfig.from_dict(d["sam"])
    return cls(**d)


def build_image_encoder(cfg: SamConfig, token_grid: Optional[int] = None) -> ImageEncoderViT:
    """SAM ViT image encoder. ``token_grid`` overrides the token side when a family uses a
    different patch stride (MemSAM: 32 tokens at 256 px with stride 8)."""
    enc = ImageEncoderViT(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=3, embed_dim=cfg.embed_dim,
                          depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, out_chans=cfg.out_chans,
                          qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                          rel_pos_zero_init=True, window_size=cfg.window_size,
                          global_attn_indexes=cfg.global_attn_indexes)
    if token_grid is not None and token_grid != cfg.tokens:
        # Rebuild the global blocks' rel-pos tables and pos_embed for the other token grid.
        for i in cfg.global_attn_indexes:
            attn = enc.blocks[i].attn
            attn.rel_pos_h = nn.Parameter(torch.zeros(2 * token_grid - 1, cfg.head_dim))
            attn.rel_pos_w = nn.Parameter(torch.zeros(2 * token_grid - 1, cfg.head_dim))
            enc.blocks[i].window_size = 0
    return enc


def build_prompt_encoder(cfg: SamConfig, embedding_side: Optional[int] = None) -> PromptEncoder:
    side = embedding_side or cfg.tokens
    return PromptEncoder(embed_dim=cfg.out_chans, image_embedding_size=(side, side),
                         input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans)


def build_mask_decoder(cfg: SamConfig, num_multimask_outputs: int = 3) -> MaskDecoder:
    return MaskDecoder(num_multimask_outputs=num_multimask_outputs,
                       transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.out_chans,
                                                     mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
                       transformer_dim=cfg.out_chans, iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim)


def build_sam(cfg: SamConfig, pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375)) -> Sam:
    """Vanilla SAM at ``cfg.img_size`` (pixel mean/std: SAM's ImageNet values by default)."""
    return Sam(image_encoder=build_image_encoder(cfg), prompt_encoder=build_prompt_encoder(cfg),
               mask_decoder=build_mask_decoder(cfg), pixel_mean=list(pixel_mean), pixel_std=list(pixel_std))


# ---- resizing size-dependent weights ---------------------------------------------------------
def resize_pos_embed(pos: torch.Tensor, side: int) -> torch.Tensor:
    """(1, S, S, C) absolute position table -> (1, side, side, C), bilinear (as MA-SAM's load_from)."""
    if pos.shape[1] == side and pos.shape[2] == side:
        return pos
    x = pos.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos.dtype)


def resize_rel_pos(rel: torch.Tensor, length: int) -> torch.Tensor:
    """(L, head_dim) relative-position table -> (length, head_dim): 2-D bilinear on ``(1, 1, L, head_dim)``
    with the width kept, exactly as the papers' loaders (bit-identical to them)."""
    if rel.shape[0] == length:
        return rel
    x = F.interpolate(rel[None, None].float(), size=(length, rel.shape[1]), mode="bilinear", align_corners=False)
    return x[0, 0].to(rel.dtype)


def fit_state_dict_to_model(state: Mapping[str, torch.Tensor], model: nn.Module,
                            resize_prefixes: tuple = ("image_encoder.",)) -> dict:
    """Resize pos_embed / rel_pos tensors in ``state`` to the shapes ``model`` expects.

    Only keys under ``resize_prefixes`` ending in ``pos_embed`` or ``rel_pos_h/_w`` are touched;
    every other key is returned as is (a strict load afterwards reports any real mismatch).
    """
    target = model.state_dict()
    out = dict(state)
    for k, v in state.items():
        if k not in target or tuple(v.shape) == tuple(target[k].shape) or not k.startswith(resize_prefixes):
            continue
        want = tuple(target[k].shape)
        if k.endswith("pos_embed") and v.ndim == 4:
            out[k] = resize_pos_embed(v, want[1])
        elif k.endswith(("rel_pos_h", "rel_pos_w")) and v.ndim == 2 and v.shape[1] == want[1]:
            out[k] = resize_rel_pos(v, want[0])
    return out


def describe_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor], limit: int = 5) -> Optional[str]:
    """Human-readable summary of missing/unexpected keys and shape mismatches (None if it fits)."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
              for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Strict load that raises `CheckpointError` naming the first missing/unexpected/mismatched keys."""
    problem = describe_mismatch(model, state)
    if problem:
        raise CheckpointError(f"The {what} does not match the {type(model).__name__} architecture: {problem}. "
                              "Check the model family and size (vit_b/vit_l/vit_h, input size, classes).")
    model.load_state_dict(state, strict=True)


def load_official_sam(model: Sam, state: Mapping[str, torch.Tensor]) -> Sam:
    """Load an official SAM state dict (any backbone) into a SAM built at another input size."""
    load_state_dict_strict(model, fit_state_dict_to_model(state, model), what="SAM checkpoint")
    return model


def infer_sam_backbone(state: Mapping[str, torch.Tensor]) -> str:
    """vit_b / vit_l / vit_h from an official SAM state dict (embed width and depth)."""
    try:
        width = state["image_encoder.patch_embed.proj.weight"].shape[0]
    except KeyError:
        raise CheckpointError("Not a SAM checkpoint: 'image_encoder.patch_embed.proj.weight' is missing.") from None
    names = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
    if width not in names:
        return "tiny"
    return names[width]
