"""A prompted model's companion (`echosam.companion`): a prompt-free model's probabilities averaged into the
prompted model's on frames read from boxes or points, never on frames propagated from a mask, never adding a
region; saved and reloaded with the session; a companion that cannot run leaves the prompted model alone."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from echosam.checkpoints import save_checkpoint
from echosam.companion import Companion, FanReading, keep_overlapping, read_fan
from echosam.errors import ModelError
from echosam.fan import FanRegion
from echosam.models.memsam import MemSAMConfig
from echosam.session import Session
from echosam.session.persistence import SessionDamagedError
from scipy import ndimage

from test_hysteresis import memsam, ph  # noqa: F401 (fixtures: a small phantom and a tiny MemSAM)
from tiny_models import tiny_loaded
from training.datasets.clips import mask_box

KEYS = ("lv", "myo")


def truth_companion(ph, weight=0.5):
    """A companion that knows the phantom's truth: probability 1 inside each structure, 0 outside."""
    return Companion("truth", weight, {k: np.where(ph.labels == i, 255, 0).astype(np.uint8)
                                       for i, k in enumerate(KEYS, 1)})


def boxed(ph, memsam, companion, correction=None):
    s = Session(ph.cine, memsam, structures=KEYS, companion=companion)
    for i, k in enumerate(KEYS, 1):
        s.add_box(0, k, tuple(float(v) for v in mask_box(ph.labels[0] == i)))
    s.propagate()
    if correction is not None:
        for i, k in enumerate(KEYS, 1):
            s.set_mask(3, k, correction == i)
        s.propagate()
    return s


def own_masks(s, key, t):
    import torch
    return torch.sigmoid(s.transform.to_frame(s.results.logits[key][t])).numpy() >= s.threshold


def test_frames_read_from_a_box_average_in_the_companion(ph, memsam):
    """With a companion that is the truth (1 inside, 0 outside) at weight 0.5, a pixel is a structure's exactly
    where the truth has it (0.5 * own + 0.5 passes 0.5; 0.5 * own alone cannot), kept where that truth overlaps
    the model's own mask, so each frame is an oracle computed from the truth and the model's own masks."""
    s, alone = boxed(ph, memsam, truth_companion(ph)), boxed(ph, memsam, None)
    assert s.companion.model == "truth" and alone.companion is None
    changed = 0
    for t in range(ph.cine.n_frames):
        want = np.zeros_like(ph.labels[t])
        for i, k in enumerate(KEYS, 1):
            truth = ph.labels[t] == i
            if (truth & own_masks(s, k, t)).any():          # each structure is one region in the phantom
                assert ndimage.label(truth, np.ones((3, 3)))[1] == 1
                want[truth] = i
        assert np.array_equal(s.labels[t], want), t
        changed += int(not np.array_equal(alone.labels[t], want))
    assert changed >= 3                                      # the tiny random model alone is far from the truth


def test_frames_propagated_from_a_correction_are_the_model_alone(ph, memsam):
    fix = np.where(ph.labels[3] <= len(KEYS), ph.labels[3], 0)
    s, alone = boxed(ph, memsam, truth_companion(ph), fix), boxed(ph, memsam, None, fix)
    assert np.array_equal(s.labels[3], fix)                 # the locked frame: the user's masks bit for bit
    for t in (4, 5):                                        # propagated from the correction: the model alone
        assert np.array_equal(s.labels[t], alone.labels[t]), t
        assert not any(s.companion.applies(s.prompts, k, s.results.signature(k, t)) for k in KEYS)
    for t in (1, 2):                                        # still read from the boxes: averaged
        assert all(s.companion.applies(s.prompts, k, s.results.signature(k, t)) for k in KEYS)
    assert any(not np.array_equal(s.labels[t], alone.labels[t]) for t in (0, 1, 2))


def test_the_companion_never_adds_a_region(ph, memsam):
    """A companion sure of an LV in a corner the model never marks: the blend there passes the threshold, and
    the region is dropped because it overlaps nothing of the model's own LV."""
    probs = {k: np.zeros(ph.labels.shape, np.uint8) for k in KEYS}
    probs["lv"][:, :6, :6] = 255
    s = boxed(ph, memsam, Companion("corner", 0.5, probs))
    assert not any(own_masks(s, "lv", t)[:6, :6].any() for t in range(1, 6))
    assert not (s.labels[1:, :6, :6] == 1).any()
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = mask[5:7, 5:7] = True
    own = np.zeros_like(mask)
    own[6, 6] = True
    assert np.array_equal(keep_overlapping(mask, own), mask & (np.arange(8)[:, None] > 3))


def test_a_saved_session_reloads_with_its_companion(ph, memsam, tmp_path):
    s = boxed(ph, memsam, truth_companion(ph, weight=0.3))
    s.save(tmp_path / "session")
    meta = json.loads((tmp_path / "session" / "session.json").read_text())
    assert meta["companion"] == {"model": "truth", "weight": 0.3}
    back = Session.load(tmp_path / "session", ph.cine, memsam)
    assert back.companion.weight == 0.3 and np.array_equal(back.labels, s.labels)
    assert all(np.array_equal(back.companion.probs[k], s.companion.probs[k]) for k in KEYS)
    for x in (s, back):                      # a correction after reloading draws as it would have before saving
        x.set_mask(2, "myo", ph.labels[2] == 2)
        x.propagate()
    assert np.array_equal(back.labels, s.labels)
    with np.load(tmp_path / "session" / "results.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["companion_lv"] = arrays["companion_lv"][:, :10]
    np.savez_compressed(tmp_path / "session" / "results.npz", **arrays)
    with pytest.raises(SessionDamagedError, match="companion_lv"):
        Session.load(tmp_path / "session", ph.cine, memsam)


def test_bad_companions_are_refused_with_what_is_wrong(ph, memsam):
    for spec, words in (({"model": "", "weight": 0.5}, "companion"), ({"model": "m", "weight": 1.0}, "weight"),
                        ({"model": "m"}, "weight"), ("masam", "companion")):
        with pytest.raises(ModelError, match=words):
            MemSAMConfig(companion=spec)
    wrong = Companion("small", 0.5, {"lv": np.zeros((6, 10, 10), np.uint8)})
    with pytest.raises(Exception, match="do not match the cine"):
        Session(ph.cine, memsam, structures=KEYS, companion=wrong)
    with pytest.raises(Exception, match="needs no prompt"):
        Session(ph.cine, tiny_loaded("masam"), companion=truth_companion(ph))


def test_a_companion_read_on_the_fan_lands_on_any_crop(ph, tmp_path):
    """`read_fan` runs the named prompt-free model on the fan's crop; a zoom inside the fan gets the same values
    on its own pixels, and a model asking for a file that is not there runs alone with a notice."""
    masam = tiny_loaded("masam")
    path = save_checkpoint(masam.model, "masam", masam.config, tmp_path / "masam_tiny", classes=["lv", "myo", "la"])
    prompted = tiny_loaded("memsam", companion={"model": str(path), "weight": 0.5})
    fan = FanRegion.whole_frame(ph.cine.frames.shape[1:])
    notes: list = []
    second = read_fan(prompted, fan, fan.crop_cine(ph.cine), list(KEYS), notify=notes.append)
    assert isinstance(second, FanReading) and "reads the loop too" in notes[-1]
    on_fan = second.on(fan)
    assert on_fan.probs["lv"].shape == ph.labels.shape and on_fan.probs["lv"].dtype == np.uint8
    mask = np.zeros(ph.labels.shape[1:], bool)
    mask[10:40, 20:60] = True
    zoom = FanRegion.from_mask(mask, "user")
    assert np.array_equal(second.on(zoom).probs["myo"], on_fan.probs["myo"][:, 10:40, 20:60])
    gone = dataclasses.replace(prompted, config=dataclasses.replace(
        prompted.config, companion={"model": str(tmp_path / "gone.safetensors"), "weight": 0.5}))
    assert read_fan(gone, fan, fan.crop_cine(ph.cine), list(KEYS), notify=notes.append) is None
    assert "could not run" in notes[-1] and "runs alone" in notes[-1]


def box_mask(mask):
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    out = np.zeros_like(mask)
    out[y0:y1 + 1, x0:x1 + 1] = True
    return out


SEED = 4300011         # an apical four-chamber loop no training set used (training seeds: 0-479, 100000-100199)


def test_segment_averages_the_bundled_prompt_free_model_into_memsam(tmp_path):
    """The issue's protocol through `echosam segment` on a simulated screen capture, with the bundled MemSAM asking
    for the bundled MA-SAM: run.json records the companion, every structure stays in the fan and follows the truth
    far better than the frame-0 box copied to every frame, the labels differ from MemSAM alone (``--no-companion``;
    which is better is a question for hundreds of loops, bench/companion_eval.py, not one), and `echosam correct`
    reloads the companion and locks the corrected frame exactly."""
    from echosam.checkpoints import load_model
    from echosam.cli import main
    from echosam.io import read_labels
    from echosam.metrics import dice
    from sim_fixtures import screen_capture_dicom

    path, screen = screen_capture_dicom(tmp_path, SEED, n_frames=16, height=160)
    bundled = load_model("echosam-sim-memsam-small")
    config = dataclasses.replace(bundled.config, companion={"model": "echosam-sim-masam-small", "weight": 0.5})
    model = save_checkpoint(bundled.model, "memsam", config, tmp_path / "memsam_with_companion",
                            classes=list(bundled.classes))
    boxes = [f"--box={k}:" + ",".join(str(int(v)) for v in mask_box(screen.labels[0] == i))
             for i, k in ((1, "lv"), (2, "myo"), (3, "la"))]
    scores, drawn = {}, {}
    for name, extra in (("with", []), ("alone", ["--no-companion"])):
        out = tmp_path / name
        assert main(["-q", "segment", str(path), "-o", str(out), "--model", str(model), "--device", "cpu",
                     "--structures", "lv,myo,la", "--no-ef-check", "--no-overlay"] + boxes + extra) == 0
        labels = read_labels(out / "labels.seq.nrrd")[0]
        assert not labels[:, ~screen.fan].any()
        run = json.loads((out / "run.json").read_text())
        assert run["companion"] == ({"model": "echosam-sim-masam-small", "weight": 0.5} if name == "with" else None)
        scores[name] = [dice(labels == i, screen.labels == i) for i in (1, 2, 3)]
        drawn[name] = labels
    copied = [dice(np.broadcast_to(box_mask(screen.labels[0] == i), screen.labels.shape), screen.labels == i)
              for i in (1, 2, 3)]
    assert all(m > c + 0.05 and m > 0.8 for m, c in zip(scores["with"], copied)), (scores, copied)
    assert (drawn["with"] != drawn["alone"]).mean() > 0.001
    k = 9
    np.save(tmp_path / "fix.npy", (screen.labels[k] == 1).astype(np.uint8))
    before = read_labels(tmp_path / "with" / "labels.seq.nrrd")[0]
    assert main(["-q", "correct", str(tmp_path / "with"), "--mask", str(tmp_path / "fix.npy"), "--frame", str(k),
                 "--cine", str(path), "--device", "cpu"]) == 0
    fixed = read_labels(tmp_path / "with" / "labels.seq.nrrd")[0]
    assert np.array_equal(fixed[k] == 1, screen.labels[k] == 1) and np.array_equal(fixed[:k], before[:k])
    saved = json.loads((tmp_path / "with" / "session" / "session.json").read_text())
    assert saved["companion"] == {"model": "echosam-sim-masam-small", "weight": 0.5}


def test_a_blended_cavity_has_no_hole_while_the_connected_region_rule_is_on(ph, memsam):
    """A companion unsure of a patch inside the LV would leave a hole there (0.5 * own + 0 < 0.5): a cavity's holes
    are filled, as the connected-region rule fills them; with the rule off (``keep_connected=False``) they stay."""
    comp = truth_companion(ph)
    ys, xs = np.nonzero(ph.labels[0] == 1)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    comp.probs["lv"][0, cy - 1:cy + 2, cx - 1:cx + 2] = 0            # a 3 x 3 patch in the middle of the boxed LV
    drawn = {}
    for rule in (True, False):
        s = Session(ph.cine, memsam, structures=KEYS, companion=comp, keep_connected=rule)
        for i, k in enumerate(KEYS, 1):
            s.add_box(0, k, tuple(float(v) for v in mask_box(ph.labels[0] == i)))
        s.propagate()
        drawn[rule] = s.labels[0] == 1
    patch = np.zeros_like(drawn[True])
    patch[cy - 1:cy + 2, cx - 1:cx + 2] = True
    assert drawn[True][patch].all() and np.array_equal(drawn[True], ndimage.binary_fill_holes(drawn[True]))
    assert drawn[True].any() and not drawn[False][patch].any()
