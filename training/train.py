"""Train a MemSAM / MediViSTA / MA-SAM model from a YAML config.

    python -m training.train --config training/configs/memsam_camus.yaml [--resume runs/x/last.pt] [--set k=v ...]
    torchrun --nproc_per_node 4 -m training.train --config ...        # DDP (nccl on GPU, gloo on CPU)

Outputs in ``output.dir``: ``config.yaml``; ``last.pt`` (everything an exact resume needs: model,
optimiser, scheduler, GradScaler, python/numpy/torch RNG states of every rank, epoch and step; a plain
dict read back with ``torch.load(weights_only=True)``); ``best.safetensors`` (best validation mean
Dice) and ``final.safetensors`` in the engine's own format (`echosam.checkpoints.save_checkpoint`,
with provenance), loadable by ``echosam segment --model PATH`` and the Slicer module; ``steps.csv``,
``epochs.csv`` and ``curves.png``.

Order of clips and every augmentation are functions of (seed, epoch, index) and the per-rank
torch RNG is checkpointed, so resuming from ``last.pt`` reproduces an uninterrupted run exactly on
CPU (``train.deterministic``).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from echosam.errors import CheckpointError
from echosam.models.frame_input import frame_context

from . import distributed as D
from .config import load_config
from .datasets import build_clip_dataset
from .datasets.clips import PromptGroupBatches, collate_prompted
from .logs import CsvLog, plot_curves
from .losses import build_loss
from .neighbour_blend import check_neighbour_blend
from .optim import build_optimizer, build_scheduler, precision_setup
from .steps import build_model_from_config, dice_counts, enter_train_mode, forward_batch, logits_to_labels

log = logging.getLogger("training")
STATE_FORMAT = "echosam-train-state"


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    npst = np.random.get_state()
    st = {"python": random.getstate(), "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _plain(obj):
    """numpy scalars -> Python numbers, recursively, so ``torch.load(weights_only=True)`` reads the file."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg: dict, resume=None):
        self.cfg, self.t = cfg, cfg["train"]
        self.ctx = D.init(self.t.get("device", "auto"))
        set_determinism(bool(self.t.get("deterministic", True)))
        self.seed = int(self.t.get("seed", 0))
        seed_all(self.seed)                                  # identical model init on every rank
        self.model, self.spec, self.mconfig = build_model_from_config(cfg["model"], cfg["data"].get("structures"))
        self.classes = list(self.mconfig.classes)
        self.model.to(self.ctx.device)
        self.data_cfg = dict(cfg["data"], structures=self.classes)
        self.neighbour_blend = check_neighbour_blend(cfg["data"].get("neighbour_blend"), frame_context(self.model))
        if "prompt" in self.data_cfg:      # box prompts carry the helper points the model's config names
            rule = getattr(self.mconfig, "box_helpers", "centre")
            self.data_cfg["prompt"] = dict(self.data_cfg["prompt"], box_helpers=rule)
        size = self.mconfig.sam.img_size
        prompted = self.spec.prompted
        self.train_ds = build_clip_dataset(self.data_cfg, "train", size=size, seed=self.seed, prompted=prompted)
        self.val_ds = (build_clip_dataset(self.data_cfg, "val", train=False, size=size, seed=self.seed, prompted=prompted)
                       if int(self.t.get("val_every", 1)) > 0 else None)
        self.bs, self.accum = int(self.t["batch_size"]), max(1, int(self.t.get("grad_accum", 1)))
        self.sampler = D.ResumableSampler(self.train_ds, self.ctx, shuffle=True, seed=self.seed)
        self.micro_per_epoch = math.ceil(self.sampler.num_samples / self.bs)
        self.steps_per_epoch = math.ceil(self.micro_per_epoch / self.accum)
        self.epochs = int(self.t["epochs"])
        self.opt = build_optimizer(self.model, cfg["optim"])
        budget = self.t.get("max_minutes")
        self.budget_s = float(budget) * 60.0 if budget else None
        self.clock_start = time.time()       # reset when run() starts; a resumed run gets a fresh budget
        self.sched = build_scheduler(self.opt, cfg["optim"], self.epochs * self.steps_per_epoch,
                                     progress=self.time_spent if self.budget_s else None)
        self.autocast, self.scaler, self.precision = precision_setup(self.t.get("precision", "fp32"), self.ctx.device)
        self.loss_fn = build_loss(cfg["loss"])
        self.out = Path(cfg["output"]["dir"])
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "best_epoch": None,
                      "best_per_structure": None}
        seed_all(self.seed + 1000 * self.ctx.rank + 1)      # training randomness per rank
        if resume:
            self._load(resume)
        self.ddp = D.wrap_model(self.model, self.ctx, bool(self.t.get("find_unused_parameters", True)))
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            import yaml
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            self.steps_log = CsvLog(self.out / "steps.csv", resume=bool(resume))
            self.epochs_log = CsvLog(self.out / "epochs.csv", resume=bool(resume))
            log.info("%s (%s) on %s x%d, %s; %d train clips/rank, %d steps/epoch", self.spec.name,
                     self.cfg["model"].get("preset"), self.ctx.device, self.ctx.world_size, self.precision,
                     self.sampler.num_samples, self.steps_per_epoch)

    def time_spent(self) -> float:
        """Fraction of ``train.max_minutes`` used (0 without a budget)."""
        return (time.time() - self.clock_start) / self.budget_s if self.budget_s else 0.0

    # ---- checkpoints -------------------------------------------------------------------------------
    def _gather_rng(self) -> list:
        st = rng_state()
        if not self.ctx.distributed:
            return [st]
        out = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(out, st)
        return out

    def save_state(self) -> None:
        rngs = self._gather_rng()
        if self.ctx.is_main:
            _atomic_save({"format": STATE_FORMAT, "version": 1, "model": D.unwrap(self.model).state_dict(),
                          "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                          "scaler": self.scaler.state_dict(), "rng": rngs, "state": _plain(dict(self.state)),
                          "world_size": self.ctx.world_size, "config": _plain(self.cfg)}, self.out / "last.pt")
        D.barrier(self.ctx)

    def _load(self, path) -> None:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a training state written by training.train (last.pt).")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state.update(ck["state"])
        if ck.get("world_size") == self.ctx.world_size:
            set_rng_state(ck["rng"][self.ctx.rank])
        else:
            log.warning("resuming with %d processes instead of %d: RNG streams restart from the seed",
                        self.ctx.world_size, ck.get("world_size"))
        log.info("resumed from %s at epoch %d step %d", path, self.state["epoch"], self.state["global_step"])

    def export(self, name: str, metrics: dict) -> Path:
        from echosam.checkpoints import save_checkpoint

        prov = {"trainer": "training.train", "config": self.cfg, "steps": self.state["global_step"],
                "epochs_completed": self.state["epoch"], "metrics": metrics, "torch": torch.__version__,
                "world_size": self.ctx.world_size, "precision": self.precision,
                "data": {"dataset": self.data_cfg.get("dataset"), "root": str(self.data_cfg.get("root", "")),
                         "train_cases": len(self.train_ds), "structures": self.classes,
                         "val_cases": len(self.val_ds) if self.val_ds is not None else 0}}
        return save_checkpoint(D.unwrap(self.model), self.spec.name, self.mconfig, self.out / f"{name}.safetensors",
                               classes=self.classes, provenance=prov)

    def check_ranks_agree(self) -> bool:
        """DDP sanity check: every rank's weights hash the same; written to ``ddp_check.json``."""
        import hashlib
        import json

        core = D.unwrap(self.model)
        for b in core.buffers():              # BatchNorm statistics are per rank under DDP: take rank 0's
            torch.distributed.broadcast(b.data, src=0)
        h = hashlib.sha256()
        for k, v in sorted(core.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        out = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(out, h.hexdigest())
        if self.ctx.is_main:
            (self.out / "ddp_check.json").write_text(json.dumps({"world_size": self.ctx.world_size,
                                                                 "weights_sha256": out}, indent=1))
        if len(set(out)) != 1:
            log.error("DDP ranks disagree on the weights: %s", out)
        return len(set(out)) == 1

    # ---- validation ------------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Mean Dice per structure over the labelled frames of the validation clips (at model size)."""
        core = D.unwrap(self.model)
        n = len(self.val_ds)
        limit = self.t.get("max_val_clips")
        idx = list(range(self.ctx.rank, min(n, int(limit)) if limit else n, self.ctx.world_size))
        counts = np.zeros((len(self.classes), 2))
        core.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed)
            for i in idx:
                batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in self.val_ds[i].items()}
                with self.autocast():
                    logits = forward_batch(core, core, self.spec.prompted, batch, self.ctx.device)
                pred = logits_to_labels(logits.float(), self.spec.prompted, float(self.t.get("threshold", 0.5)))
                if "structure" in batch and len(self.classes) > 1:
                    # a prompted clip propagates one structure: its binary Dice counts for that structure
                    k = int(batch["structure"][0])
                    counts[k] += dice_counts(pred.cpu(), batch["masks"], batch["labelled"], 1)[0]
                else:
                    counts += dice_counts(pred.cpu(), batch["masks"], batch["labelled"], len(self.classes))
        enter_train_mode(core, self.cfg["model"].get("trainable", "paper"))
        flat = D.all_reduce_sum(self.ctx, counts.ravel().tolist())
        counts = np.array(flat).reshape(-1, 2)
        per = {c: (counts[k, 0] / counts[k, 1] if counts[k, 1] else float("nan")) for k, c in enumerate(self.classes)}
        return {"val_dice": float(np.nanmean(list(per.values()))), **{f"val_dice_{c}": v for c, v in per.items()}}

    # ---- training --------------------------------------------------------------------------------------
    def run(self) -> dict:
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        stop = self.t.get("stop_after_steps")
        stop = int(stop) if stop else None
        dev, clip = self.ctx.device, self.t.get("grad_clip")
        metrics: dict = {}
        stopped = False
        self.clock_start = time.time()
        while self.state["epoch"] < self.epochs and not stopped:
            epoch, t0 = self.state["epoch"], time.time()
            self.train_ds.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            start = self.state["step_in_epoch"]
            self.sampler.set_start(start * self.accum * self.bs)
            workers = int(self.cfg["data"].get("num_workers", 0))
            if self.spec.prompted and self.bs > 1:
                # a batch of prompted clips shares one structure and prompt mode, so the prompts stack
                loader = DataLoader(self.train_ds, batch_sampler=PromptGroupBatches(self.sampler, self.bs, start * self.accum),
                                    num_workers=workers, collate_fn=collate_prompted)
            else:
                loader = DataLoader(self.train_ds, batch_size=self.bs, sampler=self.sampler, num_workers=workers,
                                    generator=torch.Generator().manual_seed(self.seed + epoch))
            n_micro = len(loader)
            bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{self.epochs}",
                       unit="step", leave=False, disable=not (self.ctx.is_main and self.t.get("progress", True)))
            losses, group_loss = [], 0.0
            self.opt.zero_grad(set_to_none=True)
            for m, batch in enumerate(loader):
                batch["prompt_loss"] = bool(self.cfg["loss"].get("prompt_loss", False))
                batch["key_mask_p"] = float(self.cfg["loss"].get("key_mask_p", 0.0))
                batch["memory_zoom"] = float(self.cfg["loss"].get("memory_zoom", 0.0))
                batch["neighbour_blend"] = self.neighbour_blend
                group_start = (m // self.accum) * self.accum
                group_size = min(self.accum, n_micro - group_start)
                last = m == group_start + group_size - 1
                sync = contextlib.nullcontext() if (last or not self.ctx.distributed) else self.ddp.no_sync()
                with sync:
                    with self.autocast():
                        logits = forward_batch(self.ddp, self.model, self.spec.prompted, batch, dev)
                        loss = self.loss_fn(logits.float(), batch["masks"].to(dev), batch["labelled"].to(dev))
                    self.scaler.scale(loss / group_size).backward()
                group_loss += float(loss.detach()) / group_size
                if not last:
                    continue
                if clip:
                    self.scaler.unscale_(self.opt)
                    torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], float(clip))
                self.scaler.step(self.opt)
                self.scaler.update()
                self.opt.zero_grad(set_to_none=True)
                lr = self.opt.param_groups[0]["lr"]
                self.sched.step()
                self.state["step_in_epoch"] += 1
                self.state["global_step"] += 1
                losses.append(group_loss)
                if self.ctx.is_main:
                    self.steps_log.write({"step": self.state["global_step"], "epoch": epoch + 1, "loss": group_loss,
                                          "lr": lr})
                bar.set_postfix(loss=f"{group_loss:.4f}")
                bar.update(1)
                group_loss = 0.0
                every = int(self.t.get("checkpoint_every_steps") or 0)
                at_end = self.state["step_in_epoch"] >= self.steps_per_epoch
                if stop is not None and self.state["global_step"] >= stop and not at_end:
                    stopped = True
                    self.save_state()
                    break
                if every and self.state["global_step"] % every == 0 and not at_end:
                    self.save_state()
                if self.budget_s and self.time_spent() >= 1.0:
                    # out of time: close this epoch as if it had ended, so it is validated and exported
                    log.info("time budget of %.1f min spent at step %d", self.budget_s / 60, self.state["global_step"])
                    stopped = True
                    break
            bar.close()
            if stopped and not self.budget_s:
                break
            self.state["epoch"] += 1
            self.state["step_in_epoch"] = 0
            row = {"epoch": epoch + 1, "step": self.state["global_step"],
                   "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": self.opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
            val_every = int(self.t.get("val_every", 1))
            if self.val_ds is not None and val_every > 0 and ((epoch + 1) % val_every == 0 or epoch + 1 == self.epochs):
                metrics = self.validate()
                row.update(metrics)
                if metrics["val_dice"] > self.state["best"]:
                    self.state.update(best=metrics["val_dice"], best_epoch=epoch + 1,
                                      best_per_structure={k: v for k, v in metrics.items() if k != "val_dice"})
                    if self.ctx.is_main:
                        self.export("best", {"best_val_dice": metrics["val_dice"], **metrics, "epoch": epoch + 1})
            if self.ctx.is_main:
                self.epochs_log.write(row)
                plot_curves(self.out / "steps.csv", self.out / "epochs.csv", self.out / "curves.png")
                log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in row.items()))
            self.save_state()
            if stop is not None and self.state["global_step"] >= stop:
                stopped = True
        summary = {"global_step": self.state["global_step"], "epoch": self.state["epoch"],
                   "best_val_dice": self.state["best"] if self.state["best"] >= 0 else None,
                   "best_epoch": self.state["best_epoch"], "out": str(self.out)}
        if self.ctx.distributed:
            summary["ranks_agree"] = self.check_ranks_agree()
        if self.ctx.is_main:
            summary["final"] = str(self.export("final", {"best_val_dice": summary["best_val_dice"],
                                                         "best_epoch": summary["best_epoch"], **metrics}))
            if self.val_ds is None or self.state["best_epoch"] is None:
                summary["best"] = str(self.export("best", {"note": "no validation: best = final", **metrics}))
            else:
                summary["best"] = str(self.out / "best.safetensors")
        D.barrier(self.ctx)
        return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML config (training/configs/*.yaml); optional with --resume")
    ap.add_argument("--resume", help="last.pt of an interrupted run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.config is None and args.resume is None:
        ap.error("give --config (and/or --resume)")
    if args.config is None:
        import yaml
        saved = Path(args.resume).with_name("config.yaml")
        if not saved.exists():
            ap.error(f"--resume without --config needs {saved}")
        cfg = load_config(None, [])
        from .config import deep_merge
        cfg = deep_merge(cfg, yaml.safe_load(saved.read_text()))
        from .config import apply_set
        for item in args.set:
            apply_set(cfg, item)
    else:
        cfg = load_config(args.config, args.set)
    trainer = Trainer(cfg, resume=args.resume)
    summary = trainer.run()
    if trainer.ctx.is_main:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    D.shutdown(trainer.ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
