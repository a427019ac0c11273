"""Synthetic echo cines (`echosam.phantom`) as a sequence source: exact labels (LV, MYO, LA on
every frame), known EF, made on the fly. Case ``i`` uses seed ``seed + i``, EF and heart rate drawn
from that seed, so a training set (seed 0) and a held-out set (e.g. seed 100000) never share a cine.
"""
from __future__ import annotations

import numpy as np

from .clips import DatasetError, Sequence


class PhantomSource:
    def __init__(self, n_cases: int = 64, seed: int = 0, n_frames: int = 24, size: int = 96, fps: float = 30.0,
                 ef_range: tuple = (30.0, 70.0), heart_rate_range: tuple = (60.0, 90.0), on_bad_sample: str = "stop",
                 **phantom_kwargs):
        if n_cases < 1:
            raise DatasetError(f"A phantom dataset needs at least one case, got n_cases={n_cases}.")
        self.n_cases, self.seed, self.n_frames, self.size, self.fps = int(n_cases), int(seed), int(n_frames), int(size), fps
        self.ef_range, self.hr_range = tuple(ef_range), tuple(heart_rate_range)
        self.kwargs = dict(phantom_kwargs)
        self.on_bad_sample = on_bad_sample
        self._cache: dict = {}

    def __len__(self) -> int:
        return self.n_cases

    def __repr__(self) -> str:
        return f"PhantomSource(n_cases={self.n_cases}, seed={self.seed})"

    def load(self, i: int) -> Sequence:
        if i in self._cache:
            return self._cache[i]
        from echosam.phantom import make_phantom

        seed = self.seed + int(i)
        rng = np.random.default_rng([seed, 7])
        ef = float(rng.uniform(*self.ef_range))
        hr = float(rng.uniform(*self.hr_range))
        ph = make_phantom(n_frames=self.n_frames, ef=ef, heart_rate=hr, fps=self.fps, size=self.size, seed=seed,
                          **self.kwargs)
        frames = np.asarray(ph.cine.frames).astype(np.float32)
        labels = np.asarray(ph.labels)
        ed_frames, es_frames = list(ph.ed_frames), list(ph.es_frames)
        if not ed_frames or not es_frames:
            raise DatasetError(f"phantom seed {seed}: no ED/ES frame in {self.n_frames} frames; use more frames.")
        ed = int(ed_frames[0])
        later = [int(e) for e in es_frames if int(e) > ed]
        es = later[0] if later else int(es_frames[0])
        seq = Sequence(name=f"phantom_{seed:06d}", frames=frames, labels={t: labels[t].astype(np.uint8) for t in
                                                                          range(labels.shape[0])},
                       spacing=tuple(float(s) for s in ph.cine.spacing), ed=ed, es=es, ef=float(ph.true_ef),
                       meta={"source": "phantom", "seed": seed, "fps": self.fps, "heart_rate": hr})
        if len(self._cache) < 512:
            self._cache[i] = seq
        return seq
