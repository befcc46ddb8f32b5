"""Invariants 2 and 4: tiles are exact, repeats are exact, the plane is infinite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import ARCHS, tiny_generator
from texprod.engine import Generator, GeneratorConfig
from texprod.engine.model import phase_layer, subpixel_layer
from texprod.engine.noise import NoiseField
from texprod.engine.render import UPSAMPLING, Renderer, render_canvas, render_reference
from texprod.engine.tiling import plan_tiles
from texprod.errors import ConfigError, RenderError


def _setup(name: str, seed: int = 7, period=None):
    gen = tiny_generator(name)
    field = NoiseField(gen.config, seed, waves=gen.waves, period=period)
    return gen, field, Renderer(gen, device="cpu", precision="fp32")


def _canvas(cell: int) -> tuple[int, int]:
    """A canvas whose sides are not multiples of the cell size (about 3.4 x 2.7 cells)."""
    return int(3.4 * cell) + 1, int(2.7 * cell) + 3


def _tile_sizes(cell: int) -> list[int]:
    # one cell; 3 cells (does not divide the canvas); rounded from a non-multiple; > canvas
    return [cell, 3 * cell, int(2.4 * cell), 10 * cell]


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_tiled_equals_one_pass(name):
    gen, field, renderer = _setup(name)
    cell = gen.config.cell_px
    width, height = _canvas(cell)
    for x0, y0 in [(0, 0), (-37, 13), (5 * cell + 3, -2 * cell - 1)]:
        reference = render_reference(gen, field, width, height, x0, y0, output="float32")
        reference_u8 = render_reference(gen, field, width, height, x0, y0, output="uint8")
        assert reference.shape == (height, width, 3)
        assert reference.std() > 0.05  # a texture, not a flat image
        for tile in _tile_sizes(cell):
            for batch in (1, 3):
                plan = plan_tiles(width, height, cell, renderer.rf.halo, tile, x0=x0, y0=y0)
                tiled = render_canvas(renderer, field, plan, batch=batch, output="float32")
                err = np.abs(tiled - reference).max()
                assert err <= 1e-4, f"tile {tile}, batch {batch}, origin {(x0, y0)}: {err}"
        tiled_u8 = render_canvas(renderer, field, plan, batch=2, output="uint8")
        assert np.abs(tiled_u8.astype(int) - reference_u8).max() <= 1


def test_every_canvas_pixel_is_written_exactly_once():
    for width, height, cell, tile, x0, y0 in [
        (101, 77, 8, 8, -3, 5), (101, 77, 8, 24, 0, 0), (64, 64, 16, 16, 0, 0),
        (33, 200, 16, 48, 17, -100), (5, 5, 32, 1024, 31, 31),
    ]:
        plan = plan_tiles(width, height, cell, 2, tile, x0=x0, y0=y0)
        hits = np.zeros((height, width), dtype=int)
        for t in plan.tiles:
            assert 0 <= t.src_y and t.src_y + t.h <= plan.tile_cells[0] * cell
            assert 0 <= t.src_x and t.src_x + t.w <= plan.tile_cells[1] * cell
            hits[t.y: t.y + t.h, t.x: t.x + t.w] += 1
            # the pixels a tile writes are the global pixels its interior covers
            assert t.cell_y * cell + t.src_y == y0 + t.y
            assert t.cell_x * cell + t.src_x == x0 + t.x
        assert (hits == 1).all()


def test_uint16_output_and_quantisation_follow_the_float_render():
    gen, field, renderer = _setup("psgan-nearest-d4-k3")
    plan = plan_tiles(70, 50, 16, renderer.rf.halo, 32)
    f = render_canvas(renderer, field, plan, output="float32")
    u16 = render_canvas(renderer, field, plan, output="uint16")
    u8 = render_canvas(renderer, field, plan, output="uint8")
    assert u16.dtype == np.uint16 and u8.dtype == np.uint8
    assert np.abs(u16 / 65535.0 - (f + 1) / 2).max() <= 0.5 / 65535 + 1e-5
    assert np.abs(u8 / 255.0 - (f + 1) / 2).max() <= 0.5 / 255 + 1e-5


def test_window_at_an_origin_equals_the_same_pixels_of_a_larger_render():
    gen, field, renderer = _setup("psgan-affine-tconv-d5-k7")
    big = render_canvas(renderer, field, plan_tiles(200, 150, 32, renderer.rf.halo, 64,
                                                    x0=-64, y0=-40), output="float32")
    for x0, y0, w, h in [(-64, -40, 10, 10), (-1, 3, 77, 51), (17, 29, 100, 60)]:
        plan = plan_tiles(w, h, 32, renderer.rf.halo, 32, x0=x0, y0=y0)
        small = render_canvas(renderer, field, plan, output="float32")
        expected = big[y0 + 40: y0 + 40 + h, x0 + 64: x0 + 64 + w]
        assert np.abs(small - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["psgan-nearest-d4-k3", "psgan-affine-tconv-d5-k7",
                                  "sgan-tconv-d3-k5"])
@pytest.mark.parametrize("period", [(4, 6), (3, 5)])  # even and odd numbers of cells
def test_repeat_is_exactly_periodic(name, period):
    gen, field, renderer = _setup(name, period=period)
    cell = gen.config.cell_px
    height, width = period[0] * cell, period[1] * cell
    image = render_canvas(renderer, field, plan_tiles(width, height, cell, renderer.rf.halo, 2 * cell),
                          output="uint8").astype(int)
    half = render_canvas(renderer, field, plan_tiles(width, height, cell, renderer.rf.halo,
                                                     2 * cell, x0=width // 2, y0=height // 2),
                         output="uint8").astype(int)
    rolled = np.roll(image, (-(height // 2), -(width // 2)), axis=(0, 1))
    assert np.abs(half - rolled).max() <= 1
    # seam check: the step from the last column to column 0 is like any interior step
    wrap_step = np.abs(image[:, 0] - image[:, -1]).mean()
    interior_step = np.abs(np.diff(image, axis=1)).mean()
    assert wrap_step < 2 * interior_step
    # and a non-repeating field does not wrap
    gen_field = NoiseField(gen.config, 7, waves=gen.waves)
    free = render_canvas(renderer, gen_field, plan_tiles(2 * width, height, cell, renderer.rf.halo,
                                                         2 * cell), output="uint8").astype(int)
    assert np.abs(free[:, :width] - free[:, width:]).mean() > 5


@pytest.mark.parametrize(("upsample", "kernel"), [("tconv", k) for k in range(2, 8)]
                         + [("nearest", k) for k in (3, 5, 7)])
def test_subpixel_layers_compute_the_same_function(upsample, kernel):
    """Each upsampling layer as one convolution + pixel shuffle: the same numbers, in
    float64 (only the order of the sums differs), at every output phase and edge."""
    torch.manual_seed(kernel)
    config = GeneratorConfig(nz_local=5, nz_global=0, nz_periodic=0, upsample=upsample,
                             kernel=kernel, filters=(6,), out_channels=3)
    block = Generator(config).double().eval().blocks[0]
    layers = list(block)[:2] if upsample == "nearest" else [block[0]]
    original = torch.nn.Sequential(*layers)
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = original(x)
    assert expected.shape == (2, 6, 14, 18)
    for make in (subpixel_layer, phase_layer):
        form = make(layers[-1], after_upsample=upsample == "nearest")
        with torch.no_grad():
            got = form(x)
            channels_last = form(x.contiguous(memory_format=torch.channels_last))
        assert got.shape == expected.shape
        assert torch.abs(got - expected).max() < 1e-12
        # the GPU's memory layout: the same numbers, and the output keeps the layout
        assert torch.abs(channels_last - expected).max() < 1e-12
        assert channels_last.is_contiguous(memory_format=torch.channels_last)


def test_the_channels_last_pixel_shuffle_moves_the_same_numbers():
    """On the GPU the sub-pixel layers shuffle channels-last maps themselves (CUDA's
    pixel_shuffle returns a contiguous tensor): the same values at the same places, and
    the layout kept for the next convolution."""
    from texprod.engine.model import pixel_shuffle_channels_last

    for shape in [(2, 12, 5, 7), (1, 4, 1, 1), (3, 256, 9, 4)]:
        y = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        shuffled = pixel_shuffle_channels_last(y)
        assert torch.equal(shuffled, torch.nn.functional.pixel_shuffle(y.contiguous(), 2))
        assert shuffled.is_contiguous(memory_format=torch.channels_last)


def test_the_phase_form_computes_only_the_layers_own_taps():
    """A 5x5 transposed conv's phases read 3x3, 3x2, 2x3 and 2x2 inputs: 25 taps, where
    the sub-pixel form's one 3x3 window computes 36."""
    layer = torch.nn.ConvTranspose2d(4, 6, 5, 2, 2, output_padding=1)
    phases = phase_layer(layer, after_upsample=False)
    assert [tuple(c.kernel_size) for c in phases.convs] == [(3, 3), (3, 2), (2, 3), (2, 2)]
    assert sum(c.weight[0, 0].numel() for c in phases.convs) == 25
    assert subpixel_layer(layer, after_upsample=False).conv.weight[0, 0].numel() * 4 == 36


def test_native_layers_are_exact_too():
    """The layers as trained (upsampling="native", what the GPU check compares against)
    and the phase-split form keep the tiling invariant as well."""
    gen, field, fast = _setup("psgan-affine-tconv-d5-k7")
    native = Renderer(gen, "cpu", "fp32", upsampling="native")
    phases = Renderer(gen, "cpu", "fp32", upsampling="phases")
    mixed = Renderer(gen, "cpu", "fp32",  # a form per layer, as the GPU check may choose
                     upsampling=("phases", "subpixel", "native", "phases", "subpixel"))
    assert [type(b[0]).__name__ for b in mixed.model.blocks] == [
        "PhaseUpsampling", "SubpixelUpsampling", "ConvTranspose2d", "PhaseUpsampling",
        "SubpixelUpsampling"]
    with pytest.raises(RenderError, match="upsampling: got 2 forms, the generator has 5"):
        Renderer(gen, "cpu", upsampling=("phases", "native"))
    with pytest.raises(RenderError, match="upsampling: got 'fast'"):
        Renderer(gen, "cpu", upsampling=("fast",) * 5)
    plan = plan_tiles(150, 90, gen.config.cell_px, native.rf.halo, 64, x0=-9, y0=5)
    reference = render_reference(gen, field, 150, 90, -9, 5, output="float32")
    for renderer in (native, fast, phases, mixed):
        image = render_canvas(renderer, field, plan, batch=2, output="float32")
        assert np.abs(image - reference).max() <= 1e-4
    assert not isinstance(fast.model.blocks[0][0], torch.nn.ConvTranspose2d)
    assert isinstance(native.model.blocks[0][0], torch.nn.ConvTranspose2d)


def test_reduced_precisions_run_and_stay_close():
    gen, field, _ = _setup("psgan-nearest-d4-k3")
    plan = plan_tiles(64, 48, 16, 1, 32)
    reference = render_canvas(Renderer(gen, "cpu", "fp32"), field, plan, output="float32")
    for precision, tolerance in (("bf16", 0.1), ("fp16", 0.02)):
        image = render_canvas(Renderer(gen, "cpu", precision), field, plan, output="float32")
        assert np.abs(image - reference).mean() < tolerance / 4
        assert np.abs(image - reference).max() < tolerance * 4


def test_bad_render_options_are_rejected():
    gen, field, renderer = _setup("sgan-tconv-d3-k5")
    with pytest.raises(RenderError, match="precision: got 'fp8'"):
        Renderer(gen, "cpu", "fp8")
    with pytest.raises(RenderError, match="device: got 'tpu'"):
        Renderer(gen, "tpu")
    with pytest.raises(RenderError, match="upsampling: got 'bicubic'"):
        Renderer(gen, "cpu", upsampling="bicubic")
    if not torch.cuda.is_available():
        with pytest.raises(RenderError, match="no CUDA device"):
            Renderer(gen, "cuda")
    plan = plan_tiles(16, 16, 8, renderer.rf.halo, 8)
    with pytest.raises(RenderError, match="batch: got 0"):
        list(renderer.tiles(field, plan, batch=0))
    with pytest.raises(RenderError, match="plan: got cell 16"):
        list(renderer.tiles(field, plan_tiles(16, 16, 16, 2, 8)))
    with pytest.raises(ConfigError, match="width: got 0"):
        plan_tiles(0, 16, 8, 2, 8)
    with pytest.raises(ConfigError, match="tile: got -8"):
        plan_tiles(16, 16, 8, 2, -8)


def test_rows_on_the_device_equal_the_tiles():
    """`Renderer.rows` (the canvas left on the device for device colour) holds exactly the
    pixels `tiles` yields, for tiled and one-pass plans and an origin mid-cell."""
    gen, field, renderer = _setup("psgan-tconv-d4-k4")
    cell = gen.config.cell_px
    width, height = _canvas(cell)
    for tile_px in (0, cell, 3 * cell):
        plan = renderer.plan(width, height, tile_px, x0=-5, y0=9)
        for output in ("uint8", "uint16"):
            rows = renderer.rows(field, plan, batch=2, output=output)
            assert rows.shape == (height, width, 3) and rows.device.type == "cpu"
            expected = render_canvas(renderer, field, plan, batch=2, output=output)
            assert np.array_equal(rows.numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_cuda_tiles_equal_the_cpu_reference(name):
    gen, field, _ = _setup(name)
    cell = gen.config.cell_px
    width, height = _canvas(cell)
    reference = render_reference(gen, field, width, height, -5, 9, output="float32")
    for upsampling in UPSAMPLING:  # each form of the layers, channels_last on the GPU
        renderer = Renderer(gen, "cuda", "fp32", upsampling=upsampling)  # no TF32 convs
        for tile in _tile_sizes(cell):
            plan = plan_tiles(width, height, cell, renderer.rf.halo, tile, x0=-5, y0=9)
            tiled = render_canvas(renderer, field, plan, batch=4, output="float32")
            assert np.abs(tiled - reference).max() <= 1e-4, (upsampling, tile)


@pytest.mark.parametrize("period", [None, (4, 6)])
def test_tiles_are_exact_with_a_quilt_field(period):
    from texprod.engine.noise import QuiltField

    gen = tiny_generator("psgan-nearest-d4-k3")  # 16 px cells, 4 global channels
    blocks = None if period is None else (period[0] // 2, period[1] // 2)
    quilt = QuiltField(gen.config.nz_global, 9, block=2, transition=2, period_blocks=blocks)
    field = NoiseField(gen.config, 7, waves=gen.waves, period=period, global_field=quilt)
    renderer = Renderer(gen, "cpu")
    width, height = (96, 64) if period else (150, 101)
    reference = render_reference(gen, field, width, height, x0=-7, y0=5, output="float32")
    for tile in (16, 48):  # tiles of 1 and 3 cells cut through the transitions
        plan = plan_tiles(width, height, 16, renderer.rf.halo, tile, x0=-7, y0=5)
        tiled = render_canvas(renderer, field, plan, batch=2, output="float32")
        assert np.abs(tiled - reference).max() <= 1e-4
    if period:  # the quilt wraps with the print's period too
        image = render_canvas(renderer, field, plan_tiles(96, 64, 16, renderer.rf.halo, 32),
                              output="uint8").astype(int)
        half = render_canvas(renderer, field, plan_tiles(96, 64, 16, renderer.rf.halo, 32,
                                                         x0=48, y0=32), output="uint8")
        assert np.abs(np.roll(image, (-32, -48), axis=(0, 1)) - half).max() <= 1
