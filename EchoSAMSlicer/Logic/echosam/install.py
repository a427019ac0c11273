"""Dependency check and install plan for the Slicer module (Qt-free, Slicer-free, no torch import).

The Slicer module asks once, then installs torch through the PyTorch extension (PyTorchUtils picks
the right CUDA/CPU build; we never force a backend: ``installTorch(askConfirmation=False,
torchVersionRequirement=...)``) and everything else with ``slicer.packaging.pip_ensure(missing,
skip_packages=SKIP_PACKAGES, prompt_install=False, requester=...)`` (Slicer >= 5.11; the module has
already asked once), or ``slicer.util.pip_install(pip_arguments(missing))`` on older Slicer. torch and
SimpleITK are skipped: torch comes from PyTorchUtils, SimpleITK ships with Slicer and must not be
replaced (SlicerTotalSegmentator #4).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SKIP_PACKAGES = ("torch", "SimpleITK")
# distribution name -> import name, where they differ
IMPORT_NAMES = {"pynrrd": "nrrd", "segment-anything": "segment_anything", "PyWavelets": "pywt", "PyYAML": "yaml",
                "Pillow": "PIL", "pydicom": "pydicom", "safetensors": "safetensors"}


def load_requirements(path) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def has_module(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is not None


def missing_requirements(path) -> list[str]:
    """Requirements whose package cannot be imported (import check only; where slicer.packaging exists
    the module uses its pip_check instead, which also enforces the version floors)."""
    missing = []
    for req in load_requirements(path):
        name = requirement_name(req)
        if name in SKIP_PACKAGES:
            continue
        if not has_module(IMPORT_NAMES.get(name, name.replace("-", "_"))):
            missing.append(req)
    return missing


def install_message(missing: list, need_torch: bool) -> str:
    parts = ["EchoSAM needs some Python packages before the first segmentation:"]
    if need_torch:
        parts.append("- PyTorch (installed by the PyTorch extension, matched to your GPU or CPU)")
    if missing:
        parts.append("- " + ", ".join(requirement_name(r) for r in missing))
    parts.append("This downloads several hundred MB once and can take a few minutes. Slicer's own SimpleITK "
                 "and VTK are not touched. Continue?")
    return "\n".join(parts)


def pip_arguments(requirements: list) -> str:
    """Arguments for slicer.util.pip_install on Slicer versions without slicer.packaging."""
    return " ".join(f'"{r}"' for r in requirements)
