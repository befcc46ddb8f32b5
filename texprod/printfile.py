"""Writing image files. For now: a plain RGB TIFF (print geometry and colour come later)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyvips

from texprod.errors import ConfigError

TIFF_SUFFIXES = (".tif", ".tiff")


def check_tiff_path(path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.suffix.lower() not in TIFF_SUFFIXES:
        raise ConfigError(f"out: got {str(out)!r}, must end in .tif or .tiff")
    if out.is_dir():
        raise ConfigError(f"out: got {str(out)!r}, which is a directory; name a .tif file")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_plain_tiff(image: pyvips.Image, path: str | os.PathLike) -> Path:
    """Save `image` as a tiled, LZW-compressed TIFF; the file appears only when complete."""
    out = check_tiff_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.tif", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        image.tiffsave(str(tmp), compression="lzw", predictor="horizontal", tile=True,
                       tile_width=256, tile_height=256, bigtiff=image.width * image.height
                       * image.bands * (2 if image.format == "ushort" else 1) > 3.5 * 2**30)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get normal modes
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
