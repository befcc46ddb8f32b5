"""Texture fidelity without downloaded weights: Gram statistics of a fixed random CNN.

The features of a randomly initialised convolutional network capture texture statistics
surprisingly well: the correlations of many random local filters at several scales.
texprod builds one such network from a fixed seed, so the measure is the same on every
machine and needs nothing but PyTorch:

    pixels in [0, 1], normalised per channel with fixed constants
    -> conv 3x3 3->64, ReLU                      scale 1    (receptive field  3 px)
    -> avg pool 2, conv 3x3 64->128, ReLU        scale 1/2  (receptive field  8 px)
    -> avg pool 2, conv 3x3 128->256, ReLU       scale 1/4  (receptive field 18 px)
    -> avg pool 2, conv 3x3 256->256, ReLU       scale 1/8  (receptive field 38 px)
    -> avg pool 2, conv 3x3 256->256, ReLU       scale 1/16 (receptive field 78 px)

He-normal weights from a seeded generator, zero biases, unpadded convolutions (image
borders never enter the statistics). The statistics of an image are the 3 x 3 Gram
matrix of its normalised pixels (mean colour and colour correlations, so wrong colours
score badly), and per scale the Gram matrix of the mean-centred features (their
covariance) and the feature means. Centring matters: an uncentred Gram is dominated by
the outer product of the means, so one global quantity (say the share of one colour in
a crop) drowns the structure and makes the scores erratic.

A set of crops is summarised by its statistics averaged over the set; two sets differ by
the mean over statistics of ||a - b|| / ((||a|| + ||b||) / 2) (Frobenius norms). That
number has no natural scale, so `fidelity_table` divides it by the distance between
disjoint crop sets of the exemplar itself: statistically "more of the exemplar" scores
about 1, noise many times more.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyvips
import torch
import torch.nn.functional as F

from texprod.engine import Generator
from texprod.engine.noise import ConstantField, NoiseField
from texprod.engine.render import Renderer, default_tiling, render_canvas
from texprod.errors import ConfigError
from texprod.models import Checkpoint, load_checkpoint
from texprod.models.checkpoint import UnknownLatent

log = logging.getLogger(__name__)

# The fixed feature network: output channels per scale (kernel 3, 2x average pooling
# between scales) and the seed of its weights. Changing any of these changes every score.
CHANNELS: tuple[int, ...] = (64, 128, 256, 256, 256)
WEIGHT_SEED = 20240601
KERNEL = 3
# Fixed per-channel normalisation of [0, 1] pixels (the usual ImageNet constants).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Side of the smallest image the unpadded network still sees at every scale.
MIN_SIZE = 80
# The exemplar's natural variation: a pool of POOL_FACTOR * n crops, split SPLITS times at
# random into two disjoint sets of n crops.
POOL_FACTOR = 4
SPLITS = 64
GOAL_RATIO = 1.5


def _min_side() -> int:
    side = 1
    for i in reversed(range(len(CHANNELS))):
        side += KERNEL - 1
        if i:
            side *= 2
    return side


assert _min_side() <= MIN_SIZE


@functools.cache
def _weights(device: str = "cpu") -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """He-normal convolution weights and zero biases, from WEIGHT_SEED alone (drawn on the
    CPU, so they are the same everywhere), placed on `device`."""
    gen = torch.Generator().manual_seed(WEIGHT_SEED)
    weights, biases = [], []
    c_in = 3
    # normal tensors even when first asked for under inference mode: they are cached and
    # later used in autograd (latent fitting differentiates through the statistics)
    with torch.inference_mode(False):
        for c_out in CHANNELS:
            fan_in = c_in * KERNEL * KERNEL
            w = torch.randn((c_out, c_in, KERNEL, KERNEL), generator=gen, dtype=torch.float32)
            weights.append((w * (2.0 / fan_in) ** 0.5).to(device))
            biases.append(torch.zeros(c_out, device=device))
            c_in = c_out
    return tuple(weights), tuple(biases)


def _gram(x: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, h, w) -> (Gram matrix (N, C, C) averaged over positions, means (N, C)).

    centred: the Gram matrix of the features minus their means (their covariance).
    """
    n, c, h, w = x.shape
    f = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view for channels-last maps
    gram = torch.bmm(f.transpose(1, 2), f) / (h * w)
    means = f.mean(dim=1)
    if centred:
        gram = gram - means[:, :, None] * means[:, None, :]
    return gram, means


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float32; one-channel (grey) images are repeated to three channels."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ConfigError(f"images: got {shape}, expected a (N, 3, H, W) tensor in [0, 1]")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[0] < 1:
        raise ConfigError("images: got an empty batch, need at least one image")
    h, w = images.shape[2:]
    if min(h, w) < MIN_SIZE:
        raise ConfigError(
            f"images: got {w}x{h} px, texture statistics need at least {MIN_SIZE}x{MIN_SIZE} px"
        )
    return images.to(torch.float32)


def _layer_stats(images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(Gram matrices [(N, C, C)], feature means [(N, C)]) of images (N, 3, H, W)."""
    x = _check_images(images)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)  # faster on CPU
    grams, means = [_gram(x)[0]], []
    weights, biases = _weights(str(x.device))
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if i:
            x = F.avg_pool2d(x, 2)
        x = F.relu(F.conv2d(x, w, b))
        gram, mu = _gram(x, centred=True)
        grams.append(gram)
        means.append(mu)
    return grams, means


def texture_stats(images: torch.Tensor) -> list[torch.Tensor]:
    """Gram matrices of images (N, 3, H, W) in [0, 1]: one (N, C, C) per layer.

    Layer 0 is the pixels (3 x 3, uncentred: mean colour and colour correlations), then
    one per scale of the random network, of the features centred on their per-image mean
    (the covariance of the features). Computed on the images' device in float32, and
    differentiable (usable as a training loss).
    """
    return _layer_stats(images)[0]


@functools.cache
def _triangle(c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the upper triangle of a symmetric c x c matrix, and the weights
    (1 on the diagonal, sqrt 2 off it) that keep its Frobenius norm."""
    rows, cols = torch.triu_indices(c, c)
    weights = torch.where(rows == cols, 1.0, 2.0**0.5).to(torch.float64)
    return rows * c + cols, weights


@torch.inference_mode()
def _crop_stats(crops: torch.Tensor, batch: int = 16) -> list[torch.Tensor]:
    """Per-crop statistics as float64 vectors on the CPU: the Gram matrices of every layer
    (upper triangles, weighted to keep Frobenius norms) then the feature means of every
    scale, one (N, D) tensor each."""
    parts: list[list[torch.Tensor]] = []
    for start in range(0, crops.shape[0], batch):
        grams, means = _layer_stats(crops[start: start + batch])
        flat = []
        for g in grams:
            index, weights = _triangle(g.shape[1])
            flat.append(g.reshape(g.shape[0], -1)[:, index.to(g.device)].cpu().double()
                        * weights)
        parts.append(flat + [m.cpu().double() for m in means])
    return [torch.cat(stat) for stat in zip(*parts, strict=True)]


def _set_stats(crops: torch.Tensor) -> list[torch.Tensor]:
    """The statistics averaged over a set of crops: [(D,)]."""
    return [t.mean(0) for t in _crop_stats(crops)]


def _distances(x: list[torch.Tensor], refs: list[torch.Tensor]) -> torch.Tensor:
    """Distances of one set's statistics [(D,)] to M others [(M, D)]: (M,).

    Per statistic ||x - r|| / ((||x|| + ||r||) / 2), then the mean over statistics;
    ||x - r||^2 is expanded so the M x D references are only read, never copied.
    """
    parts = []
    for xs, rs in zip(x, refs, strict=True):
        x_norm2 = xs @ xs
        r_norm = torch.linalg.vector_norm(rs, dim=-1)
        diff = (r_norm**2 - 2 * (rs @ xs) + x_norm2).clamp_min(0).sqrt()
        parts.append(diff / ((x_norm2.sqrt() + r_norm) / 2).clamp_min(1e-12))
    return torch.stack(parts).mean(0)


def _pair_distances(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Distances between the sets of M pairs, statistics [(M, D)] each: (M,)."""
    parts = []
    for sa, sb in zip(a, b, strict=True):
        scale = (torch.linalg.vector_norm(sa, dim=-1) + torch.linalg.vector_norm(sb, dim=-1)) / 2
        parts.append(torch.linalg.vector_norm(sa - sb, dim=-1) / scale.clamp_min(1e-12))
    return torch.stack(parts).mean(0)


def _stats_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(_pair_distances([t[None] for t in a], [t[None] for t in b])[0])


def texture_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """How far apart the texture statistics of two crop sets (N, 3, H, W) in [0, 1] are.

    The statistics of each set (the Gram matrices of texture_stats and the mean of every
    feature map) are averaged over the set first; the result is the mean over statistics
    of the relative difference ||a - b|| / ((||a|| + ||b||) / 2): 0 for equal statistics,
    at most 2.
    """
    return _stats_distance(_set_stats(_check_images(a)), _set_stats(_check_images(b)))


# ---------------------------------------------------------------------------- crops


def _derive_seed(seed: int, *tags: int) -> int:
    """An independent 63-bit seed for one purpose (`tags`) of the user's seed."""
    state = np.random.SeedSequence([seed, *tags]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _as_float_images(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) or (K, H, W, 3) image(s), any dtype -> (K, H, W, 3) float32 in [0, 1]."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ConfigError(
            f"image: got shape {tuple(np.shape(image))}, expected (H, W, 3) or a stack "
            "(K, H, W, 3) of RGB images"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype.kind not in "fb":
        raise ConfigError(f"image: got dtype {array.dtype}, expected uint8, uint16 or float "
                          "in [0, 1]")
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def random_crops(image: np.ndarray | torch.Tensor, size: int, n: int, seed: int
                 ) -> torch.Tensor:
    """n random size x size crops of an (H, W, 3) image: (n, 3, size, size) float in [0, 1].

    uint8 (and uint16) images are scaled to [0, 1], float images are taken as [0, 1].
    A stack (K, H, W, 3) of images (e.g. renders of several seeds) is cropped in turn:
    crop i comes from image i mod K. Positions depend only on `seed`.
    """
    images = _as_float_images(image)
    if size < 1 or n < 1:
        raise ConfigError(f"crops: got {n} crops of {size} px, need at least one crop of 1 px")
    k, h, w, _ = images.shape
    if size > min(h, w):
        raise ConfigError(
            f"crop: got {size} px, larger than the {w}x{h} px image; use a crop of at most "
            f"{min(h, w)} px or a larger image"
        )
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, h - size + 1, size=n)
    xs = rng.integers(0, w - size + 1, size=n)
    crops = np.stack([images[i % k, y: y + size, x: x + size]
                      for i, (y, x) in enumerate(zip(ys, xs, strict=True))])
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------- exemplars


def load_exemplar(path: str | os.PathLike, *, min_size: int = 0) -> np.ndarray:
    """An exemplar image as (H, W, 3) uint8 sRGB.

    Any format libvips reads. Images with an embedded ICC profile are converted to sRGB
    through it (relative colorimetric), others by libvips' colourspace rules (grey is
    replicated to three bands, 16-bit is scaled to 8, CMYK goes through a generic
    profile); alpha is flattened onto white. `min_size`: the smallest side allowed.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"exemplar {p}: no such file")
    try:
        image = pyvips.Image.new_from_file(str(p), fail_on="truncated")
        if image.hasalpha():
            white = 65535 if image.format == "ushort" else 255
            image = image.flatten(background=[white] * (image.bands - 1))
        converted = None
        if image.get_typeof("icc-profile-data"):
            try:
                converted = image.icc_transform("srgb", embedded=True, intent="relative")
            except pyvips.Error as e:
                log.warning("exemplar %s: embedded ICC profile unusable (%s); converting "
                            "without it", p, e.message.strip())
        image = converted if converted is not None else image.colourspace("srgb")
        if image.format != "uchar":
            image = image.cast("uchar")
        if image.bands == 1:
            image = image.bandjoin([image, image])
        elif image.bands > 3:
            image = image.extract_band(0, n=3)
        array = np.ascontiguousarray(image.numpy(), dtype=np.uint8)
    except pyvips.Error as e:
        detail = " ".join(f"{e.message} {e.detail or ''}".split())
        raise ConfigError(f"exemplar {p}: cannot read it as an image ({detail})") from None
    h, w = array.shape[:2]
    if min(h, w) < min_size:
        hint = f"use --crop {min(h, w)} or less, or " if min(h, w) >= MIN_SIZE else ""
        raise ConfigError(
            f"exemplar {p}: {w}x{h} px is smaller than the {min_size} px crops; "
            f"{hint}use a larger exemplar"
        )
    return array


# ---------------------------------------------------------------------------- fidelity

ROW_SELF = "exemplar vs itself"
ROW_MODEL = "model"
ROW_UNIFORM = "uniform noise"
ROW_HISTOGRAM = "noise with the exemplar's colour histogram"


@dataclass
class FidelityRow:
    name: str
    distance: float  # mean texture_distance to the exemplar's reference crop sets
    ratio: float  # distance / the exemplar's own variation between crop sets; ~1 is ideal


def fidelity_table(generated: torch.Tensor | np.ndarray, exemplar: np.ndarray, *,
                   crop: int = 128, n: int = 16, seed: int = 0) -> list[FidelityRow]:
    """Compare n crops of `generated` with crops of `exemplar`, against two noise baselines.

    generated: an (H, W, 3) image or a stack (K, H, W, 3) of images (e.g. renders of
    several seeds); exemplar: (H, W, 3). Both uint8 or float in [0, 1].

    A pool of POOL_FACTOR * n random exemplar crops is split at random, SPLITS times, into
    two disjoint sets of n crops; the mean texture_distance between the two sets of a split
    is the exemplar's natural variation, the unit of every ratio. Each row is a set of n
    crops, and its distance is its mean texture_distance to the first set of every split
    (so a set that is statistically just more exemplar scores ~1). Rows, in order: a
    further set of exemplar crops with its own seed (not from the pool), the generated
    image(s), uniform RGB noise, and spatially white noise drawn from the exemplar's own
    pixels (its exact colour histogram). Everything depends only on `seed`.
    """
    if crop < MIN_SIZE:
        raise ConfigError(f"crop: got {crop} px, texture statistics need at least {MIN_SIZE} px")
    if n < 1:
        raise ConfigError(f"crops: got {n}, need at least 1")
    if seed < 0:
        raise ConfigError(f"seed: got {seed}, must be >= 0")
    exemplar_images = _as_float_images(exemplar)
    if exemplar_images.shape[0] != 1:
        raise ConfigError(f"exemplar: got shape {tuple(np.shape(exemplar))}, expected (H, W, 3)")
    ex = exemplar_images[0]
    h, w = ex.shape[:2]
    if min(h, w) < crop:
        raise ConfigError(
            f"exemplar: {w}x{h} px is smaller than the {crop} px crops; use a crop of at most "
            f"{min(h, w)} px or a larger exemplar"
        )

    pool = _crop_stats(random_crops(ex, crop, POOL_FACTOR * n, _derive_seed(seed, 1)))
    rng = np.random.default_rng(_derive_seed(seed, 2))
    firsts, seconds = [], []
    for _ in range(SPLITS):
        order = torch.from_numpy(rng.permutation(POOL_FACTOR * n))
        firsts.append(order[:n])
        seconds.append(order[n: 2 * n])
    # the set means of every split as one matrix product: (SPLITS, pool) @ (pool, D)
    pick_first = _selection(firsts, POOL_FACTOR * n)
    pick_second = _selection(seconds, POOL_FACTOR * n)
    references = [pick_first @ stat for stat in pool]  # [(SPLITS, D)]
    baseline = float(_pair_distances(references, [pick_second @ stat for stat in pool]).mean())
    del pool
    if baseline <= 1e-9:
        raise ConfigError("exemplar: every crop has the same statistics (a flat image?); "
                          "a texture exemplar needs some variation")

    def row(name: str, crops: torch.Tensor) -> FidelityRow:
        distance = float(_distances(_set_stats(crops), references).mean())
        return FidelityRow(name, distance, distance / baseline)

    gen = torch.Generator().manual_seed(_derive_seed(seed, 5))
    uniform = torch.rand((n, 3, crop, crop), generator=gen)
    pixels = ex.reshape(-1, 3)
    picks = np.random.default_rng(_derive_seed(seed, 6)).integers(0, len(pixels),
                                                                  size=n * crop * crop)
    histogram = torch.from_numpy(
        np.ascontiguousarray(pixels[picks].reshape(n, crop, crop, 3).transpose(0, 3, 1, 2)))
    return [
        row(ROW_SELF, random_crops(ex, crop, n, _derive_seed(seed, 3))),
        row(ROW_MODEL, random_crops(generated, crop, n, _derive_seed(seed, 4))),
        row(ROW_UNIFORM, uniform),
        row(ROW_HISTOGRAM, histogram),
    ]


def _selection(sets: list[torch.Tensor], size: int) -> torch.Tensor:
    """(len(sets), size) matrix whose rows average the pool entries of each set."""
    matrix = torch.zeros((len(sets), size), dtype=torch.float64)
    for i, members in enumerate(sets):
        matrix[i, members] = 1.0 / len(members)
    return matrix


def _global_field(checkpoint, latent):
    """The ConstantField for `latent`, or None for the noise field's per-seed latent."""
    config = checkpoint.generator.config
    names = sorted(checkpoint.latents)
    if config.nz_global == 0:
        if latent is not None:
            raise ConfigError(f"latent: got {latent!r}, but this {config.arch} model has no "
                              "global channels")
        return None
    if latent is None:
        if len(names) > 1:
            raise ConfigError(f"latent: this model has {len(names)} latents "
                              f"({', '.join(names)}); choose one with --latent NAME")
        return ConstantField(checkpoint.latents[names[0]]) if names else None
    if isinstance(latent, torch.Tensor):
        if tuple(latent.shape) != (config.nz_global,):
            raise ConfigError(f"latent: got shape {tuple(latent.shape)}, expected "
                              f"({config.nz_global},)")
        return ConstantField(latent)
    seed = None
    if isinstance(latent, int) or (isinstance(latent, str) and latent.isdigit()
                                   and latent not in checkpoint.latents):
        seed = int(latent)
        if seed >= 2**64:
            raise ConfigError(f"latent: got {latent}, a seed must be between 0 and 2^64 - 1")
    try:
        return ConstantField(checkpoint.latent(name=latent, seed=seed))
    except UnknownLatent:
        known = ", ".join(names) if names else "none"
        raise ConfigError(f"latent: got {latent!r}, not a latent of this model (its "
                          f"latents: {known}) nor a seed") from None


def render_samples(model, *, seed: int = 0, latent=None, size: int | None = None,
                   count: int = 4, device: str = "cpu") -> np.ndarray:
    """`count` size x size canvases of a model, noise seeds seed .. seed + count - 1:
    (count, size, size, 3) uint8. `model`: a checkpoint path, Checkpoint or Generator."""
    if isinstance(model, Checkpoint):
        checkpoint = model
    elif isinstance(model, Generator):
        checkpoint = Checkpoint(model, {}, Path("."), {})
    else:
        checkpoint = load_checkpoint(model)
    size = 512 if size is None else size
    if size < 1:
        raise ConfigError(f"size: got {size}, must be at least 1 pixel")
    if seed < 0 or seed + count > 2**64:
        raise ConfigError(f"seed: got {seed}, must be between 0 and 2^64 - {count + 1}")
    generator = checkpoint.generator
    global_field = _global_field(checkpoint, latent)
    renderer = Renderer(generator, device=device)
    tile_px, batch = default_tiling(renderer.device, renderer.precision)
    plan = renderer.plan(size, size, tile_px)
    canvases = []
    for i in range(count):
        field = NoiseField(generator.config, seed + i, waves=generator.waves,
                           global_field=global_field)
        canvas = render_canvas(renderer, field, plan, batch=batch)
        if canvas.shape[2] == 1:
            canvas = np.repeat(canvas, 3, axis=2)
        canvases.append(canvas)
    return np.stack(canvases)


def model_fidelity(model_path_or_generator, exemplar_path, *, seed: int = 0, latent=None,
                   size: int | None = None, crop: int = 128, n: int = 16,
                   device: str = "cpu") -> list[FidelityRow]:
    """The fidelity table of a model against its exemplar image file.

    Renders min(4, n) canvases of `size` px (default: the larger of 512 and twice the
    crop) with noise seeds seed, seed + 1, ... and takes n crops spread over them.
    `latent` picks the global latent of a PSGAN: a name from the checkpoint's card, a seed
    (int or digits), or an (nz_global,) tensor; None uses the card's only latent, or the
    noise seed's own latent when the card has none.
    """
    if crop < MIN_SIZE:
        raise ConfigError(f"crop: got {crop} px, texture statistics need at least {MIN_SIZE} px")
    exemplar = load_exemplar(exemplar_path, min_size=crop)
    size = max(512, 2 * crop) if size is None else size
    if size < crop:
        raise ConfigError(f"size: got {size} px, smaller than the {crop} px crops")
    samples = render_samples(model_path_or_generator, seed=seed, latent=latent, size=size,
                             count=max(1, min(4, n)), device=device)
    return fidelity_table(samples, exemplar, crop=crop, n=n, seed=seed)


def format_table(rows: Sequence[FidelityRow]) -> str:
    """The rows as an aligned text table: name, distance, ratio."""
    width = max([len("name"), *(len(r.name) for r in rows)])
    lines = [f"{'name':<{width}}  {'distance':>9}  {'ratio':>7}"]
    lines += [f"{r.name:<{width}}  {r.distance:>9.4f}  {r.ratio:>7.2f}" for r in rows]
    return "\n".join(lines)


def verdict(rows: Sequence[FidelityRow], goal: float = GOAL_RATIO) -> str:
    """One line: the model's ratio against the goal and the noise baselines."""
    by_name = {r.name: r for r in rows}
    parts = []
    if ROW_MODEL in by_name:
        ratio = by_name[ROW_MODEL].ratio
        parts.append(f"model ratio {ratio:.2f} (goal <= {goal:g}: "
                     f"{'met' if ratio <= goal else 'not met'})")
    baselines = [f"{label} {by_name[key].ratio:.1f}" for key, label in
                 ((ROW_UNIFORM, "uniform noise"), (ROW_HISTOGRAM, "colour-histogram noise"))
                 if key in by_name]
    if baselines:
        parts.append("baselines: " + ", ".join(baselines))
    if ROW_SELF in by_name:
        parts.append(f"exemplar vs itself {by_name[ROW_SELF].ratio:.2f}")
    return "; ".join(parts)


def table_json(rows: Sequence[FidelityRow], **extra) -> dict:
    """A JSON-ready summary: the rows, the goal and the verdict, plus `extra` fields."""
    return {**extra, "goal_ratio": GOAL_RATIO, "rows": [asdict(r) for r in rows],
            "verdict": verdict(rows)}
