"""Spot plates, the region map and their files: registered with the texture's mask, written
the way prepress tools read them, read back by tifffile, libtiff's tiffinfo and preflight."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from texprod.engine import GeneratorConfig, random_generator
from texprod.errors import SpecError
from texprod.job.pipeline import run_job
from texprod.job.spec import parse_spec
from texprod.models import save_generator
from texprod.press.preflight import inspect_tiff

DPI = 254  # 10 px per mm
BLEED_PX = 20  # 2 mm
BOX_MM = (10.37, 8.03, 30.02, 20.57)  # the mask's place in the trim: off the pixel grid


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
    return save_generator(random_generator(config, 5), tmp_path_factory.mktemp("m") / "duo")


@pytest.fixture(scope="module")
def mask(tmp_path_factory) -> Path:
    """White (foreground) everywhere: the plate is then exactly the placement box."""
    path = tmp_path_factory.mktemp("mask") / "logo.png"
    pyvips.Image.new_from_array(np.full((40, 60), 255, np.uint8)).pngsave(str(path))
    return path


def spec(model: Path, mask: Path, out: Path, plates: list[dict], **output) -> dict:
    return {
        "name": "spot", "model": str(model), "seed": 3,
        "texture": {"paint": {"mask": str(mask), "placement": {"box_mm": list(BOX_MM)},
                              "latents": {"background": {"seed": 1},
                                          "foreground": {"seed": 2}},
                              "transition_mm": 3}},
        "print": {"width_mm": 60, "height_mm": 40, "dpi": DPI, "bleed_mm": 2,
                  "color": "cmyk"},
        "render": {"device": "cpu", "tile_px": 64},
        "output": {"dir": str(out), **output},
        "plates": plates,
    }


UV = {"name": "Spot UV", "from": {"levels": ["foreground"]}}


def box_pixels(width: int, height: int, grow: int = 0) -> np.ndarray:
    """Where the box lands: the pixels whose centres lie inside it, computed from the mm
    (an independent statement of the placement), grown or shrunk by `grow` px."""
    x, y, w, h = (v * DPI / 25.4 for v in BOX_MM)
    cols = (np.arange(width) + 0.5 >= BLEED_PX + x) & (np.arange(width) + 0.5 < BLEED_PX + x + w)
    rows = (np.arange(height) + 0.5 >= BLEED_PX + y) & (np.arange(height) + 0.5 < BLEED_PX + y + h)
    inside = rows[:, None] & cols[None, :]
    if grow:
        ys, xs = np.nonzero(inside)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        yy, xx = np.mgrid[:height, :width]
        dy = np.maximum(np.maximum(top - yy, yy - bottom), 0)
        dx = np.maximum(np.maximum(left - xx, xx - right), 0)
        if grow > 0:  # within grow px (Euclidean) of the box
            return dy * dy + dx * dx <= grow * grow
        return (yy >= top - grow) & (yy <= bottom + grow) & (xx >= left - grow) \
            & (xx <= right + grow)
    return inside


def test_a_spot_plate_is_an_ink_of_the_print_registered_with_the_mask(model, mask, tmp_path):
    result = run_job(parse_spec(spec(model, mask, tmp_path, [UV])))
    path = result.tiff.path
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        pixels = page.asarray()
        assert page.photometric == tifffile.PHOTOMETRIC.SEPARATED
        assert page.tags[332].value == 2  # InkSet: not CMYK only
        assert page.tags[334].value == 5  # NumberOfInks
        assert page.tags[333].value.split("\0")[:5] == \
            ["Cyan", "Magenta", "Yellow", "Black", "Spot UV"]
        assert [int(e) for e in page.extrasamples] == [0]  # unspecified: an ink, not alpha
    h, w, _ = pixels.shape
    assert np.array_equal(pixels[:, :, 4] == 255, box_pixels(w, h))
    assert set(np.unique(pixels[:, :, 4])) == {0, 255}
    info = subprocess.run(["tiffinfo", str(path)], capture_output=True, text=True).stdout
    assert "Ink Names: Cyan, Magenta, Yellow, Black, Spot UV" in info
    assert "Extra Samples: 1<unspecified>" in info

    report = inspect_tiff(path)  # read back: the inks and the ink limit over C+M+Y+K only
    assert report.ok, report.table()
    assert report.check("no_alpha").found == "1 spot ink(s): Spot UV"
    assert report.check("provenance.inks").ok and result.report.check("expect.inks").ok
    cmyk_total = pixels[:, :, :4].astype(int).sum(axis=2).max() * 100 / 255
    assert report.facts["tac_max"] == round(cmyk_total, 2) == round(result.tac_max, 2)
    prov = json.loads(page_description(path))["texprod"]
    assert prov["plates"] == [{"name": "Spot UV", "from": {"levels": ["foreground"]},
                               "tint": 100, "knockout": False, "preview": "#d8e8ff"}]


def page_description(path: Path) -> str:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].description


@pytest.mark.parametrize("engine", ["libvips", "lut"])
def test_tint_knockout_choke_and_spread(model, mask, tmp_path, engine):
    """(With the LUT colour engine too: the GPU's path, whose ink check then moves after
    the knockout.)"""
    plates = [{**UV, "tint": 40, "knockout": True, "choke_mm": 0.5},
              {"name": "White", "from": {"levels": ["foreground"]}, "spread_mm": 0.4}]
    data = spec(model, mask, tmp_path, plates)
    data["render"]["colour_engine"] = engine
    result = run_job(parse_spec(data))
    pixels = tifffile.imread(result.tiff.path)
    h, w, _ = pixels.shape
    uv, white = pixels[:, :, 4], pixels[:, :, 5]
    assert np.array_equal(uv > 0, box_pixels(w, h, grow=-5))  # 0.5 mm choke = 5 px
    assert set(np.unique(uv)) == {0, round(0.4 * 255)}
    assert np.array_equal(white > 0, box_pixels(w, h, grow=4))  # 0.4 mm spread, round
    assert not pixels[uv > 0][:, :4].any()  # knocked out: no process ink under the UV
    assert pixels[(white > 0) & (uv == 0)][:, :4].any()  # overprinted under the white
    report = inspect_tiff(result.tiff.path)
    assert report.ok and report.facts["tac_max"] == round(result.tac_max, 2)


def test_plates_as_files_and_a_region_map(model, mask, tmp_path):
    channels = run_job(parse_spec(spec(model, mask, tmp_path / "a", [UV])))
    files = run_job(parse_spec(spec(model, mask, tmp_path / "b", [UV], plates_as="files",
                                    region_map=True)))
    main = tifffile.imread(files.tiff.path)
    assert main.shape[2] == 4
    assert np.array_equal(main, tifffile.imread(channels.tiff.path)[:, :, :4])
    (plate_file,) = files.plan.outputs.plate_files
    assert plate_file.name.endswith(".spot-uv.tif")
    with tifffile.TiffFile(plate_file) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.MINISWHITE  # full ink shows black
        assert page.shape == main.shape[:2]
        assert page.tags[282].value == tifffile.TiffFile(files.tiff.path).pages[0] \
            .tags[282].value  # same resolution
        plate = page.asarray()
    assert np.array_equal(plate, tifffile.imread(channels.tiff.path)[:, :, 4])

    regions = tifffile.imread(files.plan.outputs.region_map)
    assert regions.dtype == np.uint8 and regions.shape == main.shape[:2]
    h, w = regions.shape
    assert np.array_equal(regions == 1, box_pixels(w, h))  # 1: foreground, 0: background
    prov = json.loads(page_description(files.tiff.path))["texprod"]
    assert prov["region_map"]["legend"] == {"0": "background: seed 1",
                                            "1": "foreground: seed 2"}
    assert prov["plates"][0]["file"] == plate_file.name
    assert inspect_tiff(files.tiff.path).ok


def test_a_quilt_region_map_labels_its_blocks(model, tmp_path):
    quilt = {"name": "quilt", "model": str(model), "seed": 3,
             "texture": {"quilt": {"block_mm": 12.7, "transition_mm": 2}},
             "print": {"width_mm": 50, "height_mm": 30, "dpi": DPI, "bleed_mm": 2,
                       "color": "rgb"},
             "render": {"device": "cpu", "tile_px": 64},
             "output": {"dir": str(tmp_path), "region_map": True}}
    result = run_job(parse_spec(quilt))
    regions = tifffile.imread(result.plan.outputs.region_map)
    cell = 8
    block_px = 12.7 * DPI / 25.4  # 127 px: 15.875 cells
    blocks_x = np.floor((np.floor(np.arange(regions.shape[1]) / cell) + 0.5) * cell
                        / block_px).astype(int)
    blocks_y = np.floor((np.floor(np.arange(regions.shape[0]) / cell) + 0.5) * cell
                        / block_px).astype(int)
    across = blocks_x.max() + 1
    assert np.array_equal(regions, blocks_y[:, None] * across + blocks_x[None, :])


def test_plate_errors_name_the_field(model, mask, tmp_path):
    with pytest.raises(SpecError, match="plates.0.from.levels: got 'logo', not a level"):
        parse_spec(spec(model, mask, tmp_path, [{"name": "UV", "from": {"levels": ["logo"]}}]))
    rgb = spec(model, mask, tmp_path, [UV])
    rgb["print"]["color"] = "rgb"
    with pytest.raises(SpecError, match="spot plates need print.color cmyk"):
        parse_spec(rgb)
    with pytest.raises(SpecError, match="plates.0.name: got 'Black', is reserved"):
        parse_spec(spec(model, mask, tmp_path, [{**UV, "name": "Black"}]))
    with pytest.raises(SpecError, match="7 plates, at most 6"):
        parse_spec(spec(model, mask, tmp_path,
                        [{**UV, "name": f"S{i}"} for i in range(7)]))
    plain = spec(model, mask, tmp_path, [UV])
    del plain["texture"]
    with pytest.raises(SpecError, match="no texture.paint to take levels from"):
        parse_spec(plain)
    with pytest.raises(SpecError, match=r"output.formats: got \['pdf'\], must include tiff"):
        parse_spec(spec(model, mask, tmp_path, [], formats=["pdf"]))
    rgb_pdf = spec(model, mask, tmp_path, [], formats=["tiff", "pdf"])
    rgb_pdf["print"]["color"] = "rgb"
    with pytest.raises(SpecError, match="output.formats: pdf needs print.color cmyk"):
        parse_spec(rgb_pdf)


def test_a_region_map_of_too_many_quilt_blocks_is_refused_before_rendering(model, tmp_path):
    from texprod.job.plan import plan_job

    quilt = {"name": "quilt", "model": str(model), "seed": 3,
             "texture": {"quilt": {"block_mm": 1, "transition_mm": 0.2}},
             "print": {"width_mm": 400, "height_mm": 300, "dpi": DPI, "color": "rgb"},
             "render": {"device": "cpu"},
             "output": {"dir": str(tmp_path / "out"), "region_map": True}}
    with pytest.raises(SpecError, match=r"output.region_map: the texture has 12\d,\d{3} "
                                        r"regions .* a 16-bit map holds 65,536"):
        plan_job(parse_spec(quilt))
    assert not (tmp_path / "out").exists()


def test_preflight_checks_each_plate_against_the_mask(model, mask, tmp_path, capsys):
    """`texprod inspect --spec` re-makes each plate from the mask and compares it with the
    file's channel: a plate moved by one pixel is caught, with where."""
    from texprod.cli import main
    from texprod.job.pipeline import preflight_job

    data = spec(model, mask, tmp_path, [UV])
    result = run_job(parse_spec(data))
    assert result.report.check("plate.Spot UV").ok
    assert any("Spot UV: paint levels foreground, 100 %, overprint -> channel 5" in line
               for line in result.summary()["plates"])

    spec_file = tmp_path / "spot.yaml"
    spec_file.write_text(json.dumps(data))  # JSON is YAML
    assert main(["inspect", str(result.tiff.path), "--spec", str(spec_file)]) == 0
    shown = capsys.readouterr().out
    assert "inks" in shown and "Cyan, Magenta, Yellow, Black, Spot UV" in shown
    assert "plate.Spot UV" in shown

    pixels = tifffile.imread(result.tiff.path)
    moved = pixels.copy()
    moved[:, :, 4] = np.roll(pixels[:, :, 4], 1, axis=1)  # one pixel to the right
    bad = tmp_path / "moved.tif"
    with tifffile.TiffFile(result.tiff.path) as tif:
        tags = tif.pages[0].tags
        tifffile.imwrite(bad, moved, photometric="separated", extrasamples=[0],
                         description=tags[270].value, resolution=(DPI, DPI),
                         extratags=[(332, "H", 1, 2, True), (334, "H", 1, 5, True),
                                    (333, "s", 0, tags[333].value, True)])
    check = preflight_job(result.plan, bad).check("plate.Spot UV")
    assert not check.ok and "differ from the plate the mask makes" in check.detail
    assert main(["inspect", str(bad), "--spec", str(spec_file)]) == 1


def test_the_shipped_spot_uv_box_wrap(tmp_path):
    """specs/box_spot_uv.yaml at a small size: a Spot UV ink over the logo, and a proof
    that tints where the varnish goes, half-way to the plate's preview colour."""
    import yaml

    from texprod.job.spec import SPECS_DIR

    data = yaml.safe_load((SPECS_DIR / "box_spot_uv.yaml").read_text())
    data["print"].update(width_mm=120, height_mm=80, dpi=150)
    data["plates"][0]["from"]["placement"] = {"box_mm": [40, 24, 40, 32]}
    data["output"]["dir"] = str(tmp_path)
    result = run_job(parse_spec(data), SPECS_DIR)
    assert result.report.ok and result.report.check("plate.Spot UV").ok
    pixels = tifffile.imread(result.tiff.path)
    assert pixels.shape[2] == 5
    plate = pixels[:, :, 4] > 0
    b = result.plan.geometry.bleed_px
    box = np.zeros_like(plate)
    box[b + 24 * 150 * 10 // 254: b + 56 * 150 * 10 // 254 + 1,
        b + 40 * 150 * 10 // 254: b + 80 * 150 * 10 // 254 + 1] = True
    assert plate.any() and not (plate & ~box).any()  # the logo's varnish, inside its box

    proof = pyvips.Image.new_from_file(str(result.plan.outputs.proof)).numpy()[:, :, :3]
    scale = proof.shape[1] / pixels.shape[1]  # proof pixels per print pixel

    def seen(where: np.ndarray) -> np.ndarray:
        """The proof's pixels at print pixels `where` (bool (h, w)): (n, 3)."""
        ys, xs = np.nonzero(where)
        return proof[(ys * scale).astype(int), (xs * scale).astype(int)].astype(float)

    core = plate & np.roll(plate, 3, 0) & np.roll(plate, -3, 0) & np.roll(plate, 3, 1) \
        & np.roll(plate, -3, 1)  # away from the logo's edges (JPEG, resampling)
    assert core.sum() > 1000
    away = np.zeros_like(plate)
    away[b + 10: b + 60, b + 10:] = True  # a band of the trim above the logo's box
    tinted = 0.5 * seen(away).mean(axis=0) + 0.5 * np.array([0xd8, 0xe8, 0xff])
    assert np.abs(seen(core).mean(axis=0) - tinted).max() < 12


@pytest.mark.parametrize("plates_as, bits", [("channels", 8), ("files", 16)])
def test_a_pdf_x4_of_the_print_with_its_spot_plate(model, mask, tmp_path, plates_as, bits):
    """output.formats [tiff, pdf]: Ghostscript's separations of the PDF at the file's
    resolution are the print's inks (C, M, Y, K and the Spot UV plate, from its channel or
    its file) within 1/255, and pikepdf reads back the boxes from the spec's millimetres,
    the output intent's profile and the provenance."""
    import urllib.parse

    import pikepdf

    data = spec(model, mask, tmp_path / "out", [{**UV, "tint": 60}], formats=["tiff", "pdf"],
                plates_as=plates_as)
    data["print"].update(width_mm=60.13, height_mm=40.07, bit_depth=bits)  # off the grid
    result = run_job(parse_spec(data))
    pdf = result.plan.outputs.pdf
    assert pdf.is_file() and result.summary()["pdf"] == str(pdf)
    assert result.timings["deliverables"] > 0
    pixels = tifffile.imread(result.tiff.path).astype(int)
    if plates_as == "files":
        plate = tifffile.imread(result.plan.outputs.plate_files[0]).astype(int)
        pixels = np.concatenate([pixels, plate[:, :, None]], axis=2)
    pixels = np.round(pixels / (1 if bits == 8 else 257))  # Ghostscript separates 8-bit

    seps = tmp_path / "seps"
    seps.mkdir()
    subprocess.run(["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=tiffsep",
                    f"-r{DPI}", "-dGraphicsAlphaBits=1", "-dTextAlphaBits=1",
                    f"-sOutputFile={seps}/page.tif", str(pdf)], check=True, timeout=120)
    plates = {urllib.parse.unquote(f.name[len("page("):-len(").tif")]):
              255 - tifffile.imread(f).astype(int) for f in seps.glob("page(*).tif")}
    assert sorted(plates) == sorted(["Cyan", "Magenta", "Yellow", "Black", "Spot UV"])
    for i, name in enumerate(["Cyan", "Magenta", "Yellow", "Black", "Spot UV"]):
        assert plates[name].shape == pixels.shape[:2]
        assert np.abs(plates[name] - pixels[:, :, i]).max() <= 1, name

    points = 72 / 25.4
    with pikepdf.open(pdf) as doc:
        page = doc.pages[0]
        media = [float(v) for v in page.MediaBox]
        trim = [float(v) for v in page.TrimBox]
        bleed = [float(v) for v in page.BleedBox]
        (intent,) = doc.Root.OutputIntents
        profile = intent.DestOutputProfile.read_bytes()
        xmp = doc.open_metadata()
        assert xmp["pdfxid:GTS_PDFXVersion"] == "PDF/X-4"
        provenance = json.loads(next(v for k, v in xmp.items() if k.endswith("provenance")))
    assert media[2:] == pytest.approx([pixels.shape[1] / DPI * 72,
                                       pixels.shape[0] / DPI * 72], abs=0.01)
    assert trim[2] - trim[0] == pytest.approx(60.13 * points, abs=0.01)
    assert trim[3] - trim[1] == pytest.approx(40.07 * points, abs=0.01)
    # the bleed, clamped to the canvas (rounded to whole pixels, it may be a hair smaller)
    assert bleed[0] == pytest.approx(max(trim[0] - 2 * points, 0), abs=0.01)
    assert bleed[3] == pytest.approx(min(trim[3] + 2 * points, media[3]), abs=0.01)
    assert bleed[2] - bleed[0] > trim[2] - trim[0] + 3.9 * points
    assert profile == result.plan.colour.profile
    assert str(intent.OutputConditionIdentifier) == "FOGRA39"
    assert provenance["spec_digest"] == result.plan.spec_digest
    assert provenance["plates"][0]["name"] == "Spot UV"


def test_a_failing_deliverable_leaves_no_output(model, mask, tmp_path, monkeypatch):
    """The print and the plate files are removed when a later file (here the region map,
    made to fail as a full disk would) cannot be written."""
    import texprod.job.pipeline as pipeline

    def full_disk(plan):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_region_map", full_disk)
    out = tmp_path / "out"
    from texprod.errors import JobFailure

    with pytest.raises(JobFailure, match=r"disk full while writing .*\.regions\.tif"):
        run_job(parse_spec(spec(model, mask, out, [UV], plates_as="files", region_map=True)))
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_plates_as_channels_or_files_are_two_prints(model, mask, tmp_path):
    """The print TIFF differs (5 inks or 4), so its name does: one never replaces the other
    in an output directory. Without plates the setting changes nothing."""
    from texprod.job.plan import plan_job

    names = {how: plan_job(parse_spec(spec(model, mask, tmp_path, [UV], plates_as=how)))
             .outputs.tiff.name for how in ("channels", "files")}
    assert names["channels"] != names["files"]
    plain = {how: plan_job(parse_spec(spec(model, mask, tmp_path, [], plates_as=how)))
             .spec_digest for how in ("channels", "files")}
    assert plain["channels"] == plain["files"]


def test_the_disk_check_counts_the_files_beside_the_print(model, mask, tmp_path):
    """Room for the print alone is not enough for a job that also writes its PDF, plate
    files and region map: refused before rendering, naming what it needs."""
    import os

    from texprod.errors import TexprodError
    from texprod.job.pipeline import DISK_MARGIN, check_disk_space
    from texprod.job.plan import plan_job

    disk = tmp_path / "disk"
    plain = plan_job(parse_spec(spec(model, mask, disk, [UV])))
    full = plan_job(parse_spec(spec(model, mask, disk, [UV], plates_as="files",
                                    region_map=True, formats=["tiff", "pdf"])))
    w, h = full.geometry.width_px, full.geometry.height_px
    assert plain.deliverable_bytes == 0
    assert full.deliverable_bytes >= w * h * (5 + 1 + 1)  # PDF inks, plate file, map
    room = plain.output_bytes + DISK_MARGIN + full.deliverable_bytes // 2
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(disk)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tmpfs of a given size")
    try:
        check_disk_space(plain)  # the print alone fits
        with pytest.raises(TexprodError, match=rf"disk: {disk} has .* free, the job needs"):
            check_disk_space(full)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
