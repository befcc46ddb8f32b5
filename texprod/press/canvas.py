"""The scratch canvas on local disk that finished tiles are written into.

A raw, interleaved (height, width, bands) file. Tiles of one tile row are collected in a
band buffer and written with one positioned write when the row is complete, so the
process holds at most one band of pixels (tile height x canvas width) whatever the print
size; the page cache, not the heap, carries the rest. libvips reads the same file lazily
for colour conversion and export. Finished bands are recorded beside the canvas, so an
interrupted job can resume with the bands it already has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyvips

from texprod.engine.tiling import Tile, TilePlan
from texprod.files import atomic_output

VIPS_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort"}


class ScratchCanvas:
    def __init__(self, path: str | os.PathLike, width: int, height: int, bands: int,
                 dtype: np.dtype | type = np.uint8, *, identity: dict | None = None):
        """Open the canvas at `path`, creating it (sparse) if needed.

        `identity` describes what is being rendered; an existing canvas with another identity
        is started afresh, one with the same identity keeps its finished bands (resume).
        """
        self.path = Path(path)
        self.width, self.height, self.bands = width, height, bands
        self.dtype = np.dtype(dtype)
        assert self.dtype in VIPS_FORMATS, f"dtype: got {self.dtype}, expected uint8 or uint16"
        self.row_bytes = width * bands * self.dtype.itemsize
        self.nbytes = self.row_bytes * height
        self.journal = self.path.with_name(self.path.name + ".bands.json")
        self.identity = {"width": width, "height": height, "bands": bands,
                         "dtype": self.dtype.name, **(identity or {})}
        # the directories made for it, removed with it when it is not kept for a resume
        self._made_dirs = [d for d in (self.path.parent, *self.path.parent.parents)
                           if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[int] = self._read_journal()
        if not self._done:
            self.path.unlink(missing_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(self._fd, self.nbytes)  # sparse: takes no space until written
        except OSError:  # e.g. a file size limit: leave nothing behind but a resumable canvas
            os.close(self._fd)
            self._fd = -1
            if not self._done:
                self.path.unlink(missing_ok=True)
            raise

    def _read_journal(self) -> set[int]:
        try:
            journal = json.loads(self.journal.read_text())
        except (OSError, ValueError):
            return set()
        if journal.get("identity") != self.identity or not self.path.exists():
            return set()
        return set(journal.get("done", []))

    @property
    def done_bands(self) -> set[int]:
        return set(self._done)

    def write_rows(self, y: int, rows: np.ndarray) -> None:
        """Full-width rows (h, width, bands) at canvas row y, in one positioned write."""
        assert rows.shape[1:] == (self.width, self.bands) and rows.dtype == self.dtype, (
            f"rows: got {rows.shape} {rows.dtype}, expected (h, {self.width}, {self.bands}) "
            f"{self.dtype}"
        )
        data = memoryview(np.ascontiguousarray(rows)).cast("B")
        offset = y * self.row_bytes
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def mark_done(self, band: int) -> None:
        """Record a finished band (after its rows are written)."""
        self._done.add(band)
        with atomic_output(self.journal) as tmp:
            tmp.write_text(json.dumps({"identity": self.identity, "done": sorted(self._done)}))

    def to_vips(self) -> pyvips.Image:
        """The canvas as a lazily read libvips image (sRGB or 16-bit RGB)."""
        os.fsync(self._fd)
        image = pyvips.Image.rawload(str(self.path), self.width, self.height, self.bands,
                                     format=VIPS_FORMATS[self.dtype])
        if self.bands == 1:
            return image.copy(interpretation="b-w" if self.dtype == np.uint8 else "grey16")
        return image.copy(interpretation="srgb" if self.dtype == np.uint8 else "rgb16")

    def close(self, remove: bool = True) -> None:
        """Close the file; remove it (and its journal) unless kept for a resume."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            self.path.unlink(missing_ok=True)
            self.journal.unlink(missing_ok=True)
            for directory in self._made_dirs:  # deepest first; one in use since stays
                try:
                    directory.rmdir()
                except OSError:
                    break

    def __enter__(self) -> ScratchCanvas:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BandWriter:
    """Collects the tiles of each tile row of a plan and writes the row when complete."""

    def __init__(self, canvas: ScratchCanvas, plan: TilePlan):
        self.canvas = canvas
        self._band_of: dict[int, int] = {}
        self._missing: dict[int, int] = {}
        self._rows: dict[int, tuple[int, int]] = {}
        for index, band in enumerate(plan.bands):
            for tile in band:
                self._band_of[tile.index] = index
            self._missing[index] = len(band)
            self._rows[index] = (band[0].y, band[0].h)
        self._buffers: dict[int, np.ndarray] = {}

    def add(self, tile: Tile, pixels: np.ndarray) -> int | None:
        """Place a tile; return its band index if that band is now written."""
        band = self._band_of[tile.index]
        y, h = self._rows[band]
        buffer = self._buffers.get(band)
        if buffer is None:
            buffer = np.empty((h, self.canvas.width, self.canvas.bands), self.canvas.dtype)
            self._buffers[band] = buffer
        buffer[:, tile.x: tile.x + tile.w] = pixels  # (h, w, bands) into (h, width, bands)
        self._missing[band] -= 1
        if self._missing[band]:
            return None
        self.canvas.write_rows(y, self._buffers.pop(band))
        self.canvas.mark_done(band)
        return band
