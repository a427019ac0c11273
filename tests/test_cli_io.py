"""`echosam info / convert / phantom` through `echosam.cli.main`, plus the installed console script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from echosam import __version__, cli
from echosam.io import read_cine, read_labels

ECHOSAM = Path(sys.executable).with_name("echosam")


def test_phantom_writes_cine_labels_and_overlay(tmp_path, capsys):
    out, lab, ov = tmp_path / "p.seq.nrrd", tmp_path / "p_gt.nii.gz", tmp_path / "p.gif"
    rc = cli.main(["-q", "phantom", str(out), "--ef", "45", "--frames", "12", "--size", "64", "--seed", "3",
                   "--labels", str(lab), "--overlay", str(ov)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "true EF" in text and "ED frames [0]" in text
    cine = read_cine(out)
    labels, geo = read_labels(lab)
    assert cine.shape == (12, 64, 64) and labels.shape == (12, 64, 64)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    np.testing.assert_allclose(geo.ijk_to_ras, cine.ijk_to_ras, atol=1e-6)
    from echosam.phantom import make_phantom
    ph = make_phantom(n_frames=12, ef=45, size=(64, 64), seed=3)
    np.testing.assert_array_equal(cine.frames, ph.cine.frames)
    np.testing.assert_array_equal(labels, ph.labels)
    assert f"true EF {ph.true_ef:.1f} %" in text
    assert ov.stat().st_size > 0


def test_info_text_and_json(tmp_path, capsys):
    out = tmp_path / "p.nii.gz"
    assert cli.main(["phantom", str(out), "--frames", "6", "--size", "48", "--fps", "25"]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["frames"], info["height"], info["width"]) == (6, 48, 48)
    assert info["fps"] == pytest.approx(25.0) and info["duration_s"] == pytest.approx(6 / 25, abs=1e-3)
    assert info["spacing_mm"] == pytest.approx([150 / 48] * 2, abs=1e-5) and info["format"] == "nifti"
    assert cli.main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames:      6" in text and "48 x 48 pixels" in text and "25 fps" in text


def test_convert_keeps_pixels_and_geometry(tmp_path, capsys):
    src, dst, png = tmp_path / "p.seq.nrrd", tmp_path / "p.dcm", tmp_path / "frames"
    cli.main(["-q", "phantom", str(src), "--frames", "5", "--size", "40", "--labels", str(tmp_path / "l.seq.nrrd")])
    assert cli.main(["convert", str(src), str(dst)]) == 0
    assert cli.main(["convert", str(dst), str(png)]) == 0
    a, b = read_cine(src), read_cine(png)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(b.ijk_to_ras, a.ijk_to_ras, atol=1e-12)
    assert cli.main(["convert", "--labels", str(tmp_path / "l.seq.nrrd"), str(tmp_path / "l.nii.gz")]) == 0
    np.testing.assert_array_equal(read_labels(tmp_path / "l.nii.gz")[0], read_labels(tmp_path / "l.seq.nrrd")[0])
    assert "wrote" in capsys.readouterr().out


def test_convert_3d_volume_needs_flag(tmp_path, capsys):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((7, 16, 16), np.uint8)), str(tmp_path / "vol.nii.gz"))
    rc = cli.main(["convert", str(tmp_path / "vol.nii.gz"), str(tmp_path / "out.seq.nrrd")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("echosam: error: This is a 3D volume with 7 slices")
    assert "--slices-as-frames" in err and err.count("\n") == 1
    assert not (tmp_path / "out.seq.nrrd").exists()
    assert cli.main(["convert", str(tmp_path / "vol.nii.gz"), str(tmp_path / "out.seq.nrrd"),
                     "--slices-as-frames", "--fps", "20"]) == 0
    assert read_cine(tmp_path / "out.seq.nrrd").fps == pytest.approx(20.0)


@pytest.mark.parametrize("argv, msg", [
    (["info", "missing.seq.nrrd"], "does not exist"),
    (["convert", "missing.seq.nrrd", "out.xyz"], "unknown output format"),
    (["phantom", "p.seq.nrrd", "--ef", "99"], "Ejection fraction"),
    (["phantom", "p.seq.nrrd", "--labels", "l.avi"], "Label maps cannot be written"),
    (["phantom", "p.seq.nrrd", "--overlay", "o.nrrd"], "Overlay videos"),
])
def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, argv, msg):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("echosam: error: ") and msg in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_help_version_and_usage_errors(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"echosam {__version__}"
    for argv in (["--help"], ["info", "--help"], ["convert", "--help"], ["phantom", "--help"]):
        assert cli.main(argv) == 0
        assert "usage: echosam" in capsys.readouterr().out
    assert cli.main(["phantom"]) == 2                      # missing OUT: argparse usage error
    assert "required" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_subcommands_are_plain_imports():
    """Every subcommand module is imported by name (visible to readers and tools), none through importlib."""
    import ast
    import inspect

    from echosam.cli import files, models, segment

    assert {files, segment, models} <= set(cli.COMMAND_MODULES)
    src = inspect.getsource(cli)
    assert "importlib" not in src
    imported = {a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.level == 1
                for a in n.names}
    assert {"files", "segment", "models"} <= imported
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"info", "convert", "phantom", "segment", "report", "correct", "demo", "download"} <= set(sub.choices)


def test_console_script_help():
    assert ECHOSAM.exists(), f"console script not installed at {ECHOSAM}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([str(ECHOSAM), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0
    for word in ("info", "convert", "phantom"):
        assert word in done.stdout
    bad = subprocess.run([str(ECHOSAM), "info", "/nonexistent/x.seq.nrrd"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "echosam: error: /nonexistent/x.seq.nrrd does not exist; check the path."

