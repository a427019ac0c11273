"""The compute device the panel's choice stands for (torch is imported only when called)."""
from __future__ import annotations

from ..errors import ModelError
from .display import DEVICES


def resolve_device(choice: str) -> str:
    """"auto" -> "cuda" when PyTorch sees a CUDA GPU, else "mps" on Apple silicon, else "cpu";
    an explicit choice that is not available is a clear `ModelError`."""
    import torch
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if choice not in DEVICES:
        raise ModelError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICES)}.")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelError("No CUDA GPU is available to PyTorch; choose 'cpu' or 'auto'.")
    if choice == "mps" and not has_mps:
        raise ModelError("Apple MPS is not available to PyTorch on this machine; choose 'cpu' or 'auto'.")
    return choice
