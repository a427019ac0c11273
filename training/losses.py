"""Losses of the three papers, restricted to supervised frames and pixels.

Masks carry class indices with ``IGNORE`` (255) on frames (or pixels) without supervision; the
``labelled`` (B, T) flags select the supervised frames (semi-supervision: ED and ES only). Frames
that are not labelled never contribute, whatever their mask holds.

- `memsam_loss` (MemSAM ``Mask_DC_and_BCE_lossV2``, models.md §1.3): ``0.8 (1 - softDice) +
  0.2 BCEWithLogits(pos_weight=2)``; sigmoid; Dice pooled over all supervised frames of the batch
  jointly, smooth 1e-5. Logits (B, T, 1, S, S), target = class index >= 1.
- `dice_ce_loss` (MA-SAM, and our MediViSTA recipe, §2.4/§3.3): ``0.8 Dice + 0.2 CE`` over the
  softmax of (B, T, C+1, S, S) logits; Dice averaged over the C+1 classes including background
  (SAMed/MA-SAM ``DiceLoss``), each class pooled over all supervised pixels.
- ``area_weight`` (ours, both losses): adds the mean absolute relative area error of each structure per
  supervised frame (soft area of the softmax vs the true area). Dice, pooled over the batch, barely
  notices a cavity drawn 10 % too large on the small end-systolic frames; the EF does (an EF is a ratio of
  two such areas' volumes), so this term weighs every frame's area error alike.
- ``dice_per`` (ours, ``memsam``): ``"batch"`` pools the Dice over every supervised frame of the batch (the
  paper); ``"clip"`` takes each clip's own Dice and averages them. A batch mixes structures (one per clip), and a
  pooled Dice is dominated by the large cavities: a myocardium clip's boundary errors weigh little against an LV's.
- ``curve_weight`` (ours, ``memsam``): the clip's area CURVE, scale-free: mean over a clip's supervised frames of
  |log(soft area / the clip's mean soft area) - log(true area / the clip's mean true area)|. Measured on stage 17:
  its LV is 0.95x the truth at ED and 1.04x at ES whatever frame 0's phase, a cycle squeezed toward its mean that
  the per-frame area term did not undo; this term is zero for any uniform scale and only sees the squeeze.
- ``class_weights`` (ours, ``dice_ce``): one weight per class, background first, for the Dice mean and the
  CE. The myocardium, a thin ring, gains least from a loss that counts every class alike: its boundary
  pixels are few against the cavities' interiors; weighting it 2x asks for that band specifically.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from echosam.errors import ConfigError, ModelError

from .datasets.clips import IGNORE
from .memory_jitter import memory_zoom_transform

SMOOTH = 1e-5


def _select(logits: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor):
    """(B,T,C,S,S), (B,T,S,S), (B,T) -> (N,C,S,S) logits, (N,S,S) long targets, (N,S,S) valid."""
    if logits.shape[:2] != masks.shape[:2] or logits.shape[-2:] != masks.shape[-2:]:
        raise ModelError(f"logits {tuple(logits.shape)} and masks {tuple(masks.shape)} do not match")
    sel = labelled.bool()
    lg, mk = logits[sel], masks[sel].long()
    return lg, mk, mk != IGNORE


def memsam_loss(logits: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor,
                dice_weight: float = 0.8, pos_weight: float = 2.0, area_weight: float = 0.0,
                dice_per: str = "batch", curve_weight: float = 0.0) -> torch.Tensor:
    if dice_per not in ("batch", "clip"):
        raise ConfigError(f"loss.dice_per must be 'batch' or 'clip', got {dice_per!r}.")
    lg, mk, valid = _select(logits, masks, labelled)
    if lg.shape[0] == 0 or not valid.any():
        return logits.sum() * 0.0      # keeps the graph (DDP) when a batch has no supervised frame
    x = lg[:, 0].float()[valid]
    y = (mk[valid] >= 1).float()
    bce = F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor(pos_weight, device=x.device))
    areas = clip_areas(logits, masks, labelled) if dice_per == "clip" or curve_weight else None
    if dice_per == "batch":
        p = torch.sigmoid(x)
        dice = (2 * (p * y).sum() + SMOOTH) / (p.sum() + y.sum() + SMOOTH)
    else:
        dice = clip_dice(areas)
    loss = dice_weight * (1 - dice) + (1 - dice_weight) * bce
    if area_weight:
        fg = ((mk >= 1) & valid)[:, None].float()
        loss = loss + area_weight * relative_area_error(torch.sigmoid(lg[:, :1].float()), fg, valid[:, None].float())
    if curve_weight:
        loss = loss + curve_weight * area_curve_error(areas, like=logits)
    return loss


def clip_areas(logits: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor) -> tuple:
    """(B,T,1,S,S) logits, (B,T,S,S) masks, (B,T) flags -> per clip and frame (B, T): soft intersection, soft area
    and true area over the supervised pixels, and which frames have any (computed once for both clip terms)."""
    valid = (masks != IGNORE) & labelled.bool()[:, :, None, None]
    p = torch.sigmoid(logits[:, :, 0].float()) * valid.float()
    y = ((masks >= 1) & valid).float()
    return (p * y).sum((2, 3)), p.sum((2, 3)), y.sum((2, 3)), valid.flatten(2).any(2)


def clip_dice(areas: tuple) -> torch.Tensor:
    """Mean over clips of each clip's soft Dice, pooled over its supervised frames (``areas`` from `clip_areas`)."""
    inter, soft, true, sup = areas
    sup = sup.float()
    dice = (2 * (inter * sup).sum(1) + SMOOTH) / ((soft * sup).sum(1) + (true * sup).sum(1) + SMOOTH)
    return dice[sup.sum(1) > 0].mean()


def area_curve_error(areas: tuple, like: torch.Tensor) -> torch.Tensor:
    """Mean over clips (with two or more supervised frames showing the structure) of the mean absolute difference
    between the log soft-area curve and the log true-area curve, each taken about its own clip mean (``areas``
    from `clip_areas`; ``like``: the logits, for a zero that keeps the graph when no clip qualifies)."""
    _, soft, true, sup = areas
    use = sup & (true > 0)
    keep = use.sum(1) >= 2
    if not keep.any():
        return like.sum() * 0.0
    w = use[keep].float()
    ls, lt = torch.log(soft[keep] + 1.0), torch.log(true[keep].clamp(min=1.0))
    n = w.sum(1, keepdim=True)
    ds = ls - (ls * w).sum(1, keepdim=True) / n
    dt = lt - (lt * w).sum(1, keepdim=True) / n
    return (((ds - dt).abs() * w).sum(1) / n[:, 0]).mean()


def dice_ce_loss(logits: torch.Tensor, masks: torch.Tensor, labelled: torch.Tensor,
                 dice_weight: float = 0.8, area_weight: float = 0.0, class_weights=None) -> torch.Tensor:
    lg, mk, valid = _select(logits, masks, labelled)
    if lg.shape[0] == 0 or not valid.any():
        return logits.sum() * 0.0
    lg = lg.float()
    n_cls = lg.shape[1]
    cw = None
    if class_weights is not None:
        if len(class_weights) != n_cls or min(class_weights) <= 0:
            raise ConfigError(f"loss.class_weights needs {n_cls} positive weights (background first, then each "
                              f"structure in data.structures order), got {list(class_weights)}.")
        cw = torch.tensor([float(w) for w in class_weights], device=lg.device)
    ce = F.cross_entropy(lg, mk.masked_fill(~valid, -100), weight=cw, ignore_index=-100)
    prob = torch.softmax(lg, dim=1)
    onehot = F.one_hot(mk.masked_fill(~valid, 0), n_cls).permute(0, 3, 1, 2).float()
    w = valid[:, None].float()
    inter = (prob * onehot * w).sum(dim=(0, 2, 3))
    denom = (prob * prob * w).sum(dim=(0, 2, 3)) + (onehot * w).sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + SMOOTH) / (denom + SMOOTH)
    dice = dice.mean() if cw is None else (dice * cw).sum() / cw.sum()
    loss = dice_weight * dice + (1 - dice_weight) * ce
    if area_weight:
        loss = loss + area_weight * relative_area_error(prob[:, 1:], onehot[:, 1:], w)
    return loss


def relative_area_error(prob: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(N, K, S, S) foreground probabilities and targets, (N, 1, S, S) pixel weights -> mean over frames
    and structures present of |soft area - true area| / true area."""
    soft = (prob * w).sum(dim=(2, 3))
    true = (target * w).sum(dim=(2, 3))
    present = true > 0
    if not present.any():
        return prob.sum() * 0.0
    return ((soft - true).abs() / true.clamp(min=1.0))[present].mean()


LOSSES = {"memsam": memsam_loss, "dice_ce": dice_ce_loss}


def build_loss(cfg):
    """``loss: {name: memsam | dice_ce, dice_weight: 0.8, pos_weight: 2.0, prompt_loss: false}`` ->
    callable(logits, masks, labelled). ``prompt_loss`` (MemSAM): also supervise the frame-0 prompt decoding;
    ``memory_zoom`` (MemSAM): resize the masks written to memory at random (`memory_jitter`)."""
    cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg or {})
    name = cfg.pop("name", "memsam")
    cfg.pop("prompt_loss", None)          # read by the trainer (an extra supervised frame), not a loss argument
    cfg.pop("key_mask_p", None)           # read by the trainer (true-mask key frames), not a loss argument
    zoom = cfg.pop("memory_zoom", 0.0)   # read by the trainer (memory-mask jitter), checked here at config time
    if memory_zoom_transform(zoom) is not None and name != "memsam":
        raise ConfigError(f"loss.memory_zoom perturbs MemSAM's memory; the {name!r} loss trains a prompt-free "
                          "model, which has none. Remove loss.memory_zoom.")
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}; choose from {', '.join(LOSSES)}.")
    fn = LOSSES[name]
    return lambda logits, masks, labelled: fn(logits, masks, labelled, **cfg)
