"""Weight-space averaging of a fine-tune with its starting point (`training.average_checkpoints`)."""
from __future__ import annotations

import pytest
import torch

from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.errors import EchoSAMError
from echosam.models.registry import build_model, get_family
from training.average_checkpoints import average, main


def _saved(tmp_path, name, family="masam", seed=0):
    torch.manual_seed(seed)
    model = build_model(family, preset="tiny")
    return save_checkpoint(model, family, get_family(family).presets["tiny"](), tmp_path / name,
                           classes=["lv", "myo", "la"], provenance={"stage": name})


def test_average_is_the_weighted_mean_of_every_tensor_and_records_both_files(tmp_path):
    a, b = _saved(tmp_path, "tuned", seed=1), _saved(tmp_path, "init", seed=2)
    out = average(a, b, 0.25, tmp_path / "avg")
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    got = load_checkpoint(out)
    sm = got.model.state_dict()
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert floats and any(not torch.equal(sa[k], sb[k]) for k in floats)
    for k in floats:
        assert torch.allclose(sm[k], 0.75 * sa[k] + 0.25 * sb[k], atol=1e-6), k
    prov = got.meta["provenance"]
    assert prov["stage"] == "tuned" and prov["averaged"]["weight"] == 0.25
    assert prov["averaged"]["with"] == str(b) and len(prov["averaged"]["with_sha256"]) == 64


def test_different_architectures_and_bad_weights_are_refused(tmp_path, capsys):
    a, other = _saved(tmp_path, "masam"), _saved(tmp_path, "medivista", family="medivista")
    with pytest.raises(EchoSAMError, match="not the same architecture"):
        average(a, other, 0.5, tmp_path / "x")
    assert main([str(a), str(a), "--weight", "1.5", "--out", str(tmp_path / "y")]) == 2
    assert "0..1" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()
