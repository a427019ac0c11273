"""Models.json against its schema; SHA256 checks; resolve / download (file:// URL) / existing file."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from echosam import model_zoo
from echosam.models.registry import FAMILIES
from echosam.errors import CancelledError, CheckpointError, ModelError
from echosam.progress import CancelToken

RES = Path(model_zoo.__file__).resolve().parents[2] / "Resources"
_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "number": (int, float)}


def schema_errors(value, schema: dict, where: str = "$") -> list[str]:
    """A small JSON-schema validator for the keywords Models.schema.json uses."""
    errs = []
    t = schema.get("type")
    if t:
        ok = isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
        if not ok:
            return [f"{where}: expected {t}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{where}: fewer than {schema['minItems']} items")
        if schema.get("uniqueItems") and len(set(map(json.dumps, value))) != len(value):
            errs.append(f"{where}: items are not unique")
        for i, item in enumerate(value):
            errs += schema_errors(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{where}: missing {k!r}")
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errs += schema_errors(v, props[k], f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{where}: unexpected property {k!r}")
    return errs


def test_validator_catches_errors():
    schema = json.loads((RES / "Models.schema.json").read_text())
    good = json.loads((RES / "Models.json").read_text())
    bad = json.loads(json.dumps(good))
    bad["models"][0]["family"] = "unet"
    bad["models"][1]["sha256"] = "XYZ"
    del bad["models"][2]["license"]
    bad["models"][3]["surprise"] = 1
    errs = schema_errors(bad, schema)
    assert len(errs) == 4, errs


def test_models_json_is_schema_valid_and_consistent():
    schema = json.loads((RES / "Models.schema.json").read_text())
    data = json.loads((RES / "Models.json").read_text())
    assert schema_errors(data, schema) == []
    entries = model_zoo.load_registry()
    names = [e.name for e in entries]
    assert model_zoo.default_model_name() == data["default"] and data["default"] in names
    assert {e.family for e in entries} <= set(FAMILIES)
    for family in ("memsam", "medivista", "masam"):
        demo = model_zoo.get_entry(f"echosam-demo-{family}-tiny", entries)
        assert demo.bundled and demo.url == "" and demo.family == family
        assert demo.file == f"echosam-demo-{family}-tiny.safetensors" and demo.config == f"echosam-demo-{family}-tiny.json"
    for e in entries:
        assert e.bundled == (e.url == ""), f"{e.name}: bundled entries have no URL, others must have one"
        if not e.bundled:
            assert e.url.startswith("https://") and re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
    assert model_zoo.get_entry("sam-vit-b", entries).sha256.startswith("ec2df627")


def test_bundled_weights_exist_and_match_registry():
    """Every bundled entry ships its weights, with the recorded SHA256 and a config that agrees."""
    bundled = [e for e in model_zoo.load_registry() if e.bundled]
    assert {e.family for e in bundled} == {"memsam", "medivista", "masam"}
    for e in bundled:
        assert model_zoo.is_available(e), e.name
        assert model_zoo.sha256_of(model_zoo.BUNDLED_DIR / e.file) == e.sha256, e.name
        cfg = json.loads((model_zoo.BUNDLED_DIR / e.config).read_text())
        assert cfg.get("family") == e.family
        assert cfg["config"]["sam"]["img_size"] == e.input_size
        assert sorted(cfg.get("classes", [])) == sorted(e.classes)


def test_verify_sha256_ok_and_mismatch(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    assert model_zoo.verify_sha256(f, good) == good
    assert model_zoo.verify_sha256(f, "") == good          # no published hash: returned for display
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as exc:
        model_zoo.verify_sha256(f, wrong)
    assert good in str(exc.value) and wrong in str(exc.value)


def _entry(url: str, sha: str, name="remote-test") -> model_zoo.ModelEntry:
    return model_zoo.ModelEntry(name=name, title="t", family="sam", file=f"{name}.pth", url=url, sha256=sha,
                                license="Apache-2.0", input_size=1024)


def test_download_file_url_to_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ECHOSAM_CACHE", str(cache))
    src = tmp_path / "served.pth"
    payload = bytes(range(256)) * 9000          # > 2 chunks of 1 MiB
    src.write_bytes(payload)
    entry = _entry(src.as_uri(), hashlib.sha256(payload).hexdigest())
    with pytest.raises(CheckpointError, match="not downloaded yet"):
        model_zoo.resolve_model(entry.name, [entry])
    calls = []
    path = model_zoo.download(entry, progress=lambda d, t, m="": calls.append((d, t)))
    assert path == cache / entry.file and path.read_bytes() == payload
    assert calls[-1][0] == len(payload) and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:]))
    assert model_zoo.resolve_model(entry.name, [entry]) == path
    # the cache is outside the install tree
    install_root = RES.parent
    assert install_root not in path.parents and install_root not in model_zoo.cache_dir().parents


def test_download_bad_hash_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "served.pth"
    src.write_bytes(b"not the model")
    entry = _entry(src.as_uri(), "1" * 64)
    with pytest.raises(CheckpointError, match="expected 1111"):
        model_zoo.download(entry)
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_cancel_and_missing_url(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "served.pth"
    src.write_bytes(b"x" * 3_000_000)
    token = CancelToken()
    entry = _entry(src.as_uri(), "")
    with pytest.raises(CancelledError):
        model_zoo.download(entry, progress=lambda d, t, m="": token.cancel(), cancel=token)
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(ModelError, match="no such file|Could not download"):
        model_zoo.download(_entry((tmp_path / "absent.pth").as_uri(), ""))


def test_use_existing_file_and_resolve_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSAM_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "downloads" / "my_sam.pth"
    mine.parent.mkdir()
    mine.write_bytes(b"official weights")
    entry = _entry("https://example.invalid/x.pth", hashlib.sha256(b"official weights").hexdigest())
    dest = model_zoo.use_existing_file(mine, entry)
    assert dest == tmp_path / "cache" / entry.file and dest.read_bytes() == b"official weights"
    with pytest.raises(CheckpointError):
        model_zoo.use_existing_file(mine, _entry("https://example.invalid/x.pth", "2" * 64))
    assert model_zoo.resolve_model(str(mine)) == mine.resolve()
    with pytest.raises(CheckpointError, match="does not exist"):
        model_zoo.resolve_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="Unknown model"):
        model_zoo.resolve_model("no-such-model")
    assert model_zoo.clear_cache() == [dest] and not dest.exists()


def test_default_cache_location(monkeypatch):
    monkeypatch.delenv("ECHOSAM_CACHE", raising=False)
    assert model_zoo.cache_dir() == Path.home() / ".cache" / "echosam" / "models"
    entry = model_zoo.get_entry(model_zoo.default_model_name())
    assert model_zoo.local_path(entry).parent == model_zoo.BUNDLED_DIR
    assert "license: Apache-2.0" in entry.summary() and f"{entry.input_size} px" in entry.summary()


def test_default_model_comes_from_models_json(tmp_path):
    """One source: the registry file's "default" (a bad default is a clear error, not a silent fallback)."""
    data = json.loads((RES / "Models.json").read_text())
    data["default"] = "echosam-demo-masam-tiny"
    p = tmp_path / "Models.json"
    p.write_text(json.dumps(data))
    assert model_zoo.default_model_name(p) == "echosam-demo-masam-tiny"
    data["default"] = "no-such-model"
    p.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="default"):
        model_zoo.default_model_name(p)


def test_checkpoint_suffixes_are_one_case_insensitive_rule(tmp_path):
    from echosam.checkpoints import checkpoint_kind
    from echosam.slicer.chooser import is_file_spec

    assert checkpoint_kind("a/SAM_VIT_B.PTH") == checkpoint_kind("x.pt") == "official"
    assert checkpoint_kind("m.SafeTensors") == checkpoint_kind("m.json") == "own"
    assert checkpoint_kind("echosam-demo-memsam-tiny") is None and not is_file_spec("echosam-demo-memsam-tiny")
    assert is_file_spec("W.PTH")
    with pytest.raises(CheckpointError, match="does not exist"):
        model_zoo.resolve_model(str(tmp_path / "missing.PTH"))
