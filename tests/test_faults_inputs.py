"""Fault injection, classes "messages that mislead", "the model registry" and "privacy": truncated DICOM
at several offsets, random bytes named .pth, a registry model not downloaded, unreadable files, reader
options on every command, warnings, hostile Models.json entries, a download cut short by a real HTTP
server on 127.0.0.1, and no patient attribute in any output file."""
import gzip
import http.server
import json
import os
import threading
import warnings

import numpy as np
import pytest

from echosam import model_zoo
from echosam.errors import ModelError
from echosam.io import write_cine
from faults_common import assert_refused, make_data, names, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults_inputs"))


@pytest.fixture(scope="module")
def dicom_bytes(data, tmp_path_factory):
    p = tmp_path_factory.mktemp("dcm") / "loop.dcm"
    write_cine(data["phantom"].cine, p)
    return p.read_bytes()


@pytest.mark.parametrize("keep", [0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 0.999])
def test_truncated_dicom_says_truncated(dicom_bytes, tmp_path, capsys, keep):
    (tmp_path / "cut.dcm").write_bytes(dicom_bytes[: int(len(dicom_bytes) * keep)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # nothing may warn on the way to the refusal
        rc, err = run_cli(["segment", tmp_path / "cut.dcm", "-o", tmp_path / "out", "--device", "cpu"], capsys)
    assert_refused(rc, err, "cut.dcm", "truncated")
    assert names(tmp_path) == {"cut.dcm"}


def test_random_bytes_named_pth(data, tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "out", "--model", tmp_path / "w.pth",
                       "--family", "sam", "--device", "cpu", "--points", data["point"]], capsys)
    assert_refused(rc, err, "w.pth", "not a pytorch checkpoint")
    assert "python objects" not in err[0].lower()
    assert names(tmp_path) == {"w.pth"}


def test_registry_model_not_downloaded_names_a_real_command(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "cache"))
    rc, err = run_cli(["segment", data["cine"], "-o", tmp_path / "out", "--model", "sam-vit-b", "--box", "5,5,30,30",
                       "--device", "cpu"], capsys)
    assert_refused(rc, err, "not downloaded", "echosam download sam-vit-b")
    rc, _ = run_cli(["download", "--help"], capsys)             # the advice names a command that exists
    assert rc == 0
    assert names(tmp_path) == set()


def test_unreadable_file_says_permission(data, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    p = tmp_path / "c.seq.nrrd"
    p.write_bytes(data["cine"].read_bytes())
    p.chmod(0)
    rc, err = run_cli(["info", p], capsys)
    assert_refused(rc, err, "permission denied")
    assert "re-export" not in err[0]


def test_reader_options_reach_every_command(data, tmp_path, capsys):
    import SimpleITK as sitk
    ph = data["phantom"]
    img = sitk.GetImageFromArray(ph.cine.frames)                # (T, H, W) as a 3D volume
    sitk.WriteImage(img, str(tmp_path / "vol.nii.gz"))
    lab = sitk.GetImageFromArray(ph.labels)
    sitk.WriteImage(lab, str(tmp_path / "vol_labels.nii.gz"))
    rc, err = run_cli(["segment", tmp_path / "vol.nii.gz", "-o", tmp_path / "out", "--model", data["medivista"],
                       "--device", "cpu", "-q", "--no-overlay"], capsys)
    assert_refused(rc, err, "--slices-as-frames")
    rc, err = run_cli(["segment", tmp_path / "vol.nii.gz", "-o", tmp_path / "out", "--model", data["medivista"],
                       "--device", "cpu", "-q", "--no-overlay", "--slices-as-frames", "--fps", "25"], capsys)
    assert rc == 0, err
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["read"] == {"slices_as_frames": True, "fps": 25.0}
    rc, err = run_cli(["report", tmp_path / "vol_labels.nii.gz", "--cine", tmp_path / "vol.nii.gz", "-o",
                       tmp_path / "rep", "--slices-as-frames", "--fps", "25"], capsys)
    assert rc == 0, err


def test_warnings_do_not_leak_before_a_refusal(data, tmp_path, capsys, monkeypatch):
    from echosam import pipeline
    real = pipeline.read_options

    def noisy(read):
        warnings.warn("a library grumbles", UserWarning)
        return real(read)
    monkeypatch.setattr(pipeline, "read_options", noisy)
    rc, err = run_cli(["report", data["cine"], "-o", tmp_path / "rep"], capsys)
    assert_refused(rc, err, "not a label map")


# ---- the registry ------------------------------------------------------------------------------
GOOD = {"name": "m", "title": "M", "family": "sam", "file": "m.pth", "config": "", "license": "x",
        "url": "https://example.org/m.pth", "sha256": "a" * 64, "bundled": False}


@pytest.mark.parametrize("field,value,words", [
    ("file", "../../x.pth", "plain file name"), ("file", "/etc/x.pth", "plain file name"),
    ("file", "sub/x.pth", "plain file name"), ("file", "..", "plain file name"),
    ("config", "../c.json", "plain file name"), ("url", "http://example.org/m.pth", "https"),
    ("url", "file:///etc/passwd", "https"), ("sha256", "", "sha256"), ("sha256", "abc", "sha256")])
def test_hostile_registry_entries_are_refused_on_load(tmp_path, field, value, words):
    reg = {"version": 1, "default": "m", "models": [dict(GOOD, **{field: value})]}
    (tmp_path / "Models.json").write_text(json.dumps(reg))
    with pytest.raises(ModelError, match=words):
        model_zoo.load_registry(tmp_path / "Models.json")
    assert model_zoo.load_registry.__name__ and names(tmp_path) == {"Models.json"}


def test_bundled_registry_is_valid():
    for e in model_zoo.load_registry():
        assert model_zoo.local_path(e).parent in (model_zoo.BUNDLED_DIR, model_zoo.cache_dir())
    assert model_zoo.default_model_name() in {e.name for e in model_zoo.load_registry()}


class _Short(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 40000)                          # then the connection closes
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a):
        pass


def test_download_cut_short_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "cache"))
    server = http.server.HTTPServer(("127.0.0.1", 0), _Short)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        entry = model_zoo.ModelEntry(name="m", title="M", family="sam", file="m.pth",
                                     url=f"http://127.0.0.1:{server.server_address[1]}/m.pth", sha256="")
        with pytest.raises(ModelError, match="cut short"):
            model_zoo.download(entry)
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "cache").iterdir()) == []


# ---- privacy ------------------------------------------------------------------------------------
PATIENT = {"PatientName": "Doe^Janet", "PatientID": "PID-7731", "PatientBirthDate": "19610203",
           "StudyDescription": "ECHO JANET", "AccessionNumber": "ACC99812", "ReferringPhysicianName": "Who^Doctor",
           "InstitutionName": "St Elsewhere Clinic", "StudyID": "ST7731"}


def test_no_patient_attribute_reaches_any_output(data, tmp_path, capsys):
    import pydicom
    src = tmp_path / "in"
    src.mkdir()
    write_cine(data["phantom"].cine, src / "exam.dcm")
    ds = pydicom.dcmread(str(src / "exam.dcm"))
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.save_as(str(src / "exam.dcm"))
    secret = tmp_path / "Doe_Janet_PID-7731"
    secret.mkdir()
    os.replace(src / "exam.dcm", secret / "exam.dcm")
    out = tmp_path / "out"
    rc, err = run_cli(["segment", secret / "exam.dcm", "-o", out, "--model", data["medivista"], "--device", "cpu",
                       "-q"], capsys)
    assert rc == 0, err
    rc, err = run_cli(["report", out / "labels.seq.nrrd", "--cine", secret / "exam.dcm", "-o", tmp_path / "rep"], capsys)
    assert rc == 0, err
    files = [p for d in (out, tmp_path / "rep") for p in d.rglob("*") if p.is_file()]
    assert len(files) > 6
    needles = [v.encode() for v in PATIENT.values()] + [b"Doe", b"Janet", b"PID-7731", str(secret).encode()]
    for p in files:
        blob = p.read_bytes()
        blobs = [blob]
        if p.name.endswith(".nrrd"):                             # gzip-encoded data section
            head, _, body = blob.partition(b"\n\n")
            blobs.append(gzip.decompress(body))
        for b in blobs:
            for n in needles:
                assert n not in b, (p.name, n)
    assert json.loads((out / "run.json").read_text())["cine"] == "exam.dcm"
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["info"]["cine"] == "exam.dcm"
