"""Sequences, clips and the clip dataset every training source shares.

A *source* (CAMUS, EchoNet-Dynamic, phantom, folder) lists cases and loads one `Sequence`: the
whole loop ``frames (T, H, W)`` float32 in 0..255, the annotated frames as label maps in the
CAMUS convention (1 LV, 2 MYO, 3 LA), pixel spacing (row_mm, col_mm), ED/ES frame indices
(0-based) and the dataset's EF (percent, NaN when unknown).

`ClipDataset` turns a source into training clips of ``clip_frames`` frames (MemSAM: 10), sampled
from ED to ES by MemSAM's rule (`memsam_clip_indices`), with masks restricted to the chosen
structures and ``IGNORE`` on every frame that carries no supervision, so losses count labelled
frames only (semi-supervision).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence as Seq

import numpy as np

from echosam.errors import EchoSAMError
from echosam.structures import get_structure

log = logging.getLogger("training")

IGNORE = 255          # mask value of pixels/frames without supervision (MediViSTA's ignore_index idea)
BAD_SAMPLE_POLICIES = ("skip", "stop")


class DatasetError(EchoSAMError):
    """A training/evaluation case cannot be used (missing label file, undecodable video, bad tracing)."""


@dataclass
class Sequence:
    """One annotated cine loop as a source yields it."""

    name: str
    frames: np.ndarray                 # (T, H, W) float32 0..255
    labels: dict                       # {frame index: (H, W) uint8 label map}, CAMUS values
    spacing: tuple = (1.0, 1.0)        # (row_mm, col_mm)
    ed: int = 0                        # 0-based frame indices
    es: int = 0
    ef: float = float("nan")           # dataset EF in percent
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class Clip:
    """What `ClipDataset` returns (as numpy; the collate function stacks them into tensors)."""

    frames: np.ndarray        # (T, S, S) float32 0..255
    masks: np.ndarray         # (T, S, S) int64 class indices, IGNORE on unlabelled frames
    labelled: np.ndarray      # (T,) bool
    indices: np.ndarray       # (T,) frame indices in the sequence
    spacing: tuple            # (row_mm, col_mm) of the clip's grid
    ed: int                   # position of ED / ES inside the clip
    es: int
    ef: float
    name: str
    point: np.ndarray         # (2,) float32 (x=col, y=row) prompt click on frame 0 (MemSAM), -1 if none
    structure: int = 0        # prompted models: index into classes of the structure this clip propagates
    box: Optional[np.ndarray] = None        # (4,) x0, y0, x1, y1 frame-0 box, or all -1
    points: Optional[np.ndarray] = None     # (P, 2) frame-0 prompt points (x, y)
    point_labels: Optional[np.ndarray] = None   # (P,) 1 include / 0 exclude


def handle_bad(policy: str, message: str) -> None:
    """Apply ``on_bad_sample``: warn (skip) or raise `DatasetError` (stop). ``message`` names the file."""
    if policy == "stop":
        raise DatasetError(message + " (on_bad_sample: stop; fix or remove the case, or set on_bad_sample: skip)")
    if policy != "skip":
        raise DatasetError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {policy!r}.")
    warnings.warn("skipping case: " + message, stacklevel=3)
    log.warning("skipping case: %s", message)


def memsam_clip_indices(ed: int, es: int, n: int = 10) -> np.ndarray:
    """MemSAM's clip rule (utils/data_us.py ``load_video_and_mask_file``): with x1 the first and
    x0 the last annotated frame in time, ``step = min(x0, (x0 - x1) / (n - 1))`` and frame i of the
    clip is ``int(x1 + step * i)``. Frame 0 is the earlier of ED/ES, frame n-1 the later one.
    Short ED->ES spans repeat frames, as in the released code."""
    x1, x0 = sorted((int(ed), int(es)))
    if n == 1:
        return np.array([x1])
    step = min(float(x0), (x0 - x1) / (n - 1))
    idx = np.array([int(x1 + step * i) for i in range(n)], dtype=np.int64)
    idx[-1] = x0   # float rounding must not lose the last annotated frame
    return idx


CLIP_SAMPLING = ("ed_es", "window", "phases")


def phase_clip_indices(seq: "Sequence", clip: int, rng: np.random.Generator) -> np.ndarray:
    """``clip_sampling: phases`` (training only): MemSAM's ED->ES spread (`memsam_clip_indices`) over one
    systole or diastole drawn from the whole loop (an ED to the next ES, or an ES to the next ED, any beat),
    when the source lists every ED and ES (``meta["ed_frames"]`` / ``["es_frames"]``); else over its one
    ED/ES pair. The ED->ES rule alone shows a propagating model contraction from the first ED only, while
    the engine carries a mask through every beat, relaxation included."""
    marks = sorted([(int(t), "ed") for t in seq.meta.get("ed_frames", ())]
                   + [(int(t), "es") for t in seq.meta.get("es_frames", ())])
    pairs = [(a, b) for (a, ka), (b, kb) in zip(marks, marks[1:]) if ka != kb and b > a and b < seq.n_frames]
    if not pairs:
        return memsam_clip_indices(seq.ed, seq.es, clip)
    a, b = pairs[int(rng.integers(len(pairs)))]
    return memsam_clip_indices(a, b, clip)


def window_clip_indices(n_frames: int, clip: int, rng: np.random.Generator, max_step: int = 2) -> np.ndarray:
    """``clip_sampling: window`` (training only): ``clip`` frames in a row, every 1 to ``max_step`` frames
    (``data.clip_max_step``; larger steps show a propagating model larger motion between frames),
    anywhere in the loop, as the prompt-free families see them when they segment a loop window by
    window (the ED->ES rule spreads a clip over systole, a time scale the engine never shows them).
    Needs labels on every frame (``supervision: full``); short loops repeat their last frame."""
    step = int(rng.integers(1, max_step + 1))
    span = (clip - 1) * step + 1
    start = int(rng.integers(0, max(n_frames - span, 0) + 1))
    return np.minimum(start + step * np.arange(clip), n_frames - 1)


def structure_targets(label_map: np.ndarray, classes: Seq[str]) -> np.ndarray:
    """CAMUS label map -> class indices: ``classes[i]`` becomes i+1, everything else 0.
    ``["lv"]`` gives MemSAM's binary LV target (myocardium and LA become background)."""
    out = np.zeros(label_map.shape, dtype=np.int64)
    for i, key in enumerate(classes):
        out[label_map == get_structure(key).label] = i + 1
    return out


def fixed_click(mask: np.ndarray) -> np.ndarray:
    """MemSAM's evaluation click: the foreground pixel at the median index of ``np.argwhere``
    (raster order). Returns (x=col, y=row) float32, or (-1, -1) for an empty mask."""
    yx = np.argwhere(mask)
    if len(yx) == 0:
        return np.array([-1.0, -1.0], dtype=np.float32)
    r, c = yx[len(yx) // 2]
    return np.array([c, r], dtype=np.float32)


def random_click(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MemSAM's training click: a uniformly random foreground pixel, (x=col, y=row)."""
    yx = np.argwhere(mask)
    if len(yx) == 0:
        return np.array([-1.0, -1.0], dtype=np.float32)
    r, c = yx[rng.integers(len(yx))]
    return np.array([c, r], dtype=np.float32)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a mask in pixel-centre coordinates (`echosam.zoom.mask_extent`), or
    all -1 when empty."""
    from echosam.zoom import mask_extent

    ext = mask_extent(mask)
    return np.full(4, -1.0, dtype=np.float32) if ext is None else np.array(ext, dtype=np.float32)


PROMPT_MODES = ("box", "point", "box+point")


def clip_prompt(fg: np.ndarray, key: str, train: bool, rng: np.random.Generator, mix: dict) -> tuple:
    """Frame-0 prompt of a prompted clip: (box, points, labels). Evaluation: the tight box of the
    truth (with the structure's helper points, `echosam.structures.box_helper_points`). Training: a
    box with each side moved by up to ``mix['jitter']`` of its size, a click, or both, drawn with the
    probabilities in ``mix``, so the model learns the prompts users give. ``mix['box_helpers']``: the
    model's helper-point rule (set by the trainer from the model config)."""
    from echosam.structures import box_helper_points

    box = mask_box(fg)
    if box[0] < 0:
        return box, np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    mode = "box"
    if train:
        p = np.array([float(mix.get(m, 0.0)) for m in PROMPT_MODES])
        mode = PROMPT_MODES[int(rng.choice(len(p), p=p / p.sum()))] if p.sum() > 0 else "box"
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        j = float(mix.get("jitter", 0.08))
        box = box + rng.uniform(-j, j, 4).astype(np.float32) * np.array([w, h, w, h], np.float32)
        H, W = fg.shape
        box = np.clip(box, 0, [W - 1, H - 1, W - 1, H - 1]).astype(np.float32)
        if box[2] <= box[0] or box[3] <= box[1]:
            box = mask_box(fg)
    pts, labs = [], []
    if mode in ("point", "box+point"):
        pts.append(random_click(fg, rng) if train else fixed_click(fg))
        labs.append(1)
    if mode == "point":
        box = np.full(4, -1.0, dtype=np.float32)
    elif mode == "box":
        for x, y, lb in box_helper_points(key, box, mix.get("box_helpers", "centre")):
            pts.append(np.array([x, y], np.float32))
            labs.append(lb)
    return (box.astype(np.float32), np.array(pts, np.float32).reshape(-1, 2), np.array(labs, np.int64))


def draw_prompt_mode(mix: dict, rng: np.random.Generator) -> str:
    """One of the prompt modes with a weight in ``mix``, drawn with those weights ("box" if none has one)."""
    modes = [m for m in PROMPT_MODES if float(mix.get(m, 0.0)) > 0] or ["box"]
    p = np.array([float(mix.get(m, 1.0)) for m in modes])
    return modes[int(rng.choice(len(modes), p=p / p.sum()))]


def every_frame_prompts(masks: np.ndarray, labelled: np.ndarray, key: str, train: bool, rng: np.random.Generator,
                        mix: dict) -> tuple:
    """A prompt on EVERY frame of a clip, for pre-training the prompt decoding on single frames (the
    SAM stage the papers inherit from SAM's weights): boxes (T, 4), points (T, P, 2), labels (T, P).
    One prompt mode per clip keeps P constant; a frame without the structure gets another frame's
    prompt and loses its supervision (``labelled`` is cleared in place)."""
    T = len(masks)
    mode = draw_prompt_mode(mix, rng) if train else "box"
    one = {mode: 1.0, "jitter": float(mix.get("jitter", 0.08)), "box_helpers": mix.get("box_helpers", "centre")}
    prompts = [None] * T
    for t in range(T):
        fg = (masks[t] >= 1) & (masks[t] != IGNORE)
        if labelled[t] and fg.any():
            prompts[t] = clip_prompt(fg, key, train, rng, one)
        else:
            labelled[t] = False
    fallback = next((q for q in prompts if q is not None), None)
    if fallback is None:            # the structure is on no frame: box -1, no points (nothing is supervised)
        return np.full((T, 4), -1.0, np.float32), np.zeros((T, 0, 2), np.float32), np.zeros((T, 0), np.int64)
    prompts = [q if q is not None else fallback for q in prompts]
    return (np.stack([q[0] for q in prompts]), np.stack([q[1] for q in prompts]), np.stack([q[2] for q in prompts]))


def resize_clip(frames: np.ndarray, masks: np.ndarray, size: int) -> tuple:
    """Frames bilinear with antialias (as the models' ``prepare_frames``), masks nearest, to size x size."""
    import torch
    import torch.nn.functional as F

    if frames.shape[-2:] == (size, size):
        return frames, masks
    f = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))[:, None]
    f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.int64))[:, None].float()
    m = F.interpolate(m, size=(size, size), mode="nearest")[:, 0].long()
    return f.clamp_(0, 255).numpy(), m.numpy()


ZOOM_KEYS = ("p", "margin", "margin_jitter", "union_p")


def check_zoom(cfg) -> Optional[dict]:
    """``data.prompt_zoom`` -> {p, margin, margin_jitter, union_p} or None: with probability ``p`` a training
    clip is cropped to `echosam.zoom.zoom_box` around its prompt frame's true masks (all structures with
    probability ``union_p``, else the clip's own), with a margin drawn from margin +- margin_jitter;
    evaluation clips always are, with ``margin`` around every structure (the evaluation protocol's boxes)."""
    if not cfg:
        return None
    if not isinstance(cfg, dict):
        raise DatasetError(f"data.prompt_zoom must be a mapping of {', '.join(ZOOM_KEYS)}, not {cfg!r}.")
    unknown = set(cfg) - set(ZOOM_KEYS)
    if unknown:
        raise DatasetError(f"data.prompt_zoom: unknown keys {sorted(unknown)}; use {', '.join(ZOOM_KEYS)}.")
    out = {"p": 1.0, "margin": 0.25, "margin_jitter": 0.0, "union_p": 0.5}
    for k, v in cfg.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise DatasetError(f"data.prompt_zoom.{k} must be a number >= 0, not {v!r}.")
        out[k] = float(v)
    if out["p"] > 1 or out["union_p"] > 1 or out["margin_jitter"] > out["margin"]:
        raise DatasetError("data.prompt_zoom: p and union_p are probabilities (<= 1) and margin_jitter must not "
                           "exceed margin.")
    return out


def zoom_clip(frames: np.ndarray, masks: np.ndarray, label_map: np.ndarray, own: str, keys: Seq[str],
              zoom: dict, train: bool, rng: np.random.Generator) -> tuple:
    """Crop a clip (T, H, W) to the zoom box of its prompt frame's ``label_map`` (see `check_zoom`): the
    crop the engine makes from the user's prompts (`echosam.zoom`), by the engine's own rule
    (`echosam.zoom.joint_extent`: a lone LV box is first grown by its walls' context). The joint box is that
    of ``keys`` (the dataset's structures), the clip's own that of the structure ``own``.
    Returns (frames, masks, box or None)."""
    from echosam.zoom import joint_extent, mask_extent, zoom_box

    u = rng.random(3)      # drawn always, so a clip's other draws do not depend on the zoom settings
    if train and u[0] >= zoom["p"]:
        return frames, masks, None
    union = (not train) or u[1] < zoom["union_p"]
    extents = {k: mask_extent(label_map == get_structure(k).label) for k in (keys if union else [own])}
    ext = joint_extent(extents)
    if ext is None:
        return frames, masks, None
    margin = zoom["margin"] + (zoom["margin_jitter"] * (2 * u[2] - 1) if train else 0.0)
    x0, y0, x1, y1 = zoom_box(ext, label_map.shape, margin)
    return frames[:, y0:y1 + 1, x0:x1 + 1], masks[:, y0:y1 + 1, x0:x1 + 1], (x0, y0, x1, y1)


class ClipDataset:
    """Clips from a source (a `torch.utils.data.Dataset` by duck typing: ``__len__``/``__getitem__``).

    - ``clip_frames``: frames per clip, sampled ED->ES (`memsam_clip_indices`); None = whole loop.
    - ``supervision``: ``"semi"`` supervises the ED and ES frames only (MemSAM CAMUS-Semi; EchoNet
      has nothing else); ``"full"`` every sampled frame that has a label map.
    - ``classes``: structure keys; the mask holds class indices (``["lv"]`` -> binary).
    - ``size``: resize to size x size (training); None keeps the original grid (evaluation).
    - ``transform``: a `transforms.ClipAugment` (same parameters for every frame), train only.
    - ``train``: random click (training) vs fixed median click (evaluation).
    Randomness comes from ``np.random.default_rng([seed, epoch, index])``, so a clip does not depend
    on worker count or on where a run was resumed. Cases that fail to load are handled by the
    source's ``on_bad_sample`` policy (skip: the next good case is used instead).
    """

    def __init__(self, source, classes: Seq[str] = ("lv",), clip_frames: Optional[int] = 10,
                 supervision: str = "semi", size: Optional[int] = None, transform=None, train: bool = True,
                 seed: int = 0, prompted: bool = False, prompt_mix: Optional[dict] = None, sampling: str = "ed_es",
                 window_max_step: int = 2, prompt_zoom: Optional[dict] = None, reverse_p: float = 0.0):
        if supervision not in ("semi", "full"):
            raise DatasetError(f"supervision must be 'semi' or 'full', got {supervision!r}.")
        if sampling not in CLIP_SAMPLING:
            raise DatasetError(f"clip_sampling must be one of {', '.join(CLIP_SAMPLING)}, got {sampling!r}.")
        if int(window_max_step) < 1:
            raise DatasetError(f"clip_max_step must be >= 1 (frames between a window's frames), got {window_max_step}.")
        self.sampling, self.window_max_step = sampling, int(window_max_step)
        if not 0.0 <= float(reverse_p) <= 1.0:
            raise DatasetError(f"clip_reverse_p must be a probability in [0, 1], got {reverse_p!r}.")
        self.reverse_p = float(reverse_p)
        self.zoom = check_zoom(prompt_zoom)
        if len(source) == 0:
            raise DatasetError(f"{source!r} holds no usable cases.")
        self.source, self.classes, self.clip_frames = source, list(classes), clip_frames
        self.supervision, self.size, self.transform = supervision, size, transform
        self.train, self.seed, self.epoch = train, int(seed), 0
        # prompted (MemSAM) clips propagate ONE structure, drawn per clip in training and taken in turn
        # in evaluation; prompt-free clips carry every class
        self.prompted = bool(prompted)
        self.prompt_mix = dict(prompt_mix or {"box": 1.0})
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load_sequence(self, index: int) -> Sequence:
        """The source's sequence, replacing cases that fail to load (skip policy) by the next one."""
        n = len(self.source)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                return self.source.load(i)
            except DatasetError as e:
                handle_bad(self.source.on_bad_sample, str(e))
                self._bad.add(i)
        raise DatasetError(f"No case of {self.source!r} could be loaded.")

    def clip_from_sequence(self, seq: Sequence, rng: np.random.Generator, index: int = 0,
                           group: Optional[np.random.Generator] = None) -> Clip:
        """``group``: a generator shared by the clips of one batch, which then draws the structure and
        prompt mode, so that a batch's prompts stack (same structure, same mode; `PromptGroupBatches`)."""
        if self.clip_frames and self.sampling == "window" and self.train:
            idx = window_clip_indices(seq.n_frames, self.clip_frames, rng, self.window_max_step)
        elif self.clip_frames and self.sampling == "phases" and self.train:
            idx = phase_clip_indices(seq, self.clip_frames, rng)
        elif self.clip_frames:
            idx = memsam_clip_indices(seq.ed, seq.es, self.clip_frames)
        else:
            idx = np.arange(seq.n_frames)
        if self.train and self.reverse_p > 0 and rng.random() < self.reverse_p:
            # played backwards: the prompted frame is the clip's last (an ES for ED->ES clips) and the frames
            # read from memory grow, as after an ES prompt (drawn only when asked: other recipes keep their draws)
            idx = idx[::-1].copy()
        keep = {seq.ed, seq.es} if self.supervision == "semi" else set(seq.labels)
        T = len(idx)
        H, W = seq.frames.shape[1:]
        classes, structure = self.classes, 0
        mix = self.prompt_mix
        if group is not None:
            structure = int(group.integers(len(self.classes)))
            mix = {**mix, **{m: 0.0 for m in PROMPT_MODES}, draw_prompt_mode(mix, group): 1.0}
            classes = [self.classes[structure]]
        elif self.prompted and len(self.classes) > 1:
            structure = int(rng.integers(len(self.classes))) if self.train else int(index) % len(self.classes)
            classes = [self.classes[structure]]
        masks = np.full((T, H, W), IGNORE, dtype=np.int64)
        labelled = np.zeros(T, dtype=bool)
        for f in sorted(keep & set(seq.labels)):
            where = np.flatnonzero(idx == f)
            if len(where) == 0:
                continue
            # a frame repeated by a short ED->ES span is supervised once: the clip's last frame at its
            # last position (frame n-1 = ES, as MemSAM's loss on pred[:, [0, -1]]), others at their first
            j = int(where[-1] if f == idx[-1] else where[0])
            masks[j] = structure_targets(seq.labels[f], classes)
            labelled[j] = True
        frames = seq.frames[idx].astype(np.float32)
        spacing = tuple(float(s) for s in seq.spacing)
        if self.zoom is not None and self.prompted and labelled.any():
            f0 = int(idx[int(np.argmax(labelled))])
            frames, masks, _ = zoom_clip(frames, masks, seq.labels[f0], self.classes[structure], self.classes,
                                         self.zoom, self.train, rng)
            H, W = frames.shape[1:]
        if self.size:
            frames, masks = resize_clip(frames, masks, self.size)
            spacing = (spacing[0] * H / self.size, spacing[1] * W / self.size)
        if self.transform is not None and self.train:
            frames, masks = self.transform(frames, masks, labelled, rng)
        first = int(np.argmax(labelled)) if labelled.any() else 0
        fg = masks[first] >= 1 if labelled.any() else np.zeros(masks.shape[1:], bool)
        fg &= masks[first] != IGNORE
        point = random_click(fg, rng) if self.train else fixed_click(fg)
        box, pts, labs = (clip_prompt(fg, self.classes[structure], self.train, rng, mix) if self.prompted
                          else (None, None, None))
        if self.prompted and mix.get("every_frame"):
            box, pts, labs = every_frame_prompts(masks, labelled, self.classes[structure], self.train, rng, mix)
        ed_pos = int(np.flatnonzero(idx == seq.ed)[0]) if seq.ed in idx else 0
        es_pos = int(np.flatnonzero(idx == seq.es)[-1]) if seq.es in idx else T - 1
        return Clip(frames=frames, masks=masks, labelled=labelled, indices=idx, spacing=spacing, ed=ed_pos,
                    es=es_pos, ef=float(seq.ef), name=seq.name, point=point, structure=structure, box=box,
                    points=pts, point_labels=labs)

    def __getitem__(self, index) -> dict:
        """``index``: a case index, or ``(index, batch)`` from `PromptGroupBatches`."""
        index, batch = (index if isinstance(index, tuple) else (index, None))
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        group = (np.random.default_rng([self.seed, self.epoch, int(batch), 1]) if batch is not None and self.prompted
                 and self.train else None)
        clip = self.clip_from_sequence(self.load_sequence(int(index)), rng, int(index), group)
        return clip_to_dict(clip)


def collate_prompted(items: list) -> dict:
    """Default collation, with point prompts padded to the batch's most points by label -1 (SAM's
    "not a point"), for the rare clip whose structure is missing on frame 0 (no points)."""
    import torch
    from torch.utils.data import default_collate

    if items and "points" in items[0]:
        p = max(int(d["points"].shape[-2]) for d in items)
        for d in items:
            extra = p - int(d["points"].shape[-2])
            if extra:
                d["points"] = torch.cat([d["points"], d["points"].new_zeros(*d["points"].shape[:-2], extra, 2)], -2)
                d["point_labels"] = torch.cat([d["point_labels"],
                                               d["point_labels"].new_full((*d["point_labels"].shape[:-1], extra), -1)], -1)
    return default_collate(items)


class PromptGroupBatches:
    """Batches of ``(index, batch number)`` over a sampler, for prompted clips: the clips of a batch share
    their structure and prompt mode (drawn per batch from the number), so their prompts stack into one
    tensor and a GPU runs several clips per step. Batch numbers continue across a resumed epoch."""

    def __init__(self, sampler, batch_size: int, first_batch: int = 0):
        self.sampler, self.batch_size, self.first_batch = sampler, int(batch_size), int(first_batch)

    def __iter__(self):
        chunk, b = [], self.first_batch
        for i in self.sampler:
            chunk.append(i)
            if len(chunk) == self.batch_size:
                yield [(j, b) for j in chunk]
                chunk, b = [], b + 1
        if chunk:
            yield [(j, b) for j in chunk]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


def clip_to_dict(clip: Clip) -> dict:
    import torch

    d = {"frames": torch.from_numpy(np.ascontiguousarray(clip.frames)),
            "masks": torch.from_numpy(np.ascontiguousarray(clip.masks)),
            "labelled": torch.from_numpy(clip.labelled), "point": torch.from_numpy(clip.point),
            "spacing": torch.tensor(clip.spacing, dtype=torch.float64), "ed": clip.ed, "es": clip.es,
            "ef": clip.ef, "name": clip.name, "indices": torch.from_numpy(clip.indices)}
    if clip.box is not None:
        d.update(box=torch.from_numpy(clip.box), points=torch.from_numpy(clip.points),
                 point_labels=torch.from_numpy(clip.point_labels), structure=clip.structure)
    return d
