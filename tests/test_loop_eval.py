"""Whole-loop evaluation on a simulated case: the baselines and the scores, checked by hand."""
from __future__ import annotations

import numpy as np

from sim_fixtures import small
from training.datasets.clips import clip_prompt, mask_box
from training.loop_eval import baseline_box, baseline_otsu, load_case, lv_area_ratio, score, truth_boxes
from training.simulator import cache


def _case(tmp_path, monkeypatch, seed=21, n_frames=12):
    monkeypatch.setattr(cache, "sample_params", lambda s, ranges=None: small(s, n_frames=n_frames))
    cache.write_case(tmp_path, seed, "train")
    return load_case(cache.case_path(tmp_path, seed))


def test_box_copy_baseline_is_the_frame0_box_on_every_frame(tmp_path, monkeypatch):
    case = _case(tmp_path, monkeypatch)
    boxes = truth_boxes(case["labels"][0])
    pred = baseline_box(case, boxes)
    x0, y0, x1, y1 = (int(v) for v in boxes["lv"])
    assert (pred[:, y0:y1 + 1, x0:x1 + 1] == 1).all()           # LV drawn last wins inside its box
    row = score(pred, case)
    # hand computation of the LV Dice on the last frame
    t = len(pred) - 1
    a, b = pred[t] == 1, case["labels"][t] == 1
    hand = 2 * (a & b).sum() / (a.sum() + b.sum())
    per_frame = [2 * ((pred[k] == 1) & (case["labels"][k] == 1)).sum() / ((pred[k] == 1).sum() + (case["labels"][k] == 1).sum())
                 for k in range(len(pred))]
    assert abs(row["dice_lv"] - np.mean(per_frame)) < 1e-9 and per_frame[-1] == hand
    assert row["dice_lv"] < 0.95                                  # a box is not the cavity
    assert np.isfinite(row["ef_true"]) and 10 < row["ef_true"] < 90


def test_otsu_baseline_stays_inside_the_boxes_and_finds_the_dark_cavity(tmp_path, monkeypatch):
    case = _case(tmp_path, monkeypatch)
    boxes = truth_boxes(case["labels"][0])
    pred = baseline_otsu(case, boxes)
    inside = np.zeros(pred.shape[1:], bool)
    for b in boxes.values():
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        inside[y0:y1 + 1, x0:x1 + 1] = True
    assert not pred[:, ~inside].any()
    lv = pred == 1
    assert case["frames"][lv].mean() < case["frames"][pred == 2].mean()
    assert score(pred, case)["dice_lv"] > 0.5


def test_prompt_boxes_follow_the_truth_and_the_myocardium_gets_its_exclude_point():
    m = np.zeros((40, 50), bool)
    m[10:20, 5:30] = True
    rng = np.random.default_rng(0)
    box, pts, labs = clip_prompt(m, "lv", train=False, rng=rng, mix={})
    assert tuple(box) == (5, 10, 29, 19) and len(pts) == 0
    box, pts, labs = clip_prompt(m, "myo", train=False, rng=rng, mix={})
    assert labs.tolist() == [0] and tuple(pts[0]) == (17.0, 14.5)
    for _ in range(20):                                          # jittered training boxes stay in the image
        box, pts, labs = clip_prompt(m, "la", train=True, rng=rng, mix={"box": 1.0, "jitter": 0.2})
        assert box[0] >= 0 and box[2] <= 49 and box[2] > box[0]
    assert tuple(mask_box(np.zeros((3, 3), bool))) == (-1, -1, -1, -1)


def test_truth_row_scores_exact_labels_and_keeps_the_finder_error(tmp_path, monkeypatch):
    """The optional "true labels" row: Dice 1 and EF error 0 by construction; its ED/ES frame errors are those of
    the product's finder on the exact area curve (what no segmentation can beat)."""
    from training.loop_eval import evaluate_loops

    case = _case(tmp_path, monkeypatch)
    rows = evaluate_loops(tmp_path, {"truth": "truth", "box": "box"}, out=tmp_path / "out", progress=False)
    truth = next(r for r in rows if r["method"] == "truth")
    assert truth["dice_lv"] == 1.0 and truth["dice_myo"] == 1.0 and truth["ef_error"] == 0.0
    frame_err = score(case["labels"], case)
    keys = ("ed_frame_err", "es_frame_err")
    assert np.array_equal([truth[k] for k in keys], [frame_err[k] for k in keys], equal_nan=True)
    assert "| truth | all | 1 | 1.000 |" in (tmp_path / "out" / "loops.md").read_text()


def test_lv_area_ratios_and_the_ed_miss_by_fifth_locate_a_basal_under_segmentation(tmp_path, monkeypatch):
    """An ED cavity cut at its mid-row (the base half left out, ES untouched): the score's ED area ratio is
    the kept share, the ES one 1, and bench/ef_bias.py puts the whole miss in the basal fifths."""
    import importlib.util
    from pathlib import Path

    case = _case(tmp_path, monkeypatch, n_frames=20)               # ED on frame 3, ES on frame 14
    assert case["ed"] and case["es"]
    pred = case["labels"].copy()
    kept = []
    for t in case["ed"]:
        lv = pred[t] == 1
        rows = np.nonzero(lv)[0]
        cut = lv.copy()
        cut[: (rows.min() + rows.max()) // 2] = False              # apex at the top of an apical view
        pred[t][cut] = 0
        kept.append((pred[t] == 1).sum() / lv.sum())
    row = score(pred, case)
    assert abs(row["lv_area_ratio_ed"] - np.mean(kept)) < 1e-12 and 0.3 < row["lv_area_ratio_ed"] < 0.7
    assert row["lv_area_ratio_es"] == 1.0
    exact = score(case["labels"], case)
    assert exact["lv_area_ratio_ed"] == 1.0 and abs(exact["volume_slope"] - 1.0) < 1e-9   # the truth follows itself
    assert row["volume_slope"] < 1.0                      # a smaller ED cavity flattens the curve
    spec = importlib.util.spec_from_file_location("ef_bias", Path(__file__).parents[1] / "bench" / "ef_bias.py")
    ef_bias = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ef_bias)
    t = case["ed"][0]
    assert lv_area_ratio(pred, case["labels"], t) == kept[0]            # the cut ED frame, as the score has it
    assert lv_area_ratio(pred, case["labels"], 0) == 1.0                # frame 0 (not an ED frame here) untouched
    assert np.isnan(lv_area_ratio(pred, np.zeros_like(case["labels"]), t))   # no true LV: no ratio, not a count
    missed, total = ef_bias.missed_by_fifth(pred[t] == 1, case["labels"][t] == 1, case["labels"][t] == 3, case["spacing"])
    share = missed / total
    assert share[0] > 0.95 and share[-1] == 0.0 and missed.sum() == ((case["labels"][t] == 1) & (pred[t] != 1)).sum()
