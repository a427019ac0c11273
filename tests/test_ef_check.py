"""echosam.ef_check: the EF checked against boxes 5 % larger and smaller, and flagged when it moves."""
from __future__ import annotations

import json

import numpy as np
import pytest
from echosam import ef_check
from echosam.cardiac import analyse
from echosam.ef_check import EFCheck, apply_check, checkable, median_reading, scaled_box, scaled_prompts
from echosam.user_prompts import Prompts, StructurePrompt

from sim_fixtures import screen_capture_dicom
from training.datasets.clips import mask_box

SEED = 4300011         # never used for training (training seeds: 0-479, 100000-100199, 200000-200239)


class _Loaded:
    def __init__(self, prompted):
        self.prompted = prompted


def test_boxes_grow_and_shrink_about_their_centre_by_a_share_of_each_side():
    assert scaled_box((10, 20, 110, 70), 0.05) == (5.0, 17.5, 115.0, 72.5)
    assert scaled_box((10, 20, 110, 70), -0.05) == (15.0, 22.5, 105.0, 67.5)
    pts = np.array([[50.0, 40.0]])
    p = Prompts(box=(10, 20, 110, 70), points=pts, labels=np.array([1]),
                others={"la": StructurePrompt(box=(0, 0, 20, 40)), "myo": StructurePrompt(points=pts, labels=[1])})
    q = scaled_prompts(p, 0.1)
    assert q.box == (0.0, 15.0, 120.0, 75.0) and q.others["la"].box == (-2.0, -4.0, 22.0, 44.0)
    assert q.points is pts and q.others["myo"].box is None and p.box == (10, 20, 110, 70)   # the user's stay


def test_a_box_at_the_image_edge_cannot_grow_past_it():
    p = Prompts(box=(0, 5, 60, 47), others={"la": StructurePrompt(box=(10, 40, 79, 47))})
    q = scaled_prompts(p, 0.05, shape_hw=(48, 80))
    assert q.box == (0.0, 2.9, 63.0, 47.0) and q.others["la"].box == (6.55, 39.65, 79.0, 47.0)
    assert scaled_prompts(p, -0.05, shape_hw=(48, 80)).box == (3.0, 7.1, 57.0, 44.9)


def test_only_a_prompted_model_given_a_box_and_no_mask_or_seed_is_checked():
    box = (1, 2, 30, 40)
    assert checkable(Prompts(box=box), _Loaded(True))
    assert checkable(Prompts(others={"la": StructurePrompt(box=box)}), _Loaded(True))
    assert not checkable(Prompts(box=box), _Loaded(False))                       # prompt-free
    assert not checkable(Prompts(points=np.array([[5.0, 5.0]]), labels=np.array([1])), _Loaded(True))
    assert not checkable(Prompts(box=box, mask="labels.nrrd"), _Loaded(True))
    assert not checkable(Prompts(box=box, seed_model="masam"), _Loaded(True))


def test_a_changed_box_that_loses_the_ef_flags_it_and_one_that_could_not_run_is_left_out():
    lost = EFCheck(50.0, [49.0, float("nan")])
    assert lost.stable is False and lost.spread == 1.0
    res = apply_check(analyse(_curve_labels(), predicted=True), EFCheck(analyse(_curve_labels()).ef_percent,
                                                                        [float("nan")], [0.05]))
    assert res.status == "prompt-dependent EF" and "no EF from boxes +5 % per side" in res.message
    assert "a changed box loses the EF" in res.message
    assert EFCheck(50.0, [], []).stable is None                         # no variant ran: nothing to compare


def test_the_spread_decides_and_a_run_without_an_ef_decides_nothing():
    assert EFCheck(50.0, [46.0, 53.0]).spread == 7.0 and EFCheck(50.0, [46.0, 53.0]).stable is True
    c = EFCheck(45.2, [32.6, 20.5])
    assert c.spread == pytest.approx(24.7) and c.stable is False
    assert c.to_dict() == {"ef_percent": 45.2, "box_changes": [0.05, -0.05], "variant_ef_percent": [32.6, 20.5],
                           "spread": 24.7, "max_spread": 8.0, "stable": False, "reported_box_change": 0.0}
    none = EFCheck(float("nan"), [46.0, 52.0])                          # the run itself has no EF
    assert none.spread == 6.0 and none.stable is None and none.to_dict()["ef_percent"] is None


def test_the_middle_of_three_readings_is_reported_and_fewer_than_three_leave_the_boxes_as_given():
    assert median_reading([(0.0, 50.0), (0.05, 30.0), (-0.05, 45.0)]) == -0.05
    assert median_reading([(0.0, 40.0), (0.05, 52.0), (-0.05, 61.0)]) == 0.05
    assert median_reading([(0.0, 45.0), (0.05, 30.0), (-0.05, 50.0)]) == 0.0
    assert median_reading([(0.0, 50.0), (0.05, float("nan")), (-0.05, 45.0)]) == 0.0      # a box lost the EF
    assert median_reading([(0.0, 50.0), (-0.05, 45.0)]) == 0.0                            # a box could not run
    assert median_reading([(0.0, float("nan")), (0.05, 30.0), (-0.05, 45.0)]) == 0.0
    assert median_reading([(0.0, 46.0), (0.05, 48.2), (-0.05, 47.0)]) == 0.0      # they agree: the user's box stays
    assert median_reading([(0.0, 46.0), (0.05, 48.2), (-0.05, 47.0)], switch_spread=2.0) == -0.05
    c = EFCheck.of_readings([(0.0, 45.2), (0.05, 32.6), (-0.05, 20.5)])
    assert c.reported_change == 0.05 and c.reported_ef_percent == 32.6 and c.ef_percent == 45.2
    assert c.to_dict()["reported_box_change"] == 0.05 and c.stable is False
    res = analyse(_curve_labels(), predicted=True)
    flagged = apply_check(res, EFCheck.of_readings([(0.0, res.ef_percent - 20), (0.05, res.ef_percent),
                                                    (-0.05, res.ef_percent + 1)]))
    assert f"{res.ef_percent - 20:.1f} % from the boxes as given" in flagged.message
    assert "The result is the middle reading, from the boxes +5 % per side." in flagged.message


def _curve_labels():
    """An LV disc whose area follows one beat: an EF analysis with a real beat."""
    t = np.arange(30)
    radius = 20 - 6 * np.sin(np.pi * t / 29) ** 2
    yy, xx = np.mgrid[:80, :80]
    return np.stack([((yy - 40) ** 2 + (xx - 40) ** 2 <= r * r).astype(np.uint8) for r in radius])


def test_an_ef_that_moves_with_the_boxes_is_flagged_with_each_runs_ef_and_what_to_do():
    from echosam.report import format_summary

    res = analyse(_curve_labels(), predicted=True)
    ef, status = res.ef_percent, res.status
    assert np.isfinite(ef) and res.beats and status == "cycles"
    same = apply_check(analyse(_curve_labels(), predicted=True), EFCheck(ef, [ef + 3, ef - 2]))
    assert same.ef_percent == ef and same.status == status and same.message == res.message   # within 8 points
    out = apply_check(res, EFCheck(ef, [ef - 20, ef + 1]))
    assert out.status == "prompt-dependent EF" and out.ef_percent == ef and out.beats           # numbers kept
    assert f"{ef:.1f} %" in out.message and f"{ef - 20:.1f} %" in out.message and "+5 %, -5 %" in out.message
    text = format_summary(out)
    assert text.startswith(f"EF {ef:.1f} %") and "(prompt-dependent EF)" in text and "The EF depends on" in text
    assert apply_check(analyse(_curve_labels(), predicted=True), None).status == status


@pytest.fixture(scope="module")
def screen_dicom(tmp_path_factory):
    return screen_capture_dicom(tmp_path_factory.mktemp("sim"), SEED, n_frames=16, height=128)


def _segment(path, out, extra):
    from echosam.cli import main

    assert main(["-q", "segment", str(path), "-o", str(out), "--device", "cpu", "--no-overlay"] + extra) == 0
    return json.loads((out / "run.json").read_text()), json.loads((out / "report.json").read_text())


def _boxes(screen):
    boxes = {k: mask_box(screen.labels[0] == i) for i, k in ((1, "lv"), (2, "myo"), (3, "la"))}
    return ["--structures", "lv,myo,la"] + [f"--box={k}:" + ",".join(str(int(v)) for v in b) for k, b in boxes.items()]


def test_segment_runs_the_check_with_the_bundled_memsam_and_records_it(screen_dicom, tmp_path, monkeypatch):
    path, screen = screen_dicom
    run, report = _segment(path, tmp_path / "checked", _boxes(screen))
    check = run["ef_check"]
    assert len(check["variant_ef_percent"]) == 2 and check["box_changes"] == [0.05, -0.05]
    efs = dict(zip([0.0] + check["box_changes"], [check["ef_percent"]] + check["variant_ef_percent"]))
    middle = sorted(efs.values())[1] if check["spread"] > ef_check.SWITCH_SPREAD else check["ef_percent"]
    assert run["box_change"] == check["reported_box_change"] and efs[run["box_change"]] == middle
    summary = report["summary"]
    assert summary["ef_percent"] == pytest.approx(efs[run["box_change"]], abs=0.01)      # the middle reading's
    assert (summary["status"] == "prompt-dependent EF") == (check["stable"] is False)
    # the same run, told that any spread is too much: the EF is flagged, its number and the curves kept
    monkeypatch.setattr(ef_check, "MAX_SPREAD", -1.0)
    run, report = _segment(path, tmp_path / "strict", _boxes(screen))
    assert run["ef_check"]["stable"] is False and run["ef_check"]["ef_percent"] == check["ef_percent"]
    assert report["summary"]["status"] == "prompt-dependent EF" and "The EF depends on the prompt" in \
        report["summary"]["message"]
    assert report["summary"]["ef_percent"] == pytest.approx(summary["ef_percent"], abs=0.01)
    # an LV box drawn to the image's left edge: its grown variant is clipped there, not refused
    monkeypatch.setattr(ef_check, "MAX_SPREAD", 8.0)
    x0, y0, x1, y1 = (int(v) for v in mask_box(screen.labels[0] == 1))
    run, report = _segment(path, tmp_path / "edge", ["--region", "off", "--box", f"0,{y0},{x1},{y1}"])
    assert run["ef_check"]["box_changes"] == [0.05, -0.05] and len(run["ef_check"]["variant_ef_percent"]) == 2
    assert (report["summary"]["status"] == "prompt-dependent EF") == (run["ef_check"]["stable"] is False)
    run, report = _segment(path, tmp_path / "unchecked", _boxes(screen) + ["--no-ef-check"])
    assert "ef_check" not in run and run["box_change"] == 0.0
    assert report["summary"]["ef_percent"] == pytest.approx(check["ef_percent"], abs=0.01)   # the boxes as given


def test_the_middle_reading_is_the_result_whole_and_a_correction_propagates_from_it(screen_dicom, tmp_path,
                                                                                    monkeypatch):
    """When the middle reading is the boxes 5 % larger, the result folder is that run: the same labels, region
    and EF as segmenting from boxes drawn 5 % larger with one reading, and `echosam correct` continues from it."""
    from echosam.cli import main
    from echosam.io import read_labels

    path, screen = screen_dicom
    monkeypatch.setattr(ef_check, "median_reading", lambda runs: 0.05)
    run, report = _segment(path, tmp_path / "middle", _boxes(screen))
    assert run["box_change"] == 0.05 and run["ef_check"]["reported_box_change"] == 0.05
    assert report["summary"]["ef_percent"] == pytest.approx(run["ef_check"]["variant_ef_percent"][0], abs=0.01)
    grown = ["--structures", "lv,myo,la"] + [
        f"--box={k}:" + ",".join(f"{v:g}" for v in scaled_box(mask_box(screen.labels[0] == i), 0.05,
                                                                screen.labels.shape[1:]))
        for i, k in ((1, "lv"), (2, "myo"), (3, "la"))]
    once, once_report = _segment(path, tmp_path / "grown", grown + ["--no-ef-check"])
    middle = read_labels(tmp_path / "middle" / "labels.seq.nrrd")[0]
    assert np.array_equal(middle, read_labels(tmp_path / "grown" / "labels.seq.nrrd")[0])
    assert once["region"] == run["region"] and once_report["summary"]["ef_percent"] == report["summary"]["ef_percent"]
    k = 8
    np.save(tmp_path / "fix.npy", (screen.labels[k] == 1).astype(np.uint8))
    assert main(["-q", "correct", str(tmp_path / "middle"), "--mask", str(tmp_path / "fix.npy"), "--frame", str(k),
                 "--cine", str(path),
                 "--device", "cpu"]) == 0
    fixed = read_labels(tmp_path / "middle" / "labels.seq.nrrd")[0]
    assert np.array_equal(fixed[:k], middle[:k]) and np.array_equal(fixed[k] == 1, screen.labels[k] == 1)
    assert json.loads((tmp_path / "middle" / "run.json").read_text())["box_change"] == 0.05


def test_the_evaluation_bench_counts_what_the_check_would_withhold(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "ef_check_eval.py"
    spec = importlib.util.spec_from_file_location("ef_check_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"set": "a", "case": "c1", "truth": 50.0, "efs": [48.0, 49.0, 47.0]},      # spread 2, error -2
            {"set": "a", "case": "c2", "truth": 44.0, "efs": [7.5, 32.6, 20.5]},       # spread 25.1, error -36.5
            {"set": "b", "case": "c3", "truth": 30.0, "efs": [36.0, 35.0, 37.0]},      # spread 2, error +6
            {"set": "b", "case": "c4", "truth": 60.0, "efs": [float("nan"), 50.0, 55.0]},   # no EF: left out
            {"set": "b", "case": "c5", "truth": 40.0, "efs": [41.0, float("nan"), 40.0]}]   # a box loses it
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = bench.summary(bench.read(tmp_path / "r.jsonl"), 8.0)
    assert s["loops"] == 4 and s["flagged"] == 2 and s["flagged_for_no_ef"] == 1
    assert s["ef_mae_flagged"] == 18.75 and s["ef_mae_rest"] == 4.0
    assert s["errors_over_10"] == 1 and s["errors_over_10_flagged"] == 1
    assert s["ef_mae"] == pytest.approx(11.375, abs=0.01)
    # rows that record the EFs the product chooses by: the middle reading is scored against the boxes as given
    for r in rows:
        r["efs_product"] = list(r["efs"])
    m = bench.summary(rows, 8.0)
    # c1 and c3 keep the boxes as given (their middle EF), c2 takes the smaller boxes' 20.5, c5 (a box lost its EF)
    # the boxes as given; c4 has no EF as given and is left out: errors -2, -23.5, +6, +1 against -2, -36.5, +6, +1
    assert m["middle_reading_counts"] == {"given": 3, "larger": 0, "smaller": 1}
    assert m["middle_ef_mae"] == pytest.approx(8.12, abs=0.01) and m["middle_minus_given_abs_error"] == -3.25
    assert m["middle_minus_given_95"][0] <= -3.25 <= m["middle_minus_given_95"][1]
