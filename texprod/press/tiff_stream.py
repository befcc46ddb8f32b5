"""A TIFF written front to back as its compressed chunks arrive, and resumable.

The layout is the one libtiff itself writes: the header, then every chunk (tile or strip)
in file order, contiguous, then the IFD and its values at the end, the header's IFD
offset patched last. Nothing before the chunks depends on them, so

- a print job appends each stripe's chunks while later stripes still render (the file
  grows during the render instead of being copied from the spool after it), and
- a killed job's file is a valid prefix: its rerun truncates the file to the last stripe
  it recorded and appends from there, with the same bytes as an uninterrupted run.

The IFD holds the tags tifffile wrote for texprod before (the same readers, the same
preflight); tifffile, libvips (libtiff), tiffinfo and Ghostscript read these files back in
the tests.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from texprod import __version__
from texprod.press.tiff_tags import (
    COMPRESSION_CODES,
    EXTRASAMPLE_UNSPECIFIED,
    INKSET_CMYK,
    INKSET_MULTI,
    PHOTOMETRIC_RGB,
    PHOTOMETRIC_SEPARATED,
    TAG_DESCRIPTION,
    TAG_EXTRASAMPLES,
    TAG_ICC,
    TAG_INK_NAMES,
    TAG_INKSET,
    TAG_NUMBER_OF_INKS,
)

BYTEORDER = "<" if sys.byteorder == "little" else ">"  # chunks hold native 16-bit samples
_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _LONG8 = 2, 3, 4, 5, 7, 16
_MINISWHITE, _MINISBLACK = 0, 1
_RESUNIT_INCH, _PLANAR_CONTIG, _PREDICTOR_HORIZONTAL = 2, 1, 2
# a large file is flushed to the disk as it grows (with 100+ GB of RAM the kernel would
# otherwise hold it all in the page cache until the final fsync)
WRITEBACK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TiffTags:
    """What the IFD says besides where the chunks are.

    3 bands are RGB, 4 CMYK. More are CMYK plus spot inks, the way prepress tools read
    them: SEPARATED, InkSet 2 (not CMYK only), NumberOfInks, InkNames `inks` and the spot
    channels as ExtraSamples marked unspecified (inks, not alpha). One band is a grey
    image: an ink plate (`ink_plate`: MinIsWhite, so full ink shows black) or a label map
    (MinIsBlack)."""

    width: int
    height: int
    bands: int
    bits: int
    compression: str  # lzw | deflate | none; compressed chunks use the horizontal predictor
    tile: int | None  # tile side, or None for strips of `rows_per_strip`
    rows_per_strip: int | None
    dpi: float
    icc_profile: bytes | None
    description: str  # ASCII (TIFF strings are 7-bit)
    inks: list[str] | None = None
    ink_plate: bool = False

    def __post_init__(self) -> None:
        if self.bands > 4 and (self.inks is None or len(self.inks) != self.bands):
            raise ValueError(f"{self.bands} bands need {self.bands} ink names, "
                             f"got {self.inks!r}")

    @property
    def chunk_count(self) -> int:
        if self.tile:
            return -(-self.width // self.tile) * -(-self.height // self.tile)
        return -(-self.height // self.rows_per_strip)

    def entries(self, offsets: list[int], sizes: list[int], bigtiff: bool
                ) -> list[tuple[int, int, list | bytes]]:
        """(tag, type, values) in ascending tag order."""
        separated = self.bands >= 4
        photometric = (PHOTOMETRIC_SEPARATED if separated else PHOTOMETRIC_RGB
                       if self.bands == 3 else _MINISWHITE if self.ink_plate else _MINISBLACK)
        # the closest fraction whose terms fit the 32-bit RATIONAL
        dpi = Fraction(self.dpi).limit_denominator(max(1, int((2**32 - 1) // max(self.dpi, 1))))
        chunk_type = _LONG8 if bigtiff else _LONG
        tags: list[tuple[int, int, list | bytes]] = [
            (256, _LONG, [self.width]), (257, _LONG, [self.height]),
            (258, _SHORT, [self.bits] * self.bands),
            (259, _SHORT, [COMPRESSION_CODES[self.compression]]),
            (262, _SHORT, [photometric]),
            (TAG_DESCRIPTION, _ASCII, _ascii(self.description)),
            (277, _SHORT, [self.bands]),
            (282, _RATIONAL, [dpi.numerator, dpi.denominator]),
            (283, _RATIONAL, [dpi.numerator, dpi.denominator]),
            (284, _SHORT, [_PLANAR_CONTIG]),
            (296, _SHORT, [_RESUNIT_INCH]),
            (305, _ASCII, _ascii(f"texprod {__version__}")),
        ]
        if self.compression != "none":
            tags.append((317, _SHORT, [_PREDICTOR_HORIZONTAL]))
        if self.tile:
            tags += [(322, _LONG, [self.tile]), (323, _LONG, [self.tile]),
                     (324, chunk_type, offsets), (325, chunk_type, sizes)]
        else:
            tags += [(273, chunk_type, offsets), (278, _LONG, [self.rows_per_strip]),
                     (279, chunk_type, sizes)]
        if self.bands == 4:
            tags.append((TAG_INKSET, _SHORT, [INKSET_CMYK]))
        elif separated:
            names = "".join(f"{name}\0" for name in self.inks).encode("ascii")
            tags += [(TAG_INKSET, _SHORT, [INKSET_MULTI]), (TAG_INK_NAMES, _ASCII, names),
                     (TAG_NUMBER_OF_INKS, _SHORT, [self.bands]),
                     (TAG_EXTRASAMPLES, _SHORT, [EXTRASAMPLE_UNSPECIFIED] * (self.bands - 4))]
        if self.icc_profile:
            tags.append((TAG_ICC, _UNDEFINED, self.icc_profile))
        return sorted(tags, key=lambda t: t[0])


def _starts_with(path: Path, head: bytes) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(head)) == head


def _ascii(text: str) -> bytes:
    return text.encode("ascii") + b"\0"


def header(bigtiff: bool, ifd_offset: int = 0) -> bytes:
    """The file header pointing at the IFD (0: not written yet)."""
    if bigtiff:
        return struct.pack(BYTEORDER + "2sHHHQ", b"II" if BYTEORDER == "<" else b"MM", 43, 8,
                           0, ifd_offset)
    return struct.pack(BYTEORDER + "2sHI", b"II" if BYTEORDER == "<" else b"MM", 42,
                       ifd_offset)


def ifd(tags: TiffTags, sizes: list[int], start: int, bigtiff: bool) -> bytes:
    """The IFD at file offset `start` (even), its long values right after it. The chunks
    lie contiguous from just after the header, in file order, `sizes` bytes each."""
    first = len(header(bigtiff))
    offsets = (first + np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64)])).tolist()
    entries = tags.entries(offsets, list(sizes), bigtiff)
    count_fmt, entry_fmt, inline, next_fmt = (("Q", "HHQ", 8, "Q") if bigtiff
                                               else ("H", "HHI", 4, "I"))
    table_bytes = struct.calcsize(BYTEORDER + count_fmt) + len(entries) * (
        struct.calcsize(BYTEORDER + entry_fmt) + inline) + struct.calcsize(BYTEORDER + next_fmt)
    table, values = [struct.pack(BYTEORDER + count_fmt, len(entries))], []
    value_at = start + table_bytes
    for code, kind, data in entries:
        raw = _packed(kind, data)
        count = len(data) // 2 if kind == _RATIONAL else len(data)
        table.append(struct.pack(BYTEORDER + entry_fmt, code, kind, count))
        if len(raw) <= inline:
            table.append(raw.ljust(inline, b"\0"))
        else:
            raw += b"\0" * (len(raw) % 2)  # values start on a word boundary
            table.append(struct.pack(BYTEORDER + ("Q" if bigtiff else "I"), value_at))
            values.append(raw)
            value_at += len(raw)
    table.append(struct.pack(BYTEORDER + next_fmt, 0))  # the only IFD
    return b"".join(table + values)


def _packed(kind: int, data: list | bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    return np.asarray(data, dtype=BYTEORDER + {_SHORT: "u2", _LONG: "u4", _RATIONAL: "u4",
                                                _LONG8: "u8"}[kind]).tobytes()


class GrowingTiff:
    """The file being written at `path`: `append` chunk data in file order, `finish` to
    write the IFD. Opened with `resume_at`, an existing file is kept up to that many bytes
    (a prefix an earlier writer recorded) and appended to. Writeback to the disk runs in
    the background as the file grows, so `finish` has little left to flush."""

    def __init__(self, path: Path, bigtiff: bool, resume_at: int | None = None):
        self.path, self.bigtiff = Path(path), bigtiff
        head = header(bigtiff)
        resumable = (resume_at is not None and self.path.is_file()
                     and self.path.stat().st_size >= resume_at >= len(head)
                     and _starts_with(self.path, head))
        self._fh = open(self.path, "r+b" if resumable else "wb")  # noqa: SIM115
        if resumable:
            self._fh.truncate(resume_at)
            self._fh.seek(resume_at)
        else:
            self._fh.write(head)
        self.size = self._fh.tell()
        self.resumed = resumable
        self._flushing = threading.Lock()
        self._unsynced = 0

    def append(self, data: bytes) -> int:
        """Write `data` at the end; returns the file's new size."""
        self._fh.write(data)
        self.size += len(data)
        self._unsynced += len(data)
        # one background fdatasync at a time, every WRITEBACK_BYTES
        if self._unsynced >= WRITEBACK_BYTES and self._flushing.acquire(blocking=False):
            self._fh.flush()
            self._unsynced = 0
            threading.Thread(target=self._writeback, daemon=True,
                             name="tiff-writeback").start()
        return self.size

    def _writeback(self) -> None:
        try:
            os.fdatasync(self._fh.fileno())
        except (OSError, ValueError):  # closed meanwhile: finish or close syncs anyway
            pass
        finally:
            self._flushing.release()

    def finish(self, tags: TiffTags, sizes: list[int]) -> int:
        """Write the IFD for chunks of `sizes` (all the file's data), then the header's
        pointer to it; fsync. Returns the file size."""
        if len(sizes) != tags.chunk_count or sum(sizes) != self.size - len(header(self.bigtiff)):
            raise ValueError(f"the file holds {self.size} bytes, not the header and the "
                             f"{len(sizes)} of {tags.chunk_count} chunks recorded")
        start = self.size + self.size % 2  # the IFD starts on a word boundary
        self._fh.write(b"\0" * (start - self.size))
        self._fh.write(ifd(tags, sizes, start, self.bigtiff))
        self._fh.seek(0)
        self._fh.write(header(self.bigtiff, start))
        self._fh.flush()
        with self._flushing:  # after any writeback under way
            os.fsync(self._fh.fileno())
        self.size = self._fh.seek(0, os.SEEK_END)
        return self.size

    def close(self) -> None:
        with self._flushing:
            self._fh.close()

    def __enter__(self) -> GrowingTiff:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
