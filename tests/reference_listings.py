"""The official checkpoint key listings in ../shared/reference/checkpoints (key, shape, dtype)."""
import ast
from pathlib import Path

import pytest

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "checkpoints"


def read_listing(name: str) -> dict:
    """{key: (shape tuple, dtype string)} in state_dict order; skips the test if the file is absent."""
    path = REF / name
    if not path.exists():
        pytest.skip(f"reference listing {path} is not available")
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(ast.literal_eval(shape)), dtype)
    return out
