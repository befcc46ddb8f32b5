"""Proofs: an sRGB JPEG of the whole print with the trim box marked, and a thumbnail.

The proof is made from the render (streamed and shrunk by libvips, so memory stays flat)
and, for CMYK, soft-proofed through the output profile so it shows what will print.
The bleed is veiled in white and the trim line drawn, so the cut is obvious at a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

from texprod.colour import OutputColour, soft_proof, srgb_profile
from texprod.files import atomic_output

PROOF_PX = 2048
THUMB_PX = 256
TRIM_LINE = [255, 0, 255]  # magenta: rare in textures, obvious on any of them


def _save_jpeg(image: pyvips.Image, path: Path) -> Path:
    with atomic_output(path, suffix=".partial.jpg") as tmp:
        image.jpegsave(str(tmp), Q=90, optimize_coding=True, strip=False)
    return path


def _shrink_by_bands(image: pyvips.Image, factor: int, band_rows: int = 1024) -> pyvips.Image:
    """Integer box shrink, read band by band.

    A whole-image operation on a mapped scratch canvas keeps every page it touched resident
    (peak RSS grows with the print); cropped bands are read through small windows. Bands
    are whole multiples of `factor`, so the result equals a one-piece shrink.
    """
    rows = band_rows // factor * factor or factor
    strips = [image.crop(0, y, image.width, min(rows, image.height - y))
              .shrink(factor, factor).numpy() for y in range(0, image.height, rows)]
    small = np.concatenate(strips, axis=0)  # (H / factor, W / factor, bands)
    return pyvips.Image.new_from_array(small, interpretation=image.interpretation)


def make_proof(render: pyvips.Image, trim_box: tuple[int, int, int, int], colour: OutputColour,
               proof_path: Path, thumb_path: Path) -> tuple[Path, Path]:
    """Write the proof and thumbnail JPEGs (each appears only when complete)."""
    longest = max(render.width, render.height)
    factor = max(1, longest // PROOF_PX)  # box-shrink to >= PROOF_PX, then resample
    small = _shrink_by_bands(render, factor) if factor > 1 else render
    scale = min(1.0, PROOF_PX / max(small.width, small.height))
    if scale < 1:
        small = small.resize(scale, kernel="lanczos3")
    small = soft_proof(small.copy(interpretation="srgb" if small.format == "uchar" else "rgb16"),
                       colour)
    small = small.copy_memory()  # (h, w, 3) uchar, at most 2048 px on a side
    scale = small.width / render.width
    x, y, w, h = (round(v * scale) for v in trim_box)
    if (x, y) != (0, 0):  # veil the bleed: blend it halfway to white
        veil = (small * 0.5 + 127.5).cast("uchar")
        small = veil.insert(small.crop(x, y, max(1, w), max(1, h)), x, y).copy_memory()
    small = small.draw_rect(TRIM_LINE, x, y, max(1, w), max(1, h), fill=False)
    small = small.copy(interpretation="srgb")
    small.set_type(pyvips.GValue.blob_type, "icc-profile-data", srgb_profile())
    _save_jpeg(small, proof_path)
    _save_jpeg(small.thumbnail_image(THUMB_PX, height=THUMB_PX), thumb_path)
    return proof_path, thumb_path
