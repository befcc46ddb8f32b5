"""Benchmark training: seconds per iteration per preset and device, side by side.

Usage:
    python bench/bench_train.py                      # cpu and, when present, cuda
    python bench/bench_train.py --presets small --devices cpu --steps 10 --no-append

Each row is one Trainer (the bundled kraft-fibre exemplar, batch 8) taking `--warmup`
untimed steps and then `--steps` timed ones; on CUDA the clock stops only after the GPU
has finished. Rows on the same device in one run compare directly; the last column is
the speed-up over the CPU row of the same preset and architecture.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_section, cpu_name, device_name  # noqa: E402

EXEMPLARS = (REPO / "texprod/data/exemplars/kraft-fibre.png",
             REPO / "texprod/data/exemplars/aerial-terrain.png")


def time_steps(preset: str, arch: str, device: str, warmup: int, steps: int,
               batch: int) -> float:
    """Seconds per training iteration (one D and one G update)."""
    from texprod.training.trainer import TrainConfig, Trainer

    config = TrainConfig.from_cli(arch=arch, size=preset, batch=batch, seed=1,
                                  nz_periodic=0 if arch == "psgan" else None)
    exemplars = list(EXEMPLARS if arch == "psgan" else EXEMPLARS[:1])
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        trainer = Trainer(exemplars, out, config, device=device)
        for _ in range(warmup):
            trainer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="small,standard", help="comma-separated --size presets")
    ap.add_argument("--archs", default="sgan,psgan", help="comma-separated architectures")
    ap.add_argument("--devices", default=None,
                    help="comma-separated devices (default: cpu, plus cuda when present)")
    ap.add_argument("--steps", type=int, default=20, help="timed iterations per row")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = ap.parse_args(argv)
    devices = args.devices.split(",") if args.devices else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    rows = []
    for preset in args.presets.split(","):
        for arch in args.archs.split(","):
            for device in devices:
                seconds = time_steps(preset, arch, device, args.warmup, args.steps, args.batch)
                rows.append((preset, arch, device, seconds))
                print(f"{preset} {arch} {device}: {seconds:.3f} s/it", file=sys.stderr,
                      flush=True)
    cpu = {(p, a): s for p, a, d, s in rows if d == "cpu"}
    lines = ["| preset | arch | device | threads | s/it | it/s | speed-up over CPU |",
             "|---|---|---|---|---|---|---|"]
    for preset, arch, device, seconds in rows:
        threads = torch.get_num_threads() if device == "cpu" else "-"
        base = cpu.get((preset, arch))
        speedup = f"{base / seconds:.1f}x" if base and device != "cpu" else "-"
        lines.append(f"| {preset} | {arch} | {device_name(device)} | {threads} | {seconds:.3f} "
                     f"| {1 / seconds:.2f} | {speedup} |")
    text = "\n".join(lines) + (f"\n\nbatch {args.batch}, {args.steps} timed iterations after "
                               f"{args.warmup} warm-up ones; exemplars from texprod/data/exemplars.")
    print(text)
    if not args.no_append:
        label = " + ".join(device_name(d) for d in devices) if len(devices) > 1 else \
            (cpu_name() if devices[0] == "cpu" else device_name(devices[0]))
        append_section("train", label, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
