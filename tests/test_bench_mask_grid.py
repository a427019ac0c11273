"""bench/mask_grid.py: the decoder lattice's round trip on exact masks."""
import importlib.util
from pathlib import Path

import numpy as np


def _bench():
    spec = importlib.util.spec_from_file_location("mask_grid", Path(__file__).parents[1] / "bench" / "mask_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def test_a_lattice_as_fine_as_the_input_keeps_every_pixel():
    before, after = _bench().round_trip(_ellipse(90, 70, 45, 35, 30, 20), size=64, grid=64)
    assert before > 0 and after == before


def test_a_coarse_lattice_rounds_off_a_thin_shape_more_than_a_wide_one():
    mg = _bench()
    wide = mg.round_trip(_ellipse(120, 120, 60, 60, 50, 50), size=128, grid=32)
    thin = mg.round_trip(_ellipse(120, 120, 60, 60, 50, 3), size=128, grid=8)
    assert 0.97 < wide[1] / wide[0] <= 1.03
    assert thin[1] / thin[0] < 0.9


def test_the_report_reads_ed_and_es_frames_of_a_simulated_set(tmp_path, capsys):
    labels = np.zeros((4, 100, 100), np.uint8)
    for t, r in enumerate((30, 25, 20, 25)):
        labels[t][_ellipse(100, 100, 50, 50, r + 5, r * 0.7 + 5)] = 2      # a ring of myocardium
        labels[t][_ellipse(100, 100, 50, 50, r, r * 0.7)] = 1
    np.savez(tmp_path / "case_000001.npz", labels=labels, ed=np.array([0]), es=np.array([2]))
    assert _bench().main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ED " in out and "ES " in out and "1 frames" in out
