"""Helpers shared by the fault-injection test modules (tests/test_faults_*.py): a tiny phantom cine and
tiny saved models written in the test's temporary folder, one reference `echosam segment` result, and
the checks every fault test makes (exit code, one-line message naming the cause, no new files, an
existing result folder byte-identical)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from echosam import cli


def make_data(d: Path) -> dict:
    """cine.seq.nrrd (10 frames, 48x48), truth.seq.nrrd, memsam/medivista tiny random-weight models, and
    one memsam segment result ``ref`` (with a saved session) to copy from."""
    import torch

    from echosam.checkpoints import save_checkpoint
    from echosam.io import write_cine, write_labels
    from echosam.models.registry import build_model, preset_config
    from echosam.phantom import make_phantom

    ph = make_phantom(n_frames=10, seed=5, size=(48, 48), heart_rate=110)
    write_cine(ph.cine, d / "cine.seq.nrrd")
    write_labels(ph.labels, ph.cine, d / "truth.seq.nrrd")
    torch.manual_seed(0)
    for fam in ("memsam", "medivista"):
        cfg = preset_config(fam, "tiny")
        cfg.classes = ["lv", "myo", "la"]
        save_checkpoint(build_model(fam, cfg), fam, cfg, d / f"{fam}.safetensors")
    yx = np.argwhere(ph.labels[0] == 1)
    y, x = yx[len(yx) // 2]
    rc = cli.main(["segment", str(d / "cine.seq.nrrd"), "-o", str(d / "ref"), "--model", str(d / "memsam.safetensors"),
                   "--points", f"{x},{y},1", "--device", "cpu", "--no-overlay", "-q"])
    assert rc == 0
    return {"dir": d, "phantom": ph, "cine": d / "cine.seq.nrrd", "truth": d / "truth.seq.nrrd",
            "memsam": d / "memsam.safetensors", "medivista": d / "medivista.safetensors", "ref": d / "ref",
            "point": f"{x},{y},1"}


def copy_result(data: dict, dest: Path) -> Path:
    """A copy of the reference result at ``dest``, with its cine next to it (run.json names it by base name)."""
    shutil.copytree(data["ref"], dest)
    if not (dest.parent / data["cine"].name).exists():
        shutil.copy2(data["cine"], dest.parent / data["cine"].name)
    return dest


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder`` (folders as None): byte-identity checks."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def names(folder: Path) -> set:
    return {p.name for p in Path(folder).iterdir()}


def run_cli(argv, capsys) -> tuple:
    """(exit code, stderr lines) of ``echosam argv`` run in this process."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def assert_refused(rc, err, *words, code: int = 2) -> None:
    """Exit ``code``, exactly one stderr line, starting ``echosam: error:`` and naming every word."""
    assert rc == code, (rc, err)
    assert len(err) == 1, err
    assert err[0].startswith("echosam: error:"), err
    low = err[0].lower()
    for w in words:
        assert w.lower() in low, (w, err[0])
