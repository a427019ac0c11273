"""Helpers shared by the `echosam.mrml` modules: the attribute prefix of EchoSAM's MRML
attributes, a volume's IJK-to-RAS matrix and its voxels as numpy."""
from __future__ import annotations

import numpy as np
import vtk
from vtk.util import numpy_support as vnp

from ..errors import CineError

ATTR_PREFIX = "EchoSAM."


def ijk_to_ras_of(volume) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(volume) -> np.ndarray:
    """(K, J, I) or (K, J, I, C) numpy view of a volume's voxels (a copy)."""
    image = volume.GetImageData() if volume is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise CineError(f"Volume {volume.GetName() if volume else '?'!r} has no image data.")
    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    arr = vnp.vtk_to_numpy(scalars).copy()
    comps = scalars.GetNumberOfComponents()
    shape = (dims[2], dims[1], dims[0]) + ((comps,) if comps > 1 else ())
    return arr.reshape(shape)
