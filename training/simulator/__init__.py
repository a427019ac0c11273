"""A physically based echocardiography simulator for training data (not part of the engine).

- `anatomy`: apical four-/two-chamber heart geometry per frame (LV, myocardium, LA, RV, RA, valves,
  papillary muscles, trabeculae, pericardium), regional hypokinesis;
- `motion`: physiological LV volume curves (EF, heart rate, beats);
- `beam`: scatterers moving with the tissue imaged through a phased-array convolution model in
  polar coordinates (depth-dependent resolution, attenuation + TGC, envelope, log compression, scan
  conversion);
- `scene`: one cine with artefacts (dropout, clutter, reverberation, shadowing, smoke, side lobes,
  noise) and exact labels from the same geometry;
- `screen`: scanner-style RGB screen captures and DICOM ultrasound files;
- `cache`: sets on disk, in parallel, resumable;
- `simus`: an independent second generator (pymust's SIMUS on the same anatomy) for held-out checks.
"""
from .scene import Ranges, SimCine, SimParams, sample_params, simulate

__all__ = ["Ranges", "SimCine", "SimParams", "sample_params", "simulate"]
