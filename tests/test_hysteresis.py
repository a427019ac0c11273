"""Hysteresis growth of a thin structure's mask (`echosam.hysteresis`): only unclaimed pixels, only connected to
the structure's own mask, never a locked mask, and a config that asks for anything else is refused."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from echosam.errors import ModelError, PromptError
from echosam.hysteresis import grow_into_free
from echosam.models.memsam import MemSAMConfig
from echosam.phantom import make_phantom
from echosam.session import Session
from tiny_models import tiny_loaded


def test_growth_takes_only_unclaimed_pixels_connected_to_the_mask():
    labels = np.zeros((12, 16), np.uint8)
    labels[2:10, 2:6] = 1                      # a cavity
    labels[2:10, 6:8] = 2                      # the wall beside it
    prob = np.full(labels.shape, 0.1, np.float32)
    prob[2:10, 8:10] = 0.35                    # a halo outside the wall: connected, unclaimed
    prob[3:6, 4:6] = 0.45                      # inside the cavity: claimed by it
    prob[1, 8] = 0.4                           # touches the wall only diagonally (8-connected)
    prob[0:2, 13:15] = 0.4                     # a separate blob: not connected
    prob[10:12, 9] = 0.25                      # connected but under the low threshold
    want = labels.copy()
    want[2:10, 8:10] = 2
    want[1, 8] = 2
    out = grow_into_free(labels.copy(), 2, prob, 0.3)
    assert np.array_equal(out, want)
    assert np.array_equal(grow_into_free(np.zeros_like(labels), 2, prob, 0.3), np.zeros_like(labels))  # no seed


@pytest.fixture(scope="module")
def ph():
    return make_phantom(n_frames=6, seed=2, size=(64, 72), heart_rate=90)


@pytest.fixture(scope="module")
def memsam():
    return tiny_loaded("memsam")


def _known_logits(s, t, seed):
    g = torch.Generator().manual_seed(seed)
    S = s.img_size
    for k in ("lv", "myo"):
        s.results.write(k, t, 2 * torch.randn(1, 1, S, S, generator=g), ("fwd", 0, 1))


def test_session_grows_the_myocardium_by_morphological_reconstruction(ph, memsam):
    plain = Session(ph.cine, memsam, structures=("lv", "myo"), grow=None)
    grown = Session(ph.cine, memsam, structures=("lv", "myo"), grow={"myo": 0.3})
    for s in (plain, grown):
        _known_logits(s, 3, seed=7)
    lg = grown.results.logits["myo"][3]
    p = torch.sigmoid(grown.transform.to_frame(lg)).numpy()
    base = plain.labels[3]
    seeds = base == 2
    # an independent oracle: reconstruction of the mask inside (mask | unclaimed pixels over the low threshold)
    reach = ndimage.binary_propagation(seeds, structure=np.ones((3, 3), bool), mask=seeds | ((base == 0) & (p >= 0.3)))
    want = base.copy()
    want[reach] = 2
    assert (want != base).sum() > 20                                   # the test exercises growth
    assert np.array_equal(grown.labels[3], want)
    assert np.array_equal(grown.labels[3] == 1, base == 1)             # the cavity (and so the EF) is untouched
    assert not (grown.labels[3] == 2)[(base == 0) & (p < 0.3)].any()


def _corrected(ph, lm, grow):
    s = Session(ph.cine, lm, structures=("lv", "myo"), grow=grow)
    s.set_mask(0, "lv", ph.labels[0] == 1)
    s.set_mask(0, "myo", ph.labels[0] == 2)
    s.set_mask(2, "lv", ph.labels[2] == 1)                              # a locked cavity on a propagated frame
    return s.propagate()


def test_locked_masks_stay_exact_and_growth_stays_out_of_them(ph, memsam):
    lab, base = _corrected(ph, memsam, {"myo": 0.05}), _corrected(ph, memsam, None)
    assert np.array_equal(lab[0] == 2, ph.labels[0] == 2)               # a locked mask is drawn as given
    assert np.array_equal(lab[2] == 1, ph.labels[2] == 1)               # growth never enters a locked mask
    assert np.array_equal(lab == 1, base == 1)                          # same cavities everywhere
    assert ((lab == 2) >= (base == 2)).all() and (lab == 2).sum() > (base == 2).sum()


@pytest.mark.parametrize("grow, words", [({"myo": 0.5}, "between 0 and the threshold"),
                                         ({"myo": 0.0}, "between 0 and the threshold"),
                                         ({"rv": 0.3}, "not structures"),
                                         ([0.3], "not a mapping")])
def test_a_bad_grow_setting_is_refused_with_what_is_wrong(ph, memsam, grow, words):
    with pytest.raises(ModelError, match=words):
        MemSAMConfig(grow_thresholds=grow)
    with pytest.raises(PromptError, match=words):
        Session(ph.cine, memsam, structures=("lv", "myo"), grow=grow)


def test_the_config_setting_is_what_a_session_uses(ph):
    lm = tiny_loaded("memsam", grow_thresholds={"myo": 0.3})
    assert Session(ph.cine, lm, structures=("lv", "myo")).results.grow == {"myo": 0.3}
    assert Session(ph.cine, lm, structures=("lv", "myo"), grow=None).results.grow == {}
    assert MemSAMConfig.from_dict(lm.config.to_dict()).grow_thresholds == {"myo": 0.3}


def test_a_saved_session_reloads_with_the_growth_it_was_drawn_with(ph, tmp_path):
    import json

    lm = tiny_loaded("memsam", grow_thresholds={"myo": 0.3})
    for name, grow, want in (("plain", None, {}), ("grown", "config", {"myo": 0.3})):
        s = Session(ph.cine, lm, structures=("lv", "myo"), grow=grow)
        s.set_mask(0, "lv", ph.labels[0] == 1)
        s.set_mask(0, "myo", ph.labels[0] == 2)
        s.propagate()
        s.save(tmp_path / name)
        assert Session.load(tmp_path / name, ph.cine, lm).results.grow == want
    meta = tmp_path / "grown" / "session.json"               # a session saved before growth existed: drawn without
    d = json.loads(meta.read_text())
    del d["grow"]
    meta.write_text(json.dumps(d))
    assert Session.load(tmp_path / "grown", ph.cine, lm).results.grow == {}


def test_the_bench_summary_pairs_each_loop_with_itself():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "myo_growth_eval.py"
    spec = importlib.util.spec_from_file_location("myo_growth_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"set": "a", "case": f"c{i}", "view": "a4c", "vote_myo": 0.5,
             "base": {"lv": 0.9, "myo": 0.70 + 0.01 * i, "la": 0.8},
             "grown": {"lv": 0.9, "myo": 0.71 + 0.01 * i, "la": 0.8}} for i in range(5)]
    table = bench.summary(rows)
    assert "| all | 5 | 0.720 | **0.730** | +0.0100 [+0.0100, +0.0100] | 5 |" in table
    assert "| a2c |" not in table                                      # no loops of that view: no row


@pytest.mark.parametrize("family", ["masam", "medivista"])
def test_a_prompt_free_model_grows_its_myocardium_into_background_only(ph, family):
    lm = tiny_loaded(family, grow_thresholds={"myo": 0.2})
    keys = ("lv", "myo", "la")
    plain = Session(ph.cine, lm, structures=keys, grow=None).segment_auto()
    grown = Session(ph.cine, lm, structures=keys).segment_auto()
    assert np.array_equal(grown == 1, plain == 1) and np.array_equal(grown == 3, plain == 3)
    assert ((grown == 2) >= (plain == 2)).all() and (plain[(grown == 2) & (plain != 2)] == 0).all()
    assert (grown == 2).sum() > (plain == 2).sum()
    with pytest.raises(ModelError, match="between 0 and the threshold 0.5"):
        tiny_loaded(family, grow_thresholds={"myo": 0.5})
