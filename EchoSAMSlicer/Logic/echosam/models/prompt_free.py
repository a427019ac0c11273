"""What MA-SAM and MediViSTA share: config plumbing, the "progressive up-sampling" mask decoder,
and a base model with ``prepare_frames`` / ``forward`` / ``segment_video`` / ``set_paper_trainable``.

Key layout: SAM's own names are kept (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``), so an official SAM state dict loads key for key; new modules are attached
to SAM's modules: ``image_encoder.fact.{u,v}`` (shared FacT factors) and
``image_encoder.blocks.N.attn.fact.{q,v}`` (per-block cores), plus each family's adapters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.image_encoder import window_partition, window_unpartition
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from ..errors import CheckpointError, CineError, ModelError
from ..heart_zoom import zoom_problem
from ..hysteresis import grow_problem
from .fast import full_precision
from .peft import FacTCores, FacTShared, count_parameters, fact_attention
from .sam import SamConfig, build_image_encoder, build_prompt_encoder, config_from_dict, fit_state_dict_to_model
from .windows import sliding_window_probs

INTENSITIES = ("unit", "minmax", "minmax_released")
UPSCALING_CHANNELS = (64, 32, 16, 8)


@dataclass
class PromptFreeConfig:
    """Fields both prompt-free families share. ``classes`` are structure keys (e.g. lv, myo, la);
    output channel c is class ``classes[c-1]``, channel 0 background. ``intensity``: ``unit``
    (x/255, MA-SAM), ``minmax`` (per image (x-min)/(max-min), MediViSTA), ``minmax_released``
    (MediViSTA's released ``(x-min)/max``)."""

    sam: SamConfig = field(default_factory=SamConfig.vit_b)
    classes: list = field(default_factory=lambda: ["lv", "myo", "la"])
    clip_frames: int = 5
    window_stride: int = 1
    window_pad_ends: bool = False
    fact_rank: int = 32
    fact_scale: float = 1.0
    fact_dropout: float = 0.1
    intensity: str = "unit"
    grow_thresholds: dict = field(default_factory=dict)   # structure -> its lower threshold (echosam.hysteresis)
    heart_zoom: dict = field(default_factory=dict)        # {} or {"margin", "min", "max"}: echosam.heart_zoom

    def __post_init__(self) -> None:
        if isinstance(self.sam, Mapping):
            self.sam = SamConfig.from_dict(self.sam)
        self.classes = [str(c) for c in self.classes]
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ModelError(f"classes must be a non-empty list of distinct names; got {self.classes}.")
        if self.intensity not in INTENSITIES:
            raise ModelError(f"Unknown intensity convention {self.intensity!r}; choose from {', '.join(INTENSITIES)}.")
        if self.clip_frames < 1 or not 1 <= self.window_stride <= self.clip_frames:
            raise ModelError(f"Need clip_frames >= 1 and 1 <= window_stride <= clip_frames; got "
                             f"{self.clip_frames} and {self.window_stride}.")
        if self.fact_rank < 1:
            raise ModelError(f"fact_rank must be >= 1; got {self.fact_rank}.")
        problem = grow_problem(self.grow_thresholds, 0.5)   # a background pixel's class probability is under 0.5
        problem = problem or zoom_problem(self.heart_zoom)
        if problem:
            raise ModelError(f"Invalid prompt-free config: {problem}.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sam"] = self.sam.to_dict()
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping):
        return config_from_dict(cls, d)


class ProgressiveMaskDecoder(MaskDecoder):
    """SAM's mask decoder with the MA-SAM/MediViSTA "progressive up-sampling" head.

    TwoWayTransformer unchanged; ``num_classes + 1`` mask tokens, all returned (no multimask
    slicing); ``output_upscaling`` = 4x ConvTranspose2d(k2, s2) dim->64->32->16->8 with LN2d+GELU
    after the first three and GELU after the last (x16: token grid -> input size); hyper-MLPs
    dim->dim->dim->8. Sequential indices (0,1,3,4,6,7,9) match the released checkpoints.
    """

    def __init__(self, cfg: SamConfig, num_classes: int) -> None:
        dim = cfg.out_chans
        super().__init__(transformer_dim=dim, num_multimask_outputs=num_classes,
                         transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=dim,
                                                       mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads),
                         iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim)
        layers, c_in = [], dim
        for i, c in enumerate(UPSCALING_CHANNELS):
            layers.append(nn.ConvTranspose2d(c_in, c, kernel_size=2, stride=2))
            layers += [LayerNorm2d(c), nn.GELU()] if i < len(UPSCALING_CHANNELS) - 1 else [nn.GELU()]
            c_in = c
        self.output_upscaling = nn.Sequential(*layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, UPSCALING_CHANNELS[-1], 3) for _ in range(self.num_mask_tokens))

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_embeddings (N, C, h, w)``, ``image_pe (1, C, h, w)``, ``sparse (1, P, C)``,
        ``dense (1|N, C, h, w)`` -> ``(logits (N, K, 16h, 16w), iou (N, K))``, K = classes + 1."""
        n, c, h, w = image_embeddings.shape
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat([tokens, sparse.expand(n, -1, -1)], dim=1)
        hs, src = self.transformer(image_embeddings + dense, image_pe.expand(n, -1, -1, -1), tokens)
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        up = self.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        with full_precision(up.device.type):    # the logits decide the labels: fp32 under bf16 autocast
            masks = (hyper.float() @ up.float().flatten(2)).view(n, self.num_mask_tokens, up.shape[-2], up.shape[-1])
        return masks, self.iou_prediction_head(hs[:, 0])


def normalise_intensity(x: torch.Tensor, convention: str) -> torch.Tensor:
    """``x (N, S, S)`` grey 0..255 -> the model's input range (see `PromptFreeConfig`)."""
    if convention == "unit":
        return x / 255.0
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    den = hi - lo if convention == "minmax" else hi
    return torch.where(den > 0, (x - lo) / den.clamp_min(1e-12), torch.zeros_like(x))


class PromptFreeSAM(nn.Module):
    """Base of the prompt-free families. Subclasses add their adapters in ``__init__`` and
    implement ``_blocks(x (N, h, w, C), frames, clip) -> (N, h, w, C)``; they list their new
    encoder modules in ``new_encoder_modules()`` (trainable with the prompt encoder and decoder).
    The model is returned with the paper's trainable split already applied."""

    def __init__(self, config: PromptFreeConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config.sam
        self.image_encoder = build_image_encoder(cfg)
        self.prompt_encoder = build_prompt_encoder(cfg)
        self.mask_decoder = ProgressiveMaskDecoder(cfg, config.num_classes)
        self.image_encoder.fact = FacTShared(cfg.embed_dim, config.fact_rank)
        for blk in self.image_encoder.blocks:
            blk.attn.fact = FacTCores(config.fact_rank, config.fact_dropout)

    # ---- structure --------------------------------------------------------------------------
    def new_encoder_modules(self) -> list[nn.Module]:
        return [self.image_encoder.fact] + [blk.attn.fact for blk in self.image_encoder.blocks]

    def set_paper_trainable(self) -> int:
        """Freeze every SAM image-encoder weight; train the new encoder modules, the whole prompt
        encoder and the mask decoder (MA-SAM ``Fact_tt_Sam``; MediViSTA v2 figure legend).
        Returns the number of trainable parameter elements."""
        for p in self.parameters():
            p.requires_grad_(False)
        for m in [self.prompt_encoder, self.mask_decoder, *self.new_encoder_modules()]:
            for p in m.parameters():
                p.requires_grad_(True)
        return count_parameters(self, trainable_only=True)

    @property
    def device(self) -> torch.device:
        return self.mask_decoder.iou_token.weight.device

    # ---- encoder pieces ---------------------------------------------------------------------
    def _attend(self, blk: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """A SAM block's (windowed or global) attention with FacT on ``h (N, h, w, C)``."""
        size = h.shape[1:3]
        if blk.window_size > 0:
            h, pad_hw = window_partition(h, blk.window_size)
        h = fact_attention(blk.attn, h, blk.attn.fact, self.image_encoder.fact, self.config.fact_scale)
        if blk.window_size > 0:
            h = window_unpartition(h, blk.window_size, pad_hw, tuple(size))
        return h

    def _blocks(self, x: torch.Tensor, frames: int, clip: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, images: torch.Tensor, frames: int) -> torch.Tensor:
        """``images (B*T, 3, S, S)`` (clips contiguous) -> image embeddings ``(B*T, C, S/16, S/16)``."""
        enc = self.image_encoder
        x = enc.patch_embed(images)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        x = self._blocks(x, frames, images)
        return enc.neck(x.permute(0, 3, 1, 2))

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` -> logits ``(N, K, S, S)``; the prompt encoder is called without prompts."""
        sparse, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        logits, _ = self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return logits

    # ---- public API -------------------------------------------------------------------------
    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``clip (B, T, 3, S, S)`` prepared frames -> logits ``(B, T, C+1, S, S)``."""
        s = self.config.sam.img_size
        if clip.ndim != 5 or clip.shape[2] != 3 or tuple(clip.shape[-2:]) != (s, s):
            raise ModelError(f"Expected a clip (B, T, 3, {s}, {s}); got {tuple(clip.shape)}. "
                             "Use prepare_frames() to resize and normalise frames first.")
        b, t = clip.shape[:2]
        logits = self.decode(self.encode(clip.reshape(b * t, 3, s, s), t))
        return logits.view(b, t, *logits.shape[1:])

    def prepare_frames(self, frames) -> torch.Tensor:
        """``frames (N, H, W)`` grey 0..255 (array or tensor) -> ``(N, 3, S, S)`` float32 on the
        model's device: bilinear antialiased resize to S, then ``config.intensity``."""
        x = torch.as_tensor(frames).to(self.device, torch.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[0] == 0:
            raise CineError(f"Frames must be a non-empty (N, H, W) grey stack; got shape {tuple(x.shape)}.")
        if not torch.isfinite(x).all():
            raise CineError("Frames contain NaN or infinite values; clean the cine before segmenting.")
        s = self.config.sam.img_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x[:, None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)[:, 0]
        return normalise_intensity(x, self.config.intensity)[:, None].expand(-1, 3, -1, -1).contiguous()

    def segment_video(self, images: torch.Tensor, progress=None, cancel=None, window_batch: Optional[int] = None
                      ) -> torch.Tensor:
        """``images (T, 3, S, S)`` prepared frames, any T >= 1 -> probabilities ``(T, C+1, S, S)``
        (CPU float32): windows of ``config.clip_frames`` every ``config.window_stride`` frames,
        ``window_batch`` windows per forward (default 4 on a GPU, 1 on the CPU: larger batches
        feed a GPU better and still bound its memory), in eval mode, softmax averaged over overlaps
        (see `windows`)."""
        if window_batch is None:
            window_batch = 4 if self.device.type == "cuda" else 1
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return sliding_window_probs(self, images, self.config.clip_frames, self.config.window_stride,
                                            self.config.window_pad_ends, progress, cancel, device=self.device,
                                            batch=window_batch)
        finally:
            self.train(was_training)


def sam_initialised_state(model: nn.Module, sam_state: Mapping[str, torch.Tensor]) -> tuple[dict, set]:
    """Our full state dict initialised from an official SAM state dict.

    SAM keys are copied (``pos_embed`` / global ``rel_pos`` resized to the model's input size);
    any other same-name, same-shape tensor is copied too - as MA-SAM's ``build_sam`` does through
    its failed strict load (e.g. hyper-MLP layers 0-1 of tokens 0-3; mask tokens and the IoU head
    when there are 3 classes). Changed-shape heads and new modules keep their fresh init.
    Returns ``(state, copied_keys)``.
    """
    if "image_encoder.patch_embed.proj.weight" not in sam_state:
        raise CheckpointError("Not a SAM checkpoint: 'image_encoder.patch_embed.proj.weight' is missing. "
                              "Give the official sam_vit_b/sam_vit_h .pth (or an adapter file plus base_sam).")
    fresh = model.state_dict()
    fitted = fit_state_dict_to_model({k: v for k, v in sam_state.items() if k in fresh}, model)
    out, copied = dict(fresh), set()
    for k, v in fitted.items():
        if tuple(v.shape) == tuple(fresh[k].shape):
            out[k] = v.to(fresh[k].dtype)
            copied.add(k)
    width = sam_state["image_encoder.patch_embed.proj.weight"].shape[0]
    if width != model.config.sam.embed_dim:
        raise CheckpointError(f"The SAM checkpoint has embedding width {width} but the model is "
                              f"{model.config.sam.name} ({model.config.sam.embed_dim}); pick the matching preset.")
    return out, copied


def check_class_count(state: Mapping[str, torch.Tensor], config: PromptFreeConfig, what: str) -> None:
    """Raise a readable error when a checkpoint's decoder has another number of classes."""
    tokens = state.get("mask_decoder.mask_tokens.weight")
    if tokens is not None and tokens.shape[0] != config.num_classes + 1:
        raise CheckpointError(f"The {what} has {tokens.shape[0] - 1} classes but the config has {config.num_classes} "
                              f"({', '.join(config.classes)}); build the config with {tokens.shape[0] - 1} classes.")


@dataclass
class ConversionReport:
    """What a converter did not take from the file: ``dropped`` file keys (no place in our
    model) and ``initialised`` model keys (not in the file; they keep their fresh init)."""

    layout: str
    dropped: list = field(default_factory=list)
    initialised: list = field(default_factory=list)


def assemble_state(model: nn.Module, renamed: Mapping[str, torch.Tensor], what: str,
                   strict: bool) -> tuple[dict, list]:
    """Full state dict for ``model`` from a file already renamed to our key layout (plus, for
    adapter files, the SAM base merged in). ``strict``: every file key must exist in the model
    with a fitting shape (the papers' own files); otherwise (plain SAM) non-fitting keys are
    skipped. Returns ``(state, initialised)``: model keys left at their fresh init."""
    fresh = model.state_dict()
    if strict:
        check_class_count(renamed, model.config, what)
    state, copied = sam_initialised_state(model, renamed)
    if strict:
        unknown = [k for k in renamed if k not in fresh]
        bad = [f"{k}: file {tuple(renamed[k].shape)} vs model {tuple(fresh[k].shape)}"
               for k in renamed if k in fresh and k not in copied]
        if unknown or bad:
            items = unknown + bad
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            raise CheckpointError(f"The {what} does not fit this {model.config.sam.name} model: "
                                  f"{'; '.join(items[:5])}{more}. Check the backbone size and number of classes.")
    return state, sorted(set(fresh) - copied)


__all__ = ["PromptFreeConfig", "ProgressiveMaskDecoder", "PromptFreeSAM", "normalise_intensity",
           "sam_initialised_state", "check_class_count", "assemble_state", "ConversionReport"]
