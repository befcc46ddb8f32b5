"""Benchmark the sRGB -> CMYK conversion: libvips' ICC transform against the 3D LUT in torch.

Usage:
    python bench/bench_colour.py                          # 16384^2, appended to BENCHMARKS.md
    python bench/bench_colour.py --size 2048 --no-append  # a quick look

The image (texture-like noise at three scales, bench_export.texture) is generated once into a
raw file in a temporary directory; every measurement reads it band by band (2048 rows, as
the job converts a stripe), times the conversion of each band to FOGRA39 CMYK 8-bit
(relative colorimetric, BPC) and sums. Each path runs in a fresh subprocess (`--one JSON`)
so its peak RSS is its own; that RSS is taken before an untimed second pass that compares
the LUT's output with libvips' band by band. On CUDA a band is uploaded, converted and
downloaded with a synchronisation at each step; the on-device time is the conversion alone.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, cpu_name, device_name, parser, run_as_child, spawn  # noqa: E402

CHILD_TIMEOUT_S = 1800
BAND_ROWS = 2048


# ----------------------------------------------------------------------------- child


def _bands(path: str, size: int):
    """(rows, size, 3) uint8 bands of the raw image, read into fresh arrays (no mmap)."""
    import numpy as np

    with open(path, "rb") as f:
        for y in range(0, size, BAND_ROWS):
            band = np.empty((min(BAND_ROWS, size - y), size, 3), np.uint8)
            f.readinto(memoryview(band).cast("B"))
            yield band


def _libvips(band, colour):
    """One band through the job's CPU path: texprod.press.colour.to_output."""
    import numpy as np
    import pyvips

    from texprod.press.colour import to_output

    h, w, _ = band.shape
    image = pyvips.Image.new_from_memory(band.data, w, h, 3, "uchar").copy(interpretation="srgb")
    out = to_output(image, colour)
    return np.frombuffer(out.write_to_memory(), np.uint8).reshape(h, w, out.bands)


def _fogra39():
    from texprod.press.colour import DEFAULT_CMYK_PROFILE, ICC_DIR, OutputColour

    path = Path(str(ICC_DIR / DEFAULT_CMYK_PROFILE))
    return OutputColour("cmyk", path.read_bytes(), path, path.name, "relative", True, 8)


def run_one(job: dict) -> dict:
    """One job in this fresh process: "generate" the raw test image, "idle" (imports only:
    the RSS floor), or "convert" it with one path (timed, best of `repeat`)."""
    import numpy as np
    import pyvips
    import torch

    if job["kind"] == "generate":
        from bench_export import texture

        start = time.perf_counter()
        texture(job["size"], 3, job["seed"]).rawsave(job["path"])
        return {"seconds": time.perf_counter() - start}
    if job["kind"] == "idle":
        import texprod.press.colour  # noqa: F401

        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "versions": f"libvips {pyvips.version(0)}.{pyvips.version(1)}."
                            f"{pyvips.version(2)}, torch {torch.__version__}"}

    from texprod.press.colour_lut import colour_lut

    colour, device, engine = _fogra39(), job["device"], job["engine"]
    result = {"build_s": None, "upload_s": None, "device_s": None}
    if engine == "lut":
        start = time.perf_counter()
        lut = colour_lut(colour)  # samples 65^3 nodes with libvips
        result["build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        lut.table(torch.device(device))
        if device == "cuda":
            lut.apply(torch.zeros((64, 64, 3), dtype=torch.uint8, device=device))  # warm up
            torch.cuda.synchronize()
        result["upload_s"] = time.perf_counter() - start

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    best = best_device = float("inf")
    for _ in range(job["repeat"]):
        total = on_device = 0.0
        for band in _bands(job["path"], job["size"]):
            start = time.perf_counter()
            if engine == "libvips":
                _libvips(band, colour)
            elif device == "cpu":
                lut.apply(torch.from_numpy(band)).numpy()
            else:
                rgb = torch.from_numpy(band).to(device)
                sync()
                converted = time.perf_counter()
                cmyk = lut.apply(rgb)
                sync()
                on_device += time.perf_counter() - converted
                cmyk.cpu().numpy()
            total += time.perf_counter() - start
        best, best_device = min(best, total), min(best_device, on_device)
    result.update(seconds=best, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024)
    if device == "cuda":
        result["device_s"] = best_device

    worst, diff_sum, n = 0, 0, 0
    if engine == "lut":  # untimed: every band against libvips
        for band in _bands(job["path"], job["size"]):
            got = lut.apply(torch.from_numpy(band).to(device)).cpu().numpy()
            diff = np.abs(got.astype(np.int16) - _libvips(band, colour).astype(np.int16))
            worst, diff_sum = max(worst, int(diff.max())), diff_sum + int(diff.sum())
            n += diff.size
    result.update(max_diff=worst, mean_diff=diff_sum / n if n else 0.0)
    return result


def measure(job: dict) -> dict:
    """`job` measured in a fresh interpreter (common.spawn); a failure stops the bench."""
    result = spawn(__file__, job, CHILD_TIMEOUT_S)
    if "error" in result:
        raise RuntimeError(f"child failed ({job}): {result['error']}")
    return result


# ----------------------------------------------------------------------------- parent


def table(rows: list[dict], size: int, repeat: int, idle: dict, gen_s: float) -> str:
    px = size * size
    base = next(r for r in rows if r["engine"] == "libvips")["seconds"]
    lines = [
        f"| path | device | s (best of {repeat}) | Mpx/s | speed vs libvips "
        "| max abs diff vs libvips (1/255) | mean abs diff (1/255) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(path: str, device: str, seconds: float, r: dict) -> None:
        lines.append(f"| {path} | {device} | {seconds:.2f} | {px / seconds / 1e6:.1f} "
                     f"| {base / seconds:.2f}x | {r['max_diff']} | {r['mean_diff']:.4f} "
                     f"| {r['peak_rss_mb']:.0f} |")

    for r in rows:
        if r["engine"] == "libvips":
            row(f"libvips icc_transform ({len(os.sched_getaffinity(0))} threads)", cpu_name(), r["seconds"], r)
        elif r["device"] == "cpu":
            row(f"LUT, torch CPU ({r['threads']} threads)", cpu_name(), r["seconds"], r)
        else:
            name = device_name("cuda")
            row("LUT, CUDA: upload + convert + download", name, r["seconds"], r)
            row("LUT, CUDA: on-device convert only", name, r["device_s"], r)
    lines += ["", "LUT build (65^3 nodes sampled with libvips, fresh process): " + ", ".join(
        f"{r['build_s']:.3f} s, then to {r['device']} (+ warm-up) {r['upload_s']:.3f} s"
        for r in rows if r["engine"] == "lut") + "."]
    lines += [
        "",
        f"{size}x{size} sRGB 8-bit texture-like noise (generated in {gen_s:.1f} s) -> FOGRA39 "
        f"CMYK 8-bit, relative colorimetric + BPC, in bands of {BAND_ROWS} rows read from a "
        "raw file before each band's timer starts. Peak RSS of a child that only imports "
        f"pyvips/torch/texprod: {idle['peak_rss_mb']:.0f} MB. {idle['versions']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--size", type=int, default=16384, help="image side in pixels")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the LUT runs (auto: the CPU, and CUDA when available)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per path; the best is kept")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    if run_as_child(args, run_one):
        return 0

    import torch

    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        ap.error("--device cuda: no CUDA device is available here")
    devices = {"auto": ["cpu"] + (["cuda"] if cuda else []), "cpu": ["cpu"],
               "cuda": ["cuda"]}[args.device]

    tmp = Path(tempfile.mkdtemp(prefix="bench-colour-"))
    rows = []
    try:
        src = tmp / f"texture-{args.size}.raw"
        gen_s = measure({"kind": "generate", "path": str(src), "size": args.size,
                         "seed": args.seed})["seconds"]
        idle = measure({"kind": "idle"})
        paths = [("libvips", "cpu")] + [("lut", d) for d in devices]
        for engine, device in paths:
            res = measure({"kind": "convert", "engine": engine, "device": device,
                           "path": str(src), "size": args.size, "repeat": args.repeat})
            res.update(engine=engine, device=device, threads=torch.get_num_threads())
            print(f"  {engine} {device}: {res['seconds']:.2f} s, peak RSS "
                  f"{res['peak_rss_mb']:.0f} MB, max diff {res['max_diff']}/255",
                  file=sys.stderr)
            rows.append(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    text = table(rows, args.size, args.repeat, idle, gen_s)
    print(text)
    if not args.no_append:
        names = [cpu_name()] + ([device_name("cuda")] if "cuda" in devices else [])
        append_section("colour", " + ".join(names), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
