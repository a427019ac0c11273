"""torchrun / DDP helpers. The same training code runs single-process (CPU or one GPU) and under
``torchrun --nproc_per_node N`` (one or several nodes): gloo on CPU, nccl on CUDA.

- `init()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and sets up the process
  group; without it, it returns a single-process context.
- `ResumableSampler` is a `DistributedSampler` (each rank a disjoint shard; shuffled per epoch from
  ``seed + epoch``) that can start mid-epoch, so a resumed run sees exactly the batches the
  interrupted one had left. Single-process runs use it too (one replica), so the order of clips
  is the same function of (seed, epoch) everywhere.
- Only rank 0 logs, writes checkpoints and exports weights (`is_main`); `barrier` and
  `all_reduce_mean` keep ranks in step for validation.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

log = logging.getLogger("training")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: str = "auto") -> DistContext:
    """Start the process group when launched by torchrun; pick the device for this rank.
    ``device``: auto (cuda when available) | cpu | cuda."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible; use device: cpu or auto.")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    backend = None
    if world > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: list) -> list:
    """Sum a list of floats over ranks (e.g. Dice sums and counts); identity single-process."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def wrap_model(model: torch.nn.Module, ctx: DistContext, find_unused_parameters: bool = True) -> torch.nn.Module:
    """DDP wrapper when distributed (MemSAM's reinforcer runs on a random subset of frames, so some
    trainable parameters can miss a step: ``find_unused_parameters`` defaults to True)."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` that can skip the first ``start`` samples of this rank's epoch shard."""

    def __init__(self, dataset, ctx: DistContext, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        idx = list(super().__iter__())
        return iter(idx[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
