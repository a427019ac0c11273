"""Extension packaging: every file under EchoSAMSlicer/ is listed in its CMakeLists.txt (and every
listed file exists), the top-level CMake and the catalog entry carry what ExtensionsIndex needs."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "EchoSAMSlicer"
SHIPPED = (".py", ".ui", ".png", ".json", ".txt", ".safetensors")


def cmake_list(var: str) -> list:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    body = re.search(rf"set\({var}\s+(.*?)\)", text, re.S).group(1)
    return [t.replace("${MODULE_NAME}", "EchoSAMSlicer") for t in body.split()]


def shipped_files() -> set:
    return {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
            if p.is_file() and p.name.endswith(SHIPPED) and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}


def test_every_file_is_listed_and_every_listed_file_exists():
    listed = cmake_list("MODULE_PYTHON_SCRIPTS") + cmake_list("MODULE_PYTHON_RESOURCES")
    assert len(listed) == len(set(listed)), "a file is listed twice"
    missing_on_disk = [f for f in listed if not (MODULE_DIR / f).is_file()]
    assert not missing_on_disk, f"listed in EchoSAMSlicer/CMakeLists.txt but absent: {missing_on_disk}"
    not_listed = sorted(shipped_files() - set(listed))
    assert not not_listed, f"add to EchoSAMSlicer/CMakeLists.txt: {not_listed}"
    scripts = cmake_list("MODULE_PYTHON_SCRIPTS")
    assert all(f.endswith(".py") for f in scripts) and all(f.startswith("Resources/") for f in cmake_list("MODULE_PYTHON_RESOURCES"))


def test_bundled_models_in_models_json_will_be_listed():
    models = json.loads((MODULE_DIR / "Resources" / "Models.json").read_text())["models"]
    listed = set(cmake_list("MODULE_PYTHON_RESOURCES"))
    assert {m["name"] for m in models if m["bundled"]} >= {f"echosam-demo-{f}-tiny" for f in ("memsam", "medivista", "masam")}
    for m in (m for m in models if m["bundled"]):
        for name in (m["file"], m["config"]):
            path = f"Resources/Models/{name}"
            assert (MODULE_DIR / path).is_file(), f"{path}: a bundled model's file is missing"
            assert path in listed, f"{path}: add it to MODULE_PYTHON_RESOURCES in EchoSAMSlicer/CMakeLists.txt"


def test_top_level_cmake_and_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "project(EchoSAMSlicer)" in text and "add_subdirectory(EchoSAMSlicer)" in text and "## NEXT_MODULE" in text
    for var in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "CATEGORY", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{var} "[^"]+"\)', text), var
    assert 'set(EXTENSION_CATEGORY "Ultrasound")' in text and 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text
    assert "slicerMacroBuildScriptedModule" in (MODULE_DIR / "CMakeLists.txt").read_text()
    entry = json.loads((ROOT / "EchoSAMSlicer.json").read_text())
    assert entry["category"] == "Ultrasound" and entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"].startswith("https://") and entry["tier"] in (1, 3, 5)
    assert "dicom_support_rule" not in entry           # not in the index's schema (additionalProperties: false)
    lic = (ROOT / "LICENSE.txt").read_text()
    assert "Apache License" in lic and "Version 2.0, January 2004" in lic and "END OF TERMS AND CONDITIONS" in lic


def test_requirements_have_floors_and_skip_torch_and_simpleitk():
    from echosam.slicer import install
    reqs = install.load_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    names = {install.requirement_name(r) for r in reqs}
    assert {"numpy", "scipy", "pynrrd", "pydicom", "safetensors", "tqdm", "matplotlib", "segment-anything",
            "PyWavelets", "PyYAML", "Pillow"} <= names
    assert not names & {"torch", "torchvision", "SimpleITK", "vtk"}
    assert all(">=" in r for r in reqs)
    text = (MODULE_DIR / "Resources" / "requirements.txt").read_text()
    assert "PyTorch" in text and "SimpleITK" in text            # the comment says why they are absent


def test_icon_is_128px_png():
    from PIL import Image
    with Image.open(MODULE_DIR / "Resources" / "Icons" / "EchoSAMSlicer.png") as im:
        assert im.size == (128, 128) and im.format == "PNG"


def test_catalog_entry_validates_against_the_extensions_index_schema():
    """The real schema (a copy of Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json,
    see tests/data/README.md), the one the entry names in $schema; an unknown key is rejected."""
    import jsonschema
    schema = json.loads((ROOT / "tests" / "data" / "slicer-extension-catalog-entry-schema-v1.0.1.json").read_text())
    entry = json.loads((ROOT / "EchoSAMSlicer.json").read_text())
    assert entry["$schema"] == schema["$id"]
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(entry, schema)
    import pytest
    with pytest.raises(jsonschema.ValidationError, match="dicom_support_rule"):
        jsonschema.validate(dict(entry, dicom_support_rule="Modality == US"), schema)
