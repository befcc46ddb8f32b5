"""sRGB -> the print's colour space through a 3D lookup table, in PyTorch on any device.

libvips (LittleCMS) stays the reference: the table's nodes are sampled with the very
transform `to_output` runs, at 16 bits, and `apply` interpolates between them
tetrahedrally. On a GPU this converts a stripe where its pixels already are, instead of
downloading the sRGB render and converting it on the CPU. `ink_coverage` measures the
total ink (TAC) there too.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import pyvips
import torch

from texprod.engine.devices import DeviceCopies
from texprod.press.colour import OutputColour, to_output

# pixels per step of apply / ink_coverage, which bounds the temporaries (~150 B a pixel).
# A GPU wants big steps (few kernel launches; its caching allocator reuses the memory); on
# the CPU, steps of ~40 MB are reused by the allocator where 600 MB ones went back to the
# OS every step: 2.2x faster on 2 cores (page faults were 85 % of the time)
CHUNK_PX = {"cuda": 2**22, "cpu": 2**18}
DTYPES = {8: torch.uint8, 16: torch.uint16}
TOPS = {torch.uint8: 255, torch.uint16: 65535}

_cache: dict[tuple, ColourLUT] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class ColourLUT:
    """A sampled output transform: nodes[r, g, b] = output / 65535 at grid point (r, g, b).

    `key` is (sha256 of the profile, intent, BPC, bits, grid): what the table depends on.
    """

    nodes: torch.Tensor  # (G, G, G, bands) float32 in [0, 1], on the CPU
    bits: int  # output depth, 8 or 16
    key: tuple

    @property
    def grid(self) -> int:
        return self.nodes.shape[0]

    @property
    def bands(self) -> int:
        return self.nodes.shape[-1]

    @functools.cached_property
    def _flat(self) -> DeviceCopies:  # (G^3, bands), and its copies on devices
        return DeviceCopies(self.nodes.reshape(-1, self.bands))

    def table(self, device: torch.device) -> torch.Tensor:
        """The nodes flattened to (G^3, bands) on `device`, copied there once and kept."""
        return self._flat.on(device)

    def apply(self, rgb: torch.Tensor) -> torch.Tensor:
        """(..., 3) uint8/uint16 sRGB -> (..., bands) uint8/uint16 (self.bits), same device."""
        if rgb.shape[-1] != 3 or rgb.dtype not in TOPS:
            raise ValueError(f"need (..., 3) uint8 or uint16 sRGB, got {tuple(rgb.shape)} "
                             f"{rgb.dtype}")
        flat = rgb.reshape(-1, 3)  # (N, 3)
        out = torch.empty((flat.shape[0], self.bands), dtype=DTYPES[self.bits],
                          device=rgb.device)
        table = self.table(rgb.device)
        chunk = _chunk_px(rgb.device)
        for start in range(0, flat.shape[0], chunk):
            stop = start + chunk
            out[start:stop] = self._convert(flat[start:stop], TOPS[rgb.dtype], table)
        return out.reshape(*rgb.shape[:-1], self.bands)

    def _convert(self, rgb: torch.Tensor, top_in: int, table: torch.Tensor) -> torch.Tensor:
        """(n, 3) integers -> (n, bands) integers by tetrahedral interpolation.

        The cube around a pixel splits into 6 tetrahedra along its main diagonal; the one
        holding it is picked by the order of its fractional parts f0 >= f1 >= f2, and the
        walk base -> +axis(f0) -> +axis(f1) -> +axis(f2) visits its 4 corners.
        """
        g = self.grid
        pos = rgb.to(torch.float32) * ((g - 1) / top_in)  # (n, 3) in grid units
        base = pos.floor().clamp_(0, g - 2)
        frac, order = (pos - base).clamp_(0, 1).sort(dim=1, descending=True)  # (n, 3) each
        # (g^2, g, 1), made on the device: a tensor copied there would wait for the GPU
        strides = g ** torch.arange(2, -1, -1, device=rgb.device)
        corner = (base[:, 0] * (g * g) + base[:, 1] * g + base[:, 2]).long()  # (n,) exact
        steps = strides[order].cumsum(dim=1)  # (n, 3) offsets of the other 3 corners
        # (n, 4): (1 - f0), (f0 - f1), (f1 - f2), f2 for the base and the 3 corners after it
        weights = torch.cat([1 - frac[:, :1], frac[:, :2] - frac[:, 1:], frac[:, 2:]], dim=1)
        acc = table.index_select(0, corner) * weights[:, :1]  # (n, bands)
        for k in range(3):
            acc.addcmul_(table.index_select(0, corner + steps[:, k]), weights[:, k + 1: k + 2])
        top_out = (1 << self.bits) - 1
        return (acc * top_out).round_().clamp_(0, top_out).to(DTYPES[self.bits])


def colour_lut(colour: OutputColour, grid: int = 65) -> ColourLUT:
    """The (cached) table of `colour`'s sRGB -> output transform, grid^3 nodes."""
    if colour.profile_path is None:
        raise ValueError("colour_lut: this print keeps sRGB (no output profile), so there is "
                         "no conversion to tabulate; use the render's pixels as they are")
    if grid < 2:
        raise ValueError(f"colour_lut: grid must be at least 2, got {grid}")
    key = (hashlib.sha256(colour.profile).hexdigest(), colour.intent,
           colour.black_point_compensation, colour.bits, grid)
    with _cache_lock:  # held while sampling, so concurrent callers build a table only once
        if key not in _cache:
            _cache[key] = ColourLUT(_sample(colour, grid), colour.bits, key)
        return _cache[key]


def _sample(colour: OutputColour, grid: int) -> torch.Tensor:
    """Run `to_output` (at 16 bits, for precise samples) on every grid node."""
    levels = np.round(np.arange(grid) * (65535 / (grid - 1))).astype(np.uint16)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    nodes = np.stack([r, g, b], axis=-1).reshape(grid * grid, grid, 3)  # b fastest
    image = pyvips.Image.new_from_memory(nodes.tobytes(), grid, grid * grid, 3, "ushort")
    out = to_output(image.copy(interpretation="rgb16"), dataclasses.replace(colour, bits=16))
    samples = np.frombuffer(out.write_to_memory(), np.uint16).reshape(grid, grid, grid, -1)
    return torch.from_numpy(samples.astype(np.float32) / 65535)


def _chunk_px(device: torch.device) -> int:
    return CHUNK_PX["cuda" if device.type == "cuda" else "cpu"]


def ink_coverage(cmyk: torch.Tensor) -> tuple[float, int, int]:
    """Highest total ink of (h, W, 4) CMYK, in %, and the (row, col) of its first pixel.

    Integer sums, so the value equals `ink_check`'s on the same bytes; computed on the
    tensor's device in row blocks, so nothing has to come back to the host but 3 numbers.
    """
    if cmyk.dim() != 3 or cmyk.shape[-1] != 4 or cmyk.dtype not in TOPS:
        raise ValueError(f"need (h, W, 4) uint8 or uint16 CMYK, got {tuple(cmyk.shape)} "
                         f"{cmyk.dtype}")
    h, w, _ = cmyk.shape
    if h * w == 0:
        return 0.0, 0, 0
    rows = max(1, _chunk_px(cmyk.device) // w)
    peaks, places = [], []  # per block, left on the device: reading each would wait for it
    for y in range(0, h, rows):
        total = cmyk[y: y + rows].to(torch.int32).sum(dim=2)  # (rows, W) int32
        peaks.append(total.max())
        places.append(total.argmax() + y * w)
    block = int(torch.stack(peaks).argmax())  # the first block holding the maximum, like
    best, where = int(peaks[block]), int(places[block])  # argmax (all zero: pixel 0)
    return best * 100.0 / TOPS[cmyk.dtype], where // w, where % w
