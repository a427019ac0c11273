"""Model-side pieces shared by train, evaluate and the benchmark: build the model a config names,
turn a batch of clips into logits (MemSAM with its frame-0 click, prompt-free families on the whole
clip), turn logits into labels, and score Dice.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from echosam.errors import CheckpointError, ConfigError
from echosam.models.frame_input import clip_neighbour_frames, frame_context
from echosam.models.registry import get_family, preset_config

from .config import deep_merge
from .datasets.clips import IGNORE
from .memory_jitter import memory_zoom_transform
from .neighbour_blend import blended_clip_neighbours, draw_fractions

log = logging.getLogger("training")


def build_model_from_config(mcfg: dict, classes: Optional[list] = None):
    """-> (model, family spec, model config). ``classes`` (data.structures) replaces the preset's."""
    spec = get_family(mcfg["family"])
    base = preset_config(spec.name, mcfg.get("preset") or "vit_b").to_dict()
    over = dict(mcfg.get("overrides") or {})
    if classes:
        over["classes"] = list(classes)
    config = spec.config_cls.from_dict(deep_merge(base, over))
    if mcfg.get("init_sam"):
        from echosam.checkpoints import load_official

        model = load_official(mcfg["init_sam"], spec.name, config=config).model
        log.info("initialised from official weights %s", mcfg["init_sam"])
    elif mcfg.get("init_checkpoint"):
        from echosam.checkpoints import load_checkpoint

        loaded = load_checkpoint(mcfg["init_checkpoint"])
        if loaded.family != spec.name:
            raise CheckpointError(f"init_checkpoint is a {loaded.family} model, the config trains {spec.name}.")
        # The checkpoint's own config, with the run's overrides on top (a fine-tune may switch behaviour,
        # e.g. MemSAM's sensory_memory); the weights must still fit the result exactly.
        config = spec.config_cls.from_dict(deep_merge(loaded.config.to_dict(), over))
        model = spec.build(config)
        from echosam.models.sam import describe_mismatch, fit_state_dict_to_model

        # A fine-tune may change the input size (e.g. 128 -> 192 px for a finer mask): the encoder's
        # position tables are resized bilinearly, as SAM's official weights are; every other weight must fit.
        state = fit_state_dict_to_model(loaded.model.state_dict(), model)
        if loaded.config.sam.img_size != config.sam.img_size:
            log.info("input size %d -> %d px: position tables of %s resized", loaded.config.sam.img_size,
                     config.sam.img_size, mcfg["init_checkpoint"])
        problem = describe_mismatch(model, state)
        if problem:
            raise CheckpointError(f"model.overrides change the architecture of init_checkpoint "
                                  f"{mcfg['init_checkpoint']}, so its weights do not fit ({problem}). Fine-tune with "
                                  f"the checkpoint's sizes, or start from a preset without init_checkpoint.")
        model.load_state_dict(state, strict=True)
    else:
        model = spec.build(config)
    trainable = mcfg.get("trainable", "paper")
    set_trainable(model, trainable)
    enter_train_mode(model, trainable)
    return model, spec, config


def module_prefixes(trainable) -> tuple:
    """``model.trainable`` as a list of module names -> their parameter-name prefixes (``"memory."``)."""
    return tuple(str(t).rstrip(".") + "." for t in trainable)


def enter_train_mode(model, trainable) -> None:
    """``model.train()``, except that with ``trainable`` a list of modules the batch norms outside them stay in
    eval mode: a frozen module keeps its running statistics as well as its weights."""
    model.train()
    if isinstance(trainable, (list, tuple)):
        prefixes = module_prefixes(trainable)
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not (name + ".").startswith(prefixes):
                m.eval()


def set_trainable(model, trainable) -> None:
    """``paper``: the family's released split; ``all``: every parameter; a list of parameter-name prefixes
    (e.g. ``[prompt_encoder, mask_decoder]``): those only, the rest frozen (a decoder-only fine-tune leaves the
    encoder's features and the memory exactly as they were)."""
    if isinstance(trainable, (list, tuple)):
        prefixes = module_prefixes(trainable)
        names = [n for n, _ in model.named_parameters()]
        unknown = [t for t, pre in zip(trainable, prefixes) if not any(n.startswith(pre) for n in names)]
        if unknown or not prefixes:
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"model.trainable names no parameters of this model: {unknown or trainable}. "
                              f"Use 'paper', 'all' or a list of its modules, e.g. {tops}.")
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(prefixes))
    elif trainable == "paper":
        model.set_paper_trainable()
    elif trainable == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        raise ConfigError(f"model.trainable must be 'paper', 'all' or a list of module names, got {trainable!r}")


def prepare_images(core, frames: torch.Tensor, device, blend: Optional[dict] = None) -> torch.Tensor:
    """(B, T, H, W) 0..255 -> (B, T, 3, S, S) through the model's own ``prepare_frames`` (each frame with its
    neighbours within the clip for a model that wants them, `echosam.models.frame_input`; ``blend``
    (``data.neighbour_blend``, training only): some clips' neighbours are blends, `training.neighbour_blend`)."""
    b, t = frames.shape[:2]
    context = frame_context(core)
    with torch.no_grad():
        if blend and context > 0:
            stacked = blended_clip_neighbours(frames.to(device), context, draw_fractions(b, blend))
        else:
            stacked = clip_neighbour_frames(frames.to(device), context)
        x = core.prepare_frames(stacked)
    return x.to(device).reshape(b, t, *x.shape[1:])


def forward_batch(model, core, prompted: bool, batch: dict, device) -> torch.Tensor:
    """Logits (B, T, K, S, S) for a batch from `ClipDataset` (K = 1 for MemSAM, C+1 otherwise).
    MemSAM gets its frame-0 prompt: the clip's box and points when the dataset made them (prompted
    clips; one prompt layout per batch, so train prompted models with batch_size 1 and grad_accum),
    else one positive click (models.md §1.2; an empty frame-0 mask gives a padding point, label -1)."""
    images = prepare_images(core, batch["frames"], device, batch.get("neighbour_blend") if core.training else None)
    if not prompted:
        return model(images)
    if "box" in batch and batch["box"].ndim == 3:
        return decode_every_frame(core, images, batch, device)
    # ``memory_zoom`` (training only): the masks written to memory are resized at random (`training.memory_jitter`)
    jitter = memory_zoom_transform(batch.get("memory_zoom", 0.0)) if core.training else None
    if "box" in batch:
        box, pts, labels = batch_prompts(batch, device)
        if box is None and pts is None:
            pts = torch.full((images.shape[0], 1, 2), -1.0, device=device)
            labels = torch.full((images.shape[0], 1), -1, device=device, dtype=torch.int64)
        if core.training and batch.get("prompt_loss"):
            # no SAM weights at this size: the prompt decoder learns boxes/clicks from a direct loss on the
            # frame-0 prompt decoding, prepended as an extra supervised frame (frame 0's mask); with
            # probability ``key_mask_p`` frame 0's memory comes from the true mask (XMem-style), so the
            # propagation learns from a good key frame while the decoder is still learning prompts
            key = None
            if float(batch.get("key_mask_p", 0.0)) > float(torch.rand(())):
                m0 = batch["masks"][:, 0].to(device)
                key = torch.where(m0 == 1, 10.0, -10.0)[:, None].float()
            logits, boot = model(images, pts, labels, box, with_prompt_logits=True, key_mask_logits=key,
                                 memory_mask_transform=jitter)
            batch["masks"] = torch.cat([batch["masks"][:, :1], batch["masks"]], dim=1)
            batch["labelled"] = torch.cat([batch["labelled"][:, :1], batch["labelled"]], dim=1)
            return torch.cat([boot[:, None], logits], dim=1)
        return model(images, pts, labels, box, memory_mask_transform=jitter)
    pts = batch["point"].to(device, torch.float32)[:, None, :]
    labels = torch.where(pts[:, :, 0] >= 0, 1.0, -1.0).to(device)
    return model(images, pts, labels, memory_mask_transform=jitter)


def decode_every_frame(core, images: torch.Tensor, batch: dict, device) -> torch.Tensor:
    """Prompt pre-training (``data.prompt.every_frame``): every frame decoded from its own prompt,
    no memory -> logits (B, T, 1, S, S). Trains the encoder and the prompt decoding as SAM's own
    training does; the memory stage starts from these weights."""
    b, t = images.shape[:2]
    feats = core.encode(images.flatten(0, 1))
    # a clip without the structure has no prompt (box -1, no points), and no frame of it is supervised
    box, pts, labels = batch_prompts(batch, device, flatten=True)
    logits = core.decode_prompt(feats, points=pts, point_labels=labels, box=box)
    return logits.view(b, t, *logits.shape[1:])


def batch_prompts(batch: dict, device, flatten: bool = False) -> tuple:
    """The batch's box (N, 4) and points (N, P, 2) with labels (N, P) as tensors on ``device``: a box
    with a negative corner and zero points become None. ``flatten``: per-frame prompts (B, T, ...) ->
    one prompt per frame (B*T, ...)."""
    box = batch["box"].to(device, torch.float32)
    pts = batch["points"].to(device, torch.float32)
    labels = batch["point_labels"].to(device)
    if flatten:
        box, pts, labels = box.flatten(0, 1), pts.flatten(0, 1), labels.flatten(0, 1)
    box = box if bool((box[:, 0] >= 0).all()) else None
    if pts.shape[1] == 0:
        pts = labels = None
    return box, pts, labels


def logits_to_labels(logits: torch.Tensor, prompted: bool, threshold: float = 0.5) -> torch.Tensor:
    """(..., K, H, W) logits -> (..., H, W) class indices: sigmoid > threshold (MemSAM; the paper
    evaluates with 0.6) or argmax over C+1 channels."""
    if prompted:
        return (torch.sigmoid(logits[..., 0, :, :].float()) > threshold).long()
    return logits.argmax(dim=-3)


def dice_counts(pred: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor, n_classes: int) -> np.ndarray:
    """Per-class (sum of per-frame Dice, number of frames) over labelled frames -> (n_classes, 2).
    A frame where a class is absent from both prediction and truth scores 1."""
    out = np.zeros((n_classes, 2))
    sel = labelled.bool()
    p, m = pred[sel], masks[sel]
    for f in range(p.shape[0]):
        valid = m[f] != IGNORE
        for c in range(1, n_classes + 1):
            a, b = (p[f] == c) & valid, (m[f] == c) & valid
            denom = int(a.sum() + b.sum())
            out[c - 1] += (1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom, 1)
    return out
