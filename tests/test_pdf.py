"""The PDF/X-4 writer: Ghostscript's separations (tiffsep) equal the raster's inks, pikepdf
reads back the boxes, output intent, XMP and spot colour spaces; 16 bit, the bytes do not
depend on bands or threads, bad input and failures mid-write. Small pages, no mocks."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pytest
import tifffile

from texprod.errors import ConfigError
from texprod.press.pdf import XMP_NS, SpotInk, write_pdfx4

PROFILE = (Path(__file__).resolve().parent.parent / "texprod" / "data" / "icc"
           / "FOGRA39-texprod.icc").read_bytes()
DPI = 150
# 2398 x 693 px at 150 dpi: CMYK rows of 9600 bytes, so an image holds several compressed
# chunks; the trim (mm) falls between pixels, and trim + 2 bleed rounds to the canvas
TRIM_MM = (400.1, 111.3)
BLEED_MM = 3.0
WIDTH = round((TRIM_MM[0] + 2 * BLEED_MM) / 25.4 * DPI)
HEIGHT = round((TRIM_MM[1] + 2 * BLEED_MM) / 25.4 * DPI)
SPOTS = (SpotInk("Spot UV", (0.0, 0.0, 0.0, 0.15)), SpotInk("Blanc Crème", (0.03, 0.0, 0.05, 0.0)))
BANDS = (1, 150, 7, 300, 235)  # unequal; they add up to HEIGHT
MAX_IMAGE_BYTES = WIDTH * 4 * 290  # three images of 231 rows, their joins inside bands
PROVENANCE = {"texprod": {"job": "test-pdf", "seed": 7, "trim_mm": list(TRIM_MM)}}
POINTS = 72 / 25.4



def raster(bits: int, spots: int = 2, seed: int = 0) -> np.ndarray:
    """A gradient per process ink plus grain, and disc / ring shaped spot plates with soft
    edges; uint8 or uint16, full range."""
    top = 255 if bits == 8 else 65535
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    grads = [x / (WIDTH - 1), y / (HEIGHT - 1), (x + y) / (WIDTH + HEIGHT - 2),
             1 - x / (WIDTH - 1)]
    inks = [np.clip(g * top + rng.normal(0, top / 40, g.shape), 0, top) for g in grads]
    r = np.hypot(x - WIDTH * 0.3, y - HEIGHT / 2)
    inks.append(np.clip((HEIGHT * 0.4 - r) / 6, 0, 1) * top)  # a disc
    inks.append(np.clip(1 - np.abs(np.hypot(x - WIDTH * 0.7, y - HEIGHT / 2) - 200) / 40, 0, 1)
                * top * 0.6)  # a ring at 60 %
    return np.stack(inks[:4 + spots], -1).round().astype(np.uint8 if bits == 8 else np.uint16)


def cut(array: np.ndarray, rows=BANDS):
    assert sum(rows) == len(array)
    top = 0
    for n in rows:
        yield array[top:top + n]
        top += n


def write(path: Path, array: np.ndarray, *, bits: int = 8, spots=SPOTS, bands=BANDS,
          **kwargs) -> Path:
    args = dict(width_px=WIDTH, height_px=HEIGHT, bits=bits, dpi=DPI, trim_mm=TRIM_MM,
                bleed_mm=BLEED_MM, output_profile=PROFILE, output_condition="FOGRA39",
                title="Test texture — ünïcode", provenance=PROVENANCE, spots=spots,
                max_image_bytes=MAX_IMAGE_BYTES)
    return write_pdfx4(path, cut(array, bands), **{**args, **kwargs})


def separations(pdf: Path, out: Path, overprint: str = "/enable") -> dict[str, np.ndarray]:
    """Render the MediaBox (no -dUseTrimBox, which crops to the trim; -dUseCropBox is the
    same here) with tiffsep, one pixel per raster pixel (-r = the raster's dpi), without
    anti-aliasing, overprint honoured (tiffsep's default, said explicitly); return each separation by ink name as ink 0..255 (tiffsep stores 255
    for no ink and 0 for full ink; non-ASCII bytes of a name are %-escaped in file names)."""
    out.mkdir()
    subprocess.run(["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=tiffsep",
                    f"-r{DPI}", "-dGraphicsAlphaBits=1", "-dTextAlphaBits=1",
                    f"-dOverprint={overprint}", f"-sOutputFile={out}/page.tif", str(pdf)],
                   check=True, capture_output=True, timeout=120)
    plates = {}
    for file in out.glob("page(*).tif"):
        name = urllib.parse.unquote(file.name[len("page("):-len(").tif")])
        plates[name] = 255 - tifffile.imread(file).astype(np.int32)
    return plates


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, np.ndarray]:
    array = raster(8)
    path = tmp_path_factory.mktemp("pdf") / "print.pdf"
    assert write(path, array) == path
    return path, array


# ----------------------------------------------------------------------------- Ghostscript


def test_separations_equal_the_raster_row_by_row(written, tmp_path):
    path, array = written
    plates = separations(path, tmp_path / "seps")
    names = ["Cyan", "Magenta", "Yellow", "Black", *(s.name for s in SPOTS)]
    assert sorted(plates) == sorted(names)
    for i, name in enumerate(names):
        plate = plates[name]
        assert plate.shape == (HEIGHT, WIDTH), name
        # every row, the joins of the bands and of the images included: no seam anywhere
        worst_per_row = np.abs(plate - array[..., i]).max(axis=1)
        assert worst_per_row.max() <= 1, (name, np.flatnonzero(worst_per_row > 1)[:10])
    # the process inks under the spot plates are intact: the spots overprint
    under = array[..., 4] > 0
    assert under.sum() > 10000
    assert np.array_equal(plates["Cyan"][under], array[..., 0][under].astype(np.int32))


def test_a_viewer_without_overprint_still_shows_the_print_beside_the_plates(written,
                                                                            tmp_path):
    """A spot plate paints only where it has ink (a colour key mask on tint 0): with
    overprint off, as in viewers that do not simulate it, the process inks outside the
    plates are the raster's, not knocked out by the plates' empty areas."""
    path, array = written
    plates = separations(path, tmp_path / "seps", overprint="/disable")
    outside = (array[..., 4:] == 0).all(axis=2)
    assert outside.sum() > 10000 and (~outside).sum() > 10000
    for i, name in enumerate(["Cyan", "Magenta", "Yellow", "Black"]):
        assert np.abs(plates[name][outside] - array[..., i][outside]).max() <= 1, name
    assert not plates["Cyan"][~outside].any()  # inside a plate, knocked out as expected


def test_16_bit_separations(tmp_path):
    array = raster(16, spots=1, seed=3)
    path = write(tmp_path / "deep.pdf", array, bits=16, spots=SPOTS[:1],
                 bands=(300, 100, 293), max_image_bytes=WIDTH * 8 * 400)
    plates = separations(path, tmp_path / "seps")
    for i, name in enumerate(["Cyan", "Magenta", "Yellow", "Black", "Spot UV"]):
        assert np.abs(plates[name] - array[..., i] / 257).max() <= 1, name
    with pikepdf.open(path) as pdf:
        image = pdf.pages[0].Resources.XObject.Im0
        assert image.BitsPerComponent == 16
        # 16-bit samples are big-endian in PDF; pikepdf decodes Flate and the predictor
        assert np.array_equal(np.frombuffer(image.read_bytes(), ">u2"),
                              array[:image.Height, :, :4].ravel())


# ----------------------------------------------------------------------------- pikepdf


def test_boxes_in_points_from_the_millimetres(written):
    path, _ = written
    with pikepdf.open(path) as pdf:
        page = pdf.pages[0]
        media = [float(v) for v in page.MediaBox]
        trim = [float(v) for v in page.TrimBox]
        bleed = [float(v) for v in page.BleedBox]
    assert media == pytest.approx([0, 0, WIDTH / DPI * 72, HEIGHT / DPI * 72], abs=0.01)
    b = BLEED_MM * POINTS
    # centred in the canvas, as the raster's (pixel) trim is
    left, bottom = ((m - t * POINTS) / 2 for m, t in zip(media[2:], TRIM_MM, strict=True))
    expected_trim = [left, bottom, left + TRIM_MM[0] * POINTS, bottom + TRIM_MM[1] * POINTS]
    assert trim == pytest.approx(expected_trim, abs=0.01)
    # the pixel-rounded trim is 0.27 pt off at 150 dpi: the box is the spec's, not that
    pixel_trim = (WIDTH - 2 * round(BLEED_MM / 25.4 * DPI)) / DPI * 72
    assert abs((trim[2] - trim[0]) - pixel_trim) > 0.05
    expected_bleed = [max(expected_trim[0] - b, 0), max(expected_trim[1] - b, 0),
                      min(expected_trim[2] + b, media[2]), min(expected_trim[3] + b, media[3])]
    assert bleed == pytest.approx(expected_bleed, abs=0.01)


def test_output_intent_info_and_xmp(written):
    path, _ = written
    with pikepdf.open(path) as pdf:
        assert pdf.pdf_version == "1.6"
        (intent,) = pdf.Root.OutputIntents
        assert intent.S == pikepdf.Name.GTS_PDFX
        assert str(intent.OutputConditionIdentifier) == "FOGRA39"
        assert str(intent.RegistryName) == "http://www.color.org"
        assert "/Info" in intent
        profile = intent.DestOutputProfile
        assert profile.N == 4
        assert profile.read_bytes() == PROFILE

        info = pdf.docinfo
        assert str(info.Trapped) == "/False"
        assert str(info.GTS_PDFXVersion) == "PDF/X-4"
        assert str(info.Creator) == "texprod"
        assert str(info.Title) == "Test texture — ünïcode"
        for key in ("/Producer", "/CreationDate", "/ModDate"):
            assert key in info

        meta = pdf.open_metadata()
        assert meta["pdfxid:GTS_PDFXVersion"] == "PDF/X-4"
        assert meta["pdf:Trapped"] == "False"
        assert meta["dc:title"] == "Test texture — ünïcode"
        assert meta["xmp:CreatorTool"] == "texprod"
        for key in ("xmp:CreateDate", "xmp:ModifyDate", "xmp:MetadataDate", "pdf:Producer",
                    "xmpMM:DocumentID", "xmpMM:InstanceID"):
            assert meta[key], key
        assert json.loads(meta[f"{{{XMP_NS}}}provenance"]) == PROVENANCE
        assert not pdf.get_warnings()


def test_spot_plates_are_separations_painted_with_overprint(written):
    path, array = written
    with pikepdf.open(path) as pdf:
        resources = pdf.pages[0].Resources
        images = {str(k): v for k, v in resources.XObject.items()}
        assert sorted(images) == ["/Im0", "/Im1", "/Im2", "/Spot0_0", "/Spot0_1", "/Spot0_2",
                                  "/Spot1_0", "/Spot1_1", "/Spot1_2"]
        for name, image in images.items():
            assert image.Interpolate is False, name
            assert image.Width == WIDTH
        assert sum(int(images[f"/Im{i}"].Height) for i in range(3)) == HEIGHT
        assert images["/Im0"].ColorSpace == pikepdf.Name.DeviceCMYK
        for j, spot in enumerate(SPOTS):
            space = images[f"/Spot{j}_0"].ColorSpace
            assert space[0] == pikepdf.Name.Separation
            assert str(space[1]) == "/" + spot.name
            assert space[2] == pikepdf.Name.DeviceCMYK
            tint = space[3]
            assert tint.FunctionType == 2
            assert [float(v) for v in tint.C1] == pytest.approx(spot.alternate_cmyk)
        (state,) = resources.ExtGState.values()
        assert (state.OP, state.op, state.OPM) == (True, True, 1)
        content = pdf.pages[0].Contents.read_bytes().decode()
        # the overprint state is set before the first spot image is painted
        assert content.index("gs") < content.index("/Spot0_0 Do")
        assert content.index("/Im2 Do") < content.index("gs")
        # a second reader: pikepdf (qpdf) decodes the CMYK images to the raster
        decoded = b"".join(images[f"/Im{i}"].read_bytes() for i in range(3))
        assert decoded == array[..., :4].tobytes()


def test_bytes_do_not_depend_on_bands_or_threads(written, tmp_path):
    path, array = written
    other = write(tmp_path / "other.pdf", array, bands=(HEIGHT,), workers=1)

    def streams(p: Path) -> list[bytes]:
        with pikepdf.open(p) as pdf:
            xobjects = pdf.pages[0].Resources.XObject
            return [xobjects[k].read_raw_bytes() for k in sorted(xobjects.keys())]

    first, second = streams(path), streams(other)
    assert first == second
    for data in first:  # each image one valid zlib stream (checksum included)
        zlib.decompress(data)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("changes, pattern", [
    (dict(width_px=0), r"width_px: got 0, must be a positive"),
    (dict(bits=12), r"bits: got 12, must be 8 or 16"),
    (dict(dpi=float("nan")), r"dpi: got nan"),
    (dict(trim_mm=(100.0,)), r"trim_mm: got \[100.0\], must be \(width, height\)"),
    (dict(bleed_mm=-1), r"bleed_mm: got -1"),
    (dict(trim_mm=(420.0, 111.3)), r"trim_mm: got a width of 420 mm, .* does not fit the canvas"),
    (dict(output_profile=b"junk"), r"output_profile: got b'junk'"),
    (dict(output_profile=PROFILE[:16] + b"RGB " + PROFILE[20:]),
     r"output_profile: .*colour space b'RGB '"),
    (dict(output_condition=""), r"output_condition: got ''"),
    (dict(provenance={"x": {1, 2}}), r"provenance: got .* must be JSON"),
    (dict(spots=(SpotInk("Spot\0UV", (0, 0, 0, 1)), SPOTS[1])),
     r"spots\[0\].name: got 'Spot\\x00UV', must be Latin-1 text without NUL"),
    (dict(spots=(SPOTS[0], SpotInk("Ωmega", (0, 0, 0, 1)))), r"spots\[1\].name: got 'Ωmega'"),
    (dict(spots=(SpotInk("cyan", (1, 0, 0, 0)), SPOTS[1])), r"spots\[0\].name: .* reserved"),
    (dict(spots=(SPOTS[0], SPOTS[0])), r"spots\[1\].name: got 'Spot UV' twice"),
    (dict(spots=(SPOTS[0], SpotInk("W", (0, 0, 0, 2)))),
     r"spots\[1\].alternate_cmyk: got \[0, 0, 0, 2\], must be four numbers"),
])
def test_bad_arguments_name_the_argument_and_leave_nothing(tmp_path, changes, pattern):
    array = np.zeros((HEIGHT, WIDTH, 6), np.uint8)
    with pytest.raises(ConfigError, match=pattern):
        write(tmp_path / "bad.pdf", array, **changes)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bands, pattern", [
    ([np.zeros((10, WIDTH, 6), np.uint8), np.zeros((10, WIDTH, 6), np.uint16)],
     r"bands\[1\]: got dtype uint16, must be uint8 for bits 8"),
    ([np.zeros((10, WIDTH, 5), np.uint8)],
     rf"bands\[0\]: got shape \(10, {WIDTH}, 5\), must be \(rows, {WIDTH}, 6\)"),
    ([np.zeros((10, WIDTH, 6), np.uint8)], rf"bands: got 10 rows in 1 bands, must add up to "
                                           rf"height_px {HEIGHT}"),
    ([np.zeros((HEIGHT, WIDTH, 6), np.uint8), np.zeros((1, WIDTH, 6), np.uint8)],
     rf"bands: got {HEIGHT + 1} rows by bands\[1\], more than height_px {HEIGHT}"),
    ([[[0] * 6] * WIDTH], r"bands\[0\]: got .* must be a numpy array"),
])
def test_bad_bands_fail_mid_write_and_leave_nothing(tmp_path, bands, pattern):
    with pytest.raises(ConfigError, match=pattern):
        write_pdfx4(tmp_path / "bad.pdf", iter(bands), width_px=WIDTH, height_px=HEIGHT,
                    bits=8, dpi=DPI, trim_mm=TRIM_MM, bleed_mm=BLEED_MM,
                    output_profile=PROFILE, output_condition="FOGRA39", title="t",
                    provenance={}, spots=SPOTS, max_image_bytes=MAX_IMAGE_BYTES)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_band_iterator_leaves_no_file(tmp_path):
    array = raster(8)

    def bands():
        yield from cut(array[:400], (200, 200))  # past the first image: data on disk
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        write_pdfx4(tmp_path / "print.pdf", bands(), width_px=WIDTH, height_px=HEIGHT, bits=8,
                    dpi=DPI, trim_mm=TRIM_MM, bleed_mm=BLEED_MM, output_profile=PROFILE,
                    output_condition="FOGRA39", title="t", provenance={}, spots=SPOTS,
                    max_image_bytes=MAX_IMAGE_BYTES)
    assert list(tmp_path.iterdir()) == []
