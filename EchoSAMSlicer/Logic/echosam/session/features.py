"""The encoded frames of one cine: every frame through ``prepare_frames`` + ``encode`` once.

Frames are encoded in batches under the session's inference context; the per-frame features are
cached on the model's device when they fit (``embed_cache="auto"``: under half the free GPU
memory), else in host memory (``"host"`` forces that, ``"device"`` forces the GPU). Cancel keeps
the finished batches; the next `encode` continues after them.

Cached features are float16 on host and device (``cache_dtype="fp16"``; half the memory: a 1,000-frame
ViT-B MemSAM loop holds ~0.8 GB instead of ~1.6 GB) and are upcast to float32 when a frame is used, so
every frame reads exactly the same numbers in the first pass and in every re-propagation. A tensor
whose values leave the float16 range stays float32. ``cache_dtype="fp32"`` keeps them as encoded
(`Session` uses it when fp32 is forced).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import PromptError
from ..models.fast import full_precision
from ..models.frame_input import frame_context, neighbour_frames
from ..progress import CancelToken, no_progress
from .in_between import blended_steps, n_steps

EMBED_CACHES = ("auto", "host", "device")
CACHE_DTYPES = ("fp16", "fp32")
FP16_MAX = 65000.0          # float16's largest finite value is 65504


def to_cache_dtype(x, cache_dtype: str):
    """A feature tensor as it is cached: float16 when asked and its values fit, else float32."""
    import torch
    if not x.is_floating_point():
        return x
    if cache_dtype == "fp16" and (x.numel() == 0 or float(x.detach().abs().amax()) < FP16_MAX):
        return x.to(torch.float16)
    return x.to(torch.float32)


class FeatureCache:
    """Features of the frames of ``grey`` (T, H, W) float32 0..255. With ``steps`` k > 1 the frames lie on a
    timeline with k - 1 blended frames between every two (`in_between`; frame t is step t * k): with
    ``every_step`` each step is encoded and indexed by step; without, only the frames are (indexed by frame),
    each with its neighbours one step away on that timeline (a model that takes neighbours, `frame_input`)."""

    def __init__(self, model, grey: np.ndarray, device: str, embed_cache: str = "auto", batch_size: int = 8,
                 cache_dtype: str = "fp16", steps: int = 1, every_step: bool = True) -> None:
        if embed_cache not in EMBED_CACHES:
            raise PromptError(f"embed_cache must be 'auto', 'host' or 'device', not {embed_cache!r}.")
        if cache_dtype not in CACHE_DTYPES:
            raise PromptError(f"cache_dtype must be 'fp16' or 'fp32', not {cache_dtype!r}.")
        self.cache_dtype = cache_dtype
        self.model, self.grey, self.device = model, grey, str(device)
        self.embed_cache, self.batch_size = embed_cache, max(1, int(batch_size))
        self.steps = int(steps)
        self.timeline = n_steps(int(grey.shape[0]), self.steps)
        self.stride = 1 if every_step else self.steps          # entry i is timeline step i * stride
        self.n_frames = self.timeline if every_step else int(grey.shape[0])     # encoded entries
        self.context = frame_context(model)
        self.features = None            # all frames, once complete
        self.cache_device: Optional[str] = None
        self.batches = 0                # encoder calls so far (benchmarks, tests)
        self._parts: list = []

    @property
    def complete(self) -> bool:
        return self.features is not None

    def images(self, start: int, stop: int):
        """Model input (N, 3, S, S) of entries start..stop-1 (with their neighbours in time for a model that
        wants them, `frame_input`), on the model's device."""
        import torch
        if self.stride == 1:
            x = self._window(start, stop)
        else:                       # each frame with its own neighbours on the blended timeline
            x = torch.cat([self._window(i * self.stride, i * self.stride + 1) for i in range(start, stop)])
        return self.model.prepare_frames(x.to(self.device)).to(self.device)

    def _window(self, start: int, stop: int):
        """Timeline steps start..stop-1 with their neighbours (`frame_input.neighbour_frames`)."""
        import torch
        lo, hi = max(0, start - self.context), min(self.timeline, stop + self.context)
        grey = torch.from_numpy(np.ascontiguousarray(blended_steps(self.grey, self.steps, lo, hi)))
        # clamping inside the slice is clamping to the loop: a slice is cut short only at the loop's ends
        return neighbour_frames(grey, start - lo, stop - lo, self.context)

    def frame(self, t: int):
        """Features of frame ``t`` (leading axis 1) on the model's device, float32."""
        import torch
        return self.features.index(t).to(self.device, torch.float32, non_blocking=True)

    @property
    def nbytes(self) -> int:
        """Bytes the cached features hold (0 before `encode` finished)."""
        if self.features is None:
            return 0
        return sum(v.numel() * v.element_size() for v in self.features.tensors().values())

    def _cached(self, feats):
        return feats.map(lambda x: to_cache_dtype(x.to(self.cache_device), self.cache_dtype))

    def _pin(self, feats):
        """Host-cached features of a GPU model in pinned memory: their copies back to the GPU are asynchronous."""
        if self.cache_device == "cpu" and self.device.startswith("cuda"):
            return feats.map(lambda x: x.pin_memory())
        return feats

    def _choose_cache(self, per_frame_bytes: int) -> str:
        if self.embed_cache == "host" or not self.device.startswith("cuda"):
            return "cpu"
        if self.embed_cache == "device":
            return self.device
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return self.device if per_frame_bytes * self.n_frames < 0.5 * free else "cpu"

    def encode(self, progress=None, cancel: Optional[CancelToken] = None) -> None:
        """Encode the frames not encoded yet (call inside the inference context)."""
        if self.features is not None:
            return
        progress = progress or no_progress
        done = sum(len(p) for p in self._parts)
        while done < self.n_frames:
            if cancel is not None:
                cancel.raise_if_cancelled()
            stop = min(self.n_frames, done + self.batch_size)
            feats = self.model.encode(self.images(done, stop))
            self.batches += 1
            if self.cache_device is None:
                width = 2 if self.cache_dtype == "fp16" else 4
                per = sum(width * v.numel() for v in feats.tensors().values()) // (stop - done)
                self.cache_device = self._choose_cache(per)
            self._parts.append(self._cached(feats))
            done = stop
            progress(done, self.n_frames, "encoding")
        parts, self._parts = self._parts, []
        import torch
        # autocast has no rule for concatenating float16 caches; outside it a part kept float32 promotes all
        with full_precision("cpu"), full_precision(torch.device(self.device).type):
            self.features = self._pin(parts[0] if len(parts) == 1 else type(parts[0]).cat(parts))

    # ---- persistence -------------------------------------------------------------------------------
    def tensors(self) -> Optional[dict]:
        """Name -> (T, ...) CPU tensor of the complete features (None before `encode` finished)."""
        if self.features is None:
            return None
        return {k: v.detach().cpu().contiguous() for k, v in self.features.tensors().items()}

    def restore(self, tensors: dict) -> bool:
        """Features saved by `tensors` (checked against the model's feature type); False if unusable."""
        ftype = getattr(self.model, "feature_type", None)
        if ftype is None or set(tensors) != set(ftype.field_names()):
            return False
        feats = ftype.from_tensors(tensors)
        if len(feats) != self.n_frames:
            return False
        per = sum(v.numel() * v.element_size() for v in tensors.values()) // max(1, self.n_frames)
        self.cache_device = self._choose_cache(per)
        self.features = self._pin(self._cached(feats))
        self._parts = []
        return True
