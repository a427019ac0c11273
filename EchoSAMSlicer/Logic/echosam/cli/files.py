"""``echosam info``, ``echosam convert`` and ``echosam phantom``: inspect, convert and synthesise cines."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ..errors import EchoSAMError
from .common import add_common, add_reading_options


def register(subparsers) -> None:
    """Add the info, convert and phantom subcommands."""
    p = subparsers.add_parser("info", help="print frames, size, spacing, frame rate and duration of a cine",
                              description="Print frames, size, pixel spacing, frame rate and duration of a cine file.")
    p.add_argument("file", help="cine file (.seq.nrrd, .nrrd, .nhdr, .nii[.gz], .dcm, .avi, .mp4) or PNG folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _reading_options(p)
    add_common(p)
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("convert", help="convert a cine (or label map) between formats",
                              description="Read a cine and write it in the format given by OUT's extension "
                                          "(geometry and frame times kept).")
    p.add_argument("input", help="input cine file or PNG folder")
    p.add_argument("output", help="output file (.seq.nrrd, .nrrd, .nhdr, .nii[.gz], .dcm, .avi, .mp4) or folder")
    p.add_argument("--labels", action="store_true", help="the input is a label map (.seq.nrrd, .nrrd, .nii.gz)")
    _reading_options(p)
    add_common(p)
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser("phantom", help="write a synthetic A4C cine with exact ground-truth labels",
                              description="Write a synthetic apical-four-chamber cine (and optionally its labels "
                                          "and an overlay video) with a chosen ejection fraction.")
    p.add_argument("output", help="output cine file, e.g. phantom.seq.nrrd")
    p.add_argument("--ef", type=float, default=55.0, help="ejection fraction in %% (default 55)")
    p.add_argument("--frames", type=int, default=40, help="number of frames (default 40)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate in Hz (default 30)")
    p.add_argument("--heart-rate", type=float, default=72.0, help="heart rate in bpm (default 72)")
    p.add_argument("--size", type=int, default=256, help="frame height and width in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed: shape, position, speckle (default 0)")
    p.add_argument("--noise", type=float, default=0.6, help="speckle strength 0..1 (default 0.6)")
    p.add_argument("--labels", metavar="OUT_LABELS",
                   help="also write the ground-truth labels here (.seq.nrrd, .nii.gz)")
    p.add_argument("--overlay", metavar="OUT_VIDEO", help="also write an overlay video here (.mp4, .avi, .gif)")
    add_common(p)
    p.set_defaults(func=cmd_phantom)


def _reading_options(p: argparse.ArgumentParser) -> None:
    add_reading_options(p)


def cmd_info(args: argparse.Namespace) -> int:
    from ..io import read_cine

    cine = read_cine(args.file, slices_as_frames=args.slices_as_frames, fps=args.fps)
    info = dict(cine.summary(), file=str(args.file), format=cine.metadata.get("format", ""),
                timing=cine.metadata.get("timing", ""), spacing_known=cine.metadata.get("spacing_known", True))
    if args.json:
        print(json.dumps(info))
        return 0
    row_mm, col_mm = info["spacing_mm"]
    lo, hi = info["intensity_range"]
    print(f"file:        {info['file']}  ({info['format']})")
    print(f"frames:      {info['frames']}")
    print(f"size:        {info['height']} x {info['width']} pixels (H x W)")
    print(f"spacing:     {row_mm:g} x {col_mm:g} mm (row x col)" + ("" if info["spacing_known"] else "  (not in file)"))
    print(f"frame rate:  {info['fps']:g} fps ({info['timing']})")
    print(f"duration:    {info['duration_s']:g} s")
    print(f"intensities: {info['dtype']} {lo:g}..{hi:g}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..io import read_cine, read_labels, write_cine, write_labels
    from ..io.registry import format_for_writing

    out = Path(args.output)
    format_for_writing(out, labels=args.labels)          # fail before reading when OUT is unusable
    if args.labels:
        labels, cine = read_labels(args.input, slices_as_frames=args.slices_as_frames)
        write_labels(labels, cine, out)
    else:
        cine = read_cine(args.input, slices_as_frames=args.slices_as_frames, fps=args.fps)
        write_cine(cine, out)
    print(f"wrote {out} ({cine.n_frames} frames, {cine.shape[1]}x{cine.shape[2]}, {cine.fps:g} fps)")
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from ..io import OVERLAY_SUFFIXES, write_cine, write_labels, write_overlay
    from ..io.registry import format_for_writing
    from ..phantom import make_phantom

    out = Path(args.output)
    format_for_writing(out)
    if args.labels:
        format_for_writing(Path(args.labels), labels=True)
    if args.overlay and Path(args.overlay).suffix.lower() not in OVERLAY_SUFFIXES:
        raise EchoSAMError(f"Overlay videos are written as {', '.join(OVERLAY_SUFFIXES)}; got {args.overlay!r}.")
    ph = make_phantom(n_frames=args.frames, ef=args.ef, heart_rate=args.heart_rate, fps=args.fps,
                      size=(args.size, args.size), seed=args.seed, noise=args.noise)
    created: list[Path] = []

    def track(path: Path, write) -> None:
        existed = path.exists()
        write()
        if not existed:
            created.append(path)

    try:
        track(out, lambda: write_cine(ph.cine, out))
        if args.labels:
            track(Path(args.labels), lambda: write_labels(ph.labels, ph.cine, args.labels))
        if args.overlay:
            track(Path(args.overlay), lambda: write_overlay(ph.cine, ph.labels, args.overlay))
    except BaseException:
        for p in created:             # all or nothing: remove what this command created
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    print(f"wrote {out} ({args.frames} frames, {args.size}x{args.size}, {args.fps:g} fps, seed {args.seed})")
    print(f"true EF {ph.true_ef:.1f} % (requested {args.ef:g} %); ED frames {ph.ed_frames}; ES frames {ph.es_frames}")
    return 0
