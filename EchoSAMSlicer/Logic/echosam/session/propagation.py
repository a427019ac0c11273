"""Propagation of prompted video models (MemSAM, SAM): which frames are stale, and how they are
recomputed, from the features, the prompt store and the model, into a `results.Results`.

Policy (docs/engine_api.md, "Session"): each structure propagates from its key frames (frames with a
prompt or mask). Frame ``t`` belongs to exactly one *segment*:
- ``("key", k, v)``  the key frame ``k`` itself (prompt version ``v``);
- ``("fwd", k, v)``  forward from key ``k`` up to (not including) the next key frame;
- ``("bwd", k0, v)`` backward from the first key frame ``k0`` down to frame 0.
The tuple is the frame's *signature*: a frame's result depends only on it (features are fixed), so
a frame is stale exactly when its stored signature differs from the current one. A correction on
frame k therefore re-runs k..next key frame and nothing else.

Per segment the memory is REBUILT from the store, never taken from stale state: a fresh
`MemoryBank(cap)` gets the key frame as its permanent entry (value encoded from the key frame's mask
or prompt logits), then every propagated frame is read out from memory, decoded, value-encoded and
appended to the FIFO working memory (MemSAM's per-video loop, models.md §1.2, with XMem's bounded
working memory so memory stays flat on long loops). The key frame's bootstrap value (its prompt
logits, written only to predict the key frame again from memory) always deep-updates the hidden
state, as the released loop does, whatever ``deep_update_at_eval`` says; later writes follow it.

Every frame read out from memory goes through the connected-region rule (`echosam.consistency`,
``connected_rule``; the identity when switched off) before it is stored or enters memory: stray
components far from the prompt and from the previous frame's mask are dropped. Mask key frames
(corrections, seeds) are never passed through it.

With ``steps`` k > 1 (`in_between`; a memory that carries state from frame to frame) the features hold k
steps per frame interval (frame ``t`` is step ``t * k``): between two frames of a segment memory reads and
writes the k - 1 blended steps too, and only the real frames become results. The cavity beside a wall
(`consistency` rule 3b) on a blended step is the cavity's own result on that step, kept from this
propagator's runs (`between`).

Cancel is checked between frames: finished frames keep their new result and signature; the bank and
hidden state at the stop are kept so the next propagate continues where it stopped.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..models.memory import MemoryBank
from ..progress import CancelToken
from ..structures import STRUCTURES, box_helper_points, get_structure, wrapped_first

WRAPPED = {s.wraps for s in STRUCTURES.values() if s.wraps}   # cavities a wall's rule looks beside
MASK_LOGIT = 10.0   # a user/seed mask enters memory as +-10 logits (engine_api.md)


def frame_signatures(store, key: str, n_frames: int) -> list:
    """The current signature of every frame of structure ``key`` (None where there is no key frame)."""
    keys = store.key_frames(key)
    sig: list = [None] * n_frames
    if not keys:
        return sig
    ver = {k: store.get(key, k).version for k in keys}
    for t in range(keys[0]):
        sig[t] = ("bwd", keys[0], ver[keys[0]])
    for i, k in enumerate(keys):
        sig[k] = ("key", k, ver[k])
        stop = keys[i + 1] if i + 1 < len(keys) else n_frames
        for t in range(k + 1, stop):
            sig[t] = ("fwd", k, ver[k])
    return sig


def segments(store, key: str, n_frames: int) -> list:
    """[(key_frame, frames in propagation order)] for structure ``key``: forward segments, then backward."""
    keys = store.key_frames(key)
    out = []
    for i, k in enumerate(keys):
        stop = keys[i + 1] if i + 1 < len(keys) else n_frames
        out.append((k, list(range(k + 1, stop))))
    if keys and keys[0] > 0:
        out.append((keys[0], list(range(keys[0] - 1, -1, -1))))
    return out


class Propagator:
    """Runs memory + decoder for the stale frames (the encoder never runs here).

    ``features``: a `features.FeatureCache` (complete); ``store``: the `store.PromptStore`;
    ``results``: the `results.Results` written to; ``transform``: `transforms.FrameTransform`;
    ``memory_cap``: working-memory frames beyond the permanent key frame (None = unbounded);
    ``connected_rule``: ``rule(key, logits, previous=, prompt=) -> logits`` applied to every memory
    readout (`echosam.consistency.PromptedRule`), None for none; ``steps``: memory steps per frame
    interval (the features' timeline, `in_between`); ``carries`` False: the memory keeps nothing of a
    propagated frame (no working memory, no sensory memory), so no frame's value is encoded for it.
    """

    def __init__(self, model, features, store, results, transform, memory_cap, connected_rule=None,
                 steps: int = 1, carries: bool = True) -> None:
        self.model, self.features, self.store, self.results = model, features, store, results
        self.transform, self.memory_cap = transform, memory_cap
        self.connected_rule = connected_rule
        self.steps = int(steps)
        self.carries = bool(carries)
        self.between: dict = {}         # (structure, step) -> logits of a blended step (cavities only)
        self.device = features.device
        self.resume: dict = {}          # (structure, sig) -> (next position, bank, hidden, pending)
        self.key_cache: dict = {}       # (structure, frame, version[, "out"]) -> key-frame logits / output
        self.peak_memory_entries = 0

    def forget(self) -> None:
        """Drop cached key outputs and resume points (after the store was replaced wholesale)."""
        self.resume.clear()
        self.key_cache.clear()
        self.between.clear()

    # ---- model inputs --------------------------------------------------------------------------
    def key_logits(self, key: str, k: int) -> torch.Tensor:
        """(1,1,S,S) logits of key frame ``k``: +-10 from a mask, else the decoder on points/box."""
        e = self.store.get(key, k)
        ck = (key, k, e.version)
        if ck in self.key_cache:
            return self.key_cache[ck]
        if e.mask is not None:
            logits = (self.transform.mask_to_model(e.mask).float() * 2 - 1) * MASK_LOGIT
        else:
            pts = lab = box = None
            if e.points:
                pts = torch.tensor(self.transform.points(e.points), dtype=torch.float32, device=self.device)[None]
                lab = torch.tensor(e.labels, dtype=torch.int64, device=self.device)[None]
            if e.box is not None:
                box_xy = self.transform.box(e.box)
                box = torch.tensor([box_xy], dtype=torch.float32, device=self.device)
                rule = getattr(getattr(self.model, "config", None), "box_helpers", "centre")
                helpers = box_helper_points(key, box_xy, rule) if pts is None else []
                if helpers:
                    pts = torch.tensor([[(x, y) for x, y, _ in helpers]], dtype=torch.float32, device=self.device)
                    lab = torch.tensor([[lb for _, _, lb in helpers]], dtype=torch.int64, device=self.device)
            logits = self.model.decode_prompt(self.features.frame(k * self.steps), points=pts, point_labels=lab,
                                              box=box)
        logits = logits.float().to(self.device)
        self.key_cache = {c: v for c, v in self.key_cache.items() if c[:2] != ck[:2] or c[2] == ck[2]}
        self.key_cache[ck] = logits
        return logits

    def _push(self, bank, hidden, step: int, logits: torch.Tensor, permanent: bool = False, deep_update=None):
        """Write ``logits`` on feature step ``step`` (frame ``t`` is step ``t * steps``) into memory."""
        f = self.features.frame(step)
        value, hidden = self.model.encode_value(self.features.images(step, step + 1), f, logits, hidden,
                                                deep_update=deep_update)
        bank.add(f.key, f.shrinkage, value, permanent=permanent, frame=step)
        return hidden

    def key_output(self, key: str, k: int):
        """Key frame ``k`` -> (output logits (1,1,S,S), hidden state to continue from), cached per version.

        A mask key frame seeds memory directly and is its own output. A points/box key frame of a model
        with ``key_frame_from_memory`` follows MemSAM's released loop (models.md §1.2): the prompt
        decoder's logits only seed memory (a bootstrap value that always deep-updates), then the key
        frame is predicted again from that memory; this prediction is the output and becomes the
        permanent memory entry; ``model.key_frame_reads(key)`` > 1 repeats that, each time from a fresh memory
        of the last prediction. Other models (SAM) output the prompt's own prediction.
        """
        e = self.store.get(key, k)
        ck = (key, k, e.version, "out")
        if ck not in self.key_cache:
            klog = self.key_logits(key, k)
            hidden = self.model.init_hidden(1).to(self.device)
            if e.mask is None and self.model.key_frame_from_memory:
                for _ in range(self.model.key_frame_reads(key)):
                    hidden = self.model.init_hidden(1).to(self.device)
                    bank = MemoryBank(self.memory_cap)
                    hidden = self._push(bank, hidden, k * self.steps, klog, permanent=True, deep_update=True)
                    klog, hidden = self.from_memory(key, k * self.steps, bank, hidden, prompt=e)
            self.key_cache[ck] = (klog, hidden)
        return self.key_cache[ck]

    def from_memory(self, key: str, step: int, bank, hidden, previous=None, prompt=None):
        """Memory readout + decoder for feature step ``step`` -> (logits (1,1,S,S), hidden), then the
        connected-region rule against ``previous`` (the last step's logits in propagation order) and/or
        ``prompt``. A blended step's cavity logits are kept for the wall that runs after it."""
        logits, hidden = self.model.segment_from_memory(self.features.frame(step), bank, hidden)
        if self.connected_rule is not None:
            logits = self.connected_rule(key, logits, previous=previous, prompt=prompt, beside=self.cavity(key, step))
        if step % self.steps and key in WRAPPED:
            self.between[(key, step)] = logits
        return logits, hidden

    def cavity(self, key: str, step: int):
        """The result on feature step ``step`` of the cavity ``key`` wraps (the myocardium: the LV), None when
        that cavity is not segmented there. `run` propagates cavities first, so it is this run's result."""
        wrapped = get_structure(key).wraps
        if wrapped is None or wrapped not in self.results.logits:
            return None
        if step % self.steps:
            return self.between.get((wrapped, step))
        return self.results.logits[wrapped].get(step // self.steps)

    def start_segment(self, key: str, k: int):
        """A fresh memory rebuilt from key frame ``k`` -> (key output logits, bank, hidden)."""
        out, hidden = self.key_output(key, k)
        bank = MemoryBank(self.memory_cap)
        hidden = self._push(bank, hidden, k * self.steps, out, permanent=True)
        return out, bank, hidden

    # ---- propagation ---------------------------------------------------------------------------
    def steps_between(self, before: int, t: int) -> list:
        """Feature steps from frame ``before`` (excluded) to its neighbour ``t`` (included), in order."""
        d = 1 if t > before else -1
        return [before * self.steps + d * j for j in range(1, self.steps + 1)]

    def stale(self, key: str) -> list:
        want = frame_signatures(self.store, key, self.results.n_frames)
        return [t for t in range(self.results.n_frames) if want[t] != self.results.signature(key, t)]

    def run(self, keys: list, progress, cancel: Optional[CancelToken]) -> None:
        res, n = self.results, self.results.n_frames
        keys = wrapped_first(keys)
        todo = {k: self.stale(k) for k in keys}
        total = sum(len(v) for v in todo.values())
        done = 0
        progress(0, total, "propagating")
        for key in keys:
            if not todo[key]:
                continue
            want = frame_signatures(self.store, key, n)
            # frames that lost their key frame (cleared/unlocked/undone): no result any more
            for t in todo[key]:
                if want[t] is None:
                    res.write(key, t, None, None)
                    done += 1
            for k, frames in segments(self.store, key, n):
                stale = [t for t in [k] + frames if res.signature(key, t) != want[t]]
                if not stale:
                    continue
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if res.signature(key, k) != want[k]:
                    res.write(key, k, self.key_output(key, k)[0], want[k])
                    done += 1
                    progress(done, total, f"{key} frame {k}")
                todo_f = [t for t in frames if res.signature(key, t) != want[t]]
                if not todo_f:
                    continue
                last = frames.index(todo_f[-1])
                rkey = (key, want[frames[0]])
                state = self.resume.pop(rkey, None)
                first = frames.index(todo_f[0])
                if state is not None and state[0] == first:
                    pos, bank, hidden, pending = state
                else:
                    # memory is built only when a segment really starts (not on resume, not for a lone key frame)
                    (_, bank, hidden), pos, pending = self.start_segment(key, k), 0, None
                for i in range(pos, last + 1):
                    if cancel is not None and cancel.cancelled:
                        self.resume[rkey] = (i, bank, hidden, pending)
                        cancel.raise_if_cancelled()
                    t = frames[i]
                    before = frames[i - 1] if i else k
                    previous = pending[1] if pending is not None else self.key_output(key, k)[0]
                    # the blended steps between the previous frame and this one, then the frame itself
                    for step in self.steps_between(before, t):
                        if pending is not None and self.carries:     # else it would be dropped at once
                            hidden = self._push(bank, hidden, pending[0], pending[1])
                        logits, hidden = self.from_memory(key, step, bank, hidden, previous=previous)
                        previous = logits
                        pending = (step, logits)
                    if res.signature(key, t) != want[t]:
                        res.write(key, t, logits, want[t])
                        done += 1
                        progress(done, total, f"{key} frame {t}")
                self.peak_memory_entries = max(self.peak_memory_entries, len(bank))
        progress(total, total, "done")
