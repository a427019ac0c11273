"""Naive fp32 loop vs the engine's fast path, and each fast-path option on its own, in one run.

For each family the same synthetic cine is segmented by every mode below, repeats interleaved
(mode A, B, C, ..., then again), on the same weights, cores and inputs; the best time per mode counts:
- ``naive``: what a straightforward re-implementation does: one frame (MemSAM: encode, then the memory
  loop) or one stride-1 window (MediViSTA/MA-SAM) at a time, fp32, reference attention, ``no_grad``;
- ``sdpa``: naive + SDPA attention (fp32 softmax) only;
- ``bf16``: naive + bf16 autocast only (CPU with native bf16, or CUDA);
- ``int8``: naive + int8 dynamic quantisation of the image encoder's Linear layers only (CPU);
- ``batch``: naive + batched encoding (MemSAM: ``--batch`` frames per call; prompt-free: 2 windows
  per forward) only;
- ``compile``: naive + ``torch.compile`` of the image encoder only (``--compile``; compile time excluded);
- ``fast``: the engine's path (`echosam.compute.choose_path` + `optimise_for_inference`): SDPA with fp32
  softmax, bf16 autocast where native, frames per encoder call from `echosam.compute.encoder_batch`
  (1 for ViT-B on a CPU, 8 on a GPU), the engine's window batch, ``inference_mode``;
- MemSAM also runs the engine's `Session` (encode + propagate from one click): ``session fp32``
  (``precision="fp32"``) and ``session auto`` (the default).
Reports frames/s, speed-up over naive, achieved GFLOP/s (FLOPs of the naive run counted by torch's
FlopCounterMode, divided by each mode's time), the CPU model and its bf16/AMX/VNNI flags; writes JSON.

    python bench/bench_models.py --size vit_b --families memsam,masam --frames 6 --json out.json
    python bench/bench_models.py --size vit_b --frames 60 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from echosam.compute import choose_path, cpu_flags, cpu_model, encoder_batch
from echosam.device import resolve_device
from echosam.models.fast import (disable_fast_attention, enable_fast_attention, inference_context,
                                 optimise_for_inference, quantize_linears_int8)
from echosam.models.memory import MemoryBank
from echosam.models.registry import build_model

# dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "4090": 165.0}
FLAGS_SHOWN = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device) -> dict:
    info = {"cpu": cpu_model(), "flags": [f for f in FLAGS_SHOWN if f in cpu_flags()], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_start": list(os.getloadavg())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---- what each mode runs ---------------------------------------------------------------------------
def memsam_loop(model, images, batch: int):
    """Encode (``batch`` frames per call) then propagate from a frame-0 click with the model's verbs."""
    t, s = images.shape[0], images.shape[-1]
    feats = type(model.encode(images[:1])).cat([model.encode(images[i:i + batch]) for i in range(0, t, batch)])
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


def prompt_free_loop(model, images, window_batch: int, stride=None):
    """Windows of ``clip_frames`` every ``stride`` (default: stride 1, the papers' inference), softmax-averaged."""
    from echosam.models.windows import sliding_window_probs
    return sliding_window_probs(model, images, model.config.clip_frames, stride or 1, False, batch=window_batch)


class Mode:
    """One way of running a family: a model (shared or its own copy), a context and a loop."""

    def __init__(self, name, model, ctx, run):
        self.name, self.model, self.ctx, self.run = name, model, ctx, run
        self.times: list = []

    def __call__(self, images):
        self.model.prepare()
        with self.ctx():
            return self.run(self.model.module, images)


class Prepared:
    """A model plus what must be switched before it runs (attention kind) when modes share it."""

    def __init__(self, module, fast_attention: bool):
        self.module, self.fast_attention = module, fast_attention

    def prepare(self):
        (enable_fast_attention if self.fast_attention else disable_fast_attention)(self.module)


def build_modes(family, model, device, batch, with_compile, with_int8) -> list:
    memsam = family == "memsam"
    width = model.config.sam.embed_dim
    path = choose_path(str(device), "auto", width=width)
    no_grad = torch.no_grad
    bf16 = (lambda: inference_context(device, "bf16")) if path.dtype == "bf16" or device.type == "cuda" else None
    fast_ctx = lambda: inference_context(device, "auto", width)                # noqa: E731
    one = (lambda m, x: memsam_loop(m, x, 1)) if memsam else (lambda m, x: prompt_free_loop(m, x, 1))
    batched = (lambda m, x: memsam_loop(m, x, batch)) if memsam else (lambda m, x: prompt_free_loop(m, x, 2))
    ref, sdpa = Prepared(model, False), Prepared(model, True)
    modes = [Mode("naive", ref, no_grad, one), Mode("sdpa", sdpa, no_grad, one)]
    if bf16 is not None:
        modes.append(Mode("bf16", ref, bf16, one))
    if with_int8 and device.type == "cpu":
        q = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # torch.ao.quantization deprecation notice
            quantize_linears_int8(q.image_encoder)
        modes.append(Mode("int8", Prepared(q, False), no_grad, one))
    modes.append(Mode("batch", ref, no_grad, batched))
    if with_compile:
        c = copy.deepcopy(model)
        disable_fast_attention(c)
        c.image_encoder.forward = torch.compile(c.image_encoder.forward, dynamic=False)   # the original forward
        modes.append(Mode("compile", Prepared(c, False), no_grad, one))
    tokens = (model.tokens ** 2) if memsam else (model.config.sam.img_size // model.config.sam.patch_size) ** 2
    engine_batch = encoder_batch(str(device), tokens, width)
    fast_run = (lambda m, x: memsam_loop(m, x, engine_batch)) if memsam else \
        (lambda m, x: prompt_free_loop(m, x, 4 if device.type == "cuda" else 1))
    modes.append(Mode("fast", sdpa, fast_ctx, fast_run))
    return modes


def session_modes(model, family, raw, device) -> list:
    """MemSAM through the engine's Session, fp32 forced vs the default path."""
    from echosam.checkpoints import LoadedModel
    from echosam.cine import Cine
    from echosam.session import Session

    loaded = LoadedModel(model, family, model.config, {}, None, str(device))
    cine = Cine.from_array(raw.numpy().astype(np.uint8))
    h, w = cine.frames.shape[1:]

    def run(precision):
        def go(_m, _x):
            s = Session(cine, loaded, precision=precision, keep_connected=False)
            s.add_points(0, "lv", [[w / 2, h / 2]], [1])
            return s.propagate()
        return go
    shared = Prepared(model, True)
    return [Mode("session fp32", shared, torch.no_grad, run("fp32")),
            Mode("session auto", shared, torch.no_grad, run("auto"))]


def count_flops(mode, images) -> float:
    with FlopCounterMode(display=False) as counter:
        mode(images)
    return counter.get_total_flops()


def bench_family(family, size, frames, device, batch, repeats, with_compile, with_int8, only=None) -> dict:
    torch.manual_seed(0)
    model = build_model(family, preset=size).eval().requires_grad_(False).to(device)
    optimise_for_inference(model, device)
    s = model.config.sam.img_size
    raw = torch.rand(frames, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    images = model.prepare_frames(raw).to(device)
    modes = build_modes(family, model, device, batch, with_compile, with_int8)
    if family == "memsam":
        modes += session_modes(model, family, raw, device)
    if only:
        modes = [m for m in modes if m.name == "naive" or m.name in only]     # naive first: the baseline
    flops = count_flops(modes[0], images)
    for m in modes:                                    # warm-up (and compile) on a short clip
        m(images[: min(frames, model.config.clip_frames if hasattr(model.config, "clip_frames") else 2)])
    for _ in range(repeats):
        for m in modes:
            sync(device)
            t0 = time.perf_counter()
            m(images)
            sync(device)
            m.times.append(time.perf_counter() - t0)
            print(f"  {family} {m.name}: {m.times[-1]:.2f} s", file=sys.stderr, flush=True)
    base = min(modes[0].times)
    rows = {m.name: {"best_s": min(m.times), "times_s": m.times, "frames_per_s": frames / min(m.times),
                     "speedup": base / min(m.times), "gflop_per_s": flops / min(m.times) / 1e9} for m in modes}
    return {"input_px": s, "frames": frames, "flops_naive_run": flops, "modes": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="memsam,masam")
    p.add_argument("--size", default="vit_b", help="preset: vit_b (paper size) or tiny")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--batch", type=int, default=4, help="frames per encoder call in the batch/fast modes (MemSAM)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the encoder (slow to build)")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--modes", default="", help="only these modes (comma-separated; naive always runs)")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    device = torch.device(resolve_device(a.device))
    path = choose_path(str(device), "auto")
    info = machine(device)
    print(f"machine: {info['cpu']}; flags {' '.join(info['flags']) or '-'}; {info['cores']} cores; torch "
          f"{info['torch']}; fast path: {path.describe()}; {a.frames} frames; preset {a.size}; repeats {a.repeats} "
          "interleaved\n")
    out = {"machine": info, "path": path.to_dict(), "args": vars(a), "families": {}}
    for fam in a.families.split(","):
        r = bench_family(fam, a.size, a.frames, device, a.batch, a.repeats, a.compile, not a.no_int8,
                         [m for m in a.modes.split(",") if m])
        out["families"][fam] = r
        print(f"\n{fam}, {r['input_px']} px, {a.frames} frames, {r['flops_naive_run'] / 1e9:.0f} GFLOP per run\n")
        print("| mode | best s | frames/s | speed-up | GFLOP/s |\n|---|---|---|---|---|")
        for name, m in r["modes"].items():
            print(f"| {name} | {m['best_s']:.2f} | {m['frames_per_s']:.3f} | {m['speedup']:.2f}x | {m['gflop_per_s']:.0f} |")
        sys.stdout.flush()
    out["machine"]["load_avg_end"] = list(os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
