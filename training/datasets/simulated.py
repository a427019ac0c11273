"""Simulated echo cines made by `training.simulator` and cached on disk (``case_SEED.npz``).

Each case holds the fan's bounding box as grey frames (zero outside the fan, exactly what the
engine's ultrasound-region crop gives the models), exact labels on every frame (CAMUS values),
the pixel spacing, and the ED/ES frames of the motion model. The clip runs from the first ED to
the next ES (MemSAM's rule); EF is the single-plane disks EF of the true labels over that beat
(`echosam.cardiac`), the same estimator the product reports, so EF errors measure the model and
not the formula.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .clips import DatasetError, Sequence


def _ed_es(ed: list, es: list, n: int) -> tuple:
    """First ED followed by a later ES; else the first ES followed by a later ED (ES -> ED clip)."""
    for e in ed:
        later = [s for s in es if s > e]
        if later:
            return int(e), int(later[0])
    for s in es:
        later = [e for e in ed if e > s]
        if later:
            return int(later[0]), int(s)
    raise DatasetError(f"no ED/ES pair in {n} frames")


class SimulatedSource:
    def __init__(self, root, n_cases=None, names=None, views=None, on_bad_sample: str = "stop"):
        """``root``: a folder of ``case_*.npz``, or several (a list, or comma-separated), used together."""
        roots = _roots(root)
        self.root = roots[0] if len(roots) == 1 else Path(",".join(str(r) for r in roots))
        files = []
        for r in roots:
            if not r.is_dir():
                raise DatasetError(f"{r} is not a folder of simulated cases; make one with "
                                   f"python -m training.simulator.cache --out {r} --seeds 0:100")
            files += sorted(r.glob("case_*.npz"))
        if names:
            keep = set(names)
            files = [f for f in files if f.stem in keep]
        self.views = tuple(views) if views else None
        if self.views:
            files = [f for f in files if json.loads(str(np.load(f)["params"]))["view"] in self.views]
        if n_cases:
            files = files[: int(n_cases)]
        if not files:
            raise DatasetError(f"{self.root} holds no case_*.npz files.")
        self.files = files
        self.on_bad_sample = on_bad_sample
        self._cache: dict = {}

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"SimulatedSource({str(self.root)!r}, n={len(self)})"

    def load(self, i: int) -> Sequence:
        if i in self._cache:
            return self._cache[i]
        seq = load_case(self.files[int(i)])
        if len(self._cache) < 64:
            self._cache[i] = seq
        return seq


def _roots(root) -> list:
    return [Path(r) for r in (root if isinstance(root, (list, tuple)) else str(root).split(","))]


def load_case(f: Path) -> Sequence:
    """One ``case_*.npz`` as a `Sequence` with its ED->ES pair and true EF."""
    try:
        z = np.load(f, allow_pickle=False)
        frames, labels = z["frames"], z["labels"]
        params = json.loads(str(z["params"]))
        ed, es = _ed_es(list(z["ed"]), list(z["es"]), frames.shape[0])
        spacing = tuple(float(s) for s in z["spacing"])
        fps = float(z["fps"])
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{f}: unreadable simulated case ({e})") from None
    return Sequence(name=f.stem, frames=frames.astype(np.float32), labels={t: labels[t] for t in range(len(labels))},
                    spacing=spacing, ed=ed, es=es, ef=true_ef(labels, spacing, ed, es),
                    meta={"source": "simulated", "view": params["view"], "fps": fps,
                          "ed_frames": [int(t) for t in z["ed"]], "es_frames": [int(t) for t in z["es"]], **params})


class FollowedSimulatedSource:
    """Simulated cases that a generator is still writing (``data.follow``), for training on a machine
    that makes its data while it trains: each epoch is ``cases_per_epoch`` draws over the cases on disk
    at that moment, so later epochs see more of them. Waits for ``min_cases`` before the first epoch."""

    def __init__(self, root, cases_per_epoch: int = 1000, min_cases: int = 16, wait_s: float = 1800.0,
                 refresh_s: float = 15.0, on_bad_sample: str = "skip"):
        self.roots = _roots(root)
        self.cases_per_epoch, self.refresh_s = int(cases_per_epoch), float(refresh_s)
        self.on_bad_sample = on_bad_sample
        self.files: list = []
        self._listed = 0.0
        deadline = time.time() + float(wait_s)
        while self._list() < int(min_cases):
            if time.time() > deadline:
                raise DatasetError(f"{','.join(map(str, self.roots))}: fewer than {min_cases} simulated cases after "
                                   f"{wait_s:.0f} s; is python -m training.simulator.cache writing there?")
            time.sleep(min(2.0, float(wait_s)))

    def _list(self) -> int:
        self.files = sorted(f for r in self.roots if r.is_dir() for f in r.glob("case_*.npz"))
        self._listed = time.time()
        return len(self.files)

    def __len__(self) -> int:
        return self.cases_per_epoch

    def __repr__(self) -> str:
        return f"FollowedSimulatedSource({','.join(map(str, self.roots))!r}, on disk={len(self.files)})"

    def load(self, i: int) -> Sequence:
        if time.time() - self._listed > self.refresh_s:
            self._list()
        return load_case(self.files[int(i) % len(self.files)])


def true_ef(labels: np.ndarray, spacing, ed: int, es: int) -> float:
    """Disks EF (percent) from the true labels of the ED and ES frames."""
    from echosam.cardiac import disks_volume_ml, long_axis

    vols = []
    for t in (ed, es):
        lab = labels[t]
        ax = long_axis(lab == 1, lab == 3, spacing)
        if ax is None:
            return float("nan")
        vols.append(disks_volume_ml(lab == 1, ax, spacing))
    return float(100.0 * (vols[0] - vols[1]) / vols[0]) if vols[0] > 0 else float("nan")
