"""Tiny real models (random weights) for session tests, and a counter of a sub-module's forward calls."""
from __future__ import annotations

import dataclasses

import torch

from echosam.checkpoints import LoadedModel
from echosam.models.registry import build_model, preset_config


def tiny_loaded(family: str = "memsam", seed: int = 0, **config) -> LoadedModel:
    """A tiny ``family`` model trained (as far as its config says) on LV, MYO and LA; ``config`` overrides fields."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(preset_config(family, "tiny"), **config)
    cfg.classes = ["lv", "myo", "la"]   # a MemSAM trained to propagate all three structures
    return LoadedModel(build_model(family, cfg).eval(), family, cfg, {}, None, "cpu")


class Counter:
    """Counts forward calls of a real sub-module through a forward hook."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))
