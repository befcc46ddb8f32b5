"""Receptive field of a generator, computed from its layers.

Every spatial layer maps global positions of its input map to global positions of its
output map (one axis; the other is the same). For a transposed conv (kernel k, stride s,
padding p) output o sums inputs i with o = s*i - p + t, t in [0, k); for a stride-1 conv
output o sums inputs o - p + t; nearest 2x upsampling reads input floor(o / 2).
From these we derive, for the pixels of one noise cell, which positions of every layer
they need (the halo and per-layer crop margins), and which pixels one cell influences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from texprod.errors import ConfigError

POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)


@dataclass(frozen=True)
class SpatialOp:
    """One spatial layer along one axis."""

    kind: str  # "tconv" | "conv" | "upsample"
    kernel: int = 1
    stride: int = 1
    padding: int = 0

    @property
    def scale(self) -> int:
        return self.stride if self.kind in ("tconv", "upsample") else 1

    def needs(self, lo: int, hi: int) -> tuple[int, int]:
        """Input positions that output positions [lo, hi] read."""
        k, s, p = self.kernel, self.stride, self.padding
        if self.kind == "tconv":
            return math.ceil((lo + p - k + 1) / s), (hi + p) // s
        if self.kind == "conv":
            return lo - p, hi - p + k - 1
        return lo // s, hi // s

    def influences(self, lo: int, hi: int) -> tuple[int, int]:
        """Output positions that input positions [lo, hi] contribute to."""
        k, s, p = self.kernel, self.stride, self.padding
        if self.kind == "tconv":
            return s * lo - p, s * hi - p + k - 1
        if self.kind == "conv":
            return lo + p - k + 1, hi + p
        return s * lo, s * hi + s - 1


def _as_op(module: nn.Module) -> SpatialOp | None:
    def single(value, name: str) -> int:
        values = value if isinstance(value, tuple) else (value, value)
        if values[0] != values[1]:
            raise ConfigError(f"{name}: got {values}, only square layers are supported")
        return int(values[0])

    if isinstance(module, POINTWISE):
        return None
    if isinstance(module, nn.ConvTranspose2d | nn.Conv2d):
        if single(module.dilation, "dilation") != 1 or isinstance(module.padding, str):
            raise ConfigError(f"{module}: dilated or string-padded convolutions are not supported")
        kind = "tconv" if isinstance(module, nn.ConvTranspose2d) else "conv"
        stride = single(module.stride, "stride")
        if kind == "conv" and stride != 1:
            raise ConfigError(f"{module}: strided convolutions are not supported in a generator")
        return SpatialOp(kind, single(module.kernel_size, "kernel_size"), stride,
                         single(module.padding, "padding"))
    if isinstance(module, nn.Upsample):
        if module.mode != "nearest" or module.scale_factor is None:
            raise ConfigError(f"{module}: only nearest upsampling by an integer factor is supported")
        return SpatialOp("upsample", stride=int(single(module.scale_factor, "scale_factor")))
    raise ConfigError(f"{type(module).__name__}: unknown layer, cannot compute its receptive field")


def block_ops(blocks: nn.ModuleList) -> list[list[SpatialOp]]:
    """The spatial ops of each block, in order."""
    return [[op for m in block if (op := _as_op(m)) is not None] for block in blocks]


@dataclass(frozen=True)
class ReceptiveField:
    cell_px: int  # output pixels per noise cell (product of the scales)
    scales: tuple[int, ...]  # resolution factor of each block
    halo: int  # noise cells needed on every side of a tile (max of both sides)
    # margins[b] = (left, right): positions of block b's output map (b = 0: the noise) beyond
    # [c0 * f_b, c1 * f_b) that the pixels of cells [c0, c1) need, with f_b = 2^b
    margins: tuple[tuple[int, int], ...]
    span: tuple[int, int]  # output pixels that noise cell 0 influences (inclusive)

    @property
    def span_px(self) -> int:
        return self.span[1] - self.span[0] + 1


def receptive_field(blocks: nn.ModuleList) -> ReceptiveField:
    ops_per_block = block_ops(blocks)
    scales = [math.prod(op.scale for op in ops) for ops in ops_per_block]
    cell_px = math.prod(scales)
    # Walk the pixels of cell 0 back through the blocks, recording what each map needs.
    lo, hi = 0, cell_px - 1
    factor = cell_px
    margins = [(0, 0)]
    for ops, scale in zip(reversed(ops_per_block), reversed(scales), strict=True):
        for op in reversed(ops):
            lo, hi = op.needs(lo, hi)
        factor //= scale
        margins.append((-lo, hi - (factor - 1)))
    margins.reverse()
    assert all(left >= 0 and right >= 0 for left, right in margins), (
        f"margins: got {margins}, expected non-negative"
    )
    lo, hi = 0, 0
    for ops in ops_per_block:
        for op in ops:
            lo, hi = op.influences(lo, hi)
    return ReceptiveField(cell_px, tuple(scales), max(margins[0]), tuple(margins), (lo, hi))
