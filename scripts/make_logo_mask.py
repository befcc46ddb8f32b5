"""Draw texprod's logo mask: a white logo on black, for filling with texture.

    python scripts/make_logo_mask.py   # writes specs/masks/texprod-logo.png

A thick ring around a capital T, with a leaf at the foot of the stem, from circles and
rectangles only (no fonts, so nothing to license: the result is CC0, made by the project).
Drawn at 4x and box-averaged down, so the edges are anti-aliased; the PNG is written
without metadata, so a rebuild is byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

OUT = Path(__file__).resolve().parent.parent / "specs" / "masks" / "texprod-logo.png"
WIDTH, HEIGHT = 1200, 900
SS = 4  # supersampling factor per axis

# Geometry in output pixels (y down). Bold strokes: the logo must still read when filled
# with a busy texture at poster size, so nothing is thinner than ~70 px.
CENTRE = (600.0, 450.0)
RING = (405.0, 320.0)  # outer, inner radius
BAR = (400.0, 240.0, 800.0, 340.0)  # T crossbar: x0, y0, x1, y1 (30 px clear of the ring)
STEM = (550.0, 340.0, 650.0, 660.0)  # T stem
# Leaf sprouting up-right from the stem: the intersection of two discs of radius r whose
# centres sit d either side of its long axis, so length 2 * sqrt(r^2 - d^2) = 190 and width
# 2 * (r - d) = 70. Its base starts inside the stem, so the two merge with no hairline gap.
LEAF_RADIUS, LEAF_OFFSET = 146.4, 111.4
LEAF_BASE, LEAF_ANGLE, LEAF_LENGTH = (635.0, 575.0), np.deg2rad(35.0), 190.0


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centres in output pixel units, as broadcastable column / row vectors."""
    xs = (np.arange(WIDTH * SS, dtype=np.float64) + 0.5) / SS
    ys = (np.arange(HEIGHT * SS, dtype=np.float64) + 0.5) / SS
    return xs[None, :], ys[:, None]


def _disc(x, y, cx: float, cy: float, r: float) -> np.ndarray:
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _rect(x, y, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def draw() -> np.ndarray:
    """The logo as (HEIGHT, WIDTH) uint8, 255 = logo, 0 = background."""
    x, y = _grid()
    cx, cy = CENTRE
    ring = _disc(x, y, cx, cy, RING[0]) & ~_disc(x, y, cx, cy, RING[1])
    t = _rect(x, y, BAR) | _rect(x, y, STEM)
    # leaf: two discs offset either side of the long axis (a vesica); y is down, so up-right
    # is (cos, -sin)
    ux, uy = np.cos(LEAF_ANGLE), -np.sin(LEAF_ANGLE)
    nx, ny = -uy, ux  # normal to the long axis
    lx, ly = LEAF_BASE[0] + LEAF_LENGTH / 2 * ux, LEAF_BASE[1] + LEAF_LENGTH / 2 * uy
    leaf = (_disc(x, y, lx + LEAF_OFFSET * nx, ly + LEAF_OFFSET * ny, LEAF_RADIUS)
            & _disc(x, y, lx - LEAF_OFFSET * nx, ly - LEAF_OFFSET * ny, LEAF_RADIUS))
    big = ring | t | leaf
    # box-average SS x SS sub-pixels: coverage 0..SS*SS, rounded to 0..255 in integers
    cover = big.reshape(HEIGHT, SS, WIDTH, SS).sum(axis=(1, 3), dtype=np.int32)
    n = SS * SS
    return ((cover * 255 + n // 2) // n).astype(np.uint8)


def main() -> None:
    mask = draw()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    image = pyvips.Image.new_from_array(mask, interpretation="b-w")
    # strip: no timestamps or other metadata, so a rebuild is byte-identical
    image.pngsave(str(OUT), strip=True, compression=9)
    print(f"wrote {OUT} ({WIDTH} x {HEIGHT}, {(mask > 127).mean():.0%} logo)")


if __name__ == "__main__":
    main()
