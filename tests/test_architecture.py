"""The structure shows the architecture: one concept per module, modules talk through public names,
engine modules stay short enough to read in a sitting (docs/engine_api.md, "Layout")."""
import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "EchoSAMSlicer" / "Logic" / "echosam"
MAX_LINES = 410          # "under about 400" (STYLE.md): what one person reads in a sitting
# names set by a module on objects it owns the meaning of (fast.py marks the modules it switched)
OWN_MARKERS = ("_echosam_",)
# private names of other libraries that are their documented API (namedtuple, torch, numpy)
FOREIGN_API = {"_replace", "_asdict", "_fields", "_make"}


def _modules():
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def reaches(path: Path) -> list:
    """``x._name`` where x is not self/cls, and ``from m import _name``: private names of another object."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr.startswith(OWN_MARKERS) or node.attr in FOREIGN_API:
                continue
            out.append(f"{path.relative_to(ENGINE)}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            out += [f"{path.relative_to(ENGINE)}:{node.lineno} import {a.name}" for a in node.names if _private(a.name)]
    return out


def test_no_module_reaches_into_another_modules_private_names():
    found = [r for p in _modules() for r in reaches(p)]
    assert found == []


def test_the_check_catches_a_reach(tmp_path):
    p = ENGINE / "session" / "session.py"
    bad = tmp_path / "bad.py"
    bad.write_text("from .x import _hidden\n\ndef f(s):\n    return s._store, self_like._write\n")
    found = [r.split(" ", 1)[1] for r in reaches_at(bad)]
    assert found == ["import _hidden", "._store", "._write"] and reaches(p) == []


def reaches_at(path: Path) -> list:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [f"{node.lineno} import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            out.append(f"{node.lineno} .{node.attr}")
    return sorted(out, key=lambda r: (int(r.split()[0]), r))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_modules_stay_readable(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_layout_one_owner_per_concept():
    names = {str(p.relative_to(ENGINE)) for p in _modules()}
    for want in ("session/store.py", "session/propagation.py", "session/persistence.py", "session/prompt_free.py",
                 "session/session.py", "session/transforms.py", "session/features.py", "session/results.py",
                 "models/protocols.py", "models/sam_family.py", "cli/__init__.py", "cli/segment.py",
                 "cli/files.py", "pipeline.py", "device.py"):
        assert want in names, want
    for gone in ("session_memsam.py", "session_io.py", "session_store.py", "cli_segment.py", "cli_io.py", "cli.py"):
        assert gone not in names, gone


def test_one_source_per_rule():
    """Suffix lists, the family list, the default model name and device choice are written once."""
    texts = {p: p.read_text() for p in _modules()}
    slicer_module = (ENGINE.parents[1] / "EchoSAMSlicer.py").read_text()

    def where(snippet):
        return sorted(str(p.relative_to(ENGINE)) for p, t in texts.items() if snippet in t)

    assert where('".pth", ".pt"') == ["checkpoints.py"]
    assert where('"medivista": (') == ["models/registry.py"]
    assert where("echosam-demo-memsam-tiny") == [] and "echosam-demo-memsam-tiny" not in slicer_module
    assert where("torch.cuda.is_available()") == ["device.py", "worker.py"]      # worker: only to free memory
    assert "cuda.is_available" not in slicer_module
    assert where('"ms": 1e-3') == ["cine.py"]
    assert where('"out of memory" in') == ["errors.py"] and where("OutOfMemoryError") == ["errors.py"]
    assert where('in ("memsam", "sam")') == []


def test_ray_is_an_optional_extra():
    """The engine never needs Ray: only batch/ray_backend.py imports it, inside a function, and importing
    the batch package and the CLI loads neither Ray nor torch."""
    import re
    import subprocess
    import sys

    for p in _modules():
        top = [n for n in ast.parse(p.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [x for x in names if x == "ray" or x.startswith("ray.")], p
    users = sorted(str(p.relative_to(ENGINE)) for p in _modules()
                   if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M))
    assert users == ["batch/ray_backend.py"]
    code = ("import sys, echosam.batch, echosam.batch.ray_backend, echosam.batch.pool, echosam.cli; "
            "bad = [m for m in ('ray', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    env = dict(__import__("os").environ, PYTHONPATH=str(ENGINE.parent))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
