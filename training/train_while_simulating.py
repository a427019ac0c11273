"""Train on a machine that holds no data yet: simulate while training.

A fresh (GPU) machine would spend most of a short lease making the simulated sets before training
could start. Here the validation set is made first, the training sets are then made in the background
(`training.simulator.cache`, resumable, into the folders the configs name), and each config trains as
soon as ``--min-cases`` cases are on disk, drawing every epoch from what is there by then
(``data.follow``). Trainings run side by side (one process each, sharing the GPU); each gets the same
wall-clock budget (``train.max_minutes``), so the learning rate decays over the time it has.

    python -m training.train_while_simulating --minutes 7 --gen-workers 6 \\
        --config training/configs/sim_memsam_gpu.yaml --config training/configs/sim_medivista_gpu.yaml

The cases it writes are the same as those `python -m training.simulator.cache` writes for the same
seeds, so a set made here and one made on a laptop agree.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# (folder under --data, simulator ranges, seeds); sizes a generator cannot finish in a short lease, so
# it never runs dry: the trainings stop on their clock, and the generators with them
TRAIN_SETS = (("train", "train", "0:6000"), ("train_dark", "train_dark", "100000:104000"),
              ("train_real", "train_real", "200000:206000"))
VAL_SET = ("val", "train", "500000:500016")


def _cache_cmd(out: Path, ranges: str, seeds: str, workers: int) -> list:
    return [sys.executable, "-m", "training.simulator.cache", "--out", str(out), "--seeds", seeds,
            "--ranges", ranges, "--workers", str(workers)]


def split_workers(total: int, n: int) -> list:
    """``total`` workers over ``n`` generators, at least one each."""
    return [max(1, total // n + (k < total % n)) for k in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", required=True, help="training config (repeat to train several)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of each training")
    ap.add_argument("--data", default="data/sim", help="where the simulated sets go (default: data/sim)")
    ap.add_argument("--gen-workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="simulator processes while training (default: half the cores)")
    ap.add_argument("--min-cases", type=int, default=48, help="cases on disk before training starts")
    ap.add_argument("--logs", default="logs", help="one log per generator and training")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, for every config")
    args = ap.parse_args(argv)
    data, logs = Path(args.data), Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    t0 = time.time()
    name, ranges, seeds = VAL_SET
    subprocess.run(_cache_cmd(data / name, ranges, seeds, os.cpu_count() or 2), check=True, env=env,
                   stdout=subprocess.DEVNULL)
    print(f"[{time.time() - t0:5.0f} s] validation set ready in {data / name}", flush=True)

    gens = []
    for (name, ranges, seeds), w in zip(TRAIN_SETS, split_workers(args.gen_workers, len(TRAIN_SETS))):
        log = open(logs / f"simulate_{name}.log", "w")
        # own process group: stopping it stops its pool's workers too
        gens.append(subprocess.Popen(_cache_cmd(data / name, ranges, seeds, w), env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True))
    roots = [str(data / name) for name, _, _ in TRAIN_SETS]
    common = [f"train.max_minutes={args.minutes}", f"data.splits.train.root={json.dumps(roots)}",
              f"data.splits.val.root={data / VAL_SET[0]}", *args.set]
    trainers = []
    for cfg in args.config:
        sets = [*common]
        if args.min_cases:
            sets.append(f"data.splits.train.follow.min_cases={args.min_cases}")
        cmd = [sys.executable, "-m", "training.train", "--config", cfg] + [a for s in sets for a in ("--set", s)]
        log = open(logs / f"train_{Path(cfg).stem}.log", "w")
        trainers.append((cfg, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        print(f"[{time.time() - t0:5.0f} s] training {cfg} (log {log.name})", flush=True)
    codes = {cfg: p.wait() for cfg, p in trainers}
    for g in gens:
        os.killpg(g.pid, signal.SIGTERM)
    for g in gens:
        g.wait()
    made = {name: len(list((data / name).glob("case_*.npz"))) for name, _, _ in TRAIN_SETS}
    print(f"[{time.time() - t0:5.0f} s] trainings ended {codes}; cases made {made}", flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
