"""Training configs: YAML files deep-merged over `DEFAULTS`, plus ``--set key.sub=value`` overrides
(values parsed as YAML: ``--set train.epochs=3 --set data.structures=[lv,myo]``).

A config names everything a run needs, so a run is reproduced from its config alone (the config is
copied next to the outputs and into the exported weights' provenance).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional

import yaml
from echosam.errors import ConfigError

DEFAULTS: dict = {
    "name": "run",
    "model": {
        "family": "memsam",          # memsam | medivista | masam
        "preset": "tiny",            # registry preset (vit_b, tiny, ...)
        "overrides": {},             # deep-merged into the preset's config dict
        "init_sam": None,            # official SAM .pth (e.g. sam_vit_b_01ec64.pth) via checkpoints.load_official
        "init_checkpoint": None,     # own-format .safetensors to fine-tune from
        "trainable": "paper",        # paper: model.set_paper_trainable(); all: every parameter; [prefixes]
    },
    "data": {
        "dataset": "phantom",
        "structures": None,          # default: the model's classes
        "clip_frames": 10,
        "clip_sampling": "ed_es",    # ed_es: MemSAM's ED->ES rule; window: frames in a row anywhere; phases: the
                                     # ED->ES spread over any systole or diastole of the loop (both training only)
        "clip_max_step": 2,          # window: frames 1..clip_max_step apart (drawn per clip)
        "prompt_zoom": None,         # {p, margin, margin_jitter, union_p}: prompted clips cropped around their prompts
        "clip_reverse_p": 0.0,       # training clips played backwards with this probability (key frame last)
        "neighbour_blend": None,     # {p, max_steps}: neighbour channels blended as the engine's in-between frames
        "supervision": "semi",
        "on_bad_sample": "skip",
        "augment": {"gamma": 0.5, "rotate": 0.5, "scale": 0.5, "contrast": 0.5},
        "splits": {"train": "train", "val": "val", "test": "test"},
        "num_workers": 0,
    },
    "train": {
        "epochs": 1,
        "batch_size": 1,
        "grad_accum": 1,
        "precision": "fp32",         # fp32 | bf16 | fp16 (CUDA; on a CPU bf16 autocasts, fp16 runs fp32)
        "device": "auto",            # auto | cpu | cuda
        "seed": 1234,
        "deterministic": True,
        "stop_after_steps": None,    # stop early (the schedule still spans all epochs), e.g. tests or "stop at 300"
        "max_minutes": None,         # wall-clock budget: the lr decays over the time, not the steps; at the end
                                     # the epoch closes early (validation, best/final exported)
        "checkpoint_every_steps": 0, # 0: a resume checkpoint at each epoch end only
        "val_every": 1,              # epochs; 0 disables validation (best = last)
        "max_val_clips": None,
        "threshold": 0.5,            # sigmoid threshold for MemSAM validation Dice
        "grad_clip": None,
        "find_unused_parameters": True,
        "progress": True,
    },
    "optim": {
        "name": "adam",              # adam | adamw
        "lr": 1.0e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "schedule": "constant",      # constant | warmup_poly
        "warmup_iters": 250,
        "power": 7.0,
    },
    "loss": {"name": "memsam"},      # memsam (0.8 softDice + 0.2 BCE pw 2) | dice_ce (0.8 Dice + 0.2 CE)
    "output": {"dir": "runs/{name}"},
}


def deep_merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "splits":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_set(cfg: dict, item: str) -> None:
    """``a.b.c=value`` -> cfg["a"]["b"]["c"] = yaml(value)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = yaml.safe_load(value)


def load_config(path=None, sets: Iterable[str] = ()) -> dict:
    user = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"Config not found: {p}")
        user = yaml.safe_load(p.read_text()) or {}
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: a config must be a YAML mapping")
    cfg = deep_merge(DEFAULTS, user)
    for item in sets:
        apply_set(cfg, item)
    cfg["output"]["dir"] = str(cfg["output"]["dir"]).format(name=cfg["name"])
    return cfg
