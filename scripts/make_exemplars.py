"""Make texprod's licence-clean training exemplars from scikit-image's CC0 textures.

    python scripts/make_exemplars.py   # writes texprod/data/exemplars/*.png

scikit-image ships grass.png and gravel.png (512 x 512, grey), both under CC0 according to
its documentation. They are tinted here with gradient maps into the colours of the
bundled models' uses; the results are CC0 too. The wheel is only downloaded, not installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyvips

OUT = Path(__file__).resolve().parent.parent / "texprod" / "data" / "exemplars"
SKIMAGE = "scikit-image==0.26.0"
# (source in skimage/data, output name, gradient map: grey level -> sRGB)
EXEMPLARS = [
    ("grass.png", "kraft-fibre.png",  # grass blades read as kraft-board fibres in print
     [(0.0, (72, 48, 28)), (0.5, (150, 112, 72)), (1.0, (222, 190, 142))]),
    ("gravel.png", "aerial-terrain.png",  # gravel seen from above, in earth and field tones
     [(0.0, (38, 44, 32)), (0.35, (86, 98, 64)), (0.7, (150, 140, 104)), (1.0, (214, 206, 182))]),
]


def tint(grey: np.ndarray, stops) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 through a piecewise-linear gradient map."""
    levels = grey.astype(np.float32) / 255.0
    xs = np.array([s[0] for s in stops])
    colours = np.array([s[1] for s in stops], np.float32)
    rgb = np.stack([np.interp(levels, xs, colours[:, c]) for c in range(3)], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        SKIMAGE], check=True)
        (wheel,) = Path(tmp).glob("scikit_image-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for source, name, stops in EXEMPLARS:
                data = archive.read(f"skimage/data/{source}")
                grey = pyvips.Image.new_from_buffer(data, "").numpy()
                image = pyvips.Image.new_from_array(tint(grey, stops), interpretation="srgb")
                image.pngsave(str(OUT / name), compression=9, strip=True)
                print(f"{OUT / name}: from {SKIMAGE} skimage/data/{source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
