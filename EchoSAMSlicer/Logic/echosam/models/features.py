"""Per-frame feature containers: a dataclass of tensors that share a leading frame axis N.

`FrameTensors` gives any such dataclass what the session needs (see `protocols.PromptedVideoModel`):
``len``, ``index(i)`` (keeps the leading axis), ``to(...)``, ``detach()``, ``cls.cat(items)``,
``tensors()`` (field name -> tensor, for saving) and ``cls.from_tensors(d)`` (checked).
"""
from __future__ import annotations

from dataclasses import fields

import torch

from ..errors import ModelError


class FrameTensors:
    """Mixin for ``@dataclass`` classes whose fields are all (N, ...) tensors."""

    def map(self, fn):
        """The same features with ``fn`` applied to every tensor."""
        return type(self)(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])

    def index(self, i):
        """Frame(s) ``i`` (int, slice or index tensor) keeping the leading axis: ``index(3)`` has N=1."""
        if isinstance(i, int):
            if not -len(self) <= i < len(self):
                raise ModelError(f"frame {i} is out of range for {len(self)} encoded frames.")
            i = slice(i, i + 1 if i != -1 else None)
        return self.map(lambda x: x[i])

    def to(self, *args, **kwargs):
        return self.map(lambda x: x.to(*args, **kwargs))

    def detach(self):
        return self.map(lambda x: x.detach())

    def tensors(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_tensors(cls, d: dict):
        if set(d) != set(cls.field_names()):
            raise ModelError(f"{cls.__name__} needs tensors {', '.join(cls.field_names())}; got {', '.join(sorted(d))}.")
        return cls(*(d[n] for n in cls.field_names()))

    @classmethod
    def cat(cls, items):
        items = list(items)
        if not items:
            raise ModelError(f"{cls.__name__}.cat needs at least one item.")
        return cls(*(torch.cat([getattr(f, n) for f in items], 0) for n in cls.field_names()))
