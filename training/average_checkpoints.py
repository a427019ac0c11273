"""Weight-space average of a fine-tuned checkpoint and the checkpoint it was fine-tuned from.

    python -m training.average_checkpoints runs/X/best.safetensors INIT.safetensors --weight 0.5 \
        --out runs/X_avg/best.safetensors

``(1 - weight) * first + weight * second``, tensor by tensor (integer buffers are taken from the first).
Averaging a fine-tune with its starting point (Wortsman et al., "Robust fine-tuning of zero-shot models",
CVPR 2022) keeps part of what each learnt; for the bundled MemSAM it traded half of the fine-tune's Dice
gain for half of its lost EF accuracy on the validation loops. Both files must be the same family with the
same architecture; the result keeps the first one's provenance, plus what it was averaged with.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.errors import EchoSAMError
from echosam.model_zoo import sha256_of


def average(first, second, weight: float, out) -> Path:
    if not 0.0 <= weight <= 1.0:
        raise EchoSAMError(f"--weight must lie in 0..1 (the second checkpoint's share), got {weight}.")
    a, b = load_checkpoint(first), load_checkpoint(second)
    if a.family != b.family or dataclasses.asdict(a.config) != dataclasses.asdict(b.config):
        raise EchoSAMError(f"{first} ({a.family}) and {second} ({b.family}) are not the same architecture; only "
                           "checkpoints of one model (a fine-tune and its starting point) can be averaged.")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    mixed = {k: (sa[k].float() * (1.0 - weight) + sb[k].float() * weight).to(sa[k].dtype)
             if sa[k].is_floating_point() else sa[k] for k in sa}
    a.model.load_state_dict(mixed)
    prov = dict(a.meta.get("provenance") or {})
    prov["averaged"] = {"with": str(second), "with_sha256": sha256_of(Path(second)), "weight": weight,
                        "first": str(first), "first_sha256": sha256_of(Path(first))}
    return save_checkpoint(a.model, a.family, a.config, out, classes=a.meta.get("classes"), provenance=prov)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", help="the fine-tuned checkpoint (.safetensors, own format)")
    ap.add_argument("second", help="the checkpoint it was fine-tuned from")
    ap.add_argument("--weight", type=float, default=0.5, help="the second checkpoint's share (0..1)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        print(average(args.first, args.second, args.weight, args.out))
    except EchoSAMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
