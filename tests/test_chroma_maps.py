"""Scanners may show the B-mode through a tinted grey map (sepia, bronze, blue, gold "chroma" maps). Every tissue
pixel then has chroma; before `echosam.cine.grey_map_offsets` the whole fan counted as coloured (never fan) and no
fan was found. Now the map is read from the loop's own pixels: tinted tissue is fan, markers and ECG stay coloured,
and `echosam segment` reads a tinted capture as it reads the grey one."""
from __future__ import annotations

import json

import numpy as np
import pytest
from echosam.cine import COLOUR_CHROMA, Cine, colour_pixels, grey_map_offsets
from echosam.fan import find_region
from echosam.metrics import dice

from sim_fixtures import screen_capture_dicom, small
from training.simulator.screen import GREY_MAPS, grey_map_lut, render_screen

SEED = 4300008          # an apical four-chamber loop no training set used


@pytest.fixture(scope="module")
def loop():
    from training.simulator.scene import simulate
    return simulate(small(SEED, n_frames=10, height=128))


def _plain_rule(rgb):
    c = rgb.astype(np.int16)
    return ((c.max(-1) - c.min(-1)) >= COLOUR_CHROMA).any(0)


def test_a_grey_display_is_measured_exactly_as_before(loop):
    grey = render_screen(loop, seed=SEED)
    assert not grey_map_offsets(grey.frames).any()
    assert np.array_equal(colour_pixels(grey.frames), _plain_rule(grey.frames))
    assert _plain_rule(grey.frames)[~grey.fan].any()                    # the ECG and marker are coloured


@pytest.mark.parametrize("name", [m for m in GREY_MAPS if m != "grey"])
def test_tinted_tissue_is_fan_and_markers_stay_coloured(loop, name):
    grey, tinted = render_screen(loop, seed=SEED), render_screen(loop, seed=SEED, grey_map=name)
    assert _plain_rule(tinted.frames)[tinted.fan].mean() > 0.05          # what cut or hid the fan before
    cp = colour_pixels(tinted.frames)
    assert np.array_equal(cp[~tinted.fan], colour_pixels(grey.frames)[~grey.fan])   # text, ECG, marker as on grey
    assert cp[tinted.fan].mean() < 0.01                                  # the marker partly over the fan, no more
    region = find_region(Cine.from_array(tinted.frames, spacing=tinted.spacing))
    assert region.source == "detected" and dice(region.mask, tinted.fan) > 0.99
    # the map read from the pixels is the one drawn, to a few grey levels where the fan has tissue
    lut = grey_map_lut(name)
    luma = lut @ np.array([0.299, 0.587, 0.114])
    offsets = grey_map_offsets(tinted.frames)
    for g in (60, 120, 180):
        level = int(round(luma[g]))
        assert np.abs(offsets[level] - (lut[g] - luma[g])).max() < 6, (name, g)


def test_segment_reads_a_sepia_capture_as_the_grey_one(tmp_path):
    from echosam.cli import main
    from echosam.io import read_labels
    from echosam.model_zoo import load_registry

    model = next(e.name for e in load_registry() if e.bundled and e.family == "masam" and "sim" in e.name)
    scores = {}
    for name in ("grey", "sepia"):
        path, screen = screen_capture_dicom(tmp_path, SEED, n_frames=12, height=160, grey_map=name)
        out = tmp_path / name
        assert main(["-q", "segment", str(path), "-o", str(out), "--device", "cpu", "--model", model,
                     "--structures", "lv,myo,la"]) == 0
        labels, _ = read_labels(out / "labels.seq.nrrd")
        run = json.loads((out / "run.json").read_text())
        assert run["region"]["source"] == "detected" and not labels[:, ~screen.fan].any()
        scores[name] = [np.mean([dice(labels[t] == k, screen.labels[t] == k) for t in range(len(labels))])
                        for k in (1, 2, 3)]
    assert min(scores["sepia"]) > 0.7 and np.allclose(scores["sepia"], scores["grey"], atol=0.03), scores
