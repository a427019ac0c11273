"""Test data for `echosam batch`: a fake EchoNet-Dynamic tree of phantom cines written as real AVI
videos (112 x 112 RGB, no geometry tag, as the dataset's), a ``FileList.csv`` in the official
columns, and one corrupt video; the bundled models looked up through the registry."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

OFFICIAL_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split")
# what `echosam batch --no-overlay` passes (cli.batch.segment_options), so CLI and API runs share case keys
OPTIONS = {"structures": "lv", "precision": "auto", "formats": ["seq.nrrd"], "overlay": False, "region": "auto",
           "keep_connected": True, "read": {"slices_as_frames": False, "fps": None}}


def _smallest(prompted: bool) -> str:
    from echosam.model_zoo import load_registry

    entries = [e for e in load_registry() if e.bundled and e.prompted == prompted]
    return min(entries, key=lambda e: e.input_size).name


def prompt_free_model() -> str:
    """The smallest bundled prompt-free model of Models.json (names change; the registry says which)."""
    return _smallest(False)


def prompted_model() -> str:
    """The smallest bundled prompted model (MemSAM) of Models.json."""
    return _smallest(True)


def write_echonet_video(path: Path, seed: int, ef: float, n_frames: int = 20):
    """One phantom as EchoNet stores its videos: RGB AVI, no geometry; returns the phantom."""
    from echosam.io.video_io import write_video
    from echosam.phantom import make_phantom

    ph = make_phantom(n_frames=n_frames, size=(112, 112), seed=seed, heart_rate=120, ef=ef)
    rgb = np.repeat(ph.cine.frames[..., None], 3, axis=-1).astype(np.uint8)
    write_video(rgb, path, ph.cine.fps, ".avi")
    return ph


def make_echonet(root: Path, n: int = 5, corrupt: bool = True) -> Path:
    """``root/Videos/*.avi`` + ``root/FileList.csv``; odd videos in TEST, even in TRAIN, the corrupt one
    (``0XBAD``: not a video) in TEST. EF is the phantom's realised EF; ESV/EDV are plausible numbers."""
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"0X{0x1A2B + i:04X}"
        ph = write_echonet_video(root / "Videos" / f"{name}.avi", seed=200 + i, ef=40 + 5 * i)
        rows.append({"FileName": name, "EF": round(float(ph.true_ef), 2), "ESV": 40.0 + i, "EDV": 90.0 + i,
                     "FrameHeight": 112, "FrameWidth": 112, "FPS": 30, "NumberOfFrames": 20,
                     "Split": "TEST" if i % 2 else "TRAIN"})
    if corrupt:
        (root / "Videos" / "0XBAD.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video" * 40)
        rows.append({"FileName": "0XBAD", "EF": 55.0, "ESV": 40.0, "EDV": 90.0, "FrameHeight": 112,
                     "FrameWidth": 112, "FPS": 30, "NumberOfFrames": 20, "Split": "TEST"})
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=OFFICIAL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root


def subprocess_env() -> dict:
    """The environment for an ``echosam`` subprocess that imports the same echosam as this test."""
    import echosam

    logic = str(Path(echosam.__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([logic] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
