"""The heart zoom (`echosam.heart_zoom`): a prompt-free model's second, magnified reading where the heart is small."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from echosam.errors import ModelError
from echosam.heart_zoom import heart_extent, zoom_box, zoom_problem

ZOOM = {"margin": 0.05, "min": 1.15, "max": 2.0}     # the bundled MediViSTA's (docs/evaluation.md)


def test_the_zoom_box_keeps_the_frame_aspect_holds_the_heart_and_stays_inside():
    H, W = 150, 200
    extent = (80, 30, 119, 89)                       # 40 x 60 pixels, off centre
    z = zoom_box(extent, (H, W), margin=0.1, min_zoom=1.15, max_zoom=4.0)
    x0, y0, x1, y1 = z.box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    assert abs(w / h - W / H) < 0.02                  # evenly magnified: the heart's shape is the model's
    assert z.factor == pytest.approx(W / w) and z.factor == pytest.approx(H / h, rel=0.02)
    # the limiting side (height) holds the extent grown by the margin; everything inside the frame
    assert h >= 60 * 1.2 - 1 and x0 <= 80 and x1 >= 119 and y0 <= 30 - 5 and y1 >= 89 + 5
    assert 0 <= x0 and 0 <= y0 and x1 < W and y1 < H
    capped = zoom_box(extent, (H, W), margin=0.1, min_zoom=1.15, max_zoom=1.5)
    assert capped.factor == pytest.approx(1.5, rel=0.02)
    near_edge = zoom_box((0, 0, 39, 59), (H, W), margin=0.1, min_zoom=1.15, max_zoom=2.0)
    assert near_edge.box[:2] == (0, 0)               # pushed back inside, not centred off the frame


def test_a_heart_that_fills_the_frame_gets_no_second_reading():
    assert zoom_box((5, 5, 190, 140), (150, 200), margin=0.05, min_zoom=1.0, max_zoom=2.0) is None
    assert zoom_box(None, (150, 200), margin=0.05, min_zoom=1.0, max_zoom=2.0) is None
    # an extent of 100 px grown by 5 % per side needs 110 of 120 px: x1.09, under a min of 1.15, over one of 1.05
    assert zoom_box((10, 10, 109, 109), (120, 120), margin=0.05, min_zoom=1.15, max_zoom=2.0) is None
    assert zoom_box((10, 10, 109, 109), (120, 120), margin=0.05, min_zoom=1.05, max_zoom=2.0).factor == \
        pytest.approx(120 / 110, rel=0.01)


def test_a_stray_blob_does_not_stretch_the_heart():
    seen = np.zeros((100, 120), bool)
    seen[20:70, 40:80] = True                           # the heart
    seen[90:93, 5:8] = True                             # a stray far away
    assert heart_extent(seen) == (40, 20, 79, 69)
    assert heart_extent(np.zeros((10, 10), bool)) is None


@pytest.mark.parametrize("spec", [{"margin": 0.1, "max": 2.0}, {"margin": -0.1, "min": 1.1, "max": 2.0},
                                  {"margin": 0.1, "min": 0.9, "max": 2.0}, {"margin": 0.1, "min": 1.5, "max": 1.2},
                                  {"margin": True, "min": 1.1, "max": 2.0}, "0.1/2",
                                  {"margin": 0.1, "min": 1.1, "max": 2.0, "x": 1}])
def test_bad_heart_zoom_settings_are_refused(spec):
    from echosam.models.medivista import MediViSTAConfig

    assert zoom_problem(spec)
    with pytest.raises(ModelError, match="heart_zoom"):
        MediViSTAConfig(heart_zoom=spec)
    assert zoom_problem({}) is None and zoom_problem(ZOOM) is None


@pytest.fixture(scope="module")
def deep():
    from sim_fixtures import deep_loop

    return deep_loop()


@pytest.fixture(scope="module")
def medivista():
    from echosam.checkpoints import load_model

    loaded = load_model("echosam-sim-medivista-small", device="cpu")
    loaded.config = dataclasses.replace(loaded.config, heart_zoom=ZOOM)
    return loaded


def test_a_deep_loop_is_read_again_magnified_around_the_heart(deep, medivista):
    """The bundled MediViSTA on a deep fan: the second reading's labels are exactly those of the magnified rectangle
    read on its own, background outside it, and they follow the truth; off, one reading of the whole frame."""
    from echosam.cine import Cine
    from echosam.consistency import keep_connected_labels
    from echosam.metrics import dice
    from echosam.session import Session
    from echosam.session.prompt_free import auto_labels

    cine = Cine.from_array(deep.frames, spacing=deep.spacing, fps=deep.fps, name="deep")
    s = Session(cine, medivista, structures=["lv", "myo", "la"])
    labels = s.segment_auto()
    z = s.auto_zoom
    assert z is not None and 1.15 <= z.factor <= 2.0 + 1e-6
    x0, y0, x1, y1 = z.box
    inside = np.zeros(labels.shape[1:], bool)
    inside[y0:y1 + 1, x0:x1 + 1] = True
    assert not labels[:, ~inside].any()
    keys = ["lv", "myo", "la"]
    alone = auto_labels(medivista, s.grey[:, y0:y1 + 1, x0:x1 + 1], keys, grow=s.results.grow,
                        tidy=lambda lab: keep_connected_labels(lab, keys))
    assert np.array_equal(labels[:, y0:y1 + 1, x0:x1 + 1], alone)
    assert np.mean([dice(labels[t] == 1, deep.labels[t] == 1) for t in range(len(labels))]) > 0.85
    off = Session(cine, medivista, structures=keys, heart_zoom=False)
    whole = off.segment_auto()
    assert off.auto_zoom is None
    assert np.array_equal(whole, auto_labels(medivista, off.grey, keys, grow=off.results.grow,
                                             tidy=lambda lab: keep_connected_labels(lab, keys)))
    assert (whole != labels).any()


def test_segment_records_the_zoom_and_no_zoom_reads_once(deep, medivista, tmp_path, capsys):
    """`echosam segment` with a prompt-free model asking for the zoom: the notice, run.json's box and factor, the
    saved session's setting; ``--no-zoom``: one reading, recorded as none."""
    from echosam.checkpoints import save_checkpoint
    from echosam.cine import Cine
    from echosam.cli import main
    from echosam.io import write_cine

    path = write_cine(Cine.from_array(deep.frames, spacing=deep.spacing, fps=deep.fps, name="deep"),
                      tmp_path / "deep.seq.nrrd")
    model = save_checkpoint(medivista.model, "medivista", medivista.config, tmp_path / "zoomed",
                            classes=list(medivista.classes))
    for name, extra in (("zoomed", []), ("once", ["--no-zoom"])):
        out = tmp_path / name
        assert main(["segment", str(path), "-o", str(out), "--model", str(model), "--device", "cpu",
                     "--structures", "lv,myo,la", "--region", "off", "--no-overlay"] + extra) == 0
        run = json.loads((out / "run.json").read_text())
        said = "".join(capsys.readouterr())
        if name == "zoomed":
            assert run["heart_zoom"]["factor"] >= 1.15 and len(run["heart_zoom"]["box"]) == 4
            assert "read the loop a second time, magnified" in said and "around it" in said
            assert json.loads((out / "session" / "session.json").read_text())["heart_zoom"] is True
        else:
            assert run["heart_zoom"] is None and "magnified" not in said
