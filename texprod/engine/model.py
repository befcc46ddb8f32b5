"""The SGAN / PSGAN generator: a fully convolutional upsampling stack.

Input Z (B, nz, h, w) with channels ordered [local | global | periodic];
output (B, out_channels, h * 2^depth, w * 2^depth) in [-1, 1].
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from texprod.engine.config import GeneratorConfig


class WaveVectors(nn.Module):
    """Wave vectors of the periodic channels, in radians per noise cell.

    (N, nz_global) -> (N, nz_periodic, 2) as (kx, ky). PSGAN derives them with an MLP
    from the global channels; without global channels they are learned constants.
    Axis-aligned waves run along x for even channels and along y for odd ones.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.nz_periodic = config.nz_periodic
        self.affine = config.affine
        n_out = config.wave_params
        if config.nz_global > 0:
            self.mlp: nn.Module | None = nn.Sequential(
                nn.Linear(config.nz_global, config.wave_hidden),
                nn.ReLU(),
                nn.Linear(config.wave_hidden, n_out),
            )
            self.register_parameter("const", None)
        else:
            self.mlp = None
            self.const = nn.Parameter(torch.zeros(n_out))

    def forward(self, z_global: torch.Tensor) -> torch.Tensor:
        n = z_global.shape[0]
        if self.mlp is not None:
            raw = self.mlp(z_global)  # (N, n_out)
        else:
            raw = self.const.expand(n, -1)
        if self.affine:
            return raw.reshape(n, self.nz_periodic, 2)
        # axis-aligned: (kx, 0) on even channels, (0, ky) on odd channels
        on_x = torch.arange(self.nz_periodic, device=raw.device) % 2 == 0
        zero = torch.zeros_like(raw)
        return torch.stack([torch.where(on_x, raw, zero), torch.where(on_x, zero, raw)], dim=-1)


def _upsampling_block(config: GeneratorConfig, c_in: int, c_out: int, last: bool) -> nn.Sequential:
    """One 2x upsampling layer: (B, c_in, h, w) -> (B, c_out, 2h, 2w)."""
    k = config.kernel
    layers: list[nn.Module] = []
    if config.upsample == "tconv":
        # padding and output_padding chosen so the output is exactly 2x the input
        layers.append(
            nn.ConvTranspose2d(
                c_in, c_out, k, stride=2, padding=(k - 1) // 2,
                output_padding=1 if k % 2 else 0, bias=last,
            )
        )
    else:
        layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=last))
    if last:
        layers.append(nn.Tanh())
    else:
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.waves = WaveVectors(config) if config.nz_periodic > 0 else None
        widths = [config.nz, *config.filters, config.out_channels]
        self.blocks = nn.ModuleList(
            _upsampling_block(config, widths[i], widths[i + 1], last=i == config.depth - 1)
            for i in range(config.depth)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 4 and z.shape[1] == self.config.nz, (
            f"z: got shape {tuple(z.shape)}, expected (B, {self.config.nz}, h, w)"
        )
        x = z
        for block in self.blocks:
            x = block(x)  # (B, C, h, w) -> (B, C', 2h, 2w)
        return x


def fold_batchnorm(generator: Generator) -> Generator:
    """A copy of `generator` with every inference-mode BatchNorm folded into the conv before it.

    BN(conv(x)) = s * (W x + b - mean) + beta with s = gamma / sqrt(var + eps), so the
    folded conv has weights s * W and bias s * (b - mean) + beta: same output, one op fewer.
    """
    folded = copy.deepcopy(generator).eval()
    for block in folded.blocks:
        for i, module in enumerate(block):
            if not isinstance(module, nn.BatchNorm2d):
                continue
            conv = block[i - 1]
            assert isinstance(conv, nn.ConvTranspose2d | nn.Conv2d), (
                f"BatchNorm follows {type(conv).__name__}, expected a convolution"
            )
            with torch.no_grad():
                scale = module.weight / torch.sqrt(module.running_var + module.eps)  # (C_out,)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                # ConvTranspose2d weights are (C_in, C_out, k, k); Conv2d weights (C_out, C_in, k, k)
                shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
                conv.weight.mul_(scale.reshape(shape))
                conv.bias = nn.Parameter((bias - module.running_mean) * scale + module.bias)
            block[i] = nn.Identity()
    return folded


class SubpixelUpsampling(nn.Module):
    """A 2x upsampling layer computed as one stride-1 convolution to 4x the channels and a
    pixel shuffle: (B, C_in, h, w) -> (B, 4 C_out, h, w) -> (B, C_out, 2h, 2w).

    Output pixel (2i + a, 2j + b) of a transposed convolution (stride 2) or of a
    convolution after a nearest 2x upsample reads only input pixels near (i, j): each of
    the four phases (a, b) is a small convolution of the input, and the four together are
    one convolution with 4 C_out outputs, channel c * 4 + a * 2 + b. It is the same
    function as the layer it replaces (up to float rounding) and a plain 3x3 convolution
    for kernel 5, the kind convolution libraries optimise most. On the CPU the reference
    generator renders 1.26x faster so (its transposed conv to 3 channels 2.1x); a nearest
    2x upsample would also quadruple the work.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pad: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2],
                              padding=pad[0] if pad[0] == pad[1] else 0, bias=bias is not None,
                              dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            if bias is not None:
                self.conv.bias.copy_(bias)
        self.pad = None if pad[0] == pad[1] else (pad[0], pad[1], pad[0], pad[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        y = self.conv(x)  # (B, 4 C_out, h, w)
        if not y.is_contiguous() and y.is_contiguous(memory_format=torch.channels_last):
            return pixel_shuffle_channels_last(y)
        return nn.functional.pixel_shuffle(y, 2)


def pixel_shuffle_channels_last(y: torch.Tensor) -> torch.Tensor:
    """`pixel_shuffle(y, 2)` of a channels-last y, channels-last too, in one copy. (CUDA's
    pixel_shuffle returns a contiguous tensor, which the next channels-last convolution
    copies back: two passes over the layer's largest tensor instead of one.)
    (B, 4 C, h, w) -> (B, C, 2h, 2w)."""
    b, c4, h, w = y.shape
    pixels = y.permute(0, 2, 3, 1).reshape(b, h, w, c4 // 4, 2, 2)  # a view: c * 4 + a * 2 + d
    out = pixels.permute(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c4 // 4)  # (B, h, a, w, d, C)
    return out.permute(0, 3, 1, 2)


def _phase_taps(kind: str, k: int) -> list[list[tuple[int, int]]]:
    """Per output phase a (0, 1) along one axis: (kernel tap, input offset) pairs.

    Transposed conv (padding (k - 1) // 2): output o = 2 i_in - p + tap.
    Conv (padding k // 2) after nearest 2x: output o reads upsampled o + t, input
    floor((o + t) / 2)."""
    if kind == "tconv":
        p = (k - 1) // 2
        return [[(tap, (a + p - tap) // 2) for tap in range(k) if (a + p - tap) % 2 == 0]
                for a in (0, 1)]
    half = k // 2
    return [[(t + half, (a + t) // 2) for t in range(-half, half + 1)] for a in (0, 1)]


PhaseKernel = tuple[torch.Tensor, tuple[int, int, int, int]]


def _phase_kernels(layer: nn.ConvTranspose2d | nn.Conv2d, after_upsample: bool
                   ) -> list[PhaseKernel]:
    """Per output phase (a, b), in the order (0, 0), (0, 1), (1, 0), (1, 1): the kernel
    (C_out, C_in, kh, kw) of the stride-1 convolution of the layer's input that gives it,
    and that convolution's padding (left, right, top, bottom)."""
    kind = "conv" if after_upsample else "tconv"
    k = layer.kernel_size[0]
    padding = k // 2 if after_upsample else (k - 1) // 2
    assert layer.padding == (padding, padding) and layer.stride == ((1, 1) if after_upsample
                                                                   else (2, 2)), (
        f"{type(layer).__name__} {layer}: not an upsampling layer of this generator family")
    # tconv weights are (C_in, C_out, k, k); conv weights (C_out, C_in, k, k)
    w = layer.weight.detach() if after_upsample else layer.weight.detach().transpose(0, 1)
    taps = _phase_taps(kind, k)
    phases = []
    for rows in taps:
        for cols in taps:
            top, bottom = min(d for _, d in rows), max(d for _, d in rows)
            left, right = min(d for _, d in cols), max(d for _, d in cols)
            kernel = torch.zeros(*w.shape[:2], bottom - top + 1, right - left + 1,
                                 dtype=w.dtype, device=w.device)
            for ty, dy in rows:
                for tx, dx in cols:  # taps that read the same input pixel add up
                    kernel[:, :, dy - top, dx - left] += w[:, :, ty, tx]
            phases.append((kernel, (-left, right, -top, bottom)))
    return phases


def subpixel_layer(layer: nn.ConvTranspose2d | nn.Conv2d, after_upsample: bool
                   ) -> SubpixelUpsampling:
    """The sub-pixel form of a stride-2 transposed conv, or of a conv that follows a
    nearest 2x upsample: the four phase kernels in one window, zeros where a phase reads
    less than the others."""
    phases = _phase_kernels(layer, after_upsample)
    low = min(-pad[0] for _, pad in phases)  # the window's first input offset
    high = max(pad[1] for _, pad in phases)
    c_out, c_in = phases[0][0].shape[:2]
    weight = phases[0][0].new_zeros(c_out, 4, c_in, high - low + 1, high - low + 1)
    for phase, (kernel, (left, _, top, _)) in enumerate(phases):
        y, x = -top - low, -left - low
        weight[:, phase, :, y: y + kernel.shape[2], x: x + kernel.shape[3]] = kernel
    bias = None if layer.bias is None else layer.bias.detach().repeat_interleave(4)
    return SubpixelUpsampling(weight.reshape(c_out * 4, c_in, *weight.shape[-2:]), bias,
                              (-low, high))


class PhaseUpsampling(nn.Module):
    """A 2x upsampling layer computed as four stride-1 convolutions, one per output phase
    (a, b), each with only the taps that phase reads, written interleaved:
    (B, C_in, h, w) -> 4 x (B, C_out, h, w) -> (B, C_out, 2h, 2w).

    The same function as `SubpixelUpsampling` without its zero taps: a 5x5 transposed
    convolution's phases are 3x3, 3x2, 2x3 and 2x2 (25 taps, the layer's own count,
    against 36 in one 3x3 window), at the cost of four narrower convolutions and the
    interleaving copy. Which form is faster depends on the layer's width and the device
    (`make gpu-check` times them per layer)."""

    def __init__(self, phases: list[PhaseKernel], bias: torch.Tensor | None):
        super().__init__()
        self.convs = nn.ModuleList()
        self.pads: list[tuple[int, int, int, int] | None] = []
        for kernel, pad in phases:
            symmetric = pad[0] == pad[1] and pad[2] == pad[3]
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]),
                             padding=(pad[2], pad[0]) if symmetric else 0,
                             bias=bias is not None, dtype=kernel.dtype, device=kernel.device)
            with torch.no_grad():
                conv.weight.copy_(kernel)
                if bias is not None:
                    conv.bias.copy_(bias)
            self.convs.append(conv)
            self.pads.append(None if symmetric else pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self.convs[0].out_channels
        # the output keeps the input's memory layout (channels_last on the GPU)
        layout = torch.channels_last if not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((b, c, 2 * h, 2 * w), dtype=x.dtype, device=x.device,
                          memory_format=layout)
        for phase, (conv, pad) in enumerate(zip(self.convs, self.pads, strict=True)):
            a, d = divmod(phase, 2)
            out[:, :, a::2, d::2] = conv(x if pad is None else nn.functional.pad(x, pad))
        return out


def phase_layer(layer: nn.ConvTranspose2d | nn.Conv2d, after_upsample: bool
                ) -> PhaseUpsampling:
    """The phase-split form of a stride-2 transposed conv, or of a conv that follows a
    nearest 2x upsample."""
    return PhaseUpsampling(_phase_kernels(layer, after_upsample),
                           None if layer.bias is None else layer.bias.detach())


UPSAMPLING_FORMS = ("subpixel", "phases", "native")


def upsampling_form(generator: Generator, form: str | Sequence[str]) -> Generator:
    """A copy of `generator` whose upsampling layers are computed in `form`: "subpixel"
    (`SubpixelUpsampling`), "phases" (`PhaseUpsampling`) or "native" (as defined), or one
    of those per upsampling layer, first to last. Layers after them, such as BatchNorm,
    stay as they are."""
    converted = copy.deepcopy(generator).eval()
    forms = [form] * len(converted.blocks) if isinstance(form, str) else list(form)
    assert len(forms) == len(converted.blocks) and set(forms) <= set(UPSAMPLING_FORMS), form
    for block, layer_form in zip(converted.blocks, forms, strict=True):
        if layer_form == "native":
            continue
        make = subpixel_layer if layer_form == "subpixel" else phase_layer
        for i, module in enumerate(block):
            if isinstance(module, nn.ConvTranspose2d):
                block[i] = make(module, after_upsample=False)
            elif isinstance(module, nn.Upsample):
                block[i] = nn.Identity()
                block[i + 1] = make(block[i + 1], after_upsample=True)
    return converted


def init_random(generator: Generator, seed: int) -> None:
    """Random weights, deterministic in `seed` (BatchNorm statistics: see `randomize_statistics`)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, nn.ConvTranspose2d | nn.Conv2d | nn.Linear):
                if isinstance(module, nn.ConvTranspose2d):
                    # (C_in, C_out, k, k); a stride-s output sees ~1/s^2 of the taps
                    fan_in = module.weight.shape[0] * module.weight[0, 0].numel()
                    fan_in /= module.stride[0] * module.stride[1]
                else:
                    fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=gen)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.uniform_(-0.3, 0.3, generator=gen)
        if generator.waves is not None:
            # wave numbers of 0.3-1.5 rad per cell: periods of about 4-20 cells
            last = generator.waves.mlp[-1] if generator.waves.mlp is not None else None
            target = last.bias if last is not None else generator.waves.const
            sign = torch.randint(0, 2, target.shape, generator=gen) * 2 - 1
            target.copy_(sign * (0.3 + 1.2 * torch.rand(target.shape, generator=gen)))
            if last is not None:
                last.weight.mul_(0.1)
    generator.eval()


def randomize_statistics(generator: Generator, calibration: torch.Tensor, seed: int) -> None:
    """Random, realistic BatchNorm running statistics, deterministic in `seed`.

    Each BatchNorm's statistics are first measured on the activations that `calibration`
    noise (B, nz, h, w) produces, so a random model gives texture rather than saturated tanh,
    then perturbed so that tests cannot be fooled by identity normalisation.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    generator.train()
    with torch.no_grad():
        generator(calibration)
        for bn in bns:
            bn.momentum = 0.1
            n = bn.num_features
            bn.running_mean.add_(0.2 * torch.randn(n, generator=gen) * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(n).uniform_(0.6, 1.6, generator=gen))
    generator.eval()
