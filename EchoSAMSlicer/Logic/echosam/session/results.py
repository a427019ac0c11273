"""Per-frame results of a session: each structure's logits and signature, and the label map.

The propagator writes here (`write`), never into the Session. A frame's *signature* says which
prompt version produced it (`propagation.frame_signatures`); a frame is stale when its signature
differs from the current one. Labels are composed per frame: locked masks exactly; elsewhere the
structure with the highest probability wins, background where every probability is below the
threshold; a structure in ``grow`` then grows into background pixels connected to it where its own
probability passes its lower threshold (`echosam.hysteresis`). With a `echosam.companion.Companion`, a frame
read from boxes or points averages each structure's probability with the companion's before all this, keeps
only the parts that overlap the structure's own mask, and fills a cavity's holes. Writes made while a
`Change` is open keep before-images, so `undo` restores them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..companion import Companion, keep_overlapping
from ..consistency import CAVITIES
from ..hysteresis import grow_into_free
from ..structures import get_structure


class Change:
    """Before-images of the frames written since one prompt change (for undo)."""

    def __init__(self) -> None:
        self.frames: dict = {}      # (structure, t) -> (logits or None, signature)
        self.labels: dict = {}      # t -> (H, W) uint8


class Results:
    """Results of ``structures`` over ``n_frames`` frames; ``store`` gives locked masks for composing;
    ``grow``: {structure: lower threshold} (`echosam.hysteresis`); ``companion``: a `Companion` or None;
    ``fill_cavities``: a blended cavity's holes are filled (the connected-region rule is on)."""

    def __init__(self, store, transform, structures: list, n_frames: int, threshold: float, grow=None,
                 companion=None, fill_cavities: bool = True) -> None:
        self.store, self.transform = store, transform
        self.structures, self.n_frames, self.threshold = list(structures), int(n_frames), float(threshold)
        self.grow = {k: float(v) for k, v in (grow or {}).items() if k in self.structures}
        self.signatures = {k: [None] * self.n_frames for k in self.structures}
        self.logits = {k: {} for k in self.structures}   # structure -> {frame: (S, S) float16 host tensor}
        self.labels = np.zeros((self.n_frames, transform.height, transform.width), dtype=np.uint8)
        self.change = None                                # the open `Change`, if any
        self.companion, self.fill_cavities = companion, bool(fill_cavities)

    def signature(self, key: str, t: int):
        return self.signatures[key][t]

    def has_any(self) -> bool:
        return any(self.logits[k] for k in self.structures)

    def write(self, key: str, t: int, logits, sig) -> None:
        """Frame ``t`` of ``key``: model logits (any shape of S*S values; None = no result) and signature."""
        import torch
        if self.change is not None:
            self.change.frames.setdefault((key, t), (self.logits[key].get(t), self.signatures[key][t]))
            self.change.labels.setdefault(t, self.labels[t].copy())
        if logits is None:
            self.logits[key].pop(t, None)
        else:
            S = self.transform.img_size
            self.logits[key][t] = logits.detach().reshape(S, S).to("cpu", dtype=torch.float16)
        self.signatures[key][t] = sig
        self.compose(t)

    def compose(self, t: int) -> None:
        """Label frame t from the stored masks and logits."""
        import torch
        H, W = self.transform.height, self.transform.width
        best = np.full((H, W), self.threshold, dtype=np.float32)
        out = np.zeros((H, W), dtype=np.uint8)
        locked, probs, own = [], {}, {}
        for key in self.structures:
            e = self.store.get(key, t)
            if e is not None and e.mask is not None and self.signatures[key][t] == ("key", t, e.version):
                if e.locked:
                    locked.append((key, e.mask))
                    continue
                prob = e.mask.astype(np.float32)
            elif t in self.logits[key]:
                prob = probs[key] = torch.sigmoid(self.transform.to_frame(self.logits[key][t])).numpy()
                if self.companion is not None and self.companion.applies(self.store, key, self.signatures[key][t]):
                    own[key] = prob >= self.threshold
                    prob = probs[key] = self.companion.blend(key, t, prob)
            else:
                continue
            win = prob >= best
            out[win] = get_structure(key).label
            best = np.where(win, prob, best)
        for key, mine in own.items():           # blending moves an outline; it never adds a region
            label = get_structure(key).label
            drawn = out == label
            kept = keep_overlapping(drawn, mine)
            out[drawn & ~kept] = 0
            if self.fill_cavities and key in CAVITIES:      # nor a hole in a cavity (the connected-region rule's)
                out[ndimage.binary_fill_holes(kept) & ~kept] = label
        for key, m in locked:
            out[m] = get_structure(key).label
        for key, low in self.grow.items():      # model probabilities only: prompt and locked masks stay as given
            if key in probs:
                grow_into_free(out, get_structure(key).label, probs[key], low)
        self.labels[t] = out

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace the whole label map (prompt-free results, restored sessions)."""
        self.labels[...] = labels

    # ---- undo ------------------------------------------------------------------------------------
    def open_change(self) -> Change:
        self.change = Change()
        return self.change

    def undo(self, change: Change) -> None:
        for (key, t), (logit, sig) in change.frames.items():
            if logit is None:
                self.logits[key].pop(t, None)
            else:
                self.logits[key][t] = logit
            self.signatures[key][t] = sig
        for t, row in change.labels.items():
            self.labels[t] = row
        if self.change is change:
            self.change = None

    # ---- persistence -----------------------------------------------------------------------------
    def state(self) -> dict:
        """JSON-able signatures plus arrays: labels (T, H, W) uint8, per structure frames + (n, S, S) logits."""
        S = self.transform.img_size
        arrays = {"labels": self.labels.copy()}
        for k in self.structures:
            frames = sorted(self.logits[k])
            arrays[f"frames_{k}"] = np.asarray(frames, dtype=np.int64)
            arrays[f"logits_{k}"] = (np.stack([self.logits[k][t].numpy() for t in frames]) if frames
                                     else np.zeros((0, S, S), dtype=np.float16))
        sigs = {k: [None if x is None else list(x) for x in self.signatures[k]] for k in self.structures}
        record = None
        if self.companion is not None:
            record, more = self.companion.state()
            arrays.update(more)
        return {"signatures": sigs, "arrays": arrays, "companion": record}

    def load_state(self, state: dict) -> None:
        import torch
        arrays = state["arrays"]
        self.labels[...] = arrays["labels"]
        self.companion = Companion.from_state(state.get("companion"), arrays)
        for k in self.structures:
            self.logits[k] = {int(t): torch.from_numpy(np.array(lg))
                              for t, lg in zip(arrays[f"frames_{k}"], arrays[f"logits_{k}"])}
            self.signatures[k] = [None if v is None else (str(v[0]), int(v[1]), int(v[2]))
                                  for v in state["signatures"][k]]
