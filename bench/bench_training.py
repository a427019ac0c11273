"""Training throughput (clips/s) per model family: forward + backward + optimizer step on phantom
clips, the paper's trainable split, batch 1 (MemSAM's recipe), fp32 on CPU, bf16 autocast on CUDA.

    python bench/bench_training.py                       # tiny presets, CPU
    python bench/bench_training.py --preset tiny vit_b --device cuda --steps 20
Prints a markdown table (paste the latest into the README).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from echosam.models.registry import build_model
from training.datasets import ClipDataset, PhantomSource
from training.losses import build_loss
from training.steps import forward_batch

FAMILIES = {"memsam": ("memsam", 10), "medivista": ("dice_ce", 10), "masam": ("dice_ce", 5)}


def bench(family: str, preset: str, device: str, steps: int, warmup: int, precision: str) -> dict:
    torch.manual_seed(0)
    model = build_model(family, preset=preset).to(device).train()
    n_train = model.set_paper_trainable()
    loss_name, T = FAMILIES[family]
    classes = list(model.config.classes)
    S = model.config.sam.img_size
    ds = ClipDataset(PhantomSource(n_cases=4, seed=0, n_frames=24, size=S), classes=classes, clip_frames=T,
                     supervision="full", size=S, train=True)
    batches = [{k: (v[None] if torch.is_tensor(v) else [v]) for k, v in ds[i].items()} for i in range(len(ds))]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = build_loss(loss_name)
    prompted = family == "memsam"
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") and precision == "bf16"
           else contextlib.nullcontext())

    def step(b):
        with amp:
            logits = forward_batch(model, model, prompted, b, device)
            loss = loss_fn(logits.float(), b["masks"].to(device), b["labelled"].to(device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(batches[i % len(batches)])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"family": family, "preset": preset, "size": S, "frames": T, "device": device,
            "precision": precision if device.startswith("cuda") else "fp32", "trainable_M": n_train / 1e6,
            "clips_per_s": steps / dt, "s_per_clip": dt / steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="+", default=list(FAMILIES))
    ap.add_argument("--preset", nargs="+", default=["tiny"], help="tiny and/or vit_b")
    ap.add_argument("--device", nargs="+", default=["cpu"], help="cpu and/or cuda")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="CUDA autocast dtype")
    args = ap.parse_args(argv)
    rows = []
    for dev in args.device:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"(skipping {dev}: no CUDA device)")
            continue
        for preset in args.preset:
            for fam in args.family:
                rows.append(bench(fam, preset, dev, args.steps, args.warmup, args.precision))
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and any(r["device"] != "cpu" for r in rows) \
        else platform.processor() or platform.machine()
    print(f"\nTraining throughput ({name}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads)\n")
    print("| family | preset | input | frames/clip | device | precision | trainable (M) | clips/s | s/clip |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['preset']} | {r['size']} | {r['frames']} | {r['device']} | {r['precision']} | "
              f"{r['trainable_M']:.2f} | {r['clips_per_s']:.2f} | {r['s_per_clip']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
