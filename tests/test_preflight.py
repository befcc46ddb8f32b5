"""Preflight: good print TIFFs pass, and every broken promise fails the right check."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from texprod.errors import TexprodError
from texprod.press.preflight import InspectionReport, inspect_tiff, parse_icc
from texprod.press.promise import Promise

W, H, BLEED, DPI = 120, 80, 6, 300


@functools.cache
def icc_bytes(kind: str) -> bytes:
    """libvips' built-in profiles: 'srgb' (v4, mluc description), 'cmyk' (v2, desc)."""
    rgb = pyvips.Image.new_from_array(np.zeros((2, 2, 3), np.uint8)).copy(interpretation="srgb")
    if kind == "srgb":
        out = rgb.icc_export(output_profile="srgb")
    else:
        out = rgb.icc_transform("cmyk", input_profile="srgb")
    return out.get("icc-profile-data")


ICC_DESCRIPTION = {"srgb": "sRGB", "cmyk": "Chemical proof"}


def provenance(color: str = "cmyk", bits: int = 8, **over) -> dict:
    prov = {
        "version": "0.1.0", "spec_name": "box-wrap", "spec_digest": "ab" * 8,
        "model_digest": "cd" * 8, "seed": 42, "width_px": W, "height_px": H, "dpi": DPI,
        "trim_box_px": [BLEED, BLEED, W - 2 * BLEED, H - 2 * BLEED], "bleed_px": BLEED,
        "trim_mm": [round((W - 2 * BLEED) / DPI * 25.4, 2),
                    round((H - 2 * BLEED) / DPI * 25.4, 2)],
        "bleed_mm": 0.5, "color": color, "bits": bits,
        "icc_profile": ICC_DESCRIPTION["cmyk" if color == "cmyk" else "srgb"],
        "intent": "relative", "embed_icc": True, "tac_limit": 300 if color == "cmyk" else None,
        "tac_max": 250.0, "compression": "lzw", "layout": "tiled", "bigtiff": False,
        "bigtiff_reason": "small",
    }
    prov.update(over)
    return {"texprod": prov}


def pixels(color: str = "cmyk", bits: int = 8) -> np.ndarray:
    """A gradient whose TAC peaks at 250 % (8-bit) in the bottom-right corner."""
    samples = 4 if color == "cmyk" else 3
    ramp = (np.add.outer(np.arange(H), np.arange(W)) / (H + W - 2))[..., None]
    full = 255 if bits == 8 else 65535
    a = np.round(ramp * np.array([1.0, 0.8, 0.7, 0.0][:samples]) * full)
    return a.astype(np.uint8 if bits == 8 else np.uint16)


def write(path: Path, data: np.ndarray | None = None, *, color: str = "cmyk", bits: int = 8,
          prov: dict | None | str = "default", icc: str | None = "default",
          compression: str | None = "lzw", tiled: bool = True, bigtiff: bool = False,
          resolution=(DPI, DPI), resolutionunit="INCH", **kw) -> Path:
    """Write a small print TIFF the way the pipeline does, with tifffile."""
    if data is None:
        data = pixels(color, bits)
    if prov == "default":
        prov = provenance(color, bits)
    if icc == "default":
        icc = "cmyk" if color == "cmyk" else "srgb"
    description = prov if isinstance(prov, str) or prov is None else json.dumps(prov)
    tifffile.imwrite(
        path, data, photometric="separated" if color == "cmyk" else "rgb",
        compression=compression, predictor=compression is not None,
        tile=(32, 32) if tiled else None, rowsperstrip=None if tiled else 16,
        resolution=resolution, resolutionunit=resolutionunit, bigtiff=bigtiff,
        iccprofile=icc_bytes(icc) if icc else None, description=description, metadata=None,
        **kw)
    return path


def failed(report: InspectionReport) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


# ------------------------------------------------------------------------------------ good files


def test_good_rgb_file_passes_with_the_right_facts(tmp_path):
    path = write(tmp_path / "rgb.tif", color="rgb")
    report = inspect_tiff(path)
    assert report.ok, report.table()
    f = report.facts
    assert (f["width_px"], f["height_px"], f["samples"], f["bits"]) == (W, H, 3, 8)
    assert (f["color"], f["photometric"], f["compression"], f["predictor"]) == (
        "rgb", "RGB", "lzw", "horizontal")
    assert (f["layout"], f["tile_px"], f["bigtiff"], f["pages"]) == ("tiled", [32, 32], False, 1)
    assert f["dpi"] == 300 and f["resolution_unit"] == "inch"
    assert f["size_mm"] == [round(W / DPI * 25.4, 2), round(H / DPI * 25.4, 2)]
    assert f["trim_mm"] == [9.14, 5.76] and f["bleed_mm"] == 0.51
    assert f["icc"]["colour_space"] == "RGB " and f["icc_description"] == "sRGB"
    assert f["icc"]["version"].startswith("4.")
    assert f["tac_max"] is None  # RGB: no ink
    assert f["provenance"]["seed"] == 42
    names = {c.name for c in report.checks}
    assert {"readable", "single_page", "no_alpha", "photometric", "resolution",
            "icc_colour_space", "provenance", "provenance.width_px", "provenance.bits",
            "provenance.color", "provenance.bigtiff", "trim_box", "trim_mm"} <= names
    assert "tac" not in names


def test_good_cmyk_file_passes_and_measures_tac(tmp_path):
    path = write(tmp_path / "cmyk.tif", compression="zlib", tiled=False,
                 prov=provenance(compression="deflate", layout="strips"))
    prov = json.loads(tifffile.TiffFile(path).pages[0].description)
    expect = Promise.from_provenance(prov)
    assert expect.trim_box_px == (BLEED, BLEED, W - 2 * BLEED, H - 2 * BLEED)
    assert expect.icc_description == "Chemical proof" and expect.seed == 42
    report = inspect_tiff(path, expect)
    assert report.ok, report.table()
    f = report.facts
    assert (f["color"], f["photometric"], f["samples"]) == ("cmyk", "SEPARATED", 4)
    assert (f["compression"], f["compression_code"], f["layout"]) == ("deflate", 8, "strips")
    assert f["icc"]["colour_space"] == "CMYK" and f["icc"]["device_class"] == "prtr"
    assert f["icc_description"] == "Chemical proof" and f["icc"]["version"].startswith("2.")
    expected_tac = pixels()[-1, -1].astype(int).sum() * 100 / 255
    assert f["tac_max"] == pytest.approx(expected_tac, abs=0.01)
    assert f["tac_at"] == [W - 1, H - 1]
    assert report.check("tac").ok and report.check("tac").expected == 300
    for name in ("expect.dpi", "expect.trim_box_px", "expect.spec_digest", "expect.seed",
                 "expect.compression", "expect.icc_description", "expect.embed_icc"):
        assert report.check(name).ok


def test_sixteen_bit_cmyk_tac_is_scaled_by_65535(tmp_path):
    path = write(tmp_path / "c16.tif", bits=16, compression="deflate",
                 prov=provenance(bits=16, compression="deflate"))
    report = inspect_tiff(path, Promise(bits=16, compression="zlib"))
    assert report.ok, report.table()
    assert report.facts["compression_code"] == 32946 and report.facts["bits"] == 16
    expected_tac = pixels(bits=16)[-1, -1].astype(int).sum() * 100 / 65535
    assert report.facts["tac_max"] == pytest.approx(expected_tac, abs=0.01)


def test_parse_icc_reads_v2_desc_and_v4_mluc_descriptions():
    v4 = parse_icc(icc_bytes("srgb"))
    assert (v4["description"], v4["colour_space"], v4["pcs"]) == ("sRGB", "RGB ", "XYZ ")
    v2 = parse_icc(icc_bytes("cmyk"))
    assert (v2["description"], v2["colour_space"], v2["pcs"]) == ("Chemical proof", "CMYK", "Lab ")
    assert v2["size"] == len(icc_bytes("cmyk"))
    with pytest.raises(ValueError, match="acsp"):
        parse_icc(b"\0" * 200)


# ------------------------------------------------------------------------------ broken promises


def test_alpha_channel_fails(tmp_path):
    rgba = np.concatenate([pixels("rgb"), np.full((H, W, 1), 255, np.uint8)], axis=2)
    path = write(tmp_path / "rgba.tif", rgba, color="rgb", extrasamples=["unassalpha"])
    bad = failed(inspect_tiff(path))
    assert "alpha" in bad["no_alpha"]
    assert "SEPARATED" in bad["photometric"]


def test_wrong_dpi_fails(tmp_path):
    path = write(tmp_path / "dpi.tif", resolution=(150, 150))
    bad = failed(inspect_tiff(path, Promise(dpi=300)))
    assert "150" in bad["expect.dpi"] and "300" in bad["expect.dpi"]
    assert "150" in bad["provenance.dpi"]
    assert "trim_mm" in bad  # the mm promises no longer hold at 150 dpi
    assert inspect_tiff(path, Promise(dpi=150.004)).check("expect.dpi").ok


def test_no_resolution_fails(tmp_path):
    path = write(tmp_path / "nores.tif", resolution=None, resolutionunit=None)
    report = inspect_tiff(path)
    assert "ResolutionUnit" in failed(report)["resolution"]
    assert report.facts["dpi"] is None and report.facts["size_mm"] is None


def test_resolution_in_centimetres_fails_but_converts(tmp_path):
    path = write(tmp_path / "cm.tif", resolution=(300 / 2.54, 300 / 2.54),
                 resolutionunit="CENTIMETER")
    report = inspect_tiff(path)
    assert "inch" in failed(report)["resolution"]
    assert report.facts["dpi"] == pytest.approx(300, abs=0.01)


def test_icc_present_when_embed_icc_false_fails(tmp_path):
    path = write(tmp_path / "icc.tif", prov=provenance(embed_icc=False))
    report = inspect_tiff(path, Promise(embed_icc=False))
    bad = failed(report)
    assert "34675" in bad["expect.embed_icc"]
    assert "34675" in bad["provenance.embed_icc"]
    # without a profile the same promise holds
    path = write(tmp_path / "noicc.tif", icc=None, prov=provenance(embed_icc=False))
    assert inspect_tiff(path, Promise(embed_icc=False)).ok


def test_icc_colour_space_mismatch_fails(tmp_path):
    path = write(tmp_path / "mismatch.tif", icc="srgb")
    bad = failed(inspect_tiff(path))
    assert "sRGB" in bad["icc_colour_space"] and "SEPARATED" in bad["icc_colour_space"]
    assert "provenance.icc_description" in bad


@pytest.mark.parametrize("description, message", [
    (None, "no ImageDescription"),
    ('{"texprod": {"width_px": 12', "not JSON"),
    ('{"shape": [80, 120, 4]}', "texprod"),
])
def test_missing_or_invalid_provenance_fails(tmp_path, description, message):
    path = write(tmp_path / "prov.tif", prov=description)
    report = inspect_tiff(path)
    assert message in failed(report)["provenance"]
    assert report.facts["provenance"] is None
    assert report.check("readable").ok  # a report, not a crash


def test_incomplete_provenance_names_the_missing_keys(tmp_path):
    prov = provenance()
    del prov["texprod"]["bigtiff"], prov["texprod"]["dpi"]
    bad = failed(inspect_tiff(write(tmp_path / "inc.tif", prov=prov)))
    assert "dpi" in bad["provenance"] and "bigtiff" in bad["provenance"]


def test_trim_box_outside_the_image_fails(tmp_path):
    prov = provenance(trim_box_px=[BLEED, BLEED, W, H - 2 * BLEED])
    bad = failed(inspect_tiff(write(tmp_path / "trim.tif", prov=prov)))
    assert "not inside" in bad["trim_box"]


def test_trim_box_inconsistent_with_bleed_fails(tmp_path):
    prov = provenance(trim_box_px=[BLEED, BLEED, W - 2 * BLEED - 4, H - 2 * BLEED])
    bad = failed(inspect_tiff(write(tmp_path / "trim.tif", prov=prov)))
    assert "bleed" in bad["trim_box"]
    expect = Promise(trim_box_px=(BLEED, BLEED, W - 2 * BLEED, H - 2 * BLEED))
    assert "trim_box_px" in failed(inspect_tiff(tmp_path / "trim.tif", expect))[
        "expect.trim_box_px"]


def test_tac_over_the_limit_fails_and_says_where(tmp_path):
    data = pixels()
    data[9, 17] = 255  # 400 %
    path = write(tmp_path / "tac.tif", data)
    report = inspect_tiff(path)
    check = report.check("tac")
    assert not check.ok and check.found == 400.0 and check.expected == 300
    assert "x=17, y=9" in check.detail and "provenance limit 300" in check.detail
    assert report.facts["tac_at"] == [17, 9]
    # an explicit expectation overrides the provenance's limit
    assert inspect_tiff(path, Promise(tac_limit=400)).check("tac").ok
    # skipping the measurement is never a silent pass of a promised limit
    assert "tac" not in {c.name for c in inspect_tiff(path, measure_tac=False).checks}
    assert not inspect_tiff(path, Promise(tac_limit=300), measure_tac=False).check("tac").ok


def test_bits_mismatch_fails(tmp_path):
    path = write(tmp_path / "bits.tif", pixels(bits=16), bits=16, prov=provenance(bits=8))
    bad = failed(inspect_tiff(path, Promise(bits=8)))
    assert "16" in bad["provenance.bits"] and "8" in bad["provenance.bits"]
    assert "bits" in bad["expect.bits"]


def test_compression_mismatch_fails(tmp_path):
    path = write(tmp_path / "comp.tif", compression="zlib")  # provenance says lzw
    bad = failed(inspect_tiff(path, Promise(compression="LZW")))
    assert "deflate" in bad["expect.compression"] and "lzw" in bad["expect.compression"]
    assert "provenance.compression" in bad
    assert inspect_tiff(path, Promise(compression="deflate")).check(
        "expect.compression").ok


def test_uncompressed_with_predictor_and_unknown_layout_promise(tmp_path):
    path = write(tmp_path / "raw.tif", compression=None,
                 prov=provenance(compression="none", layout="strips"), tiled=False)
    report = inspect_tiff(path, Promise(compression="none", layout="strips"))
    assert report.ok, report.table()
    assert report.facts["rows_per_strip"] == 16 and report.facts["predictor"] == "none"


def test_bigtiff_mismatch_fails(tmp_path):
    path = write(tmp_path / "big.tif", bigtiff=True)  # provenance says classic
    report = inspect_tiff(path, Promise(bigtiff=False))
    bad = failed(report)
    assert "BigTIFF" in bad["provenance.bigtiff"] and "classic" in bad["provenance.bigtiff"]
    assert "expect.bigtiff" in bad
    assert report.facts["bigtiff"] is True and report.check("readable").ok


def test_extra_pages_fail(tmp_path):
    path = write(tmp_path / "two.tif")
    tifffile.imwrite(path, pixels()[:8, :8], photometric="separated", append=True,
                     metadata=None)
    check = inspect_tiff(path).check("single_page")
    assert not check.ok and check.found == 2 and "2 pages" in check.detail


def test_digest_and_seed_expectations(tmp_path):
    path = write(tmp_path / "dig.tif")
    expect = Promise(spec_digest="ab" * 8, model_digest="ef" * 8, seed=7)
    bad = failed(inspect_tiff(path, expect))
    assert set(bad) == {"expect.model_digest", "expect.seed"}
    bad = failed(inspect_tiff(write(tmp_path / "noprov.tif", prov=None), expect))
    assert "no provenance" in bad["expect.spec_digest"]


@pytest.mark.parametrize("tiled", [True, False])
def test_truncated_file_fails_readable(tmp_path, tiled):
    prov = provenance(compression="none", layout="tiled" if tiled else "strips")
    path = write(tmp_path / "cut.tif", compression=None, tiled=tiled, prov=prov)
    path.write_bytes(path.read_bytes()[:-500])
    bad = failed(inspect_tiff(path))
    assert "truncated" in bad["readable"]
    if not tiled:  # libtiff reports a short strip; a short tile is silently padded
        assert "decode" in bad["tac"]


def test_rewritten_file_is_read_afresh(tmp_path):
    """libvips caches loads by file name: a file rewritten in place must not give a stale TAC."""
    path = write(tmp_path / "again.tif")
    first = inspect_tiff(path).facts["tac_max"]
    data = pixels()
    data[3, 4] = 255
    write(path, data)
    assert inspect_tiff(path).facts["tac_max"] == 400.0 != first


def test_unreadable_files_raise_texprod_error(tmp_path):
    with pytest.raises(TexprodError, match="does not exist"):
        inspect_tiff(tmp_path / "missing.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff at all")
    with pytest.raises(TexprodError, match="not a readable TIFF"):
        inspect_tiff(junk)


# ------------------------------------------------------------------------------------- output


def test_json_round_trips_facts_and_checks(tmp_path):
    data = pixels()
    data[0, 0] = 255
    report = inspect_tiff(write(tmp_path / "j.tif", data), Promise(dpi=300, seed=42))
    doc = json.loads(report.to_json())
    assert doc["facts"] == report.facts
    assert doc["ok"] is False and doc["path"] == str(report.path)
    assert [(c["name"], c["ok"]) for c in doc["checks"]] == [
        (c.name, c.ok) for c in report.checks]
    tac = next(c for c in doc["checks"] if c["name"] == "tac")
    assert tac["found"] == 400.0 and "limit" in tac["detail"]


def test_table_lists_facts_and_one_row_per_check(tmp_path):
    path = write(tmp_path / "t.tif", prov=provenance(bits=16))
    report = inspect_tiff(path)
    text = report.table()
    assert "120 x 80 px" in text and "Chemical proof" in text and "abababab" in text
    assert "size excl. bleed" in text and "9.14 x 5.76 mm" in text
    rows = [line for line in text.splitlines()
            if line.split() and line.split()[0] in {c.name for c in report.checks}]
    assert len(rows) == len(report.checks)
    bits_row = next(r for r in rows if r.startswith("provenance.bits"))
    assert "FAIL" in bits_row and "promised 16" in bits_row
    assert "1 FAILED" in text
