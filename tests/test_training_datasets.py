"""Training datasets on tiny trees written in the official CAMUS 2023 and EchoNet-Dynamic formats."""
from __future__ import annotations

import csv
import dataclasses
import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
sitk = pytest.importorskip("SimpleITK")

from training.datasets import (IGNORE, CamusSource, ClipDataset, ClipAugment, DatasetError, EchoNetSource,  # noqa: E402
                               FolderSource, build_clip_dataset, memsam_clip_indices)
from training.datasets.echonet import fill_polygon, tracing_polygon  # noqa: E402


# ---- CAMUS ---------------------------------------------------------------------------------------
def _camus_case(root, pid: int, view: str, T: int = 5, H: int = 40, W: int = 32, ef: float = 57.9,
                with_gt: bool = True):
    pdir = root / f"patient{pid:04d}"
    pdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(pid * 10 + len(view))
    frames = rng.integers(0, 256, (T, H, W), dtype=np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        labels[t, 5:30 - t, 8:24] = 2          # myocardium shell
        labels[t, 8:27 - t, 11:21] = 1         # LV shrinks ED -> ES
        labels[t, 30:36, 10:22] = 3            # LA
    for arr, suffix in ((frames, ""), (labels, "_gt")):
        if suffix and not with_gt:
            continue
        img = sitk.GetImageFromArray(arr)      # numpy (t, y, x) -> ITK axes x, y, time
        img.SetSpacing((0.25, 0.3, 1.0))       # col 0.25 mm, row 0.3 mm
        sitk.WriteImage(img, str(pdir / f"patient{pid:04d}_{view}_half_sequence{suffix}.nii.gz"))
    (pdir / f"Info_{view}.cfg").write_text(f"ED: 1\nES: {T}\nNbFrame: {T}\nSex: F\nAge: 58\nImageQuality: Good\n"
                                           f"EF: {ef}\nFrameRate: 30.0\n")
    return frames, labels


@pytest.fixture()
def camus(tmp_path):
    root = tmp_path / "CAMUS"
    data = {("patient0001", "2CH"): _camus_case(root, 1, "2CH"), ("patient0001", "4CH"): _camus_case(root, 1, "4CH"),
            ("patient0351", "2CH"): _camus_case(root, 351, "2CH", ef=40.5)}
    _camus_case(root, 351, "4CH")
    return root, data


def test_camus_split_frames_labels_ed_es_ef(camus):
    root, data = camus
    train = CamusSource(root, split="train")
    assert [c[0] for c in train.cases] == ["patient0001_2CH", "patient0001_4CH"]
    val = CamusSource(root, split="val", views=["2CH"])
    assert len(val) == 1 and len(CamusSource(root, split="test")) == 0
    seq = train.load(1)
    frames, labels = data[("patient0001", "4CH")]
    np.testing.assert_array_equal(seq.frames, frames.astype(np.float32))
    assert set(seq.labels) == set(range(5))
    np.testing.assert_array_equal(np.stack([seq.labels[t] for t in range(5)]), labels)
    assert seq.spacing == pytest.approx((0.3, 0.25))
    assert (seq.ed, seq.es) == (0, 4) and seq.ef == pytest.approx(57.9)
    assert val.load(0).ef == pytest.approx(40.5)


def test_memsam_clip_rule_and_semi_supervision(camus):
    root, data = camus
    # the rule on a long span: step (20 - 3) / 9, frame i = int(3 + step i)
    np.testing.assert_array_equal(memsam_clip_indices(3, 20, 10), [int(3 + 17 / 9 * i) for i in range(9)] + [20])
    np.testing.assert_array_equal(memsam_clip_indices(20, 3, 10), memsam_clip_indices(3, 20, 10))
    ds = ClipDataset(CamusSource(root, split="train"), classes=["lv"], clip_frames=10, supervision="semi", train=False)
    item = ds[0]
    frames, labels = data[("patient0001", "2CH")]
    idx = item["indices"].numpy()
    np.testing.assert_array_equal(idx, [0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
    np.testing.assert_array_equal(item["frames"].numpy(), frames[idx].astype(np.float32))
    assert item["labelled"].tolist() == [True] + [False] * 8 + [True]
    masks = item["masks"].numpy()
    np.testing.assert_array_equal(masks[0], (labels[0] == 1).astype(int))      # binary LV: MYO/LA -> 0
    np.testing.assert_array_equal(masks[9], (labels[4] == 1).astype(int))
    assert (masks[1:9] == IGNORE).all()
    x, y = item["point"].tolist()                                               # fixed median click inside the LV
    assert labels[0, int(y), int(x)] == 1
    full = ClipDataset(CamusSource(root, split="train"), classes=["lv", "myo", "la"], supervision="full", train=False)
    it = full[0]
    assert it["labelled"].sum() == 5                                            # each distinct frame once
    np.testing.assert_array_equal(it["masks"][9].numpy(), labels[4])            # 3 classes keep CAMUS values


def test_camus_missing_label_file_skip_or_stop(tmp_path):
    root = tmp_path / "CAMUS"
    _camus_case(root, 2, "2CH")
    _camus_case(root, 3, "2CH", with_gt=False)
    with pytest.warns(UserWarning, match="patient0003_2CH_half_sequence_gt.nii.gz"):
        src = CamusSource(root, split="train", views=["2CH"], on_bad_sample="skip")
    assert [c[0] for c in src.cases] == ["patient0002_2CH"]
    with pytest.raises(DatasetError, match="patient0003_2CH_half_sequence_gt.nii.gz"):
        CamusSource(root, split="train", views=["2CH"], on_bad_sample="stop")


# ---- EchoNet-Dynamic -----------------------------------------------------------------------------
def _write_avi(path, frames_grey):
    import av

    rgb = np.repeat(frames_grey[..., None], 3, axis=-1)
    with av.open(str(path), mode="w", format="avi") as c:
        s = c.add_stream("ffv1", rate=50)
        s.height, s.width, s.pix_fmt = 112, 112, "bgr0"
        for f in rgb:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _rect_tracing(name, frame, x1, x2, y0, y1):
    rows = [[name, (x1 + x2) / 2, y0 - 5, (x1 + x2) / 2, y1 + 5, frame]]           # long axis first
    rows += [[name, x1, y, x2, y, frame] for y in np.linspace(y0, y1, 20)]        # 20 chords: 21 rows, 42 points
    return rows


@pytest.fixture()
def echonet(tmp_path):
    root = tmp_path / "EchoNet-Dynamic"
    (root / "Videos").mkdir(parents=True)
    vids = {}
    for k, name in enumerate(["0X1A", "0X2B", "0X3C", "0X4D"]):
        vids[name] = ((np.arange(30)[:, None, None] * 3 + k * 7 + np.arange(112)[None, :, None]) % 256
                      ).astype(np.uint8).repeat(112, axis=2)
        _write_avi(root / "Videos" / f"{name}.avi", vids[name])
    (root / "Videos" / "0X5E.avi").write_bytes(b"RIFF\x00\x01\x02garbage, not a video")
    with open(root / "FileList.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
        for name, ef, split in [("0X1A", 55.5, "TRAIN"), ("0X2B", 61.0, "TRAIN"), ("0X3C", 40.0, "VAL"),
                                ("0X4D", 50.0, "TRAIN"), ("0X5E", 45.0, "TEST")]:
            w.writerow([name, ef, 30.0, 70.0, 112, 112, 50, 30, split])
    with open(root / "VolumeTracings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        for name in ["0X1A", "0X2B", "0X3C", "0X5E"]:
            w.writerows(_rect_tracing(name + ".avi", 21, 45, 65, 35, 65))          # ES listed first (smaller)
            w.writerows(_rect_tracing(name + ".avi", 4, 40, 70, 30, 70))           # ED: 31 x 41 pixels
        w.writerows(_rect_tracing("0X4D.avi", 21, 45, 65, 35, 65))
        w.writerows([["0X4D.avi", 50, 30, 50, 70, 4], ["0X4D.avi", 40, 40, 60, 40, 4]])   # 2 rows: too few
    return root, vids


def test_tracing_polygon_area_exact():
    rows = np.array([[55, 20, 55, 80]] + [[40, y, 70, y] for y in range(30, 71, 10)], float)
    poly = tracing_polygon(rows)
    assert poly[0].tolist() == [40, 30] and poly[-1].tolist() == [70, 30]      # down one side, back up the other
    m = fill_polygon(poly, (112, 112))
    assert m.sum() == 31 * 41 and m[30:71, 40:71].all()
    tri = fill_polygon(np.array([[10, 10], [50, 10], [10, 50]]), (112, 112))
    assert tri.sum() == 41 * 42 // 2                                            # lattice points inside or on it


def test_echonet_frames_masks_ed_es_ef(echonet):
    root, vids = echonet
    with pytest.warns(UserWarning, match="0X4D.avi"):
        src = EchoNetSource(root, split="train")
    assert [c[0] for c in src.cases] == ["0X1A", "0X2B"]
    seq = src.load(1)
    np.testing.assert_array_equal(seq.frames, vids["0X2B"].astype(np.float32))
    assert (seq.ed, seq.es) == (4, 21) and seq.ef == pytest.approx(61.0) and seq.spacing == (1.0, 1.0)
    assert seq.labels[4].sum() == 31 * 41 and seq.labels[21].sum() == 21 * 31
    assert seq.labels[4][30:71, 40:71].all()
    ds = ClipDataset(src, classes=["lv"], clip_frames=10, train=False)
    item = ds[0]
    assert item["indices"][0] == 4 and item["indices"][-1] == 21 and item["labelled"].tolist() == [True] + [False] * 8 + [True]
    assert item["masks"][0].sum() == 31 * 41 and item["masks"][9].sum() == 21 * 31
    assert (item["ed"], item["es"], item["ef"]) == (0, 9, pytest.approx(55.5))
    assert len(EchoNetSource(root, split="val")) == 1


def test_echonet_bad_data_stop(echonet):
    root, _ = echonet
    with pytest.raises(DatasetError, match=r"0X4D.avi.*2 row\(s\)"):
        EchoNetSource(root, split="train", on_bad_sample="stop")


def test_undecodable_video_skip_or_stop(echonet):
    root, _ = echonet
    with pytest.raises(DatasetError, match="0X5E.avi"):
        EchoNetSource(root, split="test", on_bad_sample="stop").load(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = EchoNetSource(root, split="all")            # 0X4D skipped at construction (tracing)
    bad = [c[0] for c in src.cases].index("0X5E")
    ds = ClipDataset(src, clip_frames=10, train=False)
    with pytest.warns(UserWarning, match="0X5E.avi"):
        item = ds[bad]
    assert item["name"] != "0X5E"                          # replaced by the next good case
    stop = ClipDataset(EchoNetSource(root, split="test", on_bad_sample="stop"), clip_frames=10, train=False)
    with pytest.raises(DatasetError, match="0X5E.avi"):
        stop[0]


# ---- folder, augmentation, config ----------------------------------------------------------------
def test_folder_source_sparse_labels(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (8, 24, 20), dtype=np.uint8)
    labels = np.zeros_like(frames)
    labels[1, 4:16, 5:15] = 1                               # ED (largest LV)
    labels[6, 6:12, 7:13] = 1                               # ES
    from echosam.cine import Cine
    from echosam.io import write_cine, write_labels

    cine = Cine.from_array(frames, spacing=(0.4, 0.5), fps=25.0)
    write_cine(cine, tmp_path / "case01.seq.nrrd")                  # Slicer's sequence format
    write_labels(labels, cine, tmp_path / "case01_gt.seq.nrrd")
    write_cine(cine, tmp_path / "case02.seq.nrrd")                  # no labels
    with pytest.warns(UserWarning, match="case02_gt.seq.nrrd"):
        src = FolderSource(tmp_path)
    seq = src.load(0)
    assert sorted(seq.labels) == [1, 6] and (seq.ed, seq.es) == (1, 6) and seq.spacing == pytest.approx((0.4, 0.5))
    np.testing.assert_array_equal(seq.frames, frames.astype(np.float32))


def test_augmentation_identical_for_every_frame(camus):
    root, _ = camus
    aug = ClipAugment(gamma=1.0, rotate=1.0, scale=1.0, contrast=1.0)
    frame = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (32, 1))
    frames = np.repeat(frame[None], 6, axis=0)
    masks = np.full((6, 32, 32), IGNORE, np.int64)
    lv = np.zeros((32, 32), np.int64)
    lv[8:24, 10:20] = 1
    masks[0] = masks[5] = lv
    labelled = np.array([True, False, False, False, False, True])
    f, m = aug(frames, masks, labelled, np.random.default_rng(3))
    assert not np.allclose(f[0], frame)                    # something happened...
    for t in range(1, 6):                                  # ...identically on every frame
        np.testing.assert_allclose(f[t], f[0], atol=1e-4)
    np.testing.assert_array_equal(m[5], m[0])
    assert (m[1:5] == IGNORE).all() and 0 < (m[0] == 1).sum() and not np.array_equal(m[0], lv)
    f2, _ = aug(frames, masks, labelled, np.random.default_rng(3))
    np.testing.assert_array_equal(f, f2)                   # seeded


def test_build_clip_dataset_roles(camus):
    root, _ = camus
    cfg = {"dataset": "camus", "root": str(root), "structures": ["lv"], "clip_frames": 10,
           "splits": {"train": "train", "val": {"split": "val", "views": ["2CH"]}}}
    tr = build_clip_dataset(cfg, "train", size=16)
    va = build_clip_dataset(cfg, "val", size=16)
    assert len(tr) == 2 and len(va) == 1 and tr.transform is not None and va.transform is None
    item = tr[0]
    assert tuple(item["frames"].shape) == (10, 16, 16) and tuple(item["masks"].shape) == (10, 16, 16)
    assert tuple(item["spacing"].tolist()) == pytest.approx((0.3 * 40 / 16, 0.25 * 32 / 16))


def test_window_sampling_takes_frames_in_a_row(camus):
    """clip_sampling: window -> consecutive frames (step 1 or 2) anywhere in the loop in training; the
    ED->ES rule stays for validation."""
    from training.datasets.clips import window_clip_indices

    rng = np.random.default_rng(0)
    seen_steps, starts = set(), set()
    for _ in range(50):
        idx = window_clip_indices(30, 5, rng)
        d = np.diff(idx)
        assert len(idx) == 5 and (d == d[0]).all() and d[0] in (1, 2) and idx[-1] <= 29
        seen_steps.add(int(d[0]))
        starts.add(int(idx[0]))
    assert seen_steps == {1, 2} and len(starts) > 10
    short = window_clip_indices(3, 5, np.random.default_rng(1))
    assert short.max() == 2 and (np.diff(short) >= 0).all()
    with pytest.raises(Exception, match="clip_sampling"):
        from training.datasets.clips import ClipDataset
        ClipDataset(camus, sampling="random")


def test_phase_sampling_spreads_clips_over_every_systole_and_diastole(tmp_path):
    """clip_sampling: phases -> in training, a clip runs from an ED to the next ES or from an ES to the next
    ED, on any beat of a real simulated loop, every one drawn; validation keeps the first ED->ES pair."""
    from training.datasets.clips import ClipDataset, memsam_clip_indices
    from training.datasets.simulated import SimulatedSource
    from training.simulator.cache import case_arrays, save_case
    from training.simulator.scene import simulate
    from sim_fixtures import small

    sp = dataclasses.replace(small(11, n_frames=40, height=64), heart_rate=110.0, fps=30.0)
    save_case(tmp_path / "case_000011.npz", case_arrays(sp, simulate(sp)))
    src = SimulatedSource(tmp_path)
    seq = src.load(0)
    marks = sorted([(t, "ed") for t in seq.meta["ed_frames"]] + [(t, "es") for t in seq.meta["es_frames"]])
    pairs = {(a, b) for (a, ka), (b, kb) in zip(marks, marks[1:]) if ka != kb}
    assert len(pairs) >= 3, f"the test loop needs several phases, has {marks}"
    train = ClipDataset(src, clip_frames=6, train=True, sampling="phases", classes=["lv"])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        c = train.clip_from_sequence(seq, rng)
        seen.add((int(c.indices[0]), int(c.indices[-1])))
        assert (np.diff(c.indices) >= 0).all() and len(c.indices) == 6
    assert seen == pairs
    val = ClipDataset(src, clip_frames=6, train=False, sampling="phases", classes=["lv"])
    assert val.clip_from_sequence(seq, rng).indices.tolist() == memsam_clip_indices(seq.ed, seq.es, 6).tolist()


def test_window_max_step_spreads_a_clip_over_larger_motion(camus):
    """data.clip_max_step: window clips take every 1..max_step frames (all steps drawn); 0 is refused."""
    from training.datasets.clips import ClipDataset, window_clip_indices

    rng = np.random.default_rng(3)
    steps = {int(np.diff(window_clip_indices(60, 6, rng, max_step=4))[0]) for _ in range(200)}
    assert steps == {1, 2, 3, 4}
    with pytest.raises(Exception, match="clip_max_step"):
        ClipDataset(camus, sampling="window", window_max_step=0)


def test_reversed_clips_put_the_key_frame_last_with_its_own_prompt(camus):
    """data.clip_reverse_p: in training some clips play backwards (ES first, the prompt on it, the cavity
    growing); p 0 keeps every clip and every random draw as before; validation never reverses."""
    root, data = camus
    frames, labels = data[("patient0001", "2CH")]
    src = CamusSource(root, split="train")
    forward = ClipDataset(src, classes=["lv"], clip_frames=5, supervision="full", train=True, seed=3)
    seq = src.load(0)
    plain = [forward.clip_from_sequence(seq, np.random.default_rng(k)).indices.tolist() for k in range(20)]
    assert all(p == sorted(p) for p in plain)
    rev = ClipDataset(src, classes=["lv"], clip_frames=5, supervision="full", train=True, seed=3, reverse_p=0.5)
    clips = [rev.clip_from_sequence(seq, np.random.default_rng(k)) for k in range(40)]
    backwards = [c for c in clips if c.indices[0] > c.indices[-1]]
    assert 8 < len(backwards) < 32 and len(backwards) + sum(c.indices[0] < c.indices[-1] for c in clips) == 40
    c = backwards[0]
    np.testing.assert_array_equal(c.indices, plain[0][::-1])                              # the same frames
    assert c.indices[c.es] == seq.es and c.indices[c.ed] == seq.ed
    np.testing.assert_array_equal(c.masks[0], (labels[c.indices[0]] == 1).astype(int))    # the ES frame's own mask
    x, y = c.point
    assert labels[c.indices[0], int(y), int(x)] == 1                                       # prompted on the ES frame
    val = ClipDataset(src, classes=["lv"], clip_frames=5, supervision="full", train=False, reverse_p=1.0)
    assert val.clip_from_sequence(seq, np.random.default_rng(0)).indices.tolist() == sorted(plain[0])
    with pytest.raises(DatasetError, match="clip_reverse_p"):
        ClipDataset(src, classes=["lv"], reverse_p=1.5)
