"""The one rule for choosing a torch device: ``"auto"`` -> CUDA when a GPU is usable, else CPU.

Used by the CLI, the Slicer module, `Session`, batch work and training. torch is imported only when
a device is resolved, so importing this module costs nothing (the Slicer module imports it before
PyTorch is installed).
"""
from __future__ import annotations

from .errors import ModelError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """"auto" (or None / "") -> "cuda" when available, else "cpu"; "cuda" or "cuda:N" without a GPU
    is a `ModelError` saying what to choose instead. Returns a string torch.device accepts."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(str(device))
    except RuntimeError:
        raise ModelError(f"Unknown device {device!r}; choose auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is available; use --device cpu (slower) or auto.")
    return str(dev)
