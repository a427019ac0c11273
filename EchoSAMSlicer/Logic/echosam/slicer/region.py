"""The ultrasound region of the Slicer panel's session: the same crop `echosam segment` makes.

The scene holds the cine and its prompts in full-frame pixels; the worker's session runs on the
region's crop (`echosam.fan`: the DICOM ultrasound region or the fan found in the pixels, narrowed
around the prompts for a prompt-zoomed MemSAM, `echosam.zoom`). `region_for` picks the region,
`crop_prompts` maps the scene's prompts into it (a prompt off the fan is refused, as on the command
line) and `echosam.worker.job_result` maps the labels back onto the full frame. The region is part of
the session's key: a prompt that widens the zoom rebuilds the session (the encoder runs again).
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import PromptError
from ..session.store import mask_to_rle, rle_to_mask
from ..structures import get_structure


def region_for(fan, loaded, prompts, structures) -> tuple:
    """``(region, notices)``: the region the session runs on, ``fan`` (a `FanRegion`) narrowed around the boxes
    (with their include points) and masks of ``structures`` when the model was trained prompt-zoomed
    (`echosam.zoom`), and what the user should be told about it (no fan found; prompts that give the zoom no
    extent), as the command line prints it."""
    from ..zoom import joint_extent, structure_extents, zoom_for

    notices = [fan.notice] if fan.notice else []
    if not prompts:
        return fan, notices
    keys, shape = {get_structure(s).key for s in structures}, tuple(prompts["shape"])
    items = [(p["structure"], p.get("box"), p.get("points"), p.get("labels"),
              rle_to_mask(p["mask"], shape) if "mask" in p else None)
             for p in prompts.get("prompts", []) if p.get("structure") in keys]
    region, notice = zoom_for(fan, loaded, joint_extent(structure_extents(items)))
    if notice and not region.zoom:          # a successful zoom is routine; only its absence needs saying
        notices.append(notice)
    return region, notices


def crop_prompts(prompts: dict, region) -> dict:
    """A full-frame prompts dictionary (`Session.prompts_to_dict` format) -> the same prompts on the
    region's crop. A point or box off the region's crop is a PromptError; a mask loses what lies
    outside the fan (the model never sees it and no label is written there)."""
    if region.is_identity:
        return prompts
    x0, y0, x1, y1 = region.bbox
    where = (f"the imaging fan's box (x {x0}..{x1}, y {y0}..{y1})" if not region.zoom else
             f"the region the model is zoomed to (x {x0}..{x1}, y {y0}..{y1}); prompt with a box that covers it")
    out = copy.deepcopy(prompts)
    out["shape"] = list(region.crop_shape)
    for item in out.get("prompts", []):
        name = get_structure(item["structure"]).name
        if "points" in item:
            for x, y in item["points"]:
                if not region.contains_xy(x, y):
                    raise PromptError(f"A {name} point on frame {item['frame']} (x={x:g}, y={y:g}) is outside {where}.")
            item["points"] = [list(map(float, p)) for p in region.to_crop_xy(np.asarray(item["points"], float))]
        if "box" in item:
            if not region.meets_box(item["box"]):
                raise PromptError(f"The {name} box on frame {item['frame']} is outside {where}.")
            item["box"] = list(region.box_to_crop(item["box"]))
        if "mask" in item:
            crop = region.crop(rle_to_mask(item["mask"], region.shape))
            if not crop.any():
                raise PromptError(f"The {name} mask on frame {item['frame']} lies outside {where}.")
            item["mask"] = mask_to_rle(crop)
    return out


__all__ = ["region_for", "crop_prompts"]
