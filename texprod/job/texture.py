"""A job's texture field: which global latents the generator sees at every noise cell.

The spec's texture section becomes a `GlobalField` (texprod.engine.noise): one latent everywhere
(`latent`, or the job seed's by default), a quilt of blended block latents (`quilt`), or a
mask painted with latents (`paint`). Millimetres become cells here; in repeat mode quilt
blocks and the mask wrap with the period. Everything the field depends on is a function
of global cell coordinates, so tiled renders stay exact.

Cell coordinates: cell c covers global pixels [c * cell_px, (c + 1) * cell_px), and the
trim's top-left corner is at global pixel `trim_origin_px` (0 in repeat mode, so the
period starts at the trim).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from texprod.engine.noise import ConstantField, GlobalField, QuiltField, TableField
from texprod.errors import SpecError
from texprod.files import sha256_file
from texprod.job.paint import (
    BACKGROUND,
    Placement,
    effective_transition,
    fit_mask,
    is_colour_key,
    label_mask,
    level_value,
    load_mask,
    paint_weights,
)
from texprod.job.regions import PlacedMask, Regions, quilt_regions
from texprod.job.spec import JobSpec, LatentSpec, PaintSpec, PlacementSpec, QuiltSpec
from texprod.models import Checkpoint
from texprod.models.checkpoint import UnknownLatent
from texprod.press.geometry import MM_PER_INCH, PrintGeometry
from texprod.storage import NoSuchObject, cache_root, download_file, is_s3


@dataclass
class TextureField:
    field: GlobalField | None  # None: the job seed's latent everywhere (NoiseField default)
    summary: str  # one line for the dry run
    regions: Regions  # which paint level or quilt block each pixel belongs to
    inputs: dict[str, str] = field(default_factory=dict)  # files -> sha256, for the digest


@dataclass(frozen=True)
class CellFrame:
    """How millimetres on the print map to noise cells."""

    dpi: float
    cell_px: int
    trim_origin_px: tuple[int, int]  # (x, y) global pixel of the trim's top-left corner
    canvas_px: tuple[int, int, int, int]  # (x0, y0, width, height) of the canvas, global px
    halo: int  # cells a render reads beyond the canvas

    def cells(self, mm: float) -> float:
        return float(mm / float(MM_PER_INCH) * self.dpi / self.cell_px)

    def mm(self, cells: float) -> float:
        return cells * self.cell_px / self.dpi * float(MM_PER_INCH)

    def bounds(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) cells any tile of the canvas can ask for."""
        x0, y0, w, h = self.canvas_px
        c, pad = self.cell_px, self.halo + 1
        return (y0 // c - pad, x0 // c - pad, -(-(y0 + h) // c) + pad, -(-(x0 + w) // c) + pad)


def texture_field(spec: JobSpec, checkpoint: Checkpoint, geometry: PrintGeometry,
                  frame: CellFrame, period: tuple[int, int] | None,
                  spec_dir: Path | None = None) -> TextureField:
    """The spec's texture as a global field, checked against the model."""
    texture = spec.texture
    config = checkpoint.generator.config
    kind = next((k for k in ("paint", "quilt", "latent") if getattr(texture, k) is not None),
                None)
    if kind is None:
        summary = f"one texture: the latent of seed {spec.seed}"
        return TextureField(None, summary, _one_region(frame, summary))
    if config.nz_global == 0:
        raise SpecError(f"texture.{kind}: model {spec.model} is an SGAN without global "
                        "channels (nz_global = 0), so its texture cannot be chosen, quilted or "
                        "painted; use a PSGAN model with global channels, or drop texture."
                        f"{kind}")
    if kind == "latent":
        latent = resolve_latent(texture.latent, checkpoint, spec.model, "texture.latent")
        summary = f"one texture: {_latent_name(texture.latent)}"
        return TextureField(ConstantField(latent), summary, _one_region(frame, summary))
    if kind == "quilt":
        return _quilt(texture.quilt, spec.seed, config.nz_global, frame, period)
    return _paint(texture.paint, checkpoint, spec.model, geometry, frame, period, spec_dir)


def _one_region(frame: CellFrame, what: str) -> Regions:
    x0, y0, width, _ = frame.canvas_px
    return Regions((x0, y0), width, {"0": what}, 1)


def resolve_latent(ref: LatentSpec, checkpoint: Checkpoint, model: str, where: str
                   ) -> torch.Tensor:
    """A latent from a seed or from the model card's named latents: (nz_global,)."""
    try:
        return checkpoint.latent(name=ref.name, seed=ref.seed)
    except UnknownLatent as e:
        known = f"its model card names {', '.join(e.known)}" if e.known else \
            "its model card names no latents (a model trained on several exemplars has one " \
            "per exemplar)"
        raise SpecError(f"{where}.name: got {ref.name!r}, not a latent of model {model}: "
                        f"{known}; or give a seed instead") from None


def _latent_name(ref: LatentSpec) -> str:
    return f"seed {ref.seed}" if ref.seed is not None else f"'{ref.name}'"


def _quilt(quilt: QuiltSpec, job_seed: int, nz_global: int, frame: CellFrame,
           period: tuple[int, int] | None) -> TextureField:
    block = frame.cells(quilt.block_mm)
    if block < 1:
        raise SpecError(f"texture.quilt.block_mm: got {quilt.block_mm:g}, a block must span "
                        f"at least one noise cell ({frame.mm(1):.3f} mm at this resolution)")
    transition_mm = quilt.transition_mm if quilt.transition_mm is not None \
        else quilt.block_mm / 4
    if period is None:
        blocks, counts = (block, block), None
    else:  # a whole number of blocks per period, so the quilt wraps with it
        counts = tuple(max(1, round(p / block)) for p in period)
        blocks = tuple(p / n for p, n in zip(period, counts, strict=True))
    transition = min(frame.cells(transition_mm), *blocks)
    seed = quilt.seed if quilt.seed is not None else job_seed
    field = QuiltField(nz_global, seed, blocks, transition, period_blocks=counts)
    summary = (f"quilt of {frame.mm(blocks[1]):.1f} x {frame.mm(blocks[0]):.1f} mm blocks "
               f"({blocks[1]:.2f} x {blocks[0]:.2f} cells), {frame.mm(transition):.1f} mm "
               f"transitions, seed {seed}")
    if counts:
        summary += f", {counts[1]} x {counts[0]} blocks per period"
    x0, y0, width, height = frame.canvas_px
    regions = quilt_regions((x0, y0), width, height, blocks, counts, frame.cell_px, seed)
    return TextureField(field, summary, regions)


def _paint(paint: PaintSpec, checkpoint: Checkpoint, model: str, geometry: PrintGeometry,
           frame: CellFrame, period: tuple[int, int] | None, spec_dir: Path | None
           ) -> TextureField:
    keys = list(paint.latents)  # validated: background is among them
    latents = torch.stack([resolve_latent(paint.latents[k], checkpoint, model,
                                          f"texture.paint.latents.{k}") for k in keys])
    placed = place_mask(paint.mask, paint.placement, keys, geometry, frame, period, spec_dir,
                        "texture.paint")
    mask_h, mask_w = placed.mask.labels.shape
    transition = frame.cells(paint.transition_mm)
    weights, origin = paint_weights(placed.mask.labels, len(keys), keys.index(BACKGROUND),
                                    placed.mask.box_cells, transition, period=period,
                                    bounds=None if period else frame.bounds())
    field = TableField(torch.from_numpy(weights), latents, origin, keys.index(BACKGROUND))
    named = ", ".join(f"{k} -> {_latent_name(paint.latents[k])}" for k in keys)
    place = placed.placement
    summary = (f"paint {paint.mask} ({mask_w} x {mask_h} px) at {place.x:.1f}, {place.y:.1f} "
               f"mm, {place.width:.1f} x {place.height:.1f} mm; {named}; transition "
               f"{frame.mm(effective_transition(transition)):.1f} mm")
    x0, y0, width, _ = frame.canvas_px
    legend = {str(i): f"{k}: {_latent_name(paint.latents[k])}" for i, k in enumerate(keys)}
    regions = Regions((x0, y0), width, legend, len(keys), placed.mask)
    return TextureField(field, summary, regions, {"mask": placed.sha256})


@dataclass(frozen=True)
class MaskOnPrint:
    """A mask read, labelled and placed: what painting and mask plates share."""

    mask: PlacedMask
    placement: Placement  # in mm from the trim's top-left corner
    sha256: str  # of the mask file, for the spec digest


def place_mask(ref: str, placement: PlacementSpec, keys: list[str | int],
               geometry: PrintGeometry, frame: CellFrame, period: tuple[int, int] | None,
               spec_dir: Path | None, where: str) -> MaskOnPrint:
    """Read the mask `ref`, label each pixel with the nearest of the levels `keys` names
    (background first if absent from the mask), and place it in the trim (or the period):
    `where` names the spec section in errors."""
    mask_path = _mask_file(ref, spec_dir, f"{where}.mask")
    colour = any(is_colour_key(k) for k in keys)
    levels = np.array([_as_colour(level_value(k)) if colour else level_value(k) for k in keys],
                      dtype=np.uint8)  # (K, 3 or 1)
    pixels = load_mask(str(mask_path), colour, f"{where}.mask")  # (H, W, C)
    labels = label_mask(pixels, levels)  # (H, W)
    mask_h, mask_w = labels.shape

    # placement in mm from the trim's top-left; repeat mode places it within the period
    margin = placement.margin_mm
    if period is not None:
        area_w, area_h = frame.mm(period[1]), frame.mm(period[0])
    else:
        area_w, area_h = geometry.trim_mm
    area = (margin, margin, area_w - 2 * margin, area_h - 2 * margin)
    if placement.box_mm is None and (area[2] <= 0 or area[3] <= 0):
        raise SpecError(f"{where}.placement.margin_mm: got {margin:g}, which leaves no "
                        f"room on a {area_w:.1f} x {area_h:.1f} mm "
                        + ("period" if period else "trim"))
    place = fit_mask(mask_w, mask_h, area, placement.fit or "contain", placement.box_mm)
    ox, oy = (o / frame.cell_px for o in frame.trim_origin_px)
    box_cells = (ox + frame.cells(place.x), oy + frame.cells(place.y),
                 frame.cells(place.width), frame.cells(place.height))
    outside = keys.index(BACKGROUND) if BACKGROUND in keys else 0
    placed = PlacedMask(labels, box_cells, frame.cell_px, period, outside)
    return MaskOnPrint(placed, place, sha256_file(mask_path))


def _as_colour(level: tuple[int, ...]) -> tuple[int, ...]:
    return level * 3 if len(level) == 1 else level


def _mask_file(ref: str, spec_dir: Path | None, field_name: str) -> Path:
    """The mask as a local file: s3://bucket/key is downloaded; a relative path is looked
    up from the working directory, then from the spec's directory."""
    if is_s3(ref):
        key = hashlib.sha256(ref.encode()).hexdigest()[:16]
        local = cache_root() / "inputs" / key / ref.rstrip("/").rsplit("/", 1)[-1]
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_file(ref, local)
        except NoSuchObject as e:
            raise SpecError(f"{field_name}: got {ref!r}, no such object ({e})") from None
        return local
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() or spec_dir is None else [path, spec_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = " or ".join(str(c.absolute()) for c in candidates)
    raise SpecError(f"{field_name}: got {ref!r}, no such file ({where})")


def frame_of(geometry: PrintGeometry, cell_px: int, x0: int, y0: int, halo: int) -> CellFrame:
    """The cell frame of a canvas whose pixel (0, 0) is global pixel (x0, y0)."""
    return CellFrame(dpi=float(geometry.dpi), cell_px=cell_px,
                     trim_origin_px=(x0 + geometry.bleed_px, y0 + geometry.bleed_px),
                     canvas_px=(x0, y0, geometry.width_px, geometry.height_px), halo=halo)


__all__ = ["CellFrame", "MaskOnPrint", "TextureField", "frame_of", "place_mask",
           "resolve_latent", "texture_field"]
