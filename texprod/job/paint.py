"""Painting with textures: a mask image placed on the print becomes per-cell latent weights.

Each mask pixel takes the nearest of the levels the spec names (grey values, or colours
for a palette mask); the mask is placed on the print in noise-cell coordinates,
rasterised at SUB samples per cell, every level's coverage blurred by a tent kernel as
wide as the transition, and read at the cell centres. The arithmetic stays in integers
until one final division, so a cell away from every edge gets weight exactly 1 for its
level and exactly 0 for the others (its latent is then the level's latent, bit for bit).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pyvips

from texprod.errors import SpecError

SUB = 5  # mask samples per noise cell and axis: odd, so one sits at the cell centre
BACKGROUND, FOREGROUND = "background", "foreground"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def level_value(key: str | int) -> tuple[int, ...]:
    """The mask value a latents key stands for: background = black, foreground = white,
    0-255 = a grey level, #rrggbb = a colour (palette or RGB masks)."""
    if key == BACKGROUND:
        return (0,)
    if key == FOREGROUND:
        return (255,)
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        if 0 <= int(key) <= 255:
            return (int(key),)
    elif isinstance(key, str) and _HEX.match(key):
        return tuple(int(key[i: i + 2], 16) for i in (1, 3, 5))
    raise ValueError(f"got {key!r}, a mask level must be background, foreground, a grey "
                     "level 0-255 or a colour #rrggbb")


def is_colour_key(key: str | int) -> bool:
    return len(level_value(key)) == 3


MAX_MASK_PIXELS = 256 * 10**6  # decoded to memory with per-pixel work: 256 Mpx is ~2 GB


def load_mask(path: str, colour: bool, field: str = "texture.paint.mask") -> np.ndarray:
    """Decode a mask with libvips (any format it reads): (H, W, 3 if colour else 1) uint8.

    Transparent pixels count as black (background); 16-bit masks are scaled to 8 bits.
    """
    try:
        image = pyvips.Image.new_from_file(path)  # reads the header only
        if image.width * image.height > MAX_MASK_PIXELS:  # a tiny file can claim gigapixels
            raise SpecError(f"{field}: got {path!r}, {image.width} x {image.height} px; a mask "
                            f"may have at most {MAX_MASK_PIXELS // 10**6} Mpx (its detail "
                            "below one noise cell is not used: shrink it)")
        if image.hasalpha():
            image = image.flatten(background=[0] * (image.bands - 1))
        image = image.colourspace("srgb" if colour else "b-w")
        if image.format in ("ushort", "short"):
            image = image / 257
        pixels = image.cast("uchar").numpy()
    except pyvips.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise SpecError(f"{field}: got {path!r}, which libvips cannot read as an image "
                        f"({reason})") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels[:, :, :3] if colour else pixels[:, :, :1]


def label_mask(pixels: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Nearest level per pixel: pixels (H, W, C) uint8, levels (K, C) -> (H, W) uint8."""
    best = np.zeros(pixels.shape[:2], dtype=np.uint8)
    best_d = np.full(pixels.shape[:2], np.iinfo(np.int32).max, dtype=np.int32)
    values = pixels.astype(np.int32)
    for k, level in enumerate(levels.astype(np.int32)):
        d = ((values - level) ** 2).sum(axis=2)
        closer = d < best_d  # ties keep the earlier level
        best[closer], best_d[closer] = k, d[closer]
    return best


@dataclass(frozen=True)
class Placement:
    """Where the mask lands, in mm from the trim's top-left corner (x right, y down)."""

    x: float
    y: float
    width: float
    height: float


def fit_mask(mask_w: int, mask_h: int, area: tuple[float, float, float, float],
               fit: str | None, box: tuple[float, float, float, float] | None) -> Placement:
    """contain: whole mask inside the area, centred; cover: the area covered, centred and
    cropped; fill: stretched to the area; box: explicit (x, y, w, h) mm."""
    if box is not None:
        return Placement(*box)
    ax, ay, aw, ah = area
    if fit == "fill":
        return Placement(ax, ay, aw, ah)
    pick = min if fit == "contain" else max
    scale = pick(aw / mask_w, ah / mask_h)
    w, h = mask_w * scale, mask_h * scale
    return Placement(ax + (aw - w) / 2, ay + (ah - h) / 2, w, h)


def tent_width(transition_cells: float) -> int:
    """Odd box width (in samples) whose tent (box * box) ramps over ~transition_cells."""
    r = max(0, round((transition_cells * SUB - 1) / 4))
    return 2 * r + 1


def effective_transition(transition_cells: float) -> float:
    """The transition the tent really gives, in cells (it spans 2a - 1 samples)."""
    return (2 * tent_width(transition_cells) - 1) / SUB if transition_cells > 0 else 0.0


def _box(a: np.ndarray, width: int, axis: int, wrap: bool) -> np.ndarray:
    """Centred box sum of odd `width` along `axis`, integers in and out."""
    if width == 1:
        return a
    r = width // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    padded = np.pad(a, pad, mode="wrap" if wrap else "edge")
    cs = np.cumsum(padded, axis=axis, dtype=np.int64)
    zero = np.zeros_like(np.take(cs, [0], axis=axis))
    cs = np.concatenate([zero, cs], axis=axis)
    n = a.shape[axis]
    return np.take(cs, range(width, width + n), axis=axis) - np.take(cs, range(n), axis=axis)


def paint_weights(labels: np.ndarray, n_levels: int, background: int,
                  box_cells: tuple[float, float, float, float], transition_cells: float,
                  period: tuple[int, int] | None = None,
                  bounds: tuple[int, int, int, int] | None = None
                  ) -> tuple[np.ndarray, tuple[int, int]]:
    """Per-cell weights of every level: (K, H, W) float32 and the table's cell origin.

    labels (Hm, Wm): level index per mask pixel. box_cells (x, y, w, h): the mask's place
    in cell coordinates. With `period` (rows, cols) the table is one period at (0, 0),
    the mask wraps across it and so does the blur. Otherwise the table covers the box
    plus the blur's reach (clipped to `bounds` (y0, x0, y1, x1) when given, the cells a
    render can ask for); every cell beyond it is pure background.
    """
    bx, by, bw, bh = box_cells
    a = tent_width(transition_cells)
    reach = math.ceil((a - 1) / SUB) + 1  # cells the blur can carry a level beyond the box
    if period is not None:
        if bw > period[1] + 1e-9 or bh > period[0] + 1e-9:
            raise SpecError(f"texture.paint.placement: the mask ({bw:.1f} x {bh:.1f} cells) is "
                            f"larger than the repeat period ({period[1]} x {period[0]} cells)")
        y0, x0, h, w = 0, 0, period[0], period[1]
    else:
        y0, x0 = math.floor(by) - reach, math.floor(bx) - reach
        y1, x1 = math.ceil(by + bh) + reach, math.ceil(bx + bw) + reach
        if bounds is not None:
            y0, x0 = max(y0, bounds[0]), max(x0, bounds[1])
            y1, x1 = min(y1, bounds[2]), min(x1, bounds[3])
        h, w = max(1, y1 - y0), max(1, x1 - x0)

    # sample centres in cell coordinates -> mask pixels (nearest), background outside
    def mask_index(start: int, n: int, lo: float, size: float, mask_n: int, wrap: int | None):
        centres = start + (np.arange(n * SUB) + 0.5) / SUB  # (n * SUB,)
        offset = centres - lo
        if wrap is not None:
            offset = np.mod(offset, wrap)
        index = np.floor(offset / size * mask_n).astype(np.int64)
        inside = (offset >= 0) & (index < mask_n)
        return np.clip(index, 0, mask_n - 1), inside

    wrap_y, wrap_x = (period[0], period[1]) if period is not None else (None, None)
    iy, in_y = mask_index(y0, h, by, bh, labels.shape[0], wrap_y)
    ix, in_x = mask_index(x0, w, bx, bw, labels.shape[1], wrap_x)
    fine = labels[iy[:, None], ix[None, :]]  # (h * SUB, w * SUB)
    fine = np.where(in_y[:, None] & in_x[None, :], fine, background).astype(np.uint8)

    centres = np.arange(SUB // 2, SUB * max(h, w), SUB)  # the sample at each cell centre
    wrap = period is not None
    counts = np.empty((n_levels, h, w), dtype=np.int64)
    rows = 1024  # the x pass in row chunks: peak memory stays small on gigapixel prints
    for k in range(n_levels):
        across = np.concatenate([
            _box(_box((fine[r: r + rows] == k).astype(np.int64), a, 1, wrap), a, 1, wrap)
            [:, centres[:w]] for r in range(0, fine.shape[0], rows)])  # (h * SUB, w)
        counts[k] = _box(_box(across, a, 0, wrap), a, 0, wrap)[centres[:h]]  # (h, w)
    weights = (counts / float(a**4)).astype(np.float32)  # exact 1.0 where count == a^4
    return weights, (y0, x0)


__all__ = ["BACKGROUND", "FOREGROUND", "Placement", "effective_transition", "label_mask",
           "level_value", "load_mask", "paint_weights", "fit_mask", "tent_width"]
