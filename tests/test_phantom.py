"""Synthetic A4C phantom: exact, deterministic labels; EF, ED/ES and volumes consistent with them."""
from __future__ import annotations

import time

import numpy as np
import pytest

from echosam.errors import CineError
from echosam.phantom import SYSTOLE, area_length_volume_ml, contraction, make_phantom


def test_default_phantom_shapes_labels_and_timing():
    t0 = time.perf_counter()
    ph = make_phantom()
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0                                   # about 0.5 s on one free core
    assert ph.cine.frames.shape == ph.labels.shape == (40, 256, 256)
    assert ph.cine.frames.dtype == np.uint8 and ph.labels.dtype == np.uint8
    assert set(np.unique(ph.labels)) == {0, 1, 2, 3}
    assert ph.cine.fps == pytest.approx(30.0)
    assert ph.cine.spacing == pytest.approx((150 / 256, 150 / 256))
    # 72 bpm at 30 fps: a beat every 25 frames; ES 0.35 of a beat after ED
    assert ph.ed_frames == [0, 25] and ph.es_frames == [9, 34]
    assert abs(ph.true_ef - 55.0) < 1.5
    assert 40 < ph.lv_volume_ml.max() < 150                 # adult-like EDV in ml


def test_labels_are_exact_ground_truth_of_the_image():
    ph = make_phantom(n_frames=6, size=(128, 128), seed=4)
    f, lab = ph.cine.frames.astype(float), ph.labels
    outside = f.sum(axis=0) == 0                            # the fan's outside is black in every frame
    assert outside.mean() > 0.2 and (lab[:, outside] == 0).all()
    for t in range(6):
        cavity, myo = f[t][lab[t] == 1].mean(), f[t][lab[t] == 2].mean()
        assert myo > 3 * cavity                             # bright wall around a dark cavity
        assert f[t][lab[t] == 3].mean() < 0.5 * myo         # dark atrium
    # cavity is enclosed by myocardium on the apical side: the topmost labelled LV row is myocardium
    rows = np.flatnonzero((lab[0] > 0).any(axis=1))
    assert set(np.unique(lab[0][rows[0]])) <= {0, 2}


def test_volumes_follow_the_area_length_formula():
    ph = make_phantom(n_frames=30, size=(96, 96), seed=2)
    area = (ph.labels == 1).reshape(30, -1).sum(1) * ph.cine.pixel_area_mm2
    np.testing.assert_allclose(ph.lv_area_mm2, area)
    np.testing.assert_allclose(ph.lv_volume_ml, 8 * area ** 2 / (3 * np.pi * ph.lv_length_mm) / 1000)
    assert area_length_volume_ml(100.0, 10.0) == pytest.approx(8 * 1e4 / (30 * np.pi) / 1000)
    assert area_length_volume_ml(100.0, 0.0) == 0.0
    edv, esv = ph.lv_volume_ml[ph.ed_frames].mean(), ph.lv_volume_ml[ph.es_frames].mean()
    assert ph.true_ef == pytest.approx(100 * (edv - esv) / edv)


@pytest.mark.parametrize("ef", [25.0, 40.0, 70.0])
def test_requested_ef_drives_the_realised_ef(ef):
    ph = make_phantom(n_frames=30, ef=ef, size=(128, 128), seed=1)
    assert abs(ph.true_ef - ef) < 2.5
    v = ph.lv_volume_ml
    assert v[ph.ed_frames[0]] == v.max() and v[ph.es_frames[0]] == v.min()


def test_deterministic_per_seed_and_varied_across_seeds():
    a = make_phantom(n_frames=4, size=(64, 64), seed=11)
    b = make_phantom(n_frames=4, size=(64, 64), seed=11)
    c = make_phantom(n_frames=4, size=(64, 64), seed=12)
    np.testing.assert_array_equal(a.cine.frames, b.cine.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.params["tilt_deg"] != c.params["tilt_deg"]
    assert (a.labels != c.labels).mean() > 0.01


def test_multi_beat_and_heart_rate():
    ph = make_phantom(n_frames=100, heart_rate=60.0, fps=25.0, size=(64, 64), noise=0.0)
    assert ph.ed_frames == [0, 25, 50, 75] and len(ph.es_frames) == 4
    np.testing.assert_array_equal(ph.labels[0], ph.labels[25])            # periodic
    np.testing.assert_array_equal(ph.cine.frames[0], ph.cine.frames[50])  # no speckle: periodic image too
    assert all(es - ed == round(SYSTOLE * 25) for ed, es in zip(ph.ed_frames, ph.es_frames))


def test_contraction_waveform():
    assert contraction(0.0) == 0.0 and contraction(SYSTOLE) == pytest.approx(1.0)
    assert contraction(1.0) == 0.0 and contraction(2.0 + SYSTOLE) == pytest.approx(1.0)
    p = np.linspace(0, 1, 1001)
    assert np.all(np.abs(np.diff(contraction(p))) < 0.02)                # smooth


def test_start_phase_and_short_cines():
    ph = make_phantom(n_frames=8, size=(64, 64), start_phase=0.5, seed=3)
    assert ph.ed_frames == [] and ph.es_frames == []                    # 0.5..0.73: no ED or ES instant
    v = ph.lv_volume_ml
    assert ph.true_ef == pytest.approx(100 * (v.max() - v.min()) / v.max())
    one = make_phantom(n_frames=1, size=(64, 64))
    assert one.ed_frames == [0] and one.true_ef == 0.0


@pytest.mark.parametrize("kw, msg", [(dict(ef=95), "Ejection fraction"), (dict(n_frames=0), "at least 1 frame"),
                                     (dict(size=(16, 16)), "too small"), (dict(heart_rate=5), "Heart rate"),
                                     (dict(noise=2.0), "noise"), (dict(fps=0), "Frame rate")])
def test_bad_parameters(kw, msg):
    with pytest.raises(CineError, match=msg):
        make_phantom(**kw)
