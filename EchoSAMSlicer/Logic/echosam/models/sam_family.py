"""Vanilla SAM registered as a family (per-frame prompted baseline, and the source of weights
that every other family is initialised from)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import FamilySpec, register_family
from .sam import SamConfig, build_sam


@dataclass
class SamFamilyConfig:
    sam: SamConfig = field(default_factory=SamConfig.vit_b)
    intensity: str = "imagenet"   # SAM's pixel_mean/std on 0..255 RGB

    def to_dict(self) -> dict:
        return {"sam": self.sam.to_dict(), "intensity": self.intensity}

    @classmethod
    def from_dict(cls, d) -> "SamFamilyConfig":
        return cls(sam=SamConfig.from_dict(d["sam"]), intensity=d.get("intensity", "imagenet"))


def _convert(state, config):
    return dict(state)


register_family(FamilySpec(
    name="sam", config_cls=SamFamilyConfig, build=lambda c: build_sam(c.sam), prompted=True,
    description="Segment Anything (Kirillov et al. 2023), frame by frame", convert_official=_convert,
    presets={"vit_b": lambda: SamFamilyConfig(SamConfig.vit_b()), "vit_l": lambda: SamFamilyConfig(SamConfig.vit_l()),
             "vit_h": lambda: SamFamilyConfig(SamConfig.vit_h()), "tiny": lambda: SamFamilyConfig(SamConfig.tiny())}))
