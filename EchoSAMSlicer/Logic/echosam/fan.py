"""The ultrasound region (the imaging "fan"): where it is, and the crop that shows the models only it.

Scanners export screen captures: around (and sometimes over) the B-mode sector sit screen text,
logos, a depth scale, an ECG trace and coloured markers. None of that may reach a model, and no
label may fall outside the fan. One class, `FanRegion`, owns the mapping between the full frame
and the model's crop (like segment-anything's ``utils/transforms.py`` owns its resize maths):

- ``crop(frames)``     full frames ``(..., H, W)`` -> the fan's bounding box ``(..., h, w)``, pixels
  outside the fan set to 0. A crop, never a resize: pixel spacing is unchanged, and ``crop_cine``
  moves the IJK-to-RAS origin so that every cropped pixel keeps its place in patient space.
- ``uncrop(labels)``   ``(..., h, w)`` -> ``(..., H, W)``: exactly on the original pixels, zero
  outside the fan.
- ``to_crop_xy`` / ``to_full_xy`` / ``box_to_crop``  prompt coordinates (x = column, y = row, pixels).
- ``orientation``: a region may also be *mirrored* (`echosam.orientation`: an apical view displayed with
  the LV on the screen's left, as some labs' convention shows it) or *apex down* (the sector's apex at the
  bottom, as pediatric and some adult labs show apical views): the crop is then flipped left-right and/or
  upside down, so the models see the view as they were trained, and every mapping above flips it back.

Where the fan comes from (`find_region`, ``spec="auto"``), in this order:

1. **dicom**: the 2D B-mode item (RegionSpatialFormat 1) of the DICOM SequenceOfUltrasoundRegions
   (kept by the DICOM reader in ``cine.metadata["us_regions"]``) bounds the fan; inside that box the
   fan itself is detected as below (the box also holds static text and the corners outside the
   sector); if nothing is detected the whole box (minus coloured pixels) is the fan.
2. **detected** from the pixels (`fan_pixels.detect_fan`): what varies over the loop (per-pixel temporal
   standard deviation; text, logos and depth scales are static, the fan's speckle changes), minus
   coloured pixels (``cine.metadata["colour_pixels"]``: markers, ECG traces, coloured text are never
   fan), closed, holes filled, opened (cuts thin strokes off), the largest 8-connected component kept
   and regularised to its convex hull (a sector, apex at the top, two straight edges and an arc, is
   convex; a second moving area of like size, a dual display, is left out with a notice; a sector with its
   apex at the bottom is found upside down, `fan_pixels.apex_at_bottom`). It must look like a fan: at least
   ``MIN_FAN_FRACTION`` of the frame and solid (area over hull area >= ``MIN_SOLIDITY``). A moving area cut
   straight across below its apex (a near field black and still on a dark display, where an apical view's LV
   apex lies) gets its top back: the two
   straight edges are extended to their apex (`sector_apex`), never over static bright pixels (text),
   and not over a sector's own small rounded top. Last, the still pixels of the outer rim are trimmed:
   the hull and the closing take in a pixel or so the scanner never imaged, where a label would lie
   outside the fan.
3. **none**: no fan found (one frame only, nothing varies, or no fan-like shape): the whole frame is
   used and `FanRegion.notice` says so in one line.

A user may override it (``spec``): ``"off"`` (whole frame, source none) or a box ``(x0, y0, x1, y1)``
in cine pixels, inclusive (source user). Bounding boxes are inclusive pixel indices, as DICOM's
RegionLocationMinX0 .. MaxX1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .cine import Cine
from .errors import EchoSAMError
from .fan_pixels import (DYNAMIC_STD, MIN_FAN_FRACTION, convex_hull_mask, detect_fan, sector_apex,  # noqa: F401
                         temporal_std)

SOURCES = ("dicom", "detected", "user", "none")
MASK_FILE = "fan_mask.png"      # the fan mask stored with a result, for `echosam correct`

RegionSpec = Union[str, Sequence[float], None]


@dataclass(frozen=True, eq=False)
class FanRegion:
    """The imaging fan of a cine and the crop mapping. ``mask`` (H, W) bool on the full frame;
    ``bbox`` (x0, y0, x1, y1) inclusive pixel indices of the crop; ``source`` one of `SOURCES`;
    ``notice`` a one-line message for the user (None when there is nothing to say); ``zoom`` the prompt
    zoom that narrowed the fan to the prompts' surroundings (`echosam.zoom`), None for none;
    ``orientation`` how the view is displayed (`echosam.orientation`: ``mirrored``, ``apex_down``, how it
    was decided), None for as displayed."""

    mask: np.ndarray
    bbox: tuple
    source: str
    notice: Optional[str] = None
    zoom: Optional[dict] = None
    orientation: Optional[dict] = None

    def __post_init__(self) -> None:
        m = np.asarray(self.mask, dtype=bool)
        object.__setattr__(self, "mask", m)
        x0, y0, x1, y1 = (int(v) for v in self.bbox)
        object.__setattr__(self, "bbox", (x0, y0, x1, y1))
        h, w = m.shape
        if not (0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h):
            raise EchoSAMError(f"Region box {self.bbox} is outside the {w}x{h} frame.")
        if self.source not in SOURCES:
            raise EchoSAMError(f"Region source {self.source!r} is not one of {', '.join(SOURCES)}.")
        if m[:y0].any() or m[y1 + 1:].any() or m[:, :x0].any() or m[:, x1 + 1:].any():
            raise EchoSAMError("The fan mask reaches outside its bounding box.")

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def whole_frame(cls, shape_hw, source: str = "none", notice: Optional[str] = None) -> "FanRegion":
        h, w = (int(v) for v in shape_hw)
        return cls(np.ones((h, w), bool), (0, 0, w - 1, h - 1), source, notice)

    @classmethod
    def from_box(cls, shape_hw, box, source: str = "user", exclude: Optional[np.ndarray] = None) -> "FanRegion":
        """The box (inclusive pixel indices) as the fan, minus ``exclude`` pixels if given."""
        h, w = (int(v) for v in shape_hw)
        x0, y0, x1, y1 = _check_box(box, (h, w))
        m = np.zeros((h, w), bool)
        m[y0:y1 + 1, x0:x1 + 1] = True
        if exclude is not None and (m & ~exclude).any():
            m &= ~exclude
        return cls(m, (x0, y0, x1, y1), source)

    @classmethod
    def from_mask(cls, mask: np.ndarray, source: str, notice: Optional[str] = None) -> "FanRegion":
        """A fan mask; the crop is its bounding box."""
        m = np.asarray(mask, dtype=bool)
        if not m.any():
            raise EchoSAMError("The fan mask is empty.")
        ys, xs = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        return cls(m, (int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])), source, notice)

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """(H, W) of the full frame."""
        return tuple(self.mask.shape)

    @property
    def crop_shape(self) -> tuple:
        """(h, w) of the crop."""
        x0, y0, x1, y1 = self.bbox
        return (y1 - y0 + 1, x1 - x0 + 1)

    @property
    def fraction(self) -> float:
        """Fan pixels / frame pixels."""
        return float(self.mask.mean())

    @property
    def is_whole_frame(self) -> bool:
        return bool(self.mask.all())

    @property
    def mirrored(self) -> bool:
        """Whether the crop is the fan flipped left-right (`echosam.orientation`)."""
        return bool((self.orientation or {}).get("mirrored"))

    @property
    def apex_down(self) -> bool:
        """Whether the crop is the fan flipped upside down (`echosam.orientation`)."""
        return bool((self.orientation or {}).get("apex_down"))

    @property
    def is_identity(self) -> bool:
        """Whether the crop is the full frame as it is (the whole frame, not flipped)."""
        return self.is_whole_frame and not self.mirrored and not self.apex_down

    def _flip(self, a: np.ndarray) -> np.ndarray:
        """``(..., h, w)`` between the displayed crop and the model's (a flip is its own inverse): a view."""
        a = a[..., ::-1, :] if self.apex_down else a
        return a[..., ::-1] if self.mirrored else a

    @property
    def _slices(self) -> tuple:
        x0, y0, x1, y1 = self.bbox
        return slice(y0, y1 + 1), slice(x0, x1 + 1)

    @property
    def crop_mask(self) -> np.ndarray:
        """(h, w) bool: the fan inside the crop (flipped with it)."""
        return self._flip(self.mask[self._slices])

    # ---- pixels -------------------------------------------------------------------------------
    def crop(self, frames: np.ndarray) -> np.ndarray:
        """``(..., H, W)`` -> ``(..., h, w)`` copy, 0 (False) outside the fan."""
        a = np.asarray(frames)
        if tuple(a.shape[-2:]) != self.shape:
            raise EchoSAMError(f"Frames {a.shape} do not match the region's {self.shape[1]}x{self.shape[0]} frame.")
        rows, cols = self._slices
        out = self._flip(a[..., rows, cols]).copy()
        out[..., ~self.crop_mask] = 0
        return out

    def uncrop(self, labels: np.ndarray) -> np.ndarray:
        """``(..., h, w)`` crop labels -> ``(..., H, W)`` on the original pixels, 0 outside the fan."""
        a = np.asarray(labels)
        if tuple(a.shape[-2:]) != self.crop_shape:
            raise EchoSAMError(f"Labels {a.shape} do not match the region's crop {self.crop_shape}.")
        out = np.zeros(a.shape[:-2] + self.shape, dtype=a.dtype)
        rows, cols = self._slices
        a = np.where(self.crop_mask, a, 0)
        out[..., rows, cols] = self._flip(a)
        return out

    # ---- coordinates (x = column, y = row, pixels; pixel centres at integers) ----------------------
    def to_crop_xy(self, xy) -> np.ndarray:
        p = np.array(xy, dtype=float)
        p[..., 0] = self.bbox[2] - p[..., 0] if self.mirrored else p[..., 0] - self.bbox[0]
        p[..., 1] = self.bbox[3] - p[..., 1] if self.apex_down else p[..., 1] - self.bbox[1]
        return p

    def to_full_xy(self, xy) -> np.ndarray:
        p = np.array(xy, dtype=float)
        p[..., 0] = self.bbox[2] - p[..., 0] if self.mirrored else p[..., 0] + self.bbox[0]
        p[..., 1] = self.bbox[3] - p[..., 1] if self.apex_down else p[..., 1] + self.bbox[1]
        return p

    def box_to_crop(self, box) -> tuple:
        """A prompt box (x0, y0, x1, y1) in full-frame pixels -> crop pixels, clipped to the crop."""
        h, w = self.crop_shape
        x0, y0 = self.to_crop_xy([box[0], box[1]])
        x1, y1 = self.to_crop_xy([box[2], box[3]])
        x0, x1 = min(x0, x1), max(x0, x1)           # a flipped crop swaps the box's sides
        y0, y1 = min(y0, y1), max(y0, y1)
        return (float(np.clip(x0, 0, w - 1)), float(np.clip(y0, 0, h - 1)),
                float(np.clip(x1, 0, w - 1)), float(np.clip(y1, 0, h - 1)))

    def meets_box(self, box) -> bool:
        """Whether a box (x0, y0, x1, y1) in full-frame pixels overlaps the crop box."""
        x0, y0, x1, y1 = self.bbox
        return not (box[2] < x0 or box[0] > x1 or box[3] < y0 or box[1] > y1)

    def contains_xy(self, x: float, y: float) -> bool:
        """Whether the pixel nearest (x, y) lies in the crop box."""
        x0, y0, x1, y1 = self.bbox
        return x0 <= round(float(x)) <= x1 and y0 <= round(float(y)) <= y1

    def crop_cine(self, cine: Cine) -> Cine:
        """The model's cine: cropped frames (0 outside the fan), same spacing and times, the origin
        moved to the crop's first pixel (mirrored: the column axis reversed, from the crop's last column;
        apex down: the row axis reversed, from its last row).
        The whole frame as it is returns ``cine`` itself."""
        if self.is_identity:
            return cine
        x0, y0, x1, y1 = self.bbox
        m = cine.ijk_to_ras.copy()
        m[:3, 3] = (cine.ijk_to_ras @ np.array([x1 if self.mirrored else x0, y1 if self.apex_down else y0,
                                                0.0, 1.0]))[:3]
        if self.mirrored:
            m[:3, 0] = -m[:3, 0]
        if self.apex_down:
            m[:3, 1] = -m[:3, 1]
        meta = dict(cine.metadata, region=self.summary(), full_shape=list(self.shape))
        if isinstance(meta.get("colour_pixels"), np.ndarray):
            meta["colour_pixels"] = self.crop(meta["colour_pixels"])
        return Cine(self.crop(cine.frames), m, cine.frame_times.copy(), cine.name, meta)

    # ---- records ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """JSON-able: source, bbox (inclusive pixels), crop size, fan fraction, notice, zoom, orientation."""
        h, w = self.crop_shape
        return {"source": self.source, "bbox": list(self.bbox), "crop_size": [w, h],
                "fan_fraction": round(self.fraction, 4), "notice": self.notice, "zoom": self.zoom,
                "orientation": self.orientation}

    def save(self, folder) -> None:
        """The mask as ``fan_mask.png`` (0/255) in ``folder``; the summary goes in the caller's record."""
        from PIL import Image
        Image.fromarray(self.mask.astype(np.uint8) * 255).save(Path(folder) / MASK_FILE)

    @classmethod
    def load(cls, folder, summary: dict, shape_hw) -> "FanRegion":
        """The region stored by `save` + `summary` (e.g. run.json's ``region``), checked against the cine."""
        from PIL import Image
        path = Path(folder) / MASK_FILE
        if not path.exists():
            raise EchoSAMError(f"{folder} has no {MASK_FILE}: the region of this result is unknown; segment again.")
        mask = np.asarray(Image.open(path)) > 127
        if mask.shape != tuple(shape_hw):
            raise EchoSAMError(f"{path.name} is {mask.shape[1]}x{mask.shape[0]}, the cine {shape_hw[1]}x{shape_hw[0]}: "
                               "give the cine this result was segmented from.")
        return cls(mask, tuple(summary["bbox"]), summary["source"], summary.get("notice"), summary.get("zoom"),
                   summary.get("orientation"))


# ---- parsing and the one entry point --------------------------------------------------------------
def parse_region(text: RegionSpec) -> Union[str, tuple]:
    """``"auto"`` (or None) | ``"off"`` | ``"x0,y0,x1,y1"`` (or a 4-sequence) -> "auto" | "off" | tuple."""
    if text is None:
        return "auto"
    if isinstance(text, str):
        t = text.strip().lower()
        if t in ("auto", "off"):
            return t
        try:
            v = tuple(float(s) for s in t.split(","))
        except ValueError:
            v = ()
    else:
        v = tuple(float(s) for s in text)
    if len(v) != 4 or not all(np.isfinite(v)) or any(abs(x - round(x)) > 1e-9 for x in v):
        raise EchoSAMError(f"--region {text!r}: write auto, off, or a box x0,y0,x1,y1 of whole pixels "
                           "(columns x0..x1, rows y0..y1, inclusive).")
    return tuple(int(round(x)) for x in v)


def find_region(cine: Cine, spec: RegionSpec = "auto") -> FanRegion:
    """The fan of ``cine`` by ``spec`` (see the module docstring). Pure: reads only the cine."""
    spec = parse_region(spec)
    shape = cine.shape[1:]
    if spec == "off":
        return FanRegion.whole_frame(shape, "none")
    if isinstance(spec, tuple):
        return FanRegion.from_box(shape, spec, "user")
    coloured = cine.metadata.get("colour_pixels")
    coloured = coloured if isinstance(coloured, np.ndarray) and coloured.shape == shape else None
    box = dicom_bmode_box(cine.metadata.get("us_regions"), shape)
    if box is not None:
        mask, note = detect_fan(cine.frames, coloured, within=box)
        if mask is not None:
            return FanRegion.from_mask(mask, "dicom", notice=note or None)
        return FanRegion.from_box(shape, box, "dicom", exclude=coloured)
    mask, reason = detect_fan(cine.frames, coloured)
    if mask is not None:
        return FanRegion.from_mask(mask, "detected", notice=reason or None)
    return FanRegion.whole_frame(shape, "none", f"no imaging fan found ({reason}); segmenting the whole frame")


def prepare_region(cine: Cine, spec: RegionSpec = "auto") -> tuple:
    """``(FanRegion, cropped cine)``: what a pipeline feeds the models; labels come back with
    ``region.uncrop``. The whole-frame region gives the cine itself."""
    region = find_region(cine, spec)
    return region, region.crop_cine(cine)


# ---- DICOM regions ----------------------------------------------------------------------------------
def dicom_bmode_box(regions, shape_hw) -> Optional[tuple]:
    """The largest 2D (RegionSpatialFormat 1) ultrasound region clipped to the frame, or None."""
    h, w = shape_hw
    best, area = None, 0
    for r in regions or []:
        if int(r.get("spatial_format", 0)) != 1:
            continue
        x0, y0 = max(0, int(r["x0"])), max(0, int(r["y0"]))
        x1, y1 = min(w - 1, int(r["x1"])), min(h - 1, int(r["y1"]))
        a = (x1 - x0 + 1) * (y1 - y0 + 1)
        if x1 >= x0 and y1 >= y0 and a > area:
            best, area = (x0, y0, x1, y1), a
    return best


# ---- detection from the pixels ----------------------------------------------------------------------
def _check_box(box, shape_hw) -> tuple:
    h, w = shape_hw
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if not (0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h):
        raise EchoSAMError(f"Region box ({x0}, {y0}, {x1}, {y1}) is not inside the {w}x{h} frame: give columns "
                           f"0 <= x0 <= x1 <= {w - 1} and rows 0 <= y0 <= y1 <= {h - 1} (inclusive).")
    return x0, y0, x1, y1


__all__ = ["FanRegion", "find_region", "prepare_region", "parse_region", "detect_fan", "dicom_bmode_box",
           "temporal_std", "convex_hull_mask", "sector_apex", "SOURCES", "MASK_FILE"]
