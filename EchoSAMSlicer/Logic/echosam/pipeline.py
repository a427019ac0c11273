"""One cine end to end: read, segment (prompted or prompt-free), report, publish. The CLI
(`echosam segment | correct | report | demo`), batch work and tests call these functions.

- `segment_cine`: a cine file -> an output folder with labels (``labels.seq.nrrd`` and/or
  ``labels.nii.gz``), ``overlay.mp4``, ``report.json/csv``, ``lv_curve.png``, ``run.json`` and the saved
  ``session/`` (embeddings + prompts, for `correct`).
- `correct`: a corrected mask on frame K of a saved result, re-propagated without re-encoding.
- `report_labels`: the clinical table (EF, volumes, ED/ES) of an existing label map.
- `run_demo`: a phantom cine segmented with the bundled demo model, Dice and EF vs the truth.

Every result folder is built whole in a temporary folder next to it and published at once
(`io.atomic.atomic_folder`), so an error, Ctrl-C, SIGTERM or a crash never leaves a half-written
result, and an existing folder stays as it was. The output is checked for writability before any
work. A command on an existing result folder holds its lock (`io.lock.folder_lock`) from the first
read to the publish: a second command on the same folder is refused, never silently overwrites.
Input files are recorded by base name only (clinical file paths often carry patient names);
``record_paths=True`` (``--record-paths``) records full paths. ``read`` holds the reader options
(``slices_as_frames``, ``fps``) of every cine read; `correct` re-reads the cine with the same ones.
Points/box prompts apply to the FIRST structure; a mask file (label map) seeds every listed structure
present on its frame.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EchoSAMError, PromptError
from .structures import get_structure

RUN_FILE = "run.json"
OUR_FILES = {"run.json", "session", "report.json", "report.csv", "lv_curve.png", "overlay.mp4",
             "labels.seq.nrrd", "labels.nii.gz", "labels.nrrd", "labels.nii"}
LABEL_FORMATS = ("seq.nrrd", "nrrd", "nii.gz", "nii")
# The demo weights were trained on phantom seeds 0-95 (validation 500000+, test 900000+): the demo
# cine uses a seed none of them saw.
DEMO_SEED = 424242


@dataclass
class Prompts:
    """What the user gives a prompted model: points ``(N, 2)`` cine pixels (x = column) with 1/0
    labels and/or a box (x0, y0, x1, y1) on ``frame``; a label file whose ``mask_frame`` locks that
    frame; or a prompt-free ``seed_model`` run on ``frame`` when nothing else is given."""

    frame: int = 0
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[tuple] = None
    mask: Optional[str] = None
    mask_frame: int = 0
    seed_model: Optional[str] = None

    @property
    def given(self) -> bool:
        return self.points is not None or self.box is not None or self.mask is not None


# ---- inputs --------------------------------------------------------------------------------------
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


def read_mask_frame(path, frame: int, cine) -> np.ndarray:
    """One (H, W) label frame from a label file (.seq.nrrd/.nrrd/.nii.gz, (T,H,W) or one frame) or an
    integer .npy array, checked by the one label-map validator (`io.labelmap`): values within the
    structure table, and the cine's grid (size, geometry, frame count)."""
    from .io.labelmap import check_label_values, check_same_grid

    p = Path(path)
    if not p.is_file():
        raise PromptError(f"Mask file {p} does not exist.")
    if p.suffix.lower() == ".npy":
        try:
            lab = np.load(p, allow_pickle=False)
        except ValueError:
            raise PromptError(f"Mask file {p.name} holds Python objects (a pickled array), not a label map; refused. "
                              "Save the mask as an integer array (numpy.save(path, mask.astype('uint8'))).") from None
        except (OSError, EOFError):
            raise PromptError(f"Mask file {p.name} is truncated or not a .npy array; save it again.") from None
        lab = check_label_values(lab, p.name)
        if lab.ndim == 2:
            lab = lab[None]
        if lab.ndim != 3 or tuple(lab.shape[1:]) != tuple(cine.shape[1:]) or lab.shape[0] not in (1, cine.n_frames):
            raise PromptError(f"Mask file {p.name} has shape {lab.shape}; it must be (H, W), (1, H, W) or (T, H, W) "
                              f"with T = {cine.n_frames} and (H, W) = {tuple(cine.shape[1:])} (the cine grid).")
    else:
        from .io import read_labels
        lab, lab_cine = read_labels(p)
        check_same_grid(lab_cine, cine, f"Mask file {p.name}", single_frame_ok=True)
    if lab.shape[0] == 1:
        return lab[0]
    if not 0 <= frame < lab.shape[0]:
        raise PromptError(f"Mask file {p.name} has {lab.shape[0]} frames; frame {frame} does not exist.")
    return lab[frame]


def structure_mask(lab: np.ndarray, key: str) -> np.ndarray:
    """The mask of ``key`` in a label frame (a binary 0/1 file counts as that structure)."""
    m = lab == get_structure(key).label
    if not m.any() and set(np.unique(lab).tolist()) <= {0, 1}:
        m = lab == 1
    return m


def load(model: Optional[str], device: str = "auto", family: Optional[str] = None):
    """A Models.json name or a weights file (None: Models.json's default) on ``device`` ("auto" resolved)."""
    from .checkpoints import load_model
    from .device import resolve_device
    from .model_zoo import default_model_name
    return load_model(model or default_model_name(), device=resolve_device(device), family=family)


# ---- output folder -------------------------------------------------------------------------------
def check_outdir(outdir: Path) -> None:
    """Before any work: ``outdir`` (a symbolic link counts as its target) must be new or a folder of
    EchoSAM results, and writable."""
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


def analyse_session(session):
    """The cardiac analysis of a session's labels (a model's output, checked for a plausible LV)."""
    from . import cardiac
    c = session.cine
    return cardiac.analyse(session.labels, c.spacing, c.frame_times, frames=c.frames, predicted=True)


def check_formats(formats) -> list:
    out = [f.strip().lstrip(".") for f in formats if f.strip()]
    for f in out:
        if f not in LABEL_FORMATS:
            raise EchoSAMError(f"Label format {f!r}: choose from {', '.join(LABEL_FORMATS)}.")
    return out


def write_outputs(session, outdir, run: dict, formats=("seq.nrrd",), overlay: bool = True) -> dict:
    """Labels, overlay, report, run.json and the saved session into ``outdir``, published as a whole."""
    from .io import write_labels, write_overlay
    from .io.atomic import atomic_folder
    from .report import write_report

    outdir = Path(outdir)
    check_outdir(outdir)
    labels, cine = session.labels, session.cine
    res = analyse_session(session)
    with atomic_folder(outdir) as tmp:
        for fmt in formats:
            write_labels(labels, cine, tmp / f"labels.{fmt.lstrip('.')}")
        if overlay:
            write_overlay(cine, labels, tmp / "overlay.mp4")
        info = dict(run, key_frames=session.key_frames, locked_frames=session.locked_frames)
        write_report(res, tmp, info=info, title=cine.name)
        session.save(tmp / "session")
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    return {"result": res, "outdir": outdir}


# ---- one cine ------------------------------------------------------------------------------------
def apply_prompts(session, prompts: Prompts, device: str = "auto") -> None:
    """Put ``prompts`` into a session (points/box on the first structure, a mask file on each structure it
    holds, else a seed from ``seed_model``). Nothing to do for a prompt-free model given no prompt."""
    keys = session.structures
    if prompts.points is not None or prompts.box is not None:
        session.add_new_points_or_box(prompts.frame, keys[0], prompts.points, prompts.labels, prompts.box)
    if prompts.mask:
        lab = read_mask_frame(prompts.mask, prompts.mask_frame, session.cine)
        found = [k for k in keys if structure_mask(lab, k).any()]
        if not found:
            raise PromptError(f"Mask file {prompts.mask} has none of {', '.join(keys)} on frame {prompts.mask_frame}.")
        for k in found:
            session.set_mask(prompts.mask_frame, k, structure_mask(lab, k))
    if session.prompted and not any(session.key_frames.values()):
        if not prompts.seed_model:
            raise PromptError(f"{session.loaded.family} is a prompted model and no prompt was given: add --points, "
                              "--box or --mask, or --seed-model NAME (a prompt-free model) to seed it.")
        seed = load(prompts.seed_model, device)
        if seed.prompted:
            raise PromptError(f"--seed-model {prompts.seed_model} is a prompted model ({seed.family}); a seed model must "
                              "be prompt-free (medivista or masam), e.g. echosam-demo-masam-tiny.")
        session.seed_from_auto(prompts.frame, auto=seed)


def segment_cine(cine_path, output, model: Optional[str] = None, family: Optional[str] = None,
                 structures=("lv",), prompts: Optional[Prompts] = None, device: str = "auto",
                 precision: str = "auto", formats=("seq.nrrd",), overlay: bool = True, progress=None,
                 loaded=None, read: Optional[dict] = None, record_paths: bool = False) -> dict:
    """Segment one cine file into ``output`` (see the module docstring). ``loaded`` skips loading
    ``model``. Returns {"result": cardiac analysis, "outdir", "session"}."""
    from .io import read_cine
    from .io.lock import folder_lock
    from .session import Session
    from .structures import parse_structures

    keys = [s.key for s in parse_structures(structures)] if isinstance(structures, str) else \
        [get_structure(s).key for s in structures]
    formats = check_formats(formats)
    read = read_options(read)
    check_outdir(Path(output))
    with folder_lock(output):
        cine = read_cine(cine_path, **read)
        loaded = loaded or load(model, device, family)
        s = Session(cine, loaded, structures=keys, precision=precision)
        apply_prompts(s, prompts or Prompts(), device)
        s.segment(progress=progress)
        run = {"command": "segment", "cine": input_record(cine_path, record_paths), "record_paths": bool(record_paths),
               "read": read, "model": model or str(loaded.path), "family": loaded.family,
               "model_path": str(loaded.path) if loaded.path else None, "structures": keys,
               "formats": formats, "overlay": bool(overlay)}
        out = write_outputs(s, output, run, formats, overlay=overlay)
    return dict(out, session=s)


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
    if not isinstance(run, dict) or not isinstance(run.get("model"), str) or not isinstance(run.get("formats", []), list):
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
        if cand.exists():
            return cand
    raise EchoSAMError(f"{outdir} records its cine only by name ({Path(recorded).name}) and no such file is next to "
                       "it; give the cine with --cine PATH.")


def correct(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
            loaded=None, progress=None, read: Optional[dict] = None):
    """Apply a corrected mask on ``frame`` to the saved session in ``outdir``, re-propagate (no encoder
    run: the saved embeddings are used) and republish every output, holding the folder's lock
    throughout. ``read`` overrides the reader options recorded by `segment`. Returns the session."""
    from .io import read_cine
    from .io.atomic import follow_link
    from .io.lock import folder_lock
    from .session import Session

    outdir = follow_link(Path(outdir))
    read_run(outdir)
    check_outdir(outdir)
    with folder_lock(outdir):
        run = read_run(outdir)           # again, under the lock: what another run published counts
        opts = read_options(dict(run.get("read") or {}, **{k: v for k, v in (read or {}).items() if v is not None}))
        cine = read_cine(find_cine(outdir, run, cine_path), **opts)
        if loaded is None:
            loaded = load(run.get("model_path") or run["model"], device, run.get("family"))
        s = Session.load(outdir / "session", cine, loaded)
        lab = read_mask_frame(mask_path, frame, cine)
        key = get_structure(structure).key
        s.set_mask(frame, key, structure_mask(lab, key))
        s.propagate(progress=progress)
        fix = {"frame": int(frame), "structure": key, "mask": input_record(mask_path, run.get("record_paths", False))}
        run = dict(run, read=opts, corrections=list(run.get("corrections", [])) + [fix])
        write_outputs(s, outdir, run, run.get("formats", ["seq.nrrd"]), overlay=run.get("overlay", True))
    return s


def _carry_over(src: Path, dst: Path, replaced) -> None:
    """Copy (hard-link where possible) every entry of ``src`` but ``replaced`` into ``dst``: a report
    published into a segment output keeps that output's other files."""
    import shutil

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


def report_labels(labels_path, output, cine_path=None, read: Optional[dict] = None, record_paths: bool = False):
    """EF / volumes / ED-ES of a label map file (spacing and times from ``cine_path`` if given), published
    into ``output`` as a whole (other EchoSAM results already there are kept)."""
    from . import cardiac
    from .io import read_cine, read_labels
    from .io.atomic import atomic_folder, follow_link
    from .io.labelmap import check_same_grid
    from .io.lock import folder_lock
    from .report import REPORT_FILES, write_report

    read = read_options(read)
    output = follow_link(Path(output))
    check_outdir(output)
    with folder_lock(output):
        labels, geo = read_labels(labels_path, slices_as_frames=read["slices_as_frames"])
        frames = None
        if cine_path:
            cine = read_cine(cine_path, **read)
            check_same_grid(geo, cine, f"Labels {Path(labels_path).name}")
            geo, frames = cine, cine.frames
        res = cardiac.analyse(labels, geo.spacing, geo.frame_times, frames=frames)
        info = {"labels": input_record(labels_path, record_paths)}
        if cine_path:
            info["cine"] = input_record(cine_path, record_paths)
        with atomic_folder(output) as tmp:
            if output.is_dir():
                _carry_over(output, tmp, set(REPORT_FILES))
            write_report(res, tmp, info=info, title=geo.name)
    return res


# ---- the demo ------------------------------------------------------------------------------------
def fixed_click(mask: np.ndarray) -> tuple:
    """MemSAM's deterministic test click: the foreground pixel at the median index of the raster-order
    foreground list (reference/models.md §1.2), as (x, y)."""
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return float(x), float(y)


def run_demo(out=None, device: str = "auto", model: Optional[str] = None, n_frames: int = 40,
             seed: int = DEMO_SEED, loaded=None) -> dict:
    """Segment a phantom cine (64 x 64 px per model input) with the demo model from one click per
    structure on frame 0 (MemSAM's protocol; a prompt-free model needs none); mean LV Dice and EF
    against the phantom truth."""
    from . import cardiac
    from .phantom import make_phantom
    from .session import Session

    ph = make_phantom(n_frames=n_frames, seed=seed, size=(128, 128))
    if out:
        check_outdir(Path(out))
    loaded = loaded or load(model, device)
    keys = [k for k in ("lv", "myo", "la") if k in (loaded.classes or ["lv"])] if loaded.prompted else None
    s = Session(ph.cine, loaded, structures=keys)
    if s.prompted:
        for k in s.structures:
            s.add_points(0, k, [fixed_click(ph.labels[0] == get_structure(k).label)], [1])
    s.segment()
    lab = s.labels
    truth = ph.labels == 1
    pred = lab == 1
    inter = (truth & pred).reshape(len(lab), -1).sum(1)
    dice = 2 * inter / np.maximum(truth.reshape(len(lab), -1).sum(1) + pred.reshape(len(lab), -1).sum(1), 1)
    res = cardiac.analyse(lab, ph.cine.spacing, ph.cine.frame_times)
    if out:
        from .io.lock import folder_lock
        with folder_lock(out):
            write_outputs(s, out, {"command": "demo", "model": model or str(loaded.path), "family": loaded.family,
                                   "model_path": str(loaded.path) if loaded.path else None, "structures": s.structures,
                                   "formats": ["seq.nrrd"], "overlay": True, "cine": None})
    return {"mean_dice": float(dice.mean()), "dice": dice, "ef_estimated": float(res.ef_percent),
            "ef_true": float(ph.true_ef), "result": res, "session": s, "phantom": ph}
