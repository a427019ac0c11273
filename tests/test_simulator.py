"""The training simulator: deterministic per seed, labels exactly from its geometry, images that
agree with the labels, physiological EF, screen captures with an exact fan, DICOM regions, and a
resumable on-disk cache."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from echosam.errors import CineError
from training.simulator import cache
from training.simulator.anatomy import heart_frame
from training.simulator.scene import output_grid, rasterise, simulate
from training.simulator.screen import render_screen, write_dicom

from sim_fixtures import small


@pytest.fixture(scope="module")
def cine():
    return simulate(small(3, n_frames=16))


def test_same_seed_same_cine_other_seed_other_cine(cine):
    again = simulate(small(3, n_frames=16))
    assert np.array_equal(again.frames, cine.frames) and np.array_equal(again.labels, cine.labels)
    other = simulate(small(4, n_frames=16))
    assert not np.array_equal(other.frames[0][: 10], cine.frames[0][: 10]) or other.frames.shape != cine.frames.shape


def test_labels_are_the_geometry_rasterised_and_inside_the_fan(cine):
    sp = cine.params
    gx, gy, _ = output_grid(sp.probe, sp.height)
    # frame t of the cine from the same motion: recompute its LV polygon and compare pixel centres
    from training.simulator.scene import loop_motion
    timing, la_curve, valve, _ = loop_motion(sp, np.random.default_rng([sp.seed, 1]))
    t = 5
    fr = heart_frame(sp.shape, float(timing.volume[t]), float(la_curve[t]), float(valve[t]), sp.ef)
    lv = rasterise(fr.lv, gx, gy) & cine.fan
    assert np.array_equal(cine.labels[t] == 1, lv)
    # an independent point-in-polygon check of a few pixel centres
    from matplotlib.path import Path
    ys, xs = np.nonzero(cine.labels[t] == 2)
    pts = np.stack([gx[ys, xs], gy[ys, xs]], 1)
    assert Path(fr.myo).contains_points(pts).all()
    assert not (cine.labels[:, ~cine.fan]).any()
    assert set(np.unique(cine.labels)) <= {0, 1, 2, 3} and (cine.labels == 1).any() and (cine.labels == 3).any()


def test_image_agrees_with_labels(cine):
    f, lab = cine.frames.astype(float), cine.labels
    cavity, wall = f[lab == 1].mean(), f[lab == 2].mean()
    assert cavity < wall - 10, (cavity, wall)            # blood is darker than the myocardium it lines
    assert (cine.frames[:, ~cine.fan] == 0).all()        # nothing outside the fan


def test_mitral_leaflets_and_annulus_are_tissue_not_blood():
    """The LV base (the annulus line that closes the LV and LA labels) must be visible: closed leaflets
    across it in systole and the hinge points are echogenic tissue, not blood (the blood once erased them)."""
    from training.simulator.scene import Canvas, background_map, echo_map, loop_motion
    sp = small(5, n_frames=24)
    timing, la_curve, valve, _ = loop_motion(sp, np.random.default_rng([sp.seed, 1]))
    t = int(np.flatnonzero(valve < 0.05)[0])              # a systolic frame: the valve shut
    fr = heart_frame(sp.shape, float(timing.volume[t]), float(la_curve[t]), float(valve[t]), sp.ef)
    cv = Canvas(sp.probe)
    E, blood = echo_map(fr, sp, cv, background_map(cv, sp, np.random.default_rng(0)), np.random.default_rng(0))
    # the two mitral leaflets span the base from the septal to the lateral hinge: hinges and leaflet middles
    on_base = np.concatenate([fr.valves[0][:2], fr.valves[1][:2], np.asarray(fr.annulus)])
    lv_mid = 0.5 * (fr.lv[: len(fr.lv) // 2].mean(0) + fr.lv[len(fr.lv) // 2:].mean(0))
    assert (cv.sample(blood, on_base) < 0.5).all()
    assert (cv.sample(E, on_base) > 3 * cv.sample(E, lv_mid[None])).all(), (cv.sample(E, on_base), cv.sample(E, lv_mid[None]))


def test_faint_valve_set_changes_only_the_valve_and_can_hide_it():
    """train_faint_valves draws every parameter of a seed as the default set does (the same random draws),
    except the valves' echogenicity; at the bottom of its range the shut leaflets and hinges are as dark
    as the cavity's blood, so the LV base can only be read from where the walls end."""
    from training.simulator.scene import Canvas, Ranges, background_map, echo_map, loop_motion, sample_params
    for seed in (3, 4):
        a, b = sample_params(seed, cache.RANGES["train"]), sample_params(seed, cache.RANGES["train_faint_valves"])
        assert 1.2 <= a.look["valve"] <= 4.0 and 0.0 <= b.look["valve"] <= 0.6
        assert {k: v for k, v in a.look.items() if k != "valve"} == {k: v for k, v in b.look.items() if k != "valve"}
        assert (a.probe, a.ef, a.n_frames) == (b.probe, b.ef, b.n_frames)
        assert all(np.array_equal(np.asarray(getattr(a.shape, f.name), dtype=object),
                                  np.asarray(getattr(b.shape, f.name), dtype=object))
                   for f in dataclasses.fields(a.shape))
    sp = small(5, n_frames=24)
    timing, la_curve, valve, _ = loop_motion(sp, np.random.default_rng([sp.seed, 1]))
    t = int(np.flatnonzero(valve < 0.05)[0])
    fr = heart_frame(sp.shape, float(timing.volume[t]), float(la_curve[t]), float(valve[t]), sp.ef)
    cv = Canvas(sp.probe)
    on_base = np.concatenate([fr.valves[0][:2], fr.valves[1][:2], np.asarray(fr.annulus)])
    lv_mid = 0.5 * (fr.lv[: len(fr.lv) // 2].mean(0) + fr.lv[len(fr.lv) // 2:].mean(0))
    level = {}
    for v in (0.0, 2.0):
        look = dict(sp.look, valve=v)
        E, _ = echo_map(fr, dataclasses.replace(sp, look=look), cv, background_map(cv, sp, np.random.default_rng(0)),
                        np.random.default_rng(0))
        level[v] = cv.sample(E, on_base) / cv.sample(E, lv_mid[None])
    assert (level[2.0] > 3).all() and (level[0.0] < 1.5).all(), level
    assert Ranges().valve == (1.2, 4.0)


def test_ef_of_the_labels_follows_the_motion_model():
    from training.datasets.simulated import true_ef
    sp = small(7, n_frames=40)
    sp = dataclasses.replace(sp, fps=30.0, heart_rate=60.0, start_phase=0.0)
    c = simulate(sp)
    ed, es = c.ed_frames[0], c.es_frames[0]
    assert ed < es
    ef = true_ef(c.labels, c.spacing, ed, es)
    assert abs(ef - 100 * sp.ef) < 8.0, (ef, sp.ef)
    area = (c.labels == 1).sum((1, 2))
    assert area[ed] > area[es]


def test_screen_capture_places_the_fan_exactly_and_writes_dicom_regions(cine, tmp_path):
    s = render_screen(cine, seed=3)
    T, H, W, _ = s.frames.shape
    x0, y0, x1, y1 = s.bbox
    assert s.fan.sum() == cine.fan.sum()
    assert np.array_equal(s.fan[y0:y1 + 1, x0:x1 + 1], cine.fan[: y1 - y0 + 1, : x1 - x0 + 1])
    assert np.array_equal(s.labels[:, y0:y1 + 1, x0:x1 + 1], cine.labels[:, : y1 - y0 + 1, : x1 - x0 + 1])
    # furniture outside the fan: text is bright and static, the ECG is coloured
    outside = s.frames[:, ~s.fan]
    assert outside.max() > 200
    colour = np.abs(s.frames[..., 0].astype(int) - s.frames[..., 1].astype(int)) > 60
    assert colour[:, ~s.fan].any()
    for region in (True, False):
        path = tmp_path / f"screen_{region}.dcm"
        write_dicom(s, path, with_region=region, seed=3)
        import pydicom
        ds = pydicom.dcmread(path)
        assert ds.NumberOfFrames == T and ds.Rows == H and ds.Columns == W
        assert np.array_equal(ds.pixel_array, s.frames)
        if region:
            r = ds.SequenceOfUltrasoundRegions[0]
            assert (r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1) == s.bbox
            assert r.PhysicalDeltaY == pytest.approx(s.spacing[0] / 10)
        else:
            assert "SequenceOfUltrasoundRegions" not in ds


def test_cache_is_resumable_and_skips_whole_cases(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "sample_params", lambda seed, ranges=None: small(seed, n_frames=6))
    made = []
    real = cache.simulate
    monkeypatch.setattr(cache, "simulate", lambda sp: made.append(sp.seed) or real(sp))
    for seed in (11, 12):
        cache.write_case(tmp_path, seed, "train")
    stamp = os.stat(cache.case_path(tmp_path, 11)).st_mtime_ns
    cache.case_path(tmp_path, 12).unlink()
    (tmp_path / ".case_000013.999.tmp.npz").write_bytes(b"half")        # an interrupted write
    for seed in (11, 12):
        cache.write_case(tmp_path, seed, "train")
    assert made == [11, 12, 12]
    assert os.stat(cache.case_path(tmp_path, 11)).st_mtime_ns == stamp
    z = np.load(cache.case_path(tmp_path, 12))
    assert z["frames"].shape[0] == 6 and json.loads(str(z["params"]))["seed"] == 12


def test_scanner_default_display_set_is_darker_with_walls_still_brighter_than_blood():
    """train_real: the display top far above typical tissue and dark surroundings, as scanners export at
    default settings: the fan's median grey falls well below the default set's, while the myocardium stays
    brighter than the blood it lines (the labels stay learnable)."""
    from sim_fixtures import small
    from training.simulator.scene import sample_params

    medians = {}
    for name in ("train", "train_real"):
        vals = []
        for seed in (11, 12, 13):
            sp = sample_params(seed, cache.RANGES[name])
            base = small(seed, n_frames=2)
            sp = dataclasses.replace(sp, n_frames=2, height=base.height,
                                     probe=dataclasses.replace(sp.probe, n_samples=base.probe.n_samples, n_lines=80))
            c = simulate(sp)
            f, lab = c.frames.astype(float), c.labels
            vals.append(np.median(f[:, c.fan]))
            if name == "train_real":
                assert f[lab == 2].mean() > f[lab == 1].mean() + 5
        medians[name] = np.mean(vals)
    assert medians["train_real"] < 0.6 * medians["train"], medians


def test_simus_second_generator_images_the_labelled_heart_and_resumes(tmp_path, capsys):
    """pymust SIMUS (the independent held-out generator) on the same anatomy: labels inside the fan, the LV cavity
    darker than its myocardium in the SIMUS image, the anatomy version in the manifest, and a rerun skips the case."""
    pytest.importorskip("pymust")
    from training.simulator import simus

    assert simus.main(["--out", str(tmp_path), "--seeds", "950000:950001", "--frames", "2"]) == 0
    z = np.load(tmp_path / "case_950000.npz")
    frames, labels = z["frames"], z["labels"]
    assert frames.shape == labels.shape and len(frames) == 2
    assert not labels[:, ~z["fan"]].any() and (frames[:, ~z["fan"]] == 0).all()
    for t in range(2):
        assert frames[t][labels[t] == 1].mean() < 0.85 * frames[t][labels[t] == 2].mean()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["anatomy"] == cache.GENERATOR and manifest["seeds"] == "950000:950001"
    capsys.readouterr()
    simus.main(["--out", str(tmp_path), "--seeds", "950000:950001", "--frames", "2"])
    assert "already there" in capsys.readouterr().out


def test_simus_frame_spans_put_ed_and_es_where_the_motion_has_them():
    """The SIMUS set images a few frames of a loop: ED->ES (systole) or a whole beat (cycle); the ED/ES positions it
    records must be the sampled frames at the motion model's ED and ES."""
    from training.simulator.motion import Timing
    from training.simulator.simus import frame_indices

    times = np.arange(60) / 30.0
    two_beats = Timing(times, np.ones(60), np.zeros(60, bool), ed_frames=[4, 34], es_frames=[15, 45], period_s=1.0)
    idx, ed, es = frame_indices(two_beats, 6, "systole")
    assert idx == [4, 6, 8, 11, 13, 15] and ed == [0] and es == [5]
    idx, ed, es = frame_indices(two_beats, 11, "cycle")
    assert idx[0] == 4 and idx[-1] == 34 and ed == [0, 10] and idx[es[0]] == 16   # 16 is the sample nearest ES 15
    one_beat = Timing(times[:30], np.ones(30), np.zeros(30, bool), ed_frames=[2], es_frames=[13], period_s=1.0)
    idx, ed, es = frame_indices(one_beat, 8, "cycle")
    assert idx[-1] == 29 and ed == [0] and abs(idx[es[0]] - 13) <= 2                 # no second ED: to the loop's end
    with pytest.raises(CineError, match="end-systolic"):
        frame_indices(Timing(times, np.ones(60), np.zeros(60, bool), [50], [20], 1.0), 6)
    with pytest.raises(CineError, match="span"):
        frame_indices(two_beats, 6, "diastole")


def test_simus_skips_a_seed_whose_loop_cannot_give_the_span_and_lists_it(tmp_path, capsys):
    """Seed 960011's loop has its only ES (frame 11) before its only ED (frame 52): no ED -> ES span exists. The set
    goes on without it and the manifest names it, instead of one seed stopping the whole run."""
    pytest.importorskip("pymust")
    from training.simulator import simus

    assert simus.main(["--out", str(tmp_path), "--seeds", "960011:960012", "--frames", "4", "--span", "cycle"]) == 0
    out = capsys.readouterr().out
    assert "case_960011.npz: skipped (" in out and "end-systolic" in out
    assert not list(tmp_path.glob("*.npz"))
    skipped = json.loads((tmp_path / "manifest.json").read_text())["skipped"]
    assert len(skipped) == 1 and skipped[0].startswith("case_960011.npz: skipped")


def test_the_mitral_valve_is_shut_on_every_ed_frame_and_opens_after_relaxation():
    """ED is mitral closure: the leaflets close over the frames before ED and are shut on the ED frame
    (version 2 left them a quarter open there, and the LV's basal line ran between open leaflets);
    they are open again in diastole."""
    import dataclasses

    from training.simulator.scene import loop_motion, sample_params

    for seed in (3, 17, 940005):
        sp = dataclasses.replace(sample_params(seed), n_frames=90)
        timing, _, valve, _ = loop_motion(sp, np.random.default_rng([sp.seed, 1]))
        assert timing.ed_frames and np.all(valve[timing.ed_frames] == 0.0), seed
        for e in timing.ed_frames:
            if e >= 1:
                assert valve[e - 1] <= valve[max(e - 3, 0)] + 1e-9      # closing towards ED, not after it
        assert valve.max() > 0.95 and np.all(valve[timing.systole] == 0.0)


def test_a_set_is_never_resumed_with_another_simulator_version(tmp_path, monkeypatch):
    """Resuming a set made by an older generator would mix two simulators in one set: refused, in one line."""
    monkeypatch.setattr(cache, "sample_params", lambda seed, ranges=None: small(seed, n_frames=6))
    (tmp_path / "manifest.json").write_text(json.dumps({"generator": "echosam-sim-2"}))
    from training.datasets.clips import DatasetError

    with pytest.raises(DatasetError, match="echosam-sim-2.*another folder"):
        cache.generate(tmp_path, [1], workers=1, progress=False)
    assert not list(tmp_path.glob("case_*"))
    assert cache.main(["--out", str(tmp_path), "--seeds", "1:2", "--workers", "1"]) == 2
    fresh = tmp_path / "new"
    m = cache.generate(fresh, [1], workers=1, progress=False)
    assert m["generator"] == cache.GENERATOR and json.loads((fresh / "manifest.json").read_text())["n_cases"] == 1
