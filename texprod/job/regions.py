"""Which region of the artwork each print pixel belongs to: a paint level of a placed mask,
or a quilt block.

Spot plates and the region map are read from here. They use the placement and the cell
grid the texture's field uses (a mask pixel is found for a print pixel exactly as
`paint_weights` finds one for a sample of a cell, only at pixel centres), so they register
with the texture: a plate's edge lies on the middle of the texture's transition.

Coordinates are global pixels: canvas pixel (x, y) is global pixel (x0 + x, y0 + y), and
global pixel p lies in cell floor((p + 0.5) / cell_px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PlacedMask:
    """A mask's labels placed on the print: level index per mask pixel, where it lands."""

    labels: np.ndarray  # (Hm, Wm) uint8
    box_cells: tuple[float, float, float, float]  # (x, y, w, h) in global cells
    cell_px: int
    period: tuple[int, int] | None  # (rows, cols) cells: in repeat mode the mask wraps
    outside: int  # the label beyond the mask (background)

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Labels at global pixel rows `ys` (n,) x columns `xs` (m,): (n, m) uint8."""
        bx, by, bw, bh = self.box_cells
        rows, cols = self.period or (None, None)
        iy, in_y = self._axis(ys, by, bh, self.labels.shape[0], rows)
        ix, in_x = self._axis(xs, bx, bw, self.labels.shape[1], cols)
        found = self.labels[iy[:, None], ix[None, :]]
        return np.where(in_y[:, None] & in_x[None, :], found, self.outside).astype(np.uint8)

    def _axis(self, pixels: np.ndarray, low: float, size: float, n: int, wrap: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
        offset = (np.asarray(pixels, np.float64) + 0.5) / self.cell_px - low  # in cells
        if wrap is not None:
            offset = np.mod(offset, wrap)
        index = np.floor(offset / size * n).astype(np.int64)
        inside = (offset >= 0) & (index < n)
        return np.clip(index, 0, n - 1), inside


@dataclass(frozen=True)
class QuiltBlocks:
    """A quilt's blocks as labels: block row * `columns` + block column, counted from
    `first` (the top-left block of the canvas, or of the period in repeat mode)."""

    blocks: tuple[float, float]  # block rows, cols in cells
    period: tuple[int, int] | None  # in blocks: the labels wrap with it
    cell_px: int
    first: tuple[int, int]  # (row, col) of label 0
    columns: int

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Labels at global pixel rows `ys` (n,) x columns `xs` (m,): (n, m) int64."""
        rows, cols = self.period or (None, None)
        by = _block(ys, self.blocks[0], self.cell_px, rows) - self.first[0]
        bx = _block(xs, self.blocks[1], self.cell_px, cols) - self.first[1]
        return by[:, None] * self.columns + bx[None, :]


@dataclass(frozen=True)
class Regions:
    """The region map's source: per canvas pixel, a label, and what each label means."""

    origin: tuple[int, int]  # (x0, y0): the global pixel of canvas pixel (0, 0)
    width: int
    legend: dict[str, str]  # label -> what it is ("0": "background: kraft-fibre")
    count: int  # labels in use: 0 .. count - 1
    labels: PlacedMask | QuiltBlocks | None = None  # None: one region, 0 everywhere

    @property
    def mask(self) -> PlacedMask | None:
        """The placed paint mask, when the regions are its levels."""
        return self.labels if isinstance(self.labels, PlacedMask) else None

    @property
    def bits(self) -> int:
        return 8 if self.count <= 256 else 16

    def rows(self, y: int, h: int) -> np.ndarray:
        """Labels of canvas rows y .. y + h: (h, width) uint8 or uint16."""
        x0, y0 = self.origin
        dtype = np.uint8 if self.bits == 8 else np.uint16
        if self.labels is None:
            return np.zeros((h, self.width), dtype)
        ys, xs = np.arange(y0 + y, y0 + y + h), np.arange(x0, x0 + self.width)
        return self.labels.at(ys, xs).astype(dtype)

    def provenance(self, file_name: str) -> dict[str, Any]:
        return {"file": file_name, "bits": self.bits, "legend": self.legend}


def _block(pixels: np.ndarray, block: float, cell_px: int, period: int | None) -> np.ndarray:
    """The quilt block of global pixels along one axis, as QuiltField assigns cells."""
    cells = np.floor((np.asarray(pixels, np.float64) + 0.5) / cell_px)
    index = np.floor((cells + 0.5) / block).astype(np.int64)
    return np.mod(index, period) if period else index


def quilt_regions(origin: tuple[int, int], width: int, height: int,
                  blocks: tuple[float, float], period: tuple[int, int] | None, cell_px: int,
                  seed: int) -> Regions:
    """The quilt's blocks as regions: label = block row * columns + block column, counted
    from the canvas' top-left block (in repeat mode: from the period's first block)."""
    x0, y0 = origin
    if period:
        first, count = (0, 0), period[0] * period[1]
        columns = period[1]
    else:
        corners = [_block(np.array([y0, y0 + height - 1]), blocks[0], cell_px, None),
                   _block(np.array([x0, x0 + width - 1]), blocks[1], cell_px, None)]
        first = (int(corners[0][0]), int(corners[1][0]))
        rows, columns = (int(c[1] - c[0]) + 1 for c in corners)
        count = rows * columns
    legend = {"value": f"block row * {columns} + block column, from the "
                       + ("period's" if period else "canvas'") + " top-left block",
              "latent": f"each block's latent is hashed from the quilt seed {seed} and its "
                        "block indices"}
    return Regions(origin, width, legend, count,
                   QuiltBlocks(blocks, period, cell_px, first, columns))
