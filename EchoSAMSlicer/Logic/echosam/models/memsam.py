"""MemSAM (Deng et al., "MemSAM: Taming Segment Anything Model for Echocardiography Video
Segmentation", CVPR 2024): prompted propagation through an echo cine.

A SAMUS-style ViT (`memsam_encoder`) embeds each frame once at S x S (256) into ``(256, S/8, S/8)``;
an XMem-style memory (`memory`) reads past frames' keys/values and produces a *memory embedding*
that the frozen SAM mask decoder takes as its dense prompt. MemSAM is a binary propagator: the same
weights segment any structure given that structure's prompt (``classes`` lists what it was trained on).

Where the paper and the released code (dengxl0520/MemSAM @ 36f1b98) disagree, and what we do:

1. **Mask fed to memory** (value encoder's mask channel and the reinforcement module): the paper's eq. 4 uses the
   probability map P; the released code feeds raw decoder *logits* (our default); ``reinforce_input="probs"``: paper.
2. **Pixel intensities**: the released code feeds unnormalised 0..255 RGB to both the ViT and the ResNet value encoder
   (pixel_mean/std unused). Default ``intensity="raw255"``; ``"unit"`` (x/255) and ``"imagenet"`` (SAM mean/std) are
   options for models trained that way.
3. **Threshold**: the released evaluation binarises ``sigmoid > 0.6``; ours is 0.5 (the sigmoid midpoint, symmetric
   with +-10 logits for user masks; 0.6 gives the released metrics). The session applies it to the model's logits.
4. **Frame 0 is predicted twice** in the released loop: once from the point prompt (only to write a bootstrap value to
   memory, never output) and again from memory (the output). After frame 0 the bootstrap value is replaced by the
   value of the memory-based frame-0 prediction. `forward` reproduces this exactly. (The session's key frames instead
   keep the prompted value permanently.)
5. **Deep update** (value encoder's hidden reinforcement): the released code draws it with probability 0.2 at training
   *and* test time, so its test results are random. We draw it with ``deep_update_prob`` only in training; in eval it
   is deterministic, ``deep_update_at_eval=True`` (XMem's inference rule: deep update on every memory write, here
   every frame). The bootstrap value (the prompt decoder's logits written to memory to predict the key frame) always
   deep-updates, as released, whatever ``deep_update_at_eval`` says: in `forward` and in the session's prompted key
   frames (`echosam.session.propagation`).
6. **Memory size**: the released working memory is never pruned (at most 9 frames for T=10 clips). Long cines need a
   bound: ``memory_cap=16`` working frames beyond the permanent key frames keeps the readout close to what the model
   saw in training (softmax over <= ~10 frames) and cost flat, while prompted / corrected frames are never dropped.
7. **Batch**: released code supports batch size 1; `forward` and every verb here accept B >= 1.
8. **Sensory memory** (ours, off the paper): the hidden state the memory decoder carries from frame to frame (XMem's
   sensory memory, paper eq. 5) made our small models' LV trail the image by about three frames (zeroing it at
   inference cut the lag to under one frame). ``sensory_memory=False`` feeds the decoder a zero hidden state on every
   frame, so each frame is segmented from its own image and memory readout only (trained so; default True: released).
9. **Neighbour channels** (ours, off the paper): MemSAM sees one frame at a time (grey replicated to RGB), so it
   cannot use what tells blood from tissue in a cine: tissue speckle moves with the wall, blood speckle is redrawn
   every frame. Our small models drew every frame's cavity near the loop's mean size (end-diastole too small,
   end-systole too large, even propagating from the true frame-0 mask), while the two prompt-free families, which see
   the clip's frames together, did not. ``neighbour_channels=True`` feeds frames t-1, t, t+1 as R, G, B
   (`frame_input.neighbour_frames`; the loop's first and last frames repeat themselves). A grey-trained model starts
   close to where it was (its three input channels saw the same image); it must be fine-tuned that way. Default off.

Trainable split (`set_paper_trainable`, released ``MemSAM.__init__``): cnn_embed, post_pos_embed,
every ``*Adapter*``, the global blocks' rel_pos, the whole memory module; all else frozen.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, PromptError
from ..companion import spec_problem as companion_problem
from ..hysteresis import grow_problem
from ..structures import BOX_HELPER_RULES, STRUCTURES
from .fast import full_precision
from .features import FrameTensors
from .memory import MemoryBank, MemoryModule, readout
from .memsam_convert import convert_official
from .memsam_encoder import PATCH_STRIDE, MemSAMImageEncoder
from .registry import FamilySpec, register_family
from .sam import SamConfig, build_mask_decoder, build_prompt_encoder, config_from_dict

INTENSITIES = ("raw255", "unit", "imagenet")
REINFORCE_INPUTS = ("logits", "probs")
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class MemSAMConfig:
    """Sizes and conventions of a MemSAM model (JSON-able via `to_dict`)."""

    sam: SamConfig = field(default_factory=lambda: SamConfig.vit_b(img_size=256))
    key_dim: int = 64
    value_dim: int = 256
    hidden_dim: int = 64
    decoder_mid_dim: int = 512         # memory decoder fusion width (released 512)
    reinforce_dim: int = 128           # reinforcement module's middle width (released 128)
    cnn_dims: tuple = (64, 128, 256)   # CNN-branch widths before the last stage (released)
    adapter_ratio: float = 0.25        # adapter bottleneck = ratio * embed_dim (released 768 -> 192)
    value_trunk: str = "resnet18"      # "resnet18" (released; random init here) | "tiny"
    reinforce: bool = True
    reinforce_input: str = "logits"    # "logits" (released) | "probs" (paper eq. 4)
    intensity: str = "raw255"          # "raw255" (released) | "unit" | "imagenet"
    deep_update_prob: float = 0.2      # training only
    deep_update_at_eval: bool = True
    threshold: float = 0.5             # on sigmoid(logits); released evaluation used 0.6
    classes: list = field(default_factory=lambda: ["lv"])
    memory_cap: Optional[int] = 16     # working-memory frames beyond the permanent key frames
    sensory_memory: bool = True        # False: the memory decoder sees a zero hidden state on every frame
    neighbour_channels: bool = False   # True: frames t-1, t, t+1 as R, G, B (see module note 9)
    prompt_zoom: Optional[float] = None  # trained on crops around its prompts with this margin (echosam.zoom)
    box_helpers: str = "centre"        # the points a box implies, as trained (echosam.structures.box_helper_points)
    # structure -> reads of a prompted key frame from memory (a thin ring sharpens), -> its lower mask threshold
    key_frame_reads: dict = field(default_factory=dict)
    grow_thresholds: dict = field(default_factory=dict)
    substep_fps: Optional[float] = None  # look like this frame rate: in-between frames below it (session.in_between)
    companion: Optional[dict] = None   # {"model", "weight"}: a prompt-free model averaged in (echosam.companion)

    def __post_init__(self) -> None:
        self.sam = SamConfig.from_dict(self.sam) if isinstance(self.sam, dict) else self.sam
        self.cnn_dims = tuple(int(d) for d in self.cnn_dims)
        self.classes = list(self.classes)
        reads = self.key_frame_reads if isinstance(self.key_frame_reads, dict) else {}
        unknown_reads = sorted(set(reads) - set(STRUCTURES))
        bad = [m for m in (grow_problem(self.grow_thresholds, self.threshold), companion_problem(self.companion)) if m]
        checks = [
            (self.intensity in INTENSITIES, f"intensity {self.intensity!r} is not one of {INTENSITIES}"),
            (self.reinforce_input in REINFORCE_INPUTS, f"reinforce_input {self.reinforce_input!r} is not one of {REINFORCE_INPUTS}"),
            (self.value_trunk in ("resnet18", "tiny"), f"value_trunk {self.value_trunk!r} is not 'resnet18' or 'tiny'"),
            (len(self.cnn_dims) == 3, f"cnn_dims needs 3 widths, got {self.cnn_dims}"),
            (self.sam.img_size % 16 == 0, f"img_size {self.sam.img_size} must be a multiple of 16"),
            (0.0 <= self.deep_update_prob <= 1.0, f"deep_update_prob {self.deep_update_prob} is not in [0, 1]"),
            (0.0 < self.threshold < 1.0, f"threshold {self.threshold} is not in (0, 1)"),
            (self.memory_cap is None or int(self.memory_cap) >= 0, f"memory_cap {self.memory_cap} is negative"),
            (self.prompt_zoom is None or (isinstance(self.prompt_zoom, (int, float)) and 0 <= self.prompt_zoom <= 2),
             f"prompt_zoom {self.prompt_zoom!r} is not a margin in [0, 2] (or null)"),
            (self.box_helpers in BOX_HELPER_RULES, f"box_helpers {self.box_helpers!r} is not one of {BOX_HELPER_RULES}"),
            (min(self.key_dim, self.value_dim, self.hidden_dim, self.decoder_mid_dim, self.reinforce_dim) > 0,
             "key/value/hidden/decoder/reinforce widths must be positive"),
            (len(self.classes) >= 1, "classes must name at least one structure"),
            (isinstance(self.key_frame_reads, dict)
             and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in reads.values()),
             f"key_frame_reads {self.key_frame_reads!r} is not a mapping of structure -> reads (an integer >= 1)"),
            (self.substep_fps is None or (type(self.substep_fps) in (int, float) and self.substep_fps > 0),
             f"substep_fps {self.substep_fps!r} is not a positive frame rate (or null)"),
            (not bad, "; ".join(bad)),
            (not unknown_reads, f"key_frame_reads names {unknown_reads}, which are not structures ({', '.join(STRUCTURES)})"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ModelError(f"Invalid MemSAM config: {msg}.")

    @property
    def tokens(self) -> int:
        """Side t of the image embedding / memory grid (S/8: 32 at S=256)."""
        return self.sam.img_size // PATCH_STRIDE

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sam"] = self.sam.to_dict()
        d["cnn_dims"] = list(self.cnn_dims)
        return d

    @classmethod
    def from_dict(cls, d) -> "MemSAMConfig":
        return config_from_dict(cls, d)

    @classmethod
    def vit_b(cls) -> "MemSAMConfig":
        """The released configuration: SAM ViT-B at 256, key 64 / value 256 / hidden 64, ResNet-18 values."""
        return cls()

    @classmethod
    def tiny(cls, img_size: int = 64) -> "MemSAMConfig":
        """~1 MB model with every code path of the real one (tests, bundled demo weights)."""
        return cls(sam=SamConfig.tiny(img_size=img_size), key_dim=8, value_dim=16, hidden_dim=8, decoder_mid_dim=32,
                   reinforce_dim=16, cnn_dims=(8, 16, 16), value_trunk="tiny")


@dataclass
class FrameFeatures(FrameTensors):
    """Per-frame encodings: embedding (N,C,t,t), key (N,Ck,t,t), shrinkage (N,1,t,t), selection (N,Ck,t,t)."""

    embedding: torch.Tensor
    key: torch.Tensor
    shrinkage: torch.Tensor
    selection: torch.Tensor


class MemSAM(nn.Module):
    """MemSAM with the verbs of docs/engine_api.md (a `protocols.PromptedVideoModel`). Images are
    ``(N, 3, S, S)`` after `prepare_frames`."""

    key_frame_from_memory = True     # released loop: a prompted key frame is predicted again from memory
    feature_type = FrameFeatures

    def __init__(self, config: MemSAMConfig) -> None:
        super().__init__()
        self.config = config
        sam = config.sam
        self.image_encoder = MemSAMImageEncoder(sam, config.cnn_dims, config.adapter_ratio)
        self.tokens = self.image_encoder.tokens
        self.prompt_encoder = build_prompt_encoder(sam, embedding_side=self.tokens)
        self.mask_decoder = build_mask_decoder(sam, num_multimask_outputs=3)
        self.memory = MemoryModule(sam.out_chans, config.key_dim, config.value_dim, config.hidden_dim,
                                   config.value_trunk, config.decoder_mid_dim, config.reinforce, config.reinforce_dim)
        # The key encoder IS the image encoder: an alias attribute, not a second registered copy.
        object.__setattr__(self.memory, "key_encoder", self.image_encoder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def key_frame_reads(self, structure: str) -> int:
        """Times a prompted key frame of ``structure`` is predicted again from memory (config.key_frame_reads)."""
        return self.config.key_frame_reads.get(structure, 1)

    @property
    def img_size(self) -> int:
        return self.config.sam.img_size

    @property
    def frame_context(self) -> int:
        """Frames on each side that `prepare_frames` wants with each frame (`frame_input`)."""
        return 1 if self.config.neighbour_channels else 0

    # ---- input ---------------------------------------------------------------------------------
    def prepare_frames(self, frames, device=None) -> torch.Tensor:
        """``(N, H, W)`` (or ``(N, 1|3, H, W)``) grey 0..255 -> ``(N, 3, S, S)`` float32: bilinear (antialiased)
        resize, grey replicated to RGB (MemSAM preprocessing), then ``config.intensity``. A model with
        ``neighbour_channels`` takes ``(N, 3, H, W)`` from `frame_input.neighbour_frames`."""
        x = torch.as_tensor(frames).to(device=device, dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0 or min(x.shape[-2:]) == 0:
            raise ModelError(f"MemSAM.prepare_frames expects (N, H, W) or (N, 1|3, H, W) frames, got {tuple(x.shape)}.")
        s = self.img_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if self.config.neighbour_channels and x.shape[1] != 3:
            raise ModelError("This MemSAM reads frames t-1, t, t+1 as its three channels (neighbour_channels): give "
                             "(N, 3, H, W) from echosam.models.frame_input.neighbour_frames, not single grey frames.")
        x = x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
        if self.config.intensity == "unit":
            x = x / 255.0
        elif self.config.intensity == "imagenet":
            x = (x - x.new_tensor(_IMAGENET_MEAN)[:, None, None]) / x.new_tensor(_IMAGENET_STD)[:, None, None]
        return x

    def _check_images(self, images: torch.Tensor, what: str) -> None:
        s = self.img_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ModelError(f"{what} expects (N, 3, {s}, {s}) images from prepare_frames, got {tuple(images.shape)}.")

    # ---- encoding --------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, batch_size: Optional[int] = None) -> FrameFeatures:
        """Embed frames ``(N,3,S,S)`` (in chunks of ``batch_size``) -> `FrameFeatures` with N entries."""
        self._check_images(images, "MemSAM.encode")
        out = []
        for chunk in images.split(batch_size or images.shape[0]):
            emb = self.image_encoder(chunk)
            out.append(FrameFeatures(emb, *self.memory.key_proj(emb)))
        return FrameFeatures.cat(out)

    # ---- SAM decoder -----------------------------------------------------------------------------
    def _decode(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Frozen SAM mask decoder, batched one prompt set per image, mask token 0 only
        (``multimask_output=False``); ``sparse`` may have 0 tokens (released patch). -> (B,1,S,S) logits."""
        dec, b = self.mask_decoder, embedding.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse.to(out_tokens.dtype)], dim=1)
        pos = self.prompt_encoder.get_dense_pe().expand(b, -1, -1, -1)
        hs, src = dec.transformer(embedding + dense, pos, tokens)
        c, h, w = embedding.shape[1:]
        up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = dec.output_hypernetworks_mlps[0](hs[:, 1])                      # (B, C')
        with full_precision(up.device.type):    # the logits decide the labels: fp32 under bf16 autocast
            low = (hyper.float().unsqueeze(1) @ up.float().flatten(2)).view(b, 1, *up.shape[-2:])   # (B, 1, 4t, 4t)
            return F.interpolate(low, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)

    def decode_prompt(self, feats: FrameFeatures, points=None, point_labels=None, box=None,
                      mask_logits=None) -> torch.Tensor:
        """SAM prediction from prompts on encoded frame(s): points ``(B,P,2)`` xy in S-pixel coordinates with
        labels ``(B,P)`` (1 include, 0 exclude, -1 padding), box ``(B,4)`` xyxy S-pixels, mask ``(B,1,S,S)`` logits.
        All None = SAM's no-prompt prediction. -> logits ``(B,1,S,S)``."""
        b, dev, s = len(feats), feats.embedding.device, self.img_size
        pts = None
        if (points is None) != (point_labels is None):
            raise PromptError("Give both points and point_labels (1 include / 0 exclude), or neither.")
        if points is not None:
            points = torch.as_tensor(points, dtype=torch.float32, device=dev)
            point_labels = torch.as_tensor(point_labels, device=dev).to(torch.int64)
            if points.ndim != 3 or points.shape[0] != b or points.shape[2] != 2 or points.shape[1] == 0 \
                    or tuple(point_labels.shape) != tuple(points.shape[:2]):
                raise PromptError(f"points must be ({b}, P, 2) with labels ({b}, P), P >= 1; got {tuple(points.shape)} "
                                  f"and {tuple(point_labels.shape)}.")
            # -1 is SAM's padding (a batch whose samples have different numbers of points): not a point
            if not bool(((point_labels == 0) | (point_labels == 1) | (point_labels == -1)).all()):
                raise PromptError("point labels must be 1 (include), 0 (exclude) or -1 (padding).")
            pts = (points, point_labels)
        if box is not None:
            box = torch.as_tensor(box, dtype=torch.float32, device=dev).reshape(-1, 4)
            if box.shape[0] != b or not bool((box[:, 2:] > box[:, :2]).all()):
                raise PromptError(f"box must be ({b}, 4) as x0, y0, x1, y1 with x1 > x0 and y1 > y0; got {box.tolist()}.")
        masks = None
        if mask_logits is not None:
            mask_logits = torch.as_tensor(mask_logits, dtype=torch.float32, device=dev)
            if tuple(mask_logits.shape) != (b, 1, s, s):
                raise PromptError(f"mask_logits must be ({b}, 1, {s}, {s}); got {tuple(mask_logits.shape)}.")
            masks = F.interpolate(mask_logits, size=self.prompt_encoder.mask_input_size, mode="bilinear",
                                  align_corners=False)
        sparse, dense = self.prompt_encoder(points=pts, boxes=box, masks=masks)
        if sparse.shape[0] != b:
            sparse, dense = sparse.expand(b, -1, -1), dense.expand(b, -1, -1, -1)
        return self._decode(feats.embedding, sparse, dense)

    # ---- memory ------------------------------------------------------------------------------------
    def init_hidden(self, n: int = 1) -> torch.Tensor:
        """Zero sensory memory ``(n, hidden_dim, t, t)``."""
        p = next(self.parameters())
        return p.new_zeros(n, self.config.hidden_dim, self.tokens, self.tokens)

    def encode_value(self, image: torch.Tensor, feats: FrameFeatures, mask_logits: torch.Tensor,
                     hidden: torch.Tensor, deep_update: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory value of a frame and its mask: image ``(B,3,S,S)``, mask logits ``(B,1,S,S)`` (a user mask:
        +-10 logits) -> value ``(B,Cv,t,t)``, hidden ``(B,Ch,t,t)``. ``deep_update=None``: random with
        ``deep_update_prob`` in training, ``deep_update_at_eval`` in eval. Store with
        ``bank.add(feats.key, feats.shrinkage, value, permanent=...)``."""
        self._check_images(image, "MemSAM.encode_value")
        b, s = image.shape[0], self.img_size
        if tuple(mask_logits.shape) != (b, 1, s, s) or len(feats) != b:
            raise PromptError(f"encode_value needs mask_logits ({b}, 1, {s}, {s}) and {b} encoded frame(s); got "
                              f"{tuple(mask_logits.shape)} and {len(feats)}.")
        if deep_update is None:
            deep_update = bool(torch.rand(()) < self.config.deep_update_prob) if self.training \
                else self.config.deep_update_at_eval
        mask = torch.sigmoid(mask_logits) if self.config.reinforce_input == "probs" else mask_logits
        feat = feats.embedding
        if self.memory.memory_reinforce is not None:
            feat = self.memory.memory_reinforce(feat, mask)
        return self.memory.value_encoder(image, feat, hidden, mask, deep_update)

    def segment_from_memory(self, feats: FrameFeatures, bank: MemoryBank,
                            hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout -> memory decoder -> memory embedding as the DENSE prompt of the frozen decoder (no sparse
        tokens) -> logits ``(B,1,S,S)``; returns the updated hidden ``(B,Ch,t,t)``."""
        mk, ms, mv = bank.tensors()
        b = len(feats)
        if mk.shape[0] != b or tuple(mk.shape[1:2]) != (self.config.key_dim,) or hidden.shape[0] != b:
            raise ModelError(f"memory holds batch {mk.shape[0]} with {mk.shape[1]}-channel keys and hidden batch "
                             f"{hidden.shape[0]}; the query has batch {b} and this model uses {self.config.key_dim}-channel keys.")
        r = readout(mk, ms, mv, feats.key, feats.selection)
        if not self.config.sensory_memory:
            hidden = torch.zeros_like(hidden)
        m, hidden = self.memory.decoder(feats.embedding, hidden, r)
        sparse = m.new_zeros(b, 0, m.shape[1])
        return self._decode(feats.embedding, sparse, m), hidden

    # ---- the paper's per-video loop ------------------------------------------------------------------
    def forward(self, images: torch.Tensor, points=None, point_labels=None, box=None,
                with_prompt_logits: bool = False, key_mask_logits: Optional[torch.Tensor] = None,
                memory_mask_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        """Released training/test loop: images ``(B,T,3,S,S)``, frame-0 points ``(B,P,2)`` + labels ``(B,P)``
        and/or a frame-0 box ``(B,4)`` xyxy (all None = SAM's no-prompt bootstrap) -> logits ``(B,T,1,S,S)``,
        every frame predicted from memory. The released loop takes points only; the box is the same
        SAM prompt path the Session uses for a box. ``with_prompt_logits``: also return the frame-0
        prompt decoding ``(B,1,S,S)`` (training without SAM weights supervises it directly).
        ``key_mask_logits`` ``(B,1,S,S)``: encode frame 0's memory from this mask instead of the prompt
        decoding, as the Session does for a mask key frame (XMem-style training from the true mask).
        ``memory_mask_transform``: applied to each propagated frame's logits before they are written to
        memory (training perturbations, e.g. `training.memory_jitter`); the outputs are not changed."""
        if images.ndim != 5:
            raise ModelError(f"MemSAM.forward expects (B, T, 3, S, S) clips, got {tuple(images.shape)}.")
        b, t = images.shape[:2]
        feats_all = self.encode(images.flatten(0, 1))
        per_frame = feats_all.map(lambda x: x.view(b, t, *x.shape[1:]))

        def frame(i: int) -> FrameFeatures:
            return per_frame.map(lambda x: x[:, i])

        f0 = frame(0)
        hidden = self.init_hidden(b)
        boot = self.decode_prompt(f0, points, point_labels, box)
        key = boot if key_mask_logits is None else key_mask_logits.to(boot.dtype)
        value, hidden = self.encode_value(images[:, 0], f0, key, hidden, deep_update=True)
        bank = MemoryBank(self.config.memory_cap)
        bank.add(f0.key, f0.shrinkage, value, permanent=True, frame=0)
        preds = []
        for i in range(t):
            fi = frame(i)
            logits, hidden = self.segment_from_memory(fi, bank, hidden)
            preds.append(logits)
            if i < t - 1:
                to_memory = logits if memory_mask_transform is None else memory_mask_transform(logits)
                value, hidden = self.encode_value(images[:, i], fi, to_memory, hidden)
                if i == 0:
                    bank.clear()   # released: the bootstrap value only serves frame 0's readout
                bank.add(fi.key, fi.shrinkage, value, permanent=(i == 0), frame=i)
        out = torch.stack(preds, dim=1)
        return (out, boot) if with_prompt_logits else out

    # ---- training split ---------------------------------------------------------------------------
    def set_paper_trainable(self) -> int:
        """Released freezing: trainable = cnn_embed, post_pos_embed, every ``*Adapter*``, global blocks'
        rel_pos, whole memory; frozen = the rest of the encoder (patch embed, pos table, SAM blocks, neck),
        prompt encoder, mask decoder. Returns the number of trainable parameters."""
        for p in self.parameters():
            p.requires_grad_(False)
        for name, p in self.image_encoder.named_parameters():
            if name.startswith(("cnn_embed.", "post_pos_embed.")) or "Adapter" in name:
                p.requires_grad_(True)
        for i in self.image_encoder.global_attn_indexes:
            attn = self.image_encoder.blocks[i].attn
            attn.rel_pos_h.requires_grad_(True)
            attn.rel_pos_w.requires_grad_(True)
        for p in self.memory.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


register_family(FamilySpec(
    name="memsam", config_cls=MemSAMConfig, build=MemSAM,
    description="MemSAM (Deng et al., CVPR 2024): SAMUS encoder + XMem-style memory, prompted propagation",
    convert_official=convert_official, presets={"vit_b": MemSAMConfig.vit_b, "tiny": MemSAMConfig.tiny}))
