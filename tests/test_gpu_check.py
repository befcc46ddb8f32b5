"""`make gpu-check` is run on a lent GPU only now and then: its dry run on the CPU (tiny
sizes, the same steps) keeps the script from rotting in between."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def modules_not_on_the_device() -> list[str]:
    """The top-level modules of the distributions installed here that the GPU machine's
    image lacks (bench/device_packages.txt) and `make gpu-wheels` does not carry."""
    listed = (REPO / "bench" / "device_packages.txt").read_text().splitlines()
    spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "bench/gpu_wheels.py")
    gpu_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_wheels)
    there = {canonicalize_name(n) for n in listed if n and not n.startswith("#")} | {"texprod"}
    there |= {canonicalize_name(n) for n in gpu_wheels.PACKAGES}
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if not any(canonicalize_name(d) in there for d in dists))


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """The whole check at tiny sizes, every process it starts importing only what the GPU
    machine will have (tests/device_only hides the rest), so that a new top-level import
    of, say, Prefect on the check's path fails here and not in the device's minutes."""
    hidden = modules_not_on_the_device()
    assert {"prefect", "moto", "fastapi"} <= set(hidden)
    assert not {"torch", "numpy", "pyvips", "imagecodecs", "boto3", "texprod",
                "distributed"} & set(hidden)
    env = {**os.environ, "TEXPROD_HIDDEN_MODULES": ",".join(hidden),
           "PYTHONPATH": str(REPO / "tests" / "device_only")}
    blocked = subprocess.run([sys.executable, "-c", "import prefect"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert "not on the GPU machine" in blocked.stderr  # the hiding itself works
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = (tmp_path / "gpu-check.md").read_text()
    assert report in done.stdout  # the same table on stdout and in the file
    for section in ("## CUDA tests: PASS", "## Render", "Ceilings measured here",
                    "## Upsampling layers alone", "## Accuracy", "## Colour",
                    "## A print end to end", "## Dask: one print on a local cluster",
                    "## Goals"):
        assert section in report
    figures = json.loads((tmp_path / "gpu-check.json").read_text())
    # every CUDA test was collected (and skipped here, where there is no GPU)
    assert figures["tests"]["tests"] >= 10
    assert figures["tests"]["skipped"] == figures["tests"]["tests"]
    render = figures["render"]
    assert {r["precision"] for r in render} == {"fp32", "tf32", "bf16", "fp16"}
    assert all(r["mpx_s"] > 0 and r["flop_px"] > 0 for r in render)
    # the sub-pixel form computes the zero taps of the transposed kernels' phases
    native = next(r for r in render if r["upsampling"] == "native")
    subpixel = next(r for r in render if r["upsampling"] == "subpixel"
                    and (r["precision"], r["tile"], r["batch"]) == (native["precision"],
                                                                    native["tile"],
                                                                    native["batch"]))
    assert 1.3 < subpixel["flop_px"] / native["flop_px"] < 1.5
    assert {r["upsampling"] for r in render} == {"subpixel", "native", "phases"}
    # each of the reference generator's 5 upsampling layers, per precision, in each form
    layers = [r for r in figures["layers"] if r["layer"] != "network"]
    assert len(layers) == 5 * 4
    assert all(isinstance(r[form], float) and r[form] > 0 for r in layers
               for form in ("native", "subpixel", "phases"))
    assert all(r["fastest"] == min(("native", "subpixel", "phases"), key=r.get)
               for r in layers)
    assert [r["c_out"] for r in layers[::4]] == [64, 32, 16, 8, 3]  # narrowed on the CPU
    # then the whole network per precision with each layer in its fastest form
    network = [r for r in figures["layers"] if r["layer"] == "network"]
    assert [r["precision"] for r in network] == ["fp32", "tf32", "bf16", "fp16"]
    for r in network:
        fastest = [layer["fastest"] for layer in layers if layer["precision"] == r["precision"]]
        assert r["forms"] == fastest and r["mpx_s"] > 0
    ceilings = figures["ceilings"]
    assert set(ceilings["matmul_tflops"]) == {"fp32", "tf32", "bf16", "fp16"}
    assert min(ceilings["matmul_tflops"].values()) > 0 and ceilings["copy_gb_s"] > 0
    # accuracy of each precision for the random-weights generator and each trained one
    accuracy = figures["accuracy"]
    assert {a["generator"] for a in accuracy} == {
        "reference, random weights", "bundled:aerial", "bundled:kraft-terrain",
        "bundled:packaging"}
    assert len(accuracy) == 4 * 4
    assert max(a["max_diff"] for a in accuracy if a["precision"] == "fp32") <= 1
    goals = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip("| ")
             for line in report.split("## Goals")[1].splitlines() if line.startswith("| ")}
    assert goals["fp32 tiled on the device = CPU reference within 1/255 (trained models)"] \
        == "yes"
    assert "bf16 within 2/255 (random-weights reference generator)" in goals
    colour = {c["where"]: c for c in figures["colour"]}
    assert colour["cpu (on the device)"]["max_diff"] <= 2
    job = figures["job"]
    assert job["preflight_ok"] and job["colour_engine"] == "lut"
    assert set(job["busy"]) == {"render", "colour", "encode"}
    assert job["timings"]["total"] > 0 and job["megapixels"] > 1
    # one print on a local Dask cluster (its workers see only what the device has too)
    # and in-process: the same bytes
    cluster = figures["cluster"]
    assert cluster["cluster"] == "local" and "2 worker(s)" in cluster["workers"]
    assert cluster["stripes"] >= 2 and cluster["same_bytes"] is True
    # a dry run's tiny figures are no record: the recorder refuses them and writes nothing
    refused = subprocess.run(
        [sys.executable, "bench/record_gpu_check.py", str(tmp_path), "--benchmarks",
         str(tmp_path / "B.md"), "--records", str(tmp_path / "r.json")], cwd=REPO,
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "ran on cpu, not cuda" in refused.stderr
    assert not (tmp_path / "B.md").exists() and not (tmp_path / "r.json").exists()


def test_a_step_that_hangs_is_stopped_and_the_others_still_report(tmp_path):
    """The GPU is lent for minutes: a step past its limit is killed (with what it started)
    and reported with where it was, and the steps after it still run."""
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out",
                           str(tmp_path), "--steps", "job,colour", "--limit", "job=3"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GPU_CHECK_HANG_IN": "job"})
    assert done.returncode == 1, done.stderr[-3000:]
    report = (tmp_path / "gpu-check.md").read_text()
    job = report.split("## A print end to end")[1].split("## Goals")[0]
    assert "FAILED: timed out after 3 s (whole output in job.log)" in job
    # its stack at the timeout, from the step's log
    stack = (tmp_path / "job.log").read_text()
    assert "most recent call first" in stack and "in hang_until_killed" in stack, stack
    colour = report.split("## Colour")[1].split("## A print")[0]
    assert "| libvips icc_transform |" in colour and "FAILED" not in colour
    assert report.split("## CUDA tests")[1].split("## Render")[0].strip().endswith("not run")
    figures = json.loads((tmp_path / "gpu-check.json").read_text())
    assert "tests" not in figures and figures["job"]["error"] == "timed out after 3 s"


def _failed_gpu_check() -> dict:
    """Figures of a GPU check whose render step failed after two fp32 rows."""
    row = {"precision": "fp32", "tile": 0, "batch": 1, "autotune": False,
           "upsampling": "subpixel", "side": 8192, "repeats": 3, "seconds": 0.5,
           "mpx_s": 134.2, "flop_px": 121_000.0, "tflops": 16.24, "gpu_mb": 900.0}
    return {"environment": {"kind": "cuda", "date": "2026-12-24 09:15 UTC",
                            "device": "NVIDIA H100 80GB HBM3"},
            "ceilings": {"matmul_tflops": {"fp32": 50.0, "bf16": 790.0}, "matmul_n": 8192,
                         "copy_gb_s": 4300.0},
            "render": {"error": "exit 1", "tail": "RuntimeError: CUDA error",
                       "rows": [row, {**row, "tile": 2048, "batch": 4, "mpx_s": 140.9}]}}


def test_the_report_keeps_the_rows_measured_before_a_step_failed():
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    figures = _failed_gpu_check()
    report = gpu_check.report(figures, gpu_check.SIZES["cuda"])
    render = report.split("## Render")[1].split("## Accuracy")[0]
    assert "fp32 50.0, bf16 790.0 TFLOP/s; a device copy at 4300 GB/s" in render
    assert "| fp32 | one pass | 1 |  |  | 0.500 | 134.2 | 1.00 | 121 | 16.2 | 32% | 900 |" \
        in render
    assert "| fp32 | 2048 | 4 |" in render and "1.05" in render
    assert render.index("Only the rows above") < render.index("FAILED: exit 1")
    assert "RuntimeError: CUDA error" in render
    assert "| tiled / one-pass >= 0.95 | 1.05 (worst precision) | yes |" in report


def test_a_gpu_run_is_recorded_in_the_benchmarks_and_the_estimates(tmp_path):
    """What came back from the GPU machine becomes a BENCHMARKS.md section (named by the
    device, dated by the check) and the CUDA estimate of `generate --dry-run`."""
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_check

    figures = _failed_gpu_check()
    (tmp_path / "gpu-check.json").write_text(json.dumps(figures))
    (tmp_path / "gpu-check.md").write_text(gpu_check.report(figures, gpu_check.SIZES["cuda"]))
    records = tmp_path / "benchmarks.json"
    records.write_text(json.dumps({"render": {"cpu/fp32": {"mpx_s": 2.1}}}))
    benchmarks = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "bench/record_gpu_check.py", str(tmp_path),
                           "--benchmarks", str(benchmarks), "--records", str(records)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "fastest tiling fp32: tile 2048 px, batch 4, 140.9 Mpx/s" in done.stdout
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks")
    assert "\n## 2026-12-24 09:15 UTC — GPU check — NVIDIA H100 80GB HBM3\n" in text
    assert "`python3 bench/gpu_check.py`" in text
    # the report's sections sit one level below the record's; its own title is gone
    assert "\n### Render" in text and "\n### Goals" in text
    assert "texprod GPU check" not in text and "\n## Render" not in text
    assert json.loads(records.read_text())["render"] == {
        "cpu/fp32": {"mpx_s": 2.1},  # other records are kept
        "cuda/fp32": {"batch": 4, "date": "2026-12-24", "device": "NVIDIA H100 80GB HBM3",
                      "mpx_s": 140.9, "tile": 2048}}


def test_a_folder_without_a_check_is_refused_and_nothing_is_recorded(tmp_path):
    benchmarks, records = tmp_path / "B.md", tmp_path / "r.json"
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "bench/record_gpu_check.py", str(tmp_path / "empty"),
                           "--benchmarks", str(benchmarks), "--records", str(records)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{tmp_path / 'empty'}: no readable gpu-check.json and gpu-check.md" in done.stderr
    assert not benchmarks.exists() and not records.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "render,bogus"], "--steps: unknown bogus; allowed: tests, ceilings, render"),
    (["--limit", "job=soon"], "--limit 'job=soon': expected STEP=SECONDS with STEP one of"),
    (["--limit", "paint=10"], "--limit 'paint=10': expected STEP=SECONDS"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path, args, message):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out",
                           str(out), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert not out.exists()  # no report, no step started
