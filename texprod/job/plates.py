"""Spot plates: varnish, white ink or a spot colour, registered with the texture.

A plate prints where a placed mask has one of its levels: the texture's own paint mask
(`from: {levels: [...]}`, the same placement and cell grid as the texture) or a mask of
its own (`from: {mask: ...}`). Choke and spread move its edges by whole pixels (a disc
erosion or dilation). Its rows are made for any band of the canvas on demand, by whoever
works that band (a stripe's worker for plates as TIFF channels, the driver for plate
files), so memory never grows with the print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from texprod.job.paint import FOREGROUND, level_value
from texprod.job.regions import PlacedMask
from texprod.job.spec import JobSpec, PlacementSpec, PlateSpec
from texprod.job.texture import CellFrame, TextureField, place_mask
from texprod.press.geometry import MM_PER_INCH, PrintGeometry
from texprod.press.tiff_tags import PROCESS_INKS


@dataclass(frozen=True)
class Plate:
    name: str
    ink: float  # 0..1 of full ink inside the plate (the tint)
    preview: tuple[int, int, int]  # sRGB the proof tints its area with
    knockout: bool  # the process inks are removed under it
    grow_px: int  # > 0 spread, < 0 choke
    mask: PlacedMask
    levels: tuple[int, ...]  # the mask labels it prints on
    summary: dict  # for the provenance and the report

    def coverage(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Whether the plate prints at global pixel rows `ys` x columns `xs`, before choke
        or spread: (n, m) bool."""
        return np.isin(self.mask.at(ys, xs), self.levels)


@dataclass(frozen=True)
class Plates:
    """The spot plates of a job and the canvas they cover."""

    plates: tuple[Plate, ...]
    origin: tuple[int, int]  # global pixel of canvas pixel (0, 0)
    width: int
    height: int
    inputs: dict[str, str]  # plate mask files -> sha256, for the spec digest

    def __bool__(self) -> bool:
        return bool(self.plates)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plates]

    @property
    def inks(self) -> list[str]:
        """Every ink of a print with these plates as channels, process inks first."""
        return [*PROCESS_INKS, *self.names]

    def rows(self, y: int, h: int, dtype: np.dtype, which: list[int] | None = None
             ) -> np.ndarray:
        """The plates (all, or those `which` numbers) over canvas rows y .. y + h:
        (h, width, plates) of `dtype`, full ink = the dtype's maximum times the tint."""
        top = np.iinfo(dtype).max
        which = range(len(self.plates)) if which is None else which
        out = np.empty((h, self.width, len(which)), dtype)
        for k, i in enumerate(which):
            plate = self.plates[i]
            out[:, :, k] = np.where(self._rows_of(plate, y, h), round(plate.ink * top), 0)
        return out

    def _rows_of(self, plate: Plate, y: int, h: int) -> np.ndarray:
        """(h, width) bool: where `plate` prints on these canvas rows, choke or spread
        applied (computed with the rows around them that the disc reaches)."""
        x0, y0 = self.origin
        reach = abs(plate.grow_px)
        top, bottom = max(0, y - reach), min(self.height, y + h + reach)
        inside = plate.coverage(np.arange(y0 + top, y0 + bottom),
                                np.arange(x0, x0 + self.width))
        if reach:
            inside = _grow(inside, plate.grow_px)
        return inside[y - top: y - top + h]


def _grow(inside: np.ndarray, grow_px: int) -> np.ndarray:
    """Dilate (grow_px > 0) or erode (< 0) a bool raster by a disc of |grow_px| pixels.
    Beyond the canvas the raster continues as its edge pixels (so a choke does not eat
    into the print from the canvas border)."""
    r = abs(grow_px)
    padded = np.pad(inside, r, mode="edge").astype(np.uint8) * 255
    image = pyvips.Image.new_from_array(padded)
    yy, xx = np.mgrid[-r: r + 1, -r: r + 1]
    disc = (yy * yy + xx * xx) <= r * r  # the pixels within r of the centre
    # 255: a pixel the disc covers, 128: one it does not care about; dilate sets a pixel
    # if any covered pixel is set, erode only if all are
    morph = pyvips.Image.new_from_array(np.where(disc, 255, 128).tolist())
    grown = image.morph(morph, "dilate" if grow_px > 0 else "erode")
    out = np.ndarray(padded.shape, np.uint8, grown.write_to_memory())
    return out[r: r + inside.shape[0], r: r + inside.shape[1]] > 0


def plan_plates(spec: JobSpec, texture: TextureField, geometry: PrintGeometry,
                frame: CellFrame, period: tuple[int, int] | None,
                spec_dir: Path | None) -> Plates:
    """The spec's plates, each with its mask placed on the print."""
    x0, y0, width, height = frame.canvas_px
    plates, inputs = [], {}
    for i, plate in enumerate(spec.plates):
        if plate.source.levels is not None:
            mask = texture.regions.mask
            assert mask is not None  # the spec checks that levels come with texture.paint
            keys = [str(k) for k in spec.texture.paint.latents]
            wanted = {_colour(level_value(k)) for k in plate.source.levels}
            levels = tuple(j for j, k in enumerate(keys) if _colour(level_value(k)) in wanted)
        else:
            placed = place_mask(plate.source.mask, plate.source.placement or PlacementSpec(),
                                ["background", FOREGROUND], geometry, frame, period,
                                spec_dir, f"plates.{i}.from")
            mask, levels = placed.mask, (1,)
            inputs[f"plate_mask_{i}"] = placed.sha256
        plates.append(Plate(
            name=plate.name, ink=plate.tint / 100, preview=_rgb(plate.preview),
            knockout=plate.knockout, grow_px=_grow_px(plate, geometry.dpi), mask=mask,
            levels=levels, summary=_summary(plate, geometry.dpi)))
    return Plates(tuple(plates), (x0, y0), width, height, inputs)


def _grow_px(plate: PlateSpec, dpi: float) -> int:
    mm = plate.spread_mm - plate.choke_mm
    return int(math.copysign(round(abs(mm) / float(MM_PER_INCH) * dpi), mm))


def _summary(plate: PlateSpec, dpi: float) -> dict:
    source = ({"levels": [str(k) for k in plate.source.levels]}
              if plate.source.levels is not None else {"mask": plate.source.mask})
    grow = _grow_px(plate, dpi)
    return {"name": plate.name, "from": source, "tint": plate.tint,
            "knockout": plate.knockout, "preview": plate.preview,
            **({"spread_px" if grow > 0 else "choke_px": abs(grow)} if grow else {})}


def _colour(level: tuple[int, ...]) -> tuple[int, ...]:
    return level * 3 if len(level) == 1 else level


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i: i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def knock_out(cmyk: np.ndarray, plates: np.ndarray, which: list[bool]) -> None:
    """Remove the process inks (in place) wherever a knockout plate prints: (h, W, 4) and
    (h, W, P)."""
    for i, knockout in enumerate(which):
        if knockout:
            cmyk[plates[:, :, i] > 0] = 0


def tint_preview(preview: np.ndarray, plates: Plates, factor: int) -> np.ndarray:
    """The proof's preview (h, w, 3) sRGB of the canvas shrunk by `factor`, with each plate's
    area tinted half-way to its preview colour: where the varnish or white ink goes."""
    if not plates:
        return preview
    h, w = preview.shape[:2]
    x0, y0 = plates.origin
    ys = y0 + np.arange(h) * factor + factor // 2  # the centre pixel of each preview pixel
    xs = x0 + np.arange(w) * factor + factor // 2
    out = preview.astype(np.float32)
    for plate in plates.plates:
        inside = plate.coverage(ys, xs)[:, :, None]
        out = np.where(inside, out * 0.5 + np.array(plate.preview, np.float32) * 0.5, out)
    return np.round(out).astype(np.uint8)
