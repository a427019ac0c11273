"""What a batch runs on: the cases of a folder, a glob, a CSV manifest, EchoNet-Dynamic or CAMUS.

`discover(spec, split=None)` turns the ``INPUT`` of ``echosam batch`` into a `Manifest`: its kind, its
root folder and the `Case` list in a fixed order (sorted paths; a CSV's row order), so that every run,
every backend and every shard sees the same cases in the same order.

- **folder**: every cine file below it (any format `read_cine` reads, DICOM without extension included)
  and every folder of PNG frames; hidden entries, CAMUS-style label maps (``*_gt``) and the batch's own
  output folder are skipped.
- **glob**: ``"data/**/*.avi"`` (quoted, so the shell leaves it alone); the root is the matches' common folder.
- **CSV manifest**: a column ``path`` (or ``file``, ``cine``, ``filename``, ``video``) relative to the
  CSV's folder or absolute; optional prompt columns ``points`` (``x,y,1;x,y,0``), ``box`` (``x0,y0,x1,y1``),
  ``frame``, ``mask``, ``mask_frame``; optional ``orientation`` (``standard``, ``mirrored`` or ``auto``: how this
  case's apical view is displayed, over ``--orientation``); optional truth columns ``ef``, ``edv``, ``esv`` (or
  ``true_ef`` ...); optional ``split``.
- **EchoNet-Dynamic**: the dataset folder (``FileList.csv`` + ``Videos/``) or its ``FileList.csv``, read as
  published (``FileName`` with or without ``.avi``; ``EF``, ``ESV``, ``EDV`` as truth; ``Split`` TRAIN / VAL /
  TEST, filtered by ``split``).
- **CAMUS**: the folder of ``patientNNNN/`` folders; each ``patientNNNN_{2CH,4CH}[_half]_sequence.nii.gz``
  is a case, with the ``EF``/``EDV``/``ESV`` (or ``LVef``/``LVedv``/``LVesv``) of its ``Info_{view}.cfg``.

A case's id is its path relative to the root without the cine suffix (``Videos/0X1A2B``); it is also
where its outputs go below the batch output folder, so the output tree mirrors the input.
"""
from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import EchoSAMError
from ..io import cine_stem, is_cine_file
from ..orientation import parse_orientation
from ..prompt_text import check_prompt_texts

PATH_COLUMNS = ("path", "file", "cine", "filename", "video")
TRUTH_COLUMNS = {"ef": ("ef", "true_ef", "ef_true"), "edv": ("edv", "true_edv", "edv_true"),
                 "esv": ("esv", "true_esv", "esv_true")}
ECHONET_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split")
CAMUS_SEQUENCE = re.compile(r"^(patient\d+)_(2CH|4CH)(_half)?_sequence\.nii(\.gz)?$", re.IGNORECASE)
CAMUS_TRUTH = {"ef": ("EF", "LVef"), "edv": ("EDV", "LVedv"), "esv": ("ESV", "LVesv")}
RESERVED = {".echosam-batch"}


@dataclass(frozen=True)
class Case:
    """One cine of a batch. ``case_id`` (posix, no suffix) is also its output folder below the batch
    output; ``input`` is its path as the summary shows it (relative to the manifest root, never absolute);
    ``prompt`` holds the manifest's prompt as text (``points``, ``box``, ``frame``, ``mask``, ``mask_frame``);
    ``truth`` the reference values given (``ef`` %, ``edv``/``esv`` ml)."""

    case_id: str
    path: str
    input: str
    split: str = ""
    prompt: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)


@dataclass
class Manifest:
    kind: str                      # folder | glob | file | csv | echonet | camus
    root: Path
    cases: list
    split: Optional[str] = None

    @property
    def has_truth(self) -> bool:
        return any("ef" in c.truth for c in self.cases)


# ---- entry point ----------------------------------------------------------------------------------
def discover(spec, split: Optional[str] = None, exclude=None) -> Manifest:
    """The cases of ``spec`` (a folder, a glob, a CSV manifest, an EchoNet-Dynamic folder or FileList.csv,
    a CAMUS folder, or one cine file), keeping those of ``split`` when the source has splits. ``exclude``
    (the batch output folder) is never scanned."""
    text = str(spec)
    p = Path(text).expanduser()
    excl = Path(exclude).resolve() if exclude else None
    if not p.exists() and any(ch in text for ch in "*?["):
        man = _from_paths("glob", [Path(m) for m in sorted(glob.glob(text, recursive=True))], excl)
        if not man.cases:
            raise EchoSAMError(f"No cine matches {text!r}; check the pattern (quote it so the shell leaves it alone).")
    elif p.is_dir() and (p / "FileList.csv").is_file() and (p / "Videos").is_dir():
        man = read_echonet(p / "FileList.csv", split)
    elif p.is_dir() and is_camus_root(p):
        man = read_camus(p)
    elif p.is_dir():
        man = _from_paths("folder", _scan(p.resolve(), excl), excl, root=p.resolve())
        if not man.cases:
            raise EchoSAMError(f"{p} holds no cine files; give a folder of cines, a glob, or a CSV manifest.")
    elif p.is_file() and p.suffix.lower() == ".csv":
        header = _csv_header(p)
        man = read_echonet(p, split) if {"FileName", "EF", "Split"} <= set(header) else read_csv_manifest(p, split)
    elif p.is_file() and is_cine_file(p):
        man = _from_paths("file", [p], excl)
    elif not p.exists():
        raise EchoSAMError(f"{text} does not exist; give a folder, a glob, a CSV manifest or a cine file.")
    else:
        raise EchoSAMError(f"{p.name} is not a cine, a folder or a .csv manifest; see `echosam batch --help`.")
    if split and man.kind not in ("echonet", "csv"):
        raise EchoSAMError(f"--split {split} applies to EchoNet-Dynamic and CSV manifests with a split column; "
                           f"{text} is a {man.kind} input.")
    _check_ids(man.cases)
    man.split = split
    return man


# ---- folders and globs ------------------------------------------------------------------------------
def _is_png_folder(d: Path) -> bool:
    try:
        names = [e for e in os.scandir(d)]
    except OSError:
        return False
    if any(e.is_dir() for e in names):
        return False
    return (d / "cine.json").is_file() or (bool(names) and all(e.name.lower().endswith(".png") for e in names))


def _wanted(p: Path) -> bool:
    return not p.name.startswith(".") and not cine_stem(p).lower().endswith("_gt")


def _scan(root: Path, exclude: Optional[Path]) -> list:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith(".") or (exclude is not None and sub.resolve() == exclude):
                continue
            (out.append(sub) if _is_png_folder(sub) else keep.append(d))
        dirnames[:] = keep
        out += [here / f for f in sorted(filenames) if _wanted(here / f) and is_cine_file(here / f)]
    return sorted(out)


def _from_paths(kind: str, paths: list, exclude: Optional[Path], root: Optional[Path] = None) -> Manifest:
    paths = [p.resolve() for p in paths if (p.is_dir() and _is_png_folder(p)) or (_wanted(p) and is_cine_file(p))]
    paths = [p for p in paths if exclude is None or exclude not in p.parents]
    if root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path.cwd()
    cases = [Case(case_id=_case_id(p, root), path=str(p), input=p.relative_to(root).as_posix()) for p in paths]
    return Manifest(kind, root, cases)


def _case_id(path: Path, root: Path) -> str:
    rel = Path(path).relative_to(root)
    return (rel.parent / cine_stem(rel)).as_posix() if rel.suffix else rel.as_posix()


def _check_ids(cases: list) -> None:
    seen = {}
    for c in cases:
        if c.case_id.split("/")[0] in RESERVED:
            raise EchoSAMError(f"{c.input}: the name {c.case_id.split('/')[0]!r} is reserved for the batch's state.")
        if c.case_id in seen:
            raise EchoSAMError(f"{seen[c.case_id]} and {c.input} would write to the same output folder "
                               f"{c.case_id!r}; rename one of them or list them in separate batches.")
        seen[c.case_id] = c.input


# ---- CSV manifests --------------------------------------------------------------------------------
def _csv_header(path: Path) -> list:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _read_rows(path: Path) -> list:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values())]


def _number(value, where: str) -> Optional[float]:
    text = (value or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise EchoSAMError(f"{where}: {text!r} is not a number.") from None


def _prompt(row: dict, where: str, base: Path) -> dict:
    out = {}
    for key in ("points", "box", "mask"):
        text = (row.get(key) or "").strip()
        if text:
            out[key] = text
    for key in ("frame", "mask_frame"):
        v = _number(row.get(key), f"{where}, column {key}")
        if v is not None:
            out[key] = int(v)
    try:
        check_prompt_texts(out.get("points"), out.get("box"))
        if (row.get("orientation") or "").strip():      # this case's display (`echosam.orientation`)
            out["orientation"] = parse_orientation(row["orientation"])
    except EchoSAMError as exc:
        raise EchoSAMError(f"{where}: {exc}") from None
    if "mask" in out and not Path(out["mask"]).is_absolute():
        out["mask_path"] = str((base / out["mask"]).resolve())
    elif "mask" in out:
        out["mask_path"] = out["mask"]
    return out


def read_csv_manifest(path, split: Optional[str] = None) -> Manifest:
    """A CSV manifest (see the module docstring) -> its cases, in row order."""
    path = Path(path).resolve()
    rows = _read_rows(path)
    if not rows:
        raise EchoSAMError(f"{path.name} lists no cases.")
    cols = {c.lower().strip(): c for c in rows[0] if c}
    col = next((cols[c] for c in PATH_COLUMNS if c in cols), None)
    if col is None:
        raise EchoSAMError(f"{path.name} has no path column; name one of {', '.join(PATH_COLUMNS)}.")
    if split and "split" not in cols:
        raise EchoSAMError(f"--split {split}: {path.name} has no split column.")
    base = path.parent
    entries = []
    for n, row in enumerate(rows, start=2):
        where = f"{path.name} line {n}"
        row = {k.lower().strip(): v for k, v in row.items() if k}
        text = (row.get(col.lower().strip()) or "").strip()
        if not text:
            raise EchoSAMError(f"{where}: the {col} column is empty.")
        if split and (row.get("split") or "").strip().upper() != split.upper():
            continue
        cine = Path(text).expanduser()
        cine = cine if cine.is_absolute() else base / cine
        truth = {}
        for key, names in TRUTH_COLUMNS.items():
            v = next((_number(row[c], f"{where}, column {c}") for c in names if (row.get(c) or "").strip()), None)
            if v is not None:
                truth[key] = v
        entries.append((Path(os.path.abspath(cine)), (row.get("split") or "").strip(), _prompt(row, where, base),
                        truth))
    paths = [e[0] for e in entries]
    inside = all(base in p.parents for p in paths)
    root = base if inside or not paths else Path(os.path.commonpath([str(p.parent) for p in paths]))
    cases = [Case(case_id=_case_id(p, root), path=str(p), input=p.relative_to(root).as_posix(), split=s,
                  prompt=pr, truth=t) for p, s, pr, t in entries]
    return Manifest("csv", root, cases)


# ---- EchoNet-Dynamic ------------------------------------------------------------------------------
def read_echonet(filelist, split: Optional[str] = None) -> Manifest:
    """EchoNet-Dynamic's ``FileList.csv`` as published; videos in ``Videos/`` next to it. A listed video
    that is missing stays a case (it becomes an error row, the batch goes on)."""
    filelist = Path(filelist).resolve()
    root = filelist.parent
    rows = _read_rows(filelist)
    missing = [c for c in ("FileName", "EF", "Split") if rows and c not in rows[0]]
    if not rows or missing:
        raise EchoSAMError(f"{filelist} is not EchoNet-Dynamic's FileList.csv (columns {', '.join(ECHONET_COLUMNS)}); "
                           f"{'it lists no videos' if not rows else 'missing ' + ', '.join(missing)}.")
    want = split.upper() if split else None
    if want and want not in {str(r["Split"]).strip().upper() for r in rows}:
        raise EchoSAMError(f"--split {split}: FileList.csv has splits "
                           f"{', '.join(sorted({str(r['Split']).strip().upper() for r in rows}))}.")
    cases = []
    for n, r in enumerate(rows, start=2):
        s = str(r["Split"]).strip().upper()
        if want and s != want:
            continue
        name = str(r["FileName"]).strip()
        name = name if name.lower().endswith(".avi") else name + ".avi"
        truth = {k: v for k, v in ((k, _number(r.get(c), f"FileList.csv line {n}, column {c}"))
                                    for k, c in (("ef", "EF"), ("edv", "EDV"), ("esv", "ESV"))) if v is not None}
        cases.append(Case(case_id=f"Videos/{cine_stem(Path(name))}", path=str(root / "Videos" / name),
                          input=f"Videos/{name}", split=s, truth=truth))
    return Manifest("echonet", root, cases)


# ---- CAMUS ----------------------------------------------------------------------------------------
def is_camus_root(path: Path) -> bool:
    """True for a folder of ``patientNNNN/`` folders holding CAMUS ``*_sequence.nii.gz`` files."""
    for d in sorted(Path(path).glob("patient*"))[:5]:
        if d.is_dir() and any(CAMUS_SEQUENCE.match(f.name) for f in d.iterdir()):
            return True
    return False


def _camus_cfg(path: Path) -> dict:
    out = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                out[key] = value
    return out


def read_camus(root) -> Manifest:
    """Every 2CH/4CH sequence of a CAMUS tree (patients in order, 2CH before 4CH), truth from Info_{view}.cfg."""
    root = Path(root).resolve()
    cases = []
    for d in sorted(p for p in root.glob("patient*") if p.is_dir()):
        for f in sorted(d.iterdir()):
            m = CAMUS_SEQUENCE.match(f.name)
            if not m:
                continue
            cfg = _camus_cfg(d / f"Info_{m.group(2).upper()}.cfg")
            truth = {}
            for key, names in CAMUS_TRUTH.items():
                v = next((cfg[c] for c in names if c in cfg), None)
                if v is not None:
                    truth[key] = _number(v, f"{d.name}/Info_{m.group(2)}.cfg, {key}")
            cases.append(Case(case_id=_case_id(f, root), path=str(f), input=f.relative_to(root).as_posix(),
                              truth=truth))
    return Manifest("camus", root, cases)
