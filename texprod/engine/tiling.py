"""Tile plans: which noise windows to render and where their pixels land on the canvas.

Coordinates are global: output pixel p belongs to noise cell floor(p / S), S = cell_px.
A canvas is the pixel rectangle [y0, y0 + height) x [x0, x0 + width) of the infinite plane.
Tiles are whole-cell rectangles of one shape (so they batch on a device); each renders its
cells plus `halo` cells on every side and keeps only its interior.
"""

from __future__ import annotations

from dataclasses import dataclass

from texprod.errors import ConfigError

MAX_TILES = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Tile:
    index: int
    cell_y: int  # global noise cell of the tile's first interior row / column
    cell_x: int
    y: int  # where its pixels land on the canvas (top-left, canvas pixels)
    x: int
    h: int  # how many pixels it writes
    w: int
    src_y: int  # where those pixels start inside the tile's interior
    src_x: int


@dataclass(frozen=True)
class TilePlan:
    width: int
    height: int
    x0: int
    y0: int
    cell_px: int
    halo: int
    tile_cells: tuple[int, int]  # interior cells of every tile (rows, cols)
    tiles: tuple[Tile, ...]
    one_pass: bool = False  # tile_px 0: the canvas in one pass of the unmodified network

    @property
    def window_cells(self) -> tuple[int, int]:
        """Noise cells rendered per tile, halo included."""
        return self.tile_cells[0] + 2 * self.halo, self.tile_cells[1] + 2 * self.halo

    @property
    def canvas_cells(self) -> tuple[int, int]:
        s = self.cell_px
        return (_ceil_div(self.y0 + self.height, s) - self.y0 // s,
                _ceil_div(self.x0 + self.width, s) - self.x0 // s)

    @property
    def computed_px(self) -> int:
        """Output pixels the tiles compute (interiors), for the overhead figure."""
        ty, tx = self.tile_cells
        return len(self.tiles) * ty * tx * self.cell_px**2

    @property
    def bands(self) -> list[tuple[Tile, ...]]:
        """Tiles grouped by tile row, top to bottom: each group fills full-width canvas rows."""
        rows: dict[int, list[Tile]] = {}
        for tile in self.tiles:
            rows.setdefault(tile.y, []).append(tile)
        return [tuple(rows[y]) for y in sorted(rows)]

    def origins(self, tiles: tuple[Tile, ...] | list[Tile]) -> list[tuple[int, int]]:
        """Noise-window origins (cell y, cell x) of `tiles`, halo included."""
        return [(t.cell_y - self.halo, t.cell_x - self.halo) for t in tiles]


def _axis_runs(first_cell: int, end_cell: int, tile: int) -> list[tuple[int, int, int]]:
    """(start cell, first written cell, end written cell) along one axis.

    Tiles step by `tile` cells; the last one is moved back to end at `end_cell` so no tile
    renders past the canvas, and it writes only the cells no earlier tile wrote.
    """
    runs = []
    for nominal in range(first_cell, end_cell, tile):
        start = min(nominal, end_cell - tile)
        runs.append((start, nominal, min(nominal + tile, end_cell)))
    return runs


def check_tile_count(count: int, tile_px: int, width: int, height: int) -> None:
    """Refuse a plan of more than MAX_TILES tiles, before it (~200 bytes a tile) is built."""
    if count > MAX_TILES:
        raise ConfigError(f"tile: {tile_px} px gives {count:,} tiles for {width} x {height} "
                          f"px; at most {MAX_TILES:,}: use larger tiles (render.tile_px, "
                          "--tile)")


def tiles_across(width: int, x0: int, cell_px: int, tile_px: int) -> int:
    """Tiles in one row of a plan of `tile_px` tiles (0: one pass)."""
    cells = _ceil_div(x0 + width, cell_px) - x0 // cell_px
    return 1 if tile_px == 0 else _ceil_div(cells, min(cells, max(1, round(tile_px / cell_px))))


def plan_tiles(
    width: int,
    height: int,
    cell_px: int,
    halo: int,
    tile_px: int,
    x0: int = 0,
    y0: int = 0,
    tile_h_px: int | None = None,
) -> TilePlan:
    """Plan tiles of about `tile_px` pixels (rounded to whole cells; 0 = one pass), or
    `tile_px` wide and `tile_h_px` high."""
    for name, value in (("width", width), ("height", height)):
        if value < 1:
            raise ConfigError(f"{name}: got {value}, must be at least 1 pixel")
    if tile_px < 0:
        raise ConfigError(f"tile: got {tile_px}, must be 0 (one pass) or a size in pixels")
    s = cell_px
    cy0, cy1 = y0 // s, _ceil_div(y0 + height, s)
    cx0, cx1 = x0 // s, _ceil_div(x0 + width, s)
    if tile_px == 0:
        ty, tx = cy1 - cy0, cx1 - cx0
    else:
        cells = max(1, round(tile_px / s))
        rows = cells if tile_h_px is None else max(1, round(tile_h_px / s))
        ty, tx = min(rows, cy1 - cy0), min(cells, cx1 - cx0)

    check_tile_count(_ceil_div(cy1 - cy0, ty) * _ceil_div(cx1 - cx0, tx), tile_px, width,
                     height)
    tiles = []
    for start_y, from_y, to_y in _axis_runs(cy0, cy1, ty):
        # written pixel rows: the written cells clipped to the canvas
        py0, py1 = max(from_y * s, y0), min(to_y * s, y0 + height)
        for start_x, from_x, to_x in _axis_runs(cx0, cx1, tx):
            px0, px1 = max(from_x * s, x0), min(to_x * s, x0 + width)
            tiles.append(Tile(
                index=len(tiles), cell_y=start_y, cell_x=start_x,
                y=py0 - y0, x=px0 - x0, h=py1 - py0, w=px1 - px0,
                src_y=py0 - start_y * s, src_x=px0 - start_x * s,
            ))
    return TilePlan(width, height, x0, y0, s, halo, (ty, tx), tuple(tiles),
                    one_pass=tile_px == 0)
