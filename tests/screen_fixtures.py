"""Synthetic scanner screen captures with the exact fan mask known (tests of `echosam.fan` and the
region-aware pipeline). Reusable: other tests (and the simulator's screen captures) can feed the same
checks through `fan_checks`.

`make_screen_capture` draws, on a black RGB canvas:
- a sector fan (apex at the top, two straight edges, an arc at the bottom; the apex can be off-centre)
  filled with speckle that changes every frame, with a darker "LV cavity" ellipse (the labels);
- static white screen text (PIL.ImageDraw), a static white depth scale beside the fan, a static
  logo block;
- a coloured ECG trace along the bottom whose sweep marker moves every frame, and coloured markers
  (one static dot beside the fan's apex, one small dot over the fan's edge).
``furniture`` marks every pixel drawn that is not fan (text, scale, logo, ECG, markers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class ScreenCapture:
    frames: np.ndarray          # (T, H, W, 3) uint8 RGB
    fan: np.ndarray             # (H, W) bool: the true imaging fan (pixel centres inside the sector)
    furniture: np.ndarray       # (H, W) bool: text, scale, logo, ECG and markers (never fan)
    labels: np.ndarray          # (T, H, W) uint8: 1 = LV cavity (inside the fan)
    bbox: tuple                 # the fan's bounding box (x0, y0, x1, y1), inclusive pixels
    spacing: tuple = (0.4, 0.4)  # (row, col) mm

    @property
    def grey(self) -> np.ndarray:
        from echosam.cine import rgb_to_grey
        return rgb_to_grey(self.frames)


def sector_mask(shape_hw, apex_xy, radius: float, half_angle_deg: float) -> np.ndarray:
    """(H, W) bool: pixel centres within ``radius`` of the apex and within ``half_angle`` of straight down."""
    h, w = shape_hw
    y, x = np.mgrid[0:h, 0:w].astype(float)
    dx, dy = x - apex_xy[0], y - apex_xy[1]
    r = np.hypot(dx, dy)
    ang = np.degrees(np.arctan2(np.abs(dx), dy))
    return (r <= radius) & (dy >= 0) & (ang <= half_angle_deg)


def _bbox(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def make_screen_capture(n_frames: int = 12, size=(180, 240), apex=(100, 24), radius: float = 125.0,
                        half_angle: float = 38.0, seed: int = 0, marker_on_fan: bool = True) -> ScreenCapture:
    """A screen capture (see the module docstring). ``apex`` (x, y) in pixels; off-centre by default."""
    rng = np.random.default_rng(seed)
    H, W = size
    fan = sector_mask(size, apex, radius, half_angle)
    # the LV cavity: an ellipse in the fan that breathes over the loop
    y, x = np.mgrid[0:H, 0:W].astype(float)
    cx, cy = apex[0] + 4.0, apex[1] + 0.55 * radius
    frames, labels = [], []
    static = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(static)
    d.text((4, 2), "ECHO 2D", fill=(255, 255, 255))
    d.text((W - 52, 2), "MI 0.9", fill=(255, 255, 255))
    d.text((W - 52, 14), "TIS 0.7", fill=(230, 230, 230))
    d.text((4, H - 40), "17 cm", fill=(200, 200, 200))
    d.rectangle((4, 16, 14, 26), fill=(180, 180, 180))                     # a logo block
    scale_x = min(W - 6, int(apex[0] + radius * np.sin(np.radians(half_angle))) + 6)
    for yy in range(apex[1], min(H - 30, int(apex[1] + radius)), 10):      # depth scale ticks
        d.line((scale_x, yy, scale_x + 3, yy), fill=(255, 255, 255))
    d.ellipse((apex[0] + 12, apex[1] - 10, apex[0] + 17, apex[1] - 5), fill=(40, 200, 120))  # orientation dot
    static = np.asarray(static)
    furniture = static.max(axis=-1) > 0
    edge_dot = None
    if marker_on_fan:                    # a small coloured marker straddling the fan's left edge
        ex = apex[0] - 0.5 * radius * np.sin(np.radians(half_angle))
        ey = apex[1] + 0.5 * radius * np.cos(np.radians(half_angle))
        edge_dot = np.hypot(x - ex, y - ey) <= 2.5
        furniture |= edge_dot
    ecg_rows = H - 18 + 6 * np.sin(np.linspace(0, 6 * np.pi, W)) * (np.sin(np.linspace(0, 40, W)) > 0.7)
    ecg = np.zeros((H, W), bool)
    ecg[np.clip(np.rint(ecg_rows).astype(int), 0, H - 1), np.arange(W)] = True
    furniture |= ecg
    for t in range(n_frames):
        a, b = 0.16 * radius * (1 - 0.15 * np.sin(2 * np.pi * t / n_frames)), 0.3 * radius
        cavity = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
        cavity &= fan
        img = rng.uniform(60, 230, size=(H, W))
        img[cavity] = rng.uniform(8, 40, size=int(cavity.sum()))
        img = np.where(fan, img, 0).astype(np.uint8)
        rgb = np.repeat(img[..., None], 3, axis=-1)
        rgb[static.max(axis=-1) > 0] = static[static.max(axis=-1) > 0]
        rgb[ecg] = (0, 230, 0)
        sweep = (t * W // max(n_frames, 1)) % W
        rgb[H - 26:H - 10, sweep:sweep + 2] = (255, 255, 0)               # the moving ECG marker
        if edge_dot is not None:
            rgb[edge_dot] = (255, 140, 0)
        frames.append(rgb)
        labels.append(cavity.astype(np.uint8))
    sweep_band = np.zeros((H, W), bool)
    sweep_band[H - 26:H - 10, :] = True
    furniture |= sweep_band & ~fan
    return ScreenCapture(np.stack(frames), fan, furniture, np.stack(labels), _bbox(fan))


def write_screen_dicom(cap: ScreenCapture, path, region: str = "fan") -> None:
    """The capture as an RGB Ultrasound Multi-frame DICOM file. ``region``: "fan" (a 2D B-mode
    SequenceOfUltrasoundRegions item with the fan's bounding box, plus a spectral-Doppler item
    elsewhere that must be ignored), "frame" (one item covering the whole image) or "none"."""
    import pydicom

    from echosam.cine import geometry_matrix
    from echosam.io.dicom_io import write_dicom_frames

    T = cap.frames.shape[0]
    write_dicom_frames(cap.frames, path, geometry_matrix(cap.spacing), np.arange(T) / 30.0, "screen")
    ds = pydicom.dcmread(str(path))
    if region == "none":
        del ds.SequenceOfUltrasoundRegions
    elif region == "fan":
        r = ds.SequenceOfUltrasoundRegions[0]
        r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = cap.bbox
        doppler = pydicom.Dataset()
        doppler.RegionSpatialFormat, doppler.RegionDataType, doppler.RegionFlags = 3, 3, 0
        doppler.RegionLocationMinX0, doppler.RegionLocationMinY0 = 0, cap.frames.shape[1] - 30
        doppler.RegionLocationMaxX1, doppler.RegionLocationMaxY1 = cap.frames.shape[2] - 1, cap.frames.shape[1] - 1
        ds.SequenceOfUltrasoundRegions.append(doppler)
    ds.save_as(str(path))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def fan_checks(found: np.ndarray, true_fan: np.ndarray, furniture: np.ndarray, min_dice: float = 0.97) -> None:
    """The acceptance checks of a detected fan: Dice vs truth >= ``min_dice``, nothing on the furniture."""
    d = dice(found, true_fan)
    assert d >= min_dice, f"fan Dice {d:.4f} < {min_dice}"
    on = int((found & furniture).sum())
    assert on == 0, f"{on} detected fan pixels lie on screen text / ECG / markers"
