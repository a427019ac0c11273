"""`Session`: the interactive state over one cine and one model, with SAM 2 video-predictor verbs.

- **Encode once** (`features.FeatureCache`): every frame through ``prepare_frames`` + ``encode``.
- **Prompts** (`store.PromptStore`): points, box or mask per (frame, structure). A mask is a
  correction and locks that frame: its label is the user's mask bit for bit, never overwritten.
  ``add_new_points_or_box(..., clear_old_points=True)`` replaces a frame's prompt in one step.
- **Propagate** (`propagation.Propagator`): from key frames forward/backward, memory rebuilt from the
  store; only stale frames (changed segment) re-run memory + decoder, never the encoder. A model that asks
  for it (``substep_fps``) gets blended in-between frames (`in_between`): as neighbours, or as memory steps.
- **Labels** (`results.Results`): structures are separate binary objects over shared embeddings; per
  pixel the structure with the highest probability wins, background where every probability is
  below ``threshold``. The default 0.5 is the natural sigmoid cut; MemSAM's evaluation code
  binarises at 0.6 (reference/models.md §1.5); pass ``threshold=0.6`` to reproduce its numbers.
- **Prompt-free** models (`prompt_free`): `segment` runs ``segment_video``; `seed_from_auto` turns a
  prompt-free result on one frame into key-frame masks of a prompted model (seeds, not locked).
- **One region per prompt** (`echosam.consistency`, ``keep_connected=True``): stray components far
  from the prompt and from the previous frame's mask are dropped, in propagation and prompt-free runs.
- **Undo** restores the store and every frame result/label changed since the last prompt change.
- **Persistence** (`persistence`): `save` / `load`, through the public `snapshot` / `restore`.

Frames reach models as float32 (N, H, W) 0..255 grey (`echosam.cine.grey_0_255`: uint8 as is,
other dtypes min-max scaled over the whole cine). Model outputs (S x S) are resized bilinearly back
to (H, W) before thresholding (`transforms.FrameTransform`).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import numpy as np

from ..cine import grey_0_255
from ..compute import PRECISIONS, choose_path, encoder_batch
from ..consistency import PromptedRule, keep_connected_labels
from ..errors import PromptError
from ..hysteresis import grow_problem
from ..models.fast import inference_context, optimise_for_inference
from ..progress import CancelToken, no_progress
from ..structures import get_structure
from .features import FeatureCache
from .in_between import MAX_SUBSTEPS, MAX_WALKED_STEPS, check_substeps, substeps_for
from .prompt_free import read_labels, seed_masks
from .propagation import Propagator, frame_signatures
from .results import Results
from .store import PromptStore
from .transforms import FrameTransform

DEFAULT_MEMORY_CAP = 16  # working-memory frames besides the key frame (models/memsam.py, point 6)
UNDO_DEPTH = 50


class Session:
    """See the module docstring and docs/engine_api.md ("Session")."""

    def __init__(self, cine, loaded, structures=None, memory_cap="config", embed_cache: str = "auto",
                 threshold: Optional[float] = None, batch_size="auto", precision: str = "auto",
                 keep_connected: bool = True, cache_dtype: str = "auto", substeps="auto", grow="config",
                 companion=None, heart_zoom: bool = True) -> None:
        """``memory_cap``: working-memory frames beyond the permanent key frame ("config": the model
        config's ``memory_cap``, else DEFAULT_MEMORY_CAP; None = unbounded). ``threshold``: on sigmoid
        probabilities (None: the model config's, else 0.5). ``batch_size``: frames per encoder call ("auto":
        `echosam.compute.encoder_batch`, sized to the cache on a CPU, 8 on a GPU).
        ``precision``: "auto" = the fast path `echosam.compute.choose_path` picks (bf16 autocast on CUDA and
        on CPUs with native bf16, else fp32); "fp32" forces fp32; "bf16" / "fp16" ask for that autocast.
        ``keep_connected``: drop stray components far from the prompt and the previous frame's mask
        (`echosam.consistency`; locked frames are never touched); False keeps every component.
        ``cache_dtype``: the cached features' dtype (`features.FeatureCache`), "auto" = fp16, or fp32 when
        fp32 is forced; "fp16" or "fp32" to choose. ``substeps``: in-between steps per frame interval of a
        prompted model (`in_between`): "auto" = what the model's ``substep_fps`` asks at this cine's frame
        rate (1 when it asks nothing), or 1..MAX_SUBSTEPS (MAX_WALKED_STEPS where memory walks every step).
        ``grow``: {structure: lower threshold} its mask grows to over unclaimed pixels connected to it
        (`echosam.hysteresis`); "config": the model config's ``grow_thresholds``; None or {}: none.
        ``companion``: a prompt-free model's probabilities on this cine (`echosam.companion.Companion`), averaged
        into a prompted model's on frames read from boxes or points; None: the model alone. ``heart_zoom``: a
        prompt-free model reads the heart a second time, magnified, where its config's ``heart_zoom`` asks
        (`echosam.heart_zoom`; the box is ``auto_zoom`` after `segment_auto`); False: one reading."""
        if memory_cap == "config":
            memory_cap = getattr(loaded.config, "memory_cap", DEFAULT_MEMORY_CAP)
        if threshold is None:
            threshold = getattr(loaded.config, "threshold", 0.5)
        if not 0.0 < float(threshold) < 1.0:
            raise PromptError(f"threshold must be in (0, 1), got {threshold}.")
        grow = getattr(loaded.config, "grow_thresholds", None) if grow == "config" else grow
        problem = grow_problem(grow or {}, float(threshold))
        if problem:
            raise PromptError(f"{problem}.")
        if precision not in PRECISIONS:
            raise PromptError(f"precision must be auto, fp32, fp16 or bf16, not {precision!r}.")
        self.cine, self.loaded, self.model = cine, loaded, loaded.model
        self.device, self.precision = str(loaded.device), precision
        self.path = choose_path(self.device, precision, width=loaded.config.sam.embed_dim)   # sets threads too
        import torch
        optimise_for_inference(self.model, torch.device(self.device))
        self.prompted = bool(loaded.prompted)
        self.structures = self._check_structures(structures)
        self.memory_cap, self.embed_cache, self.threshold = memory_cap, embed_cache, float(threshold)
        self.img_size = int(loaded.config.sam.img_size)
        self.n_frames, self.height, self.width = cine.frames.shape
        self.grey = grey_0_255(cine.frames)
        self.transform = FrameTransform(self.height, self.width, self.img_size)
        self.prompts = PromptStore(self.n_frames, (self.height, self.width), self.structures)
        self.results = Results(self.prompts, self.transform, self.structures, self.n_frames, self.threshold,
                               grow, self._check_companion(companion), fill_cavities=bool(keep_connected))
        if batch_size == "auto":
            sam = loaded.config.sam
            side = int(getattr(self.model, "tokens", sam.img_size // sam.patch_size))
            batch_size = encoder_batch(self.device, side * side, sam.embed_dim)
        if cache_dtype == "auto":
            cache_dtype = "fp32" if precision == "fp32" else "fp16"
        # a memory that carries nothing from one frame to the next (no working, no sensory memory) gains from
        # the blended frames only as each frame's neighbours: only the frames are encoded and decoded
        carries = memory_cap is None or memory_cap > 0 or getattr(loaded.config, "sensory_memory", True)
        self.substeps = self._choose_substeps(substeps, MAX_WALKED_STEPS if carries else MAX_SUBSTEPS)
        self.features = FeatureCache(self.model, self.grey, self.device, embed_cache, batch_size, cache_dtype,
                                     self.substeps, every_step=carries)
        self.keep_connected = bool(keep_connected)
        self.heart_zoom, self.auto_zoom = bool(heart_zoom), None
        self.propagator = Propagator(self.model, self.features, self.prompts, self.results, self.transform,
                                     memory_cap, PromptedRule(self.img_size, self.threshold, self.transform.point,
                                                              enabled=self.keep_connected),
                                     self.substeps if carries else 1, carries=carries)
        self._history: list = []     # [(store snapshot, results Change)], oldest first

    def _check_structures(self, structures) -> list:
        classes = [get_structure(c).key for c in self.loaded.classes] or ["lv"]
        if structures is None:
            structures = ("lv",) if self.prompted else classes
        keys = [get_structure(s).key for s in ([structures] if isinstance(structures, str) else structures)]
        missing = [s for s in keys if s not in classes]
        family = self.loaded.family
        if missing and not self.prompted:
            raise PromptError(f"The {family} model segments {', '.join(classes)}, not {', '.join(missing)}.")
        if missing:
            # A propagator asked for a structure it never learnt gives confident wrong masks that take
            # pixels from the structures it knows (labels are resolved by highest probability).
            raise PromptError(f"This {family} model was trained to propagate {', '.join(classes)} only, not "
                              f"{', '.join(missing)}. Choose structures among {', '.join(classes)}, use a MemSAM "
                              "trained for them (training/), or a prompt-free model (MediViSTA / MA-SAM).")
        return keys

    def _check_companion(self, companion):
        if companion is None:
            return None
        if not self.prompted:
            raise PromptError("A companion averages into a prompted model's reading; this model needs no prompt.")
        shape = (self.n_frames, self.height, self.width)
        bad = {k: tuple(v.shape) for k, v in companion.probs.items() if tuple(v.shape) != shape}
        if bad:
            raise PromptError(f"The companion's probabilities {bad} do not match the cine {shape}.")
        return companion

    @property
    def companion(self):
        """The `echosam.companion.Companion` averaged into this session's frames read from boxes or points, or
        None."""
        return self.results.companion

    def _choose_substeps(self, substeps, cap: int) -> int:
        if substeps == "auto":
            return substeps_for(self.cine.fps, getattr(self.loaded.config, "substep_fps", None), cap) \
                if self.prompted else 1
        k = check_substeps(substeps, cap)
        if k > 1 and not self.prompted:
            raise PromptError(f"substeps apply to propagation; the {self.loaded.family} model is prompt-free.")
        return k

    @property
    def compute_path(self) -> str:
        """The path that runs, in words: e.g. "cpu bf16 autocast (amx_bf16), 2 threads"."""
        return self.path.describe()

    def _inference(self):
        import torch
        return inference_context(torch.device(self.device), self.path.dtype)

    # ---- encoding ------------------------------------------------------------------------------
    @property
    def encoded(self) -> bool:
        return self.features.complete

    @property
    def encoder_batches(self) -> int:
        return self.features.batches

    @property
    def peak_memory_entries(self) -> int:
        return self.propagator.peak_memory_entries

    def encode(self, progress=None, cancel: Optional[CancelToken] = None) -> None:
        """Encode every frame once (prompted models); later calls return at once. Cancel keeps finished
        batches. Prompt-free models encode inside `segment`, so this does nothing for them."""
        if not self.prompted:
            return
        with self._inference():
            self.features.encode(progress, cancel)

    # ---- prompts (validated first; state unchanged on error) -----------------------------------
    def _require_prompted(self) -> None:
        if not self.prompted:
            raise PromptError(f"The {self.loaded.family} model is prompt-free: it takes no points, boxes or masks. "
                              "Use segment(), or load a MemSAM (or SAM) model to prompt and correct.")

    def _mutate(self, fn):
        """Apply one prompt change as one undo step; nothing is recorded when ``fn`` returns False."""
        self._require_prompted()
        snap = self.prompts.snapshot()
        changed = fn()
        if changed is False:
            return False
        self._history.append((snap, self.results.open_change()))
        del self._history[:-UNDO_DEPTH]
        return True

    def add_new_points_or_box(self, frame, structure, points=None, labels=None, box=None,
                              clear_old_points: bool = True) -> bool:
        """SAM 2's verb: points (N, 2) cine pixels (x=col, y=row) with 1 include / 0 exclude labels, and/or a
        box (x0, y0, x1, y1). ``clear_old_points=True`` makes them the frame's whole prompt (its earlier
        points and box are dropped); False adds the points and replaces the box only if one is given.
        Returns False when nothing changed (the frame already holds exactly this prompt)."""
        keep = "nothing" if clear_old_points else "box_and_points"
        return self._mutate(lambda: self.prompts.set_points_and_box(frame, structure, points, labels, box, keep))

    def add_points(self, frame, structure, points_xy, labels, clear_old_points: bool = False) -> bool:
        """Include (1) / exclude (0) points, (N, 2) cine pixels, added to the frame's points (or replacing
        the frame's whole prompt with ``clear_old_points=True``)."""
        return self.add_new_points_or_box(frame, structure, points_xy, labels, None, clear_old_points)

    def add_box(self, frame, structure, box) -> bool:
        """Box (x0, y0, x1, y1) in cine pixels, replacing the frame's box (its points are kept)."""
        return self._mutate(lambda: self.prompts.set_points_and_box(frame, structure, box=box, keep="points"))

    def set_mask(self, frame, structure, mask) -> None:
        """A corrected (H, W) mask: locks ``frame`` for ``structure``; output bit for bit."""
        self._mutate(lambda: self.prompts.set_mask(frame, structure, mask))

    def unlock(self, frame, structure=None) -> None:
        self._mutate(lambda: self.prompts.unlock(frame, structure))

    def clear(self, structure=None) -> None:
        """Remove every prompt (of one structure, or all); the results go stale."""
        self._mutate(lambda: self.prompts.clear(structure))

    reset_state = clear

    def undo(self) -> bool:
        """Restore the prompts, results and labels from before the last prompt change. False if none."""
        if not self._history:
            return False
        snap, change = self._history.pop()
        self.prompts.restore(snap)
        self.results.undo(change)
        self.results.change = self._history[-1][1] if self._history else None
        return True

    # ---- state queries -------------------------------------------------------------------------
    @property
    def undo_steps(self) -> int:
        """How many prompt changes `undo` can take back."""
        return len(self._history)

    @property
    def labels(self) -> np.ndarray:
        """(T, H, W) uint8 label map (structures.py values); a read-only view."""
        v = self.results.labels.view()
        v.flags.writeable = False
        return v

    @property
    def key_frames(self) -> dict:
        return {k: self.prompts.key_frames(k) for k in self.structures}

    @property
    def locked_frames(self) -> dict:
        return {k: self.prompts.locked_frames(k) for k in self.structures}

    @property
    def seed_frames(self) -> dict:
        return {k: [f for f in self.prompts.key_frames(k) if self.prompts.get(k, f).seed] for k in self.structures}

    @property
    def done_frames(self) -> dict:
        """Frames whose result is up to date with the current prompts, per structure."""
        out = {}
        for k in self.structures:
            want = frame_signatures(self.prompts, k, self.n_frames)
            out[k] = [t for t in range(self.n_frames) if want[t] is not None and want[t] == self.results.signature(k, t)]
        return out

    def stale_frames(self, structure) -> list:
        return self.propagator.stale(get_structure(structure).key)

    # ---- running the model ---------------------------------------------------------------------
    def segment(self, progress=None, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Bring the labels up to date, whatever the model: `propagate` (prompted) or `segment_auto`
        (prompt-free). Returns a copy of `labels` (T, H, W) uint8."""
        return (self.propagate if self.prompted else self.segment_auto)(progress=progress, cancel=cancel)

    def propagate(self, progress=None, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Bring every structure up to date with its prompts; returns a copy of `labels` (T, H, W) uint8.

        Encodes first if needed. Only stale frames run (memory + decoder). Raises `CancelledError` on
        cancel: finished frames are kept and marked done, the rest stay stale for the next call."""
        self._require_prompted()
        if not any(self.prompts.key_frames(k) for k in self.structures) and not self.results.has_any():
            raise PromptError("No prompt yet: add points, a box or a mask on a frame (or seed from a prompt-free "
                              "model) before propagating.")
        self.encode(progress, cancel)
        with self._inference():
            self.propagator.run(self.structures, progress or no_progress, cancel)
        return self.results.labels.copy()

    def segment_auto(self, progress=None, cancel: Optional[CancelToken] = None) -> np.ndarray:
        """Prompt-free segmentation of the whole loop; returns and stores labels (T, H, W) uint8."""
        if self.prompted:
            raise PromptError(f"segment_auto() needs a prompt-free model (MediViSTA, MA-SAM); {self.loaded.family} "
                              "needs a prompt, or seed it with seed_from_auto(auto=<prompt-free model>).")
        tidy = partial(keep_connected_labels, structures=self.structures, enabled=self.keep_connected)
        zoom = getattr(self.loaded.config, "heart_zoom", None) if self.heart_zoom else None
        labels, self.auto_zoom = read_labels(self.loaded, self.grey, self.structures, progress, cancel, self.precision,
                                             self.results.grow, tidy, zoom)
        self.results.set_labels(labels)
        return self.results.labels.copy()

    def seed_from_auto(self, frame: int = 0, auto=None, progress=None, cancel=None) -> list:
        """Seed key frames on ``frame`` from a prompt-free result: ``auto`` is a prompt-free `LoadedModel`
        (run on a window around ``frame``), a (T, H, W) label map, or the (H, W) labels of ``frame``. Seeds
        are not locked. Returns the structures seeded."""
        self._require_prompted()
        f = self.prompts.check_frame(frame)
        if auto is None:
            raise PromptError("seed_from_auto needs a prompt-free model or label map (auto=...).")
        if isinstance(auto, np.ndarray):
            if auto.shape not in (self.results.labels.shape, self.results.labels.shape[1:]):
                raise PromptError(f"Seed labels {auto.shape} do not match the cine {self.results.labels.shape}.")
            lab = auto[f] if auto.ndim == 3 else auto
        else:
            from ..seeding import frame_labels
            lab = frame_labels(auto, self.grey, f, [get_structure(c).key for c in auto.classes], progress, cancel)
        seeded = seed_masks(lab, self.structures)
        if not seeded:
            raise PromptError(f"The prompt-free model found none of {', '.join(self.structures)} on frame {f}; "
                              "give a prompt (points, box or mask) instead.")

        def apply():
            for key, m in seeded:
                self.prompts.set_mask(f, key, m, seed=True)
        self._mutate(apply)
        return [k for k, _ in seeded]

    # ---- persistence ---------------------------------------------------------------------------
    def prompts_to_dict(self) -> dict:
        return self.prompts.to_dict()

    def load_prompts_dict(self, d: dict) -> None:
        """Replace every prompt by those of a `prompts_to_dict` dictionary (validated; one undo step)."""
        self._mutate(lambda: self.prompts.load_dict(d))

    def snapshot(self) -> dict:
        """Everything `restore` needs besides the cine and model: prompts (JSON-able), results (signatures
        + arrays) and the encoded features (name -> CPU tensor, or None)."""
        return {"prompts": self.prompts.to_dict(), "results": self.results.state(),
                "features": self.features.tensors()}

    def restore(self, snapshot: dict) -> None:
        """The state of a `snapshot` of a session on the same cine and model (no undo history)."""
        self.prompts.load_dict(snapshot["prompts"])
        self.results.load_state(snapshot["results"])
        if snapshot.get("features"):
            self.features.restore(snapshot["features"])
        self.propagator.forget()
        self._history.clear()
        self.results.change = None

    def save(self, folder) -> None:
        from .persistence import save_session
        save_session(self, folder)

    @classmethod
    def load(cls, folder, cine, loaded, **kwargs) -> "Session":
        from .persistence import load_session
        return load_session(cls, folder, cine, loaded, **kwargs)
