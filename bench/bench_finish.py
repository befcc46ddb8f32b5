"""Benchmark what a print job does after its last stripe: the file, the read-back, the hash.

Usage:
    python bench/bench_finish.py                 # 16384^2 CMYK LZW, appended to BENCHMARKS.md
    python bench/bench_finish.py --size 32768    # 1 Gpx (needs ~20 GB of disk)

Side by side on the same encoded stripes (texture-like noise, LZW, 2048-row stripes as on
CUDA, cached in a temporary directory first):

- the file: before, each stripe was written to the spool as it arrived and the TIFF was
  copied from the spool after the last one (tifffile); now stripes go into the growing
  file as they arrive (`press.tiff_stream`) and only the IFD is left at the end;
- the TAC read-back of preflight: libvips in one process (libtiff decodes one image per
  process at a time) against bands in child processes (`press.tac`);
- the output's SHA-256: after preflight against alongside it.

Each file step starts after `os.sync()`, so no step flushes another's writes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, cpu_name, parser  # noqa: E402

STRIPE_ROWS = 2048


def make_stripes(size: int, cache: Path) -> list[tuple[Path, list[int]]]:
    """Encode the test print stripe by stripe into `cache`: (data file, chunk sizes)."""
    import numpy as np
    from bench_export import texture

    from texprod.press.printfile import TiffOptions, encode_band

    image = texture(size, 4, seed=1)
    stripes = []
    for y in range(0, size, STRIPE_ROWS):
        rows = min(STRIPE_ROWS, size - y)
        band = np.ndarray((rows, size, 4), np.uint8,
                          image.crop(0, y, size, rows).write_to_memory())
        chunks = encode_band(band, TiffOptions())
        path = cache / f"stripe-{y // STRIPE_ROWS:05d}.bin"
        path.write_bytes(b"".join(chunks))
        stripes.append((path, [len(c) for c in chunks]))
    return stripes


def _tags(size: int):
    from texprod.press.printfile import TiffOptions, print_tags

    return print_tags(width=size, height=size, bands=4, dtype="uint8", options=TiffOptions(),
                      dpi=300, icc_profile=None, description="{}")


def copy_after(stripes, size: int, work: Path) -> dict:
    """Before: spool files while rendering, the TIFF copied from them after."""
    from texprod.press.printfile import TiffOptions, assemble_tiff

    spool = work / "spool"
    spool.mkdir()
    os.sync()
    started = time.perf_counter()
    for i, (path, _) in enumerate(stripes):
        (spool / f"{i}.bin").write_bytes(path.read_bytes())
    during = time.perf_counter() - started

    def chunks():
        for i, (_, sizes) in enumerate(stripes):
            with open(spool / f"{i}.bin", "rb") as fh:
                for n in sizes:
                    yield fh.read(n)
            (spool / f"{i}.bin").unlink()

    started = time.perf_counter()
    written = assemble_tiff(chunks(), work / "copied.tif", width=size, height=size, bands=4,
                            dtype="uint8", options=TiffOptions(), dpi=300, icc_profile=None,
                            description="{}")
    return {"during": during, "after": time.perf_counter() - started,
            "disk": 2 * written.bytes, "path": written.path}


def grown(stripes, size: int, work: Path) -> dict:
    """Now: each stripe appended to the growing file as it arrives, the IFD at the end."""
    from texprod.job.spool import StripeSpool
    from texprod.job.stripes import StripeResult

    os.sync()
    spool = StripeSpool(work / "stripes", {"bench": size}, work / "grown.tif", bigtiff=True)
    started = time.perf_counter()
    for i, (path, sizes) in enumerate(stripes):
        spool.put(StripeResult(index=i, chunk_sizes=sizes, data=path.read_bytes(),
                               preview=b"\0\0\0", preview_shape=(1, 1), tac_max=None,
                               tiles=1, render_s=0, colour_s=0, encode_s=0))
    during = time.perf_counter() - started
    started = time.perf_counter()
    nbytes = spool.finish(_tags(size), len(stripes), work / "grown.tif")
    spool.remove()
    return {"during": during, "after": time.perf_counter() - started, "disk": nbytes,
            "path": work / "grown.tif"}


def read_back(path: Path, size: int) -> dict:
    """TAC in one libvips process vs in bands; SHA-256 after vs alongside."""
    from texprod.files import sha256_file
    from texprod.press.tac import band_peak, bands, measure_tac

    started = time.perf_counter()
    one = band_peak(path, 0, size, 4)
    one_s = time.perf_counter() - started
    started = time.perf_counter()
    sha = sha256_file(path)
    sha_s = time.perf_counter() - started
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        hashing = pool.submit(sha256_file, path)
        banded = measure_tac(path, size, size, 4, 256)
        assert hashing.result() == sha and banded == one, "the two ways disagree"
        both_s = time.perf_counter() - started
    started = time.perf_counter()
    measure_tac(path, size, size, 4, 256)
    banded_s = time.perf_counter() - started
    return {"one_s": one_s, "banded_s": banded_s, "sha_s": sha_s, "both_s": both_s,
            "bands": len(bands(size, size, 256))}


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__)
    ap.add_argument("--size", type=int, default=16384, help="print side in pixels")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a "
                    "temporary one; it needs ~3.5x the print's raw size)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="texprod-bench-finish-", dir=args.dir) as tmp:
        work = Path(tmp)
        (work / "cache").mkdir()
        started = time.perf_counter()
        stripes = make_stripes(args.size, work / "cache")
        made_s = time.perf_counter() - started
        (work / "a").mkdir()
        before = copy_after(stripes, args.size, work / "a")
        before["path"].unlink()
        (work / "b").mkdir()
        now = grown(stripes, args.size, work / "b")
        reads = read_back(now["path"], args.size)

    def gb(n: float) -> str:
        return f"{n / 1e9:.2f} GB"

    text = "\n".join([
        "| after the stripes | before | now | ratio |", "|---|---|---|---|",
        f"| stripes stored while rendering | {before['during']:.2f} s (spool files) | "
        f"{now['during']:.2f} s (into the file) | {before['during'] / now['during']:.2f}x |",
        f"| the file after the last stripe | {before['after']:.2f} s (copy from the spool) "
        f"| {now['after']:.2f} s (IFD, fsync) | {before['after'] / now['after']:.1f}x |",
        f"| written to disk | {gb(before['disk'])} | {gb(now['disk'])} | "
        f"{before['disk'] / now['disk']:.1f}x |",
        f"| TAC read-back | {reads['one_s']:.2f} s (libvips, 1 process) | "
        f"{reads['banded_s']:.2f} s ({reads['bands']} bands in processes) | "
        f"{reads['one_s'] / reads['banded_s']:.2f}x |",
        f"| TAC read-back + SHA-256 | {reads['one_s'] + reads['sha_s']:.2f} s (one after "
        f"the other) | {reads['both_s']:.2f} s (side by side, banded) | "
        f"{(reads['one_s'] + reads['sha_s']) / reads['both_s']:.2f}x |",
        "",
        f"{args.size}² px CMYK 8-bit LZW (tiled), a {gb(now['disk'])} file in "
        f"{len(stripes)} stripes of {STRIPE_ROWS} rows (encoded beforehand in {made_s:.0f} s, "
        f"texture-like noise); SHA-256 alone {reads['sha_s']:.2f} s.",
    ])
    print(text)
    if not args.no_append:
        append_section("finishing a print", cpu_name(), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
