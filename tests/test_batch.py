"""`echosam batch` on a fake EchoNet-Dynamic tree (phantom AVIs, official FileList.csv, one corrupt
video) with the process pool: error rows, the mirrored output tree, the summary (CSV = Parquet), EF
agreement against a hand computation, resuming (skip, --retry-failed, changed content), prompts from a
manifest and a seed model. Faults (killed worker, interrupted and killed batch): test_batch_faults.py."""
import dataclasses
import json
import shutil

import numpy as np
import pytest

from batch_data import OPTIONS, make_echonet, prompt_free_model, prompted_model, write_echonet_video
from echosam import cli
from echosam.batch import BatchConfig, discover, read_summary_csv, run_batch, without_timing
from echosam.batch.agreement import agreement
from echosam.batch.summary import have_pyarrow
from echosam.errors import EchoSAMError


def config(**kw):
    kw.setdefault("model", prompt_free_model())
    kw.setdefault("options", dict(OPTIONS))
    kw.setdefault("threads_per_worker", 1)        # the same arithmetic in every run compared
    return BatchConfig(**kw)


@pytest.fixture(scope="module")
def echonet(tmp_path_factory):
    return make_echonet(tmp_path_factory.mktemp("echonet"), n=5)


@pytest.fixture(scope="module")
def reference(echonet, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    res = run_batch(echonet, out, config(workers=2, backend="pool"))
    return out, res


# ---- inputs -------------------------------------------------------------------------------------------
def test_manifest_sources(tmp_path, echonet):
    man = discover(echonet)
    assert man.kind == "echonet" and [c.case_id for c in man.cases][-1] == "Videos/0XBAD"
    assert man.cases[0].truth == {"ef": pytest.approx(man.cases[0].truth["ef"]), "edv": 90.0, "esv": 40.0}
    test = discover(echonet / "FileList.csv", split="test")
    assert [c.split for c in test.cases] == ["TEST"] * 3 and test.kind == "echonet"
    with pytest.raises(EchoSAMError, match="splits"):
        discover(echonet, split="HOLDOUT")

    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "pngcine").mkdir()
    for p in ("a/x.avi", "a/b/y.seq.nrrd", "a/b/y_gt.nii.gz", "a/.hidden.avi", "notes.txt", "pngcine/0000.png"):
        (tree / p).write_bytes(b"x")
    man = discover(tree)
    assert man.kind == "folder" and [c.case_id for c in man.cases] == ["a/b/y", "a/x", "pngcine"]
    assert [c.input for c in discover(f"{tree}/**/*.avi").cases] == ["x.avi"]
    (tree / "a" / "x.mp4").write_bytes(b"x")
    with pytest.raises(EchoSAMError, match="same output folder"):
        discover(tree)

    csv_path = tmp_path / "list.csv"
    csv_path.write_text("Path,points,box,frame,EF,split\n"
                        "tree/a/x.avi,\"10,12,1;3,4,0\",,2,55.5,test\n"
                        f"{tree}/a/b/y.seq.nrrd,,\"1,2,30,40\",,,train\n")
    man = discover(csv_path)
    assert man.kind == "csv" and [c.input for c in man.cases] == ["tree/a/x.avi", "tree/a/b/y.seq.nrrd"]
    assert man.cases[0].prompt == {"points": "10,12,1;3,4,0", "frame": 2} and man.cases[0].truth == {"ef": 55.5}
    assert man.cases[1].prompt == {"box": "1,2,30,40"} and [c.split for c in discover(csv_path, "TEST").cases] == ["test"]
    csv_path.write_text("path,box\ntree/a/x.avi,\"1,2,3\"\n")
    with pytest.raises(EchoSAMError, match="line 2.*four numbers"):
        discover(csv_path)

    camus = tmp_path / "camus"
    for pat in ("patient0001", "patient0002"):
        (camus / pat).mkdir(parents=True)
        for view in ("2CH", "4CH"):
            (camus / pat / f"{pat}_{view}_half_sequence.nii.gz").write_bytes(b"x")
            (camus / pat / f"{pat}_{view}_half_sequence_gt.nii.gz").write_bytes(b"x")
            (camus / pat / f"Info_{view}.cfg").write_text(f"ED: 1\nES: 12\nNbFrame: 12\nEF: 5{view[0]}.5\nLVedv: 100\n")
    man = discover(camus)
    assert man.kind == "camus" and len(man.cases) == 4
    assert man.cases[1].case_id == "patient0001/patient0001_4CH_half_sequence"
    assert man.cases[1].truth == {"ef": 54.5, "edv": 100.0} and man.cases[0].truth["ef"] == 52.5
    with pytest.raises(EchoSAMError, match="split"):
        discover(camus, split="TEST")


def test_agreement_matches_hand_computation():
    # predicted 50, 60, 40 against truth 55, 58, 45: d = -5, +2, -5
    m = agreement([50.0, 60.0, 40.0], [55.0, 58.0, 45.0])
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(4.0)                       # (5 + 2 + 5) / 3
    assert m["rmse"] == pytest.approx(np.sqrt(18.0))            # sqrt((25 + 4 + 25) / 3)
    assert m["bias"] == pytest.approx(-8.0 / 3.0)
    # SS_res = 54; mean truth 158/3; SS_tot = (7/3)^2 + (16/3)^2 + (23/3)^2 = 834/9
    assert m["r2"] == pytest.approx(1.0 - 54.0 / (834.0 / 9.0))
    sd = np.sqrt(((-5 + 8 / 3) ** 2 + (2 + 8 / 3) ** 2 + (-5 + 8 / 3) ** 2) / 2)
    assert m["sd"] == pytest.approx(sd) and m["loa_high"] == pytest.approx(-8 / 3 + 1.96 * sd)
    assert agreement([30.0, 70.0], [30.0, 70.0])["r2"] == 1.0 and agreement([], [])["mae"] is None


# ---- a whole batch ------------------------------------------------------------------------------------
def test_echonet_tree_with_the_process_pool(echonet, reference):
    out, res = reference
    rows = read_summary_csv(out / "summary.csv")
    assert [r["case"] for r in rows] == [c.case_id for c in discover(echonet).cases]
    bad = rows[-1]
    assert bad["case"] == "Videos/0XBAD" and bad["status"] == "error" and "0XBAD.avi" in bad["error"]
    assert str(echonet) not in bad["error"]                              # no absolute paths in the summary
    good = rows[:-1]
    assert all(r["status"] == "ok" and r["n_frames"] == 20 and r["n_beats"] >= 1 for r in good)
    assert res.ran == 6 and res.failed == 1 and res.pending == 0 and len(res.workers) == 2
    for r in good:                                     # the output tree mirrors the input, as `segment` writes it
        folder = out / r["case"]
        assert {"labels.seq.nrrd", "report.json", "report.csv", "lv_curve.png", "run.json"} <= {
            p.name for p in folder.iterdir()}
        report = json.loads((folder / "report.json").read_text())["summary"]
        assert report["ef_percent"] == pytest.approx(r["ef_percent"], abs=1e-3)
        assert r["ed_frames"] == ";".join(map(str, report["ed_frames"]))
        assert r["glitch_frames"] == ";".join(map(str, report["glitch_frames"]))
        spans = [b["es_frame"] - b["ed_frame"] for b in report["beats"]]
        assert r["systole_frames"] == report["systole_frames"] == min(spans) > 0
    assert all(r["model"] == prompt_free_model() and json.loads(r["options"])["options"] == OPTIONS for r in rows)
    truth = {c.case_id: c.truth["ef"] for c in discover(echonet).cases}
    assert all(r["true_ef"] == pytest.approx(truth[r["case"]]) for r in rows)
    # EchoNet's AVIs carry no pixel spacing: no volumes in ml, and the notice says why (the EF stands)
    assert all(r["edv_ml"] is None and r["esv_ml"] is None and "no pixel spacing" in r["notice"] for r in good)

    if have_pyarrow():                                   # the scale extra: the same table as Parquet
        import pyarrow.parquet as pq
        assert without_timing(pq.read_table(out / "summary.parquet").to_pylist()) == without_timing(rows)
    else:
        assert not (out / "summary.parquet").exists()

    # agreement.json: the five ok rows, by hand
    metrics = json.loads((out / "agreement.json").read_text())["ef"]
    p = np.array([r["ef_percent"] for r in good])
    t = np.array([r["true_ef"] for r in good])
    assert metrics["n"] == 5 and "edv" not in metrics and "esv" not in metrics     # no ml to compare
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(p - t)), abs=1e-3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2)), abs=1e-3)
    assert metrics["bias"] == pytest.approx(np.mean(p - t), abs=1e-3)
    assert metrics["r2"] == pytest.approx(1 - np.sum((p - t) ** 2) / np.sum((t - t.mean()) ** 2), abs=1e-3)
    for name in ("ef_scatter.png", "ef_bland_altman.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_done_cases_retries_failed_and_notices_changed_input(echonet, reference, tmp_path, capsys):
    ref_out, _ = reference
    en, out = tmp_path / "en", tmp_path / "out"
    shutil.copytree(echonet, en)                         # new mtimes: the content hash decides
    shutil.copytree(ref_out, out)
    before = (out / "summary.csv").read_text()
    argv = ["batch", str(en), "-o", str(out), "--model", prompt_free_model(), "--no-overlay", "--backend", "inline",
            "--threads-per-worker", "1", "-q"]
    assert cli.main(argv) == 0
    assert "0 run now, 6 done before" in capsys.readouterr().out
    assert (out / "summary.csv").read_text() == before                 # nothing ran: identical, seconds included
    res = run_batch(en, out, config(backend="inline", retry_failed=True))
    assert res.ran == 1 and res.rows[-1]["status"] == "error"
    assert without_timing(res.rows) == without_timing(read_summary_csv(ref_out / "summary.csv"))
    write_echonet_video(en / "Videos" / "0X1A2B.avi", seed=999, ef=30)     # new content for one case
    res = run_batch(en, out, config(backend="inline"))
    assert res.ran == 1 and res.skipped == 5
    assert res.rows[0]["ef_percent"] != read_summary_csv(ref_out / "summary.csv")[0]["ef_percent"]
    with pytest.raises(EchoSAMError, match="prompted model"):
        run_batch(en, tmp_path / "out2", config(model=prompted_model(), backend="inline"))


def test_prompts_from_the_manifest_and_a_seed_model(tmp_path):
    from echosam.io import write_cine
    from echosam.phantom import make_phantom
    from echosam.pipeline import fixed_click

    cines = tmp_path / "cines"
    cines.mkdir()
    lines = ["path,points,box,ef"]
    for i in range(2):
        ph = make_phantom(n_frames=16, size=(64, 64), seed=40 + i, heart_rate=110)
        write_cine(ph.cine, cines / f"c{i}.seq.nrrd")
        x, y = fixed_click(ph.labels[0] == 1)
        rows, cols = np.nonzero(ph.labels[0] == 1)
        box = f"\"{cols.min()},{rows.min()},{cols.max()},{rows.max()}\""
        lines.append(f"cines/c{i}.seq.nrrd,\"{x},{y},1\",," + f"{ph.true_ef:.2f}" if i == 0 else
                     f"cines/c{i}.seq.nrrd,,{box},{ph.true_ef:.2f}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    res = run_batch(tmp_path / "manifest.csv", tmp_path / "out", config(model=prompted_model(), backend="inline"))
    assert [r["status"] for r in res.rows] == ["ok", "ok"] and res.metrics["ef"]["n"] == 2
    assert [json.loads(r["prompt"]) for r in res.rows][0]["points"] and "box" in json.loads(res.rows[1]["prompt"])
    seeded = run_batch(cines, tmp_path / "seeded", config(model=prompted_model(), seed_model=prompt_free_model(),
                                                          backend="inline"))
    assert [r["status"] for r in seeded.rows] == ["ok", "ok"] and seeded.metrics is None
    assert json.loads(seeded.rows[0]["options"])["seed_model"] == prompt_free_model()


def test_a_manifest_cell_holds_one_box_per_structure(tmp_path):
    """``box`` = "lv:... | myo:..." prompts each structure of a batch run with --structures lv,myo; a box for a
    structure the run does not segment fails that case alone, with the fix in its error."""
    from echosam.io import write_cine
    from echosam.phantom import make_phantom

    (tmp_path / "cines").mkdir()
    ph = make_phantom(n_frames=16, size=(64, 64), seed=44, heart_rate=110)
    for name in ("c0", "c1"):
        write_cine(ph.cine, tmp_path / "cines" / f"{name}.seq.nrrd")
    cell = {}
    for name, lab in (("lv", 1), ("myo", 2), ("la", 3)):
        rows, cols = np.nonzero(ph.labels[0] == lab)
        cell[name] = f"{name}:{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    (tmp_path / "manifest.csv").write_text("path,box\n" + f"cines/c0.seq.nrrd,\"{cell['lv']} | {cell['myo']}\"\n"
                                           + f"cines/c1.seq.nrrd,\"{cell['lv']}|{cell['la']}\"\n")
    res = run_batch(tmp_path / "manifest.csv", tmp_path / "out",
                    config(model="echosam-sim-memsam-small", backend="inline", options=dict(OPTIONS, structures="lv,myo")))
    ok, refused = res.rows
    assert ok["status"] == "ok", ok["error"]
    info = json.loads((tmp_path / "out" / ok["case"] / "report.json").read_text())["info"]
    assert info["key_frames"] == {"lv": [0], "myo": [0]}
    assert refused["status"] == "error" and "--structures lv,myo,la" in refused["error"]
    assert refused["error"].startswith("box column 'la:")                 # named as the manifest names it
    # the bundled MemSAM's in-between frames apply per case (30 fps -> 3 steps); --substeps is part of the key
    assert json.loads((tmp_path / "out" / ok["case"] / "run.json").read_text())["substeps"] == 3
    from echosam.cli import build_parser
    from echosam.cli.batch import segment_options
    base = ["batch", str(tmp_path / "cines"), "-o", str(tmp_path / "o"), "--model", "m"]
    assert "substeps" not in segment_options(build_parser().parse_args(base))
    assert segment_options(build_parser().parse_args(base + ["--substeps", "1"]))["substeps"] == 1


def test_a_manifest_column_names_each_cases_display(tmp_path):
    """``orientation`` per case (a mixed archive): that case runs mirrored, the others as --orientation says; the
    column is part of the case's key, and a value that is not an orientation is refused with its row."""
    from echosam.io import write_cine
    from echosam.phantom import make_phantom

    (tmp_path / "cines").mkdir()
    ph = make_phantom(n_frames=12, size=(64, 64), seed=45, heart_rate=110)
    write_cine(ph.cine, tmp_path / "cines" / "c0.seq.nrrd")
    flipped = dataclasses.replace(ph.cine, frames=np.ascontiguousarray(ph.cine.frames[:, :, ::-1]))
    write_cine(flipped, tmp_path / "cines" / "c1.seq.nrrd")
    (tmp_path / "manifest.csv").write_text("path,orientation\ncines/c0.seq.nrrd,Mirrored\ncines/c1.seq.nrrd,\n")
    res = run_batch(tmp_path / "manifest.csv", tmp_path / "out", config(backend="inline"))
    assert [r["status"] for r in res.rows] == ["ok", "ok"]
    runs = [json.loads((tmp_path / "out" / r["case"] / "run.json").read_text()) for r in res.rows]
    named = runs[0]["region"]["orientation"]
    assert named["mirrored"] is True and named["source"] == "given"
    assert runs[1]["region"]["orientation"]["mirrored"] is False
    assert json.loads(res.rows[0]["prompt"]) == {"orientation": "mirrored"} and res.rows[1]["prompt"] == ""
    # the case named mirrored gives the model what the same loop shown flipped gives it: labels mirror each other
    from echosam.io import read_labels
    lab0, _ = read_labels(tmp_path / "out" / res.rows[0]["case"] / "labels.seq.nrrd")
    lab1, _ = read_labels(tmp_path / "out" / res.rows[1]["case"] / "labels.seq.nrrd")
    assert (lab0 > 0).any() and np.array_equal(lab0, lab1[:, :, ::-1])
    (tmp_path / "bad.csv").write_text("path,orientation\ncines/c0.seq.nrrd,sideways\n")
    with pytest.raises(EchoSAMError, match="bad.csv line 2: orientation 'sideways' is not one of standard"):
        run_batch(tmp_path / "bad.csv", tmp_path / "out2", config(backend="inline"))


def test_no_lv_is_an_error_row_and_one_batch_per_output_folder(tmp_path):
    from echosam.io.lock import FolderBusyError, folder_lock
    from echosam.io.video_io import write_video

    (tmp_path / "in").mkdir()
    write_video(np.zeros((16, 112, 112, 3), np.uint8), tmp_path / "in" / "blank.avi", 30, ".avi")
    res = run_batch(tmp_path / "in", tmp_path / "out", config(backend="inline"))
    (row,) = res.rows
    assert row["status"] == "error" and "LV" in row["error"] and row["ef_percent"] is None and res.failed == 1
    with folder_lock(tmp_path / "out"):                  # another batch holds the output folder
        with pytest.raises(FolderBusyError):
            run_batch(tmp_path / "in", tmp_path / "out", config(backend="inline", retry_failed=True))
