"""MemSAM propagation for the `Session`: which frames are stale, and how they are recomputed.

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
working memory so memory stays flat on long loops).

Cancel is checked between frames: finished frames keep their new result and signature; the bank and
hidden state at the stop are kept so the next propagate continues where it stopped.
"""
from __future__ import annotations

from typing import Optional

import torch

from .progress import CancelToken
from .structures import box_helper_points

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
    """Runs MemSAM memory + decoder for a session's stale frames (the encoder never runs here)."""

    def __init__(self, session) -> None:
        self.s = session
        self.model = session.model
        self.resume: dict = {}          # (structure, sig) -> (next position, bank, hidden, pending)
        self.key_cache: dict = {}       # (structure, frame, version) -> key-frame logits (1,1,S,S)

    # ---- model inputs --------------------------------------------------------------------------
    def _feats(self, t: int):
        return self.s._features.index(t).to(self.s.device)

    def _image(self, t: int) -> torch.Tensor:
        return self.s._prepare(t, t + 1).to(self.s.device)

    def key_logits(self, key: str, k: int) -> torch.Tensor:
        """(1,1,S,S) logits of key frame ``k``: +-10 from a mask, else the decoder on points/box."""
        e = self.s._store.get(key, k)
        ck = (key, k, e.version)
        if ck in self.key_cache:
            return self.key_cache[ck]
        S = self.s.img_size
        if e.mask is not None:
            m = torch.from_numpy(e.mask.astype("float32"))[None, None]
            m = torch.nn.functional.interpolate(m, size=(S, S), mode="bilinear", align_corners=False) >= 0.5
            logits = (m.float() * 2 - 1) * MASK_LOGIT
        else:
            pts = lab = box = None
            if e.points:
                pts = torch.tensor([self.s._to_model_xy(x, y) for x, y in e.points], dtype=torch.float32)[None]
                lab = torch.tensor(e.labels, dtype=torch.int64)[None]
                pts, lab = pts.to(self.s.device), lab.to(self.s.device)
            if e.box is not None:
                x0, y0 = self.s._to_model_xy(e.box[0], e.box[1])
                x1, y1 = self.s._to_model_xy(e.box[2], e.box[3])
                box = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32, device=self.s.device)
                helpers = box_helper_points(key, (x0, y0, x1, y1)) if pts is None else []
                if helpers:
                    pts = torch.tensor([[(x, y) for x, y, _ in helpers]], dtype=torch.float32, device=self.s.device)
                    lab = torch.tensor([[lb for _, _, lb in helpers]], dtype=torch.int64, device=self.s.device)
            logits = self.model.decode_prompt(self._feats(k), points=pts, point_labels=lab, box=box)
        logits = logits.float().to(self.s.device)
        self.key_cache = {c: v for c, v in self.key_cache.items() if c[:2] != ck[:2] or c[2] == ck[2]}
        self.key_cache[ck] = logits
        return logits

    def _push(self, bank, hidden, t: int, logits: torch.Tensor, permanent: bool = False):
        f = self._feats(t)
        value, hidden = self.model.encode_value(self._image(t), f, logits, hidden)
        bank.add(f.key, f.shrinkage, value, permanent=permanent, frame=t)
        return hidden

    def key_output(self, key: str, k: int):
        """Key frame ``k`` -> (output logits (1,1,S,S), hidden state to continue from), cached per version.

        A mask key frame seeds memory directly and is its own output. A points/box key frame follows
        MemSAM's released loop (models.md §1.2): the prompt decoder's logits only seed memory, then the
        key frame is predicted again from that memory; this prediction is the output and becomes the
        permanent memory entry (the prompt decoder's raw output is never shown nor trained on).
        """
        from .models.memory import MemoryBank

        e = self.s._store.get(key, k)
        ck = (key, k, e.version, "out")
        if ck not in self.key_cache:
            klog = self.key_logits(key, k)
            hidden = self.model.init_hidden(1).to(self.s.device)
            if e.mask is None:
                bank = MemoryBank(self.s.memory_cap)
                hidden = self._push(bank, hidden, k, klog, permanent=True)
                klog, hidden = self.model.segment_from_memory(self._feats(k), bank, hidden)
            self.key_cache[ck] = (klog, hidden)
        return self.key_cache[ck]

    def start_segment(self, key: str, k: int):
        """A fresh memory rebuilt from key frame ``k`` -> (key output logits, bank, hidden)."""
        from .models.memory import MemoryBank

        out, hidden = self.key_output(key, k)
        bank = MemoryBank(self.s.memory_cap)
        hidden = self._push(bank, hidden, k, out, permanent=True)
        return out, bank, hidden

    # ---- propagation ---------------------------------------------------------------------------
    def stale(self, key: str) -> list:
        want = frame_signatures(self.s._store, key, self.s.n_frames)
        have = self.s._sig[key]
        return [t for t in range(self.s.n_frames) if want[t] != have[t]]

    def run(self, keys: list, progress, cancel: Optional[CancelToken]) -> None:
        todo = {k: self.stale(k) for k in keys}
        total = sum(len(v) for v in todo.values())
        done = 0
        progress(0, total, "propagating")
        for key in keys:
            if not todo[key]:
                continue
            want = frame_signatures(self.s._store, key, self.s.n_frames)
            # frames that lost their key frame (cleared/unlocked/undone): no result any more
            for t in todo[key]:
                if want[t] is None:
                    self.s._write(key, t, None, None)
                    done += 1
            for k, frames in segments(self.s._store, key, self.s.n_frames):
                stale = [t for t in [k] + frames if self.s._sig[key][t] != want[t]]
                if not stale:
                    continue
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if self.s._sig[key][k] != want[k]:
                    self.s._write(key, k, self.key_output(key, k)[0], want[k])
                    done += 1
                    progress(done, total, f"{key} frame {k}")
                todo_f = [t for t in frames if self.s._sig[key][t] != want[t]]
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
                    if pending is not None:
                        hidden = self._push(bank, hidden, pending[0], pending[1])
                    logits, hidden = self.model.segment_from_memory(self._feats(t), bank, hidden)
                    pending = (t, logits)
                    if self.s._sig[key][t] != want[t]:
                        self.s._write(key, t, logits, want[t])
                        done += 1
                        progress(done, total, f"{key} frame {t}")
                self.s.peak_memory_entries = max(self.s.peak_memory_entries, len(bank))
        progress(total, total, "done")
