"""Architecture configuration of the SGAN / PSGAN generator family."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from texprod.errors import ConfigError, shorten

Upsample = Literal["tconv", "nearest"]
UPSAMPLE_CHOICES: tuple[str, ...] = ("tconv", "nearest")

MAX_CHANNELS = 4096  # per layer; the papers' widest is 512
MAX_WEIGHTS = 1 << 30  # 4 GB of float32: far beyond any texture generator, far below 800 GB


# The papers' reference generator: 5 layers, kernel 5, 512-256-128-64 channels.
REFERENCE_FILTERS: tuple[int, ...] = (512, 256, 128, 64)


def default_filters(depth: int) -> tuple[int, ...]:
    """Channel widths for `depth` layers: halving towards the output, 64 last, capped at 512."""
    return tuple(min(512, 64 * 2 ** (depth - 2 - i)) for i in range(depth - 1))


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored as JSON in the checkpoint.

    Noise channels per cell: ``nz_local`` i.i.d. uniform, ``nz_global`` from a global field,
    ``nz_periodic`` sinusoids whose wave vectors come from an MLP of the global channels.
    SGAN is the case nz_global = nz_periodic = 0.
    """

    nz_local: int = 30
    nz_global: int = 60
    nz_periodic: int = 6
    affine: bool = False  # planar waves (kx, ky) per channel instead of axis-aligned ones
    wave_hidden: int = 60  # hidden width of the wave-vector MLP
    upsample: str = "tconv"  # "tconv" (transposed conv, stride 2) | "nearest" (2x nearest + conv)
    kernel: int = 5
    filters: tuple[int, ...] = field(default=REFERENCE_FILTERS)
    out_channels: int = 3

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "filters", tuple(self.filters))
        checks = [
            ("nz_local", self.nz_local, self.nz_local >= 0, "must be >= 0"),
            ("nz_global", self.nz_global, self.nz_global >= 0, "must be >= 0"),
            ("nz_periodic", self.nz_periodic, self.nz_periodic >= 0, "must be >= 0"),
            ("wave_hidden", self.wave_hidden, self.wave_hidden >= 1, "must be >= 1"),
            ("upsample", self.upsample, self.upsample in UPSAMPLE_CHOICES,
             f"must be one of {', '.join(UPSAMPLE_CHOICES)}"),
            ("nz_local", self.nz_local, self.nz_local <= MAX_CHANNELS, f"must be <= {MAX_CHANNELS}"),
            ("nz_global", self.nz_global, self.nz_global <= MAX_CHANNELS,
             f"must be <= {MAX_CHANNELS}"),
            ("nz_periodic", self.nz_periodic, self.nz_periodic <= MAX_CHANNELS,
             f"must be <= {MAX_CHANNELS}"),
            ("wave_hidden", self.wave_hidden, self.wave_hidden <= MAX_CHANNELS,
             f"must be <= {MAX_CHANNELS}"),
            ("kernel", self.kernel, 2 <= self.kernel <= 15, "must be between 2 and 15"),
            ("filters", list(self.filters), all(1 <= f <= MAX_CHANNELS for f in self.filters),
             f"must be channel counts between 1 and {MAX_CHANNELS}"),
            ("depth", self.depth, 1 <= self.depth <= 10, "must be between 1 and 10"),
            ("out_channels", self.out_channels, self.out_channels in (1, 3),
             "must be 1 or 3"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"{name}: got {value!r}, {allowed}")
        if self.nz == 0:
            raise ConfigError("nz_local + nz_global + nz_periodic: got 0, need at least one channel")
        if self.weight_count > MAX_WEIGHTS:
            raise ConfigError(f"filters: got {list(self.filters)} with kernel {self.kernel}: "
                              f"{self.weight_count:,} convolution weights, at most "
                              f"{MAX_WEIGHTS:,} (a generator of 4 GB)")
        if self.upsample == "nearest" and self.kernel % 2 == 0:
            raise ConfigError(
                f"kernel: got {self.kernel}, the nearest-upsample variant needs an odd kernel"
            )

    def _check_types(self) -> None:
        """JSON gives any type: refuse what is not what the field holds before using it."""
        ints = ("nz_local", "nz_global", "nz_periodic", "wave_hidden", "kernel", "out_channels")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name}: got {shorten(value)}, must be a whole number")
        if not isinstance(self.affine, bool):
            raise ConfigError(f"affine: got {shorten(self.affine)}, must be true or false")
        if not isinstance(self.upsample, str):
            raise ConfigError(f"upsample: got {shorten(self.upsample)}, must be one of "
                              f"{', '.join(UPSAMPLE_CHOICES)}")
        if not isinstance(self.filters, list | tuple) or not all(
                isinstance(f, int) and not isinstance(f, bool) for f in self.filters):
            raise ConfigError(f"filters: got {shorten(self.filters)}, must be a list of whole "
                              "channel counts, e.g. [512, 256, 128, 64]")

    @property
    def weight_count(self) -> int:
        """Convolution weights of the upsampling stack (what sizes the model in memory)."""
        widths = [self.nz, *self.filters, self.out_channels]
        return sum(a * b * self.kernel ** 2 for a, b in zip(widths, widths[1:], strict=False))

    @property
    def depth(self) -> int:
        """Number of upsampling layers (each doubles the resolution)."""
        return len(self.filters) + 1

    @property
    def nz(self) -> int:
        return self.nz_local + self.nz_global + self.nz_periodic

    @property
    def cell_px(self) -> int:
        """Output pixels per noise cell along each axis: 2^depth."""
        return 2**self.depth

    @property
    def arch(self) -> str:
        return "sgan" if self.nz_global == 0 and self.nz_periodic == 0 else "psgan"

    @property
    def wave_params(self) -> int:
        """Numbers the wave MLP outputs: one wave number per channel, or (kx, ky) if affine."""
        return self.nz_periodic * (2 if self.affine else 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"config: unknown keys {unknown}, allowed keys are {sorted(known)}"
            )
        return cls(**data)


def make_config(
    arch: str = "psgan",
    upsample: str = "tconv",
    depth: int | None = None,
    kernel: int = 5,
    filters: tuple[int, ...] | None = None,
    nz_local: int | None = None,
    nz_global: int | None = None,
    nz_periodic: int | None = None,
    affine: bool = False,
) -> GeneratorConfig:
    """Build a config from CLI-style options, filling the papers' defaults per arch."""
    if arch not in ("sgan", "psgan"):
        raise ConfigError(f"arch: got {arch!r}, must be one of sgan, psgan")
    if filters is not None and depth is not None and len(filters) != depth - 1:
        raise ConfigError(
            f"filters: got {len(filters)} widths {list(filters)} for depth {depth}, "
            f"need depth - 1 = {depth - 1}"
        )
    if filters is None:
        if depth is not None and not 1 <= depth <= 10:
            raise ConfigError(f"depth: got {depth}, must be between 1 and 10")
        filters = default_filters(depth) if depth is not None else REFERENCE_FILTERS
    if arch == "sgan":
        defaults = {"nz_local": 100, "nz_global": 0, "nz_periodic": 0}
    else:
        defaults = {"nz_local": 30, "nz_global": 60, "nz_periodic": 6}
    given = {"nz_local": nz_local, "nz_global": nz_global, "nz_periodic": nz_periodic}
    if arch == "sgan":
        for name in ("nz_global", "nz_periodic"):
            if given[name]:
                raise ConfigError(
                    f"{name}: got {given[name]}, an sgan has only local channels "
                    "(use --arch psgan)"
                )
    sizes = {k: defaults[k] if v is None else v for k, v in given.items()}
    return GeneratorConfig(
        upsample=upsample, kernel=kernel, filters=tuple(filters), affine=affine, **sizes
    )
