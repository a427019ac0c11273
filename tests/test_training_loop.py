"""The training loop on phantom cines with the real tiny models: the loss falls, resume is exact,
exported weights load in the engine, evaluation writes the papers' tables."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from echosam.checkpoints import load_checkpoint  # noqa: E402
from training.config import load_config  # noqa: E402
from training.train import Trainer  # noqa: E402


def _cfg(tmp_path, name, family="memsam", sets=()):
    base = [f"name={name}", f"model.family={family}", "model.preset=tiny", "model.trainable=all",
            "data.dataset=phantom", "data.n_frames=16", "data.size=64", "data.num_workers=0",
            "train.device=cpu", "train.progress=false", "train.batch_size=1", "optim.lr=0.001",
            f"output.dir={tmp_path / name}"]
    if family == "memsam":
        base += ["data.structures=[lv]", "loss.name=memsam"]
    else:
        base += ["data.structures=[lv,myo,la]", "loss.name=dice_ce", "data.clip_frames=5", "data.supervision=full"]
    return load_config(None, base + list(sets))


def test_loss_falls_on_phantom(tmp_path):
    cfg = _cfg(tmp_path, "fall", sets=["data.splits={train: {seed: 0, n_cases: 1}}", "data.augment=false", "optim.lr=0.002",
                                       "data.supervision=full", "train.epochs=14", "train.val_every=0"])
    summary = Trainer(cfg).run()
    steps = np.loadtxt(tmp_path / "fall" / "steps.csv", delimiter=",", skiprows=1)
    loss = steps[:, 2]
    assert summary["global_step"] == 14 and len(loss) == 14
    assert loss[-3:].mean() < 0.9 * loss[:3].mean()             # observed ~0.81 (0.80 -> 0.65)
    assert np.polyfit(np.arange(len(loss)), loss, 1)[0] < 0
    assert (tmp_path / "fall" / "curves.png").stat().st_size > 1000


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_is_exact(tmp_path):
    common = ["data.splits={train: {seed: 0, n_cases: 3}, val: {seed: 777, n_cases: 1}}", "train.epochs=2",
              "data.supervision=semi",                            # augmentation on: its RNG must resume too
              "loss.memory_zoom=0.2"]                             # and the memory-mask jitter's draws
    full = Trainer(_cfg(tmp_path, "full", sets=common + ["train.stop_after_steps=5"])).run()
    assert full["global_step"] == 5
    first = Trainer(_cfg(tmp_path, "part", sets=common + ["train.stop_after_steps=2"])).run()
    assert first["global_step"] == 2 and first["epoch"] == 0       # stopped mid-epoch
    Trainer(_cfg(tmp_path, "nozoom", sets=common + ["train.stop_after_steps=2", "loss.memory_zoom=0"])).run()
    zoomed, plain = _weights(tmp_path / "part" / "last.pt"), _weights(tmp_path / "nozoom" / "last.pt")
    assert any(not torch.equal(zoomed[k], plain[k]) for k in zoomed)   # the jitter reaches training
    resumed = Trainer(_cfg(tmp_path, "part", sets=common + ["train.stop_after_steps=5"]),
                      resume=tmp_path / "part" / "last.pt").run()
    assert resumed["global_step"] == 5 and resumed["epoch"] == 1
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    init = Trainer(_cfg(tmp_path, "init", sets=common)).model.state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a)         # training changed the weights...
    for k in a:                                                   # ...and the resumed run matches bit for bit
        assert torch.equal(a[k], b[k]), k
    rows = (tmp_path / "part" / "steps.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]


def test_export_loads_in_engine_and_evaluates(tmp_path):
    from training.datasets import ClipDataset, PhantomSource
    from training.evaluate import evaluate, main as eval_main

    cfg = _cfg(tmp_path, "exp", sets=["data.splits={train: {seed: 0, n_cases: 2}, val: {seed: 321, n_cases: 1}}",
                                      "train.epochs=1"])
    summary = Trainer(cfg).run()
    loaded = load_checkpoint(summary["best"])
    assert loaded.family == "memsam" and loaded.classes == ["lv"]
    prov = loaded.meta["provenance"]
    assert prov["steps"] == 2 and prov["data"]["dataset"] == "phantom" and "best_val_dice" in prov["metrics"]
    ds = ClipDataset(PhantomSource(n_cases=2, seed=4242, n_frames=16, size=48), classes=["lv"], train=False,
                     supervision="full")
    res = evaluate(loaded, ds, progress=False)
    n = sum(len(set(ds[i]["indices"].tolist())) for i in range(2))  # every distinct frame of each clip is scored
    assert len(res["per_frame"]) == n and n >= 12
    d = np.array([r["dice"] for r in res["per_frame"]])
    assert ((0 <= d) & (d <= 1)).all() and res["summary"][0]["frames"] == n
    assert [r["case"] for r in res["ef_rows"]] == ["phantom_004242", "phantom_004243"]
    out = tmp_path / "eval"
    assert eval_main(["--model", summary["best"], "--data", "phantom:seed=4242,n_cases=2,n_frames=16,size=48",
                      "--out", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "| lv |" in md and "Dice (%)" in md and "predicted vs dataset EF" in md
    assert (out / "per_frame.csv").read_text().count("\n") == n + 1
    # a model that does not exist: one line that names it, not a traceback
    with pytest.raises(SystemExit) as e:
        eval_main(["--model", str(tmp_path / "nope.safetensors"), "--data", "phantom:seed=1,n_cases=1", "--out", str(out)])
    assert "training.evaluate:" in str(e.value) and "nope" in str(e.value)


@pytest.mark.parametrize("family", ["masam", "medivista"])
def test_prompt_free_family_trains(tmp_path, family):
    if importlib.util.find_spec(f"echosam.models.{family}") is None:
        pytest.fail(f"echosam.models.{family} is missing")
    cfg = _cfg(tmp_path, family, family=family,
               sets=["data.splits={train: {seed: 0, n_cases: 2}, val: {seed: 99, n_cases: 1}}", "train.epochs=2",
                     "optim.name=adamw", "optim.lr=0.0008", "optim.weight_decay=0.1", "optim.schedule=warmup_poly",
                     "optim.warmup_iters=2"])
    tr = Trainer(cfg)
    assert tr.sched.get_last_lr()[0] == pytest.approx(0.0008 / 2)   # warm-up from lr / warmup_iters
    summary = tr.run()
    assert summary["global_step"] == 4 and 0.0 <= summary["best_val_dice"] <= 1.0
    loaded = load_checkpoint(summary["final"])
    assert loaded.classes == ["lv", "myo", "la"] and loaded.family == family


def test_every_frame_prompts_follow_each_frame():
    """Prompt pre-training: each frame's prompt is that frame's own box; a frame without the structure
    keeps a valid prompt (P constant) but loses its supervision."""
    from training.datasets.clips import every_frame_prompts, mask_box

    masks = np.zeros((3, 32, 32), np.int64)
    masks[0, 4:10, 5:20] = 1
    masks[1, 12:30, 2:9] = 1                                     # frame 2: structure absent
    labelled = np.array([True, True, True])
    boxes, pts, labs = every_frame_prompts(masks, labelled, "myo", False, np.random.default_rng(0), {"box": 1.0})
    assert np.allclose(boxes[0], mask_box(masks[0] == 1)) and np.allclose(boxes[1], mask_box(masks[1] == 1))
    assert np.allclose(boxes[2], boxes[0]) and labelled.tolist() == [True, True, False]
    # the myocardium's box carries its exclude point at the box centre (echosam.structures)
    assert pts.shape == (3, 1, 2) and labs.tolist() == [[0], [0], [0]]
    assert np.allclose(pts[1, 0], [(boxes[1][0] + boxes[1][2]) / 2, (boxes[1][1] + boxes[1][3]) / 2])


def test_prompt_pretraining_bf16_on_cpu_learns(tmp_path):
    """data.prompt.every_frame: every frame is decoded from its own box (no memory); CPU bf16 autocast
    trains (the loss falls) and the exported weights decode a box in the engine."""
    cfg = _cfg(tmp_path, "prompt", sets=["data.splits={train: {seed: 0, n_cases: 1}}", "data.augment=false",
                                         "optim.lr=0.002", "data.supervision=full", "train.epochs=12",
                                         "train.val_every=0", "train.precision=bf16", "data.clip_frames=4",
                                         "data.prompt={box: 1.0, every_frame: true}"])
    summary = Trainer(cfg).run()
    steps = np.loadtxt(tmp_path / "prompt" / "steps.csv", delimiter=",", skiprows=1)
    assert summary["global_step"] == 12
    assert steps[-3:, 2].mean() < 0.9 * steps[:3, 2].mean()
    loaded = load_checkpoint(tmp_path / "prompt" / "final.safetensors")
    assert loaded.prompted


def test_fine_tune_applies_overrides_to_the_initial_checkpoint(tmp_path):
    from echosam.checkpoints import save_checkpoint
    from echosam.errors import CheckpointError
    from echosam.models.registry import build_model

    torch.manual_seed(0)
    start = build_model("memsam", preset="tiny")
    init = save_checkpoint(start, "memsam", start.config, tmp_path / "start.safetensors", classes=["lv"])
    # A behaviour switch in model.overrides reaches the fine-tuned model; the weights start as saved.
    tr = Trainer(_cfg(tmp_path, "ft", sets=[f"model.init_checkpoint={init}", "model.overrides={sensory_memory: false}",
                                            "data.splits={train: {seed: 0, n_cases: 1}}", "train.epochs=1"]))
    assert tr.model.config.sensory_memory is False and start.config.sensory_memory is True
    ref = start.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in tr.model.state_dict().items())
    summary = tr.run()
    assert load_checkpoint(summary["final"]).config.sensory_memory is False
    # An override that changes the checkpoint's shapes is refused, naming the file and what to do.
    with pytest.raises(CheckpointError, match="change the architecture of init_checkpoint"):
        Trainer(_cfg(tmp_path, "bad", sets=[f"model.init_checkpoint={init}", "model.overrides={key_dim: 12}",
                                            "data.splits={train: {seed: 0, n_cases: 1}}"]))


def test_fine_tune_at_another_input_size_resizes_only_the_position_tables(tmp_path):
    """model.overrides.sam.img_size may differ from init_checkpoint's (a finer mask for thin walls): the encoder's
    absolute and global-attention relative position tables are resized bilinearly, every other weight starts as
    saved, and the run trains and exports a checkpoint at the new size that the engine loads."""
    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model
    from echosam.models.sam import resize_pos_embed, resize_rel_pos

    torch.manual_seed(0)
    start = build_model("memsam", preset="tiny")
    assert start.config.sam.img_size == 64
    init = save_checkpoint(start, "memsam", start.config, tmp_path / "start.safetensors", classes=["lv"])
    tr = Trainer(_cfg(tmp_path, "big", sets=[f"model.init_checkpoint={init}", "model.overrides={sam: {img_size: 96}}",
                                             "data.splits={train: {seed: 0, n_cases: 1}}", "train.epochs=1"]))
    ref, got = start.state_dict(), tr.model.state_dict()
    resized = [k for k in ref if ref[k].shape != got[k].shape]
    assert resized and all(k.startswith("image_encoder.") and k.endswith(("pos_embed", "rel_pos_h", "rel_pos_w"))
                           for k in resized)
    for k in resized:  # each table grew with the token grid (96 / 64) and holds the bilinear resize of the saved one
        want = got[k].shape[1] if k.endswith("pos_embed") else got[k].shape[0]
        have = ref[k].shape[1] if k.endswith("pos_embed") else ref[k].shape[0]
        assert want > have
        expect = resize_pos_embed(ref[k], want) if k.endswith("pos_embed") else resize_rel_pos(ref[k], want)
        assert torch.equal(got[k], expect), k
    assert all(torch.equal(ref[k], got[k]) for k in ref if k not in resized)
    summary = tr.run()
    loaded = load_checkpoint(summary["final"])
    assert loaded.config.sam.img_size == 96 and loaded.model.img_size == 96


def test_decoder_only_fine_tune_leaves_encoder_and_memory_bit_identical(tmp_path):
    """model.trainable as a list of modules: a key-frame decoder fine-tune changes the prompt encoder and the mask
    decoder only; the exported checkpoint's encoder and memory are the initial ones, bit for bit."""
    from echosam.checkpoints import save_checkpoint
    from echosam.models.registry import build_model

    torch.manual_seed(0)
    start = build_model("memsam", preset="tiny")
    init = save_checkpoint(start, "memsam", start.config, tmp_path / "start.safetensors", classes=["lv"])
    tr = Trainer(_cfg(tmp_path, "dec", sets=[f"model.init_checkpoint={init}", "model.trainable=[prompt_encoder, mask_decoder]",
                                             "data.splits={train: {seed: 0, n_cases: 1}}", "train.epochs=1"]))
    trainable = {n.split(".")[0] for n, p in tr.model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_encoder", "mask_decoder"}
    ref = {k: v.clone() for k, v in start.state_dict().items()}
    got = load_checkpoint(tr.run()["final"]).model.state_dict()
    frozen = [k for k in ref if not k.startswith(("prompt_encoder.", "mask_decoder."))]
    assert any(k.startswith("image_encoder.") for k in frozen) and any(k.startswith("memory.") for k in frozen)
    assert [k for k in frozen if not torch.equal(ref[k], got[k])] == []
    assert any(not torch.equal(ref[k], got[k]) for k in ref if k.startswith("mask_decoder."))


def test_trainable_list_naming_no_module_is_refused(tmp_path):
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="names no parameters of this model: \\['decoder'\\].*mask_decoder"):
        Trainer(_cfg(tmp_path, "bad", sets=["model.trainable=[decoder]", "data.splits={train: {seed: 0, n_cases: 1}}"]))
