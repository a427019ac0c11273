"""The one way to build a model: ``build_model(family, config)``.

Each family module registers a `FamilySpec` (its config dataclass, constructor, official-checkpoint
converter). Families are imported lazily so that ``import echosam`` stays light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..errors import ModelError

_FAMILY_MODULES = {"sam": "sam_family", "memsam": "memsam", "medivista": "medivista", "masam": "masam"}


@dataclass
class FamilySpec:
    name: str
    config_cls: type                       # dataclass with to_dict()/from_dict(); has `.sam` (SamConfig)
    build: Callable[[Any], Any]            # config -> nn.Module (random init)
    prompted: bool                         # True: needs prompts (MemSAM); False: prompt-free
    description: str
    # official state dict (already read, 'module.' stripped) + config -> state dict in our key layout
    convert_official: Optional[Callable[[Mapping, Any], dict]] = None
    # config presets by name, e.g. {"vit_b": ..., "tiny": ...}
    presets: dict = field(default_factory=dict)


_REGISTRY: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_family(name: str) -> FamilySpec:
    key = str(name).lower().replace("-", "").replace("_", "")
    aliases = {"memsam": "memsam", "medivista": "medivista", "masam": "masam", "sam": "sam"}
    if key not in aliases:
        raise ModelError(f"Unknown model family {name!r}; choose from {', '.join(_FAMILY_MODULES)}.")
    fam = aliases[key]
    if fam not in _REGISTRY:
        importlib.import_module("." + _FAMILY_MODULES[fam], __package__)
    return _REGISTRY[fam]


def config_from_dict(family: str, d: Mapping) -> Any:
    return get_family(family).config_cls.from_dict(d)


def preset_config(family: str, preset: str) -> Any:
    spec = get_family(family)
    if preset not in spec.presets:
        raise ModelError(f"{spec.name} has no preset {preset!r}; choose from {', '.join(spec.presets)}.")
    return spec.presets[preset]()


def build_model(family: str, config: Any = None, preset: Optional[str] = None):
    """Build a model with random weights: ``build_model("memsam", preset="tiny")``."""
    spec = get_family(family)
    if config is None:
        config = preset_config(family, preset or "vit_b")
    elif isinstance(config, Mapping):
        config = spec.config_cls.from_dict(config)
    return spec.build(config)
