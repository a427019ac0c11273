"""Training data: sources (CAMUS, EchoNet-Dynamic, phantom, folder) -> sequences -> clips.

``build_clip_dataset(data_cfg, role, train, size, seed)`` is the one way train/evaluate make a
dataset. ``data_cfg`` is the ``data:`` block of a training config::

    dataset: camus | echonet | phantom | folder | simulated
    root: /data/CAMUS_public/database_nifti     # not for phantom
    structures: [lv]                            # MemSAM binary LV; prompt-free: [lv, myo, la]
    clip_frames: 10                             # ED->ES clip (MemSAM rule); null = whole loop
    supervision: semi                           # semi: ED/ES frames only; full: every labelled frame
    on_bad_sample: skip                         # or stop
    augment: {gamma: 0.5, rotate: 0.5, scale: 0.5, contrast: 0.5}   # or false
    splits: {train: train, val: val, test: test}   # per role: a split name or a dict of overrides

Sources take their own keys (camus: views; echonet: min_tracing_rows; phantom: n_cases, seed,
n_frames, size, ...; folder: label_suffix).
"""
from __future__ import annotations

from typing import Optional

from .camus import CamusSource
from .clips import IGNORE, Clip, ClipDataset, DatasetError, Sequence, memsam_clip_indices
from .echonet import EchoNetSource
from .folder import FolderSource
from .phantom import PhantomSource
from .simulated import FollowedSimulatedSource, SimulatedSource
from .transforms import ClipAugment

__all__ = ["IGNORE", "Clip", "ClipDataset", "DatasetError", "Sequence", "memsam_clip_indices", "CamusSource",
           "EchoNetSource", "FolderSource", "PhantomSource", "SimulatedSource", "FollowedSimulatedSource", "ClipAugment", "build_source", "build_clip_dataset",
           "parse_data_spec", "role_config"]

SOURCE_KEYS = {
    "camus": ("root", "split", "views", "on_bad_sample"),
    "echonet": ("root", "split", "on_bad_sample", "min_tracing_rows"),
    "folder": ("root", "label_suffix", "on_bad_sample", "names", "slices_as_frames"),
    "phantom": ("n_cases", "seed", "n_frames", "size", "fps", "ef_range", "heart_rate_range", "on_bad_sample"),
    "simulated": ("root", "n_cases", "names", "views", "on_bad_sample"),
}
# data.follow: {cases_per_epoch, min_cases, wait_s, refresh_s} trains on cases a generator is still writing
FOLLOW_KEYS = ("cases_per_epoch", "min_cases", "wait_s", "refresh_s")


def role_config(data_cfg: dict, role: str) -> dict:
    """The data config for one role (train/val/test) with ``splits[role]`` applied."""
    cfg = {k: v for k, v in data_cfg.items() if k != "splits"}
    entry = (data_cfg.get("splits") or {}).get(role, role)
    if isinstance(entry, dict):
        cfg.update(entry)
    else:
        cfg["split"] = entry
    return cfg


def build_source(cfg: dict):
    kind = str(cfg.get("dataset", "")).lower()
    if kind not in SOURCE_KEYS:
        raise DatasetError(f"Unknown dataset {cfg.get('dataset')!r}; choose from {', '.join(SOURCE_KEYS)}.")
    kwargs = {k: cfg[k] for k in SOURCE_KEYS[kind] if k in cfg}
    if kind != "phantom" and not cfg.get("root"):
        raise DatasetError(f"data.root is required for the {kind} dataset.")
    if kind == "camus":
        return CamusSource(**kwargs)
    if kind == "echonet":
        return EchoNetSource(**kwargs)
    if kind == "folder":
        return FolderSource(**kwargs)
    if kind == "simulated" and cfg.get("follow"):
        follow = dict(cfg["follow"]) if isinstance(cfg["follow"], dict) else {}
        unknown = set(follow) - set(FOLLOW_KEYS)
        if unknown:
            raise DatasetError(f"data.follow: unknown keys {sorted(unknown)}; use {', '.join(FOLLOW_KEYS)}.")
        return FollowedSimulatedSource(cfg["root"], on_bad_sample=cfg.get("on_bad_sample", "skip"), **follow)
    if kind == "simulated":
        return SimulatedSource(**kwargs)
    kwargs.pop("split", None)
    return PhantomSource(**kwargs)


def build_clip_dataset(data_cfg: dict, role: str = "train", train: Optional[bool] = None, size: Optional[int] = None,
                       seed: int = 0, prompted: bool = False) -> ClipDataset:
    cfg = role_config(data_cfg, role)
    train = (role == "train") if train is None else train
    return ClipDataset(build_source(cfg), classes=cfg.get("structures") or ["lv"],
                       clip_frames=cfg.get("clip_frames", 10), supervision=cfg.get("supervision", "semi"), size=size,
                       transform=ClipAugment.from_config(cfg.get("augment", True)) if train else None, train=train,
                       seed=seed, prompted=prompted and "prompt" in cfg, prompt_mix=cfg.get("prompt"),
                       sampling=cfg.get("clip_sampling", "ed_es"), window_max_step=cfg.get("clip_max_step", 2),
                       prompt_zoom=cfg.get("prompt_zoom"), reverse_p=cfg.get("clip_reverse_p", 0.0))


def parse_data_spec(spec: str) -> dict:
    """``camus:/path``, ``echonet:/path``, ``folder:/path`` or ``phantom:seed=100000,n_cases=16`` -> data config."""
    kind, _, rest = str(spec).partition(":")
    kind = kind.lower()
    if kind not in SOURCE_KEYS:
        raise DatasetError(f"Data spec {spec!r}: start with one of {', '.join(k + ':' for k in SOURCE_KEYS)}")
    if kind != "phantom":
        return {"dataset": kind, "root": rest}
    import yaml

    cfg = {"dataset": "phantom"}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        cfg[k.strip()] = yaml.safe_load(v)
    return cfg
