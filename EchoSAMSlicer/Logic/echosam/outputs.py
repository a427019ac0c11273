"""The result folder of a command: what may be in it, the checks before any work, run.json, and how
inputs are named in it. `pipeline` builds every result folder whole and publishes it through
`io.atomic.atomic_folder`, holding `io.lock.folder_lock` from the first read to the publish.

- `check_outdir`: new, or a folder of EchoSAM results (a symbolic link counts as its target), and
  writable: checked before the model is loaded or a frame segmented.
- `input_record`: inputs are named by base name only (clinical file paths often carry patient names);
  ``record_paths=True`` (``--record-paths``) records the full path.
- `read_options`: the reader options of every cine read (``slices_as_frames``, ``fps``), recorded in
  run.json so that `correct` reads the cine the same way.
- `read_run` / `find_cine`: run.json of a segment result (damaged -> a message saying to start over) and
  its cine (given, recorded, or found by its recorded base name next to the result).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .errors import EchoSAMError

RUN_FILE = "run.json"
OUR_FILES = {"run.json", "session", "report.json", "report.csv", "lv_curve.png", "overlay.mp4",
             "labels.seq.nrrd", "labels.nii.gz", "labels.nrrd", "labels.nii", "fan_mask.png"}
LABEL_FORMATS = ("seq.nrrd", "nrrd", "nii.gz", "nii")


def check_outdir(outdir: Path) -> None:
    """Before any work: ``outdir`` must be new or a folder of EchoSAM results, and writable."""
    from .io.atomic import check_writable, follow_link

    outdir = follow_link(Path(outdir))
    if outdir.exists():
        if not outdir.is_dir():
            raise EchoSAMError(f"{outdir} exists and is not a folder; give a folder for the results.")
        foreign = [p.name for p in outdir.iterdir() if p.name not in OUR_FILES]
        if foreign:
            raise EchoSAMError(f"{outdir} holds files that are not EchoSAM results ({', '.join(sorted(foreign)[:3])}); "
                               "choose a new or empty folder.")
    check_writable(outdir, "result folder")


def check_formats(formats) -> list:
    out = [f.strip().lstrip(".") for f in formats if f.strip()]
    for f in out:
        if f not in LABEL_FORMATS:
            raise EchoSAMError(f"Label format {f!r}: choose from {', '.join(LABEL_FORMATS)}.")
    return out


def read_options(read: Optional[dict] = None) -> dict:
    """The reader options of `io.read_cine` (``slices_as_frames``, ``fps``), JSON-able, Nones dropped."""
    read = dict(read or {})
    unknown = set(read) - {"slices_as_frames", "fps"}
    if unknown:
        raise EchoSAMError(f"Unknown reader option(s) {', '.join(sorted(unknown))}; use slices_as_frames, fps.")
    out = {"slices_as_frames": bool(read.get("slices_as_frames", False))}
    if read.get("fps") is not None:
        out["fps"] = float(read["fps"])
    return out


def input_record(path, record_paths: bool = False) -> str:
    """How an input file is named in run.json / report.json: its base name (privacy), or its full path."""
    return str(Path(path).resolve()) if record_paths else Path(path).name


def read_run(outdir: Path) -> dict:
    """run.json of a segment output, or an `EchoSAMError` saying it is missing or damaged."""
    run_path = outdir / RUN_FILE
    if not run_path.is_file() or not (outdir / "session").is_dir():
        raise EchoSAMError(f"{outdir} is not an `echosam segment` output with a saved session (no {RUN_FILE} or "
                           "session/); run `echosam segment` first.")
    try:
        run = json.loads(run_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EchoSAMError(f"{run_path} is damaged ({e}); start over by running `echosam segment` again.") from None
    if not isinstance(run, dict) or not isinstance(run.get("model"), str) or not isinstance(run.get("formats", []), list) \
            or not isinstance(run.get("region") or {}, dict):
        raise EchoSAMError(f"{run_path} is damaged (not a run record of `echosam segment`); start over by running "
                           "`echosam segment` again.")
    return run


def find_cine(outdir: Path, run: dict, cine_path=None) -> Path:
    """The cine of a result: ``cine_path``, else the recorded full path, else the recorded base name next
    to the result folder or in the current folder (the session's fingerprint then proves it is the one)."""
    if cine_path:
        return Path(cine_path)
    recorded = run.get("cine")
    if not isinstance(recorded, str) or not recorded:
        raise EchoSAMError(f"{outdir} does not record its cine; give it with --cine.")
    for cand in (Path(recorded), outdir.parent / Path(recorded).name, Path.cwd() / Path(recorded).name):
        if cand.is_file() or (cand.is_dir() and cand != outdir):
            return cand
    raise EchoSAMError(f"{outdir} records its cine only by name ({Path(recorded).name}) and no such file is next to "
                       "it; give the cine with --cine PATH.")


def carry_over(src: Path, dst: Path, replaced) -> None:
    """Copy (hard-link where possible) every entry of ``src`` but ``replaced`` into ``dst``: a report
    published into a segment output keeps that output's other files."""
    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    for entry in src.iterdir():
        if entry.name in replaced or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name, copy_function=link_or_copy)
        else:
            link_or_copy(entry, dst / entry.name)
