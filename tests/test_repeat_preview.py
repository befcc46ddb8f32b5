"""The repeat preview: one period of a seamless repeat tiled 2 x 2, soft-proofed, ticked."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from texprod.job.spec import PrintSpec
from texprod.press.colour import parse_icc, resolve_colour
from texprod.press.proof import TRIM_LINE, make_repeat_preview

BORDER = 23  # the period starts off the canvas origin, inside a border of other values


def colour(color: str = "rgb"):
    return resolve_colour(PrintSpec(width_px=10, height_px=10, color=color))


def periodic_canvas(period: np.ndarray, dtype=np.uint8) -> tuple[pyvips.Image, tuple]:
    """The period tiled 3 x 3 inside a flat border; the box of the middle period."""
    h, w = period.shape[:2]
    canvas = np.full((3 * h + 2 * BORDER, 3 * w + 2 * BORDER, 3), 40, dtype)
    canvas[BORDER:BORDER + 3 * h, BORDER:BORDER + 3 * w] = np.tile(period, (3, 3, 1))
    interpretation = "srgb" if dtype == np.uint8 else "rgb16"
    return (pyvips.Image.new_from_array(canvas, interpretation=interpretation),
            (BORDER + w, BORDER + h, w, h))


def waves(h: int, w: int, seed: int = 0, cycles: int = 6) -> np.ndarray:
    """A random sum of plane waves, exactly periodic in (h, w) and smooth enough that JPEG
    keeps it (pixel noise would need a tolerance that hides real errors)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    out = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(8):
            m, n = rng.integers(-cycles, cycles + 1, 2)
            out[..., c] += rng.uniform(0.5, 1) * np.cos(2 * np.pi * (m * x + n * y)
                                                          + rng.uniform(0, 2 * np.pi))
    out = (out - out.min()) / np.ptp(out)
    return np.round(20 + 215 * out).astype(np.uint8)


def mad(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return float(diff.mean() if where is None else diff[where].mean())


def read(path) -> tuple[pyvips.Image, np.ndarray]:
    image = pyvips.Image.new_from_file(str(path))
    return image, image.numpy()


def assert_repeats(pixels: np.ndarray, edge: int = 6):
    """Left half = right half, top half = bottom half (JPEG tolerance). The outer `edge` px
    are left out: the ticks are there, and the seam pixels there are also in the middle."""
    h, w = pixels.shape[:2]
    inside = np.zeros((h, w), bool)
    inside[edge:h - edge, edge:w - edge] = True
    left, right = np.s_[:, :w // 2], np.s_[:, w - w // 2:]
    assert mad(pixels[left], pixels[right], inside[left] & inside[right]) < 3
    top, bottom = np.s_[:h // 2], np.s_[h - h // 2:]
    assert mad(pixels[top], pixels[bottom], inside[top] & inside[bottom]) < 3


def assert_ticks(pixels: np.ndarray):
    """Magenta at the midpoints of the four edges, none at the middle of the image."""
    h, w = pixels.shape[:2]
    for row, col in ((1, w // 2), (h - 2, w // 2), (h // 2, 1), (h // 2, w - 2)):
        assert mad(pixels[row, col], np.array(TRIM_LINE)) < 60, (row, col, pixels[row, col])
    assert mad(pixels[h // 2, w // 2], np.array(TRIM_LINE)) > 60


def test_small_period_is_tiled_2_x_2_at_full_size(tmp_path):
    period = waves(64, 96)
    render, box = periodic_canvas(period)
    out = tmp_path / "repeat.jpg"
    assert make_repeat_preview(render, box, colour(), out) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repeat.jpg"]  # no temporary left
    image, pixels = read(out)
    assert (image.width, image.height, image.bands) == (192, 128, 3)
    assert image.interpretation == "srgb"
    icc = parse_icc(image.get("icc-profile-data"))
    assert icc["colour_space"].strip() == "RGB" and icc["device_class"] == "mntr"
    assert_repeats(pixels)
    assert_ticks(pixels)
    # each quadrant is the period itself; a crop off by a few px is not (so this can fail)
    tiled = np.tile(period, (2, 2, 1))
    assert mad(pixels[8:-8, 8:-8], tiled[8:-8, 8:-8]) < 3
    shifted = np.tile(np.roll(period, (16, 24), axis=(0, 1)), (2, 2, 1))
    assert mad(pixels[8:-8, 8:-8], shifted[8:-8, 8:-8]) > 30
    # the halves metric does tell apart a crop that is not a period (72 px, not 96)
    x, y = box[:2]
    raw = render.numpy()
    assert mad(raw[y:y + 64, x:x + 72], raw[y:y + 64, x + 72:x + 144]) > 30


@pytest.mark.parametrize("max_px", [100, 90])  # box shrink only; box shrink then lanczos
def test_large_period_is_shrunk_to_max_px(tmp_path, max_px):
    period = waves(300, 400, seed=1, cycles=3)
    render, box = periodic_canvas(period)
    out = tmp_path / "repeat.jpg"
    make_repeat_preview(render, box, colour(), out, max_px=max_px)
    image, pixels = read(out)
    assert max(image.width, image.height) <= max_px
    assert image.width >= max_px - 1 and abs(image.height / image.width - 0.75) < 0.03
    assert_repeats(pixels)
    assert_ticks(pixels)
    size = (image.width, image.height)
    want = pyvips.Image.new_from_array(np.tile(period, (2, 2, 1)), interpretation="srgb")
    want = want.thumbnail_image(size[0], height=size[1], size="force").numpy()
    wrong = pyvips.Image.new_from_array(np.tile(np.roll(period, (150, 200), axis=(0, 1)),
                                                (2, 2, 1)), interpretation="srgb")
    wrong = wrong.thumbnail_image(size[0], height=size[1], size="force").numpy()
    inner = np.s_[6:-6, 6:-6]
    assert mad(pixels[inner], want[inner]) < 8
    assert mad(pixels[inner], wrong[inner]) > 30


def test_cmyk_output_colour_gives_an_srgb_soft_proof(tmp_path):
    cmyk = colour("cmyk")
    assert cmyk.bands == 4 and cmyk.profile_path is not None
    period = waves(64, 96, seed=3)
    render, box = periodic_canvas(period)
    out = tmp_path / "repeat.jpg"
    make_repeat_preview(render, box, cmyk, out)
    image, pixels = read(out)
    assert (image.width, image.height, image.bands) == (192, 128, 3)
    assert image.interpretation == "srgb"
    assert parse_icc(image.get("icc-profile-data"))["colour_space"].strip() == "RGB"
    assert_repeats(pixels)
    assert_ticks(pixels)
    # soft-proofed: close to the period, but not identical (the press gamut is smaller)
    assert mad(pixels[8:-8, 8:-8], np.tile(period, (2, 2, 1))[8:-8, 8:-8]) < 40


def test_16_bit_render(tmp_path):
    period = waves(64, 96, seed=5).astype(np.uint16) * 257
    render, box = periodic_canvas(period, np.uint16)
    out = tmp_path / "repeat.jpg"
    make_repeat_preview(render, box, colour(), out)
    image, pixels = read(out)
    assert (image.width, image.height, image.format) == (192, 128, "uchar")
    assert mad(pixels[8:-8, 8:-8], np.tile(period // 257, (2, 2, 1))[8:-8, 8:-8]) < 3


def test_period_box_outside_the_render_is_refused(tmp_path):
    render, (x, y, w, h) = periodic_canvas(waves(64, 96))
    with pytest.raises(ValueError, match="not inside"):
        make_repeat_preview(render, (x, y, w * 3, h), colour(), tmp_path / "repeat.jpg")
    assert list(tmp_path.iterdir()) == []
