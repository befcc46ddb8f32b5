"""Fingerprints of the shipped specs' print files at a small size, to prove that a change
(a refactor) leaves the outputs byte for byte as they were.

Convolution sums differ in their last bits between CPU instruction sets, so the exact file
hash is recorded per PyTorch CPU capability (AVX2, AVX512, ...); a coarse pixel fingerprint
(16 x 16 block means per ink) and the file's geometry hold on any machine.

    python -m tests.golden.shipped        # record this machine's fingerprints (make golden)
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from texprod.job.pipeline import run_job
from texprod.job.spec import SPECS_DIR, load_spec

RECORD = Path(__file__).with_name("shipped_specs.json")
BLOCKS = 16  # the coarse fingerprint: BLOCKS x BLOCKS means per channel
# small sizes of each shipped spec: a few seconds each on 2 cores
SMALL = {
    "box_packaging": ["print.width_mm=60", "print.height_mm=40"],
    "city_map_gigapixel": ["print.width_mm=60", "print.height_mm=40"],
    "logo_paint": ["print.width_mm=80", "print.height_mm=60"],
    "wallpaper_repeat": [],
}


def cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def fingerprint(spec_name: str, workdir: Path) -> dict:
    """Run a shipped spec at its small size; the print file's hash, shape and block means."""
    out = workdir / spec_name
    spec = load_spec(SPECS_DIR / f"{spec_name}.yaml",
                     [*SMALL[spec_name], f"output.dir={out}"])
    result = run_job(spec, SPECS_DIR)
    path = result.plan.outputs.tiff
    pixels = tifffile.imread(path)  # (H, W, inks)
    h, w = pixels.shape[:2]
    ys = np.linspace(0, h, BLOCKS + 1).astype(int)
    xs = np.linspace(0, w, BLOCKS + 1).astype(int)
    scale = 255 / np.iinfo(pixels.dtype).max
    means = [[[round(float(pixels[y0:y1, x0:x1, c].mean() * scale), 2)
               for c in range(pixels.shape[2])]
              for x0, x1 in zip(xs, xs[1:], strict=False)]
             for y0, y1 in zip(ys, ys[1:], strict=False)]
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "shape": list(pixels.shape), "dtype": str(pixels.dtype), "block_means": means}


def record() -> None:
    data = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        prints = {name: fingerprint(name, Path(tmp)) for name in SMALL}
    data.setdefault("sha256", {})[cpu_capability()] = {
        name: p["sha256"] for name, p in prints.items()}
    data["prints"] = {name: {k: v for k, v in p.items() if k != "sha256"}
                      for name, p in prints.items()}
    RECORD.write_text(json.dumps(data, indent=1) + "\n")
    print(f"recorded {len(prints)} prints for CPU capability {cpu_capability()} in {RECORD}",
          file=sys.stderr)


if __name__ == "__main__":
    record()
