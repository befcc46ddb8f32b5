"""The scratch canvas on local disk that finished tiles are written into.

A raw, interleaved (height, width, bands) file mapped into memory: tiles are written as
they arrive and the page cache, not the Python heap, holds the pixels, so memory does not
grow with the print. libvips reads the same file lazily for stitching and export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyvips

from texprod.tiling import Tile

VIPS_FORMATS = {np.dtype(np.uint8): ("uchar", "srgb"), np.dtype(np.uint16): ("ushort", "rgb16")}


class ScratchCanvas:
    def __init__(self, directory: str | os.PathLike, width: int, height: int, bands: int,
                 dtype: np.dtype | type = np.uint8):
        self.width, self.height, self.bands = width, height, bands
        self.dtype = np.dtype(dtype)
        assert self.dtype in VIPS_FORMATS, f"dtype: got {self.dtype}, expected uint8 or uint16"
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".texprod-canvas-", suffix=".raw", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self._pixels = np.memmap(self.path, dtype=self.dtype, mode="w+",
                                 shape=(height, width, bands))

    def write(self, tile: Tile, pixels: np.ndarray) -> None:
        assert pixels.shape == (tile.h, tile.w, self.bands), (
            f"tile {tile.index}: got pixels {pixels.shape}, expected {(tile.h, tile.w, self.bands)}"
        )
        self._pixels[tile.y: tile.y + tile.h, tile.x: tile.x + tile.w] = pixels

    def to_vips(self) -> pyvips.Image:
        """The canvas as a lazily read libvips image (flushes pending writes first)."""
        self._pixels.flush()
        fmt, interpretation = VIPS_FORMATS[self.dtype]
        image = pyvips.Image.rawload(str(self.path), self.width, self.height, self.bands,
                                     format=fmt)
        if self.bands == 1:
            interpretation = "b-w" if fmt == "uchar" else "grey16"
        return image.copy(interpretation=interpretation)

    def close(self) -> None:
        """Drop the scratch file."""
        del self._pixels
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ScratchCanvas:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
