"""PDF/X-4 of a press raster: one page, CMYK image(s) plus spot plates, with flat memory.

`write_pdfx4` takes the print raster as bands of rows (C, M, Y, K and one channel per spot
ink) and writes a one-page PDF/X-4 (PDF 1.6): the raster as DeviceCMYK images, each spot
plate as images in a /Separation colour space painted over it with overprint on, the
MediaBox the whole canvas, TrimBox and BleedBox from the spec's millimetres (not the
pixel-rounded trim), an OutputIntent with the output profile, and document Info plus XMP.

Flat memory: pikepdf builds every object of the document (page, boxes, resources, output
intent, ICC stream, XMP through `open_metadata`, Info) and unparses them, but this module
lays out the file itself and streams the image data into it. Why not let qpdf write the
file: pikepdf's `Stream` needs all its data at construction (no qpdf StreamDataProvider
binding; pikepdf issue #294), and qpdf's writer holds a whole stream in memory while
writing it, even one copied raw from a lazily opened input: saving a PDF that holds one
200 MB Flate stream peaked at 428 MB RSS (pikepdf 10.18, qpdf 12.4). A page of 1 Gpx
would need GBs. So the image streams are written by us, compressed on the fly, and the
file gets a classic cross-reference table that we compute:

- the CMYK images go straight into the file as the bands arrive, each with an indirect
  /Length object written after its data (PDF's own mechanism for streamed lengths);
- the spot plates are compressed into anonymous temporary files beside the output and
  copied in after the CMYK images (they arrive interleaved with the CMYK rows);
- all other objects come from pikepdf (`unparse`), then xref and trailer; the finished file
  is opened with pikepdf once (cross-reference and page tree, no image data) before it
  is renamed into place.

The raster is split into as few images as keep each image's raw data under
`max_image_bytes` (1 GiB), so each stream's /Length stays below 2**31 (the integer limit
in PDF's implementation limits, ISO 32000-1 Annex C); a 32768 x 32768 CMYK 8-bit page is 4 images. The caller's bands may be
any height, the split does not depend on them. The images are placed in pixel units
(one `cm` scales user space to 72 / dpi points per pixel) at integer rows, so adjacent
images abut exactly, with no gap or overlap at any resolution. /Interpolate is false (PDF/X
forbids true; interpolation would also smooth each image on its own and mark the joins).

Compression: Flate level 6 with the PNG Sub predictor (about 20 % smaller than plain
Flate on texture-like data, for 8 and 16 bit alike). Rows are cut into chunks of about
2 MiB, compressed by a pool of threads (zlib releases the GIL) as independent deflate
segments joined with sync flushes, so each image is one ordinary zlib stream (adler-32
combined as zlib does); the bytes do not depend on the thread count or the band heights.

Memory: the caller's current band plus the chunks in flight (2 per thread, a few MiB
each); a band is finished before the next is asked for, so a reader may reuse its buffer.
Measured peak RSS (2 threads, 2048-row bands of a 2048 px wide CMYK 8-bit page, 43 MB of
it imports): 86 MB for 2048 rows, 116 MB for 16384 rows, 117 MB for 32768 rows (256 MB of
raster) — flat in the page height; the naive way (the whole raster in one pikepdf stream)
grows with the page: bench/bench_pdf.py.

The file appears only when complete (`texprod.files.atomic_output`); on any error, the
bands iterator's included, nothing is left behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import uuid
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name, Stream, String

from texprod import __version__
from texprod.errors import ConfigError, JobFailure, shorten
from texprod.files import atomic_output
from texprod.host import available_cores

log = logging.getLogger(__name__)

PDFX_VERSION = "PDF/X-4"
PDF_HEADER = b"%PDF-1.6\n%\xe2\xe3\xcf\xd3\n"  # PDF/X-4 is PDF 1.6; binary comment line
FLATE_LEVEL = 6
PNG_SUB = 11  # /Predictor 11: PNG predictors, each row tagged 1 (Sub)
CHUNK_BYTES = 2 * 2**20  # rows are predicted and compressed in chunks of about this size
MAX_IMAGE_BYTES = 2**30  # raw bytes of one image: its /Length stays below 2**31
MAX_OFFSET = 10**10 - 1  # a classic xref entry holds 10 digits
MAX_PAGE_PT = 14400  # Acrobat's page size limit (200 in); larger pages only get a warning
REGISTRY = "http://www.color.org"
XMP_NS = "http://ns.texprod.dev/xmp/1.0/"
XMP_PREFIX = "texprod"
RESERVED_INKS = ("cyan", "magenta", "yellow", "black", "all", "none")
_ZLIB_HEADER = b"\x78\x9c"  # deflate, 32 KiB window, default level
_FINAL_BLOCK = zlib.compressobj(FLATE_LEVEL, zlib.DEFLATED, -15).flush()  # empty, BFINAL


@dataclass(frozen=True)
class SpotInk:
    """A spot plate: the ink's name (Latin-1 text, no NUL; the /Separation name) and the
    CMYK (0..1 each) that viewers and proofers show for 100 % of it."""

    name: str
    alternate_cmyk: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    bits: int
    inks: int  # 4 + spots
    strips: tuple[tuple[int, int], ...]  # (first row, end row) of each image


def write_pdfx4(path: str | os.PathLike, bands: Iterable[np.ndarray], *, width_px: int,
                height_px: int, bits: int, dpi: float, trim_mm: tuple[float, float],
                bleed_mm: float, output_profile: bytes, output_condition: str, title: str,
                provenance: dict, spots: Sequence[SpotInk] = (), workers: int | None = None,
                max_image_bytes: int = MAX_IMAGE_BYTES) -> Path:
    """Write the raster in `bands` as a one-page PDF/X-4 at `path` and return the path.

    `bands` yields, top to bottom, arrays (rows, width_px, 4 + len(spots)) of uint8 (bits 8)
    or uint16 (bits 16): C, M, Y, K, then the spot inks; the type's maximum is 100 % ink.
    Their rows add up to `height_px`. `workers`: compression threads (default: the usable
    cores); `max_image_bytes`: raw size of one image XObject (the page is cut into images
    of whole rows below it). Raises ConfigError naming the argument for bad input.
    """
    path = Path(path)
    spots = tuple(spots)
    layout = _check_arguments(width_px, height_px, bits, dpi, trim_mm, bleed_mm, output_profile,
                              output_condition, title, provenance, spots, workers,
                              max_image_bytes)
    dpi, bleed_mm = float(dpi), float(bleed_mm)
    trim_mm = (float(trim_mm[0]), float(trim_mm[1]))
    media = (layout.width / dpi * 72, layout.height / dpi * 72)
    if max(media) > MAX_PAGE_PT:
        log.warning("the page is %.0f x %.0f pt, beyond Acrobat's 14400 pt (200 in) page "
                    "limit: some viewers may refuse it", *media)
    workers = workers or available_cores()
    with ExitStack() as stack:
        out = stack.enter_context(atomic_output(path))
        # anonymous files beside the output (same disk), gone on close even after a crash
        spot_files = [stack.enter_context(tempfile.TemporaryFile(dir=path.parent))
                      for _ in spots]
        pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="pdf-flate"))
        doc, images = _document(layout, dpi, media, trim_mm, bleed_mm, output_profile,
                                output_condition, title, provenance, spots)
        with open(out, "wb") as f:
            writer = _FileWriter(f, max(_reachable(doc)) + 1)
            _write_images(writer, layout, bands, images, spot_files, pool, workers)
            writer.write_document(doc, skip={img.objgen for plate in images for img in plate})
            f.flush()
            os.fsync(f.fileno())
        _check_written(out)
    return path


# ----------------------------------------------------------------------------- arguments


def _check_arguments(width_px, height_px, bits, dpi, trim_mm, bleed_mm, output_profile,
                     output_condition, title, provenance, spots, workers,
                     max_image_bytes) -> _Layout:
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{name}: got {shorten(value)}, must be a positive number of "
                              "pixels")
    if bits not in (8, 16) or isinstance(bits, bool):
        raise ConfigError(f"bits: got {shorten(bits)}, must be 8 or 16")
    if not _is_number(dpi) or not dpi > 0:
        raise ConfigError(f"dpi: got {shorten(dpi)}, must be a positive number")
    if (not isinstance(trim_mm, tuple | list) or len(trim_mm) != 2
            or not all(_is_number(t) and t > 0 for t in trim_mm)):
        raise ConfigError(f"trim_mm: got {shorten(trim_mm)}, must be (width, height) in mm, "
                          "both positive")
    if not _is_number(bleed_mm) or bleed_mm < 0:
        raise ConfigError(f"bleed_mm: got {shorten(bleed_mm)}, must be 0 or more mm")
    half_px = 0.5 / dpi * 25.4
    for axis, px, trim in (("width", width_px, trim_mm[0]), ("height", height_px, trim_mm[1])):
        canvas_mm = px / dpi * 25.4
        if trim + bleed_mm > canvas_mm + half_px:  # the canvas is trim + 2 bleed, rounded
            raise ConfigError(
                f"trim_mm: got a {axis} of {trim:g} mm, which with bleed_mm {bleed_mm:g} does "
                f"not fit the canvas of {px} px at {dpi:g} dpi ({canvas_mm:.3f} mm): the trim "
                "box must lie inside the page")
    if not isinstance(output_profile, bytes | bytearray) or len(output_profile) < 128:
        raise ConfigError(f"output_profile: got {shorten(output_profile)}, must be the bytes "
                          "of an ICC profile")
    head = bytes(output_profile[:40])
    if head[36:40] != b"acsp" or head[16:20] != b"CMYK" or head[12:16] != b"prtr":
        raise ConfigError(
            f"output_profile: got an ICC header with signature {head[36:40]!r}, class "
            f"{head[12:16]!r} and colour space {head[16:20]!r}; a PDF/X output intent needs "
            "an output device (b'prtr') profile for b'CMYK'")
    for name, value in (("output_condition", output_condition), ("title", title)):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name}: got {shorten(value)}, must be a non-empty string")
    if not isinstance(provenance, dict):
        raise ConfigError(f"provenance: got {shorten(provenance)}, must be a dict")
    try:
        json.dumps(provenance, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"provenance: got {shorten(provenance)}, must be JSON data "
                          f"(dicts, lists, strings, finite numbers): {e}") from None
    seen: set[str] = set()
    for i, spot in enumerate(spots):
        _check_spot(i, spot, seen)
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ConfigError(f"workers: got {shorten(workers)}, must be a positive number of "
                          "threads or None (the usable cores)")
    row_bytes = width_px * 4 * bits // 8
    if not _is_int(max_image_bytes) or max_image_bytes < row_bytes:
        raise ConfigError(f"max_image_bytes: got {shorten(max_image_bytes)}, must be at least "
                          f"one CMYK row ({row_bytes} bytes)")
    return _Layout(int(width_px), int(height_px), int(bits), 4 + len(spots),
                   _strips(int(height_px), int(max_image_bytes) // row_bytes))


def _check_spot(i: int, spot: object, seen: set[str]) -> None:
    if not isinstance(spot, SpotInk):
        raise ConfigError(f"spots[{i}]: got {shorten(spot)}, must be a SpotInk")
    name = spot.name
    if not _latin1_name(name):
        raise ConfigError(f"spots[{i}].name: got {shorten(name)}, must be Latin-1 text without "
                          "NUL, 1 to 127 bytes as a PDF name (UTF-8)")
    if name.lower() in RESERVED_INKS:
        raise ConfigError(f"spots[{i}].name: got {name!r}, which is reserved: Cyan, Magenta, "
                          "Yellow and Black are the process inks, All and None are PDF's")
    if name.lower() in seen:
        raise ConfigError(f"spots[{i}].name: got {name!r} twice; ink names must differ")
    seen.add(name.lower())
    cmyk = spot.alternate_cmyk
    if (not isinstance(cmyk, tuple | list) or len(cmyk) != 4
            or not all(_is_number(v) and 0 <= v <= 1 for v in cmyk)):
        raise ConfigError(f"spots[{i}].alternate_cmyk: got {shorten(cmyk)}, must be four "
                          "numbers (C, M, Y, K) from 0 to 1")


def _latin1_name(name: object) -> bool:
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    try:
        name.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return len(name.encode()) <= 127  # PDF names are UTF-8 bytes, at most 127


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool) and math.isfinite(value))


def _strips(height: int, max_rows: int) -> tuple[tuple[int, int], ...]:
    """As few images as keep each within max_rows, of about equal heights."""
    count = -(-height // max_rows)
    rows = -(-height // count)
    return tuple((top, min(top + rows, height)) for top in range(0, height, rows))


# ----------------------------------------------------------------------------- document


def _document(layout: _Layout, dpi: float, media: tuple[float, float],
              trim_mm: tuple[float, float], bleed_mm: float, profile: bytes, condition: str,
              title: str, provenance: dict, spots: tuple[SpotInk, ...]
              ) -> tuple[pikepdf.Pdf, list[list[Stream]]]:
    """Every object of the file, built with pikepdf; the images' data are left empty (the
    writer streams them). Returns the document and the images, per plate (CMYK first)."""
    pikepdf.models.PdfMetadata.register_xml_namespace(XMP_NS, XMP_PREFIX)  # idempotent
    doc = pikepdf.new()
    page = doc.add_blank_page(page_size=media).obj
    bleed = bleed_mm / 25.4 * 72
    trim = [t / 25.4 * 72 for t in trim_mm]
    # centred, as the raster's trim is (its bleed is the same whole pixels on both sides);
    # a canvas rounded down by less than half a pixel may cut the box: clamp it there
    left, bottom = (max(0.0, (m - t) / 2) for m, t in zip(media, trim, strict=True))
    trim_box = [left, bottom, min(left + trim[0], media[0]), min(bottom + trim[1], media[1])]
    bleed_box = [max(trim_box[0] - bleed, 0), max(trim_box[1] - bleed, 0),
                 min(trim_box[2] + bleed, media[0]), min(trim_box[3] + bleed, media[1])]
    page.MediaBox = _box([0, 0, *media])
    page.BleedBox = _box(bleed_box)
    page.TrimBox = _box(trim_box)

    icc = Stream(doc, zlib.compress(bytes(profile), FLATE_LEVEL), Filter=Name.FlateDecode,
                 N=4, Alternate=Name.DeviceCMYK)
    doc.Root.OutputIntents = Array([doc.make_indirect(Dictionary(
        Type=Name.OutputIntent, S=Name.GTS_PDFX, OutputConditionIdentifier=String(condition),
        RegistryName=String(REGISTRY), Info=String(condition),
        DestOutputProfile=icc))])

    colour_spaces: list[object] = [Name.DeviceCMYK]
    for spot in spots:
        tint = Dictionary(FunctionType=2, Domain=[0, 1], C0=[0, 0, 0, 0],
                          C1=[round(float(v), 6) for v in spot.alternate_cmyk], N=1)
        colour_spaces.append(doc.make_indirect(Array(
            [Name.Separation, Name("/" + spot.name), Name.DeviceCMYK, tint])))
    images: list[list[Stream]] = []
    xobjects = Dictionary()
    for plate, space in enumerate(colour_spaces):
        colours = 4 if plate == 0 else 1
        images.append([])
        for i, (top, end) in enumerate(layout.strips):
            image = Stream(  # streams are indirect objects from the start
                doc, b"", Type=Name.XObject, Subtype=Name.Image, Width=layout.width,
                Height=end - top, ColorSpace=space, BitsPerComponent=layout.bits,
                Interpolate=False, Filter=Name.FlateDecode,
                DecodeParms=Dictionary(Predictor=PNG_SUB, Colors=colours,
                                       BitsPerComponent=layout.bits, Columns=layout.width))
            if plate:  # a spot plate paints only where it has ink (colour key mask), so
                # viewers that do not simulate overprint still show the print beside it
                image.Mask = Array([0, 0])
            images[-1].append(image)
            xobjects[_image_name(plate, i)] = image
    resources = Dictionary(XObject=xobjects)
    if spots:
        # overprint: the spot plates add their ink, they do not knock out the process inks
        resources.ExtGState = Dictionary(GSop=Dictionary(Type=Name.ExtGState, OP=True,
                                                          op=True, OPM=1))
    page.Resources = resources
    page.Contents.write(zlib.compress(_content(layout, dpi, len(spots)), FLATE_LEVEL),
                        filter=Name.FlateDecode)

    now = datetime.now(UTC).replace(microsecond=0)
    producer = f"texprod {__version__} (pikepdf {pikepdf.__version__})"
    # PDF 1.x dates end HH'mm' (pikepdf writes PDF 2.0's HH'mm), so Info is set here
    pdf_date = now.strftime("D:%Y%m%d%H%M%S+00'00'")
    info = {"/Title": String(title), "/Creator": String("texprod"),
            "/Producer": String(producer), "/CreationDate": String(pdf_date),
            "/ModDate": String(pdf_date), "/Trapped": Name("/False"),
            "/GTS_PDFXVersion": String(PDFX_VERSION)}
    for key, value in info.items():
        doc.docinfo[key] = value
    document_id, instance_id = uuid.uuid4(), uuid.uuid4()
    with doc.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as xmp:
        xmp["dc:title"] = title
        xmp["dc:format"] = "application/pdf"
        xmp["xmp:CreatorTool"] = "texprod"
        xmp["pdf:Producer"] = producer
        for key in ("xmp:CreateDate", "xmp:ModifyDate", "xmp:MetadataDate"):
            xmp[key] = now.isoformat()
        xmp["pdf:Trapped"] = "False"
        xmp["pdfxid:GTS_PDFXVersion"] = PDFX_VERSION
        xmp["xmpMM:DocumentID"] = document_id.urn
        xmp["xmpMM:InstanceID"] = instance_id.urn
        xmp["xmpMM:VersionID"] = "1"
        xmp["xmpMM:RenditionClass"] = "default"
        xmp[f"{{{XMP_NS}}}provenance"] = json.dumps(provenance, sort_keys=True)
    doc.trailer.ID = Array([String(document_id.bytes), String(instance_id.bytes)])
    return doc, images


def _box(values: list[float]) -> Array:
    return Array([round(v, 6) for v in values])


def _image_name(plate: int, strip: int) -> str:
    return f"/Im{strip}" if plate == 0 else f"/Spot{plate - 1}_{strip}"


def _content(layout: _Layout, dpi: float, spots: int) -> bytes:
    """Paint the images in pixel units: every image lands on whole rows, edge to edge."""
    scale = f"{72 / dpi:.10f}".rstrip("0").rstrip(".")
    ops = ["q", f"{scale} 0 0 {scale} 0 0 cm"]
    for plate in range(1 + spots):
        if plate == 1:
            ops.append("/GSop gs")
        for i, (top, end) in enumerate(layout.strips):
            ops.append(f"q {layout.width} 0 0 {end - top} 0 {layout.height - end} cm "
                       f"{_image_name(plate, i)} Do Q")
    ops.append("Q")
    return ("\n".join(ops) + "\n").encode()


# ----------------------------------------------------------------------------- image data


def _write_images(writer: _FileWriter, layout: _Layout, bands: Iterable[np.ndarray],
                  images: list[list[Stream]], spot_files: list[BinaryIO],
                  pool: ThreadPoolExecutor, workers: int) -> None:
    """Stream the bands into the CMYK images (into the file) and the spot plates (into
    their temporary files), then copy the spot plates in."""
    plates = [_Plate(slice(0, 4), layout, writer.file)]
    plates += [_Plate(slice(4 + j, 5 + j), layout, f) for j, f in enumerate(spot_files)]
    in_flight: deque[tuple[_Plate, Future]] = deque()
    spot_streams: list[list[tuple[int, int]]] = [[] for _ in spot_files]  # (offset, length)

    def drain(keep: int) -> None:
        while len(in_flight) > keep:
            plate, future = in_flight.popleft()
            plate.add(*future.result())

    def begin(strip: int) -> None:
        writer.begin_stream(images[0][strip])
        for plate in plates:
            plate.begin()

    def end(strip: int) -> None:
        drain(0)
        for plate in plates:
            plate.flush(pool, in_flight)
        drain(0)
        writer.end_stream(plates[0].end())
        for j, plate in enumerate(plates[1:]):
            spot_streams[j].append((plate.start, plate.end()))

    strip, row = 0, 0
    begin(0)
    for band in _checked(bands, layout):
        at = 0
        while at < len(band):
            end_row = layout.strips[strip][1]
            take = min(len(band) - at, end_row - row)
            for plate in plates:
                plate.feed(band[at:at + take], pool, in_flight)
                drain(2 * workers)
            at += take
            row += take
            if row == end_row:
                end(strip)
                strip += 1
                if strip < len(layout.strips):
                    begin(strip)
        drain(0)  # done with the band before asking for the next: a reader may reuse it
        del band  # and it may be freed while the next one is made
    for j, f in enumerate(spot_files):
        for image, (offset, length) in zip(images[j + 1], spot_streams[j], strict=True):
            writer.copy_stream(image, f, offset, length)


def _checked(bands: Iterable[np.ndarray], layout: _Layout) -> Iterator[np.ndarray]:
    dtype = np.dtype(np.uint8 if layout.bits == 8 else np.uint16)
    rows = 0
    index = -1
    for index, band in enumerate(bands):
        if not isinstance(band, np.ndarray):
            raise ConfigError(f"bands[{index}]: got {shorten(band)}, must be a numpy array")
        if band.ndim != 3 or band.shape[1:] != (layout.width, layout.inks):
            raise ConfigError(
                f"bands[{index}]: got shape {band.shape}, must be (rows, {layout.width}, "
                f"{layout.inks}): rows x width_px x (C, M, Y, K"
                + (f" and {layout.inks - 4} spot inks)" if layout.inks > 4 else ")"))
        if band.dtype != dtype:
            raise ConfigError(f"bands[{index}]: got dtype {band.dtype}, must be {dtype} for "
                              f"bits {layout.bits}")
        rows += len(band)
        if rows > layout.height:
            raise ConfigError(f"bands: got {rows} rows by bands[{index}], more than "
                              f"height_px {layout.height}")
        if len(band):
            yield band
        del band  # not held while the next band is made
    if rows != layout.height:
        raise ConfigError(f"bands: got {rows} rows in {index + 1} bands, must add up to "
                          f"height_px {layout.height}")


class _Plate:
    """One plate's rows (a slice of the inks) → predicted, compressed chunks → zlib streams
    written to `sink`, one per image; chunk boundaries at fixed rows of each image."""

    def __init__(self, inks: slice, layout: _Layout, sink: BinaryIO):
        self.inks = inks
        self.bits = layout.bits
        row_bytes = layout.width * (inks.stop - inks.start) * layout.bits // 8
        self.chunk_rows = max(1, CHUNK_BYTES // row_bytes)
        self.sink = sink
        self.pending: list[np.ndarray] = []  # rows of a chunk not full yet (copies)
        self.pending_rows = 0

    def begin(self) -> None:
        self.start = self.sink.tell()
        self.sink.write(_ZLIB_HEADER)
        self.adler = 1
        self.length = len(_ZLIB_HEADER)

    def feed(self, rows: np.ndarray, pool: ThreadPoolExecutor, in_flight: deque) -> None:
        at = 0
        if self.pending:
            take = min(len(rows), self.chunk_rows - self.pending_rows)
            self.pending.append(rows[at:take, :, self.inks].copy())
            self.pending_rows += take
            at = take
            if self.pending_rows < self.chunk_rows:
                return
            self.flush(pool, in_flight)
        while len(rows) - at >= self.chunk_rows:
            chunk = rows[at:at + self.chunk_rows, :, self.inks]
            in_flight.append((self, pool.submit(_encode, chunk, self.bits)))
            at += self.chunk_rows
        if at < len(rows):
            self.pending = [rows[at:, :, self.inks].copy()]
            self.pending_rows = len(rows) - at

    def flush(self, pool: ThreadPoolExecutor, in_flight: deque) -> None:
        if self.pending:
            chunk = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
            in_flight.append((self, pool.submit(_encode, chunk, self.bits)))
            self.pending, self.pending_rows = [], 0

    def add(self, data: bytes, adler: int, size: int) -> None:
        self.sink.write(data)
        self.length += len(data)
        self.adler = _adler32_combine(self.adler, adler, size)

    def end(self) -> int:
        """Close the zlib stream; return its length in bytes."""
        tail = _FINAL_BLOCK + self.adler.to_bytes(4, "big")
        self.sink.write(tail)
        return self.length + len(tail)


def _encode(rows: np.ndarray, bits: int) -> tuple[bytes, int, int]:
    """Rows (r, width, inks) → (raw deflate segment ending in a sync flush, adler-32 of the
    predicted bytes, their count). PNG Sub: each byte minus the one a pixel to its left."""
    data = np.ascontiguousarray(rows, dtype=">u2" if bits == 16 else np.uint8)
    count, _, inks = data.shape
    line = data.view(np.uint8).reshape(count, -1)
    step = inks * bits // 8  # bytes per pixel
    predicted = np.empty((count, line.shape[1] + 1), np.uint8)
    predicted[:, 0] = 1  # the row's PNG filter type: Sub
    predicted[:, 1:step + 1] = line[:, :step]
    np.subtract(line[:, step:], line[:, :-step], out=predicted[:, step + 1:])  # wraps mod 256
    deflate = zlib.compressobj(FLATE_LEVEL, zlib.DEFLATED, -15)
    segment = deflate.compress(predicted) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return segment, zlib.adler32(predicted), predicted.size


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A + B from those of A and B and B's length (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = rem * sum1 % base
    sum1 = (sum1 + (adler2 & 0xFFFF) + base - 1) % base
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + base - rem) % base
    return sum1 | sum2 << 16


# ----------------------------------------------------------------------------- file layout


class _FileWriter:
    """The PDF file: objects at recorded offsets, then a classic xref table and trailer."""

    def __init__(self, file: BinaryIO, first_free_num: int):
        self.file = file
        self.offsets: dict[int, int] = {}
        self.next_num = first_free_num  # for the /Length objects, after pikepdf's objects
        file.write(PDF_HEADER)

    def _begin_object(self, num: int) -> None:
        at = self.file.tell()
        if at > MAX_OFFSET:
            raise JobFailure(f"the PDF passed {MAX_OFFSET:,} bytes, the most a classic "
                             "cross-reference table can address")
        assert num not in self.offsets, f"got object {num} twice, expected it once"
        self.offsets[num] = at
        self.file.write(b"%d 0 obj\n" % num)

    def begin_stream(self, image: Stream, length: bytes | None = None) -> None:
        """Start a stream object whose data the caller writes; its /Length is an indirect
        object written after it (end_stream), unless given."""
        if length is None:
            self.pending_length = self.next_num
            self.next_num += 1
            length = b"%d 0 R" % self.pending_length
        self._begin_object(image.objgen[0])
        self.file.write(_stream_dict(image, length) + b"\nstream\n")

    def end_stream(self, length: int) -> None:
        self.file.write(b"\nendstream\nendobj\n")
        self._begin_object(self.pending_length)
        self.file.write(b"%d\nendobj\n" % length)

    def copy_stream(self, image: Stream, source: BinaryIO, offset: int, length: int) -> None:
        self.begin_stream(image, b"%d" % length)
        source.seek(offset)
        left = length
        while left:
            block = source.read(min(left, 8 * 2**20))
            assert block, f"got the end of a spot plate file, expected {left} more bytes"
            self.file.write(block)
            left -= len(block)
        self.file.write(b"\nendstream\nendobj\n")

    def write_document(self, doc: pikepdf.Pdf, skip: set[tuple[int, int]]) -> None:
        """Every object of `doc` reachable from its trailer (except `skip`, already
        written), the xref table and the trailer."""
        for num, obj in sorted(_reachable(doc).items()):
            if obj.objgen in skip:
                continue
            if isinstance(obj, Stream):
                raw = obj.read_raw_bytes()
                self._begin_object(num)
                self.file.write(_stream_dict(obj, b"%d" % len(raw)) + b"\nstream\n" + raw
                                + b"\nendstream\nendobj\n")
            else:
                self._begin_object(num)
                self.file.write(obj.unparse(resolved=True) + b"\nendobj\n")
        size = max(self.offsets) + 1
        xref = self.file.tell()
        # unused numbers (pikepdf's unreachable objects) form PDF's linked list of free
        # entries, from object 0 on
        free = [n for n in range(1, size) if n not in self.offsets]
        next_free = dict(zip([0, *free], [*free, 0], strict=True))
        entries = [b"%010d 65535 f \n" % next_free[0]]
        for num in range(1, size):
            if num in self.offsets:
                entries.append(b"%010d 00000 n \n" % self.offsets[num])
            else:
                entries.append(b"%010d 00001 f \n" % next_free[num])
        trailer = Dictionary(Size=size, Root=doc.Root, Info=doc.trailer.Info,
                             ID=doc.trailer.ID)
        self.file.write(b"xref\n0 %d\n" % size + b"".join(entries) + b"trailer\n"
                        + trailer.unparse() + b"\nstartxref\n%d\n%%%%EOF\n" % xref)


def _stream_dict(stream: Stream, length: bytes) -> bytes:
    copy = Dictionary(stream.stream_dict)  # shallow: references stay references
    if "/Length" in copy:
        del copy["/Length"]
    text = copy.unparse()
    assert text.endswith(b">>"), f"got {text[-20:]!r}, expected a dictionary"
    return text[:-2].rstrip() + b" /Length " + length + b" >>"


def _reachable(doc: pikepdf.Pdf) -> dict[int, pikepdf.Object]:
    """The indirect objects reachable from the trailer, by object number."""
    found: dict[int, pikepdf.Object] = {}
    todo = [value for key, value in doc.trailer.items() if key in ("/Root", "/Info")]
    while todo:
        obj = todo.pop()
        if not isinstance(obj, pikepdf.Object):  # numbers and booleans come back as Python's
            continue
        if obj.is_indirect:
            num, gen = obj.objgen
            assert gen == 0, f"got generation {gen} of object {num}, expected 0"
            if num in found:
                continue
            found[num] = obj
        if isinstance(obj, Stream):
            todo.extend(obj.stream_dict.values())
        elif isinstance(obj, Dictionary):
            todo.extend(obj.values())
        elif isinstance(obj, Array):
            todo.extend(obj)
    return found


def _check_written(path: Path) -> None:
    """Open the file as a reader would (xref, trailer, page tree; no image data): a layout
    mistake here would make qpdf repair the file, with warnings."""
    with pikepdf.open(path) as pdf:
        pages = len(pdf.pages)
        warnings = pdf.get_warnings()
    assert pages == 1 and not warnings, (
        f"got {pages} pages and warnings {warnings} reading the written PDF back, expected "
        "1 page and no warnings")
