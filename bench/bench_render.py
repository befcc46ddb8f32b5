"""Benchmark the texture renderer: throughput, halo overhead and peak memory per configuration.

Usage:
    python bench/bench_render.py               # full default run, appended to BENCHMARKS.md
    python bench/bench_render.py --quick --no-append

Every configuration runs in a fresh subprocess (`--one '<json>'`) so its peak RSS is its own:
the child builds the reference generator, does one warm-up render, times the real one and
prints one JSON line. The parent collects the rows and prints a Markdown table.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, device_name, parser, run_as_child, spawn, update_record  # noqa: E402

CPU_WARMUP_PX = 512  # warm-up canvas side on the CPU
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Config:
    device: str  # "cpu" | "cuda"
    precision: str  # "fp32" | "bf16" | "fp16"
    mode: str  # "reference" | "fast" (tile 0) | "tiled"
    size: int  # canvas side in pixels (square canvas)
    tile: int = 0  # tile side in pixels, 0 = one pass
    batch: int = 1
    upsampling: str = "subpixel"  # the fast path's layers (Renderer), "phases" or "native"

    @property
    def label(self) -> str:
        if self.mode == "reference":
            return "reference one-pass"
        if self.mode == "fast":
            return "fast one-pass"
        return f"tiled {self.tile}" + ("" if self.upsampling == "subpixel"
                                        else f" ({self.upsampling} layers)")


# ----------------------------------------------------------------------------- child


def _render(gen, field, renderer, cfg: Config, size: int) -> int:
    """Render a size x size canvas once as `cfg` says (uint8 pixels); return the tile count."""
    from texprod.engine.render import render_reference
    from texprod.engine.tiling import plan_tiles

    if renderer is None:  # the plain one-pass reference: whole canvas, one network call
        render_reference(gen, field, size, size, device=cfg.device, precision=cfg.precision,
                         output="uint8")
        return 1
    plan = plan_tiles(size, size, renderer.rf.cell_px, renderer.rf.halo, cfg.tile)
    for _tile, _pixels in renderer.tiles(field, plan, batch=cfg.batch, output="uint8"):
        pass  # consume every tile: the pixels are on the host once yielded
    return len(plan.tiles)


def run_one(cfg: Config) -> dict:
    """Warm up, time one render of `cfg`, and measure its overheads and peak memory."""
    import torch

    from texprod.engine import make_config, random_generator, receptive_field
    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer
    from texprod.engine.tiling import plan_tiles

    gen = random_generator(make_config(), seed=0)
    field = NoiseField(gen.config, 0, waves=gen.waves)
    cuda = cfg.device == "cuda"
    # The fast path is prepared once, outside the clock (the reference copies the model per call).
    renderer = None if cfg.mode == "reference" else Renderer(gen, cfg.device, cfg.precision,
                                                             upsampling=cfg.upsampling)

    # Warm-up. On CUDA cuDNN picks (and caches) each input shape's algorithm at its first
    # use, so there the warm-up renders the full canvas to see the timed shapes.
    _render(gen, field, renderer, cfg, cfg.size if cuda else min(cfg.size, CPU_WARMUP_PX))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    start = time.perf_counter()
    tiles = _render(gen, field, renderer, cfg, cfg.size)
    if cuda:
        torch.cuda.synchronize()  # stop the clock only once the device is done
    seconds = time.perf_counter() - start

    # Overheads from the plan. The reference computes its whole window at full resolution,
    # halo included; the fast path crops every map to what the interiors still need.
    rf = receptive_field(gen.blocks)  # the same as renderer.rf
    plan = plan_tiles(cfg.size, cfg.size, rf.cell_px, rf.halo, cfg.tile)
    window, interior = math.prod(plan.window_cells), math.prod(plan.tile_cells)
    work = _macs(gen, rf, plan, cropped=renderer is not None)
    ideal = _macs(gen, rf, plan_tiles(cfg.size, cfg.size, rf.cell_px, 0, 0), cropped=True)
    return {
        **asdict(cfg),
        "seconds": seconds,
        "mpx_s": cfg.size**2 / seconds / 1e6,
        "tiles": tiles,
        "cell_ratio": window / interior,
        "work_ratio": work / ideal,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def _macs(gen, rf, plan, cropped: bool) -> int:
    """Multiply-accumulates the plan's tiles cost in the network's convolutions.

    Block b reads a map of (tile cells * f + margins) positions per side: the noise window
    (halo included) for the first block, then the cropped maps of the fast path, or the full
    uncropped window maps of the one-pass reference. A plan with halo 0 gives the ideal.
    """
    import torch

    total, f = 0, 1
    ty, tx = plan.tile_cells
    side = [ty + 2 * plan.halo, tx + 2 * plan.halo]  # positions per side read by block 1
    for block, scale, (left, right) in zip(gen.blocks, rf.scales, rf.margins[1:], strict=True):
        conv = next(m for m in block if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d))
        # a transposed conv spends its weights once per input position; nearest + conv once
        # per upsampled position
        per_position = conv.weight.numel() * (1 if isinstance(conv, torch.nn.ConvTranspose2d)
                                              else scale * scale)
        total += per_position * side[0] * side[1]
        f *= scale
        if cropped and plan.halo:
            side = [ty * f + left + right, tx * f + left + right]
        else:
            side = [s * scale for s in side]
    return total * len(plan.tiles)


# ----------------------------------------------------------------------------- parent


def plan_configs(device: str, size: int | None, quick: bool) -> list[Config]:
    """The default configurations for one device."""
    if device == "cpu":
        from texprod.engine.render import native_on_cpu

        size = size or (1024 if quick else 2048)
        # bf16 / fp16 only where this CPU has them in hardware (AMX, AVX-512 BF16 / FP16):
        # emulated they are ~20x slower than fp32
        precisions = ["fp32"] + [p for p in ("bf16", "fp16") if native_on_cpu(p)]
        tiles, batches = ([256, 512], [4]) if quick else ([256, 512, 1024, 2048], [1, 4])
    else:
        size = size or (2048 if quick else 8192)
        precisions = ["bf16", "fp32"] if quick else ["bf16", "fp16", "fp32"]
        tiles, batches = ([1024], [4]) if quick else ([1024, 2048, 4096], [1, 4, 8])
    import torch

    from texprod.engine.render import default_tiling

    configs = []
    for precision in precisions:
        default_tile, default_batch = default_tiling(torch.device(device), precision)
        configs.append(Config(device, precision, "reference", size))
        configs.append(Config(device, precision, "fast", size))
        for tile in tiles:
            if tile > size:
                continue
            for batch in batches:
                configs.append(Config(device, precision, "tiled", size, tile, batch))
        if default_tile <= size:  # the other forms of the layers, against the sub-pixel one
            configs += [Config(device, precision, "tiled", size, default_tile, default_batch,
                               form) for form in ("native", "phases")]
    return configs


def run_child(cfg: Config) -> dict:
    """One configuration measured in a fresh interpreter: its row, or an error row."""
    return {**asdict(cfg), **spawn(__file__, asdict(cfg), CHILD_TIMEOUT_S)}


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    head = ["device", "precision", "mode", "canvas", "tile px", "batch", "tiles", "s", "Mpx/s",
            "window/interior cells", "work/ideal", "peak RSS MB", "peak GPU MB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cfg = Config(**{k: r[k] for k in Config.__dataclass_fields__})
        cells = [r["device"], r["precision"], cfg.label, f"{r['size']}x{r['size']}",
                 str(r["tile"]), str(r["batch"])]
        if "error" in r:
            cells += [f"error: {r['error']}"] + [""] * (len(head) - len(cells) - 1)
        else:
            gpu = "" if r["gpu_mb"] is None else f"{r['gpu_mb']:.0f}"
            cells += [str(r["tiles"]), f"{r['seconds']:.2f}", f"{r['mpx_s']:.2f}",
                      f"{100 * r['cell_ratio']:.1f}%", f"{100 * r['work_ratio']:.1f}%",
                      f"{r['rss_mb']:.0f}", gpu]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary(rows: list[dict]) -> list[str]:
    """Best tiled vs reference one-pass throughput, per (device, precision)."""
    lines = []
    groups = dict.fromkeys((r["device"], r["precision"]) for r in rows)
    for device, precision in groups:
        ok = [r for r in rows if (r["device"], r["precision"]) == (device, precision)
              and "error" not in r]
        ref = [r for r in ok if r["mode"] == "reference"]
        tiled = [r for r in ok if r["mode"] == "tiled" and r["upsampling"] == "subpixel"]
        if not ref or not tiled:
            lines.append(f"{device} {precision}: no tiled/reference pair to compare")
            continue
        best = max(tiled, key=lambda r: r["mpx_s"])
        lines.append(
            f"{device} {precision}: best tiled {best['mpx_s']:.2f} Mpx/s (tile {best['tile']}, "
            f"batch {best['batch']}) vs reference one-pass {ref[0]['mpx_s']:.2f} Mpx/s = "
            f"{best['mpx_s'] / ref[0]['mpx_s']:.2f}x"
        )
        for other in (r for r in ok if r["upsampling"] != "subpixel"):
            same = next((r for r in tiled if (r["tile"], r["batch"]) ==
                         (other["tile"], other["batch"])), None)
            if same:
                lines.append(
                    f"{device} {precision}: sub-pixel upsampling {same['mpx_s']:.2f} Mpx/s vs "
                    f"the {other['upsampling']} layers {other['mpx_s']:.2f} Mpx/s at tile "
                    f"{same['tile']}, batch {same['batch']} = "
                    f"{same['mpx_s'] / other['mpx_s']:.2f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="small canvas, fewer rows")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = the CPU, plus CUDA when available")
    ap.add_argument("--size", type=int, help="canvas side in pixels (all devices)")
    args = ap.parse_args(argv)

    if run_as_child(args, lambda job: run_one(Config(**job))):
        return 0

    import torch

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")

    configs = [c for d in devices for c in plan_configs(d, args.size, args.quick)]
    load_before = os.getloadavg()[0]  # other work on the machine skews the numbers
    rows = []
    for i, cfg in enumerate(configs, 1):
        row = run_child(cfg)
        status = row.get("error") or f"{row['mpx_s']:.2f} Mpx/s"
        print(f"[{i}/{len(configs)}] {cfg.device} {cfg.precision} {cfg.label} "
              f"batch {cfg.batch}: {status}", file=sys.stderr, flush=True)
        rows.append(row)

    threads = (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
               f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    text = "\n".join([table(rows), "", threads, "", *summary(rows)])
    print(text)
    if not args.no_append:
        append_section("render", " + ".join(device_name(d) for d in devices), text)
        for device, precision in dict.fromkeys((r["device"], r["precision"]) for r in rows):
            tiled = [r for r in rows if (r["device"], r["precision"]) == (device, precision)
                     and r["mode"] == "tiled" and r["upsampling"] == "subpixel"
                     and "error" not in r]
            if tiled:
                best = max(tiled, key=lambda r: r["mpx_s"])
                update_record("render", f"{device}/{precision}", {
                    "mpx_s": round(best["mpx_s"], 3), "device": device_name(device),
                    "tile": best["tile"], "batch": best["batch"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
