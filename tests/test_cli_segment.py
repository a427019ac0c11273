"""`echosam segment / report / correct / demo` end to end on a small phantom with tiny saved models,
through the real entry point (`echosam.cli.main`, the console script's target) and `echosam.pipeline`."""
import json

import numpy as np
import pytest
import torch

from echosam import cardiac, cli, pipeline
from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.io import read_labels, write_cine, write_labels
from echosam.models.registry import build_model, preset_config
from echosam.phantom import make_phantom
from echosam.report import format_summary
from training.datasets.clips import mask_box


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ph = make_phantom(n_frames=12, seed=3, size=(64, 64), heart_rate=100)
    write_cine(ph.cine, d / "cine.seq.nrrd")
    torch.manual_seed(0)
    for fam in ("memsam", "medivista"):
        cfg = preset_config(fam, "tiny")
        cfg.classes = ["lv", "myo", "la"]
        save_checkpoint(build_model(fam, cfg), fam, cfg, d / f"{fam}.safetensors")
    write_labels(ph.labels, ph.cine, d / "truth.seq.nrrd")
    return d, ph


def _run(argv):
    return cli.main(argv)


def test_segment_report_correct(data, capsys):
    d, ph = data
    out = d / "out"
    yx = np.argwhere(ph.labels[0] == 1)
    y, x = yx[len(yx) // 2]
    rc = _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(out), "--model", str(d / "memsam.safetensors"),
               "--points", f"{x},{y},1", "--formats", "seq.nrrd,nii.gz", "--device", "cpu", "--quiet"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert {"labels.seq.nrrd", "labels.nii.gz", "overlay.mp4", "report.json", "report.csv", "lv_curve.png",
            "run.json", "session"} <= names
    lab, lcine = read_labels(out / "labels.seq.nrrd")
    assert lab.shape == ph.labels.shape and lcine.same_grid(ph.cine)
    # the printed summary and report.json are the cardiac analysis of the labels written (whatever the
    # random-weight model found): same status, same EF, and the terminal shows that summary
    res = cardiac.analyse(lab, ph.cine.spacing, ph.cine.frame_times, frames=ph.cine.frames, predicted=True)
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["status"] == res.status
    if np.isfinite(res.ef_percent):
        assert summary["ef_percent"] == pytest.approx(res.ef_percent, abs=1e-3)
    else:                                                          # no EF: null (or NaN) in the JSON
        assert summary["ef_percent"] is None or np.isnan(summary["ef_percent"])
    assert format_summary(res).splitlines()[0] in capsys.readouterr().out

    # correct: the truth mask on frame 4, re-propagated from the saved session, no encoder call
    loaded = load_checkpoint(d / "memsam.safetensors")
    calls = []
    loaded.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    s = pipeline.correct(out, d / "truth.seq.nrrd", 4, "lv", loaded=loaded)
    assert calls == []
    new, _ = read_labels(out / "labels.seq.nrrd")
    assert np.array_equal(new[4] == 1, ph.labels[4] == 1)
    assert np.array_equal(new[:4], lab[:4])
    assert any(not np.array_equal(new[t], lab[t]) for t in range(5, 12))
    assert s.locked_frames["lv"] == [4]
    run = json.loads((out / "run.json").read_text())
    assert run["corrections"][0]["frame"] == 4
    assert not [p for p in d.iterdir() if p.name.startswith(".")]        # no temp folders left
    # the CLI verb itself (loads the model from run.json)
    assert _run(["correct", str(out), "--mask", str(d / "truth.seq.nrrd"), "--frame", "8", "--device", "cpu",
                 "--quiet"]) == 0
    again, _ = read_labels(out / "labels.seq.nrrd")
    assert np.array_equal(again[8] == 1, ph.labels[8] == 1) and np.array_equal(again[4] == 1, ph.labels[4] == 1)

    # report on existing labels (the phantom truth): EF agrees with the phantom
    rep = d / "rep"
    assert _run(["report", str(d / "truth.seq.nrrd"), "-o", str(rep)]) == 0
    summary = json.loads((rep / "report.json").read_text())["summary"]
    assert summary["ef_percent"] == pytest.approx(ph.true_ef, abs=2.0)


def test_prompt_free_and_errors(data, capsys):
    d, ph = data
    out = d / "auto"
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(out), "--model", str(d / "medivista.safetensors"),
                 "--structures", "lv,myo,la", "--no-overlay", "--quiet"]) == 0
    lab, _ = read_labels(out / "labels.seq.nrrd")
    assert lab.shape == ph.labels.shape and set(np.unique(lab)) <= {0, 1, 2, 3}
    # a prompt-free result takes no correction: a clear message, the outputs untouched
    before = (out / "labels.seq.nrrd").read_bytes()
    assert _run(["correct", str(out), "--mask", str(d / "truth.seq.nrrd"), "--frame", "2", "--quiet"]) == 2
    assert "prompt-free" in capsys.readouterr().err and (out / "labels.seq.nrrd").read_bytes() == before

    # MemSAM without a prompt or seed model: clear error, exit 2, nothing written
    bad = d / "bad"
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(bad), "--model", str(d / "memsam.safetensors"),
                 "--quiet"]) == 2
    assert "no prompt" in capsys.readouterr().err and not bad.exists()
    # a point outside the image
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(bad), "--model", str(d / "memsam.safetensors"),
                 "--points", "500,3,1", "--quiet"]) == 2
    assert "outside" in capsys.readouterr().err and not bad.exists()
    # prompts to a prompt-free model
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(bad), "--model", str(d / "medivista.safetensors"),
                 "--box", "1,1,20,20", "--quiet"]) == 2
    assert not bad.exists()
    # a seed model that is not a model file: clear error, nothing written
    rc = _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(bad), "--model", str(d / "memsam.safetensors"),
               "--seed-model", str(d / "truth.seq.nrrd"), "--quiet"])
    assert rc == 2 and not bad.exists()
    # correct on a folder that is not a segment output
    assert _run(["correct", str(d), "--mask", str(d / "truth.seq.nrrd"), "--frame", "1"]) == 2


def test_one_prompt_per_structure_and_what_is_refused(data, capsys):
    """--box/--points name their structure ('myo:...'; unnamed: the first of --structures); each structure gets
    its own key frame. A name outside --structures, two boxes for one structure or an unknown name: exit 2,
    one line that says what to write, nothing written."""
    d, ph = data
    box = {k: tuple(int(v) for v in mask_box(ph.labels[0] == lab)) for k, lab in (("lv", 1), ("myo", 2), ("la", 3))}
    text = {k: ",".join(map(str, b)) for k, b in box.items()}
    out = d / "three"
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(out), "--model", str(d / "memsam.safetensors"),
                 "--structures", "lv,myo,la", "--box", text["lv"], "--box", f"myo:{text['myo']}",
                 "--box", f"LA:{text['la']}", "--no-overlay", "--quiet", "--device", "cpu"]) == 0
    info = json.loads((out / "report.json").read_text())["info"]
    assert info["key_frames"] == {"lv": [0], "myo": [0], "la": [0]} and info["calibrated"] is True
    assert "pixel spacing" not in capsys.readouterr().err              # an NRRD carries its spacing

    bad = d / "refused"
    cases = [(["--box", f"myo:{text['myo']}"], "--structures lv,myo"),
             (["--structures", "lv,myo", "--box", text["lv"], "--box", f"lv:{text['lv']}"], "Two --box values for lv"),
             (["--box", f"heart:{text['lv']}"], "'heart' is not a structure"),
             (["--points", "myo:10,10,1"], "which this run does not segment")]
    for extra, says in cases:
        assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(bad), "--model", str(d / "memsam.safetensors"),
                     "--quiet"] + extra) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and not bad.exists(), (extra, err)


def test_demo_with_bundled_weights(tmp_path, capsys):
    """`make demo`: the bundled demo MemSAM on an unseen phantom meets the issue's bar (LV Dice >= 0.85)."""
    import re

    assert _run(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    dice = float(re.search(r"mean LV Dice vs phantom truth: ([0-9.]+)", out).group(1))
    est, true = map(float, re.search(r"EF estimated ([0-9.]+) % vs true ([0-9.]+) %", out).groups())
    assert dice >= 0.85
    assert abs(est - true) < 8.0
    for name in ("labels.seq.nrrd", "report.json", "report.csv", "lv_curve.png", "overlay.mp4"):
        assert (tmp_path / "demo" / name).is_file(), name


@pytest.mark.parametrize("where", ["global", "subcommand", "both"])
def test_quiet_anywhere_silences_progress_and_is_never_reset(data, capsys, where):
    """`echosam -q segment ...` and `echosam segment -q ...` both run without progress bars."""
    d, _ = data
    argv = ["segment", str(d / "cine.seq.nrrd"), "-o", str(d / f"quiet-{where}"), "--model",
            str(d / "medivista.safetensors"), "--structures", "lv,myo,la", "--no-overlay"]
    argv = {"global": ["-q"] + argv, "subcommand": argv + ["-q"], "both": ["-q"] + argv + ["--quiet"]}[where]
    assert _run(argv) == 0
    err = capsys.readouterr().err
    assert "it/s" not in err and "%|" not in err
    args = cli.build_parser().parse_args(argv)
    assert args.quiet is True


def test_progress_callback_follows_quiet(data, monkeypatch):
    """Without -q the pipeline gets a live progress callback (tqdm hides itself off a terminal), with -q none."""
    from echosam.progress import no_progress

    d, _ = data
    seen = {}
    real = pipeline.segment_cine

    def spy(*a, **kw):
        seen["progress"] = kw["progress"]
        return real(*a, **kw)
    monkeypatch.setattr(pipeline, "segment_cine", spy)
    base = ["segment", str(d / "cine.seq.nrrd"), "--model", str(d / "medivista.safetensors"), "--no-overlay"]
    assert _run(base + ["-o", str(d / "loud")]) == 0 and seen["progress"] is not no_progress
    assert _run(["-q"] + base + ["-o", str(d / "quiet")]) == 0 and seen["progress"] is no_progress


def test_cancel_is_not_a_user_error(monkeypatch, capsys):
    """CancelledError is its own branch: not an EchoSAMError/ValueError, exit 130 with 'cancelled'."""
    from echosam.errors import CancelledError, EchoSAMError

    assert not issubclass(CancelledError, (EchoSAMError, ValueError))

    def cancelled(**kw):
        raise CancelledError("Cancelled by the user.")
    monkeypatch.setattr(pipeline, "report_labels", lambda *a, **k: cancelled())
    assert _run(["report", "x.seq.nrrd", "-o", "out"]) == cli.EXIT_INTERRUPTED
    assert "cancelled" in capsys.readouterr().err


def test_a_model_with_a_known_ef_error_says_it_next_to_the_ef(data, tmp_path, capsys):
    """The EF error a bundled model made on held-out loops (``training.package_demo`` reads it from the
    evaluation tables into the checkpoint) travels to report.json and the terminal with every EF."""
    from training.loop_eval import table
    from training.package_demo import ef_accuracy_rows
    from echosam.report import ef_accuracy_note

    d, ph = data
    rows = [{"method": "mine", "case": f"c{i}", "view": v, "dice_lv": 0.9, "dice_myo": 0.8, "dice_la": 0.85,
             "dice_lv_es": 0.9, "hd95_lv_mm": 4.0, "ef_error": e, "ed_frame_err": 1.0, "es_frame_err": 1.0}
            for i, (v, e) in enumerate([("a4c", -6.0), ("a2c", -2.0), ("a4c", float("nan"))])]
    md = table(rows, "heldout (3 loops)") + "\n" + table(rows[:2], "simus (2 loops)") + table(
        [dict(r, method="other") for r in rows], "val (3 loops)")
    # a section of another layout after the sets (no view column) is no set and no crash
    md += "\n## Version 3\n\n| method | version | EF MAE |\n|---|---|---|\n| mine | 3 | 99.0 |\n"
    sets = ef_accuracy_rows(md, "mine")
    assert sets == [{"set": "heldout", "loops": 3, "mae": 4.0, "bias": -4.0},
                    {"set": "simus", "loops": 2, "mae": 4.0, "bias": -4.0}]
    record = {"data": "simulated held-out loops, never patients", "sets": [sets[0], dict(sets[1], mae=9.5, bias=-9.5)]}
    note = ef_accuracy_note({"provenance": {"ef_accuracy": record}})
    assert "mean absolute 4.0 to 9.5 points, bias -9.5 to -4.0 (2 sets, 5 loops)" in note
    assert ef_accuracy_note({"provenance": {}}) is None and ef_accuracy_note(None) is None

    loaded = load_checkpoint(d / "medivista.safetensors")
    model = tmp_path / "known.safetensors"
    save_checkpoint(loaded.model, "medivista", loaded.config, model, classes=loaded.classes,
                    provenance={"ef_accuracy": record})
    capsys.readouterr()
    for weights, want in ((model, note), (d / "medivista.safetensors", None)):
        out = tmp_path / f"out_{weights.stem}"
        assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(out), "--model", str(weights), "--device", "cpu",
                     "--quiet"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["info"]["model_ef_accuracy"] == want
        printed = capsys.readouterr().out
        has_ef = report["summary"]["ef_percent"] is not None and np.isfinite(report["summary"]["ef_percent"])
        assert has_ef                                              # (this cine and model give an EF)
        assert (note in printed) == (want is not None)


def test_substeps_are_chosen_recorded_and_kept_by_corrections(data, tmp_path, capsys):
    """--substeps 2 puts a blended frame between every two (run.json says so, the saved session keeps that
    timeline for `correct`); auto on a model without ``substep_fps`` is 1; a bad value is
    refused by the parser with what to give."""
    d, ph = data
    yx = np.argwhere(ph.labels[0] == 1)
    y, x = yx[len(yx) // 2]
    args = ["--model", str(d / "memsam.safetensors"), "--points", f"{x},{y},1", "--device", "cpu", "--quiet",
            "--no-overlay"]
    capsys.readouterr()
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(tmp_path / "two"), "--substeps", "2"] + args) == 0
    assert "in-between frames: 2 steps per frame interval" in capsys.readouterr().out
    assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(tmp_path / "auto")] + args) == 0
    assert "in-between frames" not in capsys.readouterr().out
    assert json.loads((tmp_path / "two" / "run.json").read_text())["substeps"] == 2
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["substeps"] == 1
    two, _ = read_labels(tmp_path / "two" / "labels.seq.nrrd")
    one, _ = read_labels(tmp_path / "auto" / "labels.seq.nrrd")
    assert np.array_equal(two[0], one[0]) and not np.array_equal(two, one)
    s = pipeline.correct(tmp_path / "two", d / "truth.seq.nrrd", 6, "lv", cine_path=d / "cine.seq.nrrd",
                         loaded=load_checkpoint(d / "memsam.safetensors"))
    assert s.substeps == 2 and s.features.n_frames == 2 * (ph.cine.n_frames - 1) + 1
    capsys.readouterr()
    for bad, why in (("0", "from 1 to 8"), ("two", "give auto or a whole number")):
        assert _run(["segment", str(d / "cine.seq.nrrd"), "-o", str(tmp_path / "bad"), "--substeps", bad] + args) == 2
        err = capsys.readouterr().err
        assert "--substeps" in err and why in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
