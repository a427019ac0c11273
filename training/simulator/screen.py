"""Scanner-style screen captures of a simulated cine, and DICOM ultrasound files of them.

Scanners export what the screen shows: the fan inside a larger black canvas with text (probe,
preset, depth, gain, frame rate, MI/TIS), a depth scale beside the fan, an ECG trace with a
moving marker, a logo and coloured markers (the orientation dot partly over the fan's edge).
`render_screen` places a `SimCine` on such a canvas and returns the RGB frames with the exact fan
mask and labels on the screen grid, so the engine's fan finder and label mapping can be checked
pixel for pixel. `write_dicom` writes the capture as an Ultrasound Multi-frame Image (RGB) with or
without a Sequence of Ultrasound Regions for the fan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


@dataclass
class ScreenCine:
    frames: np.ndarray          # (T, H, W, 3) uint8 RGB
    labels: np.ndarray          # (T, H, W) uint8 on the screen grid
    fan: np.ndarray             # (H, W) bool: the imaging fan on the screen
    bbox: tuple                 # fan bounding box (x0, y0, x1, y1) in screen pixels, inclusive
    spacing: tuple              # (row_mm, col_mm)
    fps: float


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:               # Pillow < 10.1
        return ImageFont.load_default()


def _ecg(n: int, beats_t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stylised ECG (P, QRS, T) sampled at ``n`` points over the times ``beats_t`` (cycles)."""
    ph = beats_t % 1.0
    y = 0.15 * np.exp(-0.5 * ((ph - 0.88) / 0.025) ** 2)                     # P wave before ED
    y += -0.15 * np.exp(-0.5 * ((ph - 0.985) / 0.006) ** 2) + 1.0 * np.exp(-0.5 * ((ph - 0.0) / 0.008) ** 2)
    y += 1.0 * np.exp(-0.5 * ((ph - 1.0) / 0.008) ** 2) - 0.25 * np.exp(-0.5 * ((ph - 0.02) / 0.008) ** 2)
    y += 0.3 * np.exp(-0.5 * ((ph - 0.3) / 0.05) ** 2)                      # T wave
    return y + 0.02 * rng.standard_normal(n)


# scanners' tinted grey ("chroma") maps: per channel, 255 * gain * (grey / 255) ** gamma
GREY_MAPS = {"grey": ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
             "sepia": ((1.0, 0.85, 0.65), (1.0, 1.0, 1.0)),
             "bronze": ((1.0, 0.78, 0.5), (1.0, 1.0, 1.0)),
             "blue": ((0.75, 0.9, 1.0), (1.0, 1.0, 1.0)),
             "gold": ((1.0, 1.0, 1.0), (0.7, 0.9, 1.6)),
             "copper": ((1.0, 1.0, 1.0), (0.8, 1.0, 1.3))}


def grey_map_lut(name: str) -> np.ndarray:
    """(256, 3) float32: the RGB a grey level 0..255 is shown as under the grey map ``name`` (`GREY_MAPS`)."""
    if name not in GREY_MAPS:
        raise ValueError(f"grey map {name!r} is not one of {', '.join(GREY_MAPS)}")
    gains, gammas = (np.asarray(v, np.float32) for v in GREY_MAPS[name])
    return 255.0 * gains * (np.arange(256, dtype=np.float32)[:, None] / 255.0) ** gammas


def render_screen(cine, seed: int = 0, canvas: tuple | None = None, tint: bool = True,
                  grey_map: str = "grey") -> ScreenCine:
    """The cine (`scene.SimCine`) as screen captures on a canvas of ``canvas`` = (H, W) pixels
    (default: random, larger than the fan); the B-mode shown through ``grey_map`` (`GREY_MAPS`: grey, or
    a scanner's tinted "chroma" map)."""
    lut = grey_map_lut(grey_map)
    rng = np.random.default_rng([int(seed), 77])
    T, h, w = cine.frames.shape
    if canvas is None:
        H = int(h + rng.integers(70, 160))
        W = int(w + rng.integers(160, 320))
    else:
        H, W = canvas
        if H < h + 40 or W < w + 40:
            raise ValueError(f"canvas {canvas} is too small for a {h}x{w} fan")
    oy = int(rng.integers(28, max(H - h - 40, 29)))
    ox = int(rng.integers(20, max(W - w - 100, 21)))
    fan = np.zeros((H, W), dtype=bool)
    fan[oy:oy + h, ox:ox + w] = cine.fan
    labels = np.zeros((T, H, W), dtype=np.uint8)
    labels[:, oy:oy + h, ox:ox + w] = cine.labels
    gains = np.array([1.0, 1.0, 1.0]) + (rng.uniform(-0.06, 0.06, 3) if tint else 0.0)
    font, small = _font(int(rng.integers(11, 16))), _font(10)
    p = cine.params
    text_left = [f"{rng.choice(['P4-2', 'P5-1', 'S5-1', 'M5Sc'])}  Adult Echo", f"Depth {p.probe.depth / 10:.0f} cm",
                 f"Gain {int(rng.integers(40, 70))}  DR {p.probe.dyn_range:.0f}", f"{cine.fps:.0f} Hz",
                 f"MI {rng.uniform(0.8, 1.4):.1f}  TIS {rng.uniform(0.2, 1.0):.1f}"]
    text_right = ["SIMULATED", "NOT A PATIENT", f"HR {p.heart_rate:.0f} bpm"]
    ecg_y0 = min(oy + h + 8, H - 40)
    t_cycles = np.arange(T) / cine.fps * p.heart_rate / 60.0 + p.start_phase
    ecg_x = np.arange(20, W - 20)
    ecg_t = t_cycles[0] + (ecg_x - ecg_x[0]) / len(ecg_x) * (T / cine.fps * p.heart_rate / 60.0)
    ecg = _ecg(len(ecg_x), ecg_t, rng)
    ecg_pts = list(zip(ecg_x.tolist(), (ecg_y0 + 24 - 18 * ecg).tolist()))
    ecg_colour = tuple(int(v) for v in rng.choice([[0, 220, 0], [0, 255, 120], [255, 255, 0]]))
    marker_colour = tuple(int(v) for v in rng.choice([[0, 160, 255], [255, 140, 0], [0, 255, 255]]))
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    px = cine.spacing[0]
    apex_x = ox + w / 2.0
    for t in range(T):
        grey = np.zeros((H, W), dtype=np.float32)
        grey[oy:oy + h, ox:ox + w] = cine.frames[t]
        shown = lut[np.clip(np.rint(grey), 0, 255).astype(np.int64)]
        rgb = np.clip(shown * gains[None, None], 0, 255).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB")
        d = ImageDraw.Draw(img)
        for i, line in enumerate(text_left):
            d.text((6, 6 + 16 * i), line, fill=(235, 235, 235), font=font)
        for i, line in enumerate(text_right):
            d.text((W - 110, 6 + 16 * i), line, fill=(235, 235, 235), font=font)
        d.rectangle([W - 70, H - 26, W - 8, H - 8], outline=(200, 200, 200))
        d.text((W - 64, H - 24), "ECHO", fill=(200, 200, 200), font=small)
        # depth scale: ticks every cm beside the fan's right edge
        xs = min(ox + w + 6, W - 30)
        for cm in range(0, int(p.probe.depth / 10) + 1):
            y = oy + (cm * 10.0 - (p.probe.r_min * np.cos(p.probe.sector / 2))) / px
            if oy <= y < oy + h:
                d.line([(xs, y), (xs + (8 if cm % 5 == 0 else 4), y)], fill=(220, 220, 220))
                if cm % 5 == 0:
                    d.text((xs + 10, y - 6), str(cm), fill=(220, 220, 220), font=small)
        d.line(ecg_pts, fill=ecg_colour, width=1)
        mx = ecg_x[0] + (t + 0.5) / T * len(ecg_x)
        d.line([(mx, ecg_y0), (mx, ecg_y0 + 30)], fill=(255, 255, 255))
        # orientation marker at the fan's upper right edge, partly over the fan
        half = p.probe.sector / 2
        r_mark = 0.18 * h * px
        mxm = apex_x + r_mark * np.sin(half) / px
        mym = oy + (r_mark * np.cos(half) - p.probe.r_min * np.cos(half)) / px
        d.ellipse([mxm - 5, mym - 5, mxm + 5, mym + 5], fill=marker_colour)
        frames[t] = np.asarray(img)
    ys, xs_ = np.nonzero(fan)
    bbox = (int(xs_.min()), int(ys.min()), int(xs_.max()), int(ys.max()))
    return ScreenCine(frames=frames, labels=labels, fan=fan, bbox=bbox, spacing=tuple(cine.spacing), fps=cine.fps)


def write_dicom(screen: ScreenCine, path, with_region: bool = True, seed: int = 0) -> None:
    """An Ultrasound Multi-frame Image (RGB, uncompressed) of the capture; ``with_region`` adds the
    fan as a 2D B-mode ultrasound region with its physical deltas (cm)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    T, H, W, _ = screen.frames.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", "Simulated^Echo", f"SIM{seed:06d}"
    ds.Manufacturer = "EchoSAMSlicer simulator"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = H, W, T
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = f"{1000.0 / screen.fps:.3f}"
    ds.CineRate = int(round(screen.fps))
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    if with_region:
        x0, y0, x1, y1 = screen.bbox
        r = Dataset()
        r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
        r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x0, y0, x1, y1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3          # cm
        r.PhysicalDeltaX, r.PhysicalDeltaY = screen.spacing[1] / 10.0, screen.spacing[0] / 10.0
        ds.SequenceOfUltrasoundRegions = [r]
    ds.PixelData = np.ascontiguousarray(screen.frames).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
