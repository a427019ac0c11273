"""The model chooser's facts (no Qt, no ``slicer``, no worker): where a model's weights are (bundled /
cached / missing / a file), its license, and what "Use a checkpoint file I already have..." does
with a picked file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import model_zoo
from ..checkpoints import OFFICIAL_SUFFIXES, OWN_SUFFIXES, checkpoint_kind  # noqa: F401 (re-exported)
from ..errors import CheckpointError
from ..models.registry import FAMILIES, FAMILY_NAMES, is_prompted

FILE_FAMILIES = FAMILY_NAMES                      # families an official .pth can be loaded as


# ---- models --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What the chooser shows about a model spec (a Models.json name, or a checkpoint file path)."""

    spec: str
    title: str
    family: str
    prompted: bool
    license: str
    status: str            # "bundled", "cached", "missing", "file" or "file missing"
    can_download: bool
    text: str              # one line for the panel
    tooltip: str = ""

    @property
    def weights_present(self) -> bool:
        return self.status in ("bundled", "cached", "file")


def is_file_spec(spec: str) -> bool:
    """True when ``spec`` names a checkpoint file rather than a Models.json entry."""
    return checkpoint_kind(spec) is not None


def model_info(spec: str, family: str = "") -> ModelInfo:
    """Facts for the chooser. Raises `ModelError` for an unknown registry name."""
    spec = str(spec)
    if is_file_spec(spec):
        p = Path(spec)
        fam = family or "?"
        if checkpoint_kind(p) == "own" and p.with_suffix(".json").is_file():
            from ..checkpoints import read_checkpoint_meta   # JSON only, no torch
            try:
                fam = read_checkpoint_meta(p)["family"]
            except CheckpointError:
                fam = "?"
        status = "file" if p.is_file() else "file missing"
        prompted = fam in FAMILIES and is_prompted(fam)
        where = "checkpoint file" if status == "file" else "FILE NOT FOUND"
        text = f"{p.name} ({fam}) - {where} - license: as published by its source"
        return ModelInfo(spec, p.name, fam, prompted, "", status, False, text, str(p))
    entry = model_zoo.get_entry(spec)
    if entry.bundled:
        status = "bundled" if model_zoo.is_available(entry) else "missing"
    else:
        status = "cached" if model_zoo.is_available(entry) else "missing"
    words = {"bundled": "weights bundled", "cached": "weights downloaded",
             "missing": "weights missing: press Download" if entry.url else "weights missing"}
    text = f"{entry.title} - {entry.input_size} px - {words[status]} - license: {entry.license or 'unknown'}"
    tip = entry.description + (f"\nFile: {model_zoo.local_path(entry)}" if status != "missing" else "")
    return ModelInfo(spec, entry.title, entry.family, entry.prompted, entry.license, status,
                     bool(entry.url) and not entry.bundled and status == "missing", text, tip)


@dataclass(frozen=True)
class UseFilePlan:
    """What to do with a file picked by "Use a checkpoint file I already have...".

    ``action``: "register" (the selected Models.json entry's own file: SHA256 check + copy into the
    cache; the caller asks first), "own" (an EchoSAM .safetensors/.json checkpoint, loaded as is) or
    "official" (a PyTorch .pth: the user chooses ``family``, default ``family``)."""

    action: str
    path: str
    entry_name: str = ""
    family: str = ""
    message: str = ""


def plan_use_file(path, entry: Optional[model_zoo.ModelEntry] = None) -> UseFilePlan:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist or is not a file; choose the checkpoint file itself.")
    suffix, kind = p.suffix.lower(), checkpoint_kind(p)
    if kind is None:
        raise CheckpointError(f"{p.name} is not a checkpoint EchoSAM can read: use an EchoSAM .safetensors (with its "
                              ".json) or an official PyTorch .pth/.pt file.")
    if entry is not None and not entry.bundled and suffix == Path(entry.file).suffix.lower():
        check = "its SHA256 is checked" if entry.sha256 else "no published SHA256 to check it against"
        return UseFilePlan("register", str(p), entry.name, entry.family,
                           f"Use {p.name} as the weights of '{entry.title}'? It is copied into {model_zoo.cache_dir()} "
                           f"({check}). Choose No to load it as a separate model instead.")
    if kind == "own":
        weights, config = (p.with_suffix(".safetensors"), p.with_suffix(".json"))
        missing = [q.name for q in (weights, config) if not q.is_file()]
        if missing:
            raise CheckpointError(f"An EchoSAM checkpoint is a .safetensors file with its .json next to it; "
                                  f"{', '.join(missing)} is missing in {p.parent}.")
        return UseFilePlan("own", str(weights))
    default = entry.family if entry is not None and entry.family in FILE_FAMILIES else "memsam"
    return UseFilePlan("official", str(p), family=default,
                       message=f"{p.name} is an official PyTorch checkpoint: which model family is it?")
