"""Turn a trained checkpoint into a bundled model: fp16 weights, preview, model card.

    python scripts/bundle_model.py TRAINED_DIR NAME EXEMPLAR... --licence TEXT --command TEXT

Writes texprod/data/models/NAME/{generator.safetensors, model.json, preview.jpg, README.md};
specs name it `bundled:NAME`. The card's fidelity tables are measured here, on the fp16
weights that ship: one per exemplar, a multi-exemplar PSGAN at the named latent of each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from texprod.models import load_checkpoint, save_generator
from texprod.models.registry import PREVIEW_PX, PREVIEW_SEED, render_preview
from texprod.training.quality import format_table, load_exemplar, model_fidelity, verdict
from texprod.training.trainer import fit_latents

MODELS = Path(__file__).resolve().parent.parent / "texprod" / "data" / "models"
SPREAD_SEEDS = range(10, 15)  # rank_snapshots.py selects on seed 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", type=Path, help="checkpoint directory written by texprod train")
    ap.add_argument("name", help="bundled model name")
    ap.add_argument("exemplars", type=Path, nargs="+", help="the exemplar(s) it was trained on")
    ap.add_argument("--licence", required=True, help="licence and source of the exemplar")
    ap.add_argument("--command", required=True, help="the exact training command")
    args = ap.parse_args()

    trained = load_checkpoint(args.trained)
    latents = trained.latents
    if not latents and trained.generator.config.nz_global and len(args.exemplars) > 1:
        # a snapshot (texprod train fits the named latents only at the end)
        latents = fit_latents(trained.generator,
                              {e.stem: load_exemplar(e) for e in args.exemplars})
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
                   latents=latents)
    shipped = load_checkpoint(tmp)
    (tmp / "preview.jpg").write_bytes(_preview(shipped))
    tables, spreads = {}, {}
    for exemplar in args.exemplars:  # a manifold is measured at each exemplar's latent
        latent = exemplar.stem if exemplar.stem in shipped.latents else None
        tables[exemplar] = model_fidelity(tmp, exemplar, latent=latent)
        # one seed's 16 crops are a noisy sample: the card also gives the spread over
        # seeds that no snapshot was selected on
        spreads[exemplar] = [_model_ratio(model_fidelity(tmp, exemplar, latent=latent,
                                                         seed=seed)) for seed in SPREAD_SEEDS]
    training = provenance["training"]
    exemplars = ", ".join(f"`texprod/data/exemplars/{e.name}`" for e in args.exemplars)
    latents = ", ".join(f"`{k}`" for k in sorted(shipped.latents)) or "none"
    card = "\n".join([
        f"# bundled:{args.name}",
        "",
        trained.card["provenance"]["description"] + ".",
        "",
        "![preview](preview.jpg)",
        "",
        "| | |",
        "|---|---|",
        f"| exemplar{'s' if len(args.exemplars) > 1 else ''} | {exemplars} |",
        f"| named latents | {latents} |",
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
        f"python scripts/bundle_model.py <out> {args.name} "
        f"{' '.join(str(e) for e in args.exemplars)} ...",
        "```",
        "",
        "## Fidelity (`texprod quality`)",
        "",
    ])
    for exemplar, rows in tables.items():
        latent = f" at latent `{exemplar.stem}`" if exemplar.stem in shipped.latents else ""
        card += "\n".join([
            "",
            f"Against `{exemplar.name}`{latent}:",
            "",
            "```",
            format_table(rows),
            "```",
            "",
            verdict(rows),
            "",
            f"Over noise seeds {SPREAD_SEEDS[0]}-{SPREAD_SEEDS[-1]} (`texprod quality --seed N`): "
            f"model ratio mean {np.mean(spreads[exemplar]):.2f}, "
            f"min {min(spreads[exemplar]):.2f}, max {max(spreads[exemplar]):.2f}.",
            "",
        ])
    (tmp / "README.md").write_text(card)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(card)
    print(json.dumps({str(e): {r.name: round(r.ratio, 3) for r in rows}
                      for e, rows in tables.items()}))
    print(json.dumps({str(e): [round(r, 3) for r in v] for e, v in spreads.items()}))
    return 0


def _model_ratio(rows) -> float:
    return next(r.ratio for r in rows if r.name == "model")


def _preview(checkpoint) -> bytes:
    """The preview seed's texture; for a manifold, each named latent side by side."""
    if not checkpoint.latents:
        return render_preview(checkpoint.generator)
    import numpy as np
    import pyvips

    from texprod.engine.noise import ConstantField, NoiseField
    from texprod.engine.render import render_reference

    gen = checkpoint.generator
    panels = [render_reference(gen, NoiseField(gen.config, PREVIEW_SEED, waves=gen.waves,
                                               global_field=ConstantField(latent)),
                               PREVIEW_PX, PREVIEW_PX, output="uint8")  # (512, 512, 3)
              for _, latent in sorted(checkpoint.latents.items())]
    image = pyvips.Image.new_from_array(np.concatenate(panels, axis=1), interpretation="srgb")
    return image.jpegsave_buffer(Q=90, optimize_coding=True)


if __name__ == "__main__":
    sys.exit(main())
