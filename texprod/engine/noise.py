"""The noise field Z as a function of global cell coordinates (DESIGN invariant 1).

Every channel at cell (y, x) is computed from (seed, channel, y, x) alone, so any window
equals the same cells of any larger window, on any device:

- local channels: a counter-based integer hash, uniform in [-1, 1) with 24-bit resolution,
  bit-identical on CPU and CUDA (only int64 adds, xors, shifts and products < 2^63);
- global channels: a `GlobalField` over global coordinates: one latent everywhere, a
  quilt of blended block latents, or a painted mask's latents (`TableField`);
- periodic channels: sin(kx * x + ky * y + phase), wave vectors from the generator's
  wave MLP of the global channels, phase from the seed.

In repeat mode with period (Py, Px) cells, coordinates wrap modulo the period and wave
vectors snap to multiples of 2*pi / P, so the field (and the texture) is exactly periodic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from texprod.engine.config import GeneratorConfig
from texprod.engine.devices import DeviceCopies
from texprod.errors import ConfigError

MASK32 = 0xFFFFFFFF
# Independent streams of the hash, so channels of different kinds never share values.
STREAM_LOCAL, STREAM_GLOBAL, STREAM_PHASE, STREAM_QUILT = 1, 2, 3, 4
_ROW_SALT, _COL_SALT = 0x9E3779B9, 0x85EBCA6B


def _mul32(x, c: int):
    """(x * c) mod 2^32 for x in [0, 2^32), split so no int64 product overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x):
    """Bijective 32-bit mixer (Wellons' lowbias32 constants); Python ints or int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def channel_key(seed: int, stream: int, channel: int) -> int:
    """32-bit key of one channel of one stream; seeds may use up to 64 bits."""
    if seed < 0 or seed >= 2**64:
        raise ConfigError(f"seed: got {seed}, must be between 0 and 2^64 - 1")
    h = mix32((seed & MASK32) ^ mix32(((seed >> 32) + _COL_SALT) & MASK32))
    h = mix32(h ^ mix32((stream * _ROW_SALT) & MASK32))
    return mix32(h ^ mix32((channel + _ROW_SALT) & MASK32))


def _coordinate_keys(coords: torch.Tensor, salt: int) -> torch.Tensor:
    return mix32(((coords & MASK32) + salt) & MASK32)


def hash_uniform(keys: Sequence[int] | torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
                 ) -> torch.Tensor:
    """Uniform [-1, 1) values for channels `keys` at cells ys x xs.

    keys: C channel keys (int64 on ys' device, or ints); ys (..., h), xs (..., w) int64
    cell coordinates with the same leading (batch) dims -> (..., C, h, w) float32.
    """
    k = keys if isinstance(keys, torch.Tensor) else torch.tensor(  # (C,)
        list(keys), dtype=torch.int64, device=ys.device)
    rows = mix32(k[:, None] ^ _coordinate_keys(ys, _ROW_SALT)[..., None, :])  # (..., C, h)
    col_keys = _coordinate_keys(xs, _COL_SALT)[..., None, None, :]  # (..., 1, 1, w)
    cells = mix32(rows[..., None] ^ col_keys)  # (..., C, h, w)
    # top 24 bits -> exact float32 in [0, 2^24); scaled to [-1, 1) with exact arithmetic
    return (cells >> 8).to(torch.float32) * (2.0**-23) - 1.0


def seeded_uniform(seed: int, stream: int, n: int) -> torch.Tensor:
    """n values uniform in [-1, 1) that depend only on (seed, stream): (n,) float32."""
    origin = torch.zeros(1, dtype=torch.int64)
    keys = [channel_key(seed, stream, c) for c in range(n)]
    return hash_uniform(keys, origin, origin)[:, 0, 0]


def global_latent(seed: int, nz_global: int) -> torch.Tensor:
    """The global latent a seed stands for: (nz_global,) uniform in [-1, 1)."""
    return seeded_uniform(seed, STREAM_GLOBAL, nz_global)


class GlobalField(Protocol):
    """The global channels as a function of global cell coordinates."""

    nz_global: int

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """ys (B, h), xs (B, w) int64 cell coordinates -> (B, nz_global, h, w) float32."""

    def constant(self) -> torch.Tensor | None:
        """The single latent if the field does not vary over space, else None."""


class ConstantField:
    """The same global latent at every cell (one texture over the whole print)."""

    def __init__(self, latent: torch.Tensor):
        assert latent.dim() == 1, f"latent: got shape {tuple(latent.shape)}, expected (nz_global,)"
        self.latent = latent.to(torch.float32)
        self.nz_global = latent.shape[0]
        self._latent = DeviceCopies(self.latent)

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        latent = self._latent.on(ys.device)
        return latent[None, :, None, None].expand(ys.shape[0], -1, ys.shape[1], xs.shape[1])

    def constant(self) -> torch.Tensor | None:
        return self.latent


class QuiltField:
    """PSGAN's quilt: an independent global latent per block of cells, blended over a
    transition of T cells centred on every block border (smoothstep, separable).

    Blocks may be fractional (`block` in cells, one value or (rows, cols)), so a whole
    number of blocks can fit any repeat period: block (by, bx) holds the cells whose
    centres lie in [by * By, (by + 1) * By) x [bx * Bx, (bx + 1) * Bx). Its latent is
    hashed from (seed, block), so the field is a function of global coordinates only.
    `period_blocks` (rows, cols) wraps the block indices for exact repeats.
    """

    def __init__(self, nz_global: int, seed: int, block: float | tuple[float, float],
                 transition: float, period_blocks: tuple[int, int] | None = None):
        blocks = (block, block) if isinstance(block, int | float) else tuple(block)
        if min(blocks) < 1:
            raise ConfigError(f"quilt block: got {block} cells, must be at least 1")
        if not 0 <= transition <= min(blocks):
            raise ConfigError(f"quilt transition: got {transition} cells, must be between 0 "
                              f"and the block size {min(blocks):g}")
        self.nz_global, self.blocks, self.transition = nz_global, blocks, float(transition)
        self.period_blocks = period_blocks
        self._keys = DeviceCopies(torch.tensor(
            [channel_key(seed, STREAM_QUILT, c) for c in range(nz_global)], dtype=torch.int64))

    def constant(self) -> torch.Tensor | None:
        return None

    def _axis(self, coords: torch.Tensor, block: float, period: int | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per cell: the two blocks it blends (lower, upper) and the weight of the upper."""
        # float64 division is correctly rounded on every device: CPU and CUDA agree
        centre = coords.to(torch.float64) + 0.5
        b = torch.floor(centre / block)
        inside = centre - b * block  # 0 .. block within the block
        b = b.to(torch.int64)
        if self.transition == 0:
            lower, weight = b, torch.zeros_like(centre)
        else:
            # the lower half of a block blends with the block below across its lower
            # border, the upper half with the block above; t runs 0 -> 1 across a border
            below = inside < block / 2
            half = self.transition / 2
            t = torch.where(below, inside + half, inside - block + half) / self.transition
            t = t.clamp(0, 1)
            weight = t * t * (3 - 2 * t)  # smoothstep: the weight of block `lower + 1`
            lower = torch.where(below, b - 1, b)
        upper = lower + 1
        if period is not None:
            lower, upper = torch.remainder(lower, period), torch.remainder(upper, period)
        return lower, upper, weight.to(torch.float32)

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        py, px = self.period_blocks or (None, None)
        y0, y1, wy = self._axis(ys, self.blocks[0], py)  # (B, h)
        x0, x1, wx = self._axis(xs, self.blocks[1], px)  # (B, w)
        out = None
        for by, fy in ((y0, 1 - wy), (y1, wy)):
            for bx, fx in ((x0, 1 - wx), (x1, wx)):
                latent = hash_uniform(self._keys.on(by.device), by, bx)  # (B, nz_global, h, w)
                term = latent * (fy[:, None, :, None] * fx[:, None, None, :])
                out = term if out is None else out + term
        return out


class TableField:
    """Global latents blended per cell by a precomputed weight table (a painted mask).

    weights (K, H, W) cover cells [y0, y0 + H) x [x0, x0 + W), each cell's K weights
    summing to 1; latents (K, nz_global). Cells outside the table hold latent `outside`
    exactly. In repeat mode the table is one whole period at (0, 0): the noise field
    wraps coordinates into it before sampling.
    """

    def __init__(self, weights: torch.Tensor, latents: torch.Tensor, origin: tuple[int, int],
                 outside: int):
        assert weights.dim() == 3 and latents.dim() == 2 and weights.shape[0] == latents.shape[0]
        self.weights = weights.to(torch.float32)  # (K, H, W)
        self.latents = latents.to(torch.float32)  # (K, nz_global)
        self.origin, self.outside = origin, outside
        self.nz_global = latents.shape[1]
        self._weights, self._latents = DeviceCopies(self.weights), DeviceCopies(self.latents)

    def constant(self) -> torch.Tensor | None:
        return None

    def sample(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        k, h, w = self.weights.shape
        weights, latents = self._weights.on(ys.device), self._latents.on(ys.device)
        iy, ix = ys - self.origin[0], xs - self.origin[1]  # (B, h), (B, w)
        inside = (((iy >= 0) & (iy < h))[:, :, None]
                  & ((ix >= 0) & (ix < w))[:, None, :])  # (B, h, w)
        picked = weights[:, iy.clamp(0, h - 1)[:, :, None], ix.clamp(0, w - 1)[:, None, :]]
        alone = (torch.arange(k, device=ys.device) == self.outside).to(torch.float32)  # (K,)
        picked = torch.where(inside[None], picked, alone[:, None, None, None])  # (K, B, h, w)
        # elementwise, not a matmul (TF32 would round it on CUDA); a cell with weights
        # (1, 0, ...) gets its latent exactly: 1 * a + 0 * b == a
        out = picked[0][:, None] * latents[0][None, :, None, None]
        for i in range(1, k):
            out = out + picked[i][:, None] * latents[i][None, :, None, None]
        return out  # (B, nz_global, h, w)


WaveFn = Callable[[torch.Tensor], torch.Tensor]  # (N, nz_global) -> (N, nz_periodic, 2)


class NoiseField:
    """Z for any window of the infinite (or periodic) plane of noise cells."""

    def __init__(
        self,
        config: GeneratorConfig,
        seed: int,
        *,
        waves: WaveFn | None = None,
        period: tuple[int, int] | None = None,
        global_field: GlobalField | None = None,
    ):
        self.config = config
        self.seed = seed
        if period is not None:
            py, px = period
            if py < 1 or px < 1:
                raise ConfigError(f"period: got {period} cells, both sides must be >= 1")
        self.period = period
        if config.nz_periodic and waves is None:
            raise ConfigError("waves: a generator with periodic channels needs its wave vectors")
        self.waves = waves
        if global_field is None:
            global_field = ConstantField(global_latent(seed, config.nz_global))
        if global_field.nz_global != config.nz_global:
            raise ConfigError(
                f"global field: got {global_field.nz_global} channels, "
                f"the model has nz_global = {config.nz_global}"
            )
        self.global_field = global_field
        self._local_keys = DeviceCopies(torch.tensor(
            [channel_key(seed, STREAM_LOCAL, c) for c in range(config.nz_local)],
            dtype=torch.int64))
        # phases uniform in [0, 2 pi), one per periodic channel
        phase = (seeded_uniform(seed, STREAM_PHASE, config.nz_periodic) + 1.0) * math.pi
        self._phase = DeviceCopies(phase.to(torch.float64))
        # the wave vectors' snapping step in repeat mode: (kx step, ky step)
        self._step = None if period is None else DeviceCopies(
            torch.tensor([2 * math.pi / period[1], 2 * math.pi / period[0]]))

    def window(self, y0: int, x0: int, h: int, w: int, device: torch.device | str = "cpu"
               ) -> torch.Tensor:
        """Z for cells [y0, y0 + h) x [x0, x0 + w): (nz, h, w) float32 on `device`."""
        return self.windows([(y0, x0)], h, w, device)[0]

    def windows(self, origins: Sequence[tuple[int, int]], h: int, w: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
        """Equal-sized windows at cell origins (y0, x0): (B, nz, h, w) float32 on `device`."""
        # the origins as Python numbers added on the device: a tensor of them would be a
        # blocking copy to it
        rows = torch.arange(h, dtype=torch.int64, device=device)
        cols = torch.arange(w, dtype=torch.int64, device=device)
        ys = torch.stack([rows + y0 for y0, _ in origins])  # (B, h)
        xs = torch.stack([cols + x0 for _, x0 in origins])  # (B, w)
        if self.period is not None:
            ys = torch.remainder(ys, self.period[0])
            xs = torch.remainder(xs, self.period[1])
        parts = []
        if self.config.nz_local:
            parts.append(hash_uniform(self._local_keys.on(ys.device), ys, xs))  # (B, nz_local, h, w)
        z_global = self.global_field.sample(ys, xs)  # (B, nz_global, h, w)
        if self.config.nz_global:
            parts.append(z_global)
        if self.config.nz_periodic:
            parts.append(self._periodic(z_global, ys, xs))  # (B, nz_periodic, h, w)
        return torch.cat(parts, dim=1)

    def wave_vectors(self, z_global: torch.Tensor) -> torch.Tensor:
        """(N, nz_global) -> (N, nz_periodic, 2) wave vectors, snapped in repeat mode."""
        assert self.waves is not None
        k = self.waves(z_global.to(torch.float32)).to(torch.float32)
        if self._step is not None:
            step = self._step.on(k.device)  # (kx step, ky step)
            k = torch.round(k / step) * step
        return k

    def _periodic(self, z_global: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
                  ) -> torch.Tensor:
        """sin(kx x + ky y + phase): (B, nz_periodic, h, w)."""
        (b, h), w = ys.shape, xs.shape[1]
        if self.global_field.constant() is not None:
            # the field's one latent, as sampled on the device already (every cell holds it)
            k = self.wave_vectors(z_global[:1, :, 0, 0])  # (1, P, 2)
            k = k[:, :, None, None, :]  # (1, P, 1, 1, 2)
        else:
            flat = z_global.permute(0, 2, 3, 1).reshape(b * h * w, -1)  # (B*h*w, nz_global)
            k = self.wave_vectors(flat).reshape(b, h, w, -1, 2).permute(0, 3, 1, 2, 4)
        # float64 phase so large coordinates keep their precision
        k = k.to(torch.float64)  # (B or 1, P, h or 1, w or 1, 2)
        arg = (k[..., 0] * xs.to(torch.float64)[:, None, None, :]
               + k[..., 1] * ys.to(torch.float64)[:, None, :, None]
               + self._phase.on(xs.device)[None, :, None, None])
        return torch.sin(torch.remainder(arg, 2 * math.pi)).to(torch.float32)
