"""A realistic simulated screen capture through the real `echosam segment` with the bundled weights:
the labels stay in the fan, and the result beats copying the frame-0 box to every frame."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim_fixtures import small
from training.datasets.clips import mask_box
from training.simulator.scene import simulate
from training.simulator.screen import render_screen, write_dicom

SEED = 4300007         # never used for training (training seeds: 0-479, 100000-100199)


@pytest.fixture(scope="module")
def screen_dicom(tmp_path_factory):
    sp = small(SEED, n_frames=20, height=160)
    screen = render_screen(simulate(sp), seed=SEED)
    path = tmp_path_factory.mktemp("sim") / "a4c.dcm"
    write_dicom(screen, path, with_region=False, seed=SEED)
    return path, screen


def _dice(a, b):
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_echosam_segment_on_a_screen_capture_beats_the_box_baseline(screen_dicom, tmp_path):
    from echosam.cli import main
    from echosam.io import read_labels

    path, screen = screen_dicom
    truth = screen.labels == 1
    box = tuple(int(v) for v in mask_box(truth[0]))
    out = tmp_path / "out"
    assert main(["-q", "segment", str(path), "-o", str(out), "--box", ",".join(map(str, box)),
                 "--structures", "lv", "--device", "cpu"]) == 0
    labels, _ = read_labels(out / "labels.seq.nrrd")
    assert labels.shape == truth.shape
    assert not labels[:, ~screen.fan].any()                      # nothing labelled outside the fan
    model = np.mean([_dice(labels[t] == 1, truth[t]) for t in range(len(truth))])
    x0, y0, x1, y1 = box
    rect = np.zeros_like(truth[0])
    rect[y0:y1 + 1, x0:x1 + 1] = True
    baseline = np.mean([_dice(rect, truth[t]) for t in range(len(truth))])
    assert model > baseline + 0.03, (model, baseline)
    run = json.loads((out / "run.json").read_text())
    assert run["region"]["source"] == "detected"
