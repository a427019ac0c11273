"""Optimisers, learning-rate schedules and mixed precision per the papers' recipes.

- MemSAM (models.md §1.4): Adam lr 1e-4, betas (0.9, 0.999), no weight decay, constant lr.
- MediViSTA / MA-SAM (§2.4, §3.3): AdamW lr 8e-4, wd 0.1; linear warm-up over 250 iterations
  (``lr * (it + 1) / warmup``), then ``lr * (1 - (it - warmup) / max_iters) ** 7`` (MA-SAM train.py).
Only parameters with ``requires_grad`` are optimised (after ``set_paper_trainable()``).
"""
from __future__ import annotations

import contextlib

import torch
from echosam.errors import ConfigError, ModelError


def build_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError("The model has no trainable parameter (check model.trainable).")
    name = str(cfg.get("name", "adam")).lower()
    kw = dict(lr=float(cfg["lr"]), betas=tuple(cfg.get("betas", (0.9, 0.999))),
              weight_decay=float(cfg.get("weight_decay", 0.0)))
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    raise ConfigError(f"Unknown optimiser {name!r}; use adam or adamw.")


def lr_factor(it: int, cfg: dict, max_iters: int, progress=None) -> float:
    """Multiplier of the base lr at optimizer step ``it`` (0-based). ``progress``: a callable giving the
    fraction of a time budget spent; the decay then follows the clock instead of ``max_iters``."""
    sched = str(cfg.get("schedule", "constant")).lower()
    if sched == "constant":
        return 1.0
    if sched != "warmup_poly":
        raise ConfigError(f"Unknown schedule {sched!r}; use constant or warmup_poly.")
    warm = int(cfg.get("warmup_iters", 250))
    if it < warm:
        return (it + 1) / warm
    done = progress() if progress is not None else (it - warm) / max(1, max_iters)
    return max(0.0, 1.0 - min(1.0, done)) ** float(cfg.get("power", 7.0))


def build_scheduler(opt: torch.optim.Optimizer, cfg: dict, max_iters: int, progress=None):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg, max_iters, progress))


def precision_setup(precision: str, device: torch.device):
    """-> (autocast context factory, GradScaler, precision used). On a CPU, bf16 autocast when asked
    (fast where the CPU has native bf16, e.g. AMX); fp16 on a CPU runs fp32."""
    precision = str(precision).lower()
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision must be fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cpu" and precision == "bf16":
        return (lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)), \
            torch.amp.GradScaler("cuda", enabled=False), "bf16"
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext, torch.amp.GradScaler("cuda", enabled=False), "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), scaler, precision
