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
result, and an existing folder stays as it was. The output is checked (`outputs.check_outdir`) before
any work. A command on an existing result folder holds its lock (`io.lock.folder_lock`) from the first
read to the publish: a second command on the same folder is refused, never silently overwrites.
Inputs are recorded by base name only unless ``record_paths`` (`outputs.input_record`); ``read`` holds
the reader options (``slices_as_frames``, ``fps``) of every cine read, and `correct` reuses them.
The user's prompts (points and boxes per structure, a mask file, a seed model) are `echosam.user_prompts`.

The ultrasound region (`echosam.fan`, ``region="auto" | "off" | (x0, y0, x1, y1)``) comes first: the
model sees only the fan's crop (0 outside the fan), prompts in full-frame pixels are mapped into the
crop (`map_prompts`), and labels are mapped back onto the full frame (nothing outside the fan) before
anything is written. ``run.json`` records the region (``region``: source, bbox, fan fraction, notice)
and ``fan_mask.png`` holds its mask, so that `correct` reuses exactly the same crop.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EchoSAMError, PromptError
from .structures import get_structure
from .report import calibration_note, ef_accuracy_note
from .user_prompts import Prompts, apply_prompts, print_notice, structure_mask, zoom_to_prompts

from .outputs import (LABEL_FORMATS, OUR_FILES, RUN_FILE, carry_over, check_formats, check_outdir,  # noqa: F401
                      find_cine, input_record, read_options, read_run)
# The demo weights were trained on phantom seeds 0-95 (validation 500000+, test 900000+): the demo
# cine uses a seed none of them saw.
DEMO_SEED = 424242


# ---- inputs --------------------------------------------------------------------------------------
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


def load(model: Optional[str], device: str = "auto", family: Optional[str] = None):
    """A Models.json name or a weights file (None: Models.json's default) on ``device`` ("auto" resolved)."""
    from .checkpoints import load_model
    from .device import resolve_device
    from .model_zoo import default_model_name
    return load_model(model or default_model_name(), device=resolve_device(device), family=family)


# ---- output folder -------------------------------------------------------------------------------
def analyse_labels(labels, cine):
    """The cardiac analysis of a model's labels on ``cine`` (checked for a plausible LV on its pixels)."""
    from . import cardiac
    return cardiac.analyse(labels, cine.spacing, cine.frame_times, frames=cine.frames, predicted=True)


def write_outputs(session, outdir, run: dict, formats=("seq.nrrd",), overlay: bool = True, region=None,
                  cine=None, ef_check=None) -> dict:
    """Labels, overlay, report, run.json and the saved session into ``outdir``, published as a whole.
    With a `FanRegion` (``region``) the session ran on the fan's crop: its labels are mapped back onto
    ``cine`` (the full-frame cine) and the region's mask is saved next to run.json. ``ef_check``: the
    `echosam.ef_check.EFCheck` of the three readings, ``session`` being the reported one; recorded in run.json,
    it flags an EF that depends on the prompt."""
    from .ef_check import apply_check
    from .io import write_labels, write_overlay
    from .io.atomic import atomic_folder
    from .report import write_report

    outdir = Path(outdir)
    check_outdir(outdir)
    labels = session.labels if region is None else region.uncrop(session.labels)
    cine = session.cine if cine is None else cine
    res = analyse_labels(labels, cine)
    if ef_check is not None:
        run = dict(run, ef_check=ef_check.to_dict())
        res = apply_check(res, ef_check)
    with atomic_folder(outdir) as tmp:
        for fmt in formats:
            write_labels(labels, cine, tmp / f"labels.{fmt.lstrip('.')}")
        if overlay:
            write_overlay(cine, labels, tmp / "overlay.mp4")
        info = dict(run, key_frames=session.key_frames, locked_frames=session.locked_frames)
        write_report(res, tmp, info=info, title=cine.name)
        session.save(tmp / "session")
        if region is not None:
            region.save(tmp)
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    return {"result": res, "outdir": outdir, "run": run}


# ---- one cine ------------------------------------------------------------------------------------
def prepare_cine(cine_path, region="auto", notify=None, read: Optional[dict] = None, orientation="standard",
                 device: str = "auto", orientation_check: bool = True) -> tuple:
    """(full-frame cine, `FanRegion`, the model's cine) of a cine file read with the reader options
    ``read``, the region's orientation set (`echosam.orientation`; "auto", and "standard" with
    ``orientation_check``, read it on ``device``). A notice of the region (no fan found, a display that is or
    looks mirrored) goes to ``notify`` (default: one line on stderr)."""
    from .device import resolve_device
    from .fan import find_region
    from .io import read_cine
    from .orientation import orient

    cine = read_cine(cine_path, **read_options(read))
    fan = find_region(cine, region)
    if fan.notice:
        (notify or print_notice)(fan.notice)
    fan = orient(fan, cine, orientation, device=resolve_device(device), notify=notify or print_notice,
                 check=orientation_check)
    return cine, fan, fan.crop_cine(cine)


def segment_cine(cine_path, output, model: Optional[str] = None, family: Optional[str] = None,
                 structures=("lv",), prompts: Optional[Prompts] = None, device: str = "auto",
                 precision: str = "auto", formats=("seq.nrrd",), overlay: bool = True, progress=None,
                 loaded=None, region="auto", keep_connected: bool = True, notify=None,
                 read: Optional[dict] = None, record_paths: bool = False, zoom: bool = True,
                 substeps="auto", ef_check: bool = True, grow: bool = True, orientation: str = "standard",
                 orientation_check: bool = True, companion: bool = True) -> dict:
    """Segment one cine file into ``output`` (see the module docstring). ``loaded`` skips loading
    ``model``; ``region`` the ultrasound region (`echosam.fan.find_region`); ``keep_connected`` the
    connected-region rule (`echosam.consistency`); ``zoom`` False: no prompt zoom (`zoom_to_prompts`) and no heart
    zoom (`echosam.heart_zoom`); ``read`` the reader options; ``substeps`` in-between steps per frame interval
    (`echosam.session.in_between`);
    ``ef_check`` two more readings, with boxes 5 % larger and smaller, the result being the one with the middle
    EF (`echosam.ef_check`; ``box_change`` in run.json says which); ``grow`` False: each structure drawn at the
    threshold alone, without the model config's ``grow_thresholds`` (`echosam.hysteresis`); ``orientation``
    "standard" | "mirrored" | "auto": how the apical view is displayed (`echosam.orientation`;
    ``orientation_check`` False: "standard" is not read for a warning); ``companion`` False: a prompted model
    runs alone, without the prompt-free model its config averages in (`echosam.companion`).
    Returns {"result": cardiac analysis, "outdir", "session" (on the crop), "region"}."""
    from .companion import read_fan
    from .ef_check import checkable
    from .io.lock import folder_lock
    from .seeding import seed_for_zoom
    from .structures import parse_structures

    keys = [s.key for s in parse_structures(structures)] if isinstance(structures, str) else \
        [get_structure(s).key for s in structures]
    formats = check_formats(formats)
    read = read_options(read)
    check_outdir(Path(output))
    with folder_lock(output):
        cine, fan, model_cine = prepare_cine(cine_path, region, notify, read, orientation, device, orientation_check)
        uncalibrated = calibration_note(cine.metadata)
        if uncalibrated:
            (notify or print_notice)(uncalibrated)
        loaded = loaded or load(model, device, family)
        prompts = prompts or Prompts()
        mask_labels = read_mask_frame(prompts.mask, prompts.mask_frame, cine) if prompts.mask else None
        seed = seed_for_zoom(prompts, loaded, fan, cine, keys, device) if zoom else None
        drawn = loaded.prompted and prompts.mask is None and prompts.seed_model is None   # boxes or points
        second = read_fan(loaded, fan, model_cine, keys, loaded.device, precision, notify or print_notice) \
            if companion and drawn else None
        opts = dict(loaded=loaded, keys=keys, precision=precision, keep_connected=keep_connected,
                    substeps=substeps, device=device, zoom=zoom, grow=grow, second=second)
        full_fan = fan
        s, fan = _prompted_session(cine, fan, prompts, **opts, mask_labels=mask_labels, seed=seed, notify=notify,
                                   progress=progress, model_cine=model_cine)
        check = None
        if ef_check and checkable(prompts, loaded):
            (notify or print_notice)("reading the loop twice more, with every box 5 % larger and 5 % smaller; when "
                                     "the three EFs disagree the middle one is the result (--no-ef-check or "
                                     "ef_check=False: one reading)")
            s, fan, check = _middle_reading(cine, full_fan, prompts, (s, fan), notify, opts)
        run = {"command": "segment", "cine": input_record(cine_path, record_paths), "record_paths": bool(record_paths),
               "read": read, "model": model or str(loaded.path), "family": loaded.family,
               "model_path": str(loaded.path) if loaded.path else None, "structures": keys, "formats": formats,
               "overlay": bool(overlay), "region": fan.summary(), "zoom": bool(zoom), "keep_connected": bool(keep_connected),
               "grow": s.results.grow, "heart_zoom": s.auto_zoom.to_dict() if s.auto_zoom else None,
               "companion": s.companion.state()[0] if s.companion else None,
               "substeps": s.substeps, "precision": precision, "compute": s.path.to_dict(),
               "calibrated": uncalibrated is None, "box_change": check.reported_change if check else 0.0,
               "model_ef_accuracy": ef_accuracy_note(loaded.meta)}
        out = write_outputs(s, output, run, formats, overlay=overlay, region=fan, cine=cine, ef_check=check)
    return dict(out, session=s, region=fan)


def _prompted_session(cine, fan, prompts, loaded, keys, precision, keep_connected, substeps, device, zoom,
                      grow=True, mask_labels=None, seed=None, notify=None, progress=None, model_cine=None,
                      second=None) -> tuple:
    """A session on ``fan`` (narrowed to the prompts when ``zoom``: `zoom_to_prompts`) given ``prompts`` and
    segmented -> (session, the region it ran on). ``model_cine``: ``fan``'s crop of ``cine``, when made already;
    ``second``: the companion's `echosam.companion.FanReading` on ``fan`` (None: the model alone)."""
    from .session import Session

    region = zoom_to_prompts(fan, prompts, loaded, keys, mask_labels, notify, seed) if zoom else fan
    if region is not fan or model_cine is None:
        model_cine = region.crop_cine(cine)
    s = Session(model_cine, loaded, structures=keys, precision=precision, keep_connected=keep_connected,
                substeps=substeps, grow="config" if grow else None, companion=second.on(region) if second else None,
                heart_zoom=zoom)
    apply_prompts(s, prompts, device, region=region, mask_labels=mask_labels, seed=seed)
    s.segment(progress=progress)
    if s.auto_zoom is not None:
        (notify or print_notice)(s.auto_zoom.note())
    return s, region


def _middle_reading(cine, fan, prompts, given: tuple, notify, opts: dict) -> tuple:
    """The three readings (`echosam.ef_check.read_three`): ``given`` (session, region) from the boxes as given, and
    the same run (``opts``: `_prompted_session`'s) with every box `BOX_CHANGE` larger and smaller on ``fan`` ->
    (session, region, `EFCheck`) of the reading the result is. A changed box that cannot run (off the fan) is
    left out, and the boxes as given then stand."""
    from .ef_check import read_three, scaled_prompts

    def read(change):
        try:
            return _prompted_session(cine, fan, scaled_prompts(prompts, change, cine.shape[1:]), **opts,
                                     notify=lambda _: None)
        except PromptError as e:
            (notify or print_notice)(f"the EF check could not run a changed box ({e}); it compares the others")
            return None

    (s, region), check = read_three(given, read, lambda r: analyse_labels(r[1].uncrop(r[0].labels), cine).ef_percent)
    return s, region, check


def correct(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
            loaded=None, progress=None, read: Optional[dict] = None):
    """`correct_outputs` returning only the session (on the region's crop)."""
    return correct_outputs(outdir, mask_path, frame, structure, cine_path, device, loaded, progress, read)["session"]


def _stored_region(outdir: Path, run: dict, shape_hw):
    from .fan import FanRegion
    if not run.get("region"):
        return FanRegion.whole_frame(shape_hw)
    try:
        return FanRegion.load(outdir, run["region"], shape_hw)
    except EchoSAMError:
        raise
    except Exception as e:           # a truncated fan_mask.png (PIL), a region record without its keys
        raise EchoSAMError(f"The region stored in {outdir} is damaged ({type(e).__name__}); start over by running "
                           "`echosam segment` again.") from None


def correct_outputs(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
                    loaded=None, progress=None, read: Optional[dict] = None) -> dict:
    """Apply a corrected mask on ``frame`` to the saved session in ``outdir``, re-propagate (no encoder
    run: the saved embeddings are used) and republish every output, holding the folder's lock
    throughout. The region stored with the result (run.json + fan_mask.png) and its reader options are
    reused (``read`` overrides them); the mask file is in full-frame pixels, on the cine's grid. Returns
    {"result": the cardiac analysis of the labels written, "outdir", "session", "region"}."""
    from .io import read_cine
    from .io.atomic import follow_link
    from .io.lock import folder_lock
    from .session import Session
    from .zoom import check_inside_zoom

    outdir = follow_link(Path(outdir))
    read_run(outdir)
    check_outdir(outdir)
    with folder_lock(outdir):
        run = read_run(outdir)           # again, under the lock: what another run published counts
        opts = read_options(dict(run.get("read") or {}, **{k: v for k, v in (read or {}).items() if v is not None}))
        cine = read_cine(find_cine(outdir, run, cine_path), **opts)
        if loaded is None:
            loaded = load(run.get("model_path") or run["model"], device, run.get("family"))
        fan = _stored_region(outdir, run, cine.shape[1:])
        s = Session.load(outdir / "session", fan.crop_cine(cine), loaded, precision=run.get("precision", "auto"))
        full = read_mask_frame(mask_path, frame, cine)
        key = get_structure(structure).key
        check_inside_zoom(fan, structure_mask(full, key), f"The corrected {key} mask")
        lab = fan.crop(full)
        s.set_mask(frame, key, structure_mask(lab, key))
        s.propagate(progress=progress)
        fix = {"frame": int(frame), "structure": key, "mask": input_record(mask_path, run.get("record_paths", False))}
        run = dict(run, read=opts, corrections=list(run.get("corrections", [])) + [fix], compute=s.path.to_dict())
        run.pop("ef_check", None)        # the user has looked at the loop: their correction, not the boxes, decides
        out = write_outputs(s, outdir, run, run.get("formats", ["seq.nrrd"]), overlay=run.get("overlay", True),
                            region=fan, cine=cine)
    return dict(out, session=s, region=fan)


def report_labels(labels_path, output, cine_path=None, read: Optional[dict] = None, record_paths: bool = False):
    """EF / volumes / ED-ES of a label map file (spacing and times from ``cine_path`` if given, whose grid
    the labels must lie on), published into ``output`` as a whole (other EchoSAM results there are kept)."""
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
                carry_over(output, tmp, set(REPORT_FILES))
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

    from .model_zoo import phantom_demo_model_name

    ph = make_phantom(n_frames=n_frames, seed=seed, size=(128, 128))
    if out:
        check_outdir(Path(out))
    loaded = loaded or load(model or phantom_demo_model_name(), device)
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
