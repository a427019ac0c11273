"""Save and load a `Session` folder (for `echosam correct` and for resuming work), through the
session's public `Session.snapshot` / `Session.restore`.

Folder layout (written atomically as a whole: a temp folder renamed into place):
- ``session.json``: format/version, structures, memory cap, threshold, per-frame result signatures,
  and the **fingerprints** of the cine (SHA-256 of frames, shape, dtype, times, geometry) and of the
  model (SHA-256 of family, config and every weight tensor). Loading with another cine or model is
  refused with a clear message (stale embeddings would silently give wrong masks).
- ``prompts.json``: `Session.prompts_to_dict()` (masks run-length encoded).
- ``embeddings.safetensors``: the encoded features' tensors by field name, (T, ...) float tensors.
- ``results.npz``: labels (T, H, W) uint8 and each structure's (T, S, S) float16 logits + presence.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

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
            "keep_connected": s.keep_connected,
            "cine_fingerprint": cine_fingerprint(s.cine), "model_fingerprint": model_fingerprint(s.loaded),
            "cine_shape": list(s.cine.frames.shape), "model_path": str(s.loaded.path) if s.loaded.path else None,
            "signatures": snap["results"]["signatures"]}
    with atomic_folder(folder) as tmp:
        (tmp / "session.json").write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "prompts.json").write_text(json.dumps(snap["prompts"]) + "\n")
        np.savez_compressed(tmp / "results.npz", **snap["results"]["arrays"])
        if snap["features"] is not None:
            save_file(snap["features"], str(tmp / "embeddings.safetensors"))
    return folder


def load_session(cls, folder, cine, loaded, **kwargs):
    """Rebuild a session saved by `save_session` on the same cine and model (checked by fingerprint)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "session.json"
    if not path.exists():
        raise PromptError(f"{folder} is not a saved EchoSAM session (no session.json). Give the output folder "
                          "of `echosam segment`.")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"{path} is corrupt ({e}); run `echosam segment` again.") from None
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
        raise PromptError(f"{path} is not a session file this EchoSAM can read (format {meta.get('format')!r}, "
                          f"version {meta.get('version')}).")
    if meta["cine_fingerprint"] != cine_fingerprint(cine):
        raise CineError(f"The session in {folder} was made on another cine (shape {meta.get('cine_shape')}, or "
                        "different pixels/timing/geometry); load it with the cine it was segmented from.")
    if meta["model_fingerprint"] != model_fingerprint(loaded):
        raise CheckpointError(f"The session in {folder} was made with other model weights "
                              f"({meta.get('family')}, {meta.get('model_path')}); load that model, or segment again.")
    kwargs.setdefault("memory_cap", meta["memory_cap"])
    kwargs.setdefault("threshold", meta["threshold"])
    kwargs.setdefault("keep_connected", meta.get("keep_connected", True))
    s = cls(cine, loaded, structures=meta["structures"], **kwargs)
    with np.load(folder / "results.npz") as z:
        arrays = {k: z[k] for k in z.files}
    emb = folder / "embeddings.safetensors"
    s.restore({"prompts": json.loads((folder / "prompts.json").read_text()),
               "results": {"signatures": meta["signatures"], "arrays": arrays},
               "features": load_file(str(emb)) if emb.exists() else None})
    return s
