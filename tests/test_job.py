"""Print jobs end to end: spec -> TIFF on disk, read back with tifffile, pyvips and inspect."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
import torch
import yaml

from texprod.cli import main
from texprod.engine import GeneratorConfig, random_generator
from texprod.engine.render import native_on_cpu
from texprod.errors import ConfigError, SpecError, TexprodError
from texprod.job.executors import StripeJob, ThreadStripes
from texprod.job.pipeline import (
    open_spool,
    prepare_directories,
    promise,
    render_stripes,
    run_job,
)
from texprod.job.plan import plan_job
from texprod.job.spec import parse_spec
from texprod.models import save_generator
from texprod.press.colour import ICC_DIR, parse_icc
from texprod.press.preflight import inspect_tiff
from texprod.press.promise import FILE, RECORD, Promise

CELL = 8  # tiny test generator: 3 layers, 8 px per noise cell


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
    return save_generator(random_generator(config, 5), tmp_path_factory.mktemp("m") / "tiny")


def make_spec(model: Path, out: Path, **sections) -> dict:
    spec = {
        "name": "job", "model": str(model), "seed": 3,
        "print": {"width_mm": 30, "height_mm": 20, "dpi": 150, "bleed_mm": 2, "color": "rgb"},
        "render": {"device": "cpu", "tile_px": 32},
        "output": {"dir": str(out)},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            spec.setdefault(section, {}).update(values)
        else:
            spec[section] = values
    return spec


def run(model, out, **sections):
    return run_job(parse_spec(make_spec(model, out, **sections)))


def read(path: Path) -> np.ndarray:
    return tifffile.imread(path)


def test_rgb_job_writes_a_checked_print_file_and_proofs(model, tmp_path):
    result = run(model, tmp_path)
    plan = result.plan
    tiff = plan.outputs.tiff
    assert tiff.name == f"job-{plan.spec_digest[:12]}.tif"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [tiff.name, plan.outputs.proof.name, plan.outputs.thumbnail.name])  # no scratch left
    # geometry: round((30 + 4) / 25.4 * 150) = 201, round(24 / 25.4 * 150) = 142, bleed 12
    assert (plan.geometry.width_px, plan.geometry.height_px, plan.geometry.bleed_px) == \
        (201, 142, 12)
    with tifffile.TiffFile(tiff) as tif:
        page = tif.pages[0]
        assert page.shape == (142, 201, 3) and page.dtype == np.uint8
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        x_res = page.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(150)
        assert parse_icc(page.tags[34675].value)["colour_space"].strip() == "RGB"
        provenance = json.loads(page.description)["texprod"]
    assert provenance["trim_box_px"] == [12, 12, 177, 118]
    assert provenance["spec_digest"] == plan.spec_digest
    assert result.report.ok, result.report.table()
    # pyvips reads the same pixels
    vips = pyvips.Image.new_from_file(str(tiff))
    assert (vips.width, vips.height, vips.bands) == (201, 142, 3)
    assert np.array_equal(vips.numpy(), read(tiff))
    proof = pyvips.Image.new_from_file(str(plan.outputs.proof))
    thumb = pyvips.Image.new_from_file(str(plan.outputs.thumbnail))
    assert (proof.width, proof.height) == (201, 142)  # smaller than 2048: not enlarged
    assert max(thumb.width, thumb.height) <= 256
    # the trim line is drawn in magenta at the trim box
    pixels = proof.numpy().astype(int)
    assert np.abs(pixels[12, 40:150] - [255, 0, 255]).max() <= 40


def test_tiled_job_equals_the_one_pass_job(model, tmp_path):
    one = run(model, tmp_path / "one", render={"tile_px": 0})
    tiled = run(model, tmp_path / "tiled", render={"tile_px": 24, "batch": 3})
    assert one.plan.spec_digest == tiled.plan.spec_digest  # tiling does not change the job
    assert np.abs(read(one.tiff.path).astype(int) - read(tiled.tiff.path)).max() <= 1


def test_same_spec_same_file(model, tmp_path):
    first = run(model, tmp_path / "a")
    second = run(model, tmp_path / "b")
    assert first.tiff.path.name == second.tiff.path.name
    assert first.tiff.path.read_bytes() == second.tiff.path.read_bytes()


GEOMETRIES = [
    # (print section, tiff section)
    ({"width_mm": 30, "height_mm": 20, "dpi": 150, "bleed_mm": 0, "color": "rgb"}, {}),
    ({"width_mm": 21.7, "height_mm": 13.3, "dpi": 123, "bleed_mm": 1.5, "color": "cmyk"},
     {"layout": "strips"}),
    ({"width_mm": 25, "height_mm": 17, "dpi": 200, "bleed_mm": 3, "color": "cmyk",
      "bit_depth": 16}, {"compression": "deflate"}),
    ({"width_px": 77, "height_px": 51, "dpi": 96, "bleed_mm": 0, "color": "rgb",
      "bit_depth": 16}, {"layout": "strips", "compression": "none"}),
    ({"width_mm": 11, "height_mm": 19, "dpi": 300, "bleed_mm": 3.175, "color": "rgb"},
     {"bigtiff": "always"}),
    ({"width_mm": 15, "height_mm": 9, "dpi": 250, "bleed_mm": 2, "color": "cmyk"},
     {"embed_icc": False, "bigtiff": "always"}),
]


@pytest.mark.parametrize("print_section, tiff_section", GEOMETRIES)
def test_print_files_keep_every_promise(model, tmp_path, print_section, tiff_section):
    spec = make_spec(model, tmp_path)
    spec["print"] = print_section
    spec["tiff"] = tiff_section
    result = run_job(parse_spec(spec))
    plan, path = result.plan, result.tiff.path
    g = plan.geometry
    bits = print_section.get("bit_depth", 8)
    bands = 4 if print_section["color"] == "cmyk" else 3
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.shape == (g.height_px, g.width_px, bands)
        assert page.dtype == (np.uint8 if bits == 8 else np.uint16)
        assert tif.is_bigtiff == (tiff_section.get("bigtiff") == "always")
        assert page.is_tiled == (tiff_section.get("layout", "tiled") == "tiled")
        assert (34675 in page.tags) == tiff_section.get("embed_icc", True)
        if bands == 4:
            assert page.photometric == tifffile.PHOTOMETRIC.SEPARATED
    assert pyvips.Image.new_from_file(str(path)).bands == bands
    report = inspect_tiff(path, None)  # the file's own promises
    assert report.ok, report.table()
    assert result.report.ok  # and the spec's, checked by the job
    # the promise the job made is the one the file carries, field for field
    with tifffile.TiffFile(path) as tif:
        carried = Promise.from_provenance(json.loads(tif.pages[0].description))
    assert carried == promise(plan)
    checked = {c.name.removeprefix("expect.") for c in result.report.checks}
    promised = {n for n in Promise.names(FILE) + Promise.names(RECORD)
                if getattr(carried, n) is not None}
    assert promised - {"icc_description"} <= checked
    if bands == 4:
        assert 0 < result.tac_max <= 300


def test_cmyk_print_converted_back_matches_the_rgb_render(model, tmp_path):
    rgb = run(model, tmp_path / "rgb")
    cmyk = run(model, tmp_path / "cmyk", print={"color": "cmyk"})
    x, y, w, h = cmyk.plan.geometry.trim_box
    profile = str(ICC_DIR / "FOGRA39-texprod.icc")
    back = pyvips.Image.new_from_file(str(cmyk.tiff.path)).icc_transform(
        "srgb", input_profile=profile, intent="relative", black_point_compensation=True)
    original = pyvips.Image.new_from_file(str(rgb.tiff.path))
    lab_back = back.crop(x, y, w, h).colourspace("lab")
    lab_original = original.crop(x, y, w, h).copy(interpretation="srgb").colourspace("lab")
    delta = lab_back.dE00(lab_original).numpy()
    # in gamut the profile reproduces within a few dE00; saturated render colours clip
    assert np.median(delta) < 3.0, np.percentile(delta, [50, 95, 100])
    assert np.percentile(delta, 95) < 12.0


def test_ink_over_the_limit_fails_with_the_value_and_leaves_nothing(model, tmp_path):
    with pytest.raises(TexprodError, match=r"print.tac_limit: total ink \d+\.\d% at pixel "
                                           r"\(\d+, \d+\) exceeds the limit 120%"):
        run(model, tmp_path, print={"color": "cmyk", "tac_limit": 120})
    assert list(tmp_path.iterdir()) == []


def test_bigtiff_never_for_a_huge_print_fails_before_rendering(model, tmp_path):
    spec = make_spec(model, tmp_path, tiff={"bigtiff": "never"})
    spec["print"] = {"width_px": 40000, "height_px": 40000, "color": "cmyk"}
    with pytest.raises(ConfigError, match="tiff.bigtiff"):
        plan_job(parse_spec(spec))
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("profile, message", [
    ("/nonexistent/x.icc", "no such file"),
    ("SRGB", "a RGB profile; print.color cmyk needs a CMYK output profile"),
    ("NOT_ICC", "not an ICC profile"),
    ("INPUT_CLASS", "device class 'scnr' cannot be a conversion target"),
])
def test_bad_output_profiles_are_rejected(model, tmp_path, profile, message):
    own = (ICC_DIR / "FOGRA39-texprod.icc").read_bytes()
    if profile == "SRGB":
        path = tmp_path / "srgb.icc"
        path.write_bytes(pyvips.Image.black(1, 1, bands=3).copy(interpretation="srgb")
                         .icc_transform("srgb", input_profile="srgb").get("icc-profile-data"))
    elif profile == "NOT_ICC":
        path = tmp_path / "fake.icc"
        path.write_bytes(b"\0" * 500)
    elif profile == "INPUT_CLASS":
        path = tmp_path / "scanner.icc"
        path.write_bytes(own[:12] + b"scnr" + own[16:])
    else:
        path = Path(profile)
    with pytest.raises(SpecError, match=message):
        plan_job(parse_spec(make_spec(model, tmp_path / "out",
                                      print={"color": "cmyk", "icc_profile": str(path)})))
    assert not (tmp_path / "out").exists()


def render_some(plan, stripes=None):
    """Work some stripes of a plan into its spool, as a job that then dies would."""
    spool = open_spool(plan)
    executor = ThreadStripes(2)
    if stripes is None:
        render_stripes(plan, spool, executor, StripeJob.of(plan, None))
    else:
        executor.run(StripeJob.of(plan, None), stripes, spool.put)
    return spool


def test_a_resumed_job_equals_an_uninterrupted_one(model, tmp_path):
    tall = {"height_mm": 120}  # 3 stripes of 256 rows
    spec = parse_spec(make_spec(model, tmp_path / "resumed", render={"tile_px": 16},
                                print=tall))
    plan = plan_job(spec)
    assert len(plan.stripes) == 3
    render_some(plan, [0, 2])  # then the job "dies", leaving its spool
    assert open_spool(plan).done == {0, 2}
    rendered = []
    result = run_job(spec, progress=lambda done, total: rendered.append(done))
    assert rendered[0] == sum(len(plan.stripes[i].tiles.tiles) for i in (0, 2))  # not redone
    assert rendered[-1] == plan.tile_count
    fresh = run(model, tmp_path / "fresh", render={"tile_px": 16}, print=tall)
    assert open(result.tiff.path, "rb").read() == open(fresh.tiff.path, "rb").read()
    assert not plan.spool_dir.exists()


@pytest.mark.parametrize("damage", ["torn", "lost"])
def test_a_resumed_job_survives_a_torn_or_lost_file(model, tmp_path, damage):
    """Killed mid-append, the growing file holds bytes past its last record: the rerun
    cuts them off. A file that is gone takes the stripes it held with it: they are
    rendered again, the early ones waiting in the spool are kept."""
    tall = {"height_mm": 120}
    spec = parse_spec(make_spec(model, tmp_path / "out", render={"tile_px": 16},
                                print=tall))
    plan = plan_job(spec)
    prepare_directories(plan)
    spool = render_some(plan, [0, 2])  # 0 goes into the file, 2 waits for 1
    assert spool.assembled == 1 and (plan.spool_dir / "stripe-000002.bin").exists()
    growing = spool.growing
    spool.close()
    if damage == "torn":
        with open(growing, "ab") as fh:
            fh.write(b"half a stripe")
    else:
        growing.unlink()
    rendered = []
    result = run_job(spec, progress=lambda done, total: rendered.append(done))
    kept = (0, 2) if damage == "torn" else (2,)
    assert rendered[0] == sum(len(plan.stripes[i].tiles.tiles) for i in kept)
    fresh = run(model, tmp_path / "fresh", render={"tile_px": 16}, print=tall)
    assert result.tiff.path.read_bytes() == fresh.tiff.path.read_bytes()
    assert not growing.exists() and not plan.spool_dir.exists()


def test_a_spool_of_another_job_is_not_resumed(model, tmp_path):
    tall = {"height_mm": 120}
    plan = plan_job(parse_spec(make_spec(model, tmp_path, render={"tile_px": 16},
                                         print=tall)))
    render_some(plan, [1])
    other = plan_job(parse_spec(make_spec(model, tmp_path, render={"tile_px": 32},
                                          print=tall)))  # other tiles: other bytes
    assert other.spool_dir == plan.spool_dir and open_spool(other).done == set()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture
def tiny_disk(tmp_path):
    disk = tmp_path / "tiny"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "256k"):
        pytest.skip("needs root to mount a 256 KB tmpfs (the RLIMIT_FSIZE test covers the rest)")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_too_little_disk_fails_before_rendering(model, tmp_path, tiny_disk):
    out = tmp_path / "out"
    spec = make_spec(model, out, render={"scratch_dir": str(tiny_disk)})
    with pytest.raises(TexprodError, match=rf"disk: {tiny_disk} has .* free, the job needs"):
        run_job(parse_spec(spec))
    assert list(tiny_disk.iterdir()) == []
    assert not out.exists()


def test_disk_filling_up_while_rendering_fails_cleanly(model, tmp_path, tiny_disk):
    """The print file grows on the output's disk while the stripes render (and early
    stripes wait in the spool): a full disk there fails the render and leaves nothing."""
    out = tiny_disk / "out"
    spec = parse_spec(make_spec(model, out, render={"scratch_dir": str(tiny_disk)},
                                print={"width_mm": 200, "height_mm": 200, "dpi": 72}))
    plan = plan_job(spec)  # the disk check would refuse; render as if it had passed
    prepare_directories(plan)
    with pytest.raises(TexprodError, match=rf"disk full while writing {tiny_disk}"):
        render_some(plan).remove()
    open_spool(plan).remove()
    assert [p.name for p in tiny_disk.iterdir()] == ["out"] and not any(out.iterdir())


def test_file_size_limit_mid_job_fails_cleanly(model, tmp_path):
    """A write that fails mid-way (EFBIG under RLIMIT_FSIZE, like a full disk) leaves nothing.

    The limit lets the spool's stripes (0.73 MB each) through but stops the uncompressed
    4-band TIFF (2.01 MB) part-way through its assembly.
    """
    spec_path = tmp_path / "spec.yaml"
    out = tmp_path / "out"
    spec = make_spec(model, out, print={"width_mm": 120, "height_mm": 120, "dpi": 150,
                                        "bleed_mm": 0, "color": "cmyk"},
                     tiff={"compression": "none"})
    spec_path.write_text(yaml.safe_dump(spec))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_800_000, 1_800_000))

    script = ("import sys\nfrom texprod.job.pipeline import run_job\nfrom texprod.job.spec import load_spec\n"
              "try:\n    run_job(load_spec(sys.argv[1]))\n"
              "except Exception as e:\n    print(type(e).__name__, e, file=sys.stderr)\n"
              "    sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", script, str(spec_path)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "JobFailure disk full while writing" in done.stderr
    assert str(out) in done.stderr  # names the file it could not write
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("engine", ["libvips", "lut"])
def test_generate_dry_run_prints_the_plan_and_writes_nothing(model, tmp_path, capsys, engine):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(model, tmp_path / "out",
                                                  print={"color": "cmyk"},
                                                  render={"colour_engine": engine})))
    assert main(["generate", str(spec_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    for fragment in ("201 x 142 px with bleed", "trim 177 x 118 px at (12, 12)",
                     "30.0 x 20.0 mm trim + 2.03 mm bleed", "CMYK 8-bit", "texprod FOGRA39",
                     "tiles", "stripe spool", "estimate", ".tif"):
        assert fragment in text, fragment
    # the time comes from tiles rendered now, on this machine, not from an idle benchmark
    estimate = next(line for line in text.splitlines() if line.startswith("estimate"))
    assert "measured now on cpu over 1 tile(s)" in estimate, estimate
    # the stripes' whole work: the network, then colour conversion and encoding
    times = re.search(r"network ([\d.e-]+) s, colour and encoding ([\d.e-]+) s of work",
                      estimate)
    assert times and float(times[2]) > 0, estimate
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_a_cuda_job_where_there_is_no_gpu_names_render_device(model, tmp_path):
    with pytest.raises(TexprodError, match=r"^render\.device: got 'cuda', but no CUDA device "
                                           r"is available here \(use auto or cpu\)$"):
        plan_job(parse_spec(make_spec(model, tmp_path, render={"device": "cuda"})))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_an_emulated_precision_on_the_cpu_is_warned_about(model, tmp_path, caplog, precision):
    """bf16 / fp16 without hardware support (AVX2: 20x slower than fp32) is the user's choice,
    but not a silent one; where the CPU has it, nothing is said."""
    plan_job(parse_spec(make_spec(model, tmp_path, render={"precision": precision})))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if native_on_cpu(precision):
        assert warned == []
    else:
        assert precision in ("bf16", "fp16")
        assert warned == [f"render.precision: {precision} on this CPU is emulated (no "
                          f"{precision} convolutions in hardware), about 20x slower than fp32 "
                          "and less exact; fp32 is the CPU's fast precision"]


def test_auto_tiling_follows_the_precision_and_a_given_tiling_wins(model, tmp_path):
    """bf16 in the CPU's hardware renders fastest in smaller batched tiles (BENCHMARKS.md);
    fp32, and bf16 that is emulated, keep 512 px tiles one at a time."""
    def tiling(**render):
        render = {"tile_px": "auto", "batch": "auto", **render}
        plan = plan_job(parse_spec(make_spec(model, tmp_path, render=render)))
        return plan.tile_px, plan.batch

    assert tiling(precision="fp32") == (512, 1)
    assert tiling(precision="bf16") == ((256, 4) if native_on_cpu("bf16") else (512, 1))
    assert tiling(precision="bf16", tile_px=128, batch=2) == (128, 2)


def test_generate_on_a_terminal_shows_one_progress_bar_and_a_summary(model, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(model, tmp_path / "out")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no API configured
    primary, secondary = pty.openpty()  # a real terminal for stdout and stderr,
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 wide
    exe = Path(sys.executable).with_name("texprod")
    process = subprocess.Popen([str(exe), "generate", str(spec_path)], stdout=secondary,
                               stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=120) == 0
    os.close(primary)
    text = b"".join(chunks).decode(errors="replace")
    assert "render:" in text and "tile" in text and "Mpx/s" in text  # the bar
    assert "100%" in text
    assert "Finished in state" not in text
    summary = text[text.index("texprod: job (seed 3) done in"):]
    for row in ("file", "pixels", "colour", "timings", "preflight  passed", "proof"):
        assert f"\n  {row}" in summary.replace("\r\n", "\n"), row
    # which stage bounds the render: the stripes' seconds per stage
    assert re.search(r"\n  work +network [\d.]+ s · colour [\d.]+ s · encode [\d.]+ s",
                     summary.replace("\r\n", "\n")), summary


def test_generate_and_inspect_cli(model, tmp_path, capsys):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(model, tmp_path / "out")))
    assert main(["generate", str(spec_path)]) == 0
    (tiff,) = (tmp_path / "out").glob("*.tif")
    capsys.readouterr()
    assert main(["inspect", str(tiff), "--spec", str(spec_path)]) == 0
    assert "FAIL" not in capsys.readouterr().out
    assert main(["inspect", str(tiff), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["facts"]["width_px"] == 201
    # the same file checked against a different promise fails, with exit status 1
    assert main(["inspect", str(tiff), "--spec", str(spec_path), "--set", "print.dpi=300"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_spec_errors_stop_the_cli_before_any_work(model, tmp_path, capsys):
    spec = make_spec(model, tmp_path / "out", print={"dpi": 0})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    assert main(["generate", str(spec_path)]) == 2
    assert "print.dpi: got 0, must be between 72 and 2400" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_proof_shrink_by_bands_equals_a_one_piece_shrink():
    from texprod.press.proof import _shrink_by_bands

    rng = np.random.default_rng(1)
    image = pyvips.Image.new_from_array(rng.integers(0, 256, (301, 253, 3), dtype=np.uint8),
                                        interpretation="srgb")
    for factor, rows in ((4, 64), (3, 50), (5, 1024)):
        banded = _shrink_by_bands(image, factor, band_rows=rows).numpy()
        assert np.array_equal(banded, image.shrink(factor, factor).numpy())


@pytest.mark.parametrize("bits", [8, 16])
def test_the_lut_colour_engine_matches_libvips(model, tmp_path, bits):
    """render.colour_engine lut (the GPU's path: conversion, ink check and preview where
    the pixels are) gives the libvips file within 1/255, with the same TAC measurement."""
    results = {}
    for engine in ("libvips", "lut"):
        results[engine] = run(model, tmp_path / engine, render={"colour_engine": engine},
                              print={"color": "cmyk", "width_mm": 40, "height_mm": 30,
                                     "bit_depth": bits})
    lut, ref = results["lut"], results["libvips"]
    assert (lut.plan.colour_engine, ref.plan.colour_engine) == ("lut", "libvips")
    step = 1 if bits == 8 else 257
    diff = np.abs(read(lut.tiff.path).astype(int) - read(ref.tiff.path).astype(int)) / step
    assert diff.max() <= 1 and diff.mean() < 0.01
    # the ink measured where the pixels were = a CPU measurement of the file (2 decimals)
    assert lut.report.ok and inspect_tiff(lut.tiff.path).facts["tac_max"] == round(lut.tac_max, 2)
    assert lut.plan.outputs.proof.exists()
    with tifffile.TiffFile(lut.tiff.path) as tif:
        assert json.loads(tif.pages[0].description)["texprod"]["colour_engine"] == "lut"
    assert lut.stripe_seconds["colour"] > 0 and lut.stripe_seconds["encode"] > 0
