"""The loop lengths users bring: one frame and a thousand frames, with the bundled demo weights."""
import numpy as np
import pytest

from echosam.checkpoints import load_model
from echosam.phantom import make_phantom
from echosam.session import Session


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def _centre_click(mask):
    ys, xs = np.nonzero(mask)
    return [[float(xs.mean()), float(ys.mean())]]


def test_thousand_frames_keep_tracking_with_flat_memory():
    ph = make_phantom(n_frames=1000, size=(64, 64), seed=11)          # 40 beats, not a training seed
    s = Session(ph.cine, load_model("echosam-demo-memsam-tiny"), structures=["lv"], memory_cap=8)
    s.add_points(0, "lv", _centre_click(ph.labels[0] == 1), [1])
    lab = s.propagate()
    late = [_dice(lab[t] == 1, ph.labels[t] == 1) for t in range(900, 1000, 7)]
    assert min(late) > 0.9                                              # no drift after 900 frames
    assert s.peak_memory_entries == 1 + 8                               # key frame + capped working memory


@pytest.mark.parametrize("model", ["echosam-demo-memsam-tiny", "echosam-demo-masam-tiny",
                                   "echosam-demo-medivista-tiny"])
def test_one_frame_cine(model):
    ph = make_phantom(n_frames=1, size=(80, 72), seed=12)
    loaded = load_model(model)
    s = Session(ph.cine, loaded, structures=["lv"])
    if s.prompted:
        s.add_points(0, "lv", _centre_click(ph.labels[0] == 1), [1])
        lab = s.propagate()
    else:
        lab = s.segment_auto()
    assert lab.shape == (1, 80, 72)
    assert _dice(lab[0] == 1, ph.labels[0] == 1) > 0.85
