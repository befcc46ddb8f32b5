"""Total area coverage (TAC) of a finished CMYK print file, decoded by libvips (libtiff:
not the encoder that wrote the file), in bands on all cores.

libtiff decodes in one thread per process: two libvips pipelines on two threads of one
process took as long as one (1 Gpx LZW, 2 cores: 18.9 s either way), two processes half
that. So a large file is measured in horizontal bands by child processes, one per core,
each opening the file itself and streaming its band (memory stays flat); a small one in
this process, where a child would cost more than it saves.

`python -m texprod.press.tac PATH Y ROWS SAMPLES` is the child: it prints the band's peak
as JSON.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyvips

from texprod.host import available_cores

BAND_MIN_PX = 32 * 2**20  # a child process starts in ~0.2 s: not worth it for less
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # so children import this texprod


class TacError(Exception):
    """The pixels could not be decoded (the message says why)."""


@dataclass(frozen=True)
class BandPeak:
    total: float  # the highest C+M+Y+K in sample units (255 or 65535 per ink)
    x: int
    y: int  # in the whole image


def band_peak(path: str | os.PathLike, y: int, rows: int, samples: int) -> BandPeak:
    """The highest sum of the process inks (the first 4 samples) in rows [y, y + rows)."""
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error",
                                          revalidate=True)
        if image.bands != samples:
            raise TacError(f"libvips reads {image.bands} bands, not {samples}")
        band = image.crop(0, y, image.width, rows) if (y, rows) != (0, image.height) \
            else image
        # the process inks only: spot inks (varnish, white) are not part of the TAC
        total = band.recomb([[1, 1, 1, 1] + [0] * (samples - 4)])  # float: exact
        peak, where = total.max(x=True, y=True)
    except pyvips.Error as exc:
        raise TacError(f"libvips could not decode the pixels: {str(exc).strip()}") from None
    return BandPeak(peak, int(where["x"]), y + int(where["y"]))


def bands(height: int, width: int, chunk_rows: int, workers: int | None = None,
          min_px: int = BAND_MIN_PX) -> list[tuple[int, int]]:
    """(first row, rows) per band: whole TIFF chunk rows, one band per worker, at least
    `min_px` pixels each (one band for a small image)."""
    workers = workers or available_cores()
    count = max(1, min(workers, height * width // min_px))
    rows = math.ceil(height / count / chunk_rows) * chunk_rows
    return [(y, min(rows, height - y)) for y in range(0, height, rows)]


def measure_tac(path: str | os.PathLike, height: int, width: int, samples: int,
                chunk_rows: int, workers: int | None = None, min_px: int = BAND_MIN_PX
                ) -> BandPeak:
    """The file's highest C+M+Y+K and where it is (the topmost band's on ties)."""
    parts = bands(height, width, chunk_rows, workers, min_px)
    if len(parts) == 1:
        return band_peak(path, 0, height, samples)
    # one libvips worker thread each: the children already fill the cores
    env = {**os.environ, "VIPS_CONCURRENCY": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH"))
                                         if p)}
    children = [subprocess.Popen([sys.executable, "-m", __name__, str(path), str(y), str(rows),
                                  str(samples)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for y, rows in parts]
    try:
        peaks = [_band_result(child, y, rows) for child, (y, rows) in
                 zip(children, parts, strict=True)]
    finally:
        for child in children:  # on an error or a stop, nobody keeps reading
            if child.poll() is None:
                child.kill()
            child.wait()
    return max(peaks, key=lambda p: p.total)  # max keeps the first (topmost) of equals


def _band_result(child: subprocess.Popen, y: int, rows: int) -> BandPeak:
    out, err = child.communicate()
    try:
        result = json.loads(out)
    except ValueError:
        raise TacError(f"the reader of rows {y}-{y + rows - 1} failed (exit "
                       f"{child.returncode}): {err.strip()[-500:]}") from None
    if "error" in result:
        raise TacError(result["error"])
    return BandPeak(**result)


def main(argv: list[str]) -> int:
    path, y, rows, samples = argv[0], *map(int, argv[1:4])
    try:
        peak = band_peak(path, y, rows, samples)
    except TacError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps({"total": peak.total, "x": peak.x, "y": peak.y}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
