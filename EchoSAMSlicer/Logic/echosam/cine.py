"""`Cine`: one echocardiography loop as (T, H, W) grey frames plus the geometry that puts every
pixel in patient space.

Conventions (the same as Slicer's for a 2D frame stored as a one-slice volume):
- ``frames[t, j, i]``: frame t, row j (H axis), column i (W axis).
- ``ijk_to_ras`` (4x4, mm): maps voxel index (i, j, k=0) to RAS. Its first column is the
  column direction times the column spacing, its second the row direction times the row spacing.
  Masks written with the same matrix land exactly on the input pixels.
- ``frame_times`` (T,) in seconds, strictly increasing.

Colour frames become grey by the ITU-R BT.601 luma rule ``Y = 0.299 R + 0.587 G + 0.114 B``
(alpha dropped): it keeps the B-mode brightness and makes colour annotations/Doppler overlays
faint rather than dominant. Integer frames keep their dtype; the models resize and normalise a copy.
Because grey loses which pixels were coloured (markers, ECG traces, coloured text, which are never
part of the imaging fan), a colour cine also keeps ``metadata["colour_pixels"]``: an (H, W) bool map
of the pixels that are saturated (chroma ``max(R,G,B) - min(R,G,B) >= COLOUR_CHROMA``) on any frame.
Scanners may show the B-mode through a tinted grey map (sepia, bronze, blue "chroma" maps): then every
tissue pixel has chroma. The map is one colour per brightness, which the loop's own pixels give
(`grey_map_offsets`: per common brightness, the median colour offset of the pixels there, nearly all of them
B-mode, smoothed by a curve); a pixel near that map is not "coloured", so tinted tissue is fan and markers
still are not.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from .errors import CineError

LUMA_BT601 = np.array([0.299, 0.587, 0.114])
DEFAULT_FPS = 30.0
#: chroma (of 255) from which a pixel counts as coloured: JPEG/YBR 4:2:2 round-off on grey B-mode
#: stays below ~20, screen markers and ECG traces are far above
COLOUR_CHROMA = 48
#: a grey map whose colour offsets reach this chroma at mid grey is tinted (chroma maps give 30-50 there;
#: JPEG round-off on a grey map, and the real SonoSite cine of pydicom-data, give under 3)
TINT_CHROMA = 12


#: seconds per unit of a frame-time axis (NRRD/NIfTI/MRML index units); "" means seconds
TIME_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
              "millisecond": 1e-3, "milliseconds": 1e-3, "us": 1e-6, "usec": 1e-6}


def seconds_per_unit(unit: Optional[str]) -> Optional[float]:
    """Seconds per ``unit`` of a time axis (case and spaces ignored; None/"" = s); None if unknown."""
    return TIME_UNITS.get((unit or "").strip().lower())


def grey_0_255(frames: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The one intensity rule for non-uint8 cines: min-max over the WHOLE cine to 0..255 (float
    ``dtype``); uint8 stays as is; a constant cine gives zeros. Models and 8-bit writers use it."""
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        return a
    f = a.astype(dtype)
    lo, hi = float(f.min()), float(f.max())
    return (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3 or 4) colour -> (...) grey by BT.601 luma; uint8 in gives uint8 out (rounded)."""
    if rgb.shape[-1] not in (3, 4):
        raise CineError(f"Expected 3 (RGB) or 4 (RGBA) colour channels, got {rgb.shape[-1]}.")
    grey = rgb[..., :3].astype(np.float32) @ LUMA_BT601.astype(np.float32)
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        return np.clip(np.rint(grey), info.min, info.max).astype(rgb.dtype)
    return grey.astype(np.float32)


def _rgb_0_255(a: np.ndarray) -> float:
    """The factor that brings colour values to 0..255 (integer types by their range, floats in 0..1 by 255)."""
    if np.issubdtype(a.dtype, np.integer):
        return 255.0 / float(np.iinfo(a.dtype).max)
    return 255.0 if float(np.nanmax(a)) <= 1.0 else 1.0


def _fit_curve(levels: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares of ``values`` on a x + b x^2 (x = level / 255, a curve through black), refitted
    twice without the levels more than 8 grey levels off: a level that markers or an ECG trace fill is one
    such. -> (2,) coefficients."""
    x = levels / 255.0
    design = np.stack([x, x * x], axis=1)
    keep = np.ones(len(levels), bool)
    beta = np.zeros(2)
    for _ in range(3):
        sw = np.sqrt(weights[keep])
        beta = np.linalg.lstsq(design[keep] * sw[:, None], values[keep] * sw, rcond=None)[0]
        keep = np.abs(values - design @ beta) <= 8
        if keep.sum() < 4:
            break
    return beta


def grey_map_offsets(rgb: np.ndarray, frames: int = 8, min_share: float = 0.001) -> np.ndarray:
    """(256, 3) float32: the display's grey map as each channel's offset from luma at luma 0..255. Per common
    level (over ``min_share`` of the moving pixels of luma 8-247 in up to ``frames`` evenly spaced frames:
    B-mode, not the still text), the median offset of the pixels at that level; a smooth curve through black
    fitted to those medians (`_fit_curve`). All zeros for a grey map (a tint under `TINT_CHROMA` at mid grey,
    luma 96-160), so a grey display is measured exactly as before."""
    a = np.asarray(rgb)[..., :3]
    a = a[None] if a.ndim == 3 else a
    picks = a[np.unique(np.linspace(0, a.shape[0] - 1, min(frames, a.shape[0])).round().astype(int))]
    c = picks.astype(np.float32) * _rgb_0_255(a)
    luma = c @ LUMA_BT601.astype(np.float32)
    moving = (luma.max(axis=0) - luma.min(axis=0)) >= 4        # B-mode speckle; text and logos stand still
    if moving.sum() >= 1000:
        c, luma = c[:, moving], luma[:, moving]
    c, level = c.reshape(-1, 3), np.clip(np.rint(luma.reshape(-1)), 0, 255).astype(np.int64)
    counts = np.bincount(level, minlength=256)
    counts[:8] = counts[248:] = 0            # black background and white text say nothing of a tint
    common = np.flatnonzero(counts >= max(20, min_share * counts.sum()))
    out = np.zeros((256, 3), np.float32)
    if common.size < 8:
        return out
    x = np.arange(256) / 255.0
    for ch in range(3):
        diff = np.clip(np.rint(c[:, ch] - level), -255, 255).astype(np.int64) + 255
        hist = np.bincount(level * 511 + diff, minlength=256 * 511).reshape(256, 511)[common]
        median = np.argmax(np.cumsum(hist, axis=1) >= (counts[common, None] + 1) // 2, axis=1) - 255.0
        a_, b_ = _fit_curve(common.astype(float), median, counts[common].astype(float))
        out[:, ch] = a_ * x + b_ * x * x
    mid = out[96:161]                        # mid grey, where a chroma map tints most of the fan
    tinted = float((mid.max(axis=1) - mid.min(axis=1)).mean()) >= TINT_CHROMA
    return out if tinted else np.zeros((256, 3), np.float32)


def colour_pixels(rgb: np.ndarray, min_chroma: float = COLOUR_CHROMA, chunk: int = 16) -> np.ndarray:
    """(T, H, W, 3|4) or (H, W, 3|4) colour -> (H, W) bool: saturated (coloured) on any frame.

    Chroma is ``max(R,G,B) - min(R,G,B)`` in 0..255 units (other integer types and floats in 0..1 are
    scaled to that range). On a tinted display (`grey_map_offsets`; none for a grey map) a pixel also counts as
    grey when it is near the map's colour at its brightness: tinted tissue is not coloured, white text and
    markers stay what they were. Works frame-chunk by chunk so memory stays flat on long loops."""
    a = np.asarray(rgb)[..., :3]
    if a.ndim == 3:
        a = a[None]
    scale = _rgb_0_255(a)
    offsets = grey_map_offsets(a)
    tinted = bool(offsets.any())
    out = np.zeros(a.shape[1:3], dtype=bool)
    for i in range(0, a.shape[0], chunk):
        c = a[i:i + chunk]
        chroma = (c.max(axis=-1).astype(np.float32) - c.min(axis=-1)) * scale
        if tinted:
            f = c.astype(np.float32) * scale
            f -= offsets[np.clip(np.rint(f @ LUMA_BT601.astype(np.float32)), 0, 255).astype(np.int64)]
            chroma = np.minimum(chroma, f.max(axis=-1) - f.min(axis=-1))
        out |= (chroma >= min_chroma).any(axis=0)
    return out


def geometry_matrix(spacing: Sequence[float] = (1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0),
                    directions: Optional[np.ndarray] = None) -> np.ndarray:
    """IJK-to-RAS from (row, col) spacing in mm, RAS origin and a 3x3 direction matrix whose
    columns are the I (column), J (row) and K unit directions (identity by default)."""
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    if not (np.isfinite(row_mm) and np.isfinite(col_mm) and row_mm > 0 and col_mm > 0):
        raise CineError(f"Pixel spacing must be positive and finite, got {tuple(spacing)} mm.")
    d = np.eye(3) if directions is None else np.asarray(directions, dtype=float)
    m = np.eye(4)
    m[:3, 0] = d[:, 0] * col_mm
    m[:3, 1] = d[:, 1] * row_mm
    m[:3, 2] = d[:, 2] * 1.0
    m[:3, 3] = np.asarray(origin, dtype=float)
    return m


def _as_thw(frames: np.ndarray, slices_as_frames: bool) -> np.ndarray:
    """Bring an array to (T, H, W[, C]) by the rules in `Cine.from_array`."""
    a = np.asarray(frames)
    if a.size == 0:
        raise CineError("The cine is empty (no pixels). Check that the file holds image data.")
    colour_last = a.shape[-1] in (3, 4)
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        if colour_last and a.shape[0] > 4 and a.shape[1] > 4:
            return a[None]            # one (H, W, C) colour image
        return a                      # (T, H, W) grey cine
    if a.ndim == 4:
        if colour_last:
            return a                  # (T, H, W, C) colour cine
        if a.shape[1] == 1:
            return a[:, 0]            # (T, 1, H, W): one-slice frames as Slicer stores them
        if slices_as_frames:
            raise CineError("A 4D grey array with several slices per frame is 3D+t; pass one slice.")
        raise CineError(f"Array of shape {a.shape} is a 3D+t volume, not a 2D cine. "
                        "Select one slice (or view) before segmenting.")
    raise CineError(f"Cannot interpret an array of shape {a.shape} as a cine (expected (T, H, W)).")


@dataclass
class Cine:
    """A 2D+t echo loop. See the module docstring for axis and geometry conventions."""

    frames: np.ndarray                      # (T, H, W) grey, uint8/uint16/float32
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    frame_times: Optional[np.ndarray] = None  # (T,) seconds; None -> DEFAULT_FPS spacing
    name: str = "cine"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=float)
        if self.frame_times is None:
            self.frame_times = np.arange(self.frames.shape[0] if self.frames.ndim else 0) / DEFAULT_FPS
        self.frame_times = np.asarray(self.frame_times, dtype=float)
        self.validate()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_array(cls, frames: np.ndarray, spacing: Sequence[float] = (1.0, 1.0),
                   frame_times: Optional[Sequence[float]] = None, fps: Optional[float] = None,
                   origin: Sequence[float] = (0.0, 0.0, 0.0), directions: Optional[np.ndarray] = None,
                   ijk_to_ras: Optional[np.ndarray] = None, name: str = "cine",
                   slices_as_frames: bool = False, metadata: Optional[dict] = None) -> "Cine":
        """Build a cine from an array.

        Accepted shapes: (H, W) one frame; (T, H, W) grey; (H, W, 3|4) one colour image;
        (T, H, W, 3|4) colour; (T, 1, H, W) one-slice frames. Colour goes to grey (BT.601).
        ``spacing`` is (row, col) in mm; ``frame_times`` in s, or ``fps`` (default 30).
        ``slices_as_frames`` is for callers that deliberately treat a 3D stack's slices as frames.
        """
        a = _as_thw(frames, slices_as_frames)
        metadata = dict(metadata or {})
        if a.ndim == 4:
            metadata.setdefault("colour_pixels", colour_pixels(a))
            a = rgb_to_grey(a)
        if a.dtype == bool:
            a = a.astype(np.uint8)
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise CineError(f"Pixel type {a.dtype} is not a number type.")
        if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32:
            a = a.astype(np.float32)
        if frame_times is None:
            rate = float(fps) if fps else DEFAULT_FPS
            if not (np.isfinite(rate) and rate > 0):
                raise CineError(f"Frame rate must be positive, got {fps}.")
            frame_times = np.arange(a.shape[0]) / rate
        m = np.asarray(ijk_to_ras, dtype=float) if ijk_to_ras is not None else geometry_matrix(spacing, origin, directions)
        return cls(np.ascontiguousarray(a), m, np.asarray(frame_times, dtype=float), name, metadata)

    # ---- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        f = self.frames
        if f.ndim != 3:
            raise CineError(f"Cine frames must be (T, H, W); got shape {f.shape}. Use Cine.from_array.")
        if f.size == 0 or min(f.shape) == 0:
            raise CineError(f"The cine is empty (shape {f.shape}).")
        if f.shape[1] < 8 or f.shape[2] < 8:
            raise CineError(f"Frames of {f.shape[1]}x{f.shape[2]} pixels are too small to segment (min 8x8).")
        if np.issubdtype(f.dtype, np.floating):
            bad = ~np.isfinite(f).reshape(f.shape[0], -1).all(axis=1)
            if bad.any():
                idx = np.flatnonzero(bad)
                raise CineError(f"{len(idx)} frame(s) contain NaN or infinite pixels (first: frame {idx[0]}). "
                                "Re-export the cine or crop the invalid frames.")
        if self.ijk_to_ras.shape != (4, 4) or not np.isfinite(self.ijk_to_ras).all():
            raise CineError("IJK-to-RAS must be a finite 4x4 matrix.")
        if abs(np.linalg.det(self.ijk_to_ras[:3, :3])) < 1e-12:
            raise CineError("IJK-to-RAS is singular (zero spacing or parallel axes).")
        t = self.frame_times
        if t.shape != (f.shape[0],):
            raise CineError(f"{t.shape[0] if t.ndim else 0} frame times for {f.shape[0]} frames.")
        if not np.isfinite(t).all() or (t.size > 1 and np.any(np.diff(t) <= 0)):
            raise CineError("Frame times must be finite and strictly increasing (seconds).")

    # ---- geometry and timing -------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple:
        return tuple(self.frames.shape)

    @property
    def spacing(self) -> tuple:
        """(row, col) pixel spacing in mm."""
        return (float(np.linalg.norm(self.ijk_to_ras[:3, 1])), float(np.linalg.norm(self.ijk_to_ras[:3, 0])))

    @property
    def pixel_area_mm2(self) -> float:
        return float(np.linalg.norm(np.cross(self.ijk_to_ras[:3, 0], self.ijk_to_ras[:3, 1])))

    @property
    def fps(self) -> float:
        """Median frame rate in Hz (DEFAULT_FPS for a one-frame cine)."""
        if self.n_frames < 2:
            return DEFAULT_FPS
        return float(1.0 / np.median(np.diff(self.frame_times)))

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one."""
        return float(self.frame_times[-1] - self.frame_times[0] + 1.0 / self.fps)

    def ras_to_pixel(self, ras: Sequence[float]) -> tuple:
        """RAS point (mm) -> (x=column, y=row) in pixel coordinates of this cine's frames."""
        ijk = np.linalg.inv(self.ijk_to_ras) @ np.append(np.asarray(ras, dtype=float), 1.0)
        return float(ijk[0]), float(ijk[1])

    def pixel_to_ras(self, x: float, y: float) -> np.ndarray:
        return (self.ijk_to_ras @ np.array([x, y, 0.0, 1.0]))[:3]

    def same_grid(self, other: "Cine") -> bool:
        return self.shape[1:] == other.shape[1:] and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=1e-6)

    def with_frames(self, frames: np.ndarray, name: Optional[str] = None) -> "Cine":
        """A copy with other frames (same count and size) on the same geometry and times."""
        frames = np.asarray(frames)
        if frames.shape != self.frames.shape:
            raise CineError(f"Frames {frames.shape} do not match the cine {self.frames.shape}.")
        return replace(self, frames=frames, name=name or self.name, metadata=dict(self.metadata))

    def subset(self, start: int, stop: int) -> "Cine":
        """Frames [start, stop) as a new cine (times kept)."""
        if not (0 <= start < stop <= self.n_frames):
            raise CineError(f"Frame range [{start}, {stop}) is outside 0..{self.n_frames}.")
        return replace(self, frames=self.frames[start:stop].copy(), frame_times=self.frame_times[start:stop].copy(),
                       metadata=dict(self.metadata))

    def summary(self) -> dict:
        """The numbers `echosam info` prints."""
        return {"name": self.name, "frames": self.n_frames, "height": self.shape[1], "width": self.shape[2],
                "dtype": str(self.frames.dtype), "spacing_mm": [round(s, 6) for s in self.spacing],
                "fps": round(self.fps, 4), "duration_s": round(self.duration, 4),
                "intensity_range": [float(self.frames.min()), float(self.frames.max())]}
