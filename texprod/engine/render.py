"""Run a generator over a tile plan on a device and yield finished tiles.

`Renderer.tiles` is the one render loop: the print job, `texprod render`, the quality
measure, the registry preview and training samples all go through it. The fast path folds
BatchNorm into the convolutions, computes each upsampling layer as a convolution and a
pixel shuffle (`engine.model.SubpixelUpsampling`), batches equal-shaped tiles and, after
every block, crops each map to the positions the tile's interior still needs (margins
from the receptive field), so the halo costs almost nothing at the expensive late layers. A one-pass plan (tile_px 0) runs `render_reference` instead, the
plain computation the tests compare against: the whole canvas plus the same halo, the
unmodified network, one call.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch

from texprod.engine import Generator, ReceptiveField, fold_batchnorm, receptive_field
from texprod.engine.model import UPSAMPLING_FORMS, upsampling_form
from texprod.engine.noise import NoiseField
from texprod.engine.tiling import Tile, TilePlan, plan_tiles
from texprod.errors import RenderError

log = logging.getLogger(__name__)

# tf32: float32 tensors, TensorFloat-32 convolutions on CUDA (the same as fp32 elsewhere)
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
              "fp16": torch.float16}
OUTPUTS = {"uint8": (torch.uint8, 255), "uint16": (torch.uint16, 65535), "float32": (None, None)}
DEVICES = ("auto", "cpu", "cuda")
UPSAMPLING = UPSAMPLING_FORMS


def resolve_device(name: str, field: str = "device") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; errors name `field` (the caller's
    option or spec field)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise RenderError(f"{field}: got {name!r}, must be one of {', '.join(DEVICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RenderError(f"{field}: got {name!r}, but no CUDA device is available here "
                          "(use auto or cpu)")
    return torch.device(name)


def native_on_cpu(precision: str) -> bool:
    """Whether this CPU convolves at `precision` in hardware (oneDNN's bf16 / fp16 paths:
    AVX-512 BF16 / FP16, AMX). Without them PyTorch emulates the type: on an AVX2 EPYC,
    `texprod generate box_packaging --dry-run` measured fp32 2.48, bf16 0.11, fp16 0.12
    Mpx/s."""
    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}
    if precision not in probe:
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, probe[precision])())
    except (AttributeError, RuntimeError):  # a build without the probe: assume emulated
        return False


def default_tiling(device: torch.device, precision: str = "fp32") -> tuple[int, int]:
    """(tile px, batch) that render fastest by default (BENCHMARKS.md): small tiles that stay
    in cache on the CPU, large batched tiles that fill a GPU. bf16 in the CPU's hardware
    (AMX) wants smaller tiles in batches of 4: 1.18x the 512 x 1 tiling on a Sapphire
    Rapids Xeon, where fp32 stays fastest at 512 x 1."""
    if device.type == "cuda":
        return 2048, 4
    if precision == "bf16" and native_on_cpu("bf16"):
        return 256, 4
    return 512, 1


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise RenderError(f"{name}: got {value!r}, must be one of {', '.join(choices)}")


def quantize(x: torch.Tensor, output: str) -> torch.Tensor:
    """(B, C, h, w) in [-1, 1] -> (B, h, w, C) of the output dtype, computed where x lives."""
    dtype, top = OUTPUTS[output]
    x = x.float()
    if dtype is not None:
        x = ((x + 1.0) * (top / 2.0)).round_().clamp_(0, top).to(dtype)
    return x.permute(0, 2, 3, 1).contiguous()


def forward_interior(blocks: torch.nn.ModuleList, rf: ReceptiveField, z: torch.Tensor,
                     tile_cells: tuple[int, int]) -> torch.Tensor:
    """Run the blocks on Z windows with halo, cropping every map to what the interior needs.

    (B, nz, ty + 2H, tx + 2H) -> (B, C, ty*S, tx*S). Training uses it too, so a generator
    learns exactly the function tiled inference computes.
    """
    halo = rf.halo
    offset = [halo, halo]  # index of the interior's first position in the current map
    f = 1
    x = z
    for block, scale, (left, right) in zip(blocks, rf.scales, rf.margins[1:], strict=True):
        x = block(x)  # (B, C, h, w) -> (B, C', scale*h, scale*w)
        f *= scale
        ys, xs = (o * scale - left for o in offset)
        x = x[:, :, ys: ys + tile_cells[0] * f + left + right,
              xs: xs + tile_cells[1] * f + left + right]
        offset = [left, left]
    return x


def field_on(field: NoiseField, device: torch.device) -> NoiseField:
    """The same field with its wave MLP on `device` (noise is then computed there)."""
    if field.waves is None or not isinstance(field.waves, torch.nn.Module):
        return field
    moved = copy.copy(field)
    moved.waves = copy.deepcopy(field.waves).to(device=device, dtype=torch.float32)
    return moved


def use_cudnn_settings(precision: str, autotune: bool = False) -> None:
    """cuDNN's process-wide switches as rendering at `precision` needs them."""
    # Same bytes from every process and GPU: cuDNN's heuristics pick one algorithm per
    # shape; benchmark mode (`autotune`, for measurements) times candidates and may pick
    # another in another process, which changes the last bits.
    torch.backends.cudnn.benchmark = autotune
    torch.backends.cudnn.deterministic = not autotune
    # PyTorch allows TF32 in cuDNN convolutions by default; fp32 must mean fp32
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


class Renderer:
    """A generator prepared for fast, exact tiled inference on one device."""

    def __init__(self, generator: Generator, device: str = "auto", precision: str = "fp32",
                 autotune: bool = False, upsampling: str | tuple[str, ...] = "subpixel"):
        """`upsampling`: "subpixel" computes each upsampling layer as a convolution and a
        pixel shuffle (`SubpixelUpsampling`, the same function, faster); "phases" as one
        convolution per output phase without zero taps (`PhaseUpsampling`); "native"
        runs the layers as the generator defines them (for measurements); or a tuple of
        those, one per layer."""
        _check_choice("precision", precision, PRECISIONS)
        for form in (upsampling,) if isinstance(upsampling, str) else upsampling:
            _check_choice("upsampling", form, UPSAMPLING)
        if not isinstance(upsampling, str) and len(upsampling) != len(generator.blocks):
            raise RenderError(f"upsampling: got {len(upsampling)} forms, the generator has "
                              f"{len(generator.blocks)} upsampling layers")
        self.generator = generator  # unmodified, for one-pass plans
        self.device = resolve_device(device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.rf = receptive_field(generator.blocks)
        model = upsampling_form(fold_batchnorm(generator), upsampling)
        model.waves = None  # the noise field owns the wave MLP
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.autotune = autotune
        self.channels_last = self.device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._moved: tuple[NoiseField, NoiseField] | None = None  # (a field, on the device)

    def plan(self, width: int, height: int, tile_px: int, x0: int = 0, y0: int = 0,
             tile_h_px: int | None = None) -> TilePlan:
        """A tile plan of this generator's cell and halo (tile_px 0: one pass)."""
        return plan_tiles(width, height, self.rf.cell_px, self.rf.halo, tile_px, x0=x0, y0=y0,
                          tile_h_px=tile_h_px)

    def forward_interior(self, z: torch.Tensor, tile_cells: tuple[int, int]) -> torch.Tensor:
        """Z windows with halo (B, nz, ty + 2H, tx + 2H) -> interiors (B, C, ty*S, tx*S)."""
        return forward_interior(self.model.blocks, self.rf, z, tile_cells)

    @torch.inference_mode()
    def tiles(self, field: NoiseField, plan: TilePlan, batch: int = 4, output: str = "uint8"
              ) -> Iterator[tuple[Tile, np.ndarray]]:
        """Render `plan` in batches; yield (tile, pixels (h, w, C)) in plan order. A
        one-pass plan yields its one tile from `render_reference`.

        On CUDA the pixels are views of a pinned host buffer that is reused two batches
        later: consume (copy) each tile before asking for the next batch.
        """
        self._check(plan, batch, output)
        if plan.one_pass:
            (tile,) = plan.tiles
            yield tile, self._one_pass(field, plan, output).cpu().numpy()
            return
        copier = _HostCopier(self.device) if self.device.type == "cuda" else None
        pending = None
        for chunk, pixels in self._batches(field, plan, batch, output):
            current = (chunk, copier.start(pixels) if copier else (pixels, None))
            if pending is not None:  # on CUDA the device computes `current` meanwhile
                yield from _split(*pending)
            pending = current
        if pending is not None:
            yield from _split(*pending)

    @torch.inference_mode()
    def rows(self, field: NoiseField, plan: TilePlan, batch: int = 4, output: str = "uint8",
             on_tile: Callable[[], None] | None = None) -> torch.Tensor:
        """The plan's canvas assembled where it was rendered: (height, width, C) on the
        device, so that colour conversion can run there too (the sRGB pixels never cross
        to the host). `on_tile` is called once per tile as its batch is queued."""
        self._check(plan, batch, output)
        if plan.one_pass:
            canvas = self._one_pass(field, plan, output)
            if on_tile:
                on_tile()
            return canvas
        canvas = None
        for chunk, pixels in self._batches(field, plan, batch, output):  # (B, h, w, C)
            if canvas is None:
                canvas = torch.empty((plan.height, plan.width, pixels.shape[3]),
                                     dtype=pixels.dtype, device=self.device)
            for tile, image in zip(chunk, pixels, strict=True):
                canvas[tile.y: tile.y + tile.h, tile.x: tile.x + tile.w] = \
                    image[tile.src_y: tile.src_y + tile.h, tile.src_x: tile.src_x + tile.w]
                if on_tile:
                    on_tile()
        assert canvas is not None
        return canvas

    def _check(self, plan: TilePlan, batch: int, output: str) -> None:
        _check_choice("output", output, OUTPUTS)
        if batch < 1:
            raise RenderError(f"batch: got {batch}, must be at least 1")
        if plan.cell_px != self.rf.cell_px or plan.halo != self.rf.halo:
            raise RenderError(
                f"plan: got cell {plan.cell_px} px / halo {plan.halo}, the generator needs "
                f"cell {self.rf.cell_px} px / halo {self.rf.halo}"
            )

    def _use_cudnn_settings(self) -> None:
        """cuDNN's switches are process-wide and a worker may hold the renderers of several
        jobs, so each renderer sets its own whenever it renders."""
        if self.device.type == "cuda":
            use_cudnn_settings(self.precision, self.autotune)

    def _field_here(self, field: NoiseField) -> NoiseField:
        """`field` with its wave MLP on this renderer's device, moved there once per field
        (the stripes of a job share it): a move is a blocking copy to the GPU."""
        moved = self._moved
        if moved is None or moved[0] is not field:
            moved = self._moved = (field, field_on(field, self.device))
        return moved[1]

    def _one_pass(self, field: NoiseField, plan: TilePlan, output: str) -> torch.Tensor:
        self._use_cudnn_settings()
        return reference_pass(self.generator, field, plan.width, plan.height, plan.x0,
                              plan.y0, device=str(self.device), precision=self.precision,
                              output=output)

    def _batches(self, field: NoiseField, plan: TilePlan, batch: int, output: str
                 ) -> Iterator[tuple[list[Tile], torch.Tensor]]:
        """(tiles, their interiors (B, h, w, C) on the device), `batch` tiles at a time."""
        self._use_cudnn_settings()
        field = self._field_here(field)
        wy, wx = plan.window_cells
        for start in range(0, len(plan.tiles), batch):
            chunk = list(plan.tiles[start: start + batch])
            z = field.windows(plan.origins(chunk), wy, wx, self.device).to(self.dtype)
            if self.channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            yield chunk, quantize(self.forward_interior(z, plan.tile_cells), output)


class _HostCopier:
    """Device-to-host copies on a side stream into two alternating pinned buffers."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.turn = 0

    def start(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
        buffer = self.buffers[self.turn]
        if buffer is None or buffer.shape[1:] != pixels.shape[1:] \
                or buffer.shape[0] < pixels.shape[0] or buffer.dtype != pixels.dtype:
            buffer = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
            self.buffers[self.turn] = buffer
        self.turn ^= 1
        host = buffer[: pixels.shape[0]]
        self.stream.wait_stream(torch.cuda.current_stream(pixels.device))
        with torch.cuda.stream(self.stream):
            host.copy_(pixels, non_blocking=True)
            pixels.record_stream(self.stream)  # keep the device memory until the copy ends
            event = torch.cuda.Event()
            event.record(self.stream)
        return host, event


def _split(chunk: list[Tile], copied: tuple[torch.Tensor, torch.cuda.Event | None]
           ) -> Iterator[tuple[Tile, np.ndarray]]:
    pixels, event = copied
    if event is not None:
        event.synchronize()
    array = pixels.numpy()
    for tile, image in zip(chunk, array, strict=True):
        yield tile, image[tile.src_y: tile.src_y + tile.h, tile.src_x: tile.src_x + tile.w]


def render_reference(
    generator: Generator,
    field: NoiseField,
    width: int,
    height: int,
    x0: int = 0,
    y0: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    output: str = "uint8",
) -> np.ndarray:
    """The canvas in one pass of the unmodified network: (height, width, C)."""
    return reference_pass(generator, field, width, height, x0, y0, device, precision,
                          output).cpu().numpy()


@torch.inference_mode()
def reference_pass(generator: Generator, field: NoiseField, width: int, height: int,
                   x0: int = 0, y0: int = 0, device: str = "cpu", precision: str = "fp32",
                   output: str = "uint8") -> torch.Tensor:
    """`render_reference`, left on the device: (height, width, C)."""
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("output", output, OUTPUTS)
    dev = resolve_device(device)
    rf = receptive_field(generator.blocks)
    plan = plan_tiles(width, height, rf.cell_px, rf.halo, 0, x0=x0, y0=y0)
    (tile,) = plan.tiles
    wy, wx = plan.window_cells
    model = copy.deepcopy(generator).eval().to(device=dev, dtype=PRECISIONS[precision])
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    z = field_on(field, dev).windows(plan.origins([tile]), wy, wx, dev)  # (1, nz, wy, wx)
    image = model(z.to(PRECISIONS[precision]))  # (1, C, wy*S, wx*S)
    s, h = rf.cell_px, rf.halo
    interior = image[:, :, h * s: image.shape[2] - h * s, h * s: image.shape[3] - h * s]
    pixels = quantize(interior, output)[0]  # (wy*S - 2hS, ..., C)
    return pixels[tile.src_y: tile.src_y + tile.h, tile.src_x: tile.src_x + tile.w]


def render_canvas(renderer: Renderer, field: NoiseField, plan: TilePlan, batch: int = 4,
                  output: str = "uint8") -> np.ndarray:
    """All tiles of a plan assembled in memory: (height, width, C). For tests and small work."""
    canvas = None
    for tile, pixels in renderer.tiles(field, plan, batch=batch, output=output):
        if canvas is None:
            canvas = np.zeros((plan.height, plan.width, pixels.shape[2]), dtype=pixels.dtype)
        canvas[tile.y: tile.y + tile.h, tile.x: tile.x + tile.w] = pixels
    assert canvas is not None
    return canvas
