"""`make gpu-check` is run on a lent GPU only now and then: its dry run on the CPU (tiny
sizes, the same steps) keeps the script from rotting in between."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = (tmp_path / "gpu-check.md").read_text()
    assert report in done.stdout  # the same table on stdout and in the file
    for section in ("## CUDA tests: PASS", "## Render", "## Accuracy", "## Colour",
                    "## A print end to end", "## Goals"):
        assert section in report
    figures = json.loads((tmp_path / "gpu-check.json").read_text())
    # every CUDA test was collected (and skipped here, where there is no GPU)
    assert figures["tests"]["tests"] >= 10
    assert figures["tests"]["skipped"] == figures["tests"]["tests"]
    render = figures["render"]
    assert {r["precision"] for r in render} == {"fp32", "tf32", "bf16", "fp16"}
    assert all(r["mpx_s"] > 0 for r in render)
    assert {a["precision"]: a["max_diff"] for a in figures["accuracy"]}["fp32"] <= 1
    colour = {c["where"]: c for c in figures["colour"]}
    assert colour["cpu (on the device)"]["max_diff"] <= 2
    job = figures["job"]
    assert job["preflight_ok"] and job["colour_engine"] == "lut"
    assert set(job["busy"]) == {"render", "colour", "encode"}
    assert job["timings"]["total"] > 0 and job["megapixels"] > 1
