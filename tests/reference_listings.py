"""The official checkpoint key listings (key, shape, dtype), kept in the repository as test data
(tests/data/checkpoints/, copied from the reference listings: facts about the released files, no code)."""
import ast
from pathlib import Path

REF = Path(__file__).resolve().parent / "data" / "checkpoints"


def read_listing(name: str) -> dict:
    """{key: (shape tuple, dtype string)} in state_dict order."""
    out = {}
    for line in (REF / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(ast.literal_eval(shape)), dtype)
    return out
