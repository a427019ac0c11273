"""data.neighbour_blend: MemSAM trains with its neighbour channels blended exactly as the engine's in-between
frames blend them (training.neighbour_blend against echosam.session.in_between), and the trainer uses it."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from echosam.errors import ConfigError  # noqa: E402
from echosam.models.frame_input import clip_neighbour_frames, neighbour_frames  # noqa: E402
from echosam.session.in_between import blended_steps, n_steps  # noqa: E402
from training.config import load_config  # noqa: E402
from training.neighbour_blend import blended_clip_neighbours, check_neighbour_blend, draw_fractions  # noqa: E402
from training.train import Trainer  # noqa: E402


def _grey(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 12, 16)).astype(np.uint8)


def test_fraction_one_is_the_clip_frames_themselves():
    clips = torch.from_numpy(np.stack([_grey(5, 0), _grey(5, 1)]).astype(np.float32))
    out = blended_clip_neighbours(clips, 1, torch.tensor([1.0, 1.0]))
    assert torch.equal(out, clip_neighbour_frames(clips, 1))


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_blended_neighbours_equal_the_engines_in_between_frames(k):
    """What the engine shows the model at k steps a frame: the timeline's neighbours one step away, read at
    every k-th step. Training must show the same pixels, rounding included."""
    grey = _grey(6)
    steps = torch.from_numpy(blended_steps(grey, k, 0, n_steps(len(grey), k)))
    engine = neighbour_frames(steps, 0, steps.shape[0], 1)[::k]
    clip = torch.from_numpy(grey.astype(np.float32))[None]
    out = blended_clip_neighbours(clip, 1, torch.tensor([1.0 / k]))
    assert torch.equal(out, engine)
    assert not torch.equal(out, clip_neighbour_frames(clip, 1))          # and they are not the clip's own frames


def test_each_clip_gets_its_own_fraction():
    clips = torch.from_numpy(np.stack([_grey(4, 2), _grey(4, 3)]).astype(np.float32))
    out = blended_clip_neighbours(clips, 1, torch.tensor([1.0, 0.25]))
    assert torch.equal(out[:4], clip_neighbour_frames(clips[:1], 1))
    assert torch.equal(out[4:], blended_clip_neighbours(clips[1:], 1, torch.tensor([0.25])))
    assert torch.equal(out[:, 1], clips.reshape(8, 12, 16))             # the frame itself is never blended


def test_fractions_drawn_as_configured():
    torch.manual_seed(0)
    assert torch.equal(draw_fractions(5, None), torch.ones(5))
    allowed = {1.0 / k for k in range(2, 5)}
    always = draw_fractions(400, {"p": 1.0, "max_steps": 4})
    assert {round(float(f), 6) for f in always} == {round(v, 6) for v in allowed}
    some = draw_fractions(2000, {"p": 0.25, "max_steps": 8})
    assert 0.2 < float((some < 1).float().mean()) < 0.3


def test_bad_settings_are_refused_with_what_to_do():
    assert check_neighbour_blend(None, 1) is None
    assert check_neighbour_blend({"p": 0.5, "max_steps": 4}, 1) == {"p": 0.5, "max_steps": 4}
    for bad in ({"p": 1.5}, {"max_steps": 1}, {"max_steps": 2.5}, {"steps": 4}, [0.5, 4]):
        with pytest.raises(ConfigError, match="neighbour_blend"):
            check_neighbour_blend(bad, 1)
    with pytest.raises(ConfigError, match="neighbour_channels: true"):
        check_neighbour_blend({"p": 0.5}, 0)


def _cfg(tmp_path, name, sets=()):
    base = [f"name={name}", "model.family=memsam", "model.preset=tiny", "model.trainable=all",
            "model.overrides={neighbour_channels: true}", "data.dataset=phantom", "data.n_frames=12",
            "data.size=64", "data.structures=[lv]", "data.splits={train: {seed: 0, n_cases: 2}}",
            "data.augment=false", "train.device=cpu", "train.progress=false", "train.val_every=0",
            "train.epochs=2", "loss.name=memsam", f"output.dir={tmp_path / name}"]
    return load_config(None, base + list(sets))


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_trainer_blends_and_resumes_exactly(tmp_path):
    blend = ["data.neighbour_blend={p: 1.0, max_steps: 4}"]
    Trainer(_cfg(tmp_path, "plain", ["train.stop_after_steps=2"])).run()
    Trainer(_cfg(tmp_path, "full", blend + ["train.stop_after_steps=3"])).run()
    Trainer(_cfg(tmp_path, "part", blend + ["train.stop_after_steps=2"])).run()
    plain, part = _weights(tmp_path / "plain" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert any(not torch.equal(plain[k], part[k]) for k in plain)      # the blends reach training
    Trainer(_cfg(tmp_path, "part", blend + ["train.stop_after_steps=3"]), resume=tmp_path / "part" / "last.pt").run()
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    for k in a:                                                         # the fractions' draws resume too
        assert torch.equal(a[k], b[k]), k


def test_trainer_refuses_blending_for_a_single_frame_model(tmp_path):
    cfg = _cfg(tmp_path, "single", ["model.overrides={neighbour_channels: false}",
                                    "data.neighbour_blend={p: 0.5, max_steps: 4}"])
    with pytest.raises(ConfigError, match="takes one frame alone"):
        Trainer(cfg)
