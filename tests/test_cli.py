"""The `texprod` command: models init and render, read back with tifffile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from texprod.cli import main

TINY = ["--depth", "4", "--filters", "16,8,8", "--kernel", "3", "--nz-local", "4",
        "--nz-global", "4", "--nz-periodic", "2"]


def texprod(*args: str) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    exe = Path(sys.executable).with_name("texprod")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "texprod.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["models", "init", "--out", str(out), "--upsample", "nearest", "--seed", "3",
                 *TINY]) == 0
    return out


def render(model: Path, out: Path, *extra: str) -> int:
    return main(["render", "--model", str(model), "--out", str(out), *extra])


def test_models_init_writes_the_architecture_asked_for(tmp_path):
    result = texprod("models", "init", "--out", str(tmp_path / "m"), "--arch", "sgan",
                     "--upsample", "tconv", "--depth", "3", "--kernel", "7", "--filters", "32,16",
                     "--nz-local", "12", "--seed", "5")
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["config"] == {"nz_local": 12, "nz_global": 0, "nz_periodic": 0, "affine": False,
                              "wave_hidden": 60, "upsample": "tconv", "kernel": 7,
                              "filters": [32, 16], "out_channels": 3}
    assert card["provenance"]["init"] == {"kind": "random", "seed": 5}
    assert "8 px per noise cell" in result.stdout


def test_models_init_defaults_to_the_reference_psgan(tmp_path):
    assert main(["models", "init", "--out", str(tmp_path / "ref")]) == 0
    card = json.loads((tmp_path / "ref" / "model.json").read_text())["config"]
    assert (card["filters"], card["kernel"], card["upsample"]) == ([512, 256, 128, 64], 5, "tconv")
    assert (card["nz_local"], card["nz_global"], card["nz_periodic"]) == (30, 60, 6)


def test_models_init_rejects_bad_architectures(tmp_path, capsys):
    assert main(["models", "init", "--out", str(tmp_path / "x"), "--upsample", "nearest",
                 "--kernel", "4"]) == 2
    assert "kernel: got 4, the nearest-upsample variant needs an odd kernel" in capsys.readouterr().err
    assert main(["models", "init", "--out", str(tmp_path / "y"), "--depth", "3",
                 "--filters", "8,8,8"]) == 2
    assert "filters: got 3 widths" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_render_writes_an_rgb_tiff(model, tmp_path):
    out = tmp_path / "a.tif"
    assert render(model, out, "--width", "100", "--height", "70", "--x0", "-13", "--y0", "7",
                  "--tile", "32") == 0
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.shape == (70, 100, 3)
        assert page.dtype == np.uint8
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        image = page.asarray()
    assert image.std() > 5
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]  # no scratch or partial files
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file


def test_a_scratch_directory_made_for_a_render_goes_with_its_canvas(model, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    assert render(model, tmp_path / "a.tif", "--width", "40", "--height", "30", "--scratch",
                  str(kept / "new" / "deeper")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "kept"]
    assert not any(kept.iterdir())  # what existed before stays, what was made is gone


def test_tiled_cli_render_equals_the_one_pass_reference(model, tmp_path):
    common = ["--width", "90", "--height", "61", "--x0", "-5", "--y0", "-21", "--seed", "11"]
    assert render(model, tmp_path / "ref.tif", *common, "--tile", "0") == 0
    reference = tifffile.imread(tmp_path / "ref.tif").astype(int)
    for tile, batch in [("16", "1"), ("40", "3"), ("1000", "2")]:
        out = tmp_path / f"t{tile}.tif"
        assert render(model, out, *common, "--tile", tile, "--batch", batch) == 0
        assert np.abs(tifffile.imread(out).astype(int) - reference).max() <= 1


def test_same_command_twice_gives_identical_files(model, tmp_path):
    for name in ("one.tif", "two.tif"):
        result = texprod("render", "--model", str(model), "--out", str(tmp_path / name),
                         "--width", "64", "--height", "48", "--seed", "4", "--bits", "16")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "two.tif").read_bytes()
    assert tifffile.imread(tmp_path / "one.tif").dtype == np.uint16
    result = texprod("render", "--model", str(model), "--out", str(tmp_path / "three.tif"),
                     "--width", "64", "--height", "48", "--seed", "5", "--bits", "16")
    assert (tmp_path / "three.tif").read_bytes() != (tmp_path / "one.tif").read_bytes()


def test_repeat_window_at_half_a_period_is_the_period_rolled(model, tmp_path):
    size = ["--width", "80", "--height", "48", "--repeat", "--tile", "32"]
    assert render(model, tmp_path / "p.tif", *size) == 0
    assert render(model, tmp_path / "h.tif", *size, "--x0", "40", "--y0", "24") == 0
    period = tifffile.imread(tmp_path / "p.tif").astype(int)
    half = tifffile.imread(tmp_path / "h.tif").astype(int)
    assert np.abs(np.roll(period, (-24, -40), axis=(0, 1)) - half).max() <= 1


def test_repeat_with_a_size_that_is_not_whole_cells_names_the_nearest_sizes(model, tmp_path,
                                                                              capsys):
    assert render(model, tmp_path / "r.tif", "--width", "100", "--height", "48", "--repeat") == 2
    err = capsys.readouterr().err
    assert "width: got 100, --repeat needs a multiple of the model's cell size 16 px" in err
    assert "nearest valid: 96 or 112" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--width", "0", "--height", "10"], "--width: got 0, must be at least 1 pixel"),
    (["--width", "10", "--height", "2000000"],
     "--height: got 2,000,000, must be at most 1,000,000 pixels"),
    (["--width", "300000", "--height", "300000"], "--width x --height: got 90.0 Gpx, at most"),
    (["--width", "100000", "--height", "100000", "--tile", "16"], "at most 1,000,000"),
    (["--width", "10", "--height", "10", "--tile", "-1"], "--tile: got -1"),
    (["--width", "10", "--height", "10", "--batch", "0"], "--batch: got 0"),
    (["--width", "10", "--height", "10", "--seed", "-2"], "seed: got -2"),
])
def test_bad_render_options(model, tmp_path, capsys, args, message):
    assert render(model, tmp_path / "bad.tif", *args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_output_or_scratch_under_a_file_is_refused_naming_the_option(model, tmp_path,
                                                                         capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert render(model, blocker / "r.tif", "--width", "8", "--height", "8") == 2
    assert f"--out: got '{blocker / 'r.tif'}', but {blocker} is a file, not a directory" \
        in capsys.readouterr().err
    assert render(model, tmp_path / "r.tif", "--width", "8", "--height", "8", "--scratch",
                  str(blocker / "scratch")) == 2
    assert f"--scratch: got '{blocker / 'scratch'}', but {blocker} is a file, not a " \
        "directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert main(["models", "init", "--out", str(blocker / "m"), *TINY]) == 2
    assert f"--out: got '{blocker / 'm'}', but {blocker} is a file, not a directory" \
        in capsys.readouterr().err


def test_bad_output_name_and_missing_model(model, tmp_path, capsys):
    assert main(["render", "--model", str(model), "--out", str(tmp_path / "x.png"),
                 "--width", "8", "--height", "8"]) == 2
    assert "out: got" in capsys.readouterr().err
    assert main(["render", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.tif"),
                 "--width", "8", "--height", "8"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_every_option_has_help_and_shows_its_default():
    result = texprod("render", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, default in [("--seed", "0"), ("--x0", "0"), ("--y0", "0"),
                            ("--tile", "512 on the CPU, 256 for bf16 on a CPU with bf16 in "
                                       "hardware, 2048 on CUDA"),
                            ("--batch", "1 on the CPU, 4 for bf16 on a CPU with bf16 in "
                                        "hardware, 4 on CUDA"), ("--device", "auto"),
                            ("--precision", "fp32"), ("--bits", "8")]:
        assert option in text and f"(default: {default})" in text
    assert "(default: None)" not in text
    result = texprod("models", "init", "--help")
    text = " ".join(result.stdout.split())
    for option in ("--arch", "--upsample", "--depth", "--kernel", "--filters", "--nz-local",
                   "--nz-global", "--nz-periodic", "--affine", "--seed"):
        assert option in text
    assert "(default: psgan)" in text and "(default: tconv)" in text


def test_corrupt_model_is_reported_by_the_cli(model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = texprod("render", "--model", str(broken), "--out", str(tmp_path / "x.tif"),
                     "--width", "8", "--height", "8")
    assert result.returncode == 2
    assert "generator.safetensors: truncated" in result.stderr
    assert "Traceback" not in result.stderr


def test_bundled_models_are_accepted_wherever_a_model_is(s3_bucket, tmp_path, capsys):
    from texprod.models.registry import list_models, pull

    out = tmp_path / "bundled.tif"
    assert main(["render", "--model", "bundled:packaging", "--width", "64", "--height", "48",
                 "--out", str(out)]) == 0
    assert tifffile.imread(out).shape == (48, 64, 3)
    assert main(["models", "push", "bundled:packaging", "kraft@1.0",
                 "--registry", s3_bucket]) == 0
    (entry,) = list_models(s3_bucket)
    assert (entry["name"], entry["version"]) == ("kraft", "1.0")
    bundled = Path(__file__).resolve().parent.parent / "texprod/data/models/packaging"
    pulled = pull("kraft@1.0", s3_bucket)
    assert (pulled / "model.json").read_bytes() == (bundled / "model.json").read_bytes()
    capsys.readouterr()
    exemplar = bundled.parent.parent / "exemplars" / "kraft-fibre.png"
    assert main(["quality", "bundled:packaging", str(exemplar), "--crop", "80", "--crops", "2",
                 "--size", "160", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "bundled:packaging"
    # a bundled name that does not exist lists the ones that do
    assert main(["render", "--model", "bundled:nope", "--width", "8", "--height", "8",
                 "--out", str(tmp_path / "x.tif")]) == 2
    err = capsys.readouterr().err
    assert "bundled:nope" in err and "packaging" in err
