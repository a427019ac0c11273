"""Naive per-frame fp32 loop vs the engine's fast path, per model family, in one run.

For each family the same synthetic cine is segmented twice:
- naive: what a straightforward re-implementation does: one frame (MemSAM) or one window
  (MediViSTA/MA-SAM) at a time, fp32, reference attention, ``torch.no_grad``;
- fast: the engine path: batched encoding, SDPA attention with the rel-pos bias as mask,
  ``torch.inference_mode``, bf16 autocast on CUDA.
Prints frames/s, speed-up, peak memory and the encoder's achieved TFLOP/s (vs the device's bf16
peak where known) as a markdown table. Example:

    python bench/bench_models.py --size vit_b --frames 10 --device cpu
    python bench/bench_models.py --size vit_b --frames 60 --device cuda
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from echosam.device import resolve_device
from echosam.models.fast import (disable_fast_attention, enable_fast_attention, inference_context,
                                 optimise_for_inference)
from echosam.models.registry import build_model

# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}


def device_peak(device: torch.device):
    if device.type != "cuda":
        return None, "CPU"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak, name
    return None, name


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mem_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_memsam(model, images, fast: bool, batch: int):
    """Encode then propagate from a frame-0 click; naive = one frame at a time."""
    from echosam.models.memory import MemoryBank

    t = images.shape[0]
    s = images.shape[-1]
    if fast:
        feats = [model.encode(images[i:i + batch]) for i in range(0, t, batch)]
        feats = type(feats[0]).cat(feats) if hasattr(type(feats[0]), "cat") else feats[0]
    else:
        feats = type(model.encode(images[:1])).cat([model.encode(images[i:i + 1]) for i in range(t)])
    pts = torch.tensor([[[s / 2, s / 2]]], device=images.device)
    lab = torch.ones(1, 1, dtype=torch.long, device=images.device)
    f0 = feats.index(0)
    logits = model.decode_prompt(f0, points=pts, point_labels=lab)
    hidden = model.init_hidden(1)
    bank = MemoryBank(cap=model.config.memory_cap)
    value, hidden = model.encode_value(images[:1], f0, logits, hidden)
    bank.add(f0.key, f0.shrinkage, value, permanent=True)
    for i in range(t):
        fi = feats.index(i)
        logits, hidden = model.segment_from_memory(fi, bank, hidden)
        if i < t - 1:
            value, hidden = model.encode_value(images[i:i + 1], fi, logits, hidden)
            bank.add(fi.key, fi.shrinkage, value)
    return logits


def run_prompt_free(model, images, fast: bool, batch: int):
    if fast:
        return model.segment_video(images)
    clip = model.config.clip_frames
    t = images.shape[0]
    out = None
    for start in range(0, max(1, t - clip + 1)):  # stride-1 windows, one at a time (reference inference)
        idx = [min(max(i, 0), t - 1) for i in range(start, start + clip)]
        out = model(images[idx][None])
    return out


def encoder_input(model, images, batch):
    """Frames for one encoder call: a batch (MemSAM) or one clip (prompt-free: frames interact)."""
    n = batch if not hasattr(model.config, "clip_frames") else model.config.clip_frames
    idx = [min(i, images.shape[0] - 1) for i in range(n)]
    return images[idx]


def encode(model, x):
    return model.encode(x) if not hasattr(model.config, "clip_frames") else model.encode(x, x.shape[0])


def encoder_flops(model, x) -> float:
    """FLOPs of one encoder call on x (counted by torch's FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encode(model, x)
    return counter.get_total_flops()


def bench_family(family, size, frames, device, batch, repeats):
    model = build_model(family, preset=size).eval().requires_grad_(False).to(device)
    s = model.config.sam.img_size
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(frames, 96, 128, generator=g) * 255
    images = model.prepare_frames(raw).to(device)
    runner = run_memsam if family == "memsam" else run_prompt_free
    enc_in = encoder_input(model, images, batch)
    flops = encoder_flops(model, enc_in)
    rows = {}
    for mode in ("naive", "fast"):
        if mode == "fast":
            optimise_for_inference(model, device)        # what Session does
        else:
            disable_fast_attention(model)
            model.to(memory_format=torch.contiguous_format)
        ctx = (lambda: inference_context(device)) if mode == "fast" else (lambda: torch.no_grad())
        with ctx():
            runner(model, images[: min(frames, 2 * batch)], mode == "fast", batch)  # warm-up
        reset_peak(device)
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            with ctx():
                runner(model, images, mode == "fast", batch)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        rows[mode] = (frames / best, peak_mem_mb(device), best)
    # encoder-only achieved throughput on the fast path
    enable_fast_attention(model)
    with inference_context(device):
        encode(model, enc_in)
        sync(device)
        t0 = time.perf_counter()
        encode(model, enc_in)
        sync(device)
        enc_s = time.perf_counter() - t0
    tflops = flops / enc_s / 1e12
    del model
    return s, rows, tflops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="memsam,medivista,masam")
    p.add_argument("--size", default="vit_b", help="preset: vit_b (paper size) or tiny")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--batch", type=int, default=8, help="frames per encoder batch on the fast path")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    device = torch.device(resolve_device(a.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak, dev_name = device_peak(device)
    print(f"device: {dev_name}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"{a.frames} frames; preset {a.size}\n")
    print("| family | input | naive frames/s | fast frames/s | speed-up | naive peak MB | fast peak MB | encoder TFLOP/s | % of bf16 peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fam in a.families.split(","):
        s, rows, tflops = bench_family(fam, a.size, a.frames, device, a.batch, a.repeats)
        (nf, nm, _), (ff, fm, _) = rows["naive"], rows["fast"]
        pct = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
        print(f"| {fam} | {s}px | {nf:.2f} | {ff:.2f} | {ff / nf:.2f}x | {nm:.0f} | {fm:.0f} | {tflops:.3f} | {pct} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
