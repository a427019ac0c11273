"""`Session`: the interactive state over one cine and one model (SAM 2 video-predictor verbs).

- **Encode once**: every frame goes through ``model.prepare_frames`` + ``model.encode`` in batches
  under ``torch.inference_mode``; the `FrameFeatures` are cached on the model's device when they fit
  (``embed_cache="auto"``), else in host memory (``"host"`` forces that).
- **Prompts** (`session_store.PromptStore`): points, box or mask per (frame, structure). A mask is a
  correction and locks that frame: its label is the user's mask bit for bit, never overwritten.
- **Propagate** (`session_memsam.Propagator`): from key frames forward/backward, memory rebuilt
  from the store; only stale frames (changed segment) re-run memory + decoder, never the encoder.
- **Labels**: structures are separate binary objects over shared embeddings; per pixel the structure
  with the highest probability wins, background where every probability is below ``threshold``.
  The default 0.5 is the natural sigmoid cut; MemSAM's evaluation code binarises at 0.6
  (reference/models.md §1.5); pass ``threshold=0.6`` to reproduce its published numbers.
- **Prompt-free** models: `segment_auto` (argmax of ``segment_video``); `seed_from_auto` turns a
  prompt-free result on one frame into MemSAM key-frame masks (seeds, not locked).
- **Undo** restores the store and every frame result/label changed since the last prompt change.

Frames reach models as float32 (N, H, W) 0..255 grey (uint8 as is, other dtypes min-max scaled over
the whole cine). Model outputs (S x S) are resized bilinearly back to (H, W) before thresholding.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import CheckpointError, CineError, PromptError
from .models.fast import inference_context, optimise_for_inference
from .progress import CancelToken, no_progress
from .session_io import feature_tensors
from .session_memsam import Propagator
from .session_store import PromptStore
from .structures import get_structure

DEFAULT_MEMORY_CAP = 16  # working-memory frames besides the key frame (models/memsam.py, point 6)


def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when available else "cpu"; "cuda" without a GPU is a clear ModelError."""
    from .models.fast import resolve_device as resolve_torch_device

    return str(resolve_torch_device(device))


class Session:
    """See the module docstring and docs/engine_api.md ("Session")."""

    def __init__(self, cine, loaded, structures=None, memory_cap="config", embed_cache: str = "auto",
                 threshold: Optional[float] = None, batch_size: int = 8, precision: str = "auto") -> None:
        """``memory_cap``: working-memory frames beyond the permanent key frame ("config": the model
        config's ``memory_cap``, else DEFAULT_MEMORY_CAP; None = unbounded). ``threshold``: on sigmoid
        probabilities (None: the model config's, else 0.5). ``batch_size``: frames per encoder call.
        ``precision``: "auto" = bf16 autocast on CUDA (fp16 on GPUs without bf16), fp32 on CPU; "fp32"."""
        if memory_cap == "config":
            memory_cap = getattr(loaded.config, "memory_cap", DEFAULT_MEMORY_CAP)
        if threshold is None:
            threshold = getattr(loaded.config, "threshold", 0.5)
        if embed_cache not in ("auto", "host", "device"):
            raise PromptError(f"embed_cache must be 'auto', 'host' or 'device', not {embed_cache!r}.")
        if not 0.0 < float(threshold) < 1.0:
            raise PromptError(f"threshold must be in (0, 1), got {threshold}.")
        if precision not in ("auto", "fp32", "fp16", "bf16"):
            raise PromptError(f"precision must be auto, fp32, fp16 or bf16, not {precision!r}.")
        self.cine, self.loaded, self.model = cine, loaded, loaded.model
        self.device = str(loaded.device)
        self.precision = precision
        optimise_for_inference(self.model, _torch_device(self.device))
        self.prompted = bool(loaded.prompted)
        classes = [get_structure(c).key for c in loaded.classes] or ["lv"]
        if structures is None:
            structures = ("lv",) if self.prompted else classes
        self.structures = [get_structure(s).key for s in ([structures] if isinstance(structures, str) else structures)]
        missing = [s for s in self.structures if s not in classes]
        if missing and not self.prompted:
            raise PromptError(f"The {loaded.family} model segments {', '.join(classes)}, not {', '.join(missing)}.")
        if missing:
            # A propagator asked for a structure it never learnt gives confident wrong masks that take
            # pixels from the structures it knows (labels are resolved by highest probability).
            raise PromptError(f"This {loaded.family} model was trained to propagate {', '.join(classes)} only, not "
                              f"{', '.join(missing)}. Choose structures among {', '.join(classes)}, use a MemSAM "
                              "trained for them (training/), or a prompt-free model (MediViSTA / MA-SAM).")
        self.memory_cap, self.embed_cache = memory_cap, embed_cache
        self.threshold, self.batch_size = float(threshold), max(1, int(batch_size))
        self.img_size = int(loaded.config.sam.img_size)
        self.n_frames, self.height, self.width = cine.frames.shape
        self._grey = self._as_grey(cine.frames)
        self._store = PromptStore(self.n_frames, (self.height, self.width), self.structures)
        self._sig = {k: [None] * self.n_frames for k in self.structures}
        self._logits = {k: {} for k in self.structures}   # frame -> (S, S) float16 logits (host)
        self._labels = np.zeros(self.cine.frames.shape, dtype=np.uint8)
        self._features = None
        self._feature_parts: list = []
        self._history: list = []
        self._propagator = Propagator(self)
        self.peak_memory_entries = 0
        self.encoder_batches = 0

    def _inference(self):
        """inference_mode + the mixed precision of ``self.precision`` on CUDA (models.fast)."""
        return inference_context(_torch_device(self.device), self.precision)

    # ---- intensities and coordinates -----------------------------------------------------------
    @staticmethod
    def _as_grey(frames: np.ndarray) -> np.ndarray:
        if frames.dtype == np.uint8:
            return frames
        f = frames.astype(np.float32)
        lo, hi = float(f.min()), float(f.max())
        return (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)

    def _prepare(self, start: int, stop: int):
        import torch
        x = torch.from_numpy(np.ascontiguousarray(self._grey[start:stop], dtype=np.float32))
        return self.model.prepare_frames(x.to(self.device))

    def _to_model_xy(self, x: float, y: float) -> tuple:
        """Cine pixel (x=col, y=row) -> model-input pixel coordinates (pixel centres kept aligned)."""
        S = self.img_size
        return ((x + 0.5) * S / self.width - 0.5, (y + 0.5) * S / self.height - 0.5)

    # ---- encoding ------------------------------------------------------------------------------
    @property
    def encoded(self) -> bool:
        return self._features is not None

    def _cache_device(self, per_frame_bytes: int) -> str:
        if self.embed_cache == "host" or not self.device.startswith("cuda"):
            return "cpu"
        if self.embed_cache == "device":
            return self.device
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return self.device if per_frame_bytes * self.n_frames < 0.5 * free else "cpu"

    def encode(self, progress=None, cancel: Optional[CancelToken] = None) -> None:
        """Encode every frame once (MemSAM); later calls return at once. Cancel keeps finished batches."""
        if not self.prompted:
            raise PromptError("encode() is for prompted (MemSAM) sessions; prompt-free models run segment_auto().")
        if self._features is not None:
            return
        progress = progress or no_progress
        done = sum(p.embedding.shape[0] for p in self._feature_parts)
        with self._inference():
            while done < self.n_frames:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                stop = min(self.n_frames, done + self.batch_size)
                feats = self.model.encode(self._prepare(done, stop))
                self.encoder_batches += 1
                if not self._feature_parts:
                    per = sum(v.element_size() * v.numel() for v in feature_tensors(feats).values()) // (stop - done)
                    self._cache_to = self._cache_device(per)
                self._feature_parts.append(feats.to(self._cache_to))
                done = stop
                progress(done, self.n_frames, "encoding")
        self._features = _cat_features(self._feature_parts)
        self._feature_parts = []

    # ---- prompts (validated first; state unchanged on error) -----------------------------------
    def _require_prompted(self) -> None:
        if not self.prompted:
            raise PromptError(f"The {self.loaded.family} model is prompt-free: it takes no points, boxes or masks. "
                              "Use segment_auto(), or load a MemSAM model to prompt and correct.")

    def _mutate(self, fn) -> None:
        snap = self._store.snapshot()
        fn()
        self._history.append({"store": snap, "frames": {}, "labels": {}})
        del self._history[:-50]

    def add_points(self, frame, structure, points_xy, labels) -> None:
        """Include (1) / exclude (0) points, (N, 2) cine pixels (x=col, y=row), added to the frame's points."""
        self._require_prompted()
        self._mutate(lambda: self._store.add_points(frame, structure, points_xy, labels))

    def add_box(self, frame, structure, box) -> None:
        """Box (x0, y0, x1, y1) in cine pixels, replacing the frame's box."""
        self._require_prompted()
        self._mutate(lambda: self._store.add_box(frame, structure, box))

    def set_mask(self, frame, structure, mask) -> None:
        """A corrected (H, W) mask: locks ``frame`` for ``structure``; output bit for bit."""
        self._require_prompted()
        self._mutate(lambda: self._store.set_mask(frame, structure, mask))

    def unlock(self, frame, structure=None) -> None:
        self._require_prompted()
        self._mutate(lambda: self._store.unlock(frame, structure))

    def clear(self, structure=None) -> None:
        self._mutate(lambda: self._store.clear(structure))

    def undo(self) -> bool:
        """Restore the prompts, results and labels from before the last prompt change. False if none."""
        if not self._history:
            return False
        h = self._history.pop()
        self._store.restore(h["store"])
        for (key, t), (logit, sig) in h["frames"].items():
            if logit is None:
                self._logits[key].pop(t, None)
            else:
                self._logits[key][t] = logit
            self._sig[key][t] = sig
        for t, row in h["labels"].items():
            self._labels[t] = row
        return True

    # ---- state queries -------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """(T, H, W) uint8 label map (structures.py values); a read-only view."""
        v = self._labels.view()
        v.flags.writeable = False
        return v

    @property
    def key_frames(self) -> dict:
        return {k: self._store.key_frames(k) for k in self.structures}

    @property
    def locked_frames(self) -> dict:
        return {k: self._store.locked_frames(k) for k in self.structures}

    @property
    def seed_frames(self) -> dict:
        return {k: [f for f in self._store.key_frames(k) if self._store.get(k, f).seed] for k in self.structures}

    @property
    def done_frames(self) -> dict:
        """Frames whose result is up to date with the current prompts, per structure."""
        from .session_memsam import frame_signatures
        out = {}
        for k in self.structures:
            want = frame_signatures(self._store, k, self.n_frames)
            out[k] = [t for t in range(self.n_frames) if want[t] is not None and want[t] == self._sig[k][t]]
        return out

    def stale_frames(self, structure) -> list:
        return self._propagator.stale(get_structure(structure).key)

    # ---- propagation ---------------------------------------------------------------------------
    def _write(self, key: str, t: int, logits, sig) -> None:
        """Store one frame's result (called by the propagator), keeping undo before-images."""
        if self._history:
            h = self._history[-1]
            if (key, t) not in h["frames"]:
                h["frames"][(key, t)] = (self._logits[key].get(t), self._sig[key][t])
            if t not in h["labels"]:
                h["labels"][t] = self._labels[t].copy()
        if logits is None:
            self._logits[key].pop(t, None)
        else:
            self._logits[key][t] = logits.detach().reshape(self.img_size, self.img_size).to("cpu", dtype=_f16())
        self._sig[key][t] = sig
        self._compose(t)

    def _compose(self, t: int) -> None:
        """Label frame t: locked masks exactly; elsewhere highest probability >= threshold wins."""
        import torch
        H, W = self.height, self.width
        best = np.full((H, W), self.threshold, dtype=np.float32)
        out = np.zeros((H, W), dtype=np.uint8)
        locked = []
        for key in self.structures:
            e = self._store.get(key, t)
            if e is not None and e.mask is not None and self._sig[key][t] == ("key", t, e.version):
                if e.locked:
                    locked.append((key, e.mask))
                    continue
                prob = e.mask.astype(np.float32)
            elif t in self._logits[key]:
                lg = self._logits[key][t].float()[None, None]
                lg = torch.nn.functional.interpolate(lg, size=(H, W), mode="bilinear", align_corners=False)
                prob = torch.sigmoid(lg)[0, 0].numpy()
            else:
                continue
            win = prob >= best
            out[win] = get_structure(key).label
            best = np.where(win, prob, best)
        for key, m in locked:
            out[m] = get_structure(key).label
        self._labels[t] = out

    def propagate(self, progress=None, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Bring every structure up to date with its prompts; returns a copy of `labels` (T, H, W) uint8.

        Encodes first if needed. Only stale frames run (memory + decoder). Raises `CancelledError` on
        cancel: finished frames are kept and marked done, the rest stay stale for the next call."""
        self._require_prompted()
        if not any(self._store.key_frames(k) for k in self.structures) and not any(
                self._logits[k] for k in self.structures):
            raise PromptError("No prompt yet: add points, a box or a mask on a frame (or seed from a prompt-free "
                              "model) before propagating.")
        self.encode(progress, cancel)
        with self._inference():
            self._propagator.run(self.structures, progress or no_progress, cancel)
        return self._labels.copy()

    # ---- prompt-free ---------------------------------------------------------------------------
    def segment_auto(self, progress=None, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Prompt-free segmentation of the whole loop; returns and stores labels (T, H, W) uint8."""
        if self.prompted:
            raise PromptError(f"segment_auto() needs a prompt-free model (MediViSTA, MA-SAM); {self.loaded.family} "
                              "needs a prompt, or seed it with seed_from_auto(auto=<prompt-free model>).")
        self._labels = auto_labels(self.loaded, self._grey, self.structures, progress, cancel, self.precision)
        return self._labels.copy()

    def seed_from_auto(self, frame: int = 0, auto=None, progress=None, cancel=None) -> list:
        """Seed MemSAM key frames on ``frame`` from a prompt-free result: ``auto`` is a prompt-free
        `LoadedModel` (run on a window around ``frame``) or a (T, H, W) label map. Seeds are not locked.
        Returns the structures seeded."""
        self._require_prompted()
        f = self._store.check_frame(frame)
        if auto is None:
            raise PromptError("seed_from_auto needs a prompt-free model or label map (auto=...).")
        if isinstance(auto, np.ndarray):
            if auto.shape != self._labels.shape:
                raise PromptError(f"Seed labels {auto.shape} do not match the cine {self._labels.shape}.")
            lab = auto[f]
        else:
            n = int(getattr(auto.config, "clip_frames", 10))
            start = max(0, min(f - n // 2, self.n_frames - n))
            window = self._grey[start:start + n]
            keys = [get_structure(c).key for c in auto.classes]
            lab = auto_labels(auto, window, keys, progress, cancel)[f - start]
        seeded = []
        for key in self.structures:
            m = lab == get_structure(key).label
            if m.any():
                seeded.append((key, m))
        if not seeded:
            raise PromptError(f"The prompt-free model found none of {', '.join(self.structures)} on frame {f}; "
                              "give a prompt (points, box or mask) instead.")

        def apply():
            for key, m in seeded:
                self._store.set_mask(f, key, m, seed=True)
        self._mutate(apply)
        return [k for k, _ in seeded]

    # ---- persistence ---------------------------------------------------------------------------
    def prompts_to_dict(self) -> dict:
        return self._store.to_dict()

    def load_prompts_dict(self, d: dict) -> None:
        parsed = self._store.from_dict(d)   # validates everything first

        def apply():
            self._store.entries, self._store._counter = parsed["entries"], parsed["counter"]
        self._mutate(apply)

    def save(self, folder) -> None:
        from .session_io import save_session
        save_session(self, folder)

    @classmethod
    def load(cls, folder, cine, loaded, **kwargs) -> "Session":
        from .session_io import load_session
        return load_session(cls, folder, cine, loaded, **kwargs)


# ---- helpers ---------------------------------------------------------------------------------------
def _f16():
    import torch
    return torch.float16


def _cat_features(parts: list):
    if len(parts) == 1:
        return parts[0]
    cls = type(parts[0])
    if hasattr(cls, "cat"):
        return cls.cat(parts)
    import torch
    return cls(**{k: torch.cat([feature_tensors(p)[k] for p in parts]) for k in feature_tensors(parts[0])})


def _torch_device(device: str):
    import torch
    return torch.device(device)


def auto_labels(loaded, grey: np.ndarray, structures: list, progress=None, cancel=None,
                precision: str = "auto") -> np.ndarray:
    """Prompt-free labels (T, H, W) uint8: ``segment_video`` probabilities resized to (H, W), argmax.
    ``grey`` (T, H, W) float 0..255. Classes not in ``structures`` become background."""
    import torch
    import torch.nn.functional as F
    model, dev = loaded.model, loaded.device
    classes = [get_structure(c) for c in loaded.classes]
    T, H, W = grey.shape
    with inference_context(_torch_device(dev), precision):
        images = model.prepare_frames(torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32)).to(dev))
        probs = model.segment_video(images, progress=progress, cancel=cancel)
        lut = np.zeros(len(classes) + 1, dtype=np.uint8)
        for i, s in enumerate(classes):
            lut[i + 1] = s.label if s.key in structures else 0
        out = np.zeros((T, H, W), dtype=np.uint8)
        for t in range(T):
            p = F.interpolate(probs[t:t + 1].float(), size=(H, W), mode="bilinear", align_corners=False)
            out[t] = lut[p[0].argmax(0).cpu().numpy()]
    return out


__all__ = ["Session", "resolve_device", "auto_labels", "DEFAULT_MEMORY_CAP", "CineError", "CheckpointError"]
