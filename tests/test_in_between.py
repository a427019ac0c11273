"""In-between frames (`echosam.session.in_between`): memory walks a blended timeline, results stay per frame.

Real tiny MemSAM (random weights) on a phantom cine; the reference is the same Session run on a cine that
holds the blended frames as real ones.
"""

import numpy as np
import pytest
import torch

from echosam.cine import Cine
from echosam.errors import ModelError, PromptError
from echosam.models.memsam import MemSAMConfig
from echosam.phantom import make_phantom
from echosam.session import Session
from echosam.session.in_between import (MAX_SUBSTEPS, MAX_WALKED_STEPS, blended_steps, check_substeps, n_steps,
                                        substeps_for)
from tiny_models import Counter, tiny_loaded

T = 9


def _loaded(family="memsam", **config):
    return tiny_loaded(family, **config)


@pytest.fixture(scope="module")
def ph():
    return make_phantom(n_frames=T, seed=2, size=(64, 72), heart_rate=90)


@pytest.fixture(scope="module")
def memsam():
    return _loaded()


def _click(mask):
    y, x = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    return [[float(x), float(y)]]


def _prompted(cine, lm, frame, labels, **kw):
    s = Session(cine, lm, structures=("lv", "myo"), **kw)
    for k, v in (("lv", 1), ("myo", 2)):
        s.add_points(frame, k, _click(labels == v), [1])
    return s


def assert_same_run(s, ref, k):
    """Session ``s`` on the cine equals ``ref`` on its blended timeline, read at every k-th frame: the logits
    to float rounding (the two encode different batches), and so the labels."""
    for key in s.structures:
        for t in range(s.n_frames):
            got, want = s.results.logits[key][t].float(), ref.results.logits[key][t * k].float()
            assert torch.allclose(got, want, atol=2e-3), (key, t, float((got - want).abs().max()))
    assert (s.labels != ref.labels[::k]).mean() < 1e-3


def test_blended_steps_are_exact_cross_fades():
    grey = np.stack([np.full((2, 3), v, np.float32) for v in (0, 90, 30)])
    full = blended_steps(grey, 3, 0, n_steps(3, 3))
    assert full.shape == (7, 2, 3) and n_steps(0, 3) == 0
    assert [float(f[0, 0]) for f in full] == [0, 30, 60, 90, 70, 50, 30]    # frame t at step 3t
    assert np.array_equal(blended_steps(grey, 3, 2, 5), full[2:5])          # any slice, made on demand
    odd = np.stack([np.zeros((1, 1)), np.full((1, 1), 255.0)]).astype(np.float32)
    assert float(blended_steps(odd, 2, 1, 2)[0, 0, 0]) == 128                 # rounded to a whole grey level
    assert np.array_equal(blended_steps(grey, 1, 0, 3), grey)


def test_substeps_follow_the_frame_rate_and_are_capped():
    assert [substeps_for(fps, 90) for fps in (10, 15, 30, 45, 89.9, 90, 120)] == [MAX_SUBSTEPS, 6, 3, 2, 2, 1, 1]
    assert substeps_for(15, 90, cap=MAX_WALKED_STEPS) == MAX_WALKED_STEPS == 4
    assert substeps_for(30, None) == 1 and substeps_for(0, 90) == 1
    assert check_substeps(2) == 2
    for bad in (0, MAX_SUBSTEPS + 1, "2", True, 1.5):
        with pytest.raises(PromptError, match="substeps must be an integer"):
            check_substeps(bad)
    with pytest.raises(PromptError, match="walks every step"):
        check_substeps(5, cap=MAX_WALKED_STEPS)
    for bad in (0, -30, "90", True):
        with pytest.raises(ModelError, match="substep_fps"):
            MemSAMConfig(substep_fps=bad)


def test_session_equals_a_run_on_the_blended_cine(ph, memsam):
    """Every frame, forward and backward of the key frame, is what the same session gives on a cine whose
    frames ARE the blended timeline, read at every k-th frame; the encoder sees each step once."""
    k, key = 2, 4
    encoder = Counter(memsam.model.image_encoder)
    s = _prompted(ph.cine, memsam, key, ph.labels[key], substeps=k, batch_size=32)
    got = s.propagate()
    assert s.substeps == k and s.features.n_frames == (T - 1) * k + 1 and encoder.n == 1
    assert got.shape == ph.labels.shape and s.done_frames["lv"] == list(range(T))
    timeline = blended_steps(ph.cine.frames, k, 0, (T - 1) * k + 1).astype(np.uint8)
    blended = Cine.from_array(timeline, spacing=ph.cine.spacing, fps=ph.cine.fps * k)
    ref = _prompted(blended, memsam, key * k, ph.labels[key], substeps=1)
    ref.propagate()
    assert_same_run(s, ref, k)
    plain = _prompted(ph.cine, memsam, key, ph.labels[key], substeps=1).propagate()
    assert np.array_equal(got[key], plain[key]) and not np.array_equal(got, plain)


def test_auto_takes_the_models_rate_and_a_prompt_free_model_refuses(ph):
    lm = _loaded(substep_fps=90.0)
    assert Session(ph.cine, lm, structures=("lv",)).substeps == 3              # 30 fps -> 90
    assert Session(ph.cine, lm, structures=("lv",), substeps=1).substeps == 1
    fast = Cine.from_array(ph.cine.frames, spacing=ph.cine.spacing, fps=120)
    assert Session(fast, lm, structures=("lv",)).substeps == 1
    slow = Cine.from_array(ph.cine.frames, spacing=ph.cine.spacing, fps=12)
    assert Session(slow, lm, structures=("lv",)).substeps == MAX_WALKED_STEPS          # a memory that walks steps
    with pytest.raises(PromptError, match="walks every step"):
        Session(slow, lm, structures=("lv",), substeps=5)
    neighbours_only = _loaded(substep_fps=90.0, memory_cap=0, sensory_memory=False, neighbour_channels=True)
    assert Session(slow, neighbours_only, structures=("lv",)).substeps == 8              # 12 fps -> 90: 7.5
    masam = _loaded("masam")
    assert Session(ph.cine, masam).substeps == 1
    with pytest.raises(PromptError, match="prompt-free"):
        Session(ph.cine, masam, substeps=2)


def test_corrections_and_saved_sessions_keep_the_timeline(ph, memsam, tmp_path):
    s = _prompted(ph.cine, memsam, 0, ph.labels[0], substeps=3)
    s.propagate()
    s.save(tmp_path / "sess")
    encoder = Counter(memsam.model.image_encoder)
    again = Session.load(tmp_path / "sess", ph.cine, memsam)                 # its saved timeline, not "auto"
    assert again.substeps == 3 and np.array_equal(again.labels, s.labels)
    truth = ph.labels[5] == 1
    for sess in (s, again):
        sess.set_mask(5, "lv", truth)
    out, out2 = s.propagate(), again.propagate()
    assert encoder.n == 0 and np.array_equal(out, out2)                        # restored features, same results
    assert np.array_equal(out[5] == 1, truth)                                  # the correction, bit for bit
    assert s.stale_frames("lv") == []


def test_a_memory_that_carries_nothing_encodes_only_the_frames(ph):
    """With no working memory and no sensory memory (the bundled MemSAM), a blended step cannot reach the next
    frame except as its neighbour: only the frames are encoded and decoded, each with neighbours one step away
    on the blended timeline; without the connected-region rule (its only other link) the labels equal a run
    on the blended cine, read at every k-th frame."""
    k = 3
    lm = tiny_loaded(memory_cap=0, sensory_memory=False, neighbour_channels=True)
    encoder = Counter(lm.model.image_encoder)
    s = _prompted(ph.cine, lm, 0, ph.labels[0], substeps=k, keep_connected=False, batch_size=32)
    got = s.propagate()
    assert s.features.n_frames == T and s.propagator.steps == 1 and encoder.n == 1
    timeline = blended_steps(ph.cine.frames, k, 0, (T - 1) * k + 1).astype(np.uint8)
    blended = Cine.from_array(timeline, spacing=ph.cine.spacing, fps=ph.cine.fps * k)
    ref = _prompted(blended, lm, 0, ph.labels[0], substeps=1, keep_connected=False)
    ref.propagate()
    assert_same_run(s, ref, k)
    plain = _prompted(ph.cine, lm, 0, ph.labels[0], substeps=1, keep_connected=False).propagate()
    assert not np.array_equal(got, plain)                                      # the neighbours changed
    # nothing of a propagated frame is kept, so skipping its value encoding changes no number
    values = Counter(lm.model.memory.value_encoder)
    written = _prompted(ph.cine, lm, 0, ph.labels[0], substeps=k, keep_connected=False, batch_size=32)
    written.propagator.carries = True                                          # encode and drop every value
    written.propagate()
    assert values.n == 2 * (2 + T - 2)          # per structure: the key frame twice, then frames 1..T-2 as pending
    skipped = _prompted(ph.cine, lm, 0, ph.labels[0], substeps=k, keep_connected=False, batch_size=32)
    skipped.propagate()
    assert values.n == 2 * (2 + T - 2) + 2 * 2 and skipped.propagator.carries is False   # the key frame's alone
    for key in s.structures:
        assert all(torch.equal(s.results.logits[key][t], written.results.logits[key][t]) for t in range(T))
