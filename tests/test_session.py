"""Session: prompts, propagation, corrections, locked frames, cancel, undo, save/load.

Real tiny MemSAM / MediViSTA models (random weights) on phantom cines with exact masks.
"""
import json

import numpy as np
import pytest
import torch

from echosam.checkpoints import LoadedModel
from echosam.errors import CancelledError, CheckpointError, CineError, PromptError
from echosam.models.registry import build_model, preset_config
from echosam.phantom import make_phantom
from echosam.progress import CancelToken
from echosam.session import Session, auto_labels
from tiny_models import Counter, tiny_loaded

T = 14


def _loaded(family="memsam", seed=0):
    return tiny_loaded(family, seed)


@pytest.fixture(scope="module")
def ph():
    return make_phantom(n_frames=T, seed=1, size=(64, 72), heart_rate=90)


@pytest.fixture(scope="module")
def memsam():
    lm = _loaded("memsam")
    lm.decoder_calls = Counter(lm.model.mask_decoder.transformer)
    lm.encoder_calls = Counter(lm.model.image_encoder)
    return lm


def _click(mask):
    yx = np.argwhere(mask)
    y, x = yx[len(yx) // 2]
    return [[float(x), float(y)]]


def _session(ph, lm, structures=("lv", "myo"), **kw):
    s = Session(ph.cine, lm, structures=structures, **kw)
    for k, lab in (("lv", 1), ("myo", 2)):
        if k in s.structures:
            s.add_points(0, k, _click(ph.labels[0] == lab), [1])
    return s


def test_first_pass_encodes_once_and_labels_are_valid(ph, memsam):
    enc0, dec0 = memsam.encoder_calls.n, memsam.decoder_calls.n
    s = _session(ph, memsam, batch_size=5)
    lab = s.propagate()
    assert lab.shape == ph.labels.shape and lab.dtype == np.uint8
    assert set(np.unique(lab)) <= {0, 1, 2}
    assert memsam.encoder_calls.n - enc0 == 3                      # ceil(14 / 5) batches, once
    # per structure: the prompt decoder, the key frame again from memory (MemSAM's loop), 13 memory frames
    assert memsam.decoder_calls.n - dec0 == 2 * (T + 1)
    assert s.done_frames == {"lv": list(range(T)), "myo": list(range(T))}
    s.propagate()                                                  # nothing stale: no work at all
    assert memsam.encoder_calls.n - enc0 == 3 and memsam.decoder_calls.n - dec0 == 2 * (T + 1)


def _released_loop_logits(lm, images, point):
    """MemSAM's per-video loop written out with the model's verbs (models.md §1.2): the click's logits
    seed memory (bootstrap, deep update on), frame 0 is predicted from memory and becomes the permanent
    entry, then every frame is read from memory and appended to it. -> [(1,1,S,S)] per frame."""
    from echosam.models.memory import MemoryBank

    m, S = lm.model, lm.config.sam.img_size
    with torch.no_grad():
        feats = m.encode(images)
        f0, img0 = feats.index(0), images[:1]
        pts = torch.tensor([[[(point[0] + 0.5) * S / images_w - 0.5, (point[1] + 0.5) * S / images_h - 0.5]]])
        boot = m.decode_prompt(f0, points=pts, point_labels=torch.ones(1, 1, dtype=torch.int64))
        bank, hidden = MemoryBank(None), m.init_hidden(1)
        v, hidden = m.encode_value(img0, f0, boot, hidden, deep_update=True)
        bank.add(f0.key, f0.shrinkage, v, permanent=True)
        out0, hidden = m.segment_from_memory(f0, bank, hidden)
        bank = MemoryBank(None)
        v, hidden = m.encode_value(img0, f0, out0, hidden)
        bank.add(f0.key, f0.shrinkage, v, permanent=True)
        outs = [out0]
        for t in range(1, len(images)):
            ft = feats.index(t)
            if t > 1:
                v, hidden = m.encode_value(images[t - 1:t], feats.index(t - 1), outs[-1], hidden)
                bank.add(feats.index(t - 1).key, feats.index(t - 1).shrinkage, v)
            lg, hidden = m.segment_from_memory(ft, bank, hidden)
            outs.append(lg)
    return outs


images_h, images_w = 64, 72


def test_propagation_follows_the_released_loop(ph, memsam):
    s = _session(ph, memsam, keep_connected=False)     # the released loop has no connected-region rule
    lab = s.propagate()
    images = memsam.model.prepare_frames(torch.from_numpy(ph.cine.frames.astype(np.float32)))
    logits = {k: _released_loop_logits(memsam, images, _click(ph.labels[0] == v)[0])
              for k, v in (("lv", 1), ("myo", 2))}
    for k in ("lv", "myo"):                                        # stored logits = the loop written out
        for t in range(T):
            got = s.results.logits[k][t].float()
            assert torch.allclose(got, logits[k][t][0, 0], atol=2e-2, rtol=1e-2), (k, t)


def test_labels_follow_highest_probability(ph, memsam):
    """Composition rule on known logits: per pixel the most probable structure, if >= threshold."""
    s = Session(ph.cine, memsam, structures=("lv", "myo"))
    S, (H, W) = s.img_size, ph.labels.shape[1:]
    g = torch.Generator().manual_seed(3)
    logits = {k: 3 * torch.randn(1, 1, S, S, generator=g) for k in ("lv", "myo")}
    for k in ("lv", "myo"):
        s.results.write(k, 5, logits[k], ("fwd", 0, 1))
    p = np.stack([torch.sigmoid(torch.nn.functional.interpolate(logits[k].half().float(), size=(H, W),
                                                                mode="bilinear", align_corners=False))[0, 0].numpy()
                  for k in ("lv", "myo")])
    want = np.where(p.max(0) >= s.threshold, np.array([1, 2])[p.argmax(0)], 0)
    assert set(np.unique(want)) == {0, 1, 2} and np.array_equal(s.labels[5], want)


def test_correction_locks_frame_and_reruns_only_its_segment(ph, memsam):
    s = _session(ph, memsam)
    s.add_points(10, "lv", _click(ph.labels[10] == 1), [1])        # key frames 0 and 10
    before = s.propagate()
    k = 5
    truth = ph.labels[k] == 1
    enc0, dec0 = memsam.encoder_calls.n, memsam.decoder_calls.n
    s.set_mask(k, "lv", truth)
    assert s.stale_frames("lv") == list(range(k, 10))
    after = s.propagate()
    assert memsam.encoder_calls.n == enc0                          # never re-encodes
    assert memsam.decoder_calls.n - dec0 == 10 - k - 1             # frames 6..9 only (the mask needs no decoder)
    assert np.array_equal(after[k] == 1, truth)                    # locked frame = the user's mask, bit for bit
    assert s.locked_frames["lv"] == [k]
    assert np.array_equal(after[:k], before[:k]) and np.array_equal(after[10:], before[10:])
    assert any(not np.array_equal(after[t] == 1, before[t] == 1) for t in range(k + 1, 10))
    # later prompts elsewhere never overwrite the locked frame
    s.add_points(2, "lv", _click(ph.labels[2] == 1), [1])
    s.add_box(12, "myo", (5, 5, 60, 55))
    again = s.propagate()
    assert np.array_equal(again[k] == 1, truth)


def test_undo_restores_prompts_and_labels(ph, memsam):
    s = _session(ph, memsam)
    first = s.propagate()
    prompts = s.prompts_to_dict()["prompts"]
    s.set_mask(6, "lv", ph.labels[6] == 1)
    second = s.propagate()
    assert not np.array_equal(first, second)
    assert s.undo()
    assert np.array_equal(s.labels, first)
    assert s.prompts_to_dict()["prompts"] == prompts
    assert s.done_frames["lv"] == list(range(T)) and s.locked_frames["lv"] == []
    dec0 = memsam.decoder_calls.n
    assert np.array_equal(s.propagate(), first) and memsam.decoder_calls.n == dec0


def test_cancel_keeps_finished_frames_and_resumes(ph, memsam):
    ref = _session(ph, memsam).propagate()
    s = _session(ph, memsam)
    token = CancelToken()
    seen = []

    def progress(done, total, msg=""):
        seen.append(done)
        if done == 20:                                             # all 14 LV frames + 6 myocardium frames
            token.cancel()

    with pytest.raises(CancelledError):
        s.propagate(progress=progress, cancel=token)
    done = s.done_frames
    assert len(done["lv"]) == T and len(done["myo"]) == 6
    for t in done["myo"]:                                          # finished frames already hold their result
        assert np.array_equal(s.labels[t], ref[t])
    assert s.stale_frames("myo") == sorted(set(range(T)) - set(done["myo"]))
    dec0 = memsam.decoder_calls.n
    token.reset()
    out = s.propagate(cancel=token)
    assert memsam.decoder_calls.n - dec0 == 2 * T - (len(done["lv"]) + len(done["myo"]))   # only what was left
    assert np.array_equal(out, ref)                                # same result as an uninterrupted run


def test_memory_stays_bounded_on_a_long_cine():
    long = make_phantom(n_frames=90, seed=2, size=(48, 48), noise=0.3)
    lm = _loaded("memsam", seed=1)
    s = Session(long.cine, lm, structures=("lv",), memory_cap=4, batch_size=30)
    s.add_points(0, "lv", _click(long.labels[0] == 1), [1])
    s.propagate()
    assert s.peak_memory_entries == 5                              # key frame + 4 working frames
    assert s.done_frames["lv"] == list(range(90))


def test_bad_inputs_raise_and_leave_state_unchanged(ph, memsam):
    s = _session(ph, memsam, structures=("lv", "myo"))
    s.set_mask(4, "lv", ph.labels[4] == 1)
    s.propagate()
    state = (json.dumps(s.prompts_to_dict()), s.labels.copy(), s.undo_steps)
    H, W = ph.labels.shape[1:]
    bad = [
        lambda: s.add_points(1, "lv", [[W + 3, 5]], [1]),          # point outside
        lambda: s.add_points(1, "lv", [[3, -2]], [1]),
        lambda: s.add_points(1, "lv", [[3, 3]], [2]),               # bad label
        lambda: s.add_points(1, "lv", [[3, 3], [4, 4]], [1]),       # label count
        lambda: s.add_points(1, "lv", [[3, 3]], [0]),               # exclude only
        lambda: s.add_box(1, "lv", (5, 5, W + 10, 20)),             # box outside
        lambda: s.add_box(1, "lv", (5, 5, 5, 20)),                  # degenerate
        lambda: s.set_mask(1, "lv", np.ones((H + 1, W), bool)),     # wrong shape
        lambda: s.set_mask(T, "lv", ph.labels[0] == 1),             # no such frame
        lambda: s.set_mask(-1, "lv", ph.labels[0] == 1),
        lambda: s.set_mask(2, "lv", np.zeros((H, W), bool)),        # empty mask
        lambda: s.set_mask(4, "myo", ph.labels[4] >= 1),            # overlaps the locked LV mask
        lambda: s.add_points(4, "lv", [[3, 3]], [1]),               # locked frame
        lambda: s.add_points(1, "la", [[3, 3]], [1]),               # structure not in the session
        lambda: s.add_points(1, "aorta", [[3, 3]], [1]),            # unknown structure
        lambda: s.load_prompts_dict({"format": "nope"}),
    ]
    for fn in bad:
        with pytest.raises(PromptError):
            fn()
        assert json.dumps(s.prompts_to_dict()) == state[0]
        assert np.array_equal(s.labels, state[1]) and s.undo_steps == state[2]


def test_prompt_free_model_refuses_prompts_and_seeds_memsam(ph, memsam):
    mv = _loaded("medivista")
    auto = Session(ph.cine, mv)
    with pytest.raises(PromptError):
        auto.add_points(0, "lv", [[10, 10]], [1])
    lab = auto.segment_auto()
    assert lab.shape == ph.labels.shape and set(np.unique(lab)) <= {0, 1, 2, 3}
    with pytest.raises(PromptError):
        Session(ph.cine, memsam).segment_auto()
    s = Session(ph.cine, memsam, structures=("lv", "myo"))
    seeded = s.seed_from_auto(0, auto=ph.labels)                   # a label map works as the source too
    assert seeded == ["lv", "myo"] and s.locked_frames == {"lv": [], "myo": []}
    assert s.seed_frames == {"lv": [0], "myo": [0]}
    out = s.propagate()
    assert np.array_equal(out[0] == 1, ph.labels[0] == 1)          # the seed is the key frame's result
    s.add_points(0, "lv", _click(ph.labels[0] == 1), [1])          # a user prompt replaces the seed
    assert s.seed_frames["lv"] == []
    # a prompt-free model as the source: it runs on the clip window around the frame (frames 0..9 here);
    # with seed 0 the random-weight tiny MediViSTA finds an LV on frame 0, so the seed is exactly that mask
    window = auto_labels(mv, ph.cine.frames[:mv.config.clip_frames], ["lv", "myo", "la"])[0]
    assert (window == 1).sum() > 50
    s2 = Session(ph.cine, memsam, structures=("lv",))
    assert s2.seed_from_auto(0, auto=mv) == ["lv"]
    assert s2.seed_frames["lv"] == [0] and s2.locked_frames["lv"] == []
    assert np.array_equal(s2.prompts.get("lv", 0).mask, window == 1)
    s3 = Session(ph.cine, memsam, structures=("lv",))              # no LV on the source frame: a clear error
    with pytest.raises(PromptError, match="found none"):
        s3.seed_from_auto(0, auto=np.zeros_like(ph.labels))
    assert s3.seed_frames["lv"] == []
    # the labels of the seed frame alone (echosam.seeding: a seed made on the fan, cropped to the session)
    assert s3.seed_from_auto(2, auto=ph.labels[2]) == ["lv"]
    assert np.array_equal(s3.prompts.get("lv", 2).mask, ph.labels[2] == 1)
    with pytest.raises(PromptError, match="do not match"):
        s3.seed_from_auto(2, auto=ph.labels[2][:-1])


def test_prompts_dict_round_trip(ph, memsam):
    s = _session(ph, memsam)
    s.add_box(3, "myo", (4, 4, 50, 40))
    s.set_mask(7, "lv", ph.labels[7] == 1)
    d = json.loads(json.dumps(s.prompts_to_dict()))
    s2 = Session(ph.cine, memsam, structures=("lv", "myo"))
    s2.load_prompts_dict(d)
    assert s2.prompts_to_dict() == s.prompts_to_dict()             # versions kept: results stay comparable
    assert s2.key_frames == {"lv": [0, 7], "myo": [0, 3]} and s2.locked_frames == {"lv": [7], "myo": []}
    e = s2.prompts.get("myo", 3)
    assert e.box == (4.0, 4.0, 50.0, 40.0) and e.points == [] and e.mask is None
    assert np.array_equal(s2.prompts.get("lv", 7).mask, ph.labels[7] == 1)
    out = s2.propagate()
    assert np.array_equal(out[7] == 1, ph.labels[7] == 1)          # the locked mask, bit for bit
    assert s2.undo() and s2.key_frames == {"lv": [], "myo": []}    # loading was one undo step


def test_clear_old_points_replaces_one_frame_prompt_without_reloading_the_store(ph, memsam):
    s = _session(ph, memsam)
    s.set_mask(7, "lv", ph.labels[7] == 1)
    other = s.prompts.get("lv", 7)
    v0 = s.prompts.get("lv", 0).version
    assert s.add_new_points_or_box(0, "lv", [[20, 20], [30, 30]], [1, 0], box=(10, 10, 40, 40))
    e = s.prompts.get("lv", 0)
    assert e.points == [(20.0, 20.0), (30.0, 30.0)] and e.labels == [1, 0] and e.box == (10.0, 10.0, 40.0, 40.0)
    assert e.version > v0 and s.prompts.get("lv", 7) is other      # the other entries are untouched objects
    steps = s.undo_steps
    assert not s.add_new_points_or_box(0, "lv", [[20, 20], [30, 30]], [1, 0], box=(10, 10, 40, 40))
    assert s.prompts.get("lv", 0).version == e.version and s.undo_steps == steps   # same prompt: no change
    assert s.add_new_points_or_box(0, "lv", [[25, 25]], [1])       # clear_old_points: the box goes too
    e2 = s.prompts.get("lv", 0)
    assert e2.points == [(25.0, 25.0)] and e2.box is None
    s.add_new_points_or_box(0, "lv", [[26, 26]], [0], clear_old_points=False)
    assert s.prompts.get("lv", 0).points == [(25.0, 25.0), (26.0, 26.0)]
    with pytest.raises(PromptError, match="locked"):
        s.add_new_points_or_box(7, "lv", [[25, 25]], [1])


def test_save_load_reuses_embeddings_and_checks_fingerprints(ph, memsam, tmp_path):
    s = _session(ph, memsam)
    s.propagate()
    s.save(tmp_path / "sess")
    enc0 = memsam.encoder_calls.n
    s2 = Session.load(tmp_path / "sess", ph.cine, memsam)
    assert np.array_equal(s2.labels, s.labels) and s2.done_frames == s.done_frames
    s.set_mask(8, "lv", ph.labels[8] == 1)
    s2.set_mask(8, "lv", ph.labels[8] == 1)
    assert np.array_equal(s2.propagate(), s.propagate())
    assert memsam.encoder_calls.n == enc0
    other = make_phantom(n_frames=T, seed=4, size=(64, 72), heart_rate=90)
    with pytest.raises(CineError):
        Session.load(tmp_path / "sess", other.cine, memsam)
    with pytest.raises(CheckpointError):
        Session.load(tmp_path / "sess", ph.cine, _loaded("memsam", seed=7))
    with pytest.raises(PromptError):
        Session.load(tmp_path / "nothing", ph.cine, memsam)


def test_propagator_refuses_structures_it_was_not_trained_for(ph):
    torch.manual_seed(0)
    cfg = preset_config("memsam", "tiny")          # classes ["lv"], like the bundled demo MemSAM
    lm = LoadedModel(build_model("memsam", cfg).eval(), "memsam", cfg, {}, None, "cpu")
    with pytest.raises(PromptError, match="trained to propagate lv only, not myo"):
        Session(ph.cine, lm, structures=("lv", "myo"))
    assert Session(ph.cine, lm, structures=("lv",)).structures == ["lv"]


def test_session_runs_the_fast_path(ph):
    from segment_anything.modeling.image_encoder import Attention

    lm = _loaded("memsam", seed=5)
    s = Session(ph.cine, lm, structures=("lv",))
    attn = [m for m in lm.model.modules() if isinstance(m, Attention)]
    assert attn and all(getattr(m, "_echosam_fast", False) for m in attn)   # SDPA with the rel-pos bias
    with pytest.raises(PromptError, match="precision"):
        Session(ph.cine, lm, precision="int8")
    assert s.precision == "auto"
