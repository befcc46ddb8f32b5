"""Proofs: an sRGB JPEG of the whole print with the trim box marked, and a thumbnail.

The proof is made from the render (streamed and shrunk by libvips, so memory stays flat)
and, for CMYK, soft-proofed through the output profile so it shows what will print.
The bleed is veiled in white and the trim line drawn, so the cut is obvious at a glance.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyvips

from texprod.colour import OutputColour, soft_proof, srgb_profile

PROOF_PX = 2048
THUMB_PX = 256
TRIM_LINE = [255, 0, 255]  # magenta: rare in textures, obvious on any of them


def _save_jpeg(image: pyvips.Image, path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial.jpg", dir=path.parent)
    os.close(fd)
    try:
        image.jpegsave(name, Q=90, optimize_coding=True, strip=False)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return path


def make_proof(render: pyvips.Image, trim_box: tuple[int, int, int, int], colour: OutputColour,
               proof_path: Path, thumb_path: Path) -> tuple[Path, Path]:
    """Write the proof and thumbnail JPEGs (each appears only when complete)."""
    scale = min(1.0, PROOF_PX / max(render.width, render.height))
    small = render.resize(scale, kernel="lanczos3") if scale < 1 else render
    small = soft_proof(small.copy(interpretation="srgb" if small.format == "uchar" else "rgb16"),
                       colour)
    small = small.copy_memory()  # (h, w, 3) uchar, at most 2048 px on a side
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
