"""Session benchmark: first propagation (with encoding) vs re-propagation after one correction, and
peak memory of propagation on 60 vs 600 frames with the memory cap on.

    python bench/bench_session.py [--size tiny|vitb] [--device auto|cpu|cuda] [--frames 60] [--long 600]
                                  [--precision auto|fp32] [--json out.json]

Random weights (speed and memory do not depend on them). Prints a markdown table.
``--precision``: the Session's precision (auto = the fast path, `echosam.compute`). ``--long 0`` skips the
memory measurement. Targets: re-propagation <= 10 % of the first pass; peak propagation memory at 600 frames within 10 %
of 60 frames (embeddings cache excluded: it grows with T by design and is reported separately).
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from echosam.checkpoints import LoadedModel
from echosam.models.registry import build_model, preset_config
from echosam.phantom import make_phantom
from echosam.device import resolve_device
from echosam.session import Session


def _loaded(size: str, device: str) -> LoadedModel:
    torch.manual_seed(0)
    cfg = preset_config("memsam", "vit_b" if size == "vitb" else "tiny")
    return LoadedModel(build_model("memsam", cfg).eval().to(device), "memsam", cfg, {}, None, device)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _click(mask):
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return [[float(x), float(y)]]


def timing(lm, n, size_hw, device, precision="auto"):
    ph = make_phantom(n_frames=n, seed=0, size=size_hw)
    s = Session(ph.cine, lm, structures=("lv",), precision=precision)
    s.add_points(0, "lv", _click(ph.labels[0] == 1), [1])
    _sync(device)
    t0 = time.perf_counter()
    s.propagate()
    _sync(device)
    first = time.perf_counter() - t0
    k = n // 2
    s.set_mask(k, "lv", ph.labels[k] == 1)
    t0 = time.perf_counter()
    s.propagate()
    _sync(device)
    return first, time.perf_counter() - t0, n - k, s.compute_path


def peak_memory(lm, n, size_hw, device, cap):
    """Transient peak memory (bytes) of propagate() after encoding: the peak above what stays allocated
    afterwards (labels and per-frame logits grow with T by design; the working memory must not).
    CPU: tracemalloc sees numpy/Python allocations only, so the memory bank is counted by entries."""
    ph = make_phantom(n_frames=n, seed=0, size=size_hw, noise=0.3)
    s = Session(ph.cine, lm, structures=("lv",), memory_cap=cap)
    s.add_points(0, "lv", _click(ph.labels[0] == 1), [1])
    s.encode()
    feats = sum(v.numel() * v.element_size() for v in s.features.features.tensors().values())
    s.results.change = None             # no undo before-images in this measurement
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        s.propagate()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated(), feats, s.peak_memory_entries
    s.propagate()
    # CPU: torch allocations are invisible to tracemalloc and RSS keeps freed pages, so count the
    # working memory the cap controls exactly: memory-bank entries x bytes per entry (key, shrinkage, value).
    f = s.features.features
    per_entry = (f.key[0].numel() + f.shrinkage[0].numel() + lm.config.value_dim * f.key[0, 0].numel()) * 4
    return s.peak_memory_entries * per_entry, feats, s.peak_memory_entries


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "vitb"), default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--long", type=int, default=600)
    ap.add_argument("--cap", type=int, default=16)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    torch.set_grad_enabled(False)
    lm = _loaded(a.size, device)
    hw = (96, 96) if a.size == "tiny" else (256, 256)
    timing(lm, 4, hw, device, a.precision)                      # warm-up
    first, again, rerun, path = timing(lm, a.frames, hw, device, a.precision)
    print(f"\n### Session benchmark: MemSAM {a.size}, {path}\n")
    print("| measure | value |\n|---|---|")
    print(f"| first propagation, {a.frames} frames (incl. encoding) | {first:.3f} s |")
    print(f"| re-propagation after one correction on frame {a.frames // 2} ({rerun} frames stale) | {again:.3f} s |")
    print(f"| ratio re-propagation / first pass | {100 * again / first:.1f} % (target <= 10 %) |")
    if a.json:
        import json
        with open(a.json, "w") as f:
            json.dump({"path": path, "frames": a.frames, "first_s": first, "repropagation_s": again,
                       "ratio": again / first, "size": a.size}, f, indent=1)
    if not a.long:
        return
    m_short, f_short, e_short = peak_memory(lm, a.frames, hw, device, a.cap)
    m_long, f_long, e_long = peak_memory(lm, a.long, hw, device, a.cap)
    kind = "CUDA allocated" if device.startswith("cuda") else "memory bank, CPU"
    print(f"\n### Memory: MemSAM {a.size}, device {device}, memory cap {a.cap}\n")
    print("| measure | value |\n|---|---|")
    print(f"| transient propagation memory, {a.frames} frames ({kind}) | {m_short / 2**20:.2f} MiB |")
    print(f"| transient propagation memory, {a.long} frames ({kind}) | {m_long / 2**20:.2f} MiB |")
    print(f"| ratio {a.long} / {a.frames} frames | {m_long / max(m_short, 1):.3f} (target <= 1.10) |")
    print(f"| memory-bank entries at most ({a.frames} / {a.long}) | {e_short} / {e_long} |")
    print(f"| cached embeddings ({a.frames} / {a.long}) | {f_short / 2**20:.1f} / {f_long / 2**20:.1f} MiB |")
    print(f"| process max RSS | {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
