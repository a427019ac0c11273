"""The points a box prompt implies (`echosam.structures.box_helper_points`), by the rule a MemSAM checkpoint
was trained with: where they land on real simulated anatomy, how the engine's key-frame decoding and the
training clips use them, and old checkpoints keeping theirs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from echosam.structures import box_helper_points
from sim_fixtures import small
from training.datasets.clips import clip_prompt, mask_box
from training.simulator.scene import simulate


@pytest.fixture(scope="module")
def label_maps():
    maps = []
    for seed in range(6):
        labels = simulate(small(seed, n_frames=6, height=160)).labels
        maps += [labels[0], labels[3]]
    return maps


def test_wall_points_land_on_both_walls_and_the_centre_in_the_cavity(label_maps):
    on_walls = []
    for lab in label_maps:
        box = mask_box(lab == 2)
        (cx, cy, cl), *walls = box_helper_points("myo", box, "walls")
        assert cl == 0 and lab[int(round(cy)), int(round(cx))] == 1            # the exclude point: LV cavity
        assert [w[2] for w in walls] == [1, 1] and walls[0][0] < cx < walls[1][0]
        on_walls.append(all(lab[int(round(y)), int(round(x))] == 2 for x, y, _ in walls))
    assert np.mean(on_walls) >= 0.9, on_walls
    # the centre rule (older checkpoints) is the exclude point alone; LV and LA boxes carry nothing
    assert box_helper_points("myo", (0, 0, 10, 20)) == [(5.0, 10.0, 0)]
    assert box_helper_points("lv", (0, 0, 10, 20), "walls") == [] == box_helper_points("la", (0, 0, 9, 9), "walls")
    with pytest.raises(ValueError, match="walls"):
        box_helper_points("myo", (0, 0, 10, 20), "corners")


def test_training_clips_carry_the_models_rule(label_maps):
    fg = label_maps[0] == 2
    box, pts, labs = clip_prompt(fg, "myo", False, np.random.default_rng(0), {"box": 1.0, "box_helpers": "walls"})
    assert labs.tolist() == [0, 1, 1]
    assert np.allclose(pts, [(x, y) for x, y, _ in box_helper_points("myo", box, "walls")])
    _, pts, labs = clip_prompt(fg, "myo", False, np.random.default_rng(0), {"box": 1.0})
    assert labs.tolist() == [0] and len(pts) == 1


def _session_key_logits(rule, key):
    from echosam.cine import Cine
    from echosam.checkpoints import LoadedModel
    from echosam.models.registry import build_model, preset_config
    from echosam.session import Session

    torch.manual_seed(0)
    cfg = preset_config("memsam", "tiny")
    cfg.classes, cfg.box_helpers = ["lv", "myo", "la"], rule
    model = build_model("memsam", cfg).eval()
    frames = np.random.default_rng(1).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    loaded = LoadedModel(model=model, family="memsam", config=cfg)
    s = Session(Cine.from_array(frames, spacing=(0.5, 0.5), fps=30.0), loaded, structures=["lv", "myo"])
    s.add_box(0, key, (10.0, 8.0, 50.0, 56.0))
    s.encode()
    return s.propagator.key_logits(key, 0)


def test_engine_decodes_a_box_with_the_checkpoints_rule():
    # same weights: the myocardium's box decodes differently with the wall points; an LV box does not
    assert not torch.allclose(_session_key_logits("walls", "myo"), _session_key_logits("centre", "myo"))
    assert torch.equal(_session_key_logits("walls", "lv"), _session_key_logits("centre", "lv"))
