"""Three readings of a loop from the user's boxes: as drawn, a little larger and a little smaller.

A user's box is never exact, and two users draw the same LV a few pixels apart. Where the segmentation is
sound, such a change moves the EF by a point or two; where the model is torn between two readings of the
loop (an atrium decoded inside the lower LV, a base that one box includes and another does not), the EF
jumps. So a prompted model given boxes (`echosam segment` and the Slicer panel, on by default;
``--no-ef-check``; the panel's *Check the EF against the box*) reads the loop three times: from the boxes
as given and with every box grown and shrunk by ``BOX_CHANGE`` of its width and height per side (the
prompt zoom follows each box, as it would for that user; a box is clipped to the image).

- **The result is the middle reading when the three disagree** (`median_reading`): when their EFs span more
  than ``SWITCH_SPREAD`` (4) points, the run whose EF lies between the other two, with its own masks, curve and
  session (a later correction propagates from it); a reading the model is torn over is outvoted by the two
  that agree. When they agree, the EF is the same whichever is kept, so the user's boxes as given stand: on
  the real SonoSite cine the three LV-box readings agree within 2.2 points, and the 5 % smaller box's LV
  curve is the more jagged. Chosen on 74-80 selection loops (`val3`, `val2_dark`, `val2`; bundled MemSAM):
  the middle of three took the EF MAE from 4.40 to 3.64 (paired per loop -0.76 points, 95 % interval -1.44
  to -0.20), Dice unchanged; averaging the runs' probabilities gained less (-0.41), and the three boxes on
  one zoom crop little (-0.04 to -0.22): the crop's scale is what varies the reading; switching only above
  4 points kept the whole gain (-0.72) and moved 19 % of loops instead of 50 %. Held out, each with its rule
  fixed before the loops existed: always the middle, 384 loops (`draw5`), 5.04 -> 4.84, paired -0.20 (-0.41
  to -0.02); above 4 points, 384 more (`draw6`), 4.93 -> 4.74, paired -0.19 (-0.35 to -0.02), 20 % of loops
  moved; Dice within 0.002 (docs/evaluation.md, "Three readings").
  With fewer than three EFs (a changed box off the fan, or one that gives no EF) the boxes as given stand.
- **The check**: the EF is flagged (status "prompt-dependent EF") when the three EFs span more than
  ``MAX_SPREAD`` points, or a changed box gives no EF at all. The threshold was chosen on the 77 selection
  loops of `val3`, `val2_dark` and `simus_sel2` (`bench/ef_check_eval.py`): there the spread's correlation
  with the EF error was 0.53, and above 8 points it held 9 loops (12 %) whose mean EF error was 11.4 points,
  against 4.4 for the rest. On the 204 held-out loops it is a weaker signal: correlation 0.17, 24 loops
  flagged (12 %) with a mean EF error of 6.8 points against 4.35, and 6 of the 15 loops off by more than 10
  among them (docs/evaluation.md, "When the EF depends on the prompt"). So the EF is flagged, not withheld:
  a flagged EF is often right, and an unflagged one can still be wrong.

Runs seeded from a mask (a user's own outline) or by a seed model are read once: there is no box to vary.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

BOX_CHANGE = 0.05       # of the box's width and height, per side
MAX_SPREAD = 8.0        # EF points between the largest and smallest of the three runs
SWITCH_SPREAD = 4.0     # EF points the readings must span before the middle one replaces the boxes as given
FLAGGED = "prompt-dependent EF"     # the status of a flagged EF (numbers kept)
READINGS = (0.0, BOX_CHANGE, -BOX_CHANGE)    # the box change of each reading, the boxes as given first


def scaled_box(box, change: float, shape_hw=None) -> tuple:
    """(x0, y0, x1, y1) grown (``change`` > 0) or shrunk (< 0) about its centre by ``change`` of its width and
    height on each side; clipped to an (H, W) image when ``shape_hw`` is given (a box drawn to the image's edge
    cannot grow past it)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = change * (x1 - x0), change * (y1 - y0)
    x0, y0, x1, y1 = x0 - dx, y0 - dy, x1 + dx, y1 + dy
    if shape_hw is None:
        return (x0, y0, x1, y1)
    h, w = (int(v) for v in shape_hw)
    return (max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0))


def checkable(prompts, loaded) -> bool:
    """A prompted model given at least one box, and neither a mask file nor a seed model."""
    boxes = [prompts.box] + [sp.box for sp in prompts.others.values()]
    return bool(getattr(loaded, "prompted", False)) and any(b is not None for b in boxes) \
        and prompts.mask is None and prompts.seed_model is None


def scaled_prompts(prompts, change: float, shape_hw=None):
    """``prompts`` with every box scaled by `scaled_box` (points stay where the user put them), clipped to an
    (H, W) image when ``shape_hw`` is given: a box drawn to the image's edge cannot grow past it."""
    def scale(box):
        return None if box is None else scaled_box(box, change, shape_hw)

    others = {k: replace(sp, box=scale(sp.box)) for k, sp in prompts.others.items()}
    return replace(prompts, box=scale(prompts.box), others=others)


def median_reading(runs, switch_spread: Optional[float] = None) -> float:
    """The box change of the reading to report among ``runs`` ``[(box change, EF percent)]`` (the boxes as given,
    change 0, among them): the one whose EF is the median, when there are three or more (an odd number), every
    one gave an EF and they span more than ``switch_spread`` points (default `SWITCH_SPREAD`); else the boxes as
    given (0.0): readings that agree give the same EF, and the user's own box is then kept."""
    efs = [float(ef) for _, ef in runs]
    limit = SWITCH_SPREAD if switch_spread is None else float(switch_spread)
    if len(runs) < 3 or len(runs) % 2 == 0 or not all(np.isfinite(efs)) or np.ptp(efs) <= limit:
        return 0.0
    order = np.argsort(efs, kind="stable")
    return float(runs[int(order[len(runs) // 2])][0])


@dataclass
class EFCheck:
    """The EF of the run as given and of the variants that ran (``changes``: the box change of each), in
    percent; a variant whose labels give no EF (no beat, an implausible LV) is nan. ``reported_change``: the
    box change of the reading the result is (`median_reading`; 0.0: the boxes as given)."""

    ef_percent: float
    variant_ef_percent: Sequence[float]
    changes: Sequence[float] = READINGS[1:]
    max_spread: float = MAX_SPREAD
    reported_change: float = 0.0

    @property
    def spread(self) -> float:
        """Largest minus smallest EF of the runs that gave one; nan when fewer than two did."""
        efs = [v for v in (self.ef_percent, *self.variant_ef_percent) if np.isfinite(v)]
        return float(np.ptp(efs)) if len(efs) > 1 else float("nan")

    @property
    def stable(self) -> Optional[bool]:
        """False when the runs' EFs span more than ``max_spread``, or the run gives an EF and a variant none
        (a box a little larger or smaller loses the beat); None when the run itself gives no EF or no variant
        ran; True otherwise."""
        if not np.isfinite(self.ef_percent) or not len(self.variant_ef_percent):
            return None
        if not all(np.isfinite(self.variant_ef_percent)):
            return False
        return bool(self.spread <= self.max_spread)

    @classmethod
    def of_runs(cls, ef_percent: float, variants, reported_change: float = 0.0) -> "EFCheck":
        """The check of a run's EF against its variant runs ``[(box change, EF)]``, at the current
        ``MAX_SPREAD``."""
        return cls(ef_percent, [ef for _, ef in variants], [c for c, _ in variants], max_spread=MAX_SPREAD,
                   reported_change=float(reported_change))

    @classmethod
    def of_readings(cls, runs) -> "EFCheck":
        """The check of the readings ``[(box change, EF)]``, the boxes as given (change 0) first, reporting the
        `median_reading`."""
        (_, ef), variants = runs[0], runs[1:]
        return cls.of_runs(ef, variants, median_reading(runs))

    @property
    def reported_ef_percent(self) -> float:
        """The EF of the reading the result is."""
        if not self.reported_change:
            return float(self.ef_percent)
        return float(dict(zip(self.changes, self.variant_ef_percent))[self.reported_change])

    def to_dict(self) -> dict:
        r = lambda v: None if not np.isfinite(v) else round(float(v), 2)      # noqa: E731
        return {"ef_percent": r(self.ef_percent), "box_changes": [float(c) for c in self.changes],
                "variant_ef_percent": [r(v) for v in self.variant_ef_percent], "spread": r(self.spread),
                "max_spread": float(self.max_spread), "stable": self.stable,
                "reported_box_change": float(self.reported_change)}


def read_three(given, read, ef_of) -> tuple:
    """The three readings of a loop: ``given`` (the reading from the boxes as given) and ``read(change)`` for the
    other `READINGS` (None: a changed box that cannot run, e.g. off the fan, left out); ``ef_of(reading)`` is a
    reading's EF in percent (nan: none). Returns (the reading the result is, the `EFCheck` of them all)."""
    readings = {0.0: given}
    for change in READINGS[1:]:
        reading = read(change)
        if reading is not None:
            readings[change] = reading
    check = EFCheck.of_readings([(c, float(ef_of(r))) for c, r in readings.items()])
    return readings[check.reported_change], check


def reading_text(change: float) -> str:
    """The reading with box change ``change``, in words."""
    return "the boxes as given" if not change else f"the boxes {100 * change:+.0f} % per side"


def flag_message(check: EFCheck, how_to_correct: str = "correct one and propagate again (`echosam correct`)") -> str:
    """What the user reads when ``check`` flags an EF: each run's EF, why it is flagged, and what to do."""
    runs = ", ".join(f"{v:.1f} %" if np.isfinite(v) else "no EF" for v in check.variant_ef_percent)
    pct = ", ".join(f"{100 * c:+.0f} %" for c in check.changes)
    how = (f"a spread of {check.spread:.1f} points, over the {check.max_spread:.0f} this check allows"
           if all(np.isfinite(check.variant_ef_percent)) else "a changed box loses the EF")
    shown = f" The result is the middle reading, from {reading_text(check.reported_change)}." \
        if check.reported_change else ""
    return (f"The EF depends on the prompt: {check.ef_percent:.1f} % from the boxes as given, {runs} from boxes "
            f"{pct} per side ({how}).{shown} Check the LV on the ED and ES frames before using this EF; "
            f"{how_to_correct}.")


def apply_check(res, check: Optional[EFCheck]):
    """The cardiac result as reported: an EF that moves more than ``max_spread`` with the boxes, or that a
    changed box loses, keeps its numbers and gets the status "prompt-dependent EF" and `flag_message`."""
    if check is None or check.stable is not False or not np.isfinite(res.ef_percent):
        return res
    res.message = flag_message(check) + " " + res.message
    res.status = FLAGGED
    return res


PANEL_CORRECTION = "correct a frame in the Segment Editor and press Propagate"


def check_summary(summary: dict, check: EFCheck, how_to_correct: str = PANEL_CORRECTION) -> dict:
    """A cardiac summary (`CardiacResult.summary` of the reported reading, as the Slicer panel shows it) with
    ``check`` recorded under ``ef_check``; a flagged EF keeps its numbers and gets the status
    "prompt-dependent EF", `flag_message` under ``ef_flag`` and first in its message."""
    ef = float("nan") if summary.get("ef_percent") is None else float(summary["ef_percent"])
    out = dict(summary, ef_check=check.to_dict())
    if check.stable is False and np.isfinite(ef):
        out["ef_flag"] = flag_message(check, how_to_correct)
        out["message"] = (out["ef_flag"] + " " + (summary.get("message") or "")).strip()
        out["status"] = FLAGGED
    return out
