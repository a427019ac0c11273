"""`echosam segment | report | correct | demo`.

- ``segment CINE -o OUTDIR``: prompt (points/box/mask) or prompt-free segmentation of a loop; writes
  labels (``labels.seq.nrrd`` and/or ``labels.nii.gz``), ``overlay.mp4``, ``report.json/csv``,
  ``lv_curve.png``, ``run.json`` and the saved ``session/`` (embeddings + prompts, for ``correct``).
- ``report LABELS -o OUTDIR``: the clinical table (EF, volumes, ED/ES) of an existing label map.
- ``correct OUTDIR --mask FILE --frame K``: a corrected mask on frame K, re-propagated from the saved
  session without re-encoding; OUTDIR's outputs are replaced as a whole.
- ``demo``: segments a phantom cine with the bundled demo MemSAM and prints Dice and EF vs truth.

Outputs are built in a temporary folder next to OUTDIR and swapped in only when complete, so an
error never leaves a half-written result (an existing OUTDIR stays as it was).
Points/box prompts apply to the FIRST structure of ``--structures``; a mask file (label map) seeds
every listed structure present on its frame.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EchoSAMError, PromptError
from .structures import get_structure, parse_structures

RUN_FILE = "run.json"
OUR_FILES = {"run.json", "session", "report.json", "report.csv", "lv_curve.png", "overlay.mp4",
             "labels.seq.nrrd", "labels.nii.gz"}
DEFAULT_MODEL = "echosam-demo-memsam-tiny"


# ---- argument parsing helpers --------------------------------------------------------------------------
def parse_points(text: str) -> tuple:
    """``"x,y,1;x,y,0"`` -> points (N, 2) float and labels (N,) int."""
    pts, labs = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) not in (2, 3):
            raise PromptError(f"Point {item!r} is not 'x,y' or 'x,y,label' (label 1 include, 0 exclude).")
        try:
            pts.append((float(parts[0]), float(parts[1])))
            labs.append(int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise PromptError(f"Point {item!r} has a non-numeric value; write points as 'x,y,1;x,y,0'.") from None
    if not pts:
        raise PromptError("--points is empty; write points as 'x,y,1;x,y,0' (cine pixels, x = column).")
    return np.asarray(pts), np.asarray(labs)


def parse_box(text: str) -> tuple:
    try:
        v = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).") from None
    if len(v) != 4:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).")
    return v


def read_mask_frame(path, frame: int, shape_hw: tuple) -> np.ndarray:
    """One (H, W) label frame from a label file (.seq.nrrd/.nrrd/.nii.gz, (T,H,W) or one frame) or .npy."""
    p = Path(path)
    if not p.exists():
        raise PromptError(f"Mask file {p} does not exist.")
    if p.suffix == ".npy":
        lab = np.load(p, allow_pickle=False)
    else:
        from .io import read_labels
        lab, _ = read_labels(p)
    lab = np.asarray(lab)
    if lab.ndim == 2:
        lab = lab[None]
    if lab.ndim != 3 or tuple(lab.shape[1:]) != tuple(shape_hw):
        raise PromptError(f"Mask file {p.name} has shape {lab.shape}; it must be (H, W) or (T, H, W) with "
                          f"(H, W) = {tuple(shape_hw)} (the cine grid).")
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


# ---- output folder ------------------------------------------------------------------------------------
def _check_outdir(outdir: Path) -> None:
    if outdir.exists():
        if not outdir.is_dir():
            raise EchoSAMError(f"{outdir} exists and is not a folder; give a folder for the results.")
        foreign = [p.name for p in outdir.iterdir() if p.name not in OUR_FILES]
        if foreign:
            raise EchoSAMError(f"{outdir} holds files that are not EchoSAM results ({', '.join(sorted(foreign)[:3])}); "
                               "choose a new or empty folder.")


def write_outputs(session, outdir, run: dict, formats=("seq.nrrd",), overlay: bool = True) -> dict:
    """Labels, overlay, report, run.json and the saved session into ``outdir``, swapped in atomically."""
    from . import cardiac
    from .io import write_labels, write_overlay
    from .io.atomic import atomic_folder
    from .report import write_report

    outdir = Path(outdir)
    _check_outdir(outdir)
    labels, cine = session.labels, session.cine
    res = cardiac.analyse(labels, cine.spacing, cine.frame_times)
    with atomic_folder(outdir) as tmp:
        for fmt in formats:
            write_labels(labels, cine, tmp / f"labels.{fmt.lstrip('.')}")
        if overlay:
            write_overlay(cine, labels, tmp / "overlay.mp4")
        info = dict(run, key_frames=session.key_frames, locked_frames=session.locked_frames)
        write_report(res, tmp, info=info, title=cine.name)
        if session.prompted:
            session.save(tmp / "session")
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=1) + "\n")
    return {"result": res, "outdir": outdir}


def _progress(args):
    from .progress import tqdm_progress
    return None if getattr(args, "quiet", False) else tqdm_progress("echosam")


# ---- commands ---------------------------------------------------------------------------------------
def load(model: str, device: str, family: Optional[str] = None):
    from .checkpoints import load_model
    from .session import resolve_device
    return load_model(model, device=resolve_device(device), family=family)


def cmd_segment(args) -> int:
    from .io import read_cine
    from .session import Session

    cine = read_cine(args.cine)
    keys = [s.key for s in parse_structures(args.structures)]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        if f.lstrip(".") not in ("seq.nrrd", "nrrd", "nii.gz", "nii"):
            raise EchoSAMError(f"--formats {f!r}: choose from seq.nrrd, nrrd, nii.gz, nii.")
    _check_outdir(Path(args.output))
    loaded = load(args.model, args.device, args.family)
    s = Session(cine, loaded, structures=keys, precision=args.precision)
    if not s.prompted:
        if args.points or args.box or args.mask:
            raise PromptError(f"{args.model} is a prompt-free model: drop --points/--box/--mask, or use a MemSAM model.")
        s.segment_auto(progress=_progress(args))
    else:
        if args.points:
            pts, labs = parse_points(args.points)
            s.add_points(args.frame, keys[0], pts, labs)
        if args.box:
            s.add_box(args.frame, keys[0], parse_box(args.box))
        if args.mask:
            lab = read_mask_frame(args.mask, args.mask_frame, cine.shape[1:])
            found = [k for k in keys if structure_mask(lab, k).any()]
            if not found:
                raise PromptError(f"Mask file {args.mask} has none of {', '.join(keys)} on frame {args.mask_frame}.")
            for k in found:
                s.set_mask(args.mask_frame, k, structure_mask(lab, k))
        if not any(s.key_frames.values()):
            if not args.seed_model:
                raise PromptError(f"{args.model} is a prompted model (MemSAM) and no prompt was given: add --points, "
                                  "--box or --mask, or --seed-model NAME (a prompt-free model) to seed it.")
            s.seed_from_auto(args.frame, auto=load(args.seed_model, args.device))
        s.propagate(progress=_progress(args))
    run = {"command": "segment", "cine": str(Path(args.cine).resolve()), "model": args.model, "family": loaded.family,
           "model_path": str(loaded.path) if loaded.path else None, "structures": keys, "formats": formats,
           "overlay": not args.no_overlay}
    out = write_outputs(s, args.output, run, formats, overlay=not args.no_overlay)
    _print_result(out["result"], args.output)
    return 0


def correct(outdir, mask_path, frame: int, structure: str = "lv", cine_path=None, device: str = "auto",
            loaded=None, progress=None):
    """Apply a corrected mask on ``frame`` to the saved session in ``outdir``, re-propagate (no encoder
    run: the saved embeddings are used) and rewrite every output. Returns the session."""
    from .io import read_cine
    from .session import Session

    outdir = Path(outdir)
    run_path = outdir / RUN_FILE
    if not run_path.exists() or not (outdir / "session").exists():
        raise EchoSAMError(f"{outdir} is not an `echosam segment` output with a saved session (no {RUN_FILE} or "
                           "session/); run `echosam segment` with a MemSAM model first.")
    run = json.loads(run_path.read_text())
    if not (cine_path or run.get("cine")):
        raise EchoSAMError(f"{outdir} does not record its cine; give it with --cine.")
    cine = read_cine(cine_path or run["cine"])
    if loaded is None:
        loaded = load(run.get("model_path") or run["model"], device, run.get("family"))
    s = Session.load(outdir / "session", cine, loaded)
    lab = read_mask_frame(mask_path, frame, cine.shape[1:])
    key = get_structure(structure).key
    s.set_mask(frame, key, structure_mask(lab, key))
    s.propagate(progress=progress)
    run = dict(run, corrections=list(run.get("corrections", [])) + [{"frame": int(frame), "structure": key,
                                                                       "mask": str(Path(mask_path).resolve())}])
    write_outputs(s, outdir, run, run.get("formats", ["seq.nrrd"]), overlay=run.get("overlay", True))
    return s


def cmd_correct(args) -> int:
    s = correct(args.outdir, args.mask, args.frame, args.structure, args.cine, args.device, progress=_progress(args))
    from . import cardiac
    _print_result(cardiac.analyse(s.labels, s.cine.spacing, s.cine.frame_times), args.outdir)
    return 0


def cmd_report(args) -> int:
    from . import cardiac
    from .io import read_cine, read_labels
    from .report import write_report

    labels, lcine = read_labels(args.labels)
    geo = lcine
    if args.cine:
        geo = read_cine(args.cine)
        if geo.shape != labels.shape:
            raise EchoSAMError(f"Labels {labels.shape} and cine {geo.shape} differ in size; give the cine they belong to.")
    res = cardiac.analyse(labels, geo.spacing, geo.frame_times)
    write_report(res, args.output, info={"labels": str(Path(args.labels).resolve())}, title=geo.name)
    _print_result(res, args.output)
    return 0


def fixed_click(mask: np.ndarray) -> tuple:
    """MemSAM's deterministic test click: the foreground pixel at the median index of the raster-order
    foreground list (reference/models.md §1.2), as (x, y)."""
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return float(x), float(y)


# The demo weights were trained on phantom seeds 0-95 (validation 500000+, test 900000+): the demo
# cine uses a seed none of them saw.
DEMO_SEED = 424242


def run_demo(out=None, device: str = "auto", model: str = DEFAULT_MODEL, n_frames: int = 40, seed: int = DEMO_SEED,
             loaded=None) -> dict:
    """Segment a phantom cine (64 x 64 px per model input) with the demo MemSAM from one click per
    structure on frame 0 (MemSAM's protocol); mean LV Dice and EF against the phantom truth."""
    from . import cardiac
    from .phantom import make_phantom
    from .session import Session

    ph = make_phantom(n_frames=n_frames, seed=seed, size=(128, 128))
    loaded = loaded or load(model, device)
    keys = [k for k in ("lv", "myo", "la") if k in (loaded.classes or ["lv"])] if loaded.prompted else None
    s = Session(ph.cine, loaded, structures=keys)
    if s.prompted:
        for k in s.structures:
            s.add_points(0, k, [fixed_click(ph.labels[0] == get_structure(k).label)], [1])
        s.propagate()
    else:
        s.segment_auto()
    lab = s.labels
    truth = ph.labels == 1
    pred = lab == 1
    inter = (truth & pred).reshape(len(lab), -1).sum(1)
    dice = 2 * inter / np.maximum(truth.reshape(len(lab), -1).sum(1) + pred.reshape(len(lab), -1).sum(1), 1)
    res = cardiac.analyse(lab, ph.cine.spacing, ph.cine.frame_times)
    if out:
        write_outputs(s, out, {"command": "demo", "model": model, "family": loaded.family,
                               "model_path": str(loaded.path) if loaded.path else None, "structures": s.structures,
                               "formats": ["seq.nrrd"], "overlay": True, "cine": None})
    return {"mean_dice": float(dice.mean()), "dice": dice, "ef_estimated": float(res.ef_percent),
            "ef_true": float(ph.true_ef), "result": res, "session": s, "phantom": ph}


def cmd_demo(args) -> int:
    out = run_demo(args.out, device=args.device, model=args.model)
    ph, res = out["phantom"], out["result"]
    print(f"EchoSAM demo: model '{args.model}' (tiny, trained on synthetic phantom cines only; not for clinical use)")
    print(f"cine: unseen phantom, {ph.cine.n_frames} frames, {ph.cine.shape[1]}x{ph.cine.shape[2]} px, "
          f"{ph.cine.fps:.0f} fps; one click in the LV on frame 0, propagated by memory")
    print(f"mean LV Dice vs phantom truth: {out['mean_dice']:.3f} (min {out['dice'].min():.3f})")
    print(f"EF estimated {out['ef_estimated']:.1f} % vs true {out['ef_true']:.1f} % "
          f"(error {out['ef_estimated'] - out['ef_true']:+.1f} points); ED frames {list(res.ed_frames)}, "
          f"ES frames {list(res.es_frames)}")
    if args.out:
        print(f"labels, overlay video, report and LV curve written to {args.out}")
    return 0


def _print_result(res, outdir) -> None:
    from .report import format_summary
    print(format_summary(res))
    print(f"results in {outdir}")


# ---- registration --------------------------------------------------------------------------------------
def register(subparsers) -> None:
    common = dict(formatter_class=__import__("argparse").ArgumentDefaultsHelpFormatter)
    p = subparsers.add_parser("segment", help="segment a cine loop (prompted or prompt-free)", **common)
    p.add_argument("cine", help="input cine (.seq.nrrd, .nrrd, .nii.gz, DICOM, .mp4/.avi, PNG folder)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Models.json name or weights file")
    p.add_argument("--family", default=None, help="family of an official .pth file (memsam, medivista, masam)")
    p.add_argument("--points", default=None, help="'x,y,1;x,y,0' include/exclude points (cine pixels) on --frame")
    p.add_argument("--box", default=None, help="x0,y0,x1,y1 box (cine pixels) on --frame")
    p.add_argument("--frame", type=int, default=0, help="frame of --points/--box/--seed-model")
    p.add_argument("--mask", default=None, help="label file with a mask to start from (locks that frame)")
    p.add_argument("--mask-frame", type=int, default=0, help="frame of --mask")
    p.add_argument("--seed-model", default=None, help="prompt-free model seeding MemSAM when no prompt is given")
    p.add_argument("--structures", default="lv", help="structures: lv,myo,la")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--formats", default="seq.nrrd", help="label formats: seq.nrrd,nii.gz")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_segment)

    p = subparsers.add_parser("report", help="EF / volumes / ED-ES table from an existing label map", **common)
    p.add_argument("labels", help="label map (.seq.nrrd, .nii.gz): 1 LV, 2 myocardium, 3 LA")
    p.add_argument("--cine", default=None, help="cine whose spacing and frame times to use")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("correct", help="apply a corrected mask and re-propagate a saved result", **common)
    p.add_argument("outdir", help="output folder of `echosam segment`")
    p.add_argument("--mask", required=True, help="label file holding the corrected mask")
    p.add_argument("--frame", type=int, required=True, help="frame the correction is on")
    p.add_argument("--structure", default="lv", help="structure corrected (lv, myo, la)")
    p.add_argument("--cine", default=None, help="the cine, if it moved since `segment`")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_correct)

    p = subparsers.add_parser("demo", help="segment a phantom with the bundled demo model; Dice and EF vs truth",
                              **common)
    p.add_argument("--out", default=None, help="also write the results to this folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help="Models.json name or weights file")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=cmd_demo)


def main(argv=None) -> int:
    """Stand-alone entry (the `echosam` command goes through cli.py)."""
    import argparse
    parser = argparse.ArgumentParser(prog="echosam")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EchoSAMError as e:
        print(f"echosam {args.command}: {e}", file=sys.stderr)
        return 2
