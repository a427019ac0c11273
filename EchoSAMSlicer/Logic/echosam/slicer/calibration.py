"""Is the pixel spacing a measurement? And a calibration step when it is not.

Slicer's DICOM image-sequence import sets the spacing from ``SequenceOfUltrasoundRegions`` only
when the file has exactly one region of 2D tissue (or colour-flow) data in cm; otherwise the frames
keep a 1 mm spacing (``DICOMImageSequencePlugin.addSequenceFromImageData``). Volumes computed from
such a cine are in arbitrary units: we flag a cine whose in-plane spacing is exactly 1 mm x 1 mm as
*uncalibrated*, unless the user calibrated it here. A calibration is stored on the input sequence
(``EchoSAM.PixelSpacing`` = {"spacing_mm": [row, col], "how": ...}) and used for the LV volumes;
the image geometry is not changed, so masks stay on the input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EchoSAMError

ATTRIBUTE = "PixelSpacing"      # EchoSAM.PixelSpacing on the input sequence


@dataclass(frozen=True)
class Spacing:
    spacing_mm: tuple          # (row, col) mm used for areas and volumes
    calibrated: bool
    how: str                   # where the spacing comes from, for the panel and reports


def spacing_status(cine_spacing, stored=None) -> Spacing:
    """The spacing to measure with: a stored calibration, else the image's, flagged when it is
    Slicer's uncalibrated 1 mm default."""
    if isinstance(stored, dict) and "spacing_mm" in stored:
        row, col = (float(v) for v in stored["spacing_mm"])
        return Spacing((row, col), True, stored.get("how", "calibrated by the user"))
    row, col = (float(v) for v in cine_spacing)
    if np.allclose((row, col), (1.0, 1.0), rtol=0, atol=1e-9):
        return Spacing((row, col), False, "uncalibrated: the image has Slicer's default 1 mm pixel spacing (the "
                                          "DICOM file had no single calibrated ultrasound region); calibrate it")
    return Spacing((row, col), True, "from the image geometry")


def typed_spacing(row_mm: float, col_mm: float) -> dict:
    """A typed pixel spacing (mm per pixel, rows and columns) as a stored calibration."""
    row, col = float(row_mm), float(col_mm)
    if not (np.isfinite(row) and np.isfinite(col) and 0.001 <= row <= 10 and 0.001 <= col <= 10):
        raise EchoSAMError(f"A pixel spacing of {row_mm} x {col_mm} mm is not plausible for an echo image; type the "
                           "mm per pixel (typically 0.1 to 1).")
    return {"spacing_mm": [row, col], "how": f"typed by the user ({row:g} x {col:g} mm per pixel)"}


def spacing_from_line(p0_ras, p1_ras, ijk_to_ras, known_mm: float) -> dict:
    """A line drawn on the image over a known distance (e.g. the depth scale's 1 cm marks) -> a stored
    calibration with square pixels: ``known_mm`` / the line's length in pixels."""
    inv = np.linalg.inv(np.asarray(ijk_to_ras, float))
    a = inv @ np.append(np.asarray(p0_ras, float), 1.0)
    b = inv @ np.append(np.asarray(p1_ras, float), 1.0)
    pixels = float(np.hypot(b[0] - a[0], b[1] - a[1]))
    known = float(known_mm)
    if pixels < 2:
        raise EchoSAMError("The calibration line is shorter than 2 pixels; draw it along a known distance.")
    if not (np.isfinite(known) and known > 0):
        raise EchoSAMError(f"The known distance must be a positive length in mm, got {known_mm}.")
    s = known / pixels
    return {"spacing_mm": [s, s], "how": f"calibrated on a {known:g} mm line ({pixels:.1f} px, {s:.4f} mm per pixel)"}
