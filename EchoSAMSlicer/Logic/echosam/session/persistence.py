"""Save and load a `Session` folder (for `echosam correct` and for resuming work), through the
session's public `Session.snapshot` / `Session.restore`.

Folder layout (written atomically as a whole: a temp folder renamed into place):
- ``session.json``: format/version, structures, memory cap, threshold, per-frame result signatures,
  and the **fingerprints** of the cine (SHA-256 of frames, shape, dtype, times, geometry) and of the
  model (SHA-256 of family, config and every weight tensor). Loading with another cine or model is
  refused with a clear message (stale embeddings would silently give wrong masks).
- ``prompts.json``: `Session.prompts_to_dict()` (masks run-length encoded).
- ``embeddings.safetensors``: the encoded features' tensors by field name, (T, ...) float tensors.
- ``results.npz``: labels (T, H, W) uint8 and each structure's (T, S, S) float16 logits + presence; with a
  companion (`echosam.companion`), its (T, H, W) uint8 probabilities per structure (``session.json``
  ``companion`` names the model and weight).
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from ..companion import spec_problem
from ..errors import CheckpointError, CineError, PromptError

FORMAT = "echosam-session"
VERSION = 1


def cine_fingerprint(cine) -> str:
    h = hashlib.sha256()
    f = np.ascontiguousarray(cine.frames)
    h.update(f"{f.shape}|{f.dtype}".encode())
    h.update(f.tobytes())
    h.update(np.round(np.asarray(cine.frame_times, dtype=float), 9).tobytes())
    h.update(np.round(np.asarray(cine.ijk_to_ras, dtype=float), 6).tobytes())
    return h.hexdigest()


def model_fingerprint(loaded) -> str:
    h = hashlib.sha256()
    h.update(str(loaded.family).encode())
    h.update(json.dumps(loaded.config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(loaded.model.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=_byte_dtype()).numpy().tobytes())
    return h.hexdigest()


def _byte_dtype():
    import torch
    return torch.uint8


def save_session(s, folder) -> Path:
    """Write session ``s`` to ``folder`` (replaced as a whole only when complete)."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_folder

    folder = Path(folder)
    snap = s.snapshot()
    meta = {"format": FORMAT, "version": VERSION, "family": s.loaded.family, "structures": s.structures,
            "memory_cap": s.memory_cap, "threshold": s.threshold, "img_size": s.img_size,
            "keep_connected": s.keep_connected, "heart_zoom": s.heart_zoom, "substeps": s.substeps,
            "grow": s.results.grow,
            "cine_fingerprint": cine_fingerprint(s.cine), "model_fingerprint": model_fingerprint(s.loaded),
            "cine_shape": list(s.cine.frames.shape), "model_path": str(s.loaded.path) if s.loaded.path else None,
            "signatures": snap["results"]["signatures"], "companion": snap["results"]["companion"],
            "feature_shapes": {k: list(v.shape) for k, v in (snap["features"] or {}).items()}}
    with atomic_folder(folder) as tmp:
        (tmp / "session.json").write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "prompts.json").write_text(json.dumps(snap["prompts"]) + "\n")
        np.savez_compressed(tmp / "results.npz", **snap["results"]["arrays"])
        if snap["features"] is not None:
            save_file(snap["features"], str(tmp / "embeddings.safetensors"))
    return folder


class SessionDamagedError(PromptError):
    """A saved session folder is incomplete or corrupt."""


def damaged(folder, what: str) -> SessionDamagedError:
    return SessionDamagedError(f"The saved session in {folder} is damaged ({what}); start over by running "
                               "`echosam segment` again on the cine.")


def _check_arrays(folder, arrays: dict, structures: list, cine, img_size) -> None:
    if "labels" not in arrays or tuple(arrays["labels"].shape) != tuple(cine.frames.shape):
        raise damaged(folder, f"results.npz labels {getattr(arrays.get('labels'), 'shape', None)} are not "
                              f"{tuple(cine.frames.shape)}")
    for k in structures:
        frames, logits = arrays.get(f"frames_{k}"), arrays.get(f"logits_{k}")
        if frames is None or logits is None or frames.ndim != 1 or logits.ndim != 3 or len(frames) != len(logits):
            raise damaged(folder, f"results.npz lacks usable {k} results")
        if len(frames) and (frames.min() < 0 or frames.max() >= cine.n_frames):
            raise damaged(folder, f"results.npz has {k} results for frames outside the cine")
        if img_size and len(logits) and tuple(logits.shape[1:]) != (int(img_size), int(img_size)):
            raise damaged(folder, f"results.npz {k} logits are {tuple(logits.shape[1:])}, not {img_size}x{img_size}")
    for name, a in arrays.items():
        if name.startswith("companion_") and (a.dtype != np.uint8 or tuple(a.shape) != tuple(cine.frames.shape)):
            raise damaged(folder, f"results.npz {name} is {a.dtype} {tuple(a.shape)}, not uint8 "
                                  f"{tuple(cine.frames.shape)}")


def _check_features(folder, feats: dict, meta: dict, n_frames: int) -> None:
    shapes = meta.get("feature_shapes")
    for name, t in feats.items():
        if t.ndim < 1 or t.shape[0] != n_frames:
            got = t.shape[0] if t.ndim else 0
            raise damaged(folder, f"embeddings {name} cover {got} encoded frames, not {n_frames}")
        if shapes is not None and list(t.shape) != list(shapes.get(name, [])):
            raise damaged(folder, f"embeddings {name} have shape {list(t.shape)}, not {shapes.get(name)}")
    if shapes is not None and set(shapes) != set(feats):
        raise damaged(folder, "embeddings.safetensors lacks some of its tensors")


def load_session(cls, folder, cine, loaded, **kwargs):
    """Rebuild a session saved by `save_session` on the same cine and model (checked by fingerprint).
    Every file is checked before use; a missing key, a corrupt or truncated file, or arrays of the wrong
    shape raise `SessionDamagedError` (a `PromptError`) saying how to start over."""
    folder = Path(folder)
    path = folder / "session.json"
    if not path.exists():
        raise PromptError(f"{folder} is not a saved EchoSAM session (no session.json). Give the output folder "
                          "of `echosam segment`.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(folder, f"session.json is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise damaged(folder, "session.json is not a JSON object")
    if meta.get("format") != FORMAT or not isinstance(meta.get("version", 0), int) or meta.get("version", 0) > VERSION:
        raise PromptError(f"{path} is not a session file this EchoSAM can read (format {meta.get('format')!r}, "
                          f"version {meta.get('version')}).")
    missing = [k for k in ("cine_fingerprint", "model_fingerprint", "memory_cap", "threshold", "structures",
                           "signatures") if k not in meta]
    if missing:
        raise damaged(folder, f"session.json lacks {', '.join(missing)}")
    if meta["cine_fingerprint"] != cine_fingerprint(cine):
        raise CineError(f"The session in {folder} was made on another cine (shape {meta.get('cine_shape')}, or "
                        "different pixels/timing/geometry); load it with the cine it was segmented from.")
    if meta["model_fingerprint"] != model_fingerprint(loaded):
        raise CheckpointError(f"The session in {folder} was made with other model weights "
                              f"({meta.get('family')}, {meta.get('model_path')}); load that model, or segment again.")
    try:
        return _load_checked(cls, folder, meta, cine, loaded, kwargs)
    except SessionDamagedError:
        raise
    except (PromptError, KeyError, ValueError, TypeError, IndexError, OSError, EOFError, RuntimeError,
            zipfile.BadZipFile) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise damaged(folder, f"{type(e).__name__}: {detail}") from None
    except Exception as e:           # safetensors raises its own SafetensorError type
        if "safetensor" in type(e).__name__.lower():
            raise damaged(folder, f"embeddings.safetensors cannot be read: {e}") from None
        raise


def _load_checked(cls, folder: Path, meta: dict, cine, loaded, kwargs):
    from safetensors.torch import load_file

    kwargs.setdefault("memory_cap", meta["memory_cap"])
    kwargs.setdefault("threshold", meta["threshold"])
    kwargs.setdefault("keep_connected", meta.get("keep_connected", True))
    kwargs.setdefault("heart_zoom", meta.get("heart_zoom", False))   # saved before it: one reading
    kwargs.setdefault("substeps", meta.get("substeps", 1))     # the timeline its features were encoded on
    kwargs.setdefault("grow", meta.get("grow"))                # drawn as it was: none before grow_thresholds
    s = cls(cine, loaded, structures=meta["structures"], **kwargs)
    for name in ("prompts.json", "results.npz"):
        if not (folder / name).is_file():
            raise damaged(folder, f"{name} is missing")
    try:
        prompts = json.loads((folder / "prompts.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(folder, f"prompts.json is not valid JSON: {e}") from None
    with np.load(folder / "results.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    _check_arrays(folder, arrays, list(meta["structures"]), cine, meta.get("img_size"))
    emb = folder / "embeddings.safetensors"
    feats = load_file(str(emb)) if emb.exists() else None
    if feats is not None:
        _check_features(folder, feats, meta, s.features.n_frames)
    elif meta.get("feature_shapes"):
        raise damaged(folder, "embeddings.safetensors is missing")
    record = meta.get("companion")
    if record is not None and (spec_problem(record) or set(record) != {"model", "weight"}
                               or not any(f"companion_{k}" in arrays for k in meta["structures"])):
        raise damaged(folder, f"its companion record {record!r} does not match results.npz")
    results = {"signatures": meta["signatures"], "arrays": arrays, "companion": record}
    s.restore({"prompts": prompts, "results": results, "features": feats})
    return s
