"""Load and save model weights.

Two kinds of file:

1. **The project's own format**: ``NAME.safetensors`` (weights) + ``NAME.json`` (config), written
   atomically. The JSON holds ``format``, ``format_version``, ``family``, ``config`` (the family's
   config dataclass as a dict: architecture, sizes, classes, intensity convention), ``classes``,
   ``echosam_version``, ``created`` and free-form ``provenance`` (training recipe, data origin).
   A copy of the JSON is also embedded in the safetensors header, so a lone ``.safetensors`` still
   loads.
2. **Official PyTorch checkpoints** (``.pth``/``.pt``): SAM ViT-B/L/H and the papers' state dicts.
   Read with ``torch.load(weights_only=True)`` only: a pickle that needs code execution is refused.
   The family's converter maps keys into our layout; a strict load names what does not fit.

Every failure is a `CheckpointError` that names the file and the problem.
"""
from __future__ import annotations

import datetime as _dt
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from . import __version__
from .errors import CheckpointError

FORMAT_NAME = "echosam-checkpoint"
FORMAT_VERSION = 1
#: checkpoint file suffixes (compared in lower case everywhere, through `checkpoint_kind`)
OWN_SUFFIXES = (".safetensors", ".json")
OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def checkpoint_kind(path) -> Optional[str]:
    """"own" (EchoSAM .safetensors/.json), "official" (PyTorch .pth/.pt/.bin/.ckpt) or None, from the
    file name's suffix in any case (``SAM.PTH`` is official)."""
    suffix = Path(str(path)).suffix.lower()
    return "own" if suffix in OWN_SUFFIXES else "official" if suffix in OFFICIAL_SUFFIXES else None


@dataclass
class LoadedModel:
    """A model ready for inference plus what the session and CLI need to know about it."""

    model: Any                   # torch.nn.Module in eval mode on `device`
    family: str
    config: Any                  # the family's config dataclass
    meta: dict = field(default_factory=dict)
    path: Optional[Path] = None
    device: str = "cpu"

    @property
    def classes(self) -> list:
        return list(self.meta.get("classes") or getattr(self.config, "classes", []) or [])

    @property
    def prompted(self) -> bool:
        from .models.registry import is_prompted
        return is_prompted(self.family)


# ---- helpers ----------------------------------------------------------------------------------
def _atomic_write(path: Path, write_fn) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file."""
    from .io.atomic import atomic_file

    with atomic_file(path, suffix=path.suffix) as tmp:
        write_fn(str(tmp))


def strip_prefixes(state: Mapping, prefixes: tuple = ("module.",)) -> dict:
    """Remove DataParallel/DDP ``module.`` prefixes (and friends) from every key."""
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _existing_file(path) -> Path:
    """``path`` as a Path, or a CheckpointError if it is missing or empty (an unfinished copy)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy did not finish.")
    return path


def _resolve_pair(path: Path) -> tuple[Path, Path]:
    if path.suffix.lower() == ".json":
        return path.with_suffix(".safetensors"), path
    if path.suffix.lower() == ".safetensors":
        return path, path.with_suffix(".json")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


# ---- own format -------------------------------------------------------------------------------
def save_checkpoint(model, family: str, config, path, classes: Optional[list] = None,
                    provenance: Optional[dict] = None, only_trainable: bool = False,
                    base: Optional[str] = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` atomically; returns the .safetensors path.
    ``only_trainable`` writes a partial checkpoint, which loads only on top of ``base`` (the full
    weights it was fine-tuned from: a file name next to it, a path or a Models.json name)."""
    from safetensors.torch import save_file

    weights, meta_path = _resolve_pair(Path(path))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if only_trainable:
        # trainable parameters plus every buffer (BatchNorm statistics change in training too)
        names = {n for n, p in model.named_parameters() if p.requires_grad} | {n for n, _ in model.named_buffers()}
        state = {k: v for k, v in state.items() if k in names}
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "family": family,
        "config": config.to_dict(), "classes": list(classes if classes is not None else getattr(config, "classes", [])),
        "intensity": getattr(config, "intensity", None), "partial": bool(only_trainable),
        **({"base": str(base)} if only_trainable and base else {}),
        "echosam_version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": dict(provenance or {}),
    }
    text = json.dumps(meta, indent=2, sort_keys=False)
    _atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"echosam": text}))
    _atomic_write(meta_path, lambda tmp: Path(tmp).write_text(text + "\n"))
    return weights


def read_checkpoint_meta(path) -> dict:
    """The JSON config of an own-format checkpoint (sidecar first, else the embedded copy)."""
    weights, meta_path = _resolve_pair(Path(path))
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{meta_path} is not valid JSON ({e}). Restore it from the original download.") from None
    else:
        if not weights.exists():
            raise CheckpointError(f"Checkpoint not found: {weights} (nor {meta_path}).")
        from safetensors import safe_open
        try:
            with safe_open(str(weights), framework="pt") as f:
                embedded = (f.metadata() or {}).get("echosam")
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{weights} is not a readable safetensors file ({e}).") from None
        if not embedded:
            raise CheckpointError(f"{weights} has no EchoSAM config: put its {meta_path.name} next to it.")
        meta = json.loads(embedded)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path.name} is not an EchoSAM checkpoint config (format={meta.get('format')!r}).")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path.name} has format version {meta['format_version']}; this EchoSAM reads up to "
                              f"{FORMAT_VERSION}. Update EchoSAM.")
    for key in ("family", "config"):
        if key not in meta:
            raise CheckpointError(f"{meta_path.name} lacks the '{key}' field.")
    return meta


def read_safetensors(path) -> dict:
    from safetensors.torch import load_file

    path = _existing_file(path)
    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({type(e).__name__}: {e}). "
                              "Download or copy it again.") from None


def load_checkpoint(path, device: str = "cpu", base_state: Optional[Mapping] = None) -> LoadedModel:
    """Build the model an own-format checkpoint describes and load its weights strictly.

    ``base_state`` (e.g. an official SAM state dict) fills the frozen keys of a partial
    (``only_trainable``) checkpoint; without it, the base weights its JSON names (``base``: a file next
    to it, a path, or a Models.json name) do. A partial checkpoint with neither is refused: its missing
    tensors would be random and the results silently wrong.
    """
    from .models.registry import check_model, get_family
    from .models.sam import fit_state_dict_to_model, load_state_dict_strict

    weights, _ = _resolve_pair(Path(path))
    meta = read_checkpoint_meta(path)
    spec = get_family(meta["family"])
    check_config_sizes(meta["config"], weights.name)
    try:
        config = spec.config_cls.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{weights.name}: the config does not describe a valid {spec.name} model ({e}).") from None
    model = spec.build(config)
    check_model(spec.name, model)
    state = read_safetensors(weights)
    if meta.get("partial"):
        if base_state is None:
            full = _base_weights(meta, weights, spec, config, model)
        else:
            full = fit_state_dict_to_model(spec.convert_official(base_state, config), model)
        full.update(state)
        state = full
    load_state_dict_strict(model, state, what=f"checkpoint {weights.name}")
    model.eval().to(device)
    return LoadedModel(model=model, family=spec.name, config=config, meta=meta, path=weights, device=str(device))


MAX_CONFIG_INT = 65536


def check_config_sizes(config: Mapping, name: str) -> None:
    """Refuse a config that declares absurd sizes before any tensor is allocated (a JSON with
    ``embed_dim`` 131072 would ask for hundreds of GB): every integer must be in 0..65536 (the family's
    config then checks its own rules, e.g. `SamConfig` sizes and parameter count)."""
    def walk(d, where):
        items = d.items() if isinstance(d, Mapping) else enumerate(d) if isinstance(d, (list, tuple)) else ()
        for k, v in items:
            key = f"{where}.{k}" if where else str(k)
            if isinstance(v, bool):
                continue
            if isinstance(v, int) and not 0 <= v <= MAX_CONFIG_INT:
                raise CheckpointError(f"{name}: config value {key} = {v} is outside 0..{MAX_CONFIG_INT}; refused "
                                      "(a damaged or hostile model file).")
            if isinstance(v, float) and not (v == v and abs(v) <= 1e6):
                raise CheckpointError(f"{name}: config value {key} = {v} is not a usable number; refused.")
            walk(v, key)
    walk(config, "")


def _base_weights(meta: dict, weights: Path, spec, config, model) -> dict:
    """The full state dict a partial checkpoint sits on, from the base its JSON names."""
    from .models.sam import fit_state_dict_to_model

    base = meta.get("base")
    if not base:
        raise CheckpointError(f"{weights.name} is a partial checkpoint (only the fine-tuned tensors) that names no base "
                              "weights, so its other tensors would be random; refused. Save it with its base "
                              "(\"base\" in its JSON) or as a full checkpoint.")
    path = weights.parent / str(base)
    if not path.is_file():
        from .model_zoo import resolve_model
        path = resolve_model(str(base))
    if checkpoint_kind(path) == "official":
        return fit_state_dict_to_model(spec.convert_official(read_official_state_dict(path), config), model)
    base_meta = read_checkpoint_meta(path)
    if base_meta.get("partial") or base_meta.get("family") != spec.name:
        raise CheckpointError(f"The base {Path(path).name} of partial checkpoint {weights.name} is not a full "
                              f"{spec.name} checkpoint; refused.")
    return dict(read_safetensors(_resolve_pair(Path(path))[0]))


# ---- official PyTorch files -------------------------------------------------------------------
def read_official_state_dict(path) -> dict:
    """Read a ``.pth`` state dict safely (``weights_only=True``), unwrapping ``state_dict``/``model``
    containers and ``module.`` prefixes. Refuses pickles that need code execution."""
    import torch

    path = _existing_file(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):   # a zip archive or a pickle stream
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (its bytes are neither a torch zip archive nor "
                              "a pickle); it may be truncated or another kind of file. Download or copy it again.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "GLOBAL " in msg:
            raise CheckpointError(f"{path.name} contains Python objects that would run code when loaded; refused for "
                                  "safety. Re-save it as a plain state_dict (torch.save(model.state_dict(), ...)).") from None
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint or is corrupt (its pickle data cannot be read). "
                              "Download or copy it again.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path.name} is truncated or not a PyTorch checkpoint ({first}). "
                              "Download or copy it again.") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"{path.name} does not hold a state_dict (a mapping of tensor names to tensors).")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors.")
    return strip_prefixes(tensors)


def load_official(path, family: str, config=None, preset: Optional[str] = None, device: str = "cpu",
                  base_sam: Optional[Mapping] = None) -> LoadedModel:
    """Build ``family`` and load an official checkpoint through the family's key converter.

    For MA-SAM adapter files, ``base_sam`` is the official SAM state dict the adapters sit on.
    """
    from .models.registry import check_model, get_family, preset_config
    from .models.sam import fit_state_dict_to_model, infer_sam_backbone, load_state_dict_strict

    spec = get_family(family)
    state = read_official_state_dict(path)
    if base_sam is not None:
        merged = dict(base_sam)
        merged.update(state)
        state = merged
    if config is None:
        if preset is None:  # backbone from the file itself (embed width), e.g. a SAM ViT-L .pth
            preset = infer_sam_backbone(state) if "image_encoder.patch_embed.proj.weight" in state else "vit_b"
        config = preset_config(spec.name, preset)
    if spec.convert_official is None:
        raise CheckpointError(f"No converter for official {spec.name} checkpoints.")
    model = spec.build(config)
    check_model(spec.name, model)
    try:
        converted = spec.convert_official(state, config)
    except KeyError as e:
        raise CheckpointError(f"{Path(path).name} is not a {spec.name} checkpoint: key {e} is missing.") from None
    load_state_dict_strict(model, fit_state_dict_to_model(converted, model), what=f"{spec.name} checkpoint {Path(path).name}")
    model.eval().to(device)
    return LoadedModel(model=model, family=spec.name, config=config, path=Path(path), device=str(device),
                       meta={"family": spec.name, "config": config.to_dict(), "source": "official",
                             "classes": list(getattr(config, "classes", []))})


def load_model(spec: str, device: str = "cpu", family: Optional[str] = None, preset: Optional[str] = None) -> LoadedModel:
    """Load by file path (own format or official .pth with ``family``) or by registry name
    (``Resources/Models.json``, resolved by `echosam.model_zoo`)."""
    p = Path(spec)
    kind = checkpoint_kind(p)
    if kind == "own" or (kind is None and p.exists() and p.with_suffix(".json").exists()):
        return load_checkpoint(p, device=device)
    if kind == "official":
        if family is None:
            raise CheckpointError(f"{p.name} is an official PyTorch checkpoint: say which family it is "
                                  "(--family memsam|medivista|masam|sam).")
        return load_official(p, family=family, preset=preset, device=device)
    from .model_zoo import get_entry, resolve_model

    path = resolve_model(spec)
    if checkpoint_kind(path) == "official":  # registry entry for an official .pth (e.g. SAM ViT-B)
        return load_official(path, family=family or get_entry(spec).family, preset=preset, device=device)
    return load_checkpoint(path, device=device)
