"""What makes a batch resumable: one result row per case, and the rule for "this case is done".

Every finished case (success or error) leaves one JSON row in ``OUT/.echosam-batch/cases/``, written
atomically (`io.atomic.atomic_file`) by the driver *after* the case's outputs were published (the
pipeline swaps its output folder in whole). A batch that is interrupted (Ctrl-C, a killed worker, a
killed job) therefore loses only the cases in flight: their rows do not exist, so a rerun runs them
again and replaces whatever they left.

A case is **done** when its row records the same input content (SHA-256 of the file, or of a PNG
folder's files), the same model and options (`options_key`), the same manifest prompt, and, for a
success, its ``run.json`` and ``report.json`` are still there. A changed file is noticed by its
size and modification time (then hashed again); the content hash decides. Error rows count as done
unless ``retry_failed``. Rows are keyed by the case id, so shards of one manifest running on
several machines into one shared output folder never write the same file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from ..io.atomic import atomic_file

STATE_DIR = ".echosam-batch"
_CHUNK = 1 << 20


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def options_key(identity: dict) -> str:
    """SHA-256 (hex) of the model identity and the options that decide a case's result."""
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()


def _files(path: Path) -> list:
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def file_sha256(path, h=None) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def content_sha256(path) -> str:
    """SHA-256 (hex) of a cine's content: the file's bytes, or a PNG folder's files (names and bytes)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f.name.encode() + b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def stat_signature(path) -> Optional[list]:
    """[total size in bytes, newest modification time in ns] of a cine file or folder; None if missing."""
    try:
        st = [os.stat(f) for f in _files(Path(path))]
    except OSError:
        return None
    return [sum(s.st_size for s in st), max((s.st_mtime_ns for s in st), default=0)]


def weights_identity(path) -> dict:
    """A weights file (and its JSON config, for the project's own format) named by content."""
    path = Path(path)
    out = {"file": path.name, "sha256": file_sha256(path)}
    cfg = path.with_suffix(".json")
    if path.suffix == ".safetensors" and cfg.is_file():
        out["config_sha256"] = file_sha256(cfg)
    return out


class CaseStore:
    """The result rows of one batch output folder (``OUT/.echosam-batch/cases/<hash of case id>.json``)."""

    def __init__(self, out) -> None:
        self.out = Path(out)
        self.folder = self.out / STATE_DIR / "cases"

    def path(self, case_id: str) -> Path:
        return self.folder / (hashlib.sha1(case_id.encode()).hexdigest()[:24] + ".json")

    def read(self, case_id: str) -> Optional[dict]:
        p = self.path(case_id)
        try:
            row = json.loads(p.read_text())
        except (OSError, ValueError):
            return None        # missing, or unreadable (then the case simply runs again)
        return row if row.get("case") == case_id else None

    def write(self, row: dict) -> Path:
        p = self.path(row["case"])
        with atomic_file(p, suffix=".json") as tmp:
            tmp.write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
        return p

    def is_done(self, case, key: str, retry_failed: bool = False) -> tuple:
        """(done, row): ``row`` is the stored row (None when there is none)."""
        row = self.read(case.case_id)
        if row is None or row.get("options_key") != key or row.get("prompt", {}) != case.prompt:
            return False, row
        if row.get("status") != "ok" and retry_failed:
            return False, row
        sig = stat_signature(case.path)
        if sig is None:                           # the input is gone: only an error row stays valid
            return row.get("status") != "ok" and row.get("input_sha256") is None, row
        if sig != row.get("input_stat"):
            if row.get("input_sha256") != content_sha256(case.path):
                return False, row
        if row.get("status") == "ok":
            outdir = self.out / case.case_id
            if not ((outdir / "run.json").is_file() and (outdir / "report.json").is_file()):
                return False, row
        return True, row
