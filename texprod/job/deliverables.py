"""The files a press gets beside the print TIFF: one grey TIFF per spot plate
(`output.plates_as: files`), the region map (`output.region_map`) and the PDF/X-4
(`output.formats: [tiff, pdf]`).

Plate files and the region map are made from the plan band by band (a band is a few
hundred rows of labels looked up in the placed mask), so memory stays flat; the PDF is
made from the finished print TIFF (and plate files), read back band by band.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyvips

from texprod import __version__
from texprod.job.plan import JobPlan
from texprod.press.colour import DEFAULT_CMYK_PROFILE, OutputColour, to_output
from texprod.press.pdf import SpotInk, write_pdfx4
from texprod.press.preflight import Check
from texprod.press.printfile import TILE, WrittenTiff, assemble_tiff, encode_band

BAND_ROWS = 4 * TILE  # rows made and encoded at a time


def _chunks(rows: Callable[[int, int], np.ndarray], height: int, plan: JobPlan
            ) -> Iterator[bytes]:
    """Encoded TIFF chunks, in file order, of the (h, W, 1) bands `rows(y, h)` makes."""
    for y in range(0, height, BAND_ROWS):
        yield from encode_band(rows(y, min(BAND_ROWS, height - y)), plan.tiff)


def write_plate_file(plan: JobPlan, i: int) -> WrittenTiff:
    """Spot plate `i` as a grey TIFF of the print's geometry and dpi, full ink = black
    (MinIsWhite), named after the ink."""
    g, c = plan.geometry, plan.colour
    dtype = np.dtype(np.uint8 if c.bits == 8 else np.uint16)
    plate, path = plan.plates.plates[i], plan.outputs.plate_files[i]

    def rows(y: int, h: int) -> np.ndarray:
        return plan.plates.rows(y, h, dtype, which=[i])

    description = json.dumps({"texprod": {
        "version": __version__, "plate": plate.summary, "spec_digest": plan.spec_digest,
        "print": plan.outputs.tiff.name, "width_px": g.width_px, "height_px": g.height_px,
        "dpi": g.dpi}})
    return assemble_tiff(_chunks(rows, g.height_px, plan), path, width=g.width_px,
                         height=g.height_px, bands=1, dtype=dtype, options=plan.tiff,
                         dpi=g.dpi, icc_profile=None, description=description,
                         ink_plate=True)


def write_region_map(plan: JobPlan) -> WrittenTiff:
    """The label TIFF: each pixel's paint level or quilt block, 8 or 16 bit, with the
    legend in its description (and in the print's provenance)."""
    g, regions = plan.geometry, plan.texture.regions
    path = plan.outputs.region_map
    assert path is not None
    dtype = np.dtype(np.uint8 if regions.bits == 8 else np.uint16)

    def rows(y: int, h: int) -> np.ndarray:
        return regions.rows(y, h)[:, :, None]

    description = json.dumps({"texprod": {
        "version": __version__, "region_map": regions.provenance(path.name),
        "spec_digest": plan.spec_digest, "print": plan.outputs.tiff.name}})
    return assemble_tiff(_chunks(rows, g.height_px, plan), path, width=g.width_px,
                         height=g.height_px, bands=1, dtype=dtype, options=plan.tiff,
                         dpi=g.dpi, icc_profile=None, description=description)


def print_bands(plan: JobPlan, rows: int = BAND_ROWS, tiff: Path | None = None,
                plate_files: list[Path] | None = None) -> Iterator[np.ndarray]:
    """The finished print read back band by band, with the spot plates as extra channels
    whichever way they were written: (h, W, 4 + plates)."""
    g = plan.geometry
    tiff = tiff or plan.outputs.tiff
    plate_files = list(plan.outputs.plate_files) if plate_files is None else plate_files
    image = pyvips.Image.new_from_file(str(tiff), access="sequential")
    plates = [pyvips.Image.new_from_file(str(p), access="sequential") for p in plate_files]
    if plates:  # MinIsWhite files: libvips shows ink as black, i.e. inverted; undo it
        top = 255 if plan.colour.bits == 8 else 65535
        image = image.bandjoin([(top - p).cast(image.format) for p in plates])
    dtype = np.uint8 if plan.colour.bits == 8 else np.uint16
    for y in range(0, g.height_px, rows):
        h = min(rows, g.height_px - y)
        band = image.crop(0, y, g.width_px, h).write_to_memory()
        yield np.frombuffer(band, dtype).reshape(h, g.width_px, image.bands)


def check_plates(plan: JobPlan, tiff: Path | None = None) -> list[Check]:
    """Each spot plate read back from the print (its channel, or its file beside the print)
    and compared, pixel for pixel, with the plate the plan makes from the mask: registered
    or not. `tiff`: the print to check (default: the plan's)."""
    if not plan.plates:
        return []
    tiff = tiff or plan.outputs.tiff
    files = [tiff.parent / p.name for p in plan.outputs.plate_files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        return [Check(f"plate.{p.name}", False, None, "a plate file beside the print",
                      f"{f} is missing") for p, f in zip(plan.plates.plates, files,
                                                          strict=True) if f in missing]
    dtype = np.dtype(np.uint8 if plan.colour.bits == 8 else np.uint16)
    wrong = [0] * len(plan.plates.plates)
    first: list[tuple[int, int] | None] = [None] * len(plan.plates.plates)
    y = 0
    for band in print_bands(plan, tiff=tiff, plate_files=files):
        expected = plan.plates.rows(y, band.shape[0], dtype)  # (h, W, P)
        for i in range(expected.shape[2]):
            differs = band[:, :, 4 + i] != expected[:, :, i]
            if differs.any():
                wrong[i] += int(differs.sum())
                if first[i] is None:
                    row, col = np.argwhere(differs)[0]
                    first[i] = (int(col), y + int(row))
        y += band.shape[0]
    checks = []
    for i, plate in enumerate(plan.plates.plates):
        where = f"channel {4 + i} ({plate.name})" if not files else files[i].name
        detail = "" if not wrong[i] else (f"{wrong[i]:,} pixels of {where} differ from the "
                                          f"plate the mask makes, the first at {first[i]}")
        checks.append(Check(f"plate.{plate.name}", not wrong[i],
                            "registered" if not wrong[i] else f"{wrong[i]:,} px off",
                            "registered with the mask", detail))
    return checks


def write_pdf(plan: JobPlan, provenance: dict) -> Path:
    """The PDF/X-4 of the finished print: the raster as DeviceCMYK under the output intent
    of the print's profile, each spot plate a Separation overprinting it; TrimBox and
    BleedBox from the spec's millimetres."""
    g, c = plan.geometry, plan.colour
    path = plan.outputs.pdf
    assert path is not None and c.color == "cmyk"
    trim = g.trim_mm if g.snapped else plan.geometry.requested_trim_mm  # snapped: a period
    spots = [SpotInk(p.name, alternate_cmyk(p.preview, c)) for p in plan.plates.plates]
    return write_pdfx4(
        path, print_bands(plan), width_px=g.width_px, height_px=g.height_px, bits=c.bits,
        dpi=g.dpi, trim_mm=trim, bleed_mm=plan.spec.print.bleed_mm,
        output_profile=c.profile, output_condition=output_condition(c),
        title=plan.spec.description or plan.spec.name, provenance=provenance, spots=spots)


def output_condition(colour: OutputColour) -> str:
    """The OutputIntent's condition: FOGRA39 for texprod's profile, else its description."""
    return "FOGRA39" if colour.profile_path is not None and \
        colour.profile_path.name == DEFAULT_CMYK_PROFILE else colour.description


def alternate_cmyk(preview: tuple[int, int, int], colour: OutputColour
                   ) -> tuple[float, float, float, float]:
    """How PDF viewers show 100 % of a spot ink: its sRGB preview colour through the print's
    own transform, as CMYK 0..1."""
    pixel = pyvips.Image.new_from_array(np.array([[preview]], np.uint8))  # (1, 1, 3)
    cmyk = to_output(pixel.copy(interpretation="srgb"), replace(colour, bits=8))
    return tuple(v / 255 for v in cmyk.getpoint(0, 0))  # type: ignore[return-value]
