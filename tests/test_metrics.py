"""Overlap and surface-distance metrics on masks whose answers are known, and temporal consistency
on curves whose answers are known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from echosam import metrics
from echosam.errors import EchoSAMError


def _rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def _brute_force_hd95_assd(p, t, spacing):
    """Independent reference: all pairwise distances between the two 4-connected surfaces."""
    def surf(m):
        pad = np.pad(m, 1)
        inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        return np.argwhere(m & ~inner) * np.asarray(spacing)
    a, b = surf(p), surf(t)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    da, db = d.min(1), d.min(0)
    return np.percentile(np.concatenate([da, db]), 95), (da.mean() + db.mean()) / 2


def test_dice_and_iou_exact():
    t = _rect(20, 20, 0, 10, 0, 10)            # 100 px
    p = _rect(20, 20, 0, 10, 5, 15)            # 100 px, 50 shared
    assert metrics.dice(p, t) == pytest.approx(0.5)
    assert metrics.iou(p, t) == pytest.approx(50 / 150)
    assert metrics.dice(t, t) == 1.0 and metrics.iou(t, t) == 1.0


def test_single_pixel_distances_respect_row_col_spacing():
    p = np.zeros((10, 10), bool)
    t = np.zeros((10, 10), bool)
    p[0, 0], t[3, 4] = True, True
    hd, assd = metrics.hd95_assd(p, t, (2.0, 0.5))          # rows 2 mm, columns 0.5 mm
    assert hd == pytest.approx(math.hypot(3 * 2.0, 4 * 0.5))
    assert assd == pytest.approx(math.hypot(6.0, 2.0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.3, 0.7)])
def test_shifted_shapes_match_brute_force(spacing):
    yy, xx = np.mgrid[0:40, 0:40]
    t = ((yy - 20) / 12.0) ** 2 + ((xx - 18) / 8.0) ** 2 <= 1
    p = _rect(40, 40, 10, 31, 13, 27)
    hd, assd = metrics.hd95_assd(p, t, spacing)
    ref_hd, ref_assd = _brute_force_hd95_assd(p, t, spacing)
    assert hd == pytest.approx(ref_hd) and assd == pytest.approx(ref_assd)
    assert metrics.hd95_assd(t, t, spacing) == (0.0, 0.0)


def test_empty_mask_conventions():
    e = np.zeros((8, 8), bool)
    m = _rect(8, 8, 2, 5, 2, 5)
    assert metrics.dice(e, e) == 1.0 and metrics.iou(e, e) == 1.0
    assert metrics.hd95_assd(e, e, (1, 1)) == (0.0, 0.0)
    assert metrics.dice(m, e) == 0.0 and metrics.iou(e, m) == 0.0
    hd, assd = metrics.hd95_assd(m, e, (1, 1))
    assert math.isnan(hd) and math.isnan(assd)


def test_evaluate_per_structure_and_frame():
    truth = np.zeros((3, 30, 30), np.uint8)
    truth[:, 5:15, 5:15] = 1
    truth[:, 20:25, 5:15] = 3
    pred = truth.copy()
    pred[1, 5:15, 10:15] = 0                      # frame 1 LV: 50 of 100 px kept, nothing extra
    pred[2][pred[2] == 3] = 0                     # frame 2: LA missing
    res = metrics.evaluate(pred, truth, (0.5, 0.5), structures="lv,la", fps=25)
    lv, la = res["structures"]["lv"], res["structures"]["la"]
    assert lv["per_frame"]["dice"] == pytest.approx([1.0, 2 * 50 / 150, 1.0])
    assert lv["mean"]["dice"] == pytest.approx((2 + 2 * 50 / 150) / 3)
    assert la["per_frame"]["dice"] == [1.0, 1.0, 0.0]
    assert math.isnan(la["per_frame"]["hd95"][2]) and la["n_one_empty"] == 1
    assert la["mean"]["hd95"] == 0.0                                  # NaN frame skipped
    ref_hd, ref_assd = _brute_force_hd95_assd(pred[1] == 1, truth[1] == 1, (0.5, 0.5))
    assert len(res["rows"]) == 6 and res["rows"][1] == {
        "frame": 1, "structure": "lv", "dice": pytest.approx(2 / 3), "iou": pytest.approx(0.5),
        "hd95_mm": pytest.approx(ref_hd), "assd_mm": pytest.approx(ref_assd)}
    assert 0 < ref_assd < ref_hd <= 2.5                              # the cut is 5 columns of 0.5 mm
    assert "lv" in metrics.format_table(res)
    with pytest.raises(EchoSAMError, match="must both be"):
        metrics.evaluate(pred[:2], truth, (1, 1))


def test_temporal_rate_of_a_ramp():
    area = 10.0 + 5.0 * np.arange(8)                 # +5 mm^2 per frame
    tc = metrics.temporal_consistency(area, area * 2, fps=20.0)
    assert tc["mean_abs_rate_mm2_s"] == pytest.approx(100.0)
    assert tc["truth_mean_abs_rate_mm2_s"] == pytest.approx(200.0)
    assert tc["rate_ratio"] == pytest.approx(0.5)
    assert tc["inconsistent_frames"] == [] and tc["inconsistent_fraction"] == 0.0


def test_temporal_spike_and_smooth_cycle():
    t = np.arange(50)
    smooth = 1000 + 300 * np.cos(2 * np.pi * t / 25)          # 25 frames per beat
    assert metrics.temporal_consistency(smooth)["inconsistent_fraction"] == 0.0
    spiky = np.full(20, 500.0)
    spiky[7] = 800.0                                         # one outlying frame
    tc = metrics.temporal_consistency(spiky, smooth[:20], fps=30)
    assert tc["inconsistent_frames"] == [6, 7, 8]            # |d2| = 1, 2, 1 after normalisation
    assert tc["inconsistent_fraction"] == pytest.approx(3 / 18)
    assert tc["truth_inconsistent_fraction"] == 0.0 and tc["inconsistent_fraction_vs_truth"] == pytest.approx(3 / 18)
    jitter = np.full(11, 500.0)
    jitter[::2] += 40.0                                      # alternating jitter: |dA| = 40 every frame
    ramp = 500.0 + 10.0 * np.arange(11)                      # truth grows 10 mm^2 per frame
    tc = metrics.temporal_consistency(jitter, ramp, fps=10)
    assert tc["mean_abs_rate_mm2_s"] == pytest.approx(400.0) and tc["rate_ratio"] == pytest.approx(4.0)
    assert tc["inconsistent_fraction"] == 1.0                # |d2| = 2 at every interior frame
    assert metrics.temporal_consistency(np.full(5, 3.0))["inconsistent_fraction"] == 0.0


def test_evaluate_reports_temporal_consistency(small_phantom):
    ph = small_phantom
    res = metrics.evaluate(ph.labels, ph.labels, ph.cine.spacing, fps=ph.cine.fps)
    for key in ("lv", "myo", "la"):
        r = res["structures"][key]
        assert r["mean"]["dice"] == 1.0 and r["mean"]["hd95"] == 0.0
        assert r["temporal"]["rate_ratio"] == pytest.approx(1.0)
        tc = r["temporal"]
        assert tc["inconsistent_fraction"] == tc["truth_inconsistent_fraction"]
        assert tc["inconsistent_fraction_vs_truth"] == 0.0
    # a prediction with one frame of the LV dropped is flagged against the truth's own curvature
    bad = ph.labels.copy()
    bad[5][bad[5] == 1] = 0
    tc = metrics.evaluate(bad, ph.labels, ph.cine.spacing, structures="lv")["structures"]["lv"]["temporal"]
    assert tc["inconsistent_fraction_vs_truth"] == pytest.approx(3 / 10)      # frames 4, 5, 6 of 1..10
