"""The one way to build a model: ``build_model(family, config)``, and the one list of families.

`FAMILIES` names every family, the module that registers it and the kind of model it is
(`protocols.PROMPTED` or `protocols.CLIP`). Nothing else lists families or decides from a name
whether a model takes prompts: ask `is_prompted` (no torch needed) or the loaded model.
Each family module registers a `FamilySpec` (config dataclass, constructor, official-checkpoint
converter, presets) when imported; modules are imported lazily so ``import echosam`` stays light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ..errors import ModelError
from .protocols import CLIP, PROMPTED, PROTOCOLS

#: family -> (module in echosam.models, kind)
FAMILIES: dict = {"memsam": ("memsam", PROMPTED), "medivista": ("medivista", CLIP),
                  "masam": ("masam", CLIP), "sam": ("sam_family", PROMPTED)}
FAMILY_NAMES = tuple(FAMILIES)


@dataclass
class FamilySpec:
    name: str
    config_cls: type                       # dataclass with to_dict()/from_dict(); has `.sam` (SamConfig)
    build: Callable[[Any], Any]            # config -> nn.Module (random init)
    description: str
    # official state dict (already read, 'module.' stripped) + config -> state dict in our key layout
    convert_official: Optional[Callable[[Mapping, Any], dict]] = None
    # config presets by name, e.g. {"vit_b": ..., "tiny": ...}
    presets: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return FAMILIES[self.name][1]

    @property
    def prompted(self) -> bool:
        return self.kind == PROMPTED

    @property
    def protocol(self) -> type:
        return PROTOCOLS[self.kind]


_REGISTRY: dict[str, FamilySpec] = {}


def family_name(name: str) -> str:
    """The canonical family name (case, ``-`` and ``_`` ignored: "MA-SAM" -> "masam")."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in FAMILIES:
        raise ModelError(f"Unknown model family {name!r}; choose from {', '.join(FAMILIES)}.")
    return key


def family_kind(name: str) -> str:
    return FAMILIES[family_name(name)][1]


def is_prompted(name: str) -> bool:
    """Whether ``name``'s models take prompts (no model is built, torch is not imported)."""
    return family_kind(name) == PROMPTED


def register_family(spec: FamilySpec) -> FamilySpec:
    if spec.name not in FAMILIES:
        raise ModelError(f"Family {spec.name!r} is not listed in models.registry.FAMILIES.")
    _REGISTRY[spec.name] = spec
    return spec


def get_family(name: str) -> FamilySpec:
    fam = family_name(name)
    if fam not in _REGISTRY:
        importlib.import_module("." + FAMILIES[fam][0], __package__)
    return _REGISTRY[fam]


def check_model(family: str, model) -> None:
    """Raise `ModelError` unless ``model`` implements the Protocol its family declares."""
    spec = get_family(family)
    if not isinstance(model, spec.protocol):
        raise ModelError(f"The {spec.name} model ({type(model).__name__}) does not implement the {spec.kind} "
                         "interface its family declares (models/protocols.py).")


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
