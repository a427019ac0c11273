"""The compute device the panel's choice stands for: `echosam.device.resolve_device` (the one rule),
limited to the choices the panel offers (torch is imported only when called)."""
from __future__ import annotations

from ..device import resolve_device as _resolve
from ..errors import ModelError
from .display import DEVICES


def resolve_device(choice: str) -> str:
    """One of `display.DEVICES` -> a torch device string; an unavailable choice is a clear `ModelError`."""
    if choice not in DEVICES:
        raise ModelError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICES)}.")
    return _resolve(choice)
