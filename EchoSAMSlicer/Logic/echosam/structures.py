"""The cardiac structures EchoSAM segments, with fixed label values, segment IDs, names, colours
and DICOM/SNOMED terminology.

Label values follow CAMUS (1 LV cavity/endocardium, 2 myocardium, 3 left atrium, 0 background),
so CAMUS ground truth, model outputs and written label files share one convention.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import PromptError


@dataclass(frozen=True)
class Structure:
    key: str            # short name used on the command line: lv, myo, la
    label: int          # value in label maps (CAMUS convention)
    segment_id: str     # fixed segment ID in Slicer segmentations
    name: str           # display name
    color: tuple        # RGB in 0..1
    # DICOM terminology triplets (CodingSchemeDesignator, CodeValue, CodeMeaning)
    category: tuple = ("SCT", "123037004", "Anatomical Structure")
    type: tuple = ("SCT", "0", "")
    # the cavity this structure wraps (key), if any: in a 2D view the myocardium is a horseshoe around the LV
    # cavity whose walls can show as separate pieces; pieces beside that cavity belong to the structure
    wraps: str | None = None


STRUCTURES: dict[str, Structure] = {
    "lv": Structure("lv", 1, "LV_endo", "Left ventricle cavity", (0.85, 0.20, 0.20),
                    type=("SCT", "87878005", "Left ventricle")),
    "myo": Structure("myo", 2, "LV_myo", "Left ventricle myocardium", (0.20, 0.45, 0.90),
                     type=("SCT", "74281007", "Myocardium"), wraps="lv"),
    "la": Structure("la", 3, "LA", "Left atrium", (0.20, 0.75, 0.30),
                    type=("SCT", "82471001", "Left atrium")),
}
ALL_KEYS: tuple = tuple(STRUCTURES)
BY_LABEL: dict[int, Structure] = {s.label: s for s in STRUCTURES.values()}


def get_structure(key: str) -> Structure:
    """Look up a structure by key (`lv`, `myo`, `la`), label value or segment ID."""
    if isinstance(key, int) and key in BY_LABEL:
        return BY_LABEL[key]
    k = str(key).strip()
    if k.lower() in STRUCTURES:
        return STRUCTURES[k.lower()]
    for s in STRUCTURES.values():
        if k == s.segment_id:
            return s
    raise PromptError(f"Unknown structure {key!r}; choose from {', '.join(ALL_KEYS)}.")


def wrapped_first(keys) -> list[str]:
    """Structure keys reordered so that a cavity comes before the structure that wraps it (the
    connected-region rule of the wrapper reads the cavity's result on the same frame)."""
    keys = [get_structure(k).key for k in keys]
    out: list[str] = []
    for k in keys:
        w = get_structure(k).wraps
        if w in keys and w not in out:
            out.append(w)
        if k not in out:
            out.append(k)
    return out


def parse_structures(text: str | list | tuple | None) -> list[Structure]:
    """Parse ``"lv,myo,la"`` (or a list) into structures, keeping order and dropping duplicates."""
    if text is None or text == "":
        return [STRUCTURES["lv"]]
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[Structure] = []
    for item in items:
        s = get_structure(item)
        if s not in out:
            out.append(s)
    return out


# Rules a MemSAM checkpoint was trained with (its config's ``box_helpers``), see `box_helper_points`.
BOX_HELPER_RULES = ("centre", "walls")
# "walls": where the two walls of an apical myocardium meet their box's sides. Measured on 450 simulated label
# maps (frames 0 and mid-loop): a point 8 % of the box width in from each side, 70 % of its height down from the
# apex, lies on the myocardium in 98 % of them (at 50 % of the height in only 52 %: the walls meet the sides
# near the base, where the ventricle is widest).
WALL_POINT = (0.08, 0.70)


def box_helper_points(key: str, box, rule: str = "centre") -> list:
    """Points that a box prompt implies for a structure, as ``[(x, y, label), ...]`` in the box's
    coordinates, by the ``rule`` the model was trained with (`BOX_HELPER_RULES`). A box around the
    myocardium also surrounds the cavity it encloses, so a box alone cannot tell the wall from the cavity:
    the myocardium's box carries an exclude point at its centre (inside the LV cavity in apical views).
    ``"walls"`` adds an include point on each wall (`WALL_POINT`), so the model does not settle for one wall
    where the other is faint; it assumes the apex at the top of the image (apical views as scanners show
    them). LV and LA boxes carry none. An explicit point given by the user replaces this rule."""
    if rule not in BOX_HELPER_RULES:
        raise ValueError(f"box helper rule {rule!r} is not one of {', '.join(BOX_HELPER_RULES)}")
    if get_structure(key).key != "myo":
        return []
    x0, y0, x1, y1 = (float(v) for v in box)
    out = [(0.5 * (x0 + x1), 0.5 * (y0 + y1), 0)]
    if rule == "walls":
        dx, y = WALL_POINT[0] * (x1 - x0), y0 + WALL_POINT[1] * (y1 - y0)
        out += [(x0 + dx, y, 1), (x1 - dx, y, 1)]
    return out
