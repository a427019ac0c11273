"""The text forms of prompts, shared by the command line (``--points``, ``--box``) and batch manifests
(``points``, ``box`` columns): points ``"x,y,1;x,y,0"`` and boxes ``"x0,y0,x1,y1"``, in cine pixels
(x = column, y = row; label 1 include, 0 exclude), each optionally for a named structure: ``"myo:x0,y0,x1,y1"``
(`split_structure`; unnamed: the run's first structure). A manifest cell holds several, separated by ``|``
(`split_cell`): ``"lv:95,60,160,150 | myo:85,50,170,158"``."""
from __future__ import annotations

import re

import numpy as np

from .errors import PromptError


def parse_points(text: str) -> tuple:
    """``"x,y,1;x,y,0"`` (cine pixels, x = column; label 1 include, 0 exclude, default 1) -> points
    (N, 2) float and labels (N,) int. The one text form of points: CLI options and batch manifests."""
    pts, labs = [], []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = item.split(",")
        if len(parts) not in (2, 3):
            raise PromptError(f"Point {item!r} is not 'x,y' or 'x,y,label' (label 1 include, 0 exclude).")
        try:
            pts.append((float(parts[0]), float(parts[1])))
            labs.append(int(parts[2]) if len(parts) == 3 else 1)
        except ValueError:
            raise PromptError(f"Point {item!r} has a non-numeric value; write points as 'x,y,1;x,y,0'.") from None
    if not pts:
        raise PromptError("--points is empty; write points as 'x,y,1;x,y,0' (cine pixels, x = column).")
    return np.asarray(pts), np.asarray(labs)


def parse_box(text: str) -> tuple:
    """``"x0,y0,x1,y1"`` (cine pixels) -> a 4-tuple of floats. The one text form of a box."""
    try:
        v = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).") from None
    if len(v) != 4:
        raise PromptError(f"--box {text!r} must be four numbers x0,y0,x1,y1 (cine pixels).")
    return v


_NAMED = re.compile(r"^\s*([A-Za-z][A-Za-z_ ]*?)\s*:(.*)$", re.S)


def split_structure(text: str) -> tuple:
    """``"myo:x0,y0,x1,y1"`` -> (``"myo"``, ``"x0,y0,x1,y1"``); text without a name -> (None, text).
    The name is checked by the caller against the run's structures."""
    m = _NAMED.match(text)
    return (m.group(1).strip(), m.group(2)) if m else (None, text)


def prompts_by_structure(points=(), boxes=(), keys=("lv",), names=("--points", "--box")) -> dict:
    """Repeated ``--points`` / ``--box`` texts (each optionally ``"name:..."``) -> {structure key:
    (points, labels, box)}; unnamed ones go to ``keys[0]``. A name that is not a structure of the run, or two
    texts of one kind for one structure, is a PromptError that says what to write instead; ``names`` are
    what the errors call the two sources (the options, or a manifest's columns)."""
    from .structures import get_structure

    out: dict = {}

    def key_of(name, text, option):
        if name is None:
            return keys[0]
        try:
            key = get_structure(name).key
        except PromptError:
            raise PromptError(f"{option} {text!r}: {name!r} is not a structure; name one of "
                              f"{', '.join(keys)} ({option} 'lv:...').") from None
        if key not in keys:
            raise PromptError(f"{option} {text!r} is for {key}, which this run does not segment (structures: "
                              f"{', '.join(keys)}); add it: --structures {','.join(list(keys) + [key])}.")
        return key

    for option, texts, slot in ((names[0], points, 0), (names[1], boxes, 2)):
        for text in texts or ():
            name, rest = split_structure(text)
            key = key_of(name, text, option)
            entry = out.setdefault(key, [None, None, None])
            if entry[slot] is not None:
                raise PromptError(f"Two {option} values for {key}; give one per structure ({option} "
                                  f"'{key}:...' once), or name the others' structures.")
            if slot == 0:
                entry[0], entry[1] = parse_points(rest)
            else:
                entry[2] = parse_box(rest)
    return {k: tuple(v) for k, v in out.items()}


def split_cell(text) -> list:
    """A manifest cell -> its prompt texts (``|``-separated; empty or missing: none)."""
    return [t.strip() for t in str(text or "").split("|") if t.strip()]


def check_prompt_texts(points=None, box=None) -> None:
    """The form of a manifest row's ``points`` / ``box`` cells (names are checked against the run's
    structures when the case runs): a PromptError naming the bad text."""
    for t in split_cell(points):
        parse_points(split_structure(t)[1])
    for t in split_cell(box):
        parse_box(split_structure(t)[1])
