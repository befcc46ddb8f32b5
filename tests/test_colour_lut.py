"""The 3D-LUT colour conversion (texprod.press.colour_lut) against its reference, libvips'
ICC transform (`to_output`): dense sRGB grids, rendered textures, intents and BPC, at 8
and 16 bits, for the default FOGRA39 profile and a user profile; the GPU-side ink check
against `ink_check`; the cache; and the same on CUDA where there is one.

Imports numpy, torch, pyvips, pytest and texprod/tests only: it also runs on GPU machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from tests.conftest import tiny_generator
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer, render_canvas
from texprod.job.stripes import ink_check, shrink_preview, shrink_preview_tensor
from texprod.press.colour import DEFAULT_CMYK_PROFILE, ICC_DIR, OutputColour, to_output
from texprod.press.colour_lut import CHUNK_PX, ColourLUT, colour_lut, ink_coverage

TOLERANCE = 2  # per channel, in 1/255 (x 257 for 16-bit output)
MEAN_TOLERANCE = 0.5  # mean abs error, in 1/255
FOGRA39 = Path(str(ICC_DIR / DEFAULT_CMYK_PROFILE))


@pytest.fixture(scope="module")
def user_profile(tmp_path_factory) -> Path:
    """libvips' built-in CMYK profile ("Chemical proof") as a user's file."""
    rgb = pyvips.Image.new_from_array(np.zeros((2, 2, 3), np.uint8)).copy(interpretation="srgb")
    path = tmp_path_factory.mktemp("icc") / "user-cmyk.icc"
    path.write_bytes(rgb.icc_transform("cmyk", input_profile="srgb").get("icc-profile-data"))
    return path


@pytest.fixture(params=["fogra39", "user"])
def profile(request, user_profile) -> Path:
    return FOGRA39 if request.param == "fogra39" else user_profile


def cmyk(path: Path, bits: int = 8, intent: str = "relative", bpc: bool = True) -> OutputColour:
    return OutputColour("cmyk", path.read_bytes(), path, path.name, intent, bpc, bits)


def libvips(pixels: np.ndarray, colour: OutputColour) -> np.ndarray:
    """(..., 3) uint8/uint16 sRGB -> (..., bands) through `to_output`, the job's CPU path."""
    flat = np.ascontiguousarray(pixels.reshape(-1, 3))
    fmt, kind = ("uchar", "srgb") if flat.dtype == np.uint8 else ("ushort", "rgb16")
    image = pyvips.Image.new_from_memory(flat.data, flat.shape[0], 1, 3, fmt)
    out = to_output(image.copy(interpretation=kind), colour)
    dtype = np.uint8 if colour.bits == 8 else np.uint16
    return np.frombuffer(out.write_to_memory(), dtype).reshape(*pixels.shape[:-1], -1)


def lut(pixels: np.ndarray, colour: OutputColour) -> np.ndarray:
    return colour_lut(colour).apply(torch.from_numpy(pixels)).numpy()


def error(a: np.ndarray, b: np.ndarray, bits: int) -> tuple[float, float]:
    """(max, mean) absolute difference in 1/255."""
    assert a.shape == b.shape and a.dtype == b.dtype
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64)) / (1 if bits == 8 else 257)
    return float(diff.max()), float(diff.mean())


def srgb_grid(bits: int) -> np.ndarray:
    """(N, 3): the cube in steps of 5 (8-bit) plus its corners and the whole grey axis;
    16-bit: the same levels x 257 plus a random offset, so most are not on 8-bit levels."""
    levels = np.append(np.arange(0, 256, 5), 255)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])
    grey = np.repeat(np.arange(256)[:, None], 3, axis=1)
    pixels = np.concatenate([cube, corners, grey])
    if bits == 8:
        return pixels.astype(np.uint8)
    jitter = np.random.default_rng(7).integers(-128, 129, pixels.shape)
    jitter[-(len(corners) + len(grey)):] = 0  # keep the exact corners and greys
    return np.clip(pixels * 257 + jitter, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("in_bits,out_bits", [(8, 8), (16, 16), (16, 8), (8, 16)])
def test_dense_grid_matches_libvips(profile, in_bits, out_bits):
    colour = cmyk(profile, out_bits)
    pixels = srgb_grid(in_bits)
    worst, mean = error(lut(pixels, colour), libvips(pixels, colour), out_bits)
    print(f"{profile.name} {in_bits}->{out_bits} bit, {len(pixels)} px: "
          f"max {worst:.3f}/255, mean {mean:.4f}/255")
    assert worst <= TOLERANCE
    assert mean < MEAN_TOLERANCE


@pytest.mark.parametrize("name,bits", [("psgan-tconv-d4-k4", 8), ("sgan-tconv-d3-k5", 16),
                                       ("psgan-const-waves-nearest-d6-k5", 8)])
def test_rendered_texture_matches_libvips(profile, name, bits):
    gen = tiny_generator(name)
    field = NoiseField(gen.config, 11, waves=gen.waves)
    output = "uint8" if bits == 8 else "uint16"
    renderer = Renderer(gen, device="cpu")
    pixels = render_canvas(renderer, field, renderer.plan(160, 96, 64), output=output)  # tiled
    assert pixels.std() > 20 * (1 if bits == 8 else 257)  # a texture, not a flat colour
    colour = cmyk(profile, bits)
    got = lut(pixels, colour)
    assert got.shape == (96, 160, 4)
    worst, mean = error(got, libvips(pixels, colour), bits)
    print(f"{profile.name} {name} {bits}-bit: max {worst:.3f}/255, mean {mean:.4f}/255")
    assert worst <= TOLERANCE
    assert mean < MEAN_TOLERANCE


@pytest.mark.parametrize("a,b", [(("perceptual", True), ("relative", True)),
                                 (("relative", True), ("relative", False))])
def test_intent_and_bpc_are_honoured(a, b):
    pixels = srgb_grid(8)
    one, other = cmyk(FOGRA39, 8, *a), cmyk(FOGRA39, 8, *b)
    ref_one, ref_other = libvips(pixels, one), libvips(pixels, other)
    apart, _ = error(ref_one, ref_other, 8)
    assert apart > 5, f"libvips gives nearly the same output for {a} and {b}: pick others"
    for colour, own, foreign in ((one, ref_one, ref_other), (other, ref_other, ref_one)):
        got = lut(pixels, colour)
        assert error(got, own, 8)[0] <= TOLERANCE
        assert error(got, foreign, 8)[0] > 5
    print(f"{a} vs {b}: libvips outputs differ by up to {apart:.0f}/255")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tac_equals_ink_check(dtype):
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(3)
    band = rng.integers(0, top // 2, (37, 53, 4), dtype=dtype)
    band[5, 7] = band[20, 3] = band[30, 50] = [top, top, top // 3, top // 2]  # tied maxima
    total = band.sum(axis=2, dtype=np.uint32)
    row, col = np.unravel_index(int(total.argmax()), total.shape)
    assert (row, col) == (5, 7)
    percent, y, x = ink_coverage(torch.from_numpy(band))
    assert percent == ink_check(band, 0, 1000)  # exactly, not approximately
    assert (y, x) == (row, col)
    # a CMYK band as the job makes it
    rendered = lut(srgb_grid(8 if dtype == np.uint8 else 16)[:61 * 2000].reshape(-1, 61, 3),
                   cmyk(FOGRA39, 8 if dtype == np.uint8 else 16))
    total = rendered.sum(axis=2, dtype=np.uint32)
    percent, y, x = ink_coverage(torch.from_numpy(rendered))
    assert percent == ink_check(rendered, 0, 1000)
    assert (y, x) == np.unravel_index(int(total.argmax()), total.shape)


def test_tac_in_row_blocks_keeps_the_first_maximum(monkeypatch):
    """Blocks of rows (a stripe of hundreds of megapixels) pick the same pixel as one pass."""
    monkeypatch.setitem(CHUNK_PX, "cpu", 100)  # 3 rows of 33 per block
    band = np.zeros((20, 33, 4), np.uint8)
    band[[4, 9, 17], [30, 2, 0]] = 200
    assert ink_coverage(torch.from_numpy(band)) == (4 * 200 * 100 / 255, 4, 30)
    assert ink_coverage(torch.zeros((3, 5, 4), dtype=torch.uint8)) == (0.0, 0, 0)
    assert ink_coverage(torch.zeros((0, 5, 4), dtype=torch.uint16)) == (0.0, 0, 0)


def test_apply_in_chunks_equals_one_pass(monkeypatch):
    colour = cmyk(FOGRA39)
    pixels = srgb_grid(8)[:5000].reshape(50, 100, 3)
    whole = lut(pixels, colour)
    monkeypatch.setitem(CHUNK_PX, "cpu", 999)
    assert np.array_equal(lut(pixels, colour), whole)


def test_cache_and_refusals(user_profile):
    first = colour_lut(cmyk(FOGRA39))
    assert isinstance(first, ColourLUT)
    assert first.nodes.shape == (65, 65, 65, 4) and first.nodes.dtype == torch.float32
    assert colour_lut(cmyk(FOGRA39)) is first
    assert colour_lut(cmyk(FOGRA39, intent="perceptual")) is not first
    assert colour_lut(cmyk(FOGRA39, bpc=False)) is not first
    assert colour_lut(cmyk(FOGRA39, bits=16)) is not first
    assert colour_lut(cmyk(user_profile)) is not first
    assert colour_lut(cmyk(FOGRA39), grid=17).grid == 17
    assert first.table(torch.device("cpu")) is first.table(torch.device("cpu"))

    srgb = OutputColour("rgb", b"", None, "sRGB", "relative", True, 8)
    with pytest.raises(ValueError, match="keeps sRGB"):
        colour_lut(srgb)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\) uint8 or uint16"):
        first.apply(torch.zeros((4, 3), dtype=torch.float32))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bits", [8, 16])
def test_cuda_equals_cpu(bits):
    table = colour_lut(cmyk(FOGRA39, bits))
    rng = np.random.default_rng(5)
    dtype = torch.uint8 if bits == 8 else torch.uint16
    top = 255 if bits == 8 else 65535
    pixels = torch.from_numpy(rng.integers(0, top + 1, (300, 517, 3)).astype(np.int32)).to(dtype)
    on_cpu = table.apply(pixels)
    on_gpu = table.apply(pixels.to("cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == dtype
    diff = (on_gpu.cpu().to(torch.int32) - on_cpu.to(torch.int32)).abs().max()
    assert int(diff) <= 1
    assert ink_coverage(on_gpu) == ink_coverage(on_gpu.cpu())
    assert ink_coverage(on_gpu)[0] == ink_check(on_gpu.cpu().numpy(), 0, 1000)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_the_preview_shrinks_to_the_same_bytes_where_the_pixels_are(dtype, top):
    """The stripe preview made on the render device (the LUT path) equals the CPU one,
    byte for byte, partial blocks at the edges dropped alike."""
    rows = np.random.default_rng(3).integers(0, top + 1, (70, 131, 3)).astype(dtype)
    for factor in (1, 2, 8):
        cpu = shrink_preview(rows, factor)
        for chunk_px in (1, 1000, 2**22):  # a block of rows at a time, or all at once
            device = shrink_preview_tensor(torch.from_numpy(rows), factor, chunk_px).numpy()
            assert device.dtype == np.uint8 and np.array_equal(device, cpu)
