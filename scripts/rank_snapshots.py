"""Rank a training run's snapshots by texture fidelity, to choose the one to bundle.

    python scripts/rank_snapshots.py TRAINED_DIR EXEMPLAR... [--seeds 1,2,3] [--every 2]

GANs can get worse late in training, so the last iteration is not always the best. Each
snapshot (TRAINED_DIR/snapshots/iter-N, written beside every sample grid) is measured
against every exemplar (a multi-exemplar PSGAN at latents fitted for that snapshot) and
scored by its mean ratio over noise seeds --seeds (one seed's 16 crops are a noisy
sample). The bundled model card reports seed 0 and seeds 10-14, which no snapshot was
selected on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from texprod.models import load_checkpoint
from texprod.training.quality import load_exemplar, model_fidelity
from texprod.training.trainer import fit_latents


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trained", type=Path, help="directory written by texprod train")
    ap.add_argument("exemplars", type=Path, nargs="+", help="the exemplar(s) it was trained on")
    ap.add_argument("--seeds", default="1,2,3", help="noise seeds of the measurement")
    ap.add_argument("--every", type=int, default=1, help="measure every N-th snapshot")
    ap.add_argument("--from", dest="start", type=int, default=0,
                    help="skip snapshots before this iteration")
    args = ap.parse_args()

    snapshots = sorted((args.trained / "snapshots").glob("iter-*"))
    snapshots = [s for s in snapshots if int(s.name[5:]) >= args.start][::-1][::args.every][::-1]
    if not snapshots:
        print(f"no snapshots in {args.trained / 'snapshots'}", file=sys.stderr)
        return 1
    names = [e.stem for e in args.exemplars]
    seeds = [int(v) for v in args.seeds.split(",")]
    print(f"{'snapshot':<12}" + "".join(f"{n[:18]:>20}" for n in names) + f"{'worst':>10}")
    best = None
    for snapshot in snapshots:
        checkpoint = load_checkpoint(snapshot)
        latents = {}
        if checkpoint.generator.config.nz_global and len(args.exemplars) > 1:
            latents = fit_latents(checkpoint.generator,
                                  {e.stem: load_exemplar(e) for e in args.exemplars})
        ratios = []
        for exemplar in args.exemplars:
            per_seed = [next(r.ratio for r in model_fidelity(
                checkpoint.generator, exemplar, seed=seed, latent=latents.get(exemplar.stem))
                if r.name == "model") for seed in seeds]
            ratios.append(sum(per_seed) / len(per_seed))
        worst = max(ratios)
        print(f"{snapshot.name:<12}" + "".join(f"{r:>20.2f}" for r in ratios) + f"{worst:>10.2f}",
              flush=True)
        if best is None or worst < best[1]:
            best = (snapshot, worst)
    print(f"best: {best[0]} (worst ratio {best[1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
