"""Which way round an apical view is displayed: as the models were trained, mirrored left-right, or upside down.

Echo labs differ in how they display apical views: most follow the ASE/EACVI convention (apical
four-chamber: the LV on the screen's right, the RV on its left); some (e.g. the Mayo convention) show
the same views mirrored, the LV on the left. The bundled models were trained on the first. Shown a
mirrored four-chamber loop they lose much of the atrium and myocardium (docs/evaluation.md, "Mirrored
displays"), so a mirrored view is flipped back before the model sees it. `echosam.fan.FanRegion` owns
the flip (its crop is flipped, and every mapping flips back: prompts in, labels out), so the user's
prompts and every output stay on the cine's own pixels.

Some labs (pediatric ones especially) also show apical views *apex down*, the sector's apex at the bottom of the
screen. That needs no model to see: the fan's own shape says it (`apex_at_bottom`: an upright sector widens with
depth). Such a loop is always turned upright for the model, with a notice; the labels stay on the cine as
displayed. Left and right are then judged on the upright view.

``orientation`` (the ``--orientation`` option, the Slicer panel's "Display"), left and right:

- ``"standard"`` (default): the loop as displayed. It is still read as for "auto" (unless ``check`` is
  off): a loop that looks mirrored is segmented as displayed, with a warning that names the option.
- ``"mirrored"``: the user says the display is mirrored; the crop is flipped.
- ``"auto"``: read by `READER` (the bundled prompt-free MA-SAM, whatever model then
  segments): its mean per-pixel confidence (negative entropy of its class probabilities) over the
  first `READ_FRAMES` frames of the fan's crop, flipped minus as displayed. Above `MIRROR_MARGIN` the
  loop is taken as mirrored and a notice says so. A four-chamber view's two sides differ enough for this;
  a two-chamber view's barely do, so a mirrored two-chamber loop is seldom found: a lab that displays
  its views mirrored says so with ``"mirrored"``. The threshold was chosen so that no loop displayed the
  standard way was flipped on the loops it was chosen on (docs/evaluation.md). On fresh loops it flipped
  none of 144 shown the standard way but found only 81 % of the mirrored four-chamber loops (69 % of the
  darkest), under the 85 % set beforehand for making it the default: it is offered, not the default.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Optional

import numpy as np

from .errors import EchoSAMError

ORIENTATIONS = ("standard", "mirrored", "auto")
DEFAULT = "standard"
READER = "echosam-sim-masam-small"   # the bundled prompt-free model that reads the display's orientation
READ_FRAMES = 20                     # two of its 10-frame windows
MIRROR_MARGIN = 0.02                 # the flipped crop's confidence over the displayed one, to call it mirrored


def parse_orientation(value: Optional[str]) -> str:
    """``None`` -> `DEFAULT`; else one of `ORIENTATIONS` (any case), or an error that lists them."""
    if value is None:
        return DEFAULT
    v = str(value).strip().lower()
    if v not in ORIENTATIONS:
        raise EchoSAMError(f"orientation {value!r} is not one of {', '.join(ORIENTATIONS)}: standard = the LV on "
                           "the screen's right in an apical four-chamber view, mirrored = on its left.")
    return v


@lru_cache(maxsize=2)
def _reader(name: str, device: str):
    from .checkpoints import load_model
    return load_model(name, device=device)


def confidence(loaded, grey: np.ndarray) -> float:
    """Mean per-pixel negative entropy of a prompt-free model's class probabilities over ``grey`` (T, h, w)
    0..255 frames: 0 when it is sure of every pixel, lower the less sure it is."""
    import torch
    from .models.fast import inference_context

    model, dev = loaded.model, loaded.device
    with inference_context(torch.device(dev), "auto", width=loaded.config.sam.embed_dim):
        frames = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32)).to(dev)
        p = model.segment_video(model.prepare_frames(frames)).float()
    return float((p.clamp_min(1e-6).log() * p).sum(1).mean())


def mirror_margin(loaded, grey: np.ndarray) -> float:
    """`confidence` of the first `READ_FRAMES` frames flipped left-right minus as displayed: positive when
    ``loaded`` reads the flipped loop more surely (the display is likely mirrored)."""
    g = np.asarray(grey, dtype=np.float32)[:READ_FRAMES]
    return confidence(loaded, g[:, :, ::-1]) - confidence(loaded, g)


def apex_at_bottom(region) -> bool:
    """Whether a found fan (DICOM or detected; not a box or the whole frame) is a sector with its apex at the
    bottom (`echosam.fan_pixels.apex_at_bottom`: an upright sector widens with depth)."""
    from .fan_pixels import apex_at_bottom as points_down
    return region.source in ("dicom", "detected") and points_down(region.mask)


def orient(region, cine, orientation: Optional[str] = DEFAULT, reader=None, device: str = "cpu", notify=None,
           check: bool = True):
    """``region`` (a `FanRegion` of ``cine``) with its orientation set. Upside down when its fan's apex is at the
    bottom (`apex_at_bottom`, announced through ``notify``). Left-right as ``orientation`` says, or for "auto" as
    `READER` (or ``reader``, a loaded prompt-free model) reads it on the upright crop, announcing a loop it takes
    as mirrored. "standard" with ``check`` reads it too, flips nothing, and warns through ``notify`` when the loop
    looks mirrored (the user may not know the option)."""
    from .cine import grey_0_255

    spec = parse_orientation(orientation)
    say = notify or (lambda _: None)
    down = apex_at_bottom(region)
    if down:
        say("the imaging fan's apex is at the bottom (an apex-down display): the model sees the loop upright, and "
            "every label is drawn on the cine as displayed")

    def oriented(mirrored: bool, source: str = "given", margin=None, **more):
        return replace(region, orientation={"mirrored": bool(mirrored), "apex_down": down, "source": source,
                                            "margin": margin, **more})

    if spec == "mirrored" or (spec == "standard" and not check):
        return oriented(spec == "mirrored")
    try:
        model = reader if reader is not None else _reader(READER, device)
    except EchoSAMError as e:
        if spec == "auto":
            raise EchoSAMError(f"--orientation auto needs the bundled reader {READER}, which did not load ({e}); "
                               "name the display instead: --orientation standard or mirrored.") from None
        say(f"the orientation check could not run ({READER} did not load: {e}); segmenting as displayed")
        return oriented(False)
    upright = oriented(False)
    margin = mirror_margin(model, grey_0_255(upright.crop_cine(cine).frames)[:READ_FRAMES])
    looks = margin > MIRROR_MARGIN
    why = f"an apical view with the LV on the screen's left; confidence margin {margin:.3f} > {MIRROR_MARGIN}"
    if spec == "standard":
        if looks:
            say(f"this loop looks mirrored ({why}) but was segmented as displayed (--orientation standard, the "
                "default): if your display shows the four-chamber LV on the left, run with --orientation mirrored "
                "(the Slicer panel's Display), or the atrium and myocardium may be missed")
        return oriented(False, margin=round(margin, 4), looks_mirrored=bool(looks))
    if looks:
        say(f"this loop looks mirrored ({why}): the model sees it flipped back, and every label is drawn on the "
            "cine as displayed; --orientation standard keeps it as it is")
    return oriented(looks, "read", round(margin, 4))


__all__ = ["ORIENTATIONS", "DEFAULT", "READER", "READ_FRAMES", "MIRROR_MARGIN", "parse_orientation", "confidence",
           "mirror_margin", "apex_at_bottom", "orient"]
