"""The model registry: `Resources/Models.json` entries, where their weights live, download and SHA256.

Each entry (validated against `Resources/Models.schema.json`) names a model: ``name``, ``title``,
``family`` (memsam | medivista | masam | sam), ``file`` (weights file name), ``config`` (JSON config
file name, empty for official ``.pth`` files), ``url`` (empty for bundled weights), ``sha256``,
``license``, ``input_size`` (pixels, the model's square input), ``classes`` (structure keys),
``bundled`` and ``description``.

Where files live:
- bundled demo weights ship in ``EchoSAMSlicer/Resources/Models/`` (read-only install tree);
- everything downloaded goes to a user cache, ``$ECHOSAM_CACHE`` or ``~/.cache/echosam/models``,
  never into the install tree (extension updates must not delete user downloads, and the install
  tree may be read-only).

No Qt, no torch: the Slicer module and the CLI drive downloads with a progress callback and a
`CancelToken`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .checkpoints import checkpoint_kind
from .errors import CancelledError, CheckpointError, ModelError
from .models.registry import family_name, is_prompted
from .progress import CancelToken, ProgressCallback, no_progress

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "Resources"
MODELS_JSON = RESOURCES_DIR / "Models.json"
BUNDLED_DIR = RESOURCES_DIR / "Models"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelEntry:
    """One model of `Models.json` (see the module docstring for the fields)."""

    name: str
    title: str
    family: str
    file: str
    config: str = ""
    url: str = ""
    sha256: str = ""
    license: str = ""
    input_size: int = 256
    classes: tuple = ("lv",)
    bundled: bool = False
    description: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelEntry":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        missing = [k for k in ("name", "title", "family", "file") if not d.get(k)]
        if missing:
            raise ModelError(f"Models.json entry {d.get('name', '?')!r} lacks {', '.join(missing)}.")
        kw = {k: v for k, v in d.items() if k in known}
        check_entry(kw)
        kw["family"] = family_name(kw["family"])
        kw["classes"] = tuple(kw.get("classes", ("lv",)))
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d.update(d.pop("extra"))
        return d

    @property
    def prompted(self) -> bool:
        """MemSAM and SAM need prompts; MediViSTA / MA-SAM segment without them (models.registry)."""
        return is_prompted(self.family)

    def summary(self) -> str:
        """One line for a model chooser: title, input size, license."""
        return f"{self.title} - {self.input_size} px input - license: {self.license or 'unknown'}"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def plain_file_name(value, what: str, name: str) -> str:
    """``value`` when it is a plain file name (no folder part, not absolute, not ``.``/``..``)."""
    text = str(value)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text or Path(text).is_absolute()
            or Path(text).name != text or os.path.isabs(text) or ":" in text):
        raise ModelError(f"Models.json entry {name!r}: {what} {text!r} must be a plain file name (no folders); "
                         "the registry is damaged, reinstall the extension.")
    return text


def check_entry(d: dict) -> None:
    """The registry schema, checked when Models.json is loaded: plain file names (weights and config),
    https URLs, and a 64-hex-digit sha256 for every downloadable entry."""
    name = str(d.get("name", "?"))
    plain_file_name(d.get("file", ""), "file", name)
    if d.get("config"):
        plain_file_name(d["config"], "config", name)
    url = str(d.get("url") or "")
    if url and not url.lower().startswith("https://"):
        raise ModelError(f"Models.json entry {name!r}: url {url!r} must be an https:// address.")
    sha = str(d.get("sha256") or "").strip().lower()
    if (url or not d.get("bundled")) and not _SHA256.fullmatch(sha):
        raise ModelError(f"Models.json entry {name!r}: a downloadable model needs a sha256 of 64 hex digits "
                         f"(got {sha or 'none'!r}).")
    if sha and not _SHA256.fullmatch(sha):
        raise ModelError(f"Models.json entry {name!r}: sha256 {sha!r} is not 64 hex digits.")


# ---- the registry ------------------------------------------------------------------------------
def _read_registry(path: Optional[Path] = None) -> dict:
    p = Path(path) if path else MODELS_JSON
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"Model registry {p} is missing; reinstall the extension.") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"Model registry {p} is not valid JSON ({exc}); reinstall the extension.") from None


def default_model_name(path: Optional[Path] = None) -> str:
    """The model used when none is chosen: Models.json's ``default`` (the one place it is written)."""
    data = _read_registry(path)
    name = data.get("default")
    if not name or name not in {m.get("name") for m in data.get("models", [])}:
        raise ModelError(f"Model registry {Path(path) if path else MODELS_JSON} has no valid 'default' model; "
                         "reinstall the extension.")
    return str(name)


def phantom_demo_model_name(path: Optional[Path] = None) -> str:
    """The model of ``echosam demo`` (the phantom check): Models.json's ``phantom_demo``, a model trained on
    the phantom it is checked on; the registry ``default`` when the key is absent."""
    data = _read_registry(path)
    name = data.get("phantom_demo")
    return str(name) if name in {m.get("name") for m in data.get("models", [])} else default_model_name(path)


def load_registry(path: Optional[Path] = None) -> list[ModelEntry]:
    """All entries of Models.json (the bundled one unless ``path`` is given)."""
    p = Path(path) if path else MODELS_JSON
    data = _read_registry(p)
    entries = [ModelEntry.from_dict(d) for d in data.get("models", [])]
    names = [e.name for e in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ModelError(f"Model registry {p} lists {', '.join(sorted(dup))} more than once.")
    return entries


def get_entry(name: str, registry: Optional[list] = None) -> ModelEntry:
    entries = registry if registry is not None else load_registry()
    for e in entries:
        if e.name == name:
            return e
    raise ModelError(f"Unknown model {name!r}; choose from {', '.join(e.name for e in entries)}, "
                     "or give the path of a checkpoint file.")


def cache_dir() -> Path:
    """Where downloaded weights go: ``$ECHOSAM_CACHE`` or ``~/.cache/echosam/models``."""
    env = os.environ.get("ECHOSAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "echosam" / "models"


def local_path(entry: ModelEntry) -> Path:
    """Where this entry's weights file is (or will be after download): always inside the bundled
    folder or the cache (the file name is checked again here, for entries built in code)."""
    return (BUNDLED_DIR if entry.bundled else cache_dir()) / plain_file_name(entry.file, "file", entry.name)


def is_available(entry: ModelEntry) -> bool:
    return local_path(entry).is_file()


def resolve_model(name_or_path, registry: Optional[list] = None) -> Path:
    """A Models.json name or a file path -> the weights file on disk.

    Raises `CheckpointError` saying how to get the file when it is not there yet.
    """
    p = Path(str(name_or_path)).expanduser()
    if p.suffix and p.is_file():
        return p.resolve()
    if p.suffix and (os.sep in str(name_or_path) or checkpoint_kind(p) is not None):
        raise CheckpointError(f"Checkpoint file {p} does not exist; check the path.")
    entry = get_entry(str(name_or_path), registry)
    path = local_path(entry)
    if path.is_file():
        return path
    if entry.bundled:
        raise CheckpointError(f"Bundled weights {path.name} are missing from {path.parent}; reinstall the extension.")
    raise CheckpointError(f"Weights of {entry.name!r} are not downloaded yet ({path}). Download them with "
                          f"`echosam download {entry.name}` (or the Download button in Slicer), or pass a file you "
                          "already have with --model FILE.")


# ---- integrity -----------------------------------------------------------------------------------
def sha256_of(path, cancel: Optional[CancelToken] = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            if cancel is not None:
                cancel.raise_if_cancelled()
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path, expected: str) -> str:
    """Check a file against its published SHA256; returns the actual hash.

    An empty ``expected`` means no published hash: the hash is returned unchecked (the caller shows
    it so the user can verify it). A mismatch raises `CheckpointError` naming both hashes.
    """
    actual = sha256_of(path)
    exp = (expected or "").strip().lower()
    if exp and actual != exp:
        raise CheckpointError(f"{Path(path).name} is corrupt or not the expected file: SHA256 {actual}, "
                              f"expected {exp}. Delete it and download again.")
    return actual


# ---- getting files -------------------------------------------------------------------------------
def download(entry: ModelEntry, progress: ProgressCallback = no_progress, cancel: Optional[CancelToken] = None,
             timeout: float = 60.0) -> Path:
    """Download ``entry.url`` into the cache (temp file, SHA256 check, then rename).

    ``progress(done_bytes, total_bytes, message)``; ``cancel`` stops between chunks and leaves no
    partial file. Returns the final path. Bundled entries are not downloaded.
    """
    if entry.bundled:
        return resolve_model(entry.name, [entry])
    if not entry.url:
        raise ModelError(f"{entry.name!r} has no download URL; select a checkpoint file you already have.")
    dest = local_path(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                if cancel is not None and cancel.cancelled:
                    raise CancelledError(f"Download of {entry.name} cancelled; nothing was kept.")
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                progress(done, max(total, done), f"{entry.name}: {done / 1e6:.1f} MB")
        if total and done != total:
            raise ModelError(f"Download of {entry.name} from {entry.url} was cut short: {done} of {total} bytes "
                             "arrived; nothing was kept. Try again.")
        verify_sha256(tmp, entry.sha256)
        os.replace(tmp, dest)
    except http.client.HTTPException as exc:       # IncompleteRead, bad status line: not OSErrors
        raise ModelError(f"Download of {entry.name} from {entry.url} was cut short ({type(exc).__name__}); nothing "
                         "was kept. Try again.") from None
    except OSError as exc:
        raise ModelError(f"Could not download {entry.name} from {entry.url}: {exc}. Check the network "
                         "(or a proxy), or download the file yourself and select it.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def use_existing_file(path, entry: ModelEntry, copy: bool = True) -> Path:
    """Register "a checkpoint file I already have" for ``entry``: verify its SHA256 (when the entry
    publishes one) and copy it into the cache under the entry's file name (``copy=False`` only
    verifies and returns the path as is)."""
    src = Path(path).expanduser()
    if not src.is_file():
        raise CheckpointError(f"Checkpoint file {src} does not exist; check the path.")
    verify_sha256(src, entry.sha256)
    if not copy:
        return src.resolve()
    dest = cache_dir() / plain_file_name(entry.file, "file", entry.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.resolve() != src.resolve():
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return dest


def clear_cache(keep: tuple = ()) -> list[Path]:
    """Delete downloaded weights (not bundled ones); returns the deleted paths."""
    removed = []
    d = cache_dir()
    if d.is_dir():
        for p in d.iterdir():
            if p.is_file() and p.name not in keep:
                p.unlink()
                removed.append(p)
    return removed
