"""Proofs: an sRGB JPEG of the whole print with the trim box marked, and a thumbnail;
and a repeat preview: one period of a seamless repeat tiled 2 x 2, to judge its seams.

Both are made from the render (streamed and shrunk by libvips, so memory stays flat)
and, for CMYK, soft-proofed through the output profile so they show what will print.
The bleed is veiled in white and the trim line drawn, so the cut is obvious at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

from texprod.files import atomic_output
from texprod.press.colour import OutputColour, printed_to_srgb, soft_proof, srgb_profile

PROOF_PX = 2048
THUMB_PX = 256
TRIM_LINE = [255, 0, 255]  # magenta: rare in textures, obvious on any of them


def _save_jpeg(image: pyvips.Image, path: Path) -> Path:
    with atomic_output(path, suffix=".partial.jpg") as tmp:
        image.jpegsave(str(tmp), Q=90, optimize_coding=True, strip=False)
    return path


def _shrink_by_bands(image: pyvips.Image, factor: int, band_rows: int = 1024) -> pyvips.Image:
    """Integer box shrink, read band by band.

    A whole-image operation on a large image (a print file read back) keeps every band it
    touched in memory (peak RSS grows with the print); cropped bands are read through small
    windows. Bands
    are whole multiples of `factor`, so the result equals a one-piece shrink.
    """
    rows = band_rows // factor * factor or factor
    strips = [image.crop(0, y, image.width, min(rows, image.height - y))
              .shrink(factor, factor).numpy() for y in range(0, image.height, rows)]
    small = np.concatenate(strips, axis=0)  # (H / factor, W / factor, bands)
    return pyvips.Image.new_from_array(small, interpretation=image.interpretation)


def _box_shrink(image: pyvips.Image, max_px: int, tiles: int = 1) -> pyvips.Image:
    """Integer box shrink, as far as leaves `tiles` copies side by side >= max_px long."""
    factor = max(1, tiles * max(image.width, image.height) // max_px)
    return _shrink_by_bands(image, factor) if factor > 1 else image


def _fit(image: pyvips.Image, max_px: int) -> pyvips.Image:
    """Lanczos resample down to at most max_px on the longest side (never enlarges)."""
    scale = min(1.0, max_px / max(image.width, image.height))
    return image.resize(scale, kernel="lanczos3") if scale < 1 else image


def _proof_pixels(image: pyvips.Image, colour: OutputColour, printed: bool = False
                  ) -> pyvips.Image:
    """A shrunk render (or, `printed`, the print file's pixels) as it will print, in
    memory: (h, w, 3) uchar sRGB, ready to draw on."""
    if printed:
        return printed_to_srgb(image, colour).copy_memory()
    image = image.copy(interpretation="srgb" if image.format == "uchar" else "rgb16")
    return soft_proof(image, colour).copy_memory()


def _tag_srgb(image: pyvips.Image) -> pyvips.Image:
    """Attach the sRGB profile, so viewers do not guess the proof's colours."""
    image = image.copy(interpretation="srgb")
    image.set_type(pyvips.GValue.blob_type, "icc-profile-data", srgb_profile())
    return image


def make_proof(render: pyvips.Image, trim_box: tuple[int, int, int, int], colour: OutputColour,
               proof_path: Path, thumb_path: Path) -> tuple[Path, Path]:
    """Write the proof and thumbnail JPEGs (each appears only when complete)."""
    # box-shrink to >= PROOF_PX, then resample; at most 2048 px on a side
    small = _proof_pixels(_fit(_box_shrink(render, PROOF_PX), PROOF_PX), colour)
    scale = small.width / render.width
    x, y, w, h = (round(v * scale) for v in trim_box)
    if (x, y) != (0, 0):  # veil the bleed: blend it halfway to white
        veil = (small * 0.5 + 127.5).cast("uchar")
        small = veil.insert(small.crop(x, y, max(1, w), max(1, h)), x, y).copy_memory()
    small = _tag_srgb(small.draw_rect(TRIM_LINE, x, y, max(1, w), max(1, h), fill=False))
    _save_jpeg(small, proof_path)
    _save_jpeg(small.thumbnail_image(THUMB_PX, height=THUMB_PX), thumb_path)
    return proof_path, thumb_path


def make_repeat_preview(render: pyvips.Image, period_box: tuple[int, int, int, int],
                        colour: OutputColour, path: Path, max_px: int = PROOF_PX,
                        printed: bool = False) -> Path:
    """Write a JPEG of one period of the repeat tiled 2 x 2 (appears only when complete).
    `render` is the sRGB render, or (`printed`) the print file's pixels.

    The seams of the repeat run through the middle cross and along the edges; they are
    marked only by short ticks at the edge midpoints, so the seam pixels stay visible.
    """
    x, y, w, h = period_box
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > render.width or y + h > render.height:
        raise ValueError(f"period box {period_box} is not inside the "
                         f"{render.width} x {render.height} render")
    # shrink one period, not four: a period can be ~16k px square and the canvas is mapped
    # (one not a multiple of the factor gains a part pixel at its edge: invisible at this size)
    tile = _box_shrink(render.crop(x, y, w, h), max_px, tiles=2)
    tiled = tile.replicate(2, 2)
    scale = max_px / max(tiled.width, tiled.height)
    if scale < 1:  # resample after tiling, so the filter sees across the seams as print would
        # to whole-pixel tiles (a hair off the aspect): the seams land exactly on the middle
        tw, th = (max(1, min(max_px // 2, round(v * scale))) for v in (tile.width, tile.height))
        tiled = tiled.resize(tw / tile.width, vscale=th / tile.height, kernel="lanczos3")
    small = _proof_pixels(tiled, colour, printed)
    width, height = small.width, small.height
    # the period boundary is at half the width / height: ticks 2 px wide straddle it (1 px
    # centred on it when odd), a few px long, at the outer edges, clear of the middle cross
    tick = max(4, min(width, height) // 64)
    down, across = min(tick, max(1, height // 4)), min(tick, max(1, width // 4))
    tx, tw = (width - 1) // 2, 2 - width % 2
    ty, th = (height - 1) // 2, 2 - height % 2
    for left, top, rw, rh in ((tx, 0, tw, down), (tx, height - down, tw, down),
                              (0, ty, across, th), (width - across, ty, across, th)):
        small = small.draw_rect(TRIM_LINE, left, top, rw, rh, fill=True)
    return _save_jpeg(_tag_srgb(small), path)
