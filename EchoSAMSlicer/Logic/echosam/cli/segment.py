"""``echosam segment | report | correct | demo``: argument parsing only; the work is `echosam.pipeline`."""
from __future__ import annotations

import argparse

from .. import pipeline
from ..errors import EchoSAMError
from ..orientation import ORIENTATIONS
from ..session.in_between import MAX_SUBSTEPS, check_substeps
from .common import add_common, add_reading_options, progress_for, reading_options

RECORD_HELP = ("record full input paths in run.json/report.json (default: base names only; clinical paths "
               "often carry patient names)")


# ---- argument values (the text forms of points and boxes: echosam.prompt_text) ------------------------
def prompts_from_args(args) -> pipeline.Prompts:
    """--points/--box (repeatable, each optionally 'name:...'): unnamed ones for the first of --structures."""
    return pipeline.Prompts.from_text(args.points, args.box, args.structures, frame=args.frame, mask=args.mask,
                                      mask_frame=args.mask_frame, seed_model=args.seed_model)


# ---- commands ---------------------------------------------------------------------------------------
def cmd_segment(args) -> int:
    out = pipeline.segment_cine(args.cine, args.output, model=args.model, family=args.family,
                                structures=args.structures, prompts=prompts_from_args(args), device=args.device,
                                precision=args.precision, formats=args.formats.split(","),
                                overlay=not args.no_overlay, progress=progress_for(args, "echosam"),
                                region=args.region, keep_connected=not args.no_keep_connected, zoom=not args.no_zoom,
                                read=reading_options(args), record_paths=args.record_paths, substeps=args.substeps,
                                ef_check=not args.no_ef_check, grow=not args.no_grow, orientation=args.orientation,
                                orientation_check=not args.no_orientation_check, companion=not args.no_companion)
    _print_result(out["result"], args.output, out["run"].get("model_ef_accuracy"), _volume_note(out["run"]))
    print(f"computed with: {out['session'].compute_path}")
    if out["session"].substeps > 1:
        print(f"in-between frames: {out['session'].substeps} steps per frame interval (blended, as the model asks at "
              "this frame rate; --substeps 1 for none)")
    return 0


def cmd_correct(args) -> int:
    read = {"slices_as_frames": True} if args.slices_as_frames else {}
    if args.fps is not None:
        read["fps"] = args.fps
    out = pipeline.correct_outputs(args.outdir, args.mask, args.frame, args.structure, args.cine, args.device,
                                   progress=progress_for(args, "echosam"), read=read)
    _print_result(out["result"], args.outdir, out["run"].get("model_ef_accuracy"), _volume_note(out["run"]))
    return 0


def cmd_report(args) -> int:
    _print_result(pipeline.report_labels(args.labels, args.output, args.cine, read=reading_options(args),
                                         record_paths=args.record_paths), args.output)
    return 0


def cmd_demo(args) -> int:
    out = pipeline.run_demo(args.out, device=args.device, model=args.model)
    ph, res, s = out["phantom"], out["result"], out["session"]
    print(f"EchoSAM demo: model '{args.model or s.loaded.path.stem}' (trained on synthetic phantom cines "
          "only; not for clinical use)")
    how = "one click in the LV on frame 0, propagated by memory" if s.prompted else "prompt-free, whole loop"
    print(f"cine: unseen phantom, {ph.cine.n_frames} frames, {ph.cine.shape[1]}x{ph.cine.shape[2]} px, "
          f"{ph.cine.fps:.0f} fps; {how}")
    print(f"mean LV Dice vs phantom truth: {out['mean_dice']:.3f} (min {out['dice'].min():.3f})")
    print(f"EF estimated {out['ef_estimated']:.1f} % vs true {out['ef_true']:.1f} % "
          f"(error {out['ef_estimated'] - out['ef_true']:+.1f} points); ED frames {list(res.ed_frames)}, "
          f"ES frames {list(res.es_frames)}")
    if args.out:
        print(f"labels, overlay video, report and LV curve written to {args.out}")
    return 0


def _volume_note(run: dict):
    """What the printed volumes are not, for a run on a cine without pixel spacing (run.json's ``calibrated``)."""
    return None if run.get("calibrated", True) else "EDV/ESV above assume 1 mm pixels: they are not ml (see above)."


def _print_result(res, outdir, ef_note=None, volume_note=None) -> None:
    """The summary, then what its volumes are not (``volume_note``: an uncalibrated cine) and the model's known
    EF error (``ef_note``, `report.ef_accuracy_note`) when there is an EF."""
    import numpy as np

    from ..report import format_summary
    print(format_summary(res))
    if volume_note and np.isfinite(res.edv_ml):
        print(volume_note)
    if ef_note and np.isfinite(res.ef_percent):
        print(ef_note)
    print(f"results in {outdir}")


# ---- registration --------------------------------------------------------------------------------------
def substeps_arg(text: str):
    """``--substeps``: "auto" or a whole number of in-between steps per frame interval."""
    if text == "auto":
        return text
    try:
        return check_substeps(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto or a whole number from 1 to {MAX_SUBSTEPS}") from None
    except EchoSAMError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_region_arguments(p) -> None:
    """``--region``, ``--orientation``, ``--no-orientation-check``, ``--no-zoom``, ``--no-keep-connected``,
    ``--no-grow``, ``--substeps``, ``--no-ef-check`` and ``--no-companion``, shared by ``segment`` and ``batch``."""
    p.add_argument("--region", default="auto",
                   help="ultrasound region the model sees: auto (DICOM US region, else the fan detected from "
                        "the pixels), off (whole frame), or x0,y0,x1,y1 (a box in cine pixels, inclusive)")
    p.add_argument("--orientation", default="standard", type=str.lower, choices=ORIENTATIONS,
                   help="how the apical view is displayed: standard (four-chamber LV on the screen's right), "
                        "mirrored (on its left, e.g. the Mayo convention; the model sees it flipped back, labels "
                        "stay on the cine as displayed), or auto (read by the bundled prompt-free model: finds "
                        "most mirrored four-chamber loops, few two-chamber ones; echosam.orientation)")
    p.add_argument("--no-orientation-check", action="store_true",
                   help="with --orientation standard, skip reading whether the loop looks mirrored (default: read "
                        "it with the bundled prompt-free model, about half a second on 2 CPU cores, and warn when "
                        "it does)")
    p.add_argument("--no-zoom", action="store_true",
                   help="show a prompt-zoomed MemSAM the whole region (default: the region around the box or "
                        "mask prompts, as it was trained; echosam.zoom), and read a prompt-free model's loop once "
                        "(default: a second, magnified reading around the heart where the model's config asks for "
                        "it and the heart is small in the fan; echosam.heart_zoom)")
    p.add_argument("--no-keep-connected", action="store_true",
                   help="keep every connected component of a structure (default: drop stray components far "
                        "from the prompt and from the previous frame's mask)")
    p.add_argument("--no-grow", action="store_true",
                   help="draw every structure at the model's threshold alone (default: a model whose config asks "
                        "for it, the bundled MemSAM for the myocardium, also draws unclaimed pixels touching the "
                        "structure down to a lower threshold; echosam.hysteresis)")
    p.add_argument("--substeps", type=substeps_arg, default="auto",
                   help=f"steps per frame interval of a prompted model, 1-{MAX_SUBSTEPS}: blended in-between frames, "
                        "so a low frame rate looks like a high one (auto: what the model asks at "
                        "this cine's frame rate; 1: the frames alone)")
    p.add_argument("--no-ef-check", action="store_true",
                   help="read the loop once, from the boxes as given (default: a prompted model given boxes reads "
                        "it twice more, with the boxes 5 %% larger and smaller; when the three EFs span more than 4 "
                        "points the middle one is the result, and over 8 points the EF is flagged; echosam.ef_check)")
    p.add_argument("--no-companion", action="store_true",
                   help="run a prompted model alone (default: a model whose config asks for it, the bundled MemSAM, "
                        "averages a prompt-free model's reading into its own on frames read from boxes or points; "
                        "echosam.companion)")


def register(subparsers) -> None:
    common = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model_help = "Models.json name or weights file (default: Models.json's default model)"
    p = subparsers.add_parser("segment", help="segment a cine loop (prompted or prompt-free)", **common)
    p.add_argument("cine", help="input cine (.seq.nrrd, .nrrd, .nii.gz, DICOM, .mp4/.avi, PNG folder)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--family", default=None, help="family of an official .pth file (memsam, medivista, masam, sam)")
    p.add_argument("--points", action="append", default=None,
                   help="'x,y,1;x,y,0' include/exclude points (cine pixels) on --frame, for the first of --structures; "
                        "'myo:x,y,1' for a named one (repeat the option, one per structure)")
    p.add_argument("--box", action="append", default=None,
                   help="x0,y0,x1,y1 box (cine pixels) on --frame, for the first of --structures; 'la:x0,y0,x1,y1' "
                        "for a named one (repeat the option, one per structure)")
    p.add_argument("--frame", type=int, default=0, help="frame of --points/--box/--seed-model")
    p.add_argument("--mask", default=None, help="label file with a mask to start from (locks that frame)")
    p.add_argument("--mask-frame", type=int, default=0, help="frame of --mask")
    p.add_argument("--seed-model", default=None, help="prompt-free model seeding MemSAM when no prompt is given")
    p.add_argument("--structures", default="lv", help="structures: lv,myo,la")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: the fast path for this machine (bf16 autocast on GPUs and on CPUs with native bf16, "
                        "e.g. AMX / AVX512-BF16; fp32 elsewhere; the path is written into run.json); fp32: force fp32")
    p.add_argument("--formats", default="seq.nrrd", help="label formats: seq.nrrd,nii.gz")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    add_region_arguments(p)
    add_reading_options(p)
    p.add_argument("--record-paths", action="store_true", help=RECORD_HELP)
    add_common(p)
    p.set_defaults(func=cmd_segment)

    p = subparsers.add_parser("report", help="EF / volumes / ED-ES table from an existing label map", **common)
    p.add_argument("labels", help="label map (.seq.nrrd, .nii.gz): 1 LV, 2 myocardium, 3 LA")
    p.add_argument("--cine", default=None, help="cine whose spacing and frame times to use")
    p.add_argument("-o", "--output", required=True, help="output folder")
    add_reading_options(p)
    p.add_argument("--record-paths", action="store_true", help=RECORD_HELP)
    add_common(p)
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("correct", help="apply a corrected mask and re-propagate a saved result", **common)
    p.add_argument("outdir", help="output folder of `echosam segment`")
    p.add_argument("--mask", required=True, help="label file holding the corrected mask")
    p.add_argument("--frame", type=int, required=True, help="frame the correction is on")
    p.add_argument("--structure", default="lv", help="structure corrected (lv, myo, la)")
    p.add_argument("--cine", default=None, help="the cine, if it moved since `segment` (or only its name was recorded)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_reading_options(p)
    add_common(p)
    p.set_defaults(func=cmd_correct)

    p = subparsers.add_parser("demo", help="segment a phantom with the bundled demo model; Dice and EF vs truth",
                              **common)
    p.add_argument("--out", default=None, help="also write the results to this folder")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_common(p)
    p.set_defaults(func=cmd_demo)
