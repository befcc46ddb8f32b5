"""Print geometry: millimetres and dpi to pixels, bleed, trim box, repeat snapping.

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

from texprod.errors import SpecError
from texprod.spec import PrintSpec

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


def print_geometry(spec: PrintSpec, repeat_cell_px: int | None = None) -> PrintGeometry:
    """Pixel geometry of a print; with `repeat_cell_px` the trim snaps to whole cells."""
    bleed_px = mm_to_px(spec.bleed_mm, spec.dpi)
    if spec.width_mm is not None:
        requested = (spec.width_mm, spec.height_mm)
        total = [mm_to_px(_exact(t) + 2 * _exact(spec.bleed_mm), spec.dpi) for t in requested]
    else:
        requested = (px_to_mm(spec.width_px, spec.dpi), px_to_mm(spec.height_px, spec.dpi))
        total = [spec.width_px + 2 * bleed_px, spec.height_px + 2 * bleed_px]
    trim = [t - 2 * bleed_px for t in total]
    for name, value in zip(("width", "height"), trim, strict=True):
        if value < 1:
            raise SpecError(f"print.{name}: got {value} px of trim after the bleed at "
                            f"{spec.dpi} dpi; the print must be at least 1 px")
    snapped = False
    if repeat_cell_px is not None:
        cell = repeat_cell_px
        snapped_trim = [max(1, round(t / cell)) * cell for t in trim]
        snapped = snapped_trim != trim
        trim = snapped_trim
        total = [t + 2 * bleed_px for t in trim]
    return PrintGeometry(total[0], total[1], bleed_px, spec.dpi, requested, snapped)
