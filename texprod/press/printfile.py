"""Writing image files: a plain RGB TIFF, and the print TIFF (RGB or CMYK, 8 or 16 bit).

`write_print_tiff` streams a lazy libvips image into a TIFF without ever holding more than a
few horizontal bands of it: each band of rows is fetched from libvips into numpy, shown to an
optional `on_band` callback (ink coverage), cut into tiles or strips, predicted and compressed
by a pool of threads (imagecodecs releases the GIL), and the encoded chunks are written in
file order (`press.tiff_stream`). libvips' own `tiffsave` compresses on one thread; this
writer uses every core for compression while libvips computes the next band.

The file appears only when complete: it is written under a hidden temporary name in the
target directory, fsynced and renamed.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import imagecodecs
import numpy as np
import pyvips

from texprod.errors import ConfigError
from texprod.files import atomic_output, fsync_directory
from texprod.host import available_cores
from texprod.press.tiff_stream import GrowingTiff, TiffTags

TIFF_SUFFIXES = (".tif", ".tiff")

TILE = 256  # tile side of the "tiled" layout, and the default band height
STRIP_TARGET_BYTES = 256 * 1024  # aim for strips of about this many uncompressed bytes
DEFLATE_LEVEL = 6  # libdeflate level; libvips' tiffsave default is 6 as well
CLASSIC_TIFF_LIMIT = 2**32 - 1  # classic TIFF offsets are unsigned 32-bit
METADATA_MARGIN = 16 * 2**20  # room for IFD, ICC profile, description in the size estimate
# Worst-case compressed/uncompressed ratio per compression, for data that does not compress:
# TIFF LZW emits at most one 12-bit code per input byte (1.5x), plus a ClearCode at least
# every 3837 codes; deflate falls back to stored blocks (5 bytes per 64 KiB block).
WORST_CASE_RATIO = {"none": 1.0, "lzw": 1.5 * (1 + 1 / 3837), "deflate": 1 + 5 / 65535}
WORST_CASE_PER_CHUNK = {"none": 0, "lzw": 8, "deflate": 16}  # header, EOI, padding bits

COMPRESSIONS = ("lzw", "deflate", "none")
LAYOUTS = ("tiled", "strips")
BIGTIFF_MODES = ("auto", "always", "never")
_FORMATS = {"uchar": np.uint8, "ushort": np.uint16}
MAX_BANDS = 16  # CMYK and a dozen spot inks


def check_tiff_path(path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.suffix.lower() not in TIFF_SUFFIXES:
        raise ConfigError(f"out: got {str(out)!r}, must end in .tif or .tiff")
    if out.is_dir():
        raise ConfigError(f"out: got {str(out)!r}, which is a directory; name a .tif file")
    return out


def write_plain_tiff(image: pyvips.Image, path: str | os.PathLike) -> Path:
    """Save `image` as a tiled, LZW-compressed TIFF; the file appears only when complete."""
    out = check_tiff_path(path)
    with atomic_output(out, suffix=".partial.tif") as tmp:
        image.tiffsave(str(tmp), compression="lzw", predictor="horizontal", tile=True,
                       tile_width=256, tile_height=256, bigtiff=image.width * image.height
                       * image.bands * (2 if image.format == "ushort" else 1) > 3.5 * 2**30)
    return out


# ----------------------------------------------------------------------------- print TIFF


@dataclass(frozen=True)
class TiffOptions:
    """How the print TIFF is stored (the `tiff:` section of a job spec)."""

    compression: str = "lzw"  # "lzw" | "deflate" | "none"; lzw/deflate use the h. predictor
    layout: str = "tiled"  # "tiled" (256x256 tiles) | "strips"
    bigtiff: str = "auto"  # "auto" | "always" | "never"
    embed_icc: bool = True

    def __post_init__(self) -> None:
        for field, value, allowed in (("compression", self.compression, COMPRESSIONS),
                                      ("layout", self.layout, LAYOUTS),
                                      ("bigtiff", self.bigtiff, BIGTIFF_MODES)):
            if value not in allowed:
                raise ConfigError(f"tiff.{field}: got {value!r}, must be one of "
                                  + ", ".join(repr(a) for a in allowed))
        if not isinstance(self.embed_icc, bool):
            raise ConfigError(f"tiff.embed_icc: got {self.embed_icc!r}, must be true or false")


@dataclass(frozen=True)
class WrittenTiff:
    path: Path
    bytes: int
    bigtiff: bool
    bigtiff_reason: str
    seconds: float


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _rows_per_strip(width: int, bands: int, bits: int) -> int:
    """Rows per strip: a power of two (<= TILE) giving strips of about STRIP_TARGET_BYTES."""
    row_bytes = max(1, width * bands * bits // 8)
    rows = 1
    while rows * 2 <= TILE and rows * 2 * row_bytes <= STRIP_TARGET_BYTES:
        rows *= 2
    return rows


def worst_case_size(width: int, height: int, bands: int, bits: int, options: TiffOptions) -> int:
    """An upper bound on the file size, in bytes, for any pixel content."""
    if options.layout == "tiled":
        chunks = math.ceil(width / TILE) * math.ceil(height / TILE)
        chunk_bytes = TILE * TILE * bands * bits // 8  # edge tiles are padded to full size
        raw = chunks * chunk_bytes
    else:
        chunks = math.ceil(height / _rows_per_strip(width, bands, bits))
        raw = width * height * bands * bits // 8
    ratio = WORST_CASE_RATIO[options.compression]
    per_chunk = WORST_CASE_PER_CHUNK[options.compression] + 16  # + offset, byte count, align
    return math.ceil(raw * ratio) + chunks * per_chunk + METADATA_MARGIN


def bigtiff_decision(width: int, height: int, bands: int, bits: int,
                     options: TiffOptions) -> tuple[bool, str]:
    """(use BigTIFF, reason), decided before rendering from the worst-case file size.

    The compressed size is unknown until the file is written, and LZW can expand
    incompressible data by up to 1.5x, so "auto" chooses BigTIFF whenever the worst case
    could pass the 4 GiB limit of classic TIFF. "never" with such a size is a ConfigError.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 1 <= bands <= MAX_BANDS or bits not in (8, 16):
        raise ValueError(f"TIFFs here have 1 to {MAX_BANDS} bands of 8 or 16 bits, got "
                         f"{bands} x {bits}")
    raw = width * height * bands * bits // 8
    worst = worst_case_size(width, height, bands, bits, options)
    fits = worst <= CLASSIC_TIFF_LIMIT
    what = (f"{width}x{height} px, {bands} x {bits} bit, {options.compression}: "
            f"{_gib(raw)} uncompressed, at most {_gib(worst)} on disk")
    if options.bigtiff == "always":
        return True, f"tiff.bigtiff is 'always' ({what})"
    if options.bigtiff == "auto":
        if fits:
            return False, f"classic TIFF: {what}, within the 4 GiB limit"
        return True, f"BigTIFF: {what}, which could pass the 4 GiB limit of classic TIFF"
    if fits:  # never
        return False, f"tiff.bigtiff is 'never' and {what} fits in classic TIFF"
    hint = ("set tiff.bigtiff to 'auto' or 'always' (note that Photoshop and many RIPs read "
            "BigTIFF only partly), or make the image smaller")
    as_deflate = replace(options, compression="deflate")
    if options.compression == "lzw" and worst_case_size(width, height, bands, bits,
                                                        as_deflate) <= CLASSIC_TIFF_LIMIT:
        hint += ", or use tiff.compression 'deflate' (it cannot grow the data beyond ~0.01 %)"
    raise ConfigError(
        f"tiff.bigtiff: got 'never', but the print file ({what}) could pass the 4 GiB "
        f"limit of classic TIFF; {hint}")


def _fetch_band(image: pyvips.Image, y: int, rows: int, dtype: np.dtype) -> np.ndarray:
    """Rows y .. y+rows of `image` as a read-only (rows, width, bands) array."""
    buf = image.crop(0, y, image.width, rows).write_to_memory()
    band = np.frombuffer(buf, dtype=dtype).reshape(rows, image.width, image.bands)
    band.flags.writeable = False  # shared by on_band and the encoders: nobody may change it
    return band


def _predicted(src: np.ndarray, shape: tuple[int, int], predictor: bool) -> np.ndarray:
    """`src` (rows, cols, samples) as a contiguous chunk of `shape` rows x cols, zero-padded
    at the bottom/right, with TIFF horizontal differencing applied per row if `predictor`.

    The differences of the padding are left 0: a reader undoes the predictor left to right,
    so the padding never changes the real pixels.
    """
    rows, cols = src.shape[:2]
    full = (rows, cols) == shape
    out = (np.empty if full else np.zeros)((*shape, src.shape[2]), dtype=src.dtype)
    if predictor:
        out[:rows, 0] = src[:, 0]
        np.subtract(src[:, 1:], src[:, :-1], out=out[:rows, 1:cols])  # wraps like the spec
    else:
        out[:rows, :cols] = src
    return out


def _make_encoder(compression: str) -> Callable[[np.ndarray, int, int, int, int], bytes]:
    """encode(band, y0, x0, rows, cols): one tile/strip of a band, predicted and compressed."""
    predictor = compression != "none"

    def encode(band: np.ndarray, y0: int, x0: int, rows: int, cols: int) -> bytes:
        chunk = _predicted(band[y0:y0 + rows, x0:x0 + cols], (rows, cols), predictor)
        if compression == "lzw":
            return imagecodecs.lzw_encode(chunk)
        if compression == "deflate":
            return imagecodecs.deflate_encode(chunk, DEFLATE_LEVEL)
        return chunk.tobytes()

    return encode


def chunk_windows(rows: int, width: int, layout: str, rows_per_strip: int
                  ) -> list[tuple[int, int, int, int]]:
    """(y0, x0, rows, cols) of each tile or strip of a band of `rows` full-width rows, in
    file order. A band starts on a chunk boundary (a multiple of 256 rows) of the image."""
    if layout == "tiled":
        return [(ty, tx, TILE, TILE) for ty in range(0, rows, TILE)
                for tx in range(0, width, TILE)]
    return [(sy, 0, min(rows_per_strip, rows - sy), width)
            for sy in range(0, rows, rows_per_strip)]


def encode_band(band: np.ndarray, options: TiffOptions) -> list[bytes]:
    """A band of full-width rows (h, width, bands) as its TIFF tiles or strips, predicted
    and compressed, in file order: what a worker sends for the driver to assemble."""
    rows, width, bands = band.shape
    encode = _make_encoder(options.compression)
    per_strip = _rows_per_strip(width, bands, band.dtype.itemsize * 8)
    return [encode(band, *window)
            for window in chunk_windows(rows, width, options.layout, per_strip)]


def _encoded_chunks(image: pyvips.Image, dtype: np.dtype, layout: str, rows_per_strip: int,
                    band_height: int, encode: Callable[..., bytes], pool: ThreadPoolExecutor,
                    on_band: Callable[[int, np.ndarray], None] | None) -> Iterator[bytes]:
    """Encoded tiles (row-major) or strips, in file order.

    A two-stage pipeline: while the pool compresses the chunks of band k, this generator
    fetches band k+1 from libvips (which computes it on its own threads) and hands it to
    `on_band`; then it yields the chunks of band k for tifffile to write. At most two bands
    and their encoded chunks are alive at any time.
    """
    width, height = image.width, image.height
    pending: deque[Future[bytes]] = deque()
    for y in range(0, height, band_height):
        rows = min(band_height, height - y)
        band = _fetch_band(image, y, rows, dtype)
        if on_band is not None:
            on_band(y, band)
        previous = len(pending)
        for window in chunk_windows(rows, width, layout, rows_per_strip):
            pending.append(pool.submit(encode, band, *window))
        del band
        for _ in range(previous):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _ascii_json(text: str) -> str:
    """`text` with every non-ASCII character as a JSON \\u escape: TIFF ASCII tags are 7-bit
    (tifffile refuses anything else), and inside a JSON document this is an equivalent text."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() else json.dumps(c)[1:-1] for c in text)


def _check_image(image: pyvips.Image) -> np.dtype:
    if image.format not in _FORMATS:
        raise ValueError(f"print TIFF: image format must be uchar or ushort, got {image.format!r}")
    if image.bands == 4 and image.interpretation != "cmyk":
        raise ValueError("print TIFF: a 4-band image must be CMYK (interpretation 'cmyk'), got "
                         f"{image.interpretation!r}; flatten any alpha before writing")
    if image.bands not in (3, 4):
        raise ValueError(f"print TIFF: image must have 3 (RGB) or 4 (CMYK) bands, "
                         f"got {image.bands}")
    return np.dtype(_FORMATS[image.format]).newbyteorder("=")


def write_print_tiff(image: pyvips.Image, path: str | os.PathLike, *, options: TiffOptions,
                     dpi: float, icc_profile: bytes | None, description: str,
                     on_band: Callable[[int, np.ndarray], None] | None = None,
                     workers: int | None = None, band_height: int = TILE) -> WrittenTiff:
    """Stream `image` (3-band RGB or 4-band CMYK, 8 or 16 bit) into a print-ready TIFF.

    - `on_band(y, rows)` sees every row exactly once, top to bottom, as read-only
      (h, width, bands) arrays; an exception raised there aborts the write.
    - `workers` compression threads (default: all cores); `band_height` rows are fetched from
      libvips at a time (a multiple of 256; memory is a few bands, whatever the image size).
    - Tags: RGB, or SEPARATED with InkSet CMYK; contig; resolution `dpi` per inch; ICC
      profile when given and `options.embed_icc`; `description` (JSON) as ImageDescription,
      verbatim except that non-ASCII characters become \\u escapes (TIFF strings are ASCII).
    """
    out = check_tiff_path(path)
    dtype = _check_image(image)
    if not (isinstance(dpi, numbers.Real) and math.isfinite(dpi) and dpi > 0):
        raise ConfigError(f"dpi: got {dpi!r}, must be a positive number")
    if band_height <= 0 or band_height % TILE:
        raise ValueError(f"band_height: got {band_height}, must be a positive multiple of {TILE}")
    workers = max(1, workers if workers is not None else available_cores())
    width, height, bands, bits = image.width, image.height, image.bands, dtype.itemsize * 8
    rows_per_strip = _rows_per_strip(width, bands, bits)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tiff-encode")
    try:
        chunks = _encoded_chunks(image, dtype, options.layout, rows_per_strip, band_height,
                                 _make_encoder(options.compression), pool, on_band)
        written = assemble_tiff(chunks, out, width=width, height=height, bands=bands,
                                dtype=dtype, options=options, dpi=dpi,
                                icc_profile=icc_profile, description=description)
        chunks.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return written


def print_tags(*, width: int, height: int, bands: int, dtype: np.dtype, options: TiffOptions,
               dpi: float, icc_profile: bytes | None, description: str,
               inks: list[str] | None = None, ink_plate: bool = False) -> TiffTags:
    """The tags of a print TIFF (see `TiffTags` for what 1, 3, 4 and more bands mean):
    tiles of TILE px or strips of ~256 KB, the horizontal predictor when compressed,
    resolution `dpi` per inch, the ICC profile when given and `options.embed_icc`, and
    `description` (JSON) as ImageDescription, verbatim except that non-ASCII characters
    become \\u escapes (TIFF strings are ASCII)."""
    bits = np.dtype(dtype).itemsize * 8
    return TiffTags(
        width=width, height=height, bands=bands, bits=bits, compression=options.compression,
        tile=TILE if options.layout == "tiled" else None,
        rows_per_strip=None if options.layout == "tiled" else _rows_per_strip(width, bands,
                                                                              bits),
        dpi=dpi, icc_profile=icc_profile if options.embed_icc else None,
        description=_ascii_json(description), inks=inks, ink_plate=ink_plate)


def assemble_tiff(chunks: Iterable[bytes], path: str | os.PathLike, *, width: int,
                  height: int, bands: int, dtype: np.dtype, options: TiffOptions, dpi: float,
                  icc_profile: bytes | None, description: str,
                  inks: list[str] | None = None, ink_plate: bool = False) -> WrittenTiff:
    """Write a print TIFF (the tags of `print_tags`) from its chunks, already predicted and
    compressed, in file order (tiles row-major, or strips). The file appears only when
    complete."""
    out = check_tiff_path(path)
    tags = print_tags(width=width, height=height, bands=bands, dtype=dtype, options=options,
                      dpi=dpi, icc_profile=icc_profile, description=description, inks=inks,
                      ink_plate=ink_plate)
    bigtiff, reason = bigtiff_decision(width, height, bands, tags.bits, options)
    start = time.perf_counter()
    with atomic_output(out, suffix=".partial.tif") as tmp, GrowingTiff(tmp, bigtiff) as tiff:
        sizes = []
        for chunk in chunks:
            tiff.append(chunk)
            sizes.append(len(chunk))
        tiff.finish(tags, sizes)
    fsync_directory(out.parent)
    return WrittenTiff(path=out, bytes=out.stat().st_size, bigtiff=bigtiff,
                       bigtiff_reason=reason, seconds=time.perf_counter() - start)
