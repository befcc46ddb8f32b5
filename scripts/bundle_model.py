"""Turn a trained checkpoint into a bundled model: fp16 weights, preview, model card.

    python scripts/bundle_model.py TRAINED_DIR NAME EXEMPLAR --licence TEXT --command TEXT

Writes texprod/data/models/NAME/{generator.safetensors, model.json, preview.jpg, README.md};
specs name it `bundled:NAME`. The card's fidelity table is measured here, on the fp16
weights that ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from texprod.generators import load_checkpoint, save_generator
from texprod.quality import format_table, model_fidelity, verdict
from texprod.registry import render_preview

MODELS = Path(__file__).resolve().parent.parent / "texprod" / "data" / "models"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", type=Path, help="checkpoint directory written by texprod train")
    ap.add_argument("name", help="bundled model name")
    ap.add_argument("exemplar", type=Path, help="the exemplar it was trained on")
    ap.add_argument("--licence", required=True, help="licence and source of the exemplar")
    ap.add_argument("--command", required=True, help="the exact training command")
    args = ap.parse_args()

    trained = load_checkpoint(args.trained)
    out = MODELS / args.name
    tmp = MODELS / f".{args.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    provenance = dict(trained.card["provenance"])
    provenance["exemplar_licence"] = args.licence
    provenance["training_command"] = args.command
    save_generator(trained.generator, tmp, name=args.name, dtype="float16",
                   description=trained.card["provenance"]["description"],
                   provenance={k: v for k, v in provenance.items()
                               if k not in ("name", "description", "created",
                                            "texprod_version")},
                   latents=trained.latents)
    (tmp / "preview.jpg").write_bytes(render_preview(load_checkpoint(tmp).generator))
    rows = model_fidelity(tmp, args.exemplar)
    training = provenance["training"]
    card = "\n".join([
        f"# bundled:{args.name}",
        "",
        trained.card["provenance"]["description"] + ".",
        "",
        "![preview](preview.jpg)",
        "",
        "| | |",
        "|---|---|",
        f"| exemplar | `texprod/data/exemplars/{args.exemplar.name}` |",
        f"| exemplar licence | {args.licence} |",
        f"| architecture | {training['arch']}, generator "
        f"{'-'.join(map(str, training['filters']))}, "
        f"{load_checkpoint(tmp).generator.config.cell_px} px per noise cell |",
        f"| training | {training['iterations']} iterations, batch {training['batch']}, "
        f"{training['crop_px']} px crops, Adam lr {training['lr']} beta1 {training['beta1']} |",
        f"| time | {training['seconds']:.0f} s on {training['device']} "
        f"({training['seconds_per_iteration']:.2f} s/it) |",
        f"| final losses | D {training['losses']['d']:.3f}, G {training['losses']['g']:.3f} |",
        "| weights | float16 safetensors |",
        "",
        "Reproduce:",
        "",
        "```sh",
        args.command,
        f"python scripts/bundle_model.py <out> {args.name} {args.exemplar} ...",
        "```",
        "",
        "## Fidelity (`texprod quality`)",
        "",
        "```",
        format_table(rows),
        "```",
        "",
        verdict(rows),
        "",
    ])
    (tmp / "README.md").write_text(card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(card)
    print(json.dumps({r.name: round(r.ratio, 3) for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
