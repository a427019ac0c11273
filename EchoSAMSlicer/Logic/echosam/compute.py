"""Which compute path runs here: device, precision, threads, and one line that says so.

`choose_path(device, precision)` is the one rule. ``precision="auto"``:
- CUDA: bf16 autocast (fp16 on GPUs without bf16);
- CPU with native bf16 (Linux ``/proc/cpuinfo`` flags ``amx_bf16`` or ``avx512_bf16``, Arm ``bf16``;
  else oneDNN's own bf16 check) and a model at least `CPU_BF16_MIN_WIDTH` wide: bf16 autocast, where
  AMX / AVX512-BF16 run the encoders' matmuls and convolutions ~3-4x faster than fp32
  (bench/bench_models.py); a smaller model runs fp32 (bf16 does not pay there);
- any other CPU or Apple MPS: fp32 (bf16 is emulated there, slower than fp32).
``"fp32"`` forces fp32 everywhere (``--precision fp32``, the panel's "Force fp32"); ``"bf16"`` /
``"fp16"`` ask for that autocast (on a CPU fp16 is not offered: fp32 is used and said).
Threads (`use_all_cores`): one per core not busy with other work, unless ``OMP_NUM_THREADS`` says.

The result is a `ComputePath`; its `describe()` (e.g. ``"cpu bf16 autocast (amx_bf16), 2 threads"``)
is what `Session.compute_path` exposes, `echosam segment` writes into run.json, batch rows carry and
the Slicer panel shows. Numerics stay bounded: models compute their final mask logits in fp32
(`echosam.models.fast.full_precision`), and the fast path's labels agree with fp32 (Dice >= 0.99 per
structure and frame; tests/test_cpu_fast_path.py).

torch is imported only inside functions (the Slicer module imports this before torch is installed).
"""
from __future__ import annotations

import functools
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Optional

from .errors import ModelError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")     # best first; "bf16": Arm FEAT_BF16 on Linux
# Encoder width from which CPU bf16 pays: at ViT-B (768) AMX runs the matmuls ~4x faster than fp32; the
# bundled 32/64-wide models are faster in fp32 (casts and small kernels dominate; bench/fast_agreement.py)
CPU_BF16_MIN_WIDTH = 256


@dataclass(frozen=True)
class ComputePath:
    """What runs: ``device`` ("cpu", "cuda:0"), ``dtype`` ("bf16", "fp16" or "fp32": autocast dtype, fp32 =
    none), ``threads`` (torch intra-op threads), ``reason`` (why this dtype: a CPU flag, "forced", ...),
    ``hardware`` (the CPU model or GPU name)."""

    device: str
    dtype: str
    threads: int
    reason: str
    hardware: str = ""

    @property
    def autocast(self) -> bool:
        return self.dtype != "fp32"

    def torch_dtype(self):
        """The autocast dtype (a torch dtype), or None for plain fp32."""
        import torch
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.dtype)

    def describe(self) -> str:
        kind = "cpu" if self.device == "cpu" else self.device
        how = f"{self.dtype} autocast" if self.autocast else "fp32"
        why = f" ({self.reason})" if self.reason else ""
        return f"{kind} {how}{why}, {self.threads} thread{'s' if self.threads != 1 else ''}"

    def to_dict(self) -> dict:
        return dict(asdict(self), description=self.describe())


# ---- what the CPU offers (read once per process) -------------------------------------------------------
def _cpuinfo_value(prefixes: tuple) -> Optional[str]:
    """The value of the first /proc/cpuinfo line starting with one of ``prefixes`` (None elsewhere or unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(prefixes):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU feature flags Linux reports (empty elsewhere or when unreadable)."""
    return frozenset((_cpuinfo_value(("flags", "Features")) or "").split())


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model name ("Intel(R) Xeon(R) ...") or the platform's processor string."""
    name = _cpuinfo_value(("model name", "Model"))
    return name.strip() if name is not None else (platform.processor() or platform.machine())


def cpu_bf16_flag(flags: Optional[set] = None) -> Optional[str]:
    """The flag that gives this CPU native bf16 (``amx_bf16``, ``avx512_bf16``, ``bf16``; on macOS
    ``FEAT_BF16``), "onednn" when only oneDNN's own check says so (no /proc/cpuinfo, e.g. Windows), or None
    (no native bf16: bf16 would be emulated, slower than fp32)."""
    flags = cpu_flags() if flags is None else flags
    for flag in CPU_BF16_FLAGS:
        if flag in flags:
            return flag
    if flags:                          # Linux told us the flags and none of them is bf16
        return None
    if platform.system() == "Darwin":  # Apple silicon M2 and later
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        return "FEAT_BF16" if out == "1" else None
    try:
        import torch
        # torch's oneDNN probe has no public name yet; getattr so a torch without it means fp32
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if torch.backends.mkldnn.is_available() and probe is not None and probe():
            return "onednn"
    except (AttributeError, RuntimeError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_jiffies() -> tuple:
    """(busy, total) CPU jiffies of the whole machine from /proc/stat, and this process's own busy jiffies."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    with open("/proc/self/stat", encoding="ascii") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v) - idle, sum(v), int(own[11]) + int(own[12])


def busy_cores(window_s: float = 0.1) -> float:
    """Cores other processes keep busy now: /proc/stat sampled over ``window_s`` minus this process's own
    use (Linux); elsewhere the 1-minute load average (0 where there is none, e.g. Windows)."""
    try:
        b0, t0, o0 = _cpu_jiffies()
        time.sleep(window_s)
        b1, t1, o1 = _cpu_jiffies()
        return max(0.0, (b1 - b0 - (o1 - o0)) / max(1, t1 - t0) * (os.cpu_count() or 1))
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0


_BUSY = {"at": -1e9, "cores": 0.0}      # busy_cores, measured at most every BUSY_TTL_S seconds
BUSY_TTL_S = 30.0


def free_cores(cores: Optional[int] = None, busy: Optional[float] = None) -> int:
    """Usable cores not busy with other processes' work (``cores - round(busy)``, at least 1).

    OpenMP threads wait for each other at every operator: a thread on a core another process holds
    stalls all of them (measured on a shared 2-core VM: a small convolution 100x slower with 2 threads
    than with 1 while other jobs ran). On an idle workstation this is every core."""
    cores = usable_cores() if cores is None else cores
    if busy is None:
        if time.monotonic() - _BUSY["at"] > BUSY_TTL_S:
            _BUSY.update(at=time.monotonic(), cores=busy_cores())
        busy = _BUSY["cores"]
    return max(1, min(cores, cores - int(round(busy))))


def use_all_cores() -> int:
    """Give torch one intra-op thread per free core (`free_cores`), unless the user or a batch worker
    already chose (``OMP_NUM_THREADS`` set). Returns torch's thread count."""
    import torch
    if not os.environ.get("OMP_NUM_THREADS"):
        n = free_cores()
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return torch.get_num_threads()


# ---- frames per encoder call -------------------------------------------------------------------------
CPU_BATCH_BYTES = 16 * 2**20     # one call's MLP activations (fp32) stay within a few L2 caches


def encoder_batch(device: str, tokens: int, width: int) -> int:
    """Frames per encoder call: 8 on a GPU (fills it, bounded memory); on a CPU as many as keep one
    call's MLP activations (tokens x 4*width, fp32) within `CPU_BATCH_BYTES`, 1..8: one ViT-B frame at
    256 px already holds 12 MiB there, and batched ViT-B frames measured no faster on the CPU."""
    if not str(device).startswith("cpu"):
        return 8
    per_frame = max(1, int(tokens) * 4 * int(width) * 4)
    return max(1, min(8, CPU_BATCH_BYTES // per_frame))


# ---- the rule ---------------------------------------------------------------------------------------
def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    return precision


def choose_path(device: str = "cpu", precision: str = "auto", flags: Optional[set] = None,
                set_threads: bool = True, width: Optional[int] = None) -> ComputePath:
    """The compute path for a resolved ``device`` (see the module docstring). ``width``: the model's
    encoder width (embed_dim; None: unknown, taken as large); ``flags`` overrides the CPU flags (tests);
    ``set_threads`` applies `use_all_cores` on a CPU."""
    import torch
    check_precision(precision)
    dev = torch.device(device)
    threads = use_all_cores() if set_threads and dev.type == "cpu" else torch.get_num_threads()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        if precision == "fp32":
            return ComputePath(str(dev), "fp32", threads, "forced", name)
        if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
            return ComputePath(str(dev), "fp16", threads, "asked" if precision == "fp16" else "GPU lacks bf16", name)
        return ComputePath(str(dev), "bf16", threads, "asked" if precision == "bf16" else "", name)
    if dev.type != "cpu":                                    # Apple MPS: fp32 (mixed precision untested there)
        return ComputePath(str(dev), "fp32", threads, "forced" if precision == "fp32" else "", dev.type)
    model = cpu_model()
    if precision == "fp32":
        return ComputePath("cpu", "fp32", threads, "forced", model)
    if precision == "fp16":
        return ComputePath("cpu", "fp32", threads, "fp16 is not offered on CPU", model)
    flag = cpu_bf16_flag(flags)
    if precision == "bf16":
        return ComputePath("cpu", "bf16", threads, flag or "asked; emulated on this CPU, slow", model)
    if flag is None:
        return ComputePath("cpu", "fp32", threads, "no native bf16 on this CPU", model)
    if width is not None and width < CPU_BF16_MIN_WIDTH:
        return ComputePath("cpu", "fp32", threads, f"{flag} present; a {width}-wide model is faster in fp32", model)
    return ComputePath("cpu", "bf16", threads, flag, model)
