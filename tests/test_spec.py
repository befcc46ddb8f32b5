"""Job specs: defaults, geometry, and errors that name the field, the value and the line."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from texprod.cli import main
from texprod.errors import SpecError
from texprod.job.spec import JobSpec, PrintSpec, load_spec, parse_spec
from texprod.press.geometry import mm_to_px, print_geometry

MINIMAL = """\
name: box
model: models/x
print:
  width_mm: 600
  height_mm: 400
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_minimal_spec_gets_the_documented_defaults(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert (spec.print.dpi, spec.print.bleed_mm, spec.print.color) == (300, 3, "cmyk")
    assert (spec.print.icc_profile, spec.print.intent, spec.print.tac_limit) == \
        ("default", "relative", 300)
    assert spec.print.bit_depth == 8
    assert (spec.tiff.compression, spec.tiff.layout, spec.tiff.bigtiff, spec.tiff.embed_icc) == \
        ("lzw", "tiled", "auto", True)
    assert (spec.render.device, spec.render.precision, spec.render.tile_px) == \
        ("auto", "fp32", "auto")
    assert (spec.output.dir, spec.output.proof, spec.seed, spec.texture.repeat) == \
        ("out/", True, 0, False)


def test_shipped_specs_are_valid():
    root = Path(__file__).resolve().parent.parent / "specs"
    box = load_spec(root / "box_packaging.yaml")
    assert (box.print.width_mm, box.print.height_mm, box.print.dpi, box.print.bleed_mm) == \
        (600, 400, 300, 3)
    assert box.print.color == "cmyk"
    city = load_spec("city_map_gigapixel")  # a bare name is looked up in specs/
    geometry = print_geometry(city.print)
    assert geometry.width_px * geometry.height_px >= 1e9
    assert city.print.color == "rgb" and city.tiff.bigtiff == "auto"


def test_overrides_apply_with_yaml_types(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL), ["print.dpi=150", "tiff.embed_icc=false",
                                                "render.tile_px=256", "seed=9"])
    assert (spec.print.dpi, spec.tiff.embed_icc, spec.render.tile_px, spec.seed) == \
        (150, False, 256, 9)


def test_digest_ignores_where_and_how_fast_but_not_what(tmp_path):
    base = load_spec(write(tmp_path, MINIMAL))
    same = [load_spec(tmp_path / "spec.yaml", [o]) for o in
            ("render.tile_px=128", "render.batch=3", "output.dir=elsewhere/", "name=other",
             "render.device=cpu", "model=other/path")]
    different = [load_spec(tmp_path / "spec.yaml", [o]) for o in
                 ("seed=1", "print.dpi=301", "print.bleed_mm=2", "print.color=rgb",
                  "tiff.compression=deflate", "render.precision=bf16", "texture.repeat=true",
                  "print.tac_limit=320")]
    digest = base.digest("m")
    assert all(s.digest("m") == digest for s in same)
    assert len({s.digest("m") for s in different} | {digest}) == len(different) + 1
    assert base.digest("other model") != digest


BAD_SPECS = [
    # (yaml edit applied to MINIMAL, expected message fragment, expected line or None)
    ("print:\n  width_mm: 600\n  height_mm: 400\n  dpi: 0\n",
     "print.dpi: got 0, must be between 72 and 2400", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  dpi: 5000\n",
     "print.dpi: got 5000, must be between 72 and 2400", 6),
    ("print:\n  width_mm: -600\n  height_mm: 400\n",
     "print.width_mm: got -600, must be greater than 0", 4),
    ("print:\n  width_mm: 600\n", "print: height_mm is missing", 3),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  width_px: 100\n  height_px: 100\n",
     "print: give the size either in mm", 3),
    ("print:\n  dpi: 300\n", "print: the print size is required", 3),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  color: cmky\n",
     "print.color: got 'cmky', must be one of 'rgb', 'cmyk'", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  intent: vivid\n",
     "print.intent: got 'vivid', must be one of 'perceptual', 'relative', 'saturation', "
     "'absolute'", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  bit_depth: 12\n",
     "print.bit_depth: got 12, must be one of 8, 16", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  tac_limit: 500\n",
     "print.tac_limit: got 500, must be between 100 and 400", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  bleed_mm: -1\n",
     "print.bleed_mm: got -1, must be between 0 and 50", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\n  widht_mm: 600\n",
     "print.widht_mm: unknown key, allowed keys here: width_mm, height_mm", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\ntiff:\n  compression: zstd\n",
     "tiff.compression: got 'zstd', must be one of 'lzw', 'deflate', 'none'", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\ntiff:\n  bigtiff: sometimes\n",
     "tiff.bigtiff: got 'sometimes', must be one of 'auto', 'always', 'never'", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\nrender:\n  tile_px: -5\n",
     "render.tile_px: got -5, must be 'auto' or between 0 and 65536", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\nrender:\n  precision: fp8\n",
     "render.precision: got 'fp8'", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\nrender:\n  batch: 0\n",
     "render.batch: got 0, must be 'auto' or between 1 and 256", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\nseed: -3\n",
     "seed: got -3, must be between 0 and 18446744073709551615", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\noutput:\n  proof: perhaps\n",
     "output.proof: got 'perhaps', must be true or false", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\ncolour: cmyk\n",
     "colour: unknown key, allowed keys here: name, model", 6),
    ("print:\n  width_mm: 600\n  height_mm: 400\ntexture:\n  repeat: yes please\n",
     "texture.repeat: got 'yes please', must be true or false or a mapping of width_mm, "
     "height_mm, tolerance_mm, adjust", 7),
    ("print:\n  width_mm: 600\n  height_mm: 400\ntexture:\n  latent: 5\n",
     "texture.latent: got 5, must be a mapping of seed, name", 7),
]


@pytest.mark.parametrize("print_block, message, line", BAD_SPECS)
def test_bad_specs_name_the_field_value_and_line(tmp_path, monkeypatch, capsys, print_block,
                                                  message, line):
    text = "name: box\nmodel: models/x\n" + print_block
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert message in str(info.value)
    if line is not None:
        assert f"(line {line})" in str(info.value)
    # through the command: the same message, exit status 2, and no file of any kind
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "spec.yaml"]) == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


@pytest.mark.parametrize("text, message", [
    ("name: box wrap\nmodel: m\nprint: {width_mm: 1, height_mm: 1}\n", "name: got 'box wrap'"),
    ("model: m\nprint: {width_mm: 1, height_mm: 1}\n", "name: missing, this field is required"),
    ("name: box\nprint: {width_mm: 1, height_mm: 1}\n", "model: missing"),
    ("name: box\nmodel: m\n", "print: missing"),
    ("- just\n- a list\n", "a job spec must be a mapping"),
    ("name: box\nmodel: m\nprint: {width_mm: 1, height_mm: 1\n", "not valid YAML at line"),
])
def test_structural_spec_errors(tmp_path, text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(write(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path):
    text = "name: box\nmodel: m\nprint:\n  width_mm: 600\n  height_mm: 400\n  dpi: 0\n" \
           "  color: cmky\ntiff:\n  layout: rows\n"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    for fragment in ("print.dpi", "print.color", "tiff.layout"):
        assert fragment in str(info.value)


def test_missing_spec_and_bad_override(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="--set: got 'print.dpi', must be key=value"):
        load_spec(write(tmp_path, MINIMAL), ["print.dpi"])


@pytest.mark.parametrize("mm, dpi, px", [
    (25.4, 300, 300), (600, 300, 7087), (606, 300, 7157), (406, 300, 4795),
    (3, 300, 35), (0, 300, 0), (0.0846666, 300, 1),
    # exact halves round up: 127 mm at 100.1 dpi = 500.5 px
    (127, 100.1, 501), (12.7, 5, 3),  # 2.5 px -> 3
])
def test_mm_to_px_rounds_half_up_exactly(mm, dpi, px):
    assert mm_to_px(mm, dpi) == px


def test_geometry_of_the_box_wrap():
    g = print_geometry(PrintSpec(width_mm=600, height_mm=400, dpi=300, bleed_mm=3))
    # round((600 + 6) / 25.4 * 300) = 7157, round(406 / 25.4 * 300) = 4795; bleed 35 px
    assert (g.width_px, g.height_px, g.bleed_px) == (7157, 4795, 35)
    assert g.trim_box == (35, 35, 7087, 4725)
    assert abs(g.trim_mm[0] - 600) < 25.4 / 300 and abs(g.trim_mm[1] - 400) < 25.4 / 300


@pytest.mark.parametrize("width_mm, height_mm, dpi, bleed", [
    (210, 297, 300, 3), (99.9, 33.3, 72, 0), (1000, 1, 150, 0.125 * 25.4), (47, 61, 2399, 5),
])
def test_geometry_follows_the_rounding_rule(width_mm, height_mm, dpi, bleed):
    g = print_geometry(PrintSpec(width_mm=width_mm, height_mm=height_mm, dpi=dpi,
                                 bleed_mm=bleed))
    for trim, total in ((width_mm, g.width_px), (height_mm, g.height_px)):
        exact = (Fraction(repr(float(trim))) + 2 * Fraction(repr(float(bleed)))) \
            / Fraction(254, 10) * Fraction(repr(float(dpi)))
        assert total == int(exact + Fraction(1, 2))
    x, y, w, h = g.trim_box
    assert (x, y) == (g.bleed_px, g.bleed_px)
    assert (x + w + g.bleed_px, y + h + g.bleed_px) == (g.width_px, g.height_px)


def test_pixel_sized_prints_add_the_bleed():
    g = print_geometry(PrintSpec(width_px=1920, height_px=1080, dpi=96, bleed_mm=0))
    assert (g.width_px, g.height_px, g.bleed_px) == (1920, 1080, 0)
    g = print_geometry(PrintSpec(width_px=1000, height_px=500, dpi=300, bleed_mm=3))
    assert (g.width_px, g.height_px, g.trim_box) == (1070, 570, (35, 35, 1000, 500))


def test_repeat_snaps_the_trim_to_whole_cells():
    g = print_geometry(PrintSpec(width_mm=530, height_mm=530, dpi=300, bleed_mm=0), 32)
    assert g.snapped and g.trim_box[2] % 32 == 0 and g.trim_box[3] % 32 == 0
    assert abs(g.trim_box[2] - 530 / 25.4 * 300) <= 16


def test_a_print_too_small_for_its_bleed_is_rejected():
    with pytest.raises(SpecError, match="print.width: got 0 px of trim"):
        print_geometry(PrintSpec(width_mm=0.01, height_mm=100, dpi=72, bleed_mm=0))


def test_spec_schema_is_documented():
    for model in (JobSpec.model_fields["print"].annotation, JobSpec.model_fields["tiff"].annotation):
        for name, info in model.model_fields.items():
            assert info.description, f"{name} has no description"
    assert yaml.safe_load(MINIMAL)["name"] == "box"


def test_an_error_in_an_override_names_the_override_not_a_yaml_line(tmp_path, monkeypatch,
                                                                     capsys):
    path = write(tmp_path, "name: box\nmodel: m\nprint:\n  width_mm: 600\n  height_mm: 400\n"
                           "  dpi: 300\n")
    with pytest.raises(SpecError) as info:
        load_spec(path, ["seed=2", "print.dpi=10"])
    message = str(info.value)
    assert "print.dpi: got 10, must be between 72 and 2400 (from --set print.dpi=10)" in message
    assert "(line" not in message
    # a section replaced by an override is named too, and untouched fields keep their line
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "name: box\nmodel: m\nseed: -1\nprint:\n  width_mm: 600\n"
                                  "  height_mm: 400\n"), ["print={width_mm: 0, height_mm: 4}"])
    message = str(info.value)
    assert "print.width_mm: got 0" in message and "(from --set print={width_mm" in message
    assert "seed: got -1" in message and "(line 3)" in message
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "spec.yaml", "--set", "print.dpi=10"]) == 2
    assert "(from --set print.dpi=10)" in capsys.readouterr().err


BASE = "name: box\nmodel: m\nprint:\n  width_mm: 600\n  height_mm: 400\n"


@pytest.mark.parametrize("override, field", [
    ("seed=true", "seed"), ("seed=yes", "seed"), ("seed=on", "seed"),
    ("print.dpi=true", "print.dpi"), ("print.bleed_mm=false", "print.bleed_mm"),
    ("render.batch=yes", "render.batch"), ("render.tile_px=on", "render.tile_px"),
    ("print.bit_depth=true", "print.bit_depth"), ("texture.latent={seed: true}",
                                                  "texture.latent.seed"),
    ("print.width_mm='600'", "print.width_mm"),
])
def test_booleans_and_strings_are_not_numbers(tmp_path, override, field):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, BASE), [override])
    message = str(info.value)
    assert f"{field}: got " in message and f"(from --set {override})" in message


ALIAS_BOMB = "".join(
    f"{k}: &{k} [" + ", ".join([f"*{prev}"] * 9 if prev else ['"lol"'] * 9) + "]\n"
    for prev, k in zip([None, *"abcdefgh"], "abcdefghi", strict=True))


@pytest.mark.parametrize("text", [
    ALIAS_BOMB + BASE,                                     # 9^9 values from 9 lines
    BASE + "seed: &s [*s]\n",                              # a list that contains itself
    BASE + "texture: &t {latent: {seed: 1}, more: [*t, *t, *t, *t, *t, *t, *t, *t]}\n",
])
def test_yaml_alias_bombs_are_refused_quickly(tmp_path, text):
    import time

    started = time.perf_counter()
    with pytest.raises(SpecError, match="values once its YAML aliases"):
        load_spec(write(tmp_path, text))
    assert time.perf_counter() - started < 5


def test_errors_never_print_an_unbounded_value(tmp_path):
    shared = ["x" * 50] * 50
    data = {"name": "n" * 100_000, "model": "m", "seed": [shared] * 20,
            "print": {"width_mm": 1, "height_mm": 1, "dpi": "z" * 100_000}}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    message = str(info.value)
    assert len(message) < 1000 and message.count("…") >= 3
    assert all(f"{field}: got " in message for field in ("name", "seed", "print.dpi"))


@pytest.mark.parametrize("raw, offset", [
    (b"name: box\xff\nmodel: m\n", 9),
    ("name: caf\u00e9\n".encode("latin-1"), 9),
    ("name: box\n".encode("utf-16"), 0),
])
def test_a_spec_that_is_not_utf8_names_the_file_and_the_byte(tmp_path, raw, offset,
                                                              monkeypatch, capsys):
    path = tmp_path / "spec.yaml"
    path.write_bytes(raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and f"at offset {offset}" in str(info.value)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "spec.yaml"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


@pytest.mark.parametrize("overrides, message", [
    (["print.width_mm=100000", "print.height_mm=100000", "print.dpi=2400"],
     "print.width: 9,449,386 px with bleed at 2400 dpi"),
    (["print.width_mm=60000", "print.height_mm=60000"], "Gpx at 300 dpi; at most 68.7 Gpx"),
    (["print.width_mm=null", "print.height_mm=null", "print.width_px=300000",
      "print.height_px=300000"], "at most 68.7 Gpx"),
    (["print.width_mm=20000", "print.height_mm=20000", "render.tile_px=32"],
     "32 px gives 6,823,740 tiles for 236291 x 236291 px; at most 1,000,000"),
])
def test_work_is_bounded_before_anything_is_allocated(tmp_path, monkeypatch, capsys,
                                                      overrides, message):
    import time

    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    args = [a for o in overrides for a in ("--set", o)]
    assert main(["generate", "box_packaging", *args, "--set", "output.dir=out",
                 "--dry-run"]) == 2
    assert time.perf_counter() - started < 20
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
