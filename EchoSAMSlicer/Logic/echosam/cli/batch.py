"""``echosam batch``: argument parsing, the progress bar and the printed summary; the work is `echosam.batch`."""
from __future__ import annotations

import argparse
import sys

from ..errors import EchoSAMError
from .common import add_common, add_reading_options, reading_options
from .segment import add_region_arguments


def parse_shard(text):
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise EchoSAMError(f"--shard {text!r}: write K/N, e.g. 0/4 for the first of four shards.") from None
    return k, n


def segment_options(args) -> dict:
    """The `pipeline.segment_cine` options this batch passes to every case (part of each case's key)."""
    opts = {"structures": args.structures, "precision": args.precision,
            "formats": [f for f in args.formats.split(",") if f.strip()], "overlay": not args.no_overlay,
            "region": args.region, "keep_connected": not args.no_keep_connected, "read": reading_options(args)}
    if args.no_zoom:           # only when asked: the options key of batches run before the zoom existed is kept
        opts["zoom"] = False
    if args.no_grow:               # likewise
        opts["grow"] = False
    if args.substeps != "auto":    # likewise
        opts["substeps"] = args.substeps
    if args.no_ef_check:       # likewise
        opts["ef_check"] = False
    if args.orientation != "standard":     # likewise
        opts["orientation"] = args.orientation
    if args.no_orientation_check:          # likewise
        opts["orientation_check"] = False
    if args.no_companion:                  # likewise
        opts["companion"] = False
    return opts


def config_from_args(args):
    from ..batch import BatchConfig

    return BatchConfig(model=args.model, family=args.family, seed_model=args.seed_model, seed_frame=args.frame,
                       options=segment_options(args), device=args.device, workers=args.workers,
                       threads_per_worker=args.threads_per_worker, backend=args.backend, ray_address=args.ray_address,
                       gpus_per_worker=args.gpus_per_worker, retry_failed=args.retry_failed,
                       shard=parse_shard(args.shard) if args.shard else None, summary_only=args.summary_only)


def cmd_batch(args) -> int:
    from ..batch import run_batch
    from ..progress import no_progress, tqdm_progress

    quiet = getattr(args, "quiet", False)
    progress = no_progress if quiet else tqdm_progress("echosam batch", unit="cine")

    def log(message: str) -> None:
        from tqdm.auto import tqdm
        tqdm.write(f"echosam: {message}", file=sys.stderr)

    # SIGTERM (Slurm, kill) arrives as an interrupt like Ctrl-C (echosam.cli.main): the workers are stopped
    res = run_batch(args.input, args.output, config_from_args(args), split=args.split, progress=progress, log=log)
    print_result(res, args.output)
    return 0


def print_result(res, output) -> None:
    n = len(res.rows)
    ok = sum(r["status"] == "ok" for r in res.rows)
    print(f"echosam batch: {n} case(s): {ok} ok, {res.failed} failed, {res.pending} pending "
          f"({res.ran} run now, {res.skipped} done before) in {res.seconds:.1f} s")
    if res.metrics and res.metrics["ef"]["n"]:
        m = res.metrics["ef"]
        r2 = "n/a" if m["r2"] is None else f"{m['r2']:.3f}"
        print(f"EF vs truth (n = {m['n']}): MAE {m['mae']:.2f}, RMSE {m['rmse']:.2f}, bias {m['bias']:+.2f} "
              f"(95 % limits {m['loa_low']:+.2f} .. {m['loa_high']:+.2f}), R^2 {r2}")
    if res.workers:
        peak = max(w["peak_rss_mb"] for w in res.workers.values())
        print(f"workers: {len(res.workers)}, peak memory per worker up to {peak:.0f} MiB")
    if res.paths:
        print("summary: " + ", ".join(str(p) for p in res.paths.values()))
    elif res.pending:
        print(f"{res.pending} case(s) have no result yet (other shards, or interrupted): rerun the same command "
              f"to finish, or add --summary-only for a partial summary in {output}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="segment many cines (folder, glob, CSV, EchoNet-Dynamic, CAMUS): resumable, one summary",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Segment every cine of INPUT into OUTPUT (a tree that mirrors the input), one model per "
                    "worker, and write summary.csv (+ summary.parquet with pyarrow); with truth in the manifest, "
                    "EF agreement (agreement.json) and scatter / Bland-Altman figures. Rerunning skips cases "
                    "already done for the same input content, model and options.")
    p.add_argument("input", help="folder of cines, quoted glob, CSV manifest (path column; optional points, box, "
                                 "frame, mask, ef/edv/esv, split), EchoNet-Dynamic folder or FileList.csv, CAMUS folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--split", default=None, help="only this split (EchoNet-Dynamic TRAIN/VAL/TEST, or a CSV split column)")
    p.add_argument("--model", default=None, help="Models.json name or weights file (default: Models.json's default)")
    p.add_argument("--family", default=None, help="family of an official .pth file (memsam, medivista, masam, sam)")
    p.add_argument("--seed-model", default=None, help="prompt-free model seeding a prompted model on --frame per case")
    p.add_argument("--frame", type=int, default=0, help="frame of --seed-model (and of manifest prompts without one)")
    p.add_argument("--structures", default="lv", help="structures: lv,myo,la")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: the fast path for this machine (bf16 autocast on GPUs and on CPUs with native bf16); "
                        "fp32: force fp32")
    p.add_argument("--formats", default="seq.nrrd", help="label formats: seq.nrrd,nii.gz")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4 per case")
    add_region_arguments(p)
    add_reading_options(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (several GPUs: one worker per GPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes / Ray actors, each with its own model (default: one per GPU; on CPU "
                        "one per core, at most 4; Ray: the cluster's GPUs or CPUs)")
    p.add_argument("--threads-per-worker", type=int, default=None, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--backend", default="pool", choices=("pool", "ray", "inline"),
                   help="pool: processes on this machine; ray: Ray actors (pip install 'echosam[scale]'); "
                        "inline: this process")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (auto, ray://host:10001); default: "
                                                       "RAY_ADDRESS or a local Ray")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Ray actor (default: 1 when the "
                                                                       "cluster has GPUs)")
    p.add_argument("--retry-failed", action="store_true", help="run the cases that failed before again")
    p.add_argument("--shard", default=None, help="K/N: run only cases i with i %% N == K (several machines, one output)")
    p.add_argument("--summary-only", action="store_true", help="run nothing; write the summary of what is done")
    add_common(p)
    p.set_defaults(func=cmd_batch)
