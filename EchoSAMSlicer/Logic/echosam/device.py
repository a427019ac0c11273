"""The one rule for choosing a torch device: ``"auto"`` -> CUDA when a GPU is usable, else Apple MPS,
else CPU.

Used by the CLI, the Slicer panel (`echosam.slicer.devices`), `Session`, batch work and training.
torch is imported only when a device is resolved, so importing this module costs nothing (the Slicer
module imports it before PyTorch is installed).
"""
from __future__ import annotations

from .errors import ModelError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _has_mps(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str = "auto") -> str:
    """"auto" (or None / "") -> "cuda" when available, else "mps" on Apple silicon, else "cpu"; "cuda",
    "cuda:N" or "mps" that is not available is a `ModelError` saying what to choose instead. Returns a
    string torch.device accepts."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "mps" if _has_mps(torch) else "cpu"
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICES:
        raise ModelError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)} (cuda:N for one GPU).")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is available to PyTorch; choose cpu (slower) or auto.")
    if dev.type == "mps" and not _has_mps(torch):
        raise ModelError("Apple MPS is not available to PyTorch on this machine; choose cpu or auto.")
    return str(dev)
