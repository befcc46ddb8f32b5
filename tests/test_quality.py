"""The texture-fidelity measure: random-CNN statistics ranked on structured test textures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from texprod.cli import main
from texprod.engine import GeneratorConfig, random_generator
from texprod.errors import TexprodError
from texprod.models import save_generator
from texprod.training.quality import (
    GOAL_RATIO,
    ROW_HISTOGRAM,
    ROW_MODEL,
    ROW_SELF,
    ROW_UNIFORM,
    FidelityRow,
    fidelity_table,
    format_table,
    load_exemplar,
    model_fidelity,
    random_crops,
    render_samples,
    texture_distance,
    texture_stats,
    verdict,
)

ROWS = [ROW_SELF, ROW_MODEL, ROW_UNIFORM, ROW_HISTOGRAM]
CROP, N = 96, 12  # smaller than the defaults (128, 16) to keep the tests fast
FOGRA39 = Path(__file__).parents[1] / "texprod" / "data" / "icc" / "FOGRA39-texprod.icc"


# ------------------------------------------------------------------ test textures


def bricks(h: int, w: int, seed: int) -> np.ndarray:
    """Running-bond brick wall: red bricks with per-brick colour jitter, light mortar."""
    rng = np.random.default_rng(seed)
    brick_h, brick_w, mortar = 24, 56, 4
    y, x = np.mgrid[0:h, 0:w]
    row = y // brick_h
    xs = x + (row % 2) * (brick_w // 2)
    col = xs // brick_w
    in_mortar = ((y % brick_h) < mortar) | ((xs % brick_w) < mortar)
    jitter = rng.normal(0, 0.06, size=(h // brick_h + 2, w // brick_w + 3, 3))
    image = np.where(in_mortar[..., None], np.array([0.78, 0.75, 0.70]),
                     np.array([0.62, 0.27, 0.18]) + jitter[row, col])
    image = image + rng.normal(0, 0.04, size=image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def blobs(h: int, w: int, seed: int, sigma: float = 7.0) -> np.ndarray:
    """Soft green / brown blobs: low-pass filtered noise through a sigmoid, plus grain."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    lowpass = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    field = np.fft.ifft2(np.fft.fft2(rng.normal(size=(h, w))) * lowpass).real
    t = 1 / (1 + np.exp(-4 * field / field.std()))[..., None]
    image = t * np.array([0.20, 0.45, 0.15]) + (1 - t) * np.array([0.50, 0.33, 0.16])
    image = image + rng.normal(0, 0.03, size=image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


TEXTURES = {"bricks": bricks, "blobs": blobs}


def ratio(generated, exemplar, **kwargs) -> float:
    rows = fidelity_table(generated, exemplar, crop=CROP, n=kwargs.pop("n", N), **kwargs)
    return rows[1].ratio


def save(array: np.ndarray, path: Path, **options) -> Path:
    interpretation = "b-w" if array.ndim == 2 or array.shape[2] < 3 else "srgb"
    if array.dtype == np.uint16:
        interpretation = "grey16" if interpretation == "b-w" else "rgb16"
    pyvips.Image.new_from_array(array, interpretation=interpretation).write_to_file(
        str(path), **options)
    return path


# ------------------------------------------------------------------ statistics


def test_texture_stats_shapes_determinism_and_gradients():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 96, requires_grad=True)
    grams = texture_stats(images)
    assert [tuple(g.shape) for g in grams] == [(2, 3, 3), (2, 64, 64), (2, 128, 128),
                                              (2, 256, 256), (2, 256, 256), (2, 256, 256)]
    for g in grams:
        assert torch.allclose(g, g.transpose(1, 2), atol=1e-5)
    again = texture_stats(images.detach())
    assert all(torch.equal(a.detach(), b) for a, b in zip(grams, again, strict=True))
    sum(g.sum() for g in grams).backward()  # usable as a loss
    assert images.grad is not None and images.grad.abs().sum() > 0
    grey = images.detach()[:, :1]
    assert all(torch.allclose(a, b) for a, b in zip(
        texture_stats(grey), texture_stats(grey.expand(-1, 3, -1, -1)), strict=True))
    with pytest.raises(TexprodError, match="at least 80x80 px"):
        texture_stats(torch.rand(1, 3, 64, 64))
    with pytest.raises(TexprodError, match=r"expected a \(N, 3, H, W\)"):
        texture_stats(torch.rand(3, 96, 96))


def test_feature_network_is_pinned():
    """The random weights come from a seeded CPU generator: if a PyTorch upgrade ever drew
    different numbers, every score would silently change."""
    from texprod.training.quality import _weights

    weights, _ = _weights()
    assert [tuple(w.shape) for w in weights] == [(64, 3, 3, 3), (128, 64, 3, 3),
                                                 (256, 128, 3, 3), (256, 256, 3, 3),
                                                 (256, 256, 3, 3)]
    assert weights[0].flatten()[:4].tolist() == pytest.approx(
        [0.283769, -0.168339, -0.457492, -0.022555], abs=1e-6)
    assert float(weights[1].sum()) == pytest.approx(-29.6147, abs=1e-3)
    # He-normal: std sqrt(2 / fan_in)
    assert float(weights[2].std()) == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.02)


def test_random_crops():
    image = bricks(200, 300, 0)
    crops = random_crops(image, 96, 5, seed=1)
    assert crops.shape == (5, 3, 96, 96) and crops.dtype == torch.float32
    assert 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0
    assert torch.equal(crops, random_crops(image, 96, 5, seed=1))
    assert not torch.equal(crops, random_crops(image, 96, 5, seed=2))
    # float input in [0, 1] gives the same crops as uint8
    assert torch.allclose(crops, random_crops(image / 255.0, 96, 5, seed=1), atol=1e-6)
    # a stack of images is cropped in turn: crop i from image i mod K
    stack = np.stack([np.full((120, 120, 3), k * 50, np.uint8) for k in range(3)])
    means = random_crops(stack, 100, 6, seed=0).mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([0, 50, 100, 0, 50, 100]) / 255.0)
    with pytest.raises(TexprodError, match="crop: got 256 px, larger than the 300x200 px image"):
        random_crops(image, 256, 4, seed=0)


# ------------------------------------------------------------------ the measure ranks


@pytest.mark.parametrize("name,other", [("bricks", "blobs"), ("blobs", "bricks")])
def test_measure_ranks_real_textures(name, other):
    exemplar = TEXTURES[name](384, 384, 0)
    rows = fidelity_table(TEXTURES[other](384, 384, 1), exemplar, crop=CROP, n=N, seed=0)
    assert [r.name for r in rows] == ROWS
    by = {r.name: r.ratio for r in rows}
    assert 0.5 <= by[ROW_SELF] <= 2.0, rows
    assert by[ROW_MODEL] > 4.0, rows  # the other texture
    assert by[ROW_UNIFORM] > 4.0, rows
    assert by[ROW_HISTOGRAM] > 3.0 and by[ROW_HISTOGRAM] > 2 * by[ROW_SELF], rows
    for r in rows:
        assert r.distance == pytest.approx(r.ratio * rows[0].distance / rows[0].ratio)


def test_shifted_cropped_or_regenerated_texture_scores_near_one():
    exemplar = bricks(384, 384, 0)
    shifted = np.roll(exemplar, (37, 101), axis=(0, 1))
    assert ratio(shifted, exemplar, n=8) < 1.6
    assert ratio(exemplar[41:, 23:], exemplar, n=8) < 1.6
    # a fresh, larger realisation of the same random process
    assert ratio(bricks(640, 640, 9), exemplar, n=8) < 1.6


def test_wrong_colours_raise_the_ratio():
    exemplar = blobs(384, 384, 0)
    swapped = exemplar[..., ::-1]  # RGB -> BGR: same structure, wrong colours
    assert ratio(swapped, exemplar) > 4.0
    a, b = random_crops(exemplar, CROP, 8, 1), random_crops(exemplar, CROP, 8, 2)
    assert texture_distance(a, b) < texture_distance(a, random_crops(swapped, CROP, 8, 2)) / 3


# ------------------------------------------------------------------ exemplars


def test_load_exemplar_formats(tmp_path):
    image = bricks(120, 160, 0)
    for name in ("x.png", "x.tif"):
        assert np.array_equal(load_exemplar(save(image, tmp_path / name)), image)
    jpeg = load_exemplar(save(image, tmp_path / "x.jpg", Q=95))
    assert jpeg.shape == (120, 160, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - image).mean() < 4
    # grey is replicated to three bands
    grey = load_exemplar(save(image[..., 1], tmp_path / "grey.png"))
    assert grey.shape == (120, 160, 3)
    assert np.array_equal(grey[..., 0], image[..., 1])
    assert np.array_equal(grey[..., 2], grey[..., 0])
    # 16-bit is scaled to 8, alpha is flattened onto white
    deep = load_exemplar(save(image.astype(np.uint16) * 257, tmp_path / "deep.png"))
    assert np.abs(deep.astype(int) - image).max() <= 1
    alpha = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    alpha[:10, :10, 3] = 0
    flat = load_exemplar(save(alpha, tmp_path / "alpha.png"))
    assert flat.shape == (120, 160, 3) and (flat[:10, :10] == 255).all()
    assert np.array_equal(flat[20:], image[20:])


def test_load_exemplar_colour_manages_embedded_profiles(tmp_path):
    # mid-tone colours in the press gamut: CMYK with the FOGRA39 profile embedded
    rgb = (np.clip(bricks(96, 96, 0).astype(int), 60, 200)).astype(np.uint8)
    cmyk = pyvips.Image.new_from_array(rgb, interpretation="srgb").icc_transform(
        str(FOGRA39), input_profile="srgb", intent="relative")
    assert cmyk.bands == 4 and cmyk.get_typeof("icc-profile-data")
    cmyk.write_to_file(str(tmp_path / "press.tif"))
    back = load_exemplar(tmp_path / "press.tif")
    assert back.shape == (96, 96, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).mean() < 6


def test_load_exemplar_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image at all")
    with pytest.raises(TexprodError, match=r"broken\.png: cannot read it as an image"):
        load_exemplar(bad)
    with pytest.raises(TexprodError, match=r"missing\.png: no such file"):
        load_exemplar(tmp_path / "missing.png")
    small = save(bricks(90, 200, 0), tmp_path / "small.png")
    with pytest.raises(TexprodError, match=r"small\.png: 200x90 px is smaller than the 128 px "
                                           r"crops; use --crop 90 or less"):
        load_exemplar(small, min_size=128)
    with pytest.raises(TexprodError, match="smaller than the 128 px crops"):
        fidelity_table(bricks(256, 256, 1), bricks(90, 200, 0))


# ------------------------------------------------------------------ models and CLI

TINY = GeneratorConfig(nz_local=4, nz_global=4, nz_periodic=2, upsample="nearest", kernel=3,
                       filters=(16, 8, 8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "tiny"
    latents = {"brick": torch.linspace(-1, 1, 4), "other": torch.zeros(4)}
    return save_generator(random_generator(TINY, 3), out, latents=latents)


@pytest.fixture(scope="module")
def exemplar_png(tmp_path_factory) -> Path:
    return save(bricks(256, 256, 0), tmp_path_factory.mktemp("quality") / "bricks.png")


@pytest.fixture(scope="module")
def random_model_rows(checkpoint, exemplar_png) -> list[FidelityRow]:
    return model_fidelity(checkpoint, exemplar_png, latent="brick", crop=CROP, n=8, size=256,
                          seed=2)


def test_model_fidelity_on_a_random_model(random_model_rows):
    rows = random_model_rows
    assert [r.name for r in rows] == ROWS
    assert all(np.isfinite(r.distance) and r.distance > 0 for r in rows)
    by = {r.name: r.ratio for r in rows}
    assert by[ROW_MODEL] > by[ROW_SELF]  # an untrained model does not beat the exemplar
    text = format_table(rows)
    assert text.splitlines()[0].split() == ["name", "distance", "ratio"]
    assert all(name in text for name in ROWS)


def test_model_fidelity_latent_choice(checkpoint, exemplar_png):
    with pytest.raises(TexprodError, match=r"2 latents \(brick, other\); choose one"):
        model_fidelity(checkpoint, exemplar_png, crop=CROP, n=8, size=256)
    with pytest.raises(TexprodError, match="'nope', not a latent of this model"):
        model_fidelity(checkpoint, exemplar_png, latent="nope", crop=CROP, n=8, size=256)
    # a seed stands for the global latent it draws, the same at every noise seed
    samples = render_samples(checkpoint, latent="7", size=64, count=2)
    assert samples.shape == (2, 64, 64, 3) and samples.dtype == np.uint8
    assert np.array_equal(samples, render_samples(checkpoint, latent=7, size=64, count=2))
    with pytest.raises(TexprodError, match="smaller than the 300 px crops"):
        model_fidelity(checkpoint, exemplar_png, latent="brick", crop=300)


def test_cli_quality_json_matches_the_api(checkpoint, exemplar_png, random_model_rows, capsys):
    args = ["quality", str(checkpoint), str(exemplar_png), "--latent", "brick", "--crop",
            str(CROP), "--crops", "8", "--size", "256", "--seed", "2"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == [{"name": r.name, "distance": r.distance, "ratio": r.ratio}
                              for r in random_model_rows]  # deterministic: same numbers twice
    assert report["verdict"].startswith("model ratio ")
    assert main(["quality", str(checkpoint), str(exemplar_png.with_name("none.png"))]) == 2
    assert "none.png: no such file" in capsys.readouterr().err


def test_format_table_and_verdict():
    rows = [FidelityRow(ROW_SELF, 0.05, 1.02), FidelityRow(ROW_MODEL, 0.066, 1.32),
            FidelityRow(ROW_UNIFORM, 0.4, 8.1), FidelityRow(ROW_HISTOGRAM, 0.27, 5.3)]
    lines = format_table(rows).splitlines()
    assert len(lines) == 5 and lines[2].split()[-2:] == ["0.0660", "1.32"]
    assert verdict(rows) == ("model ratio 1.32 (goal <= 1.5: met); baselines: uniform noise "
                             "8.1, colour-histogram noise 5.3; exemplar vs itself 1.02")
    assert "not met" in verdict([FidelityRow(ROW_MODEL, 1.0, 2.0)])


@pytest.mark.parametrize("model, exemplar, latent", [
    ("packaging", "kraft-fibre.png", None),
    ("aerial", "aerial-terrain.png", None),
    ("kraft-terrain", "kraft-fibre.png", "kraft-fibre"),
    ("kraft-terrain", "aerial-terrain.png", "aerial-terrain"),
])
def test_measure_ranks_the_shipped_models(model, exemplar, latent, capsys):
    """exemplar vs itself < trained model < both noise baselines, through the command; and
    every shipped model meets the goal (the measure is deterministic for a given seed)."""
    path = Path(__file__).resolve().parent.parent / "texprod" / "data" / "exemplars" / exemplar
    args = ["quality", f"bundled:{model}", str(path), "--json"]
    assert main(args + (["--latent", latent] if latent else [])) == 0
    rows = {r["name"]: r["ratio"] for r in json.loads(capsys.readouterr().out)["rows"]}
    itself, trained = rows["exemplar vs itself"], rows["model"]
    baselines = [rows["uniform noise"], rows["noise with the exemplar's colour histogram"]]
    assert itself < trained < min(baselines)
    assert trained <= GOAL_RATIO
