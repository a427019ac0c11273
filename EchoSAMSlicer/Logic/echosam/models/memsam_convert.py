"""Official checkpoints -> MemSAM state dict in our layout (checked against
shared/reference/checkpoints/memsam_vit_b_256.tsv and sam_vit_b.tsv).

Two inputs are accepted (``module.`` prefixes already stripped by the reader):

a) **Official SAM** (``sam_vit_b_01ec64.pth`` layout; vit_l/vit_h only with a matching ``config.sam``):
   the SAM-derived keys (patch embed, blocks, neck, position table, prompt encoder, mask decoder)
   are taken as they are; every MemSAM-only key (CNN branch, post-pos-embed, adapters, memory) is
   filled from a freshly built model's initial weights, because the loader loads strictly. The
   size-dependent tables are fitted afterwards by ``sam.fit_state_dict_to_model`` (in
   ``checkpoints.load_official``): the global blocks' ``rel_pos`` 127 -> 2t-1 (63 at S=256, as the
   released ``load_from2``); ``pos_embed`` must be ``2t x 2t`` = 64 x 64 at S=256, i.e. SAM's table
   as is (the trainable post_pos_embed downsamples it), and is resized bilinearly only for S != 256.
   The patch embed keeps SAM's k16 weights; only its stride differs.
b) **Released MemSAM** (``train_video.py`` state dict): same names as ours. The duplicate
   ``memory.key_encoder.*`` copy of ``image_encoder.*`` (the released model registers the image
   encoder twice) is checked to be identical and dropped; a file that holds only the
   ``memory.key_encoder.*`` copy gets it renamed to ``image_encoder.*``.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import CheckpointError

KEY_ENCODER = "memory.key_encoder."
SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
MEMSAM_MARKERS = ("memory.", "image_encoder.cnn_embed.", "image_encoder.post_pos_embed.", "image_encoder.input_Adapter.")


def is_memsam_state(state: Mapping) -> bool:
    return any(k.startswith(MEMSAM_MARKERS) for k in state)


def drop_key_encoder_alias(state: Mapping[str, torch.Tensor]) -> dict:
    """Remove ``memory.key_encoder.*`` after checking each equals its ``image_encoder.*`` twin."""
    out = {k: v for k, v in state.items() if not k.startswith(KEY_ENCODER)}
    for k, v in state.items():
        if not k.startswith(KEY_ENCODER):
            continue
        twin = "image_encoder." + k[len(KEY_ENCODER):]
        if twin not in state:
            out[twin] = v
        elif state[twin].shape != v.shape or not torch.equal(state[twin], v):
            raise CheckpointError(f"{k} differs from {twin}; in MemSAM both name the same image encoder, so this "
                                  "file was edited or is corrupt. Re-export it from the trained model.")
    return out


def convert_official(state: Mapping[str, torch.Tensor], config) -> dict:
    """Official SAM or released MemSAM state dict -> our MemSAM key layout (see module doc)."""
    if is_memsam_state(state):
        return drop_key_encoder_alias(state)
    if "image_encoder.patch_embed.proj.weight" not in state:
        raise CheckpointError("Neither a SAM nor a MemSAM checkpoint: 'image_encoder.patch_embed.proj.weight' and "
                              "'memory.*' keys are missing. Use sam_vit_b_01ec64.pth or a MemSAM training checkpoint.")
    width = state["image_encoder.patch_embed.proj.weight"].shape[0]
    if width != config.sam.embed_dim:
        names = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
        raise CheckpointError(f"This SAM checkpoint is {names.get(width, f'width {width}')} but the MemSAM config expects "
                              f"{config.sam.name} (width {config.sam.embed_dim}). MemSAM is published with SAM ViT-B: "
                              "use sam_vit_b_01ec64.pth, or a config whose 'sam' matches the file.")
    from .registry import get_family   # the builder through the registry: memsam.py imports this module

    fresh = get_family("memsam").build(config).state_dict()
    out = {k: v for k, v in state.items() if k.startswith(SAM_PREFIXES)}
    for k, v in fresh.items():
        out.setdefault(k, v)
    return out
