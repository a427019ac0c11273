"""Batch benchmark, in one run: cines per minute with 1 and 2 process-pool workers, the process pool vs
Ray actors on the same machine (overhead ratio), peak memory per worker, and cines per minute per GPU
when one is present; with the projected time for the 10,030 EchoNet-Dynamic videos.

    python bench/bench_batch.py [--cines 12] [--frames 128] [--model NAME] [--no-ray] [--keep DIR]

The cines are phantom loops written as EchoNet-style AVIs (112 x 112 RGB) in a fake EchoNet-Dynamic
tree; every configuration runs the same batch into its own output folder (nothing skipped) with the
default outputs of ``echosam segment`` (labels, overlay video, report, session). The model is the first
bundled prompt-free model of Models.json unless ``--model`` says otherwise.

Wall-clock rates include starting the workers and loading one model per worker (what a user waits
for); "steady" rates use the per-case seconds of the summary (what a long batch approaches). Ray's
ratio is measured with the local Ray already started (a cluster is started once, not per batch); its
start-up time is printed on its own.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ECHONET_VIDEOS = 10030


def fake_tree(root: Path, n: int, frames: int) -> Path:
    import csv

    import numpy as np

    from echosam.io.video_io import write_video
    from echosam.phantom import make_phantom

    (root / "Videos").mkdir(parents=True)
    rows = []
    for i in range(n):
        ph = make_phantom(n_frames=frames, size=(112, 112), seed=1000 + i, ef=35 + (i * 7) % 35)
        write_video(np.repeat(ph.cine.frames[..., None], 3, -1), root / "Videos" / f"0XB{i:05d}.avi", ph.cine.fps, ".avi")
        rows.append({"FileName": f"0XB{i:05d}", "EF": round(float(ph.true_ef), 2), "ESV": "", "EDV": "",
                     "FrameHeight": 112, "FrameWidth": 112, "FPS": 30, "NumberOfFrames": frames, "Split": "TEST"})
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def run(tree, out, model, backend, workers, device="cpu", threads=None):
    from echosam.batch import BatchConfig, run_batch

    cfg = BatchConfig(model=model, backend=backend, workers=workers, device=device, threads_per_worker=threads,
                      options={"structures": "lv", "precision": "auto", "formats": ["seq.nrrd"], "overlay": True})
    t0 = time.perf_counter()
    res = run_batch(tree, out, cfg)
    wall = time.perf_counter() - t0
    ok = [r for r in res.rows if r["status"] == "ok"]
    mean_s = sum(r["seconds"] for r in res.rows) / len(res.rows)
    peak = max(w["peak_rss_mb"] for w in res.workers.values())
    return {"backend": backend, "workers": workers, "device": device, "wall_s": wall, "n": len(res.rows),
            "ok": len(ok), "per_min": 60.0 * len(res.rows) / wall, "steady_per_min": 60.0 * workers / mean_s,
            "mean_case_s": mean_s, "peak_rss_mb": peak, "threads": threads}


def hours(per_min: float, n: int = ECHONET_VIDEOS) -> float:
    return n / per_min / 60.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cines", type=int, default=12)
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--model", default=None, help="default: the first bundled prompt-free model")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one, removed)")
    args = p.parse_args(argv)

    from echosam.batch.run import cpu_count
    from echosam.model_zoo import load_registry

    model = args.model or next(e.name for e in load_registry() if e.bundled and not e.prompted)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="echosam-bench-batch-"))
    tree = fake_tree(work / "echonet", args.cines, args.frames)
    results = []
    try:
        cores = cpu_count()
        results.append(run(tree, work / "pool1t1", model, "pool", 1, threads=1))
        if cores > 1:                        # the default for one worker: every core to its torch threads
            results.append(run(tree, work / "pool1", model, "pool", 1, threads=cores))
        results.append(run(tree, work / "pool2", model, "pool", 2, threads=max(1, cores // 2)))
        ray_start = None
        if not args.no_ray:
            try:
                import ray
            except ImportError:
                print("ray not installed: pool vs Ray not measured (pip install 'echosam[scale]')", file=sys.stderr)
            else:
                t0 = time.perf_counter()
                ray.init(num_cpus=cores, include_dashboard=False, logging_level="warning")
                ray_start = time.perf_counter() - t0
                try:
                    results.append(run(tree, work / "ray2", model, "ray", 2, threads=max(1, cores // 2)))
                finally:
                    ray.shutdown()
        import torch
        if torch.cuda.is_available():
            results.append(run(tree, work / "gpu1", model, "pool", 1, device="cuda", threads=max(1, cores // 2)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"model {model}; {args.cines} cines of {args.frames} frames, 112x112; {cores} CPU cores")
    print("| backend | workers | device | threads/worker | wall s | cines/min (wall) | cines/min (steady) "
          "| s/cine in a worker | peak RSS per worker MiB | 10,030 videos (h, wall rate) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['workers']} | {r['device']} | {r['threads']} | {r['wall_s']:.1f} | "
              f"{r['per_min']:.1f} | {r['steady_per_min']:.1f} | {r['mean_case_s']:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{hours(r['per_min']):.1f} |")
    pool2 = next(r for r in results if r["backend"] == "pool" and r["workers"] == 2)
    pool1 = results[0]
    print(f"2 workers vs 1 (1 thread each): {pool2['per_min'] / pool1['per_min']:.2f}x (wall), "
          f"{pool2['steady_per_min'] / pool1['steady_per_min']:.2f}x (steady)")
    ray2 = next((r for r in results if r["backend"] == "ray"), None)
    if ray2:
        print(f"Ray vs process pool, 2 workers: wall time ratio {ray2['wall_s'] / pool2['wall_s']:.2f} "
              f"(Ray start-up {ray_start:.1f} s, not included)")
    gpu = next((r for r in results if r["device"] == "cuda"), None)
    if gpu:
        print(f"GPU: {gpu['per_min']:.1f} cines/min per GPU; 10,030 videos: {hours(gpu['per_min']):.2f} h on one "
              f"GPU, {hours(8 * gpu['per_min']):.2f} h on eight (linear)")
    else:
        print("GPU: not measured (no CUDA device); projection: hours = 10030 / (60 * r * n_gpus) with r the "
              "cines/min of one GPU worker (bench/bench_batch.py on a GPU machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
