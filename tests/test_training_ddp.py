"""Two-process DDP training on CPU (gloo) under torchrun: it completes and both ranks hold the same
weights afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")


def test_torchrun_two_processes_gloo(tmp_path):
    cfg = {"name": "ddp", "model": {"family": "memsam", "preset": "tiny", "trainable": "all"},
           "data": {"dataset": "phantom", "structures": ["lv"], "n_frames": 16, "size": 64,
                    "splits": {"train": {"seed": 0, "n_cases": 4}, "val": {"seed": 555, "n_cases": 2}}},
           "train": {"epochs": 1, "batch_size": 1, "device": "cpu", "progress": False},
           "optim": {"lr": 1.0e-3}, "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--config", str(tmp_path / "cfg.yaml")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads((tmp_path / "run" / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and len(set(check["weights_sha256"])) == 1
    assert "ranks_agree=True" in proc.stdout
    steps = (tmp_path / "run" / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 2                                  # 4 clips over 2 ranks, batch 1: 2 steps
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["state"]["global_step"] == 2

    from echosam.checkpoints import load_checkpoint

    loaded = load_checkpoint(tmp_path / "run" / "final.safetensors")
    assert loaded.meta["provenance"]["world_size"] == 2
    for k, v in loaded.model.state_dict().items():               # exported weights = rank 0's DDP weights
        assert torch.equal(v, state["model"][k]), k
