"""Print geometry: millimetres and dpi to pixels, bleed, trim box, repeat periods.

Rounding rule: a length L mm at D dpi is floor(L / 25.4 * D + 1/2) pixels (round half up),
computed exactly from the decimal values written in the spec, so 0.5 px never depends on
binary floating point. The canvas is (trim + 2 * bleed) rounded once; the bleed is
rounded on its own and the trim box is what remains, centred: the canvas size is exactly
the issue's round((trim + 2 * bleed) mm / 25.4 * dpi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from texprod.errors import SpecError

if TYPE_CHECKING:  # the spec's print section, read by attribute: no runtime import of job
    from texprod.job.spec import PrintSpec

MM_PER_INCH = Fraction(254, 10)


def _exact(value: float | Fraction) -> Fraction:
    """The decimal a float was written as (600.1 -> 6001/10), not its binary approximation."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def mm_to_px(mm: float | Fraction, dpi: float) -> int:
    """Round half up: floor(mm / 25.4 * dpi + 1/2)."""
    return math.floor(_exact(mm) / MM_PER_INCH * _exact(dpi) + Fraction(1, 2))


def px_to_mm(px: int, dpi: float) -> float:
    return float(Fraction(px) / _exact(dpi) * MM_PER_INCH)


@dataclass(frozen=True)
class PrintGeometry:
    width_px: int  # the whole canvas, bleed included
    height_px: int
    bleed_px: int
    dpi: float
    requested_trim_mm: tuple[float, float]  # what the spec asked for
    snapped: bool = False  # repeat mode changed the trim size to whole noise cells

    @property
    def trim_box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the trim in canvas pixels."""
        b = self.bleed_px
        return b, b, self.width_px - 2 * b, self.height_px - 2 * b

    @property
    def trim_mm(self) -> tuple[float, float]:
        _, _, w, h = self.trim_box
        return px_to_mm(w, self.dpi), px_to_mm(h, self.dpi)

    @property
    def size_mm(self) -> tuple[float, float]:
        return px_to_mm(self.width_px, self.dpi), px_to_mm(self.height_px, self.dpi)

    @property
    def bleed_mm(self) -> float:
        return px_to_mm(self.bleed_px, self.dpi)

    @property
    def megapixels(self) -> float:
        return self.width_px * self.height_px / 1e6


@dataclass(frozen=True)
class RepeatPeriod:
    """One period of an exact repeat: whole noise cells, and what that is in mm."""

    cells: tuple[int, int]  # (rows, cols)
    cell_px: int
    dpi: float  # the print's resolution (changed from the spec's by adjust: dpi)
    requested_mm: tuple[float, float]  # (width, height) the spec asked for

    @property
    def px(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.cells[1] * self.cell_px, self.cells[0] * self.cell_px

    @property
    def mm(self) -> tuple[float, float]:
        return px_to_mm(self.px[0], self.dpi), px_to_mm(self.px[1], self.dpi)

    def describe(self) -> str:
        (w, h), (rw, rh) = self.mm, self.requested_mm
        text = (f"{w:.3f} x {h:.3f} mm = {self.px[0]} x {self.px[1]} px = {self.cells[1]} x "
                f"{self.cells[0]} cells of {self.cell_px} px at {self.dpi:g} dpi")
        if (round(w, 3), round(h, 3)) != (round(rw, 3), round(rh, 3)):
            text += f" (snapped from {rw:g} x {rh:g} mm)"
        return text


def _cells(mm: float, dpi: float | Fraction, cell_px: int) -> int:
    return max(1, round(_exact(mm) / MM_PER_INCH * _exact(dpi) / cell_px))


def repeat_period(width_mm: float, height_mm: float, dpi: float, cell_px: int,
                  tolerance_mm: float | None = None, adjust: str = "size") -> RepeatPeriod:
    """Snap a repeat to whole cells. adjust "size" keeps the dpi and moves the period by at
    most `tolerance_mm`; "dpi" keeps the width exact and sets the resolution to fit whole
    cells (the height then snaps within the tolerance at that resolution). Without a
    tolerance any snap is accepted: it is at most half a cell."""
    cols = _cells(width_mm, dpi, cell_px)
    if adjust == "dpi":  # the resolution at which `cols` cells are exactly width_mm
        dpi = round(float(Fraction(cols * cell_px) * MM_PER_INCH / _exact(width_mm)), 6)
    period = RepeatPeriod((_cells(height_mm, dpi, cell_px), cols), cell_px, dpi,
                          (width_mm, height_mm))
    for axis, (got, want) in enumerate(zip(period.mm, period.requested_mm, strict=True)):
        if tolerance_mm is not None and abs(got - want) > tolerance_mm + 1e-9:
            name = ("width_mm", "height_mm")[axis]
            cell_mm = px_to_mm(cell_px, dpi)
            n = _cells(want, dpi, cell_px)
            options = sorted({max(1, n - 1), n, n + 1})
            near = ", ".join(f"{px_to_mm(k * cell_px, dpi):.3f} mm ({k} cells)" for k in options)
            hint = ("set texture.repeat.adjust: dpi to keep the width exact by changing the "
                    "resolution, " if adjust == "size" and axis == 0 else "")
            raise SpecError(
                f"texture.repeat.{name}: got {want:g}, which whole {cell_px}-px noise cells "
                f"({cell_mm:.3f} mm at {dpi:g} dpi) cannot meet within tolerance_mm "
                f"{tolerance_mm:g}: the nearest periods are {near}; {hint}raise "
                "texture.repeat.tolerance_mm, or choose a size from those")
    return period


def print_geometry(spec: PrintSpec, repeat_cell_px: int | None = None,
                   period: RepeatPeriod | None = None) -> PrintGeometry:
    """Pixel geometry of a print; with `repeat_cell_px` the trim snaps to whole cells.

    With a repeat `period`, the print uses its resolution, and a print side given equal
    to the requested period side is exactly one period (snapped with it).
    """
    dpi = period.dpi if period is not None else spec.dpi
    bleed_px = mm_to_px(spec.bleed_mm, dpi)
    if spec.width_mm is not None:
        requested = (spec.width_mm, spec.height_mm)
        total = [mm_to_px(_exact(t) + 2 * _exact(spec.bleed_mm), dpi) for t in requested]
    else:
        requested = (px_to_mm(spec.width_px, dpi), px_to_mm(spec.height_px, dpi))
        total = [spec.width_px + 2 * bleed_px, spec.height_px + 2 * bleed_px]
    trim = [t - 2 * bleed_px for t in total]
    for name, value in zip(("width", "height"), trim, strict=True):
        if value < 1:
            raise SpecError(f"print.{name}: got {value} px of trim after the bleed at "
                            f"{spec.dpi} dpi; the print must be at least 1 px")
    snapped = False
    snapped_trim = list(trim)
    if repeat_cell_px is not None:
        cell = repeat_cell_px
        snapped_trim = [max(1, round(t / cell)) * cell for t in trim]
    if period is not None and spec.width_mm is not None:
        for axis in range(2):
            if requested[axis] == period.requested_mm[axis]:
                snapped_trim[axis] = period.px[axis]
    if snapped_trim != trim:
        snapped = True
        trim = snapped_trim
        total = [t + 2 * bleed_px for t in trim]
    check_canvas_size(total[0], total[1], dpi)
    return PrintGeometry(total[0], total[1], bleed_px, dpi, requested, snapped)


MAX_SIDE_PX = 1_000_000  # TIFF and libvips handle more, but a tile plan this wide is 4 GB
MAX_PIXELS = 1 << 36  # 68.7 Gpx: a 2 x 2 m wall at 2400 dpi; its raw RGB alone is 206 GB


def check_canvas_size(width_px: int, height_px: int, dpi: float) -> None:
    """Refuse a print too large to plan, before anything is allocated for it."""
    for name, value in (("width", width_px), ("height", height_px)):
        if value > MAX_SIDE_PX:
            raise SpecError(
                f"print.{name}: {value:,} px with bleed at {dpi:g} dpi ("
                f"{px_to_mm(value, dpi) / 1000:.1f} m); at most {MAX_SIDE_PX:,} px per side: "
                "lower print.dpi or the size")
    if width_px * height_px > MAX_PIXELS:
        raise SpecError(
            f"print: {width_px:,} x {height_px:,} px = {width_px * height_px / 1e9:.1f} Gpx at "
            f"{dpi:g} dpi; at most {MAX_PIXELS / 1e9:.1f} Gpx: lower print.dpi or the size")
