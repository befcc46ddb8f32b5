"""The print TIFF writer: tags, pixels (read back by tifffile and libvips), BigTIFF choice,
atomic output and the per-band callback. Small images, no mocks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import pyvips
import tifffile

from texprod.errors import ConfigError
from texprod.press.printfile import (
    TiffOptions,
    WrittenTiff,
    bigtiff_decision,
    write_plain_tiff,
    write_print_tiff,
)

DESCRIPTION = json.dumps({"texprod": {"job": "test", "colour": {"profile": "x"}}, "seed": 7})
WIDTH, HEIGHT = 520, 300  # partial tiles on the right and at the bottom; two bands of rows


def pixels(width: int, height: int, bands: int, bits: int, seed: int = 0) -> np.ndarray:
    """Texture-like content: a horizontal random walk per band plus grain, full value range."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.integers(-3, 4, (height, width, bands)), axis=1)
    walk += np.cumsum(rng.integers(-2, 3, (height, 1, bands)), axis=0)
    if bits == 8:
        return ((walk + rng.integers(0, 6, walk.shape) + 128) % 256).astype(np.uint8)
    return ((walk * 257 + rng.integers(0, 512, walk.shape) + 32768) % 65536).astype(np.uint16)


def vips_image(array: np.ndarray) -> pyvips.Image:
    height, width, bands = array.shape
    fmt = "uchar" if array.dtype == np.uint8 else "ushort"
    image = pyvips.Image.new_from_memory(array.tobytes(), width, height, bands, fmt)
    if bands == 4:
        return image.copy(interpretation="cmyk")
    return image.copy(interpretation="srgb" if fmt == "uchar" else "rgb16")


def read_vips(path) -> tuple[pyvips.Image, np.ndarray]:
    image = pyvips.Image.new_from_file(str(path))
    dtype = np.uint8 if image.format == "uchar" else np.uint16
    return image, np.ndarray((image.height, image.width, image.bands), dtype,
                             image.write_to_memory())


def profile(bands: int) -> bytes:
    return pyvips.Image.profile_load("cmyk" if bands == 4 else "srgb")


def expected_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@pytest.mark.parametrize("layout", ["tiled", "strips"])
@pytest.mark.parametrize("compression", ["lzw", "deflate", "none"])
@pytest.mark.parametrize(("bands", "bits"), [(3, 8), (3, 16), (4, 8), (4, 16)])
def test_pixels_and_tags_round_trip(tmp_path, bands, bits, compression, layout):
    array = pixels(WIDTH, HEIGHT, bands, bits, seed=bands * 100 + bits)
    icc = profile(bands)
    out = tmp_path / "print.tif"
    written = write_print_tiff(vips_image(array), out,
                               options=TiffOptions(compression=compression, layout=layout),
                               dpi=300, icc_profile=icc, description=DESCRIPTION)

    assert isinstance(written, WrittenTiff)
    assert written.path == out and written.bytes == out.stat().st_size
    assert written.bigtiff is False and "classic" in written.bigtiff_reason
    assert [p.name for p in tmp_path.iterdir()] == ["print.tif"]
    assert out.stat().st_mode & 0o777 == expected_mode()

    with tifffile.TiffFile(out) as tif:
        assert not tif.is_bigtiff and len(tif.pages) == 1
        page = tif.pages[0]
        assert page.photometric == (tifffile.PHOTOMETRIC.SEPARATED if bands == 4
                                    else tifffile.PHOTOMETRIC.RGB)
        if bands == 4:
            assert page.tags["InkSet"].value == 1  # INKSET_CMYK
        else:
            assert "InkSet" not in page.tags
        assert "ExtraSamples" not in page.tags
        assert page.samplesperpixel == bands and page.bitspersample == bits
        assert page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        assert page.compression == {"lzw": tifffile.COMPRESSION.LZW,
                                    "deflate": tifffile.COMPRESSION.ADOBE_DEFLATE,
                                    "none": tifffile.COMPRESSION.NONE}[compression]
        assert page.predictor == (tifffile.PREDICTOR.NONE if compression == "none"
                                  else tifffile.PREDICTOR.HORIZONTAL)
        if layout == "tiled":
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        else:
            assert not page.is_tiled and page.rowsperstrip < HEIGHT
        assert page.resolution == (300.0, 300.0)
        assert page.resolutionunit == tifffile.RESUNIT.INCH
        assert page.tags["InterColorProfile"].value == icc
        assert page.tags["ImageDescription"].value == DESCRIPTION
        assert page.tags["Software"].value.startswith("texprod ")
        assert not tif.is_shaped  # no tifffile metadata JSON next to ours
        np.testing.assert_array_equal(page.asarray(), array)

    image, back = read_vips(out)
    assert image.interpretation == ("cmyk" if bands == 4 else
                                    "srgb" if bits == 8 else "rgb16")
    assert image.xres == pytest.approx(300 / 25.4)
    assert image.get("icc-profile-data") == icc
    np.testing.assert_array_equal(back, array)


def test_forced_bigtiff_small_file(tmp_path):
    array = pixels(300, 260, 3, 8, seed=5)
    out = tmp_path / "big.tiff"
    written = write_print_tiff(vips_image(array), out, options=TiffOptions(bigtiff="always"),
                               dpi=150, icc_profile=None, description="{}")
    assert written.bigtiff and "always" in written.bigtiff_reason
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff
        assert tif.pages[0].resolution == (150.0, 150.0)
        np.testing.assert_array_equal(tif.asarray(), array)
    np.testing.assert_array_equal(read_vips(out)[1], array)


def test_icc_embedding_is_switchable(tmp_path):
    array = pixels(64, 64, 4, 8)
    for embed, name in ((False, "none.tif"), (True, "icc.tif")):
        write_print_tiff(vips_image(array), tmp_path / name, options=TiffOptions(embed_icc=embed),
                         dpi=300, icc_profile=profile(4), description="{}")
    with tifffile.TiffFile(tmp_path / "none.tif") as tif:
        assert "InterColorProfile" not in tif.pages[0].tags
    with tifffile.TiffFile(tmp_path / "icc.tif") as tif:
        assert tif.pages[0].tags["InterColorProfile"].value == profile(4)


def test_output_is_deterministic_and_replaces_an_existing_file(tmp_path):
    image = vips_image(pixels(400, 300, 3, 8, seed=9))
    out = tmp_path / "a.tif"
    out.write_bytes(b"old")
    kwargs = dict(options=TiffOptions(), dpi=300, icc_profile=None, description=DESCRIPTION)
    write_print_tiff(image, out, **kwargs)
    first = out.read_bytes()
    write_print_tiff(image, out, workers=1, **kwargs)  # one thread: the same bytes
    assert out.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


@pytest.mark.parametrize(("layout", "band_height"), [("tiled", 256), ("strips", 512)])
def test_on_band_sees_every_row_once(tmp_path, layout, band_height):
    array = pixels(300, 700, 4, 16, seed=3)
    seen: list[tuple[int, np.ndarray]] = []

    def on_band(y: int, band: np.ndarray) -> None:
        assert not band.flags.writeable  # the writer's own buffer: read it, do not change it
        seen.append((y, band.copy()))

    write_print_tiff(vips_image(array), tmp_path / "o.tif", options=TiffOptions(layout=layout),
                     dpi=300, icc_profile=None, description="{}", on_band=on_band,
                     band_height=band_height)
    starts = [y for y, _ in seen]
    assert starts == list(range(0, 700, band_height))
    assert all(band.shape[1:] == (300, 4) and band.dtype == np.uint16 for _, band in seen)
    np.testing.assert_array_equal(np.concatenate([band for _, band in seen]), array)


class InkLimitExceeded(Exception):
    pass


@pytest.mark.parametrize("fail_at", [0, 256])
def test_failure_in_on_band_leaves_no_file(tmp_path, fail_at):
    image = vips_image(pixels(300, 600, 4, 8, seed=4))

    def on_band(y: int, band: np.ndarray) -> None:
        if y == fail_at:
            raise InkLimitExceeded(f"total ink too high at row {y}")

    with pytest.raises(InkLimitExceeded, match=f"row {fail_at}"):
        write_print_tiff(image, tmp_path / "fail.tif", options=TiffOptions(), dpi=300,
                         icc_profile=None, description="{}", on_band=on_band)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_write_errors_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="CMYK"):  # a 4-band image that is not CMYK
        write_print_tiff(vips_image(pixels(32, 32, 4, 8)).copy(interpretation="srgb"),
                         tmp_path / "x.tif", options=TiffOptions(), dpi=300, icc_profile=None,
                         description="{}")
    with pytest.raises(ConfigError, match="out"):
        write_print_tiff(vips_image(pixels(32, 32, 3, 8)), tmp_path / "x.png",
                         options=TiffOptions(), dpi=300, icc_profile=None, description="{}")
    with pytest.raises(ConfigError, match="dpi"):
        write_print_tiff(vips_image(pixels(32, 32, 3, 8)), tmp_path / "x.tif",
                         options=TiffOptions(), dpi=0, icc_profile=None, description="{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("field", "value"), [("compression", "zstd"), ("layout", "tile"),
                                              ("bigtiff", "yes")])
def test_options_are_validated(field, value):
    with pytest.raises(ConfigError, match=f"tiff.{field}: got {value!r}"):
        TiffOptions(**{field: value})


def test_bigtiff_decision_auto():
    small = bigtiff_decision(4096, 4096, 4, 16, TiffOptions())
    assert small[0] is False and "classic" in small[1]
    # 35000^2 RGB 8-bit: 3.4 GiB raw, which LZW could expand past 4 GiB; deflate cannot
    use, reason = bigtiff_decision(35000, 35000, 3, 8, TiffOptions(compression="lzw"))
    assert use is True and "4 GiB" in reason and "GiB uncompressed" in reason
    assert bigtiff_decision(35000, 35000, 3, 8, TiffOptions(compression="deflate"))[0] is False
    assert bigtiff_decision(35000, 35000, 4, 8, TiffOptions(compression="none"))[0] is True
    assert bigtiff_decision(35000, 35000, 3, 16, TiffOptions(layout="strips"))[0] is True
    use, reason = bigtiff_decision(64, 64, 3, 8, TiffOptions(bigtiff="always"))
    assert use is True and "always" in reason


def test_bigtiff_never_fails_early_with_a_clear_message():
    assert bigtiff_decision(8000, 8000, 4, 16, TiffOptions(bigtiff="never"))[0] is False
    with pytest.raises(ConfigError) as err:
        bigtiff_decision(35000, 35000, 4, 16, TiffOptions(bigtiff="never"))
    message = str(err.value)
    for part in ("tiff.bigtiff", "'never'", "35000x35000", "GiB", "4 GiB", "'auto'"):
        assert part in message
    with pytest.raises(ConfigError, match="deflate"):  # LZW's worst case is what breaks it
        bigtiff_decision(35000, 35000, 3, 8, TiffOptions(bigtiff="never"))


def test_plain_tiff_still_written(tmp_path):
    array = pixels(100, 80, 3, 8)
    out = write_plain_tiff(vips_image(array), tmp_path / "plain.tif")
    np.testing.assert_array_equal(tifffile.imread(out), array)
    assert out.stat().st_mode & 0o777 == expected_mode()


def test_non_ascii_description_is_escaped_json(tmp_path):
    description = json.dumps({"name": "Stoff grün", "note": "🎨"}, ensure_ascii=False)
    out = tmp_path / "a.tif"
    write_print_tiff(vips_image(pixels(16, 16, 3, 8)), out, options=TiffOptions(), dpi=300,
                     icc_profile=None, description=description)
    with tifffile.TiffFile(out) as tif:
        stored = tif.pages[0].description
    assert stored.isascii() and json.loads(stored) == json.loads(description)
