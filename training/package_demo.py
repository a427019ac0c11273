"""Install trained demo weights into the extension: ``EchoSAMSlicer/Resources/Models/NAME.{safetensors,json}``.

    python -m training.package_demo runs/demo_memsam_phantom/best.safetensors echosam-demo-memsam-tiny \
        [--eval runs/demo_memsam_phantom/eval/summary.json] [--inference memory_cap=16 --why "..."]

Re-saves the checkpoint with a plain-language notice (synthetic training data, not for clinical use)
and the held-out evaluation in its provenance, then writes the file's SHA256, classes and input size
into ``Resources/Models.json`` so the registry and the weights cannot drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from echosam.checkpoints import load_checkpoint, save_checkpoint
from echosam.io.atomic import atomic_file
from echosam.model_zoo import BUNDLED_DIR, MODELS_JSON, sha256_of
from training.config import apply_set

NOTICES = {
    "phantom": ("Demonstration weights: a tiny model trained by the EchoSAMSlicer developers on SYNTHETIC phantom "
                "cines only (echosam.phantom). Not trained on patient data; not for clinical use."),
    "simulated": ("Research weights: a small model trained by the EchoSAMSlicer developers on SIMULATED "
                  "echocardiography only (training.simulator: scatterers moving with a parametric heart, imaged "
                  "through a phased-array convolution model with artefacts). Never trained on patient data; "
                  "not a medical device; not for clinical decisions."),
}
NOTICE = NOTICES["phantom"]


def _stages(prov: dict, depth: int = 0) -> list:
    """The training configs of every stage, oldest first: a fine-tune's ``init_checkpoint`` carries the
    previous stage's provenance."""
    cfg = prov.get("config") or {}
    init = (cfg.get("model") or {}).get("init_checkpoint")
    earlier = []
    if init and depth < 8 and Path(init).exists():
        before = dict(load_checkpoint(init).meta.get("provenance") or {})
        # a packaged checkpoint already holds its whole recipe; its runs/ folders may be long gone
        earlier = list(before["recipe"]) if before.get("recipe") else _stages(before, depth + 1)
    return earlier + [{"name": cfg.get("name"), "config": cfg, "steps": prov.get("steps"),
                       "metrics": prov.get("metrics")}]


def unique_stages(stages: list) -> list:
    """Each stage once, at its first place: a stage that started from a bundled file which was later
    replaced by its own descendant finds that descendant's whole recipe there, repeating itself."""
    seen, out = set(), []
    for st in stages:
        if st.get("name") not in seen:
            seen.add(st.get("name"))
            out.append(st)
    return out


def recipe_of(prov: dict) -> list:
    """The stages that made a checkpoint, oldest first. A packaged file re-packaged (to record a new held-out
    evaluation, say) keeps the recipe it holds: its stages' runs/ folders are usually gone, and rebuilding
    from them would leave only its last stage. Otherwise the ``init_checkpoint`` chain (`_stages`), plus
    the weight average when `training.average_checkpoints` made it."""
    if prov.get("recipe"):
        return list(prov["recipe"])
    stages = _stages(prov)
    if prov.get("averaged"):                      # `training.average_checkpoints` made it: the last stage
        stages.append({"name": "average_checkpoints", **prov["averaged"]})
    return unique_stages(stages)


def apply_inference_settings(loaded, settings: list, why: str = "") -> dict:
    """Set top-level model-config fields (``["memory_cap=16", ...]``) that differ at inference from
    training, on ``loaded.config``; returns the provenance record {field: {trained, bundled}, why}."""
    fields = {f.name for f in dataclasses.fields(loaded.config)}
    parsed: dict = {}
    for item in settings:
        key, sep, _ = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--inference {item!r}: give FIELD=VALUE with FIELD one of {sorted(fields)}")
        apply_set(parsed, item)                  # the value read as YAML, as training's --set reads it
    record = {k: {"trained": getattr(loaded.config, k), "bundled": v} for k, v in parsed.items()}
    if parsed:
        loaded.config = dataclasses.replace(loaded.config, **parsed)
        record["why"] = why
    return record


def merge_inference_settings(earlier: dict, record: dict) -> dict:
    """An earlier packaging's `apply_inference_settings` record with this one's: every field of both (a field
    set again keeps its first ``trained`` value, the one training used), and each packaging's why, named by
    its fields, so re-packaging a bundled file never drops what it was already run with."""
    merged = {k: v for k, v in (earlier or {}).items() if k != "why"}
    for k, v in record.items():
        if k != "why":
            merged[k] = dict(v, trained=merged[k]["trained"]) if k in merged else v
    whys = []
    for rec in (earlier or {}, record):
        if rec.get("why"):
            fields = ", ".join(k for k in rec if k != "why")
            whys.append(rec["why"] if rec["why"].startswith(fields + ":") else f"{fields}: {rec['why']}")
    if whys:
        merged["why"] = " ".join(whys)
    return merged


def ef_accuracy_rows(markdown: str, method: str) -> list:
    """The all-views rows of ``method`` in a `training.evaluate` / `bench/eval_tables.py` document: one
    ``{"set", "loops", "mae", "bias"}`` per held-out set (EF error in points), for the report to quote."""
    rows, current, header = [], None, None
    for line in markdown.splitlines():
        if line.startswith("#"):                 # a "### set" heading starts a set; any other heading ends it
            current, header = (line[4:].split(" ")[0] if line.startswith("### ") else None), None
            continue
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "method":
            header = cells if {"view", "n", "EF MAE", "EF bias"} <= set(cells) else None   # another table's layout
        elif header and current and cells[0] == method and cells[header.index("view")] == "all":
            get = lambda k: cells[header.index(k)]       # noqa: E731
            try:                                          # "5.1 (3/4 with EF)": loops without an EF are left out
                rows.append({"set": current, "loops": int(get("n")), "mae": float(get("EF MAE").split()[0]),
                             "bias": float(get("EF bias"))})
            except ValueError:                            # "–": no EF on that set
                continue
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="trained .safetensors (own format)")
    p.add_argument("name", help="Models.json entry name, e.g. echosam-demo-memsam-tiny")
    p.add_argument("--eval", default=None, help="held-out evaluation to record (summary.md of training.evaluate)")
    p.add_argument("--inference", action="append", default=[], metavar="FIELD=VALUE",
                   help="a model-config field that runs differently from training (recorded in the provenance)")
    p.add_argument("--why", default="", help="why the --inference settings differ from training")
    a = p.parse_args(argv)

    loaded = load_checkpoint(a.checkpoint)
    prov = dict(loaded.meta.get("provenance") or {})
    settings = apply_inference_settings(loaded, a.inference, a.why)
    if settings:
        prov["inference_settings"] = merge_inference_settings(prov.get("inference_settings"), settings)
    dataset = str(((prov.get("config") or {}).get("data") or {}).get("dataset", "phantom"))
    prov["notice"] = NOTICES.get(dataset, NOTICE)
    prov["training_data"] = {"dataset": dataset, "synthetic": True, "patient_data": False}
    prov["recipe"] = recipe_of(prov)
    if a.eval:
        prov["held_out_evaluation"] = Path(a.eval).read_text()
        # what the report quotes next to this model's EF (`echosam.report.ef_accuracy_note`)
        prov["ef_accuracy"] = {"data": "simulated held-out loops, never patients",
                               "sets": ef_accuracy_rows(prov["held_out_evaluation"], a.name)}
    out = save_checkpoint(loaded.model, loaded.family, loaded.config, BUNDLED_DIR / a.name,
                          classes=loaded.classes, provenance=prov)

    registry = json.loads(MODELS_JSON.read_text())
    entry = next((m for m in registry["models"] if m["name"] == a.name), None)
    if entry is None:
        raise SystemExit(f"{a.name} is not in {MODELS_JSON}; add its entry first.")
    entry.update(file=out.name, config=out.with_suffix(".json").name, sha256=sha256_of(out),
                 classes=list(loaded.classes), input_size=int(loaded.config.sam.img_size), bundled=True)
    with atomic_file(MODELS_JSON, ".json") as tmp:
        Path(tmp).write_text(json.dumps(registry, indent=2) + "\n")
    print(f"{out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {entry['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
