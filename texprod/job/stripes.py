"""Stripes: the unit of work of a print job, from noise to encoded TIFF chunks.

A stripe is a run of full-width canvas rows that starts on a TIFF chunk boundary (a
multiple of 256 rows) and is rendered as one row of tiles. Whoever runs a stripe (a
thread of this process or a Dask worker on another host) renders it, converts it to the
output colour space, measures its ink, applies the predictor and compresses its TIFF
tiles or strips, and returns only encoded bytes and a shrunk preview: the driver never
sees raw pixels, it assembles chunks into the file.

The stripes of a plan depend on the spec and the tile size only, never on how many
workers or threads run them, and each tile is computed with one intra-op thread, so the
bytes of a job do not depend on the machine's parallelism (on one kind of device).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyvips
import torch

from texprod.engine.render import Renderer
from texprod.engine.tiling import TilePlan, check_tile_count, plan_tiles, tiles_across
from texprod.errors import JobFailure, TexprodError
from texprod.job import stop
from texprod.job.plates import knock_out
from texprod.press.colour import to_output
from texprod.press.colour_lut import ColourLUT, ink_coverage
from texprod.press.printfile import TILE, encode_band

if TYPE_CHECKING:
    from texprod.engine.noise import NoiseField
    from texprod.job.plan import JobPlan

PREVIEW_PX = 2048  # the stripes' previews add up to at least this on the long side
MAX_PREVIEW_FACTOR = TILE  # a power of two dividing every stripe height
PREVIEW_CHUNK_PX = 2**22  # pixels shrunk at once on the device (48 MB of int32)

TileDone = Callable[[], None]  # called after each rendered tile (progress, stop checks)


@dataclass(frozen=True)
class Stripe:
    index: int
    y: int  # first canvas row
    h: int  # rows
    tiles: TilePlan  # one row of tiles covering exactly these rows


@dataclass
class StripeResult:
    """What a stripe sends back: encoded bytes and a preview, never raw pixels."""

    index: int
    chunk_sizes: list[int]  # bytes of each TIFF tile/strip, in file order
    data: bytes  # the chunks, concatenated
    preview: bytes  # (rows, cols, 3) uint8 sRGB, shrunk by the plan's preview factor
    preview_shape: tuple[int, int]
    tac_max: float | None  # highest total ink, % (CMYK)
    tiles: int
    render_s: float
    colour_s: float  # conversion, ink check and preview (on the device with the LUT)
    encode_s: float
    worker: str = ""  # the Dask worker or host and process that made it


def plan_stripes(width: int, height: int, cell_px: int, halo: int, tile_px: int,
                 x0: int = 0, y0: int = 0) -> list[Stripe]:
    """Stripes of ceil(tile / 256) * 256 rows (one stripe for a one-pass render). Each is
    one row of tiles exactly as high as the cells its rows touch, so no tile row is
    rendered twice, whatever the canvas origin (a repeat's canvas starts mid-cell)."""
    rows = height if tile_px == 0 else math.ceil(tile_px / TILE) * TILE
    check_tile_count(math.ceil(height / rows) * tiles_across(width, x0, cell_px, tile_px),
                     tile_px, width, height)
    stripes = []
    for y in range(0, height, rows):
        h = min(rows, height - y)
        top, bottom = (y0 + y) // cell_px, -(-(y0 + y + h) // cell_px)
        tiles = plan_tiles(width, h, cell_px, halo, tile_px, x0=x0, y0=y0 + y,
                           tile_h_px=(bottom - top) * cell_px)
        stripes.append(Stripe(len(stripes), y, h, tiles))
    return stripes


def preview_factor(width: int, height: int) -> int:
    """The box-shrink factor of the stripes' previews: a power of two that divides every
    stripe height, leaving at least PREVIEW_PX on the long side (so at most ~2x that)."""
    factor = 1
    while factor * 2 <= min(MAX_PREVIEW_FACTOR, max(width, height) // PREVIEW_PX):
        factor *= 2
    return factor


def single_threaded_torch() -> None:
    """One intra-op thread: a convolution's sums then run in one fixed order, so the
    pixels do not depend on the thread count (parallelism comes from stripes instead)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def work_stripe(plan: JobPlan, stripe: Stripe, field: NoiseField, renderer: Renderer,
                on_tile: TileDone | None = None,
                render_lock: threading.Lock | contextlib.nullcontext | None = None,
                lut: ColourLUT | None = None) -> StripeResult:
    """Render, colour-convert, ink-check, preview and encode one stripe.

    `render_lock` keeps a shared device to one stripe at a time (a GPU), while other
    threads convert and encode theirs: the device renders stripe k+1 while k is encoded.
    With the LUT colour engine (`lut`) the conversion, ink check and preview run on the
    render device too, inside the lock, and only the print's pixels come back.
    """
    single_threaded_torch()
    started = time.perf_counter()
    # knockout plates change the process inks after conversion: then ink is measured last
    ink_at_the_end = any(p.knockout for p in plan.plates.plates)
    if plan.colour_engine == "lut":
        out, preview, tac, rendered = stripe_on_device(plan, stripe, field, renderer, lut,
                                                       on_tile, render_lock,
                                                       measure_ink=not ink_at_the_end)
    else:
        with render_lock or contextlib.nullcontext(), _device_memory_named(plan, stripe):
            pixels = _render_rows(plan, stripe, field, renderer, on_tile)  # (h, W, 3) sRGB
        rendered = time.perf_counter()
        out = _to_output(pixels, plan)  # (h, W, bands) in the print's colour space, depth
        tac = None
        preview = shrink_preview(pixels, plan.preview_factor)
    if plan.plates:
        out = _with_plates(plan, stripe, out)  # (h, W, 4 [+ plates])
    if plan.colour.color == "cmyk" and tac is None:
        tac = ink_check(out[:, :, :4], stripe.y, plan.spec.print.tac_limit)
    coloured = time.perf_counter()
    chunks = encode_band(out, plan.tiff)
    return StripeResult(
        index=stripe.index, chunk_sizes=[len(c) for c in chunks], data=b"".join(chunks),
        preview=preview.tobytes(), preview_shape=preview.shape[:2], tac_max=tac,
        tiles=len(stripe.tiles.tiles), render_s=rendered - started,
        colour_s=coloured - rendered, encode_s=time.perf_counter() - coloured)


def stripe_on_device(plan: JobPlan, stripe: Stripe, field: NoiseField, renderer: Renderer,
                     lut: ColourLUT, on_tile: TileDone | None = None,
                     render_lock: threading.Lock | contextlib.nullcontext | None = None,
                     measure_ink: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, float | None, float]:
    """Render, convert, ink-check and shrink the preview of a stripe on the render device:
    (the print's pixels (h, W, bands), the preview (h/f, W/f, 3), the highest total ink,
    the perf_counter when the render ended). Only those pixels come back, and nothing of
    the stripe stays on the device: its memory is planned for one stripe at a time, and
    the next one renders there while this one is encoded."""
    with render_lock or contextlib.nullcontext(), _device_memory_named(plan, stripe):
        rows = _render_on_device(plan, stripe, field, renderer, on_tile)  # (h, W, 3)
        rendered = time.perf_counter()
        out, preview, tac = _colour_on_device(plan, stripe, rows, lut, measure_ink)
        ready = finished_here(rows.device)
        del rows
    # the copies overlap the next stripe's render
    return to_host(out, ready), to_host(preview, ready), tac, rendered


# How a GPU's memory running out shows besides torch.OutOfMemoryError: cuDNN finding no
# algorithm whose workspace fits (PyTorch's "GET was unable to find an engine..."), an
# allocation inside cuDNN or cuBLAS, a CUDA call's own error
OUT_OF_MEMORY_SIGNS = ("out of memory", "unable to find an engine", "STATUS_ALLOC_FAILED")


def out_of_device_memory(error: BaseException) -> bool:
    """Whether `error`, raised while rendering on a GPU, says its memory ran out."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(sign in str(error)
                                                for sign in OUT_OF_MEMORY_SIGNS))


@contextlib.contextmanager
def _device_memory_named(plan: JobPlan, stripe: Stripe):
    """A GPU out of memory fails the job in one line that says what to change. The plan's
    check (`texprod.job.memory`) lets through what it cannot see: other processes on the
    device, cuDNN's workspaces."""
    try:
        yield
    except RuntimeError as e:
        if not (plan.device.startswith("cuda") and out_of_device_memory(e)):
            raise
        raise JobFailure(
            f"render: {plan.device} ran out of memory on stripe {stripe.index} ({plan.tiling}, "
            f"{plan.spec.render.precision}): lower render.tile_px or render.batch, or free the "
            f"device; `texprod generate SPEC --dry-run` shows what the job needs (CUDA: "
            f"{(str(e).splitlines() or [''])[0]})") from None


def finishing_seconds(plan: JobPlan, pixels: np.ndarray, lut: ColourLUT | None,
                      device: torch.device) -> tuple[float, float]:
    """(on the render device, on the host): the seconds of what `work_stripe` does with
    rendered sRGB `pixels` (h, W, 3) before they leave it: the colour conversion, ink
    check and preview (on the render device with the LUT, else on the host), then the
    encoding. Timed for the dry run's estimate; spot plates are left out."""
    device_s = host_s = 0.0
    if lut is not None:
        rows = torch.from_numpy(pixels).to(device)  # (h, W, 3)
        _synchronize(device)
        started = time.perf_counter()
        out_on_device = lut.apply(rows)  # (h, W, bands)
        if plan.colour.color == "cmyk":
            ink_coverage(out_on_device)
        shrink_preview_tensor(rows, plan.preview_factor)
        _synchronize(device)
        device_s = time.perf_counter() - started
        out = out_on_device.cpu().numpy()
    else:
        started = time.perf_counter()
        out = _to_output(pixels, plan)  # (h, W, bands)
        if plan.colour.color == "cmyk":
            ink_check(out[:, :, :4], 0, math.inf)
        shrink_preview(pixels, plan.preview_factor)
        host_s = time.perf_counter() - started
    started = time.perf_counter()
    encode_band(out, plan.tiff)
    return device_s, host_s + time.perf_counter() - started


def _render_rows(plan: JobPlan, stripe: Stripe, field: NoiseField, renderer: Renderer,
                 on_tile: TileDone | None) -> np.ndarray:
    output = "uint8" if plan.render_bits == 8 else "uint16"
    rows = np.empty((stripe.h, plan.geometry.width_px, 3), np.dtype(output))
    for tile, pixels in renderer.tiles(field, stripe.tiles, batch=plan.batch, output=output):
        rows[tile.y: tile.y + tile.h, tile.x: tile.x + tile.w] = pixels
        if on_tile:
            on_tile()
        stop.check()
    return rows


def _render_on_device(plan: JobPlan, stripe: Stripe, field: NoiseField, renderer: Renderer,
                      on_tile: TileDone | None) -> torch.Tensor:
    """The stripe's sRGB rows left on the render device: (h, W, 3)."""
    def tile_done() -> None:
        if on_tile:
            on_tile()
        stop.check()

    output = "uint8" if plan.render_bits == 8 else "uint16"
    rows = renderer.rows(field, stripe.tiles, batch=plan.batch, output=output,
                         on_tile=tile_done)
    _synchronize(rows.device)  # so render_s is the device's time, not the queueing's
    return rows


def _with_plates(plan: JobPlan, stripe: Stripe, out: np.ndarray) -> np.ndarray:
    """The stripe's process inks with its spot plates: knocked out under opaque plates, and
    the plates appended as channels when the TIFF carries them."""
    plates = plan.plates.rows(stripe.y, stripe.h, out.dtype)  # (h, W, P)
    if any(p.knockout for p in plan.plates.plates):
        out = np.array(out)  # writable (a converted band may be a read-only buffer)
        knock_out(out, plates, [p.knockout for p in plan.plates.plates])
    if plan.plates_in_tiff:
        out = np.concatenate([out, plates], axis=2)
    return out


def _colour_on_device(plan: JobPlan, stripe: Stripe, rows: torch.Tensor, lut: ColourLUT,
                      measure_ink: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """(h, W, 3) sRGB on the device -> the print's pixels (h, W, bands), the preview
    (h/f, W/f, 3) and the highest total ink, all computed there."""
    out = lut.apply(rows)
    tac = None
    if plan.colour.color == "cmyk" and measure_ink:
        worst, row, col = ink_coverage(out)
        check_ink(worst, col, stripe.y + row, plan.spec.print.tac_limit)
        tac = worst
    preview = shrink_preview_tensor(rows, plan.preview_factor)
    _synchronize(rows.device)
    return out, preview, tac


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_copy_streams = threading.local()


def finished_here(device: torch.device) -> torch.cuda.Event | None:
    """An event marking all the work queued so far on `device`'s current stream (CUDA)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def to_host(tensor: torch.Tensor, ready: torch.cuda.Event | None = None) -> np.ndarray:
    """A device tensor as a numpy array. On CUDA it is copied into pinned memory on this
    thread's own stream, outside the render lock, so the copy overlaps the next stripe's
    rendering on the default stream. `ready` (`finished_here`, taken inside the lock)
    marks the tensor done; without it the copy waits for everything queued so far on the
    current stream, which on a shared device may include another stripe's render."""
    if tensor.device.type != "cuda":
        return tensor.numpy()
    stream = getattr(_copy_streams, "stream", None)
    if stream is None or stream.device != tensor.device:
        stream = _copy_streams.stream = torch.cuda.Stream(tensor.device)
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    if ready is None:
        ready = finished_here(tensor.device)
    stream.wait_event(ready)  # side streams do not wait for the default stream by themselves
    with torch.cuda.stream(stream):
        host.copy_(tensor, non_blocking=True)
        tensor.record_stream(stream)  # its memory is not reused before the copy ends
    stream.synchronize()
    return host.numpy()  # the array keeps the pinned tensor alive


def _to_output(pixels: np.ndarray, plan: JobPlan) -> np.ndarray:
    """(h, W, 3) sRGB render -> (h, W, bands) of the print (libvips ICC transform)."""
    if plan.colour.profile_path is None:  # sRGB out, rendered at the print's depth
        return pixels
    h, w, _ = pixels.shape
    fmt = "uchar" if pixels.dtype == np.uint8 else "ushort"
    image = pyvips.Image.new_from_memory(pixels.data, w, h, 3, fmt)
    image = to_output(image.copy(interpretation="srgb" if fmt == "uchar" else "rgb16"),
                      plan.colour)
    dtype = np.uint8 if plan.colour.bits == 8 else np.uint16
    return np.frombuffer(image.write_to_memory(), dtype=dtype).reshape(h, w, image.bands)


def ink_check(band: np.ndarray, y: int, limit: float) -> float:
    """The highest total ink (C+M+Y+K, %) of CMYK rows at canvas row y; raises at the
    first pixel over `limit`, naming it."""
    top = 255 if band.dtype == np.uint8 else 65535
    total = band.sum(axis=2, dtype=np.uint32)  # (h, W)
    worst = float(total.max()) * 100.0 / top
    row, col = np.unravel_index(int(total.argmax()), total.shape)
    check_ink(worst, int(col), y + int(row), limit)
    return worst


def check_ink(worst: float, x: int, y: int, limit: float) -> None:
    """Refuse a stripe whose highest total ink `worst` (%, first reached at canvas pixel
    (x, y)) is over the limit."""
    if worst > limit + 1e-9:
        raise TexprodError(
            f"print.tac_limit: total ink {worst:.1f}% at pixel ({x}, {y}) exceeds "
            f"the limit {limit:g}%; lower the texture's darkest tones, use a profile "
            "with a lower ink limit, or raise print.tac_limit if the press allows it")


def shrink_preview(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(h, W, 3) -> (h / f, W / f, 3) uint8 box average (partial blocks at the end drop)."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if factor == 1:
        return np.ascontiguousarray(pixels)
    h, w = pixels.shape[0] // factor, pixels.shape[1] // factor
    blocks = pixels[: h * factor, : w * factor].reshape(h, factor, w, factor, 3)
    area = factor * factor
    return ((blocks.sum(axis=(1, 3), dtype=np.uint32) + area // 2) // area).astype(np.uint8)



def shrink_preview_tensor(pixels: torch.Tensor, factor: int,
                          chunk_px: int = PREVIEW_CHUNK_PX) -> torch.Tensor:
    """`shrink_preview` where the pixels are, in the same integer arithmetic (so the same
    bytes): (h, W, 3) uint8/uint16 -> (h / f, W / f, 3) uint8. Blocks of rows at a time,
    so the int32 arithmetic holds about `chunk_px` pixels, not a stripe, beside it."""
    h, w = pixels.shape[0] // factor, pixels.shape[1] // factor
    pixels = pixels[: h * factor, : w * factor]  # (h f, w f, 3)
    step = factor * max(1, chunk_px // max(1, pixels.shape[1] * factor))
    parts = []
    for y in range(0, pixels.shape[0], step):
        x = pixels[y: y + step].to(torch.int32)  # (step, w f, 3)
        if pixels.dtype == torch.uint16:
            x = (x + 128) // 257
        if factor > 1:
            blocks = x.reshape(x.shape[0] // factor, factor, w, factor, 3)
            area = factor * factor
            x = (blocks.sum(dim=(1, 3)) + area // 2) // area
        parts.append(x.to(torch.uint8))
    if not parts:
        return pixels.new_zeros((h, w, 3), dtype=torch.uint8)
    return torch.cat(parts).contiguous()
