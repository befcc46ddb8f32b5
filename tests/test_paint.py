"""Painting, quilts and repeat periods in job specs: the global field a job builds, that it
lands where the spec says, that tiles stay exact through it and that repeats wrap it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
import torch

from texprod.cli import main
from texprod.engine import GeneratorConfig, random_generator
from texprod.engine.noise import NoiseField, global_latent
from texprod.engine.render import Renderer, render_canvas, render_reference
from texprod.engine.tiling import plan_tiles
from texprod.errors import SpecError
from texprod.job.paint import effective_transition, label_mask, paint_weights
from texprod.job.pipeline import run_job
from texprod.job.plan import plan_job
from texprod.job.spec import parse_spec
from texprod.models import save_generator

CELL = 8  # tiny generator: 3 layers, 8 px per noise cell
DPI = 254  # 10 px per mm: a cell is 0.8 mm
NZ_GLOBAL = 4
NAMED = {"kraft": torch.tensor([0.9, -0.8, 0.7, -0.6]),
         "terrain": torch.tensor([-0.5, 0.4, -0.9, 0.8])}


@pytest.fixture(scope="module")
def psgan(tmp_path_factory) -> Path:
    """A random PSGAN with global channels and two named latents in its card."""
    config = GeneratorConfig(nz_local=6, nz_global=NZ_GLOBAL, nz_periodic=2, kernel=5,
                             filters=(16, 8))
    return save_generator(random_generator(config, 5), tmp_path_factory.mktemp("m") / "duo",
                          latents=NAMED)


@pytest.fixture(scope="module")
def sgan(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=8, nz_global=0, nz_periodic=0, kernel=5, filters=(16, 8))
    return save_generator(random_generator(config, 6), tmp_path_factory.mktemp("m") / "sgan")


def write_mask(path: Path, pixels: np.ndarray) -> Path:
    pyvips.Image.new_from_array(pixels).pngsave(str(path))
    return path


def job(model: Path, out: Path, texture: dict, width_mm=80, height_mm=60, bleed_mm=2,
        **print_options) -> dict:
    return {"name": "paint", "model": str(model), "seed": 3, "texture": texture,
            "print": {"width_mm": width_mm, "height_mm": height_mm, "dpi": DPI,
                      "bleed_mm": bleed_mm, "color": "rgb", **print_options},
            "render": {"device": "cpu", "tile_px": 24}, "output": {"dir": str(out)}}


def latent_map(plan, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """The job's global channels at cells [y0, y0 + h) x [x0, x0 + w): (nz, h, w)."""
    ys = torch.arange(y0, y0 + h)[None]
    xs = torch.arange(x0, x0 + w)[None]
    return plan.texture.field.sample(ys, xs)[0].numpy()


def rect_mask(tmp_path: Path) -> Path:
    return write_mask(tmp_path / "rect.png", np.full((50, 100), 255, np.uint8))


# ------------------------------------------------------------------------- mask placement


def test_mask_edge_lands_where_the_box_says_with_the_transition_width(psgan, tmp_path):
    # trim starts at global px 20 (2 mm bleed); the box at 10 mm -> px 120 -> cell 15;
    # 40 x 20 mm -> 50 x 25 cells; transition 4 mm = 5 cells
    paint = {"mask": str(rect_mask(tmp_path)), "placement": {"box_mm": [10, 10, 40, 20]},
             "latents": {"background": {"seed": 1}, "foreground": {"name": "kraft"}},
             "transition_mm": 4}
    plan = plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    fg, bg = NAMED["kraft"].numpy(), global_latent(1, NZ_GLOBAL).numpy()
    z = latent_map(plan, 0, 0, 60, 90)  # (nz, 60, 90): the box is cells [15, 65) x [15, 40)
    inside = z[:, 20:35, 20:60]  # > 2.5 cells + 1 from every edge
    assert (inside == fg[:, None, None]).all()  # exactly the named latent
    for outside in (z[:, :11, :], z[:, 45:, :], z[:, :, :11], z[:, :, 70:]):
        assert (outside == bg[:, None, None]).all()
    # where the blend crosses half-way, and how wide it is, along rows and columns
    weight = (z[0] - bg[0]) / (fg[0] - bg[0])  # 0 outside .. 1 inside
    for profile, edge in ((weight[27, :40], 15.0), (weight[:30, 40], 15.0),
                          (weight[27, 40:][::-1], 90 - 65.0)):
        centres = np.arange(len(profile)) + 0.5
        crossing = np.interp(0.5, profile, centres)  # profile rises monotonically
        assert np.all(np.diff(profile) >= -1e-6)
        assert abs(crossing - edge) <= 1.0
        blended = np.count_nonzero((profile > 0) & (profile < 1))
        assert abs(blended - 5) <= 1


def test_wave_vectors_follow_the_painted_latent_smoothly(psgan, tmp_path):
    paint = {"mask": str(rect_mask(tmp_path)), "placement": {"box_mm": [10, 10, 40, 20]},
             "latents": {"background": {"seed": 1}, "foreground": {"name": "kraft"}},
             "transition_mm": 4}
    plan = plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    field = _field_of(plan)
    z = torch.from_numpy(latent_map(plan, 27, 0, 1, 40)[:, 0].T.copy())  # (40 cells, nz)
    k = field.wave_vectors(z)  # (40, P, 2): one set of wave vectors per cell
    k_bg = field.wave_vectors(global_latent(1, NZ_GLOBAL)[None])[0]
    k_fg = field.wave_vectors(NAMED["kraft"][None])[0]
    assert torch.equal(k[5], k_bg) and torch.equal(k[30], k_fg)
    jump = (k_fg - k_bg).abs().max()
    assert jump > 0.01  # the two textures do have different waves
    steps = (k[1:] - k[:-1]).abs().amax(dim=(1, 2))  # largest change between neighbours
    assert steps.max() < 0.5 * jump  # spread over the transition, no jump at the edge


def test_contain_fit_centres_the_mask_inside_the_margins(psgan, tmp_path):
    # a 2:1 mask in an 80 x 60 mm trim with 10 mm margins: 60 x 30 mm, centred at y 15..45
    paint = {"mask": str(rect_mask(tmp_path)), "placement": {"fit": "contain", "margin_mm": 10},
             "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}},
             "transition_mm": 0}
    plan = plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    fg = global_latent(2, NZ_GLOBAL).numpy()
    z = latent_map(plan, 0, 0, 80, 110)
    is_fg = (z == fg[:, None, None]).all(axis=0)
    rows, cols = np.nonzero(is_fg)
    # box in global px: x 20 + 100 .. 20 + 700, y 20 + 150 .. 20 + 450 -> cells by centre
    assert (cols.min(), cols.max() + 1) == (15, 90)
    assert (rows.min(), rows.max() + 1) == (21, 59)  # 21.25 .. 58.75 cells
    assert is_fg.sum() == (90 - 15) * (59 - 21)


def test_grey_levels_and_palette_colours_take_the_nearest_named_level():
    greys = np.array([[0, 40, 100, 160, 250]], np.uint8)[:, :, None]
    levels = np.array([[0], [128], [255]], np.uint8)
    assert label_mask(greys, levels).tolist() == [[0, 0, 1, 1, 2]]
    colours = np.array([[[250, 5, 0], [0, 0, 0], [10, 240, 20]]], np.uint8)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    assert label_mask(colours, palette).tolist() == [[1, 0, 2]]


def test_palette_mask_paints_each_colour_with_its_latent(psgan, tmp_path):
    mask = np.zeros((40, 60, 3), np.uint8)
    mask[:, :30] = (255, 0, 0)
    mask[:, 30:] = (0, 0, 255)
    path = tmp_path / "palette.png"
    pyvips.Image.new_from_array(mask, interpretation="srgb").pngsave(str(path), palette=True)
    paint = {"mask": str(path), "placement": {"fit": "fill"}, "transition_mm": 0,
             "latents": {"background": {"seed": 1}, "#ff0000": {"name": "kraft"},
                         "#0000ff": {"name": "terrain"}}}
    plan = plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    z = latent_map(plan, 0, 0, 80, 110)
    # trim cells 2.5 .. 102.5 wide, split at 52.5
    assert (z[:, 10:70, 5:50] == NAMED["kraft"].numpy()[:, None, None]).all()
    assert (z[:, 10:70, 55:100] == NAMED["terrain"].numpy()[:, None, None]).all()


def test_weights_are_a_partition_of_unity_and_exact_away_from_edges():
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    labels[8:12, 8:12] = 2
    weights, origin = paint_weights(labels, 3, 0, (10.0, 10.0, 20.0, 20.0), 3.0)
    assert np.allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    assert set(np.unique(weights)) >= {0.0, 1.0}
    assert effective_transition(3.0) == pytest.approx(3.4)
    assert effective_transition(0) == 0


# --------------------------------------------------------------------------- exact tiles


def _field_of(plan) -> NoiseField:
    gen = plan.checkpoint.generator
    return NoiseField(gen.config, plan.spec.seed, waves=gen.waves, period=plan.period,
                      global_field=plan.texture.field)


@pytest.mark.parametrize("kind", ["paint", "quilt"])
def test_tiles_through_transitions_equal_one_pass(psgan, tmp_path, kind):
    texture = {"quilt": {"block_mm": 12, "transition_mm": 6}} if kind == "quilt" else \
        {"paint": {"mask": str(rect_mask(tmp_path)), "placement": {"box_mm": [8, 6, 20, 10]},
                   "latents": {"background": {"seed": 1}, "foreground": {"name": "kraft"}},
                   "transition_mm": 3}}
    plan = plan_job(parse_spec(job(psgan, tmp_path, texture, width_mm=36, height_mm=24)))
    gen, field = plan.checkpoint.generator, _field_of(plan)
    g = plan.geometry
    reference = render_reference(gen, field, g.width_px, g.height_px, output="float32")
    renderer = Renderer(gen, "cpu")
    for tile in (8, 24, 40):  # 1, 3 and 5 cells: edges inside every transition
        tiles = plan_tiles(g.width_px, g.height_px, CELL, renderer.rf.halo, tile)
        tiled = render_canvas(renderer, field, tiles, batch=3, output="float32")
        assert np.abs(tiled - reference).max() <= 1 / 255
    # and the field really varies: the painted/quilted render differs from one latent
    plain = NoiseField(gen.config, plan.spec.seed, waves=gen.waves)
    assert np.abs(render_reference(gen, plain, g.width_px, g.height_px, output="float32")
                  - reference).max() > 0.05


# ------------------------------------------------------------------------------- repeats


@pytest.mark.parametrize("kind", ["paint", "quilt", "latent"])
def test_repeat_rolled_by_half_a_period_equals_a_render_at_half_period(psgan, tmp_path, kind):
    # 19.2 x 12.8 mm = 24 x 16 cells of 0.8 mm
    textures = {
        "paint": {"paint": {"mask": str(rect_mask(tmp_path)), "transition_mm": 2,
                            "placement": {"box_mm": [12, 4, 12, 6]},  # crosses the right edge
                            "latents": {"background": {"seed": 1},
                                        "foreground": {"name": "terrain"}}}},
        "quilt": {"quilt": {"block_mm": 7, "transition_mm": 3}},
        "latent": {"latent": {"name": "kraft"}},
    }
    texture = {**textures[kind], "repeat": {"width_mm": 19.2, "height_mm": 12.8}}
    plan = plan_job(parse_spec(job(psgan, tmp_path, texture, width_mm=19.2, height_mm=12.8,
                                   bleed_mm=0)))
    assert plan.period == (16, 24)
    gen, field = plan.checkpoint.generator, _field_of(plan)
    full = render_reference(gen, field, 192, 128, output="float32")
    half = render_reference(gen, field, 192, 128, x0=96, y0=64, output="float32")
    assert np.abs(np.roll(full, (-64, -96), axis=(0, 1)) - half).max() <= 1e-4
    if kind == "paint":  # the box, cells [15, 30) x [5, 12.5), wraps past column 24
        z = latent_map(plan, 0, 0, 16, 24)
        fg = (z == NAMED["terrain"].numpy()[:, None, None]).all(axis=0)
        bg = (z == global_latent(1, NZ_GLOBAL).numpy()[:, None, None]).all(axis=0)
        assert fg[8, 18:].all() and fg[8, :4].all() and bg[8, 8:13].all()
    if kind == "quilt":  # 24 x 16 cells hold whole blocks: 3 x 2 of 8 x 8 cells
        assert plan.texture.field.period_blocks == (2, 3)


def test_repeat_job_tiff_holds_whole_periods_and_a_repeat_preview(psgan, tmp_path):
    # a print of 2 x 2 periods: its quadrants are identical, pixel for pixel
    texture = {"quilt": {"block_mm": 6}, "repeat": {"width_mm": 19.2, "height_mm": 12.8}}
    result = run_job(parse_spec(job(psgan, tmp_path, texture, width_mm=38.4,
                                    height_mm=25.6, bleed_mm=0)))
    image = tifffile.imread(result.plan.outputs.tiff)
    assert image.shape == (256, 384, 3)
    assert (image[:128, :192] == image[128:, 192:]).all()
    assert (image[:128, :192] == image[:128, 192:]).all()
    preview = result.plan.outputs.repeat_preview
    assert preview.exists() and pyvips.Image.new_from_file(str(preview)).width == 384


def test_repeat_adjust_dpi_keeps_the_period_exact_in_mm(psgan, tmp_path, capsys):
    # 20 mm at 254 dpi is 200 px = 25 cells: exact; 21 mm = 26.25 cells -> 26 cells at
    # 251.58 dpi keeps 21 mm exactly, the print (same size) is one period
    texture = {"repeat": {"width_mm": 21, "height_mm": 21, "adjust": "dpi"}}
    spec = job(psgan, tmp_path, texture, width_mm=21, height_mm=21, bleed_mm=0)
    plan = plan_job(parse_spec(spec))
    assert plan.period == (26, 26) and plan.geometry.width_px == 208
    assert plan.geometry.dpi == pytest.approx(208 / (21 / 25.4), abs=1e-5)
    assert plan.repeat.mm == pytest.approx((21.0, 21.0), abs=1e-4)
    result = run_job(parse_spec(spec))
    assert result.report.ok
    with tifffile.TiffFile(result.plan.outputs.tiff) as tif:
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(plan.geometry.dpi, abs=1e-3)


def test_repeat_snaps_reports_and_enforces_a_tolerance(psgan, tmp_path, capsys):
    import yaml

    texture = {"repeat": {"width_mm": 20.3, "height_mm": 12.8}}  # 25.375 cells -> 25
    spec = job(psgan, tmp_path, texture, width_mm=20.3, height_mm=12.8, bleed_mm=0)
    path = tmp_path / "repeat.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["generate", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "20.000 x 12.800 mm = 200 x 128 px = 25 x 16 cells" in out
    assert "snapped from 20.3 x 12.8 mm" in out
    spec["texture"]["repeat"]["tolerance_mm"] = 0.2
    with pytest.raises(SpecError, match=r"texture.repeat.width_mm: got 20.3.*tolerance_mm 0.2"
                                        r".*20.000 mm \(25 cells\)"):
        plan_job(parse_spec(spec))


# ---------------------------------------------------------------------------- rejections


def test_paint_on_a_model_without_global_channels_is_rejected(sgan, tmp_path):
    paint = {"mask": str(rect_mask(tmp_path)),
             "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}}}
    with pytest.raises(SpecError, match=r"texture.paint: model .* SGAN without global "
                                        r"channels"):
        plan_job(parse_spec(job(sgan, tmp_path, {"paint": paint})))
    with pytest.raises(SpecError, match="texture.quilt: model"):
        plan_job(parse_spec(job(sgan, tmp_path, {"quilt": {"block_mm": 10}})))


def test_a_latent_name_the_model_card_lacks_is_rejected(psgan, tmp_path):
    paint = {"mask": str(rect_mask(tmp_path)),
             "latents": {"background": {"seed": 1}, "foreground": {"name": "brick"}}}
    with pytest.raises(SpecError, match=r"texture.paint.latents.foreground.name: got 'brick'"
                                        r".*names kraft, terrain"):
        plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    with pytest.raises(SpecError, match=r"texture.latent.name: got 'honeycomb'"):
        plan_job(parse_spec(job(psgan, tmp_path, {"latent": {"name": "honeycomb"}})))


def test_missing_or_unreadable_masks_are_rejected_before_rendering(psgan, tmp_path):
    latents = {"background": {"seed": 1}, "foreground": {"seed": 2}}
    with pytest.raises(SpecError, match=r"texture.paint.mask: got 'nowhere/logo.png', no such "
                                        "file"):
        plan_job(parse_spec(job(psgan, tmp_path, {"paint": {"mask": "nowhere/logo.png",
                                                            "latents": latents}})))
    junk = tmp_path / "logo.png"
    junk.write_bytes(b"this is not an image at all")
    with pytest.raises(SpecError, match=r"texture.paint.mask: got '.*logo.png', which libvips "
                                        "cannot read"):
        plan_job(parse_spec(job(psgan, tmp_path, {"paint": {"mask": str(junk),
                                                            "latents": latents}})))
    assert not list((tmp_path).glob("*.tif"))


def test_a_mask_path_is_found_next_to_the_spec_and_enters_the_digest(psgan, tmp_path):
    import yaml

    write_mask(tmp_path / "logo.png", np.full((20, 20), 255, np.uint8))
    spec = job(psgan, tmp_path / "out", {"paint": {
        "mask": "logo.png", "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}}}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    from texprod.job.spec import load_spec

    first = plan_job(load_spec(path), spec_dir=tmp_path).spec_digest
    write_mask(tmp_path / "logo.png", np.zeros((20, 20), np.uint8))  # same path, new pixels
    assert plan_job(load_spec(path), spec_dir=tmp_path).spec_digest != first


# ---------------------------------------------------------------------------- shipped specs


def test_shipped_wallpaper_repeat_is_an_exact_530_mm_period(tmp_path):
    from texprod.job.spec import SPECS_DIR, load_spec

    plan = plan_job(load_spec("wallpaper_repeat", [f"output.dir={tmp_path}"]), SPECS_DIR)
    assert plan.period == (196, 196)
    assert (plan.geometry.width_px, plan.geometry.height_px) == (6272, 6272)
    assert plan.repeat.mm == pytest.approx((530.0, 530.0), abs=1e-3)
    assert plan.geometry.dpi == pytest.approx(300.583, abs=1e-3)
    assert plan.texture.field.period_blocks == (4, 4)
    assert plan.outputs.repeat_preview is not None


def test_shipped_logo_paint_uses_the_models_named_latents(tmp_path):
    from texprod.job.spec import SPECS_DIR, load_spec

    plan = plan_job(load_spec("logo_paint", [f"output.dir={tmp_path}"]), SPECS_DIR)
    latents = plan.checkpoint.latents
    assert {"kraft-fibre", "aerial-terrain"} <= set(latents)
    # the logo's middle (the T's stem) is terrain, the print's corner is kraft fibre
    g, cell = plan.geometry, plan.checkpoint.generator.config.cell_px
    middle = latent_map(plan, g.height_px // 2 // cell, g.width_px // 2 // cell, 1, 1)
    corner = latent_map(plan, 1, 1, 1, 1)
    assert torch.equal(torch.from_numpy(middle[:, 0, 0]), latents["aerial-terrain"])
    assert torch.equal(torch.from_numpy(corner[:, 0, 0]), latents["kraft-fibre"])


def test_a_mask_on_s3_is_fetched_and_a_missing_one_named(psgan, tmp_path, s3_bucket):
    from texprod.storage import upload_file

    upload_file(rect_mask(tmp_path), f"{s3_bucket}/masks/rect.png")
    latents = {"background": {"seed": 1}, "foreground": {"seed": 2}}
    paint = {"mask": f"{s3_bucket}/masks/rect.png", "placement": {"box_mm": [10, 10, 40, 20]},
             "latents": latents}
    plan = plan_job(parse_spec(job(psgan, tmp_path, {"paint": paint})))
    z = latent_map(plan, 27, 40, 1, 1)[:, 0, 0]
    assert (z == global_latent(2, NZ_GLOBAL).numpy()).all()  # the box is foreground
    missing = {**paint, "mask": f"{s3_bucket}/masks/nope.png"}
    with pytest.raises(SpecError, match=r"texture.paint.mask: got 's3://.*/masks/nope.png', no "
                                        "such object"):
        plan_job(parse_spec(job(psgan, tmp_path, {"paint": missing})))


def test_bad_paint_sections_are_rejected_naming_the_field(psgan, tmp_path):
    mask = str(rect_mask(tmp_path))
    out = tmp_path / "out"
    cases = [
        ({"mask": mask, "latents": {"foreground": {"seed": 2}}},
         r"texture.paint.latents: background is missing"),
        ({"mask": mask, "latents": {"background": {"seed": 1}, "fuchsia": {"seed": 2}}},
         r"texture.paint.latents: got 'fuchsia', a mask level must be background, foreground"),
        ({"mask": mask, "latents": {"background": {"seed": 1}, 0: {"seed": 2}}},
         r"0 and 'background' name the same mask level"),
        ({"mask": mask, "latents": {"background": {"seed": 1}},
          "placement": {"fit": "contain", "box_mm": [1, 2, 3, 4]}},
         r"texture.paint.placement: give either fit \(with margin_mm\) or box_mm, not both"),
    ]
    for paint, message in cases:
        with pytest.raises(SpecError, match=message):
            parse_spec(job(psgan, out, {"paint": paint}))
    latents = {"background": {"seed": 1}, "foreground": {"seed": 2}}
    with pytest.raises(SpecError, match=r"texture.paint.placement.margin_mm: got 40, which "
                                        r"leaves no room on a 80.0 x 60.0 mm trim"):
        plan_job(parse_spec(job(psgan, out, {"paint": {
            "mask": mask, "latents": latents, "placement": {"margin_mm": 40}}})))
    with pytest.raises(SpecError, match=r"texture.paint.placement: the mask \(50.0 x 25.0 "
                                        r"cells\) is larger than the repeat period"):
        plan_job(parse_spec(job(psgan, out, {
            "paint": {"mask": mask, "latents": latents, "placement": {"box_mm": [0, 0, 40, 20]}},
            "repeat": {"width_mm": 19.2, "height_mm": 12.8}}, width_mm=19.2, height_mm=12.8)))
    with pytest.raises(SpecError, match=r"texture: got quilt and paint: give only one of"):
        parse_spec(job(psgan, out, {"quilt": {"block_mm": 10},
                                    "paint": {"mask": mask, "latents": latents}}))
    assert not out.exists()  # nothing written: every check runs before rendering
