"""Benchmark the PDF/X-4 writer: write_pdfx4 fed in bands, next to the naive way.

Usage:
    python bench/bench_pdf.py                    # up to 16384^2 CMYK, appended to BENCHMARKS.md
    python bench/bench_pdf.py --size 2048 --no-append

Pages of SIZE/4, SIZE/2 and SIZE pixels square, CMYK 8-bit. The raster is texture-like
(smooth variation per column and per row plus a fine grain, different per ink) and is made
band by band on the fly from a cheap deterministic pattern, never held whole. write_pdfx4
gets it in 2048-row bands. The naive way, at the sizes up to --naive-max: the whole raster
in memory, given to pikepdf as one image stream, compressed by qpdf (Flate) on save. Every
measurement runs in a fresh subprocess (`--one '<json>'`) so its peak RSS (ru_maxrss) is its
own; the time of making the bands is measured on its own and reported beside.
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
from common import REPO, append_section, cpu_name, parser, run_as_child, spawn  # noqa: E402

CHILD_TIMEOUT_S = 3600
BAND_ROWS = 2048
PROFILE = REPO / "texprod" / "data" / "icc" / "FOGRA39-texprod.icc"


# ----------------------------------------------------------------------------- test raster


def texture_bands(width: int, height: int, rows: int, seed: int):
    """Bands (rows, width, 4) uint8 of a texture-like CMYK raster, top to bottom: a smooth
    pattern per column plus one per row plus grain (a 256-row block of noise, shifted per
    row, so zlib's 32 KiB window sees no repeats). Values stay in 0..244 (no wrap)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    grain = rng.integers(0, 24, (256, width, 4), dtype=np.uint8)
    ink = np.arange(4)
    x = np.arange(width)[:, None]
    across = (100 + 60 * np.sin(x / (width / 7) + ink)).astype(np.uint8)  # (width, 4)
    for top in range(0, height, rows):
        y = np.arange(top, min(top + rows, height))[:, None]
        down = (30 + 30 * np.cos(y / (height / 5) - ink)).astype(np.uint8)  # (rows, 4)
        yield across[None] + down[:, None] + grain[(y[:, 0] * 7) % 256]


# ----------------------------------------------------------------------------- child


def run_one(job: dict) -> dict:
    """One job in this fresh process: "generate" (only make the bands: their cost),
    "flat" (write_pdfx4 from the bands), "naive" (the whole raster to pikepdf) or "idle"."""
    import numpy as np
    import pikepdf

    from texprod.press.pdf import write_pdfx4

    def rss() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    size, kind = job.get("size", 0), job["kind"]
    if kind == "idle":
        return {"peak_rss_mb": rss(), "versions": f"pikepdf {pikepdf.__version__}, qpdf "
                f"{pikepdf.__libqpdf_version__}, numpy {np.__version__}"}
    if kind == "generate":
        start = time.perf_counter()
        for _ in texture_bands(size, size, BAND_ROWS, job["seed"]):
            pass
        return {"seconds": time.perf_counter() - start, "peak_rss_mb": rss()}
    side_mm = size / 300 * 25.4
    if kind == "flat":
        start = time.perf_counter()
        write_pdfx4(Path(job["out"]), texture_bands(size, size, BAND_ROWS, job["seed"]),
                    width_px=size, height_px=size, bits=8, dpi=300,
                    trim_mm=(side_mm - 6, side_mm - 6), bleed_mm=3,
                    output_profile=PROFILE.read_bytes(), output_condition="FOGRA39",
                    title="bench", provenance={"bench": True}, workers=job["workers"])
        seconds = time.perf_counter() - start
    else:
        raster = np.concatenate(list(texture_bands(size, size, BAND_ROWS, job["seed"])))
        start = time.perf_counter()
        pdf = pikepdf.new()
        pts = size / 300 * 72
        page = pdf.add_blank_page(page_size=(pts, pts))
        image = pikepdf.Stream(pdf, raster.tobytes(), Type=pikepdf.Name.XObject,
                               Subtype=pikepdf.Name.Image, Width=size, Height=size,
                               ColorSpace=pikepdf.Name.DeviceCMYK, BitsPerComponent=8)
        del raster
        page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        page.obj.Contents.write(f"q {pts:.4f} 0 0 {pts:.4f} 0 0 cm /Im0 Do Q".encode())
        pdf.save(job["out"], compress_streams=True)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": os.path.getsize(job["out"]), "peak_rss_mb": rss()}


def measure(job: dict) -> dict:
    """`job` measured in a fresh interpreter (common.spawn); a failure stops the bench."""
    result = spawn(__file__, job, CHILD_TIMEOUT_S)
    if "error" in result:
        raise RuntimeError(f"child failed ({job}): {result['error']}")
    return result


# ----------------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--size", type=int, default=16384, help="largest page side in pixels")
    ap.add_argument("--naive-max", type=int, default=8192,
                    help="largest side for the naive way (it holds the raster in RAM)")
    ap.add_argument("--workers", type=int, default=None,
                    help="write_pdfx4 compression threads (default: the usable cores)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    if run_as_child(args, run_one):
        return 0

    workers = args.workers or len(os.sched_getaffinity(0))
    sizes = sorted({s for s in (args.size // 4, args.size // 2, args.size) if s >= 64})
    tmp = Path(tempfile.mkdtemp(prefix="bench-pdf-"))
    idle = measure({"kind": "idle"})
    load_before = os.getloadavg()[0]
    rows = []
    try:
        for size in sizes:
            gen = measure({"kind": "generate", "size": size, "seed": args.seed})
            ways = ["flat"] + (["naive"] if size <= args.naive_max else [])
            for way in ways:
                out = tmp / f"{way}-{size}.pdf"
                os.sync()  # no write-back of earlier files during the timed run
                res = measure({"kind": way, "size": size, "seed": args.seed, "out": str(out),
                               "workers": workers})
                out.unlink(missing_ok=True)
                print(f"  {size} {way}: {res['seconds']:.2f} s, peak RSS "
                      f"{res['peak_rss_mb']:.0f} MB", file=sys.stderr)
                rows.append({"size": size, "way": way, "gen": gen["seconds"], **res})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]

    names = {"flat": f"write_pdfx4, {BAND_ROWS}-row bands",
             "naive": "naive: whole raster to pikepdf"}
    lines = [
        "| page | way | s | of which making bands s | MB/s of output | MB/s raw "
        "| output MB | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        raw = r["size"] ** 2 * 4
        gen = f"{r['gen']:.2f}" if r["way"] == "flat" else "(before timing)"
        lines.append(
            f"| {r['size']}x{r['size']} CMYK 8-bit | {names[r['way']]} | {r['seconds']:.2f} "
            f"| {gen} | {r['bytes'] / r['seconds'] / 1e6:.1f} | {raw / r['seconds'] / 1e6:.1f} "
            f"| {r['bytes'] / 1e6:.1f} | {r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        f"write_pdfx4: Flate level 6 + PNG Sub predictor on {workers} threads; naive: qpdf's "
        f"Flate, no predictor, one thread. Peak RSS of a child that only imports: "
        f"{idle['peak_rss_mb']:.0f} MB. {idle['versions']}; 1-min load average "
        f"{load_before:.2f} before, {load_after:.2f} after.",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_append:
        append_section("pdf", cpu_name(), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
