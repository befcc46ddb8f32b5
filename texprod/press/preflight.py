"""Preflight: read a finished print TIFF back and check every promise the job made.

Tags are read with tifffile without decoding pixels; the only pixel pass is the optional
total-area-coverage (TAC) measurement for CMYK files, streamed through libvips in bands
on all cores (`press.tac`), so memory does not grow with the image. The ICC header and
description tag are parsed here in plain Python. A file that is not a TIFF at all raises
:class:`TexprodError`; everything else (missing provenance, wrong dpi, alpha, ...)
becomes a failed :class:`Check` in the report.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from texprod.errors import TexprodError
from texprod.press.colour import parse_icc
from texprod.press.promise import FILE, RECORD, Promise
from texprod.press.tac import TacError, measure_tac
from texprod.press.tiff_tags import (
    COMPRESSION_NAMES,
    EXTRASAMPLE_UNSPECIFIED,
    INKSET_CMYK,
    INKSET_MULTI,
    PHOTOMETRIC_RGB,
    PHOTOMETRIC_SEPARATED,
    PROCESS_INKS,
    TAG_DESCRIPTION,
    TAG_EXTRASAMPLES,
    TAG_ICC,
    TAG_INK_NAMES,
    TAG_INKSET,
    TAG_NUMBER_OF_INKS,
    TAG_PHOTOSHOP_LAYERS,
    TAG_SUBIFDS,
)

_COMPRESSION_ALIASES = {
    "none": "none", "uncompressed": "none", "raw": "none",
    "lzw": "lzw",
    "deflate": "deflate", "zlib": "deflate", "zip": "deflate", "adobe_deflate": "deflate",
}
_LAYOUT_ALIASES = {"tiled": "tiled", "tile": "tiled", "tiles": "tiled",
                   "strips": "strips", "strip": "strips", "striped": "strips"}
_RESUNIT_NAMES = {1: "none", 2: "inch", 3: "centimeter"}
_PREDICTOR_NAMES = {1: "none", 2: "horizontal", 3: "floatingpoint"}

DPI_TOLERANCE = 0.01


@dataclass(frozen=True)
class Check:
    """One promise: its name, whether the file keeps it, what was found and expected."""

    name: str
    ok: bool
    found: Any
    expected: Any
    detail: str = ""


@dataclass
class InspectionReport:
    path: Path
    facts: dict[str, Any]
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def check(self, name: str) -> Check:
        """The check called `name` (KeyError if it was not produced)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self, indent: int | None = 2) -> str:
        """Facts and checks as JSON: {"path", "ok", "facts", "checks": [{name, ok, ...}]}."""
        doc = {
            "path": str(self.path),
            "ok": self.ok,
            "facts": self.facts,
            "checks": [asdict(c) for c in self.checks],
        }
        return json.dumps(doc, indent=indent, default=_json_default)

    def table(self) -> str:
        """A human summary: a block of facts, then one aligned row per check."""
        lines = [f"preflight {self.path}", ""]
        rows = _fact_rows(self.facts)
        key_w = max(len(k) for k, _ in rows)
        lines += [f"  {k.ljust(key_w)}  {v}" for k, v in rows]
        lines.append("")
        header = ("check", "result", "found", "expected")
        body = [(c.name, "ok" if c.ok else "FAIL", _short(c.found), _short(c.expected))
                for c in self.checks]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines.append(fmt.format(*header).rstrip())
        lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
        for c, row in zip(self.checks, body, strict=True):
            line = fmt.format(*row).rstrip()
            if not c.ok and c.detail:
                line += f"  <- {c.detail}"
            lines.append(line)
        n_fail = len(self.failed)
        lines.append("")
        lines.append(f"{len(self.checks)} checks, "
                     + ("all ok" if n_fail == 0 else f"{n_fail} FAILED"))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# public entry points


def inspect_tiff(path: str | os.PathLike, expect: Promise | None = None,
                 measure_tac: bool = True) -> InspectionReport:
    """Read `path` back and check it; with `expect`, also compare every non-None promise.

    Raises TexprodError only when the file cannot be read as a TIFF at all.
    """
    path = Path(path)
    facts = _read_facts(path)
    prov = facts.get("provenance")

    checks: list[Check] = []
    checks.append(_check_readable(facts))
    checks.append(_check_single_page(facts))
    checks.append(_check_no_alpha(facts))
    checks.append(_check_photometric(facts))
    checks.append(_check_planar(facts))
    checks.append(_check_bits(facts))
    checks.append(_check_compression(facts))
    checks.append(_check_predictor(facts))
    checks.append(_check_resolution(facts))
    checks.append(_check_icc(facts))
    checks.append(_check_provenance(facts))
    if prov is not None:
        checks += _compare(facts, Promise.from_provenance(prov), "provenance",
                           Promise.names(FILE))
        if "trim_box_px" in prov and "bleed_px" in prov:  # else the provenance check failed
            checks.append(_check_trim_box(facts, prov))
        trim_mm = _check_trim_mm(facts, prov)
        if trim_mm is not None:
            checks.append(trim_mm)

    is_cmyk = facts["color"] == "cmyk"
    if is_cmyk and measure_tac:
        _measure_tac(path, facts)
    limit = expect.tac_limit if expect is not None else None
    limit_source = "expectation"
    if limit is None and prov is not None and prov.get("tac_limit") is not None:
        limit, limit_source = prov["tac_limit"], "provenance"
    if is_cmyk and measure_tac:
        checks.append(_check_tac(facts, limit, limit_source))
    elif is_cmyk and expect is not None and expect.tac_limit is not None:
        # an explicit limit is never passed silently; the provenance's is just not re-checked
        checks.append(Check("tac", False, None, limit,
                            "TAC not measured (measure_tac=False), so the limit is unverified"))

    if expect is not None:
        checks += _compare(facts, expect, "expect", Promise.names(FILE) + Promise.names(RECORD))
    return InspectionReport(path=path, facts=facts, checks=checks)


# --------------------------------------------------------------------------------------------
# reading


def _read_facts(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise TexprodError(f"preflight: {str(path)!r} does not exist")
    if path.is_dir():
        raise TexprodError(f"preflight: {str(path)!r} is a directory; name a .tif file")
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            facts = _page_facts(tif, page)
            facts["pages"] = len(tif.pages)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError,
            struct.error) as exc:
        raise TexprodError(f"preflight: {str(path)!r} is not a readable TIFF "
                           f"({type(exc).__name__}: {exc})") from exc
    facts["path"] = str(path)
    facts["file_bytes"] = path.stat().st_size
    return facts


def _tag(page, code: int, default: Any = None) -> Any:
    tag = page.tags.get(code)
    return default if tag is None else tag.value


def _page_facts(tif: tifffile.TiffFile, page) -> dict[str, Any]:
    width, height = int(page.imagewidth), int(page.imagelength)
    samples = int(page.samplesperpixel)
    bps = _tag(page, 258, 1)
    bits_all = [int(b) for b in (bps if isinstance(bps, tuple | list) else [bps] * samples)]
    sample_format = _tag(page, 339, 1)
    sample_formats = sorted({int(s) for s in (sample_format if isinstance(sample_format,
                                                                          tuple | list)
                                              else [sample_format])})
    photometric = int(_tag(page, 262, -1))
    inkset = _tag(page, TAG_INKSET)
    ink_names = _tag(page, TAG_INK_NAMES)
    inks = [n for n in (ink_names.split("\0") if isinstance(ink_names, str) else
                        list(ink_names) if ink_names else []) if n] or None
    number_of_inks = _tag(page, TAG_NUMBER_OF_INKS)
    extrasamples = _tag(page, TAG_EXTRASAMPLES)
    if extrasamples is not None and not isinstance(extrasamples, tuple | list):
        extrasamples = (extrasamples,)
    comp_code = int(_tag(page, 259, 1))
    predictor = int(_tag(page, 317, 1))
    tiled = page.is_tiled

    xres, yres, unit = _tag(page, 282), _tag(page, 283), _tag(page, 296)
    unit_code = int(unit) if unit is not None else (2 if xres is not None else None)
    x_ppu, y_ppu = _rational(xres), _rational(yres)
    to_inch = {2: 1.0, 3: 2.54}.get(unit_code)
    x_dpi = x_ppu * to_inch if x_ppu is not None and to_inch else None
    y_dpi = y_ppu * to_inch if y_ppu is not None and to_inch else None
    dpi = x_dpi if x_dpi is not None and y_dpi is not None and math.isclose(
        x_dpi, y_dpi, abs_tol=DPI_TOLERANCE) else None

    if photometric == PHOTOMETRIC_RGB:
        color = "rgb"
    elif photometric == PHOTOMETRIC_SEPARATED and (
            int(inkset or INKSET_CMYK) == INKSET_CMYK
            or (inks is not None and inks[:4] == list(PROCESS_INKS))):
        color = "cmyk"
    else:
        color = _photometric_name(photometric)

    icc_bytes = _tag(page, TAG_ICC)
    icc: dict[str, Any] | None = None
    icc_error = None
    if icc_bytes is not None:
        try:
            icc = parse_icc(bytes(icc_bytes))
        except ValueError as exc:
            icc_error = str(exc)

    prov, prov_error, prov_raw = _read_provenance(page)

    offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
    counts = np.asarray(page.databytecounts, dtype=np.uint64)
    if tiled:
        tw, th = int(page.tilewidth), int(page.tilelength)
        n_expected = math.ceil(width / tw) * math.ceil(height / th)
    else:
        rps = int(_tag(page, 278, height) or height)
        tw, th = None, None
        n_expected = math.ceil(height / max(1, min(rps, height)))
    planar = int(_tag(page, 284, 1))
    if planar == 2:
        n_expected *= samples

    bits = bits_all[0] if len(set(bits_all)) == 1 else bits_all
    facts: dict[str, Any] = {
        "bigtiff": bool(tif.is_bigtiff),
        "byteorder": "little" if tif.byteorder == "<" else "big",
        "width_px": width,
        "height_px": height,
        "samples": samples,
        "bits": bits,
        "sample_format": sample_formats[0] if len(sample_formats) == 1 else sample_formats,
        "photometric": _photometric_name(photometric),
        "photometric_code": photometric,
        "inkset": None if inkset is None else int(inkset),
        "inks": inks,
        "number_of_inks": None if number_of_inks is None else int(number_of_inks),
        "extra_samples": None if extrasamples is None else [int(e) for e in extrasamples],
        "color": color,
        "compression": COMPRESSION_NAMES.get(comp_code, f"code {comp_code}"),
        "compression_code": comp_code,
        "predictor": _PREDICTOR_NAMES.get(predictor, f"code {predictor}"),
        "layout": "tiled" if tiled else "strips",
        "tile_px": [tw, th] if tiled else None,
        "rows_per_strip": None if tiled else int(_tag(page, 278, height) or height),
        "planar": "contig" if planar == 1 else ("separate" if planar == 2 else str(planar)),
        "orientation": None if _tag(page, 274) is None else int(_tag(page, 274)),
        "resolution_unit": None if unit_code is None else _RESUNIT_NAMES.get(unit_code,
                                                                             str(unit_code)),
        "resolution": None if x_ppu is None else [_round(x_ppu), _round(y_ppu)],
        "x_dpi": _round(x_dpi),
        "y_dpi": _round(y_dpi),
        "dpi": _round(dpi),
        "size_mm": ([_round(width / dpi * 25.4, 2), _round(height / dpi * 25.4, 2)]
                    if dpi else None),
        "subifds": TAG_SUBIFDS in page.tags,
        "photoshop_layers": TAG_PHOTOSHOP_LAYERS in page.tags,
        "segments": int(offsets.size),
        "segments_expected": int(n_expected),
        "segments_beyond_eof": 0,  # filled below
        "segments_empty": int(np.count_nonzero(counts == 0)),
        "icc": icc,
        "icc_bytes": None if icc_bytes is None else len(icc_bytes),
        "icc_error": icc_error,
        "icc_description": icc["description"] if icc else None,
        "provenance": prov,
        "provenance_error": prov_error,
        "provenance_raw": prov_raw if prov is None else None,
        "tac_max": None,
        "tac_at": None,
        "tac_error": None,
    }
    file_size = tif.filehandle.size
    if offsets.size and counts.size == offsets.size:
        facts["segments_beyond_eof"] = int(np.count_nonzero(offsets + counts > file_size))
    trim = prov.get("trim_box_px") if prov else None
    if dpi and _is_box(trim):
        facts["trim_mm"] = [_round(trim[2] / dpi * 25.4, 2), _round(trim[3] / dpi * 25.4, 2)]
    else:
        facts["trim_mm"] = None
    bleed = prov.get("bleed_px") if prov else None
    facts["bleed_px"] = bleed if isinstance(bleed, int) else None
    facts["bleed_mm"] = (_round(bleed / dpi * 25.4, 2)
                         if dpi and isinstance(bleed, int | float) else None)
    return facts


def _read_provenance(page) -> tuple[dict | None, str | None, str | None]:
    """(provenance inner dict, error, raw description) from any ImageDescription tag."""
    descriptions = page.tags.getall(TAG_DESCRIPTION, default=None) or []
    if not descriptions:
        return None, "no ImageDescription tag", None
    first_error = None
    raw_first = None
    for tag in descriptions:
        value = tag.value
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        value = str(value)
        raw_first = raw_first if raw_first is not None else value[:200]
        try:
            doc = json.loads(value)
        except ValueError as exc:
            first_error = first_error or f"ImageDescription is not JSON ({exc})"
            continue
        if isinstance(doc, dict) and isinstance(doc.get("texprod"), dict):
            return doc["texprod"], None, None
        first_error = first_error or 'ImageDescription JSON has no "texprod" object'
    return None, first_error, raw_first


def _measure_tac(path: Path, facts: dict[str, Any]) -> None:
    """Maximum C+M+Y+K in percent, decoded by libvips on all cores; fills tac_max /
    tac_at / tac_error."""
    bits, samples = facts["bits"], facts["samples"]
    if samples < 4 or bits not in (8, 16):
        facts["tac_error"] = f"cannot measure TAC of {samples} x {bits}-bit samples"
        return
    chunk_rows = facts["tile_px"][1] if facts["tile_px"] else facts["rows_per_strip"]
    try:
        peak = measure_tac(path, facts["height_px"], facts["width_px"], samples, chunk_rows)
    except TacError as exc:
        facts["tac_error"] = str(exc)
        return
    full = 255.0 if bits == 8 else 65535.0
    facts["tac_max"] = round(peak.total * 100.0 / full, 2)
    facts["tac_at"] = [peak.x, peak.y]


# --------------------------------------------------------------------------------------------
# ICC


# --------------------------------------------------------------------------------------------
# checks


def _check_readable(f: dict) -> Check:
    problems = []
    if f["segments"] != f["segments_expected"]:
        problems.append(f"{f['segments']} data segments, the geometry needs "
                        f"{f['segments_expected']}")
    if f["segments_beyond_eof"]:
        problems.append(f"{f['segments_beyond_eof']} segments end past the end of the file "
                        f"({f['file_bytes']} bytes): truncated?")
    if f["segments_empty"]:
        problems.append(f"{f['segments_empty']} segments are empty (0 bytes)")
    found = (f"{'BigTIFF' if f['bigtiff'] else 'TIFF'}, "
             f"{f['segments']} {'tiles' if f['layout'] == 'tiled' else 'strips'}")
    return Check("readable", not problems, found, "all data segments inside the file",
                 "; ".join(problems))


def _check_single_page(f: dict) -> Check:
    problems = []
    if f["pages"] != 1:
        problems.append(f"{f['pages']} pages (IFDs); a print file has exactly 1")
    if f["subifds"]:
        problems.append("SubIFDs present (hidden images)")
    if f["photoshop_layers"]:
        problems.append("Photoshop layer data (tag 37724) present; flatten the file")
    return Check("single_page", not problems, f["pages"], 1, "; ".join(problems))


def _spot_inks(f: dict) -> list[str] | None:
    """The spot inks of a CMYK + spots file, the way prepress tools write one: SEPARATED,
    InkSet 2, NumberOfInks and InkNames for every channel, the process inks first, and the
    extra channels marked unspecified (data, not alpha). None when the file is not one."""
    samples, extra = f["samples"], f["extra_samples"] or []
    if (samples <= 4 or f["photometric_code"] != PHOTOMETRIC_SEPARATED
            or f["inkset"] != INKSET_MULTI or f["number_of_inks"] != samples
            or f["inks"] is None or len(f["inks"]) != samples
            or f["inks"][:4] != list(PROCESS_INKS)
            or extra != [EXTRASAMPLE_UNSPECIFIED] * (samples - 4)):
        return None
    return f["inks"][4:]


def _check_no_alpha(f: dict) -> Check:
    extra = f["extra_samples"]
    spots = _spot_inks(f)
    if spots:
        return Check("no_alpha", True, f"{len(spots)} spot ink(s): {', '.join(spots)}",
                     "none (spot inks are data)")
    if extra:
        names = {0: "unspecified", 1: "associated alpha", 2: "unassociated alpha"}
        kinds = ", ".join(names.get(e, str(e)) for e in extra)
        detail = f"ExtraSamples tag present ({kinds}); print files are flattened, no alpha"
        if all(e == EXTRASAMPLE_UNSPECIFIED for e in extra):
            detail += (" (spot inks need SEPARATED, InkSet 2, NumberOfInks and InkNames for "
                       "every channel, process inks first)")
        return Check("no_alpha", False, f"{len(extra)} extra sample(s): {kinds}", "none",
                     detail)
    if f["samples"] not in (3, 4):
        return Check("no_alpha", False, f"{f['samples']} samples", "3 (RGB) or 4 (CMYK)",
                     "unexpected number of samples per pixel")
    return Check("no_alpha", True, "none", "none")


def _check_photometric(f: dict) -> Check:
    samples, photo, inkset = f["samples"], f["photometric_code"], f["inkset"]
    found = f"{samples} samples, {f['photometric']}"
    if inkset is not None:
        found += f", InkSet {inkset}"
    if samples == 3:
        expected = "3 samples, RGB"
        ok = photo == PHOTOMETRIC_RGB
        detail = "" if ok else f"3 samples must be photometric RGB, got {f['photometric']}"
    elif samples == 4:
        expected = "4 samples, SEPARATED, InkSet 1 (CMYK)"
        ok = photo == PHOTOMETRIC_SEPARATED and inkset in (None, INKSET_CMYK)
        if photo != PHOTOMETRIC_SEPARATED:
            detail = f"4 samples must be photometric SEPARATED (CMYK), got {f['photometric']}"
            if photo == PHOTOMETRIC_RGB:
                detail += " (RGB + alpha?)"
        elif not ok:
            detail = f"InkSet {inkset} is not 1 (CMYK)"
        else:
            detail = "InkSet absent: TIFF default 1 (CMYK)" if inkset is None else ""
    elif _spot_inks(f):
        expected, ok, detail = "SEPARATED, InkSet 2, CMYK + named spot inks", True, ""
    else:
        expected, ok = "3 (RGB) or 4 (CMYK) samples, or CMYK + named spot inks", False
        detail = f"{samples} samples per pixel"
    return Check("photometric", ok, found, expected, detail)


def _check_planar(f: dict) -> Check:
    ok = f["planar"] == "contig"
    return Check("planar_contig", ok, f["planar"], "contig",
                 "" if ok else "PlanarConfiguration must be 1 (chunky, interleaved samples)")


def _check_bits(f: dict) -> Check:
    bits, fmt = f["bits"], f["sample_format"]
    ok = bits in (8, 16) and fmt == 1
    detail = ""
    if bits not in (8, 16):
        detail = f"bits per sample {bits}, must be 8 or 16 for every sample"
    elif fmt != 1:
        detail = f"SampleFormat {fmt}, must be 1 (unsigned integer)"
    return Check("bits_supported", ok, bits, "8 or 16 (unsigned)", detail)


def _check_compression(f: dict) -> Check:
    ok = f["compression_code"] in COMPRESSION_NAMES
    return Check("compression_supported", ok, f["compression"], "lzw, deflate or none",
                 "" if ok else f"TIFF compression code {f['compression_code']} is not one "
                               "the pipeline writes (LZW 5, deflate 8/32946, none 1)")


def _check_predictor(f: dict) -> Check:
    if f["compression"] == "none":
        ok = f["predictor"] == "none"
        return Check("predictor", ok, f["predictor"], "none",
                     "" if ok else "a predictor on an uncompressed file")
    ok = f["predictor"] == "horizontal"
    return Check("predictor", ok, f["predictor"], "horizontal",
                 "" if ok else f"{f['compression']} compression should use the horizontal "
                               "predictor (Predictor=2)")


def _check_resolution(f: dict) -> Check:
    unit, x, y = f["resolution_unit"], f["x_dpi"], f["y_dpi"]
    raw = f["resolution"]
    found = (f"{x} x {y} per inch" if unit == "inch"
             else f"{raw[0]} x {raw[1]} per {unit}" if raw is not None else "absent")
    if raw is None:
        return Check("resolution", False, "absent", "XResolution/YResolution in inch",
                     "no XResolution/YResolution tags: the file has no print size")
    if unit != "inch":
        return Check("resolution", False, found, "ResolutionUnit inch",
                     f"ResolutionUnit is {unit!r}; print files give dpi (unit 2, inch)")
    if not x or not y or x <= 0 or y <= 0:
        return Check("resolution", False, found, "positive dpi", "zero or missing resolution")
    if f["dpi"] is None:
        return Check("resolution", False, found, "XResolution == YResolution",
                     f"non-square pixels: {x} x {y} dpi")
    return Check("resolution", True, found, "XResolution == YResolution, inch")


def _check_icc(f: dict) -> Check:
    want = {"rgb": "RGB ", "cmyk": "CMYK"}.get(f["color"])
    if f["icc_bytes"] is None:
        return Check("icc_colour_space", True, None, want, "no ICC profile embedded")
    if f["icc_error"]:
        return Check("icc_colour_space", False, "unparsable", want,
                     f"embedded ICC profile is corrupt: {f['icc_error']}")
    icc = f["icc"]
    if not icc["size_matches"]:
        return Check("icc_colour_space", False, icc["colour_space"], want,
                     f"ICC header says {icc['size']} bytes, the tag holds {f['icc_bytes']}")
    ok = want is not None and icc["colour_space"] == want
    return Check("icc_colour_space", ok, icc["colour_space"], want,
                 "" if ok else f"ICC profile {icc['description']!r} is for "
                               f"{icc['colour_space'].strip()} data but the file is "
                               f"{f['photometric']} ({f['samples']} samples)")


def _check_provenance(f: dict) -> Check:
    prov = f["provenance"]
    if prov is None:
        raw = f["provenance_raw"]
        detail = f["provenance_error"] + (f"; found {raw[:60]!r}" if raw else "")
        return Check("provenance", False, None, "texprod provenance JSON", detail)
    missing = [k for k in Promise.required_keys() if k not in prov]
    return Check("provenance", not missing, f"texprod {prov.get('version', '?')}",
                 "texprod provenance JSON",
                 f"provenance lacks {', '.join(missing)}" if missing else "")


def _is_box(v: Any) -> bool:
    return (isinstance(v, list | tuple) and len(v) == 4
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v))


def _check_trim_box(f: dict, prov: dict) -> Check:
    box, bleed = prov.get("trim_box_px"), prov.get("bleed_px")
    w, h = f["width_px"], f["height_px"]
    if not _is_box(box) or not isinstance(bleed, int):
        return Check("trim_box", False, box, "[x, y, w, h] ints and an int bleed",
                     f"provenance trim_box_px {box!r} / bleed_px {bleed!r} are not usable")
    box = list(box)
    expected = [bleed, bleed, w - 2 * bleed, h - 2 * bleed]
    x, y, bw, bh = box
    if x < 0 or y < 0 or bw <= 0 or bh <= 0 or x + bw > w or y + bh > h:
        return Check("trim_box", False, box, expected,
                     f"trim box [x={x}, y={y}, w={bw}, h={bh}] is not inside the "
                     f"{w} x {h} image")
    ok = box == expected
    return Check("trim_box", ok, box, expected,
                 "" if ok else f"trim box is not the image minus {bleed} px bleed on each side")


def _check_trim_mm(f: dict, prov: dict) -> Check | None:
    """Provenance trim_mm / bleed_mm agree with the pixels at the file's dpi (to one pixel)."""
    dpi, trim_mm, bleed_mm = f["dpi"], prov.get("trim_mm"), prov.get("bleed_mm")
    box, bleed = prov.get("trim_box_px"), prov.get("bleed_px")
    if not dpi or not _is_box(box) or not isinstance(trim_mm, list | tuple) or len(trim_mm) != 2:
        return None
    px_mm = 25.4 / dpi
    found = [_round(box[2] * px_mm, 2), _round(box[3] * px_mm, 2)]
    problems = [f"trim {axis} {got} mm vs promised {want} mm"
                for axis, got, want in zip("wh", found, trim_mm, strict=True)
                if abs(got - want) > px_mm]
    if isinstance(bleed, int) and isinstance(bleed_mm, int | float):
        got = _round(bleed * px_mm, 2)
        if abs(got - bleed_mm) > px_mm:
            problems.append(f"bleed {got} mm vs promised {bleed_mm} mm")
    return Check("trim_mm", not problems, found, list(trim_mm),
                 "; ".join(problems) + (f" at {dpi} dpi" if problems else ""))


def _check_tac(f: dict, limit: float | None, source: str) -> Check:
    if f["tac_error"]:
        return Check("tac", False, None, limit, f["tac_error"])
    tac = f["tac_max"]
    if limit is None:
        return Check("tac", True, tac, None, "no ink limit promised; measured only")
    ok = tac <= limit + 1e-9
    detail = "" if ok else (f"total ink {tac}% at pixel x={f['tac_at'][0]}, y={f['tac_at'][1]} "
                            f"exceeds the {source} limit {limit}%")
    return Check("tac", ok, tac, limit, detail)


def _compare(f: dict, exp: Promise, prefix: str, names: list[str]) -> list[Check]:
    """One check per promised (non-None) field of `exp` among `names`, named prefix.field:
    FILE fields against the file's tags, RECORD fields against its provenance."""
    prov = f["provenance"] or {}
    out = []
    for name in names:
        want = getattr(exp, name)
        if want is None or (name == "icc_description" and exp.embed_icc is False):
            continue
        cname = f"{prefix}.{name}"
        if name == "dpi":
            got = f["dpi"]
            ok = got is not None and abs(got - want) <= DPI_TOLERANCE
            detail = "" if ok else (f"file has {got} dpi, promised {want}" if got is not None
                                    else f"file has no usable dpi, promised {want}")
        elif name in ("compression", "layout"):
            aliases = _COMPRESSION_ALIASES if name == "compression" else _LAYOUT_ALIASES
            got = f[name]
            want = aliases.get(str(want).lower(), str(want).lower())
            ok = got == want
            detail = "" if ok else f"file is {got}, promised {want}"
        elif name == "color":
            got, want = f["color"], str(want).lower()
            ok = got == want
            detail = "" if ok else f"file is {got} ({f['photometric']}), promised {want}"
        elif name == "bigtiff":
            got = f["bigtiff"]
            ok = got == bool(want)
            detail = "" if ok else (f"file is {'BigTIFF' if got else 'classic TIFF'}, promised "
                                    f"{'BigTIFF' if want else 'classic TIFF'}")
        elif name == "embed_icc":
            got = f["icc_bytes"] is not None
            ok = got == bool(want)
            detail = "" if ok else ("ICC profile embedded (tag 34675) but the job said not to"
                                    if got else "no ICC profile embedded but one was promised")
        elif name == "icc_description":
            got = f["icc_description"]
            ok = got == want
            detail = "" if ok else ("no ICC profile embedded" if f["icc_bytes"] is None
                                    else f"embedded profile is {got!r}, promised {want!r}")
        elif name in Promise.names(FILE):  # width_px, height_px, bits, ...: a fact as it is
            got = f[name]
            ok = got == want
            detail = "" if ok else f"file has {name} {got}, promised {want}"
        else:  # RECORD: trim_box_px, bleed_px, digests, seed: what the provenance records
            if not f["provenance"]:
                out.append(Check(cname, False, None, _jsonable(want),
                                 "file has no provenance to compare with"))
                continue
            got = prov.get(Promise.key(name))
            if name == "trim_box_px" and isinstance(got, list):
                got = list(got)
            want_cmp = list(want) if isinstance(want, tuple) else want
            ok = got == want_cmp
            detail = "" if ok else f"provenance records {name} {got!r}, promised {want_cmp!r}"
        out.append(Check(cname, ok, _jsonable(got), _jsonable(want), detail))
    return out


# --------------------------------------------------------------------------------------------
# small helpers


def _rational(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, tuple | list):
        if len(v) == 2:
            return v[0] / v[1] if v[1] else None
        return float(v[0]) if v else None
    return float(v)


def _round(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(float(v), nd)


def _photometric_name(code: int) -> str:
    try:
        return tifffile.PHOTOMETRIC(code).name
    except ValueError:
        return f"code {code}"


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _short(v: Any, width: int = 40) -> str:
    s = "-" if v is None else (v if isinstance(v, str) else json.dumps(v, default=str))
    return s if len(s) <= width else s[: width - 1] + "…"


def _fact_rows(f: dict) -> list[tuple[str, str]]:
    prov = f.get("provenance")
    icc = f.get("icc")
    def mm(v):
        return f"{v[0]} x {v[1]} mm" if v else "-"
    rows = [
        ("pixels", f"{f['width_px']} x {f['height_px']} px, {f['samples']} samples"),
        ("size incl. bleed", mm(f["size_mm"])),
        ("size excl. bleed", mm(f["trim_mm"])),
        ("bleed", f"{f['bleed_px']} px = {f['bleed_mm']} mm" if f["bleed_px"] is not None
         else "-"),
        ("dpi", f"{f['dpi']}" if f["dpi"] else f"{f['x_dpi']} x {f['y_dpi']} "
                                               f"({f['resolution_unit']})"),
        ("colour", f"{f['color']} ({f['photometric']})"),
        *([("inks", ", ".join(f["inks"]))] if f.get("inks") else []),
        ("bits", str(f["bits"])),
        ("compression", f"{f['compression']}, predictor {f['predictor']}"),
        ("layout", f"{f['layout']}" + (f" {f['tile_px'][0]}x{f['tile_px'][1]}"
                                       if f["tile_px"] else
                                       f", {f['rows_per_strip']} rows/strip")),
        ("BigTIFF", "yes" if f["bigtiff"] else "no"),
        ("file size", f"{f['file_bytes'] / 2**20:.1f} MiB"),
        ("ICC", (f"{icc['description']!r} ({icc['colour_space'].strip()}, "
                 f"{icc['device_class']}, v{icc['version']}, {icc['size']} bytes)")
         if icc else ("corrupt" if f["icc_error"] else "none")),
        ("TAC", (f"{f['tac_max']}% at x={f['tac_at'][0]}, y={f['tac_at'][1]}"
                 if f["tac_max"] is not None else (f["tac_error"] or "not measured"))),
    ]
    if prov is not None:
        rows += [
            ("spec", f"{prov.get('spec_name', '-')} {prov.get('spec_digest', '-')}"),
            ("model", str(prov.get("model_digest", "-"))),
            ("seed", str(prov.get("seed", "-"))),
            ("texprod", str(prov.get("version", "-"))),
        ]
    else:
        rows.append(("provenance", f"none ({f['provenance_error']})"))
    return rows
