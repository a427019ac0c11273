"""Training while the simulator still writes its data: a source that follows the folders, batches of
prompted clips whose prompts stack, and a wall-clock budget that decays the lr and still exports."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from training.config import load_config  # noqa: E402
from training.datasets import DatasetError, build_clip_dataset, build_source  # noqa: E402
from training.datasets.clips import PromptGroupBatches, collate_prompted  # noqa: E402
from training.optim import lr_factor  # noqa: E402
from training.simulator import cache  # noqa: E402
from training.simulator.scene import sample_params  # noqa: E402
from training.train import Trainer  # noqa: E402

from sim_fixtures import small  # noqa: E402


@pytest.fixture()
def small_cases(monkeypatch):
    # a whole beat (an ED and a later ES) on a small grid
    monkeypatch.setattr(cache, "sample_params",
                        lambda seed, ranges=None: small(seed, n_frames=sample_params(seed).n_frames, height=48))
    return lambda root, seed: cache.write_case(root, seed, "train")


def test_followed_source_waits_sees_new_cases_and_explains(tmp_path, small_cases):
    small_cases(tmp_path, 1)
    cfg = {"dataset": "simulated", "root": str(tmp_path), "follow": {"cases_per_epoch": 6, "refresh_s": 0, "min_cases": 1}}
    src = build_source(cfg)
    assert len(src) == 6                                   # an epoch is a number of draws, not the cases on disk
    assert {src.load(i).name for i in range(6)} == {"case_000001"}
    small_cases(tmp_path, 2)                               # the generator writes another case
    seen = {src.load(i).name for i in range(6)}
    assert seen == {"case_000001", "case_000002"}
    seq = src.load(1)
    assert seq.frames.shape[0] > max(seq.ed, seq.es) and seq.labels[seq.ed].max() == 3 and 0 < seq.ef < 100

    with pytest.raises(DatasetError, match="fewer than 5 simulated cases"):
        build_source({**cfg, "follow": {"min_cases": 5, "wait_s": 0.2}})
    with pytest.raises(DatasetError, match="unknown keys"):
        build_source({**cfg, "follow": {"cases": 5}})


def _prompted_phantom(n_cases=6):
    data = {"dataset": "phantom", "n_cases": n_cases, "n_frames": 16, "size": 64, "structures": ["lv", "myo", "la"],
            "clip_frames": 4, "supervision": "full", "prompt": {"box": 0.4, "point": 0.3, "box+point": 0.3}}
    return build_clip_dataset(data, "train", size=64, seed=3, prompted=True)


def test_a_batch_of_prompted_clips_shares_structure_and_prompt_mode():
    ds = _prompted_phantom()
    kinds = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_sampler=PromptGroupBatches(range(6), 3, first_batch=10 * epoch),
                            collate_fn=collate_prompted)
        for batch in loader:
            s = batch["structure"]
            assert len(s) == 3 and bool((s == s[0]).all())
            has_box = batch["box"][:, 0] >= 0
            assert bool((has_box == has_box[0]).all())
            n_pos = (batch["point_labels"] == 1).sum(1)
            assert bool((n_pos == n_pos[0]).all())       # a click on every clip or on none
            kinds.add((int(s[0]), bool(has_box[0]), int(n_pos[0])))
    assert len({k[0] for k in kinds}) >= 2 and len({k[1:] for k in kinds}) >= 2   # still drawn, per batch


def test_group_batches_count_and_number_batches():
    batches = list(PromptGroupBatches(range(7), 3, first_batch=4))
    assert len(PromptGroupBatches(range(7), 3)) == 3 == len(batches)
    assert batches[0] == [(0, 4), (1, 4), (2, 4)] and batches[-1] == [(6, 6)]


def test_collate_pads_missing_points_as_not_a_point():
    a = {"box": torch.tensor([1.0, 2, 9, 9]), "points": torch.tensor([[3.0, 4.0]]), "point_labels": torch.tensor([0])}
    b = {"box": torch.tensor([1.0, 2, 9, 9]), "points": torch.zeros(0, 2), "point_labels": torch.zeros(0, dtype=torch.long)}
    out = collate_prompted([a, b])
    assert out["points"].shape == (2, 1, 2)
    assert out["point_labels"].tolist() == [[0], [-1]]


def test_time_budget_decays_lr_by_the_clock():
    cfg = {"schedule": "warmup_poly", "warmup_iters": 2, "power": 1.0}
    assert lr_factor(0, cfg, 100, progress=lambda: 0.9) == pytest.approx(0.5)   # warm-up still counts steps
    assert lr_factor(50, cfg, 100, progress=lambda: 0.25) == pytest.approx(0.75)
    assert lr_factor(50, cfg, 100, progress=lambda: 1.7) == 0.0


def test_prompted_batches_train_within_a_time_budget(tmp_path):
    sets = ["name=budget", "model.family=memsam", "model.preset=tiny", "model.trainable=all", "data.dataset=phantom",
            "data.n_frames=16", "data.size=64", "data.structures=[lv,myo,la]", "data.clip_frames=4",
            "data.supervision=full", "data.prompt={box: 0.5, point: 0.5}",
            "data.splits={train: {seed: 0, n_cases: 4}, val: {seed: 777, n_cases: 1}}", "train.device=cpu",
            "train.progress=false", "train.batch_size=2", "train.epochs=1000", "train.max_minutes=0.03",
            "optim.schedule=warmup_poly", "optim.warmup_iters=1", "optim.power=1.0", "loss.name=memsam",
            f"output.dir={tmp_path / 'budget'}"]
    summary = Trainer(load_config(None, sets)).run()
    assert 1 <= summary["epoch"] < 1000                    # the clock, not the epochs, ended it
    assert (tmp_path / "budget" / "final.safetensors").exists()
    assert summary["best_val_dice"] is not None            # the last epoch was still validated
    steps = np.loadtxt(tmp_path / "budget" / "steps.csv", delimiter=",", skiprows=1, ndmin=2)
    assert np.isfinite(steps[:, 2]).all()
    if len(steps) > 2:
        assert steps[-1, 3] < steps[1, 3]                  # lr decayed with the time spent


def _disc_logits(radius: float, size: int = 32) -> tuple:
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < radius ** 2
    logits = torch.zeros(1, 1, 2, size, size)
    logits[0, 0, 1] = torch.from_numpy(np.where(disc, 6.0, -6.0))
    return logits


def test_area_term_charges_a_cavity_drawn_too_large():
    from training.losses import build_loss

    yy, xx = np.mgrid[:32, :32]
    truth = torch.from_numpy((((yy - 16) ** 2 + (xx - 16) ** 2) < 8 ** 2).astype(np.int64))[None, None]
    labelled = torch.ones(1, 1, dtype=torch.bool)
    plain, with_area = build_loss({"name": "dice_ce"}), build_loss({"name": "dice_ce", "area_weight": 1.0})
    exact, large = _disc_logits(8), _disc_logits(9.5)
    assert with_area(exact, truth, labelled) - plain(exact, truth, labelled) < 0.01
    extra = with_area(large, truth, labelled) - plain(large, truth, labelled)
    too_large = float((large[0, 0, 1] > 0).sum()) / float(truth.sum()) - 1.0      # about half again as large
    assert float(extra) == pytest.approx(too_large, abs=0.01)
    large.requires_grad_(True)
    with_area(large, truth, labelled).backward()
    ring = ((yy - 16) ** 2 + (xx - 16) ** 2 >= 8 ** 2) & (((yy - 16) ** 2 + (xx - 16) ** 2) < 9.5 ** 2)
    assert float(large.grad[0, 0, 1][torch.from_numpy(ring)].mean()) > 0   # pushes the too-large rim down


def test_memsam_area_term_matches_the_relative_area_error():
    from training.losses import build_loss

    yy, xx = np.mgrid[:32, :32]
    truth = torch.from_numpy((((yy - 16) ** 2 + (xx - 16) ** 2) < 8 ** 2).astype(np.int64))[None, None]
    labelled = torch.ones(1, 1, dtype=torch.bool)
    large = _disc_logits(9.5)[:, :, 1:]                           # MemSAM: one sigmoid channel
    plain, with_area = build_loss({"name": "memsam"}), build_loss({"name": "memsam", "area_weight": 1.0})
    too_large = float((large[0, 0, 0] > 0).sum()) / float(truth.sum()) - 1.0
    assert float(with_area(large, truth, labelled) - plain(large, truth, labelled)) == pytest.approx(too_large, abs=0.01)


def test_recipe_lists_each_stage_once_in_order():
    from training.package_demo import unique_stages

    chain = [{"name": n} for n in ("a", "b", "c", "b", "c", "d")]   # c started from a bundled file later replaced by d
    assert [s["name"] for s in unique_stages(chain)] == ["a", "b", "c", "d"]


def test_a_packaged_file_packaged_again_keeps_its_recipe(tmp_path):
    """Re-packaging a bundled file (e.g. to record a new evaluation) keeps the stages it holds, though its
    init_checkpoint's runs/ folder is gone; a fresh run's checkpoint gets its recipe from the config chain."""
    from training.package_demo import recipe_of

    cfg = {"name": "c", "model": {"init_checkpoint": str(tmp_path / "gone" / "final.safetensors")}}
    held = [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    assert [st["name"] for st in recipe_of({"config": cfg, "recipe": held})] == ["a", "b", "c"]
    assert [st["name"] for st in recipe_of({"config": cfg, "steps": 10})] == ["c"]
    averaged = recipe_of({"config": cfg, "averaged": {"with": "x", "weight": 0.5}})
    assert [st["name"] for st in averaged] == ["c", "average_checkpoints"]


def test_an_inference_setting_is_applied_recorded_and_used_by_a_session(tmp_path):
    from echosam.checkpoints import load_checkpoint, save_checkpoint
    from echosam.pipeline import load
    from echosam.phantom import make_phantom
    from echosam.session import Session
    from training.package_demo import apply_inference_settings, merge_inference_settings

    loaded = load("echosam-demo-memsam-tiny", "cpu")
    trained = loaded.config.memory_cap
    record = apply_inference_settings(loaded, ["memory_cap=3"], why="regular curves on the real cine")
    assert record == {"memory_cap": {"trained": trained, "bundled": 3}, "why": "regular curves on the real cine"}
    out = save_checkpoint(loaded.model, loaded.family, loaded.config, tmp_path / "m", classes=loaded.classes,
                          provenance={"inference_settings": record})
    again = load_checkpoint(out)
    assert again.config.memory_cap == 3 and again.meta["provenance"]["inference_settings"] == record
    assert Session(make_phantom(n_frames=4, size=(64, 64), seed=1).cine, again).memory_cap == 3
    # packaged again with another setting: the first one's record stays, each why named by its fields
    later = apply_inference_settings(again, ["threshold=0.4", "memory_cap=5"], why="a lower cut")
    merged = merge_inference_settings(again.meta["provenance"]["inference_settings"], later)
    assert merged["memory_cap"] == {"trained": trained, "bundled": 5}
    assert merged["threshold"] == {"trained": 0.5, "bundled": 0.4}
    assert merged["why"] == "memory_cap: regular curves on the real cine threshold, memory_cap: a lower cut"
    assert merge_inference_settings(None, record) == dict(record, why="memory_cap: regular curves on the real cine")
    with pytest.raises(SystemExit, match="FIELD=VALUE with FIELD one of"):
        apply_inference_settings(loaded, ["no_such_field=1"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        apply_inference_settings(loaded, ["memory_cap"])


def test_class_weights_charge_the_weighted_class_more():
    """dice_ce with class_weights: an error on the up-weighted class costs more than the same error unweighted;
    all-ones weights give the plain loss; a wrong count is a clear configuration error."""
    from echosam.errors import ConfigError
    from training.losses import build_loss

    yy, xx = np.mgrid[:32, :32]
    r2 = (yy - 16) ** 2 + (xx - 16) ** 2
    truth = np.zeros((32, 32), np.int64)
    truth[r2 < 6 ** 2] = 1
    truth[(r2 >= 6 ** 2) & (r2 < 9 ** 2)] = 2                     # a ring around the cavity
    truth_t = torch.from_numpy(truth)[None, None]
    labelled = torch.ones(1, 1, dtype=torch.bool)
    onehot = np.eye(3)[truth].transpose(2, 0, 1)
    ring_half = onehot.copy()
    ring_half[2, :, 16:] = 0                                       # half the ring missed (called background)
    ring_half[0, :, 16:] = np.maximum(ring_half[0, :, 16:], onehot[2, :, 16:])
    logits = torch.from_numpy(np.where(ring_half > 0, 6.0, -6.0)).float()[None, None]
    plain = build_loss({"name": "dice_ce"})
    ones = build_loss({"name": "dice_ce", "class_weights": [1, 1, 1]})
    ring2 = build_loss({"name": "dice_ce", "class_weights": [1, 1, 2]})
    assert float(ones(logits, truth_t, labelled)) == pytest.approx(float(plain(logits, truth_t, labelled)), rel=1e-6)
    assert float(ring2(logits, truth_t, labelled)) > float(plain(logits, truth_t, labelled)) + 0.02
    with pytest.raises(ConfigError, match="class_weights needs 3"):
        build_loss({"name": "dice_ce", "class_weights": [1, 2]})(logits, truth_t, labelled)


def _disc_clip(radii, shape=32):
    """One clip (1, T, 1, S, S) of sharp sigmoid logits for discs of the given radii, and its (1, T, S, S) truth."""
    yy, xx = np.mgrid[:shape, :shape]
    r2 = (yy - shape // 2) ** 2 + (xx - shape // 2) ** 2
    masks = np.stack([(r2 < r ** 2) for r in radii]).astype(np.int64)
    return torch.from_numpy(np.where(masks == 1, 12.0, -12.0)).float()[None, :, None], torch.from_numpy(masks)[None]


def test_area_curve_term_sees_a_squeezed_cycle_and_not_a_uniform_scale():
    from training.losses import area_curve_error, clip_areas

    def curve(logits, truth, labelled):
        return area_curve_error(clip_areas(logits, truth, labelled), like=logits)

    _, truth = _disc_clip([10, 9, 7, 6])                         # "ED" to "ES"
    labelled = torch.ones(1, 4, dtype=torch.bool)
    exact, _ = _disc_clip([10, 9, 7, 6])
    scaled, _ = _disc_clip([11, 9.9, 7.7, 6.6])                  # every frame 21 % too large: same curve
    squeezed, _ = _disc_clip([9.5, 8.8, 7.3, 6.5])               # ED too small, ES too large
    assert float(curve(exact, truth, labelled)) < 0.01
    assert float(curve(scaled, truth, labelled)) < 0.03
    assert float(curve(squeezed, truth, labelled)) > 0.08
    squeezed.requires_grad_(True)
    curve(squeezed, truth, labelled).backward()
    g = squeezed.grad[0, :, 0]
    assert float(g[0].sum()) < 0 < float(g[3].sum())             # grow the ED frame, shrink the ES frame
    one = torch.tensor([[True, False, False, False]])
    assert float(curve(squeezed.detach(), truth, one)) == 0.0    # one frame has no curve


def test_dice_per_clip_weighs_a_thin_structure_as_much_as_a_large_one():
    from echosam.errors import ConfigError
    from training.losses import build_loss

    big_lg, big = _disc_clip([12, 12])
    big_lg[0, :, 0, 4, 4] = 12.0                                  # a large structure, almost exact
    yy, xx = np.mgrid[:32, :32]
    r2 = (yy - 16) ** 2 + (xx - 16) ** 2
    ring = ((r2 >= 8 ** 2) & (r2 < 10 ** 2)).astype(np.int64)
    half = ring * (xx < 16)                                       # a thin ring drawn on one side only
    thin = torch.from_numpy(np.stack([ring, ring]))[None]
    thin_lg = torch.from_numpy(np.where(np.stack([half, half]) == 1, 12.0, -12.0)).float()[None, :, None]
    logits, masks = torch.cat([big_lg, thin_lg]), torch.cat([big, thin])
    labelled = torch.ones(2, 2, dtype=torch.bool)
    pooled = build_loss({"name": "memsam", "dice_weight": 1.0})(logits, masks, labelled)
    per_clip = build_loss({"name": "memsam", "dice_weight": 1.0, "dice_per": "clip"})(logits, masks, labelled)
    assert float(per_clip) == pytest.approx(0.5 * (1 / 3), abs=0.02)   # the ring's Dice 2/3 counts for half
    assert float(pooled) < 0.5 * float(per_clip)
    with pytest.raises(ConfigError, match="dice_per"):
        build_loss({"name": "memsam", "dice_per": "frame"})(logits, masks, labelled)
