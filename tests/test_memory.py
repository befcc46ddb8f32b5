"""What a render needs in memory, planned before it runs: the estimate against what a real
render takes (the process's peak RSS, in a process of its own), and a job too big for this
machine refused before anything is rendered or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from tests.cgroups import joining, made_cgroup
from texprod.cli import main
from texprod.engine import GeneratorConfig, make_config, random_generator
from texprod.engine.memory import render_bytes
from texprod.engine.render import Renderer
from texprod.errors import RenderError
from texprod.job.memory import memory_need
from texprod.job.pipeline import run_job
from texprod.job.plan import plan_job
from texprod.job.spec import parse_spec
from texprod.models import save_generator

MiB = 2**20
WIDE = dict(filters=(512, 256, 128, 64))  # the reference generator's widths

# One batch rendered in a fresh interpreter, as the stripes render (one intra-op thread):
# prints the estimate and how far the process's anonymous memory (RssAnon: the heap, not
# the libraries' code pages, which a loaded machine may have evicted and the render
# faults back in) rose above where it stood just before the render, sampled every ms.
MEASURE = """
import json, sys, threading, time
import torch
from texprod.engine import make_config, random_generator
from texprod.engine.memory import render_bytes
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer

def anonymous():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("RssAnon:"))

tile, batch = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(1)
gen = random_generator(make_config(**json.loads(sys.argv[3])), seed=1)
renderer = Renderer(gen, "cpu", "fp32")
field = NoiseField(gen.config, 0, waves=gen.waves)
renderer.rows(field, renderer.plan(64, 64, 32), 1)  # warm-up: oneDNN's first calls
plan = renderer.plan(tile * batch, tile, tile)  # one row of `batch` tiles: one batch
before, peak, done = anonymous(), [0], threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.001)

sampler = threading.Thread(target=sample)
sampler.start()
renderer.rows(field, plan, batch)
done.set()
sampler.join()
print(json.dumps({"estimate": render_bytes(renderer, plan, batch), "grown": peak[0] - before}))
"""


@pytest.mark.parametrize(("tile", "batch"), [(1024, 1), (768, 2)])
def test_the_estimate_is_what_a_real_render_holds(tile, batch):
    """The tensors it counts are the bulk of a render's memory: the peak anonymous RSS
    grows by at least 90 % of the estimate (a missed map would fall below) and at most 2.5x (oneDNN's
    reordered copies come on top: 1.3-1.4x measured on a Xeon)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tile), str(batch),
                           json.dumps(WIDE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    estimate, grown = figures["estimate"], figures["grown"]
    assert estimate > 100 * MiB  # large enough to stand out of the allocator's noise
    assert 0.9 * estimate <= grown <= 2.5 * estimate, (estimate / MiB, grown / MiB)


def test_the_estimate_scales_with_batch_and_precision_and_counts_one_pass_whole():
    gen = random_generator(make_config(**WIDE), seed=1)
    fp32, bf16 = Renderer(gen, "cpu", "fp32"), Renderer(gen, "cpu", "bf16")
    plan = fp32.plan(2048, 512, 512)  # 4 tiles
    one = render_bytes(fp32, plan, 1)
    assert render_bytes(fp32, plan, 4) == 4 * one
    assert render_bytes(fp32, plan, 16) == 4 * one  # a batch is at most the plan's tiles
    assert render_bytes(bf16, plan, 1) == pytest.approx(one / 2, rel=0.01)
    # one pass: the unmodified network over the whole canvas, more than a tile's worth
    assert render_bytes(fp32, fp32.plan(2048, 512, 0), 1) > 3 * one


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
    return save_generator(random_generator(config, 5), tmp_path_factory.mktemp("m") / "tiny")


def _spec(model: Path, out: Path, **render) -> dict:
    # 10 x 10 m at 600 dpi: 236,220 px square, far beyond any machine's memory in one piece
    return {"name": "huge", "model": str(model), "seed": 1,
            "print": {"width_mm": 10000, "height_mm": 10000, "dpi": 600, "color": "rgb"},
            "render": {"device": "cpu", **render}, "output": {"dir": str(out)}}


@pytest.mark.parametrize(("render", "message"), [
    ({"tile_px": 0}, r"^render: a one-pass render needs at least [\d.]+ (GiB|TiB) of cpu "
                     r"memory \(.* network \+ .* stripe pixels\); the device has [\d.]+ GiB: "
                     r"render in tiles \(render\.tile_px: got 0"),
    ({"tile_px": 65536, "batch": 8, "threads": 2},
     r"^render: 65536 x 65536 px tiles in batches of 8 needs at least .* \(2 stripes at once "
     r"x \(.*\)\); the device has [\d.]+ GiB: lower render\.tile_px, render\.batch or "
     r"render\.threads \(got tile_px 65536, batch 8, threads 2\)$"),
])
def test_a_render_bigger_than_this_machine_is_refused_before_it_starts(model, tmp_path,
                                                                       render, message):
    out = tmp_path / "out"
    with pytest.raises(RenderError, match=message):
        run_job(parse_spec(_spec(model, out, **render)))
    assert not out.exists() or not any(out.iterdir())  # nothing rendered, nothing written


def test_the_dry_run_shows_the_memory_and_refuses_what_cannot_fit(model, tmp_path, capsys):
    small = _spec(model, tmp_path / "out", tile_px=256, batch=2, threads=2)
    small["print"].update(width_mm=200, height_mm=100, dpi=300)
    spec_path = tmp_path / "small.yaml"
    spec_path.write_text(yaml.safe_dump(small))
    assert main(["generate", str(spec_path), "--dry-run"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("memory"))
    need = memory_need(plan_job(parse_spec(small)))
    assert need.at_once == 2 and need.maps > 0 and need.pixels > 0
    total = psutil.virtual_memory().total / 2**30
    assert line.endswith(f"the device has {total:.1f} GiB"), line
    assert "2 stripes at once" in line, line

    spec_path.write_text(yaml.safe_dump(_spec(model, tmp_path / "out", tile_px=0)))
    assert main(["generate", str(spec_path), "--dry-run"]) == 2
    assert "texprod: error: render: a one-pass render needs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def memory_cgroup():
    """A real memory cgroup limited to 1 GiB, as a container's."""
    with made_cgroup("memory", {"v2": {"memory.max": str(2**30)},
                                "v1": {"memory.limit_in_bytes": str(2**30)}}) as directory:
        yield directory


def test_a_container_memory_limit_is_what_the_plan_is_checked_against(memory_cgroup,
                                                                      tmp_path):
    """On a 23 GiB host, a job in a 1 GiB cgroup (a container's limit) needing 5.3 GiB:
    before, the plan passed against the host's memory and the kernel killed the job
    without a word (exit 137); now it is refused in one line naming the cgroup, and a
    tiling that fits shows the cgroup's limit in the dry run."""
    wide = save_generator(random_generator(make_config(**WIDE), 1), tmp_path / "wide")
    spec = _spec(wide, tmp_path / "out", tile_px=2048, batch=4, threads=2)
    spec["print"] = {"width_px": 8192, "height_px": 4096, "dpi": 300, "color": "rgb"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    texprod = str(Path(sys.executable).with_name("texprod"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no API: the job runs in-process

    def in_the_cgroup(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([texprod, "generate", str(path), *args], capture_output=True,
                              text=True, timeout=300, env=env,
                              preexec_fn=joining(memory_cgroup))

    refused = in_the_cgroup()
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.startswith("texprod: error: render: 2048 x 2048 px tiles in batches "
                                     "of 4 needs at least ")
    assert f"; the memory cgroup {memory_cgroup} allows 1.0 GiB: lower render.tile_px, " \
           "render.batch or render.threads (got tile_px 2048, batch 4, threads 2)" \
           in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    fits = in_the_cgroup("--dry-run", "--set", "render.tile_px=256", "--set", "render.batch=1")
    assert fits.returncode == 0, fits.stderr[-2000:]
    memory = next(row for row in fits.stdout.splitlines() if row.startswith("memory"))
    assert memory.endswith(f"; the memory cgroup {memory_cgroup} allows 1.0 GiB"), memory


def test_the_ways_a_gpu_runs_out_of_memory_are_named_as_such():
    """Besides torch.OutOfMemoryError, a full GPU shows as cuDNN finding no algorithm whose
    workspace fits, or an allocation failing inside cuDNN, cuBLAS or a CUDA call (PyTorch's
    own messages): each fails the job with the advice to lower tile_px or batch. Other
    errors keep their own message."""
    import torch

    from texprod.job.stripes import out_of_device_memory

    for message in ("GET was unable to find an engine to execute this computation",
                    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
                    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
                    "CUDA error: out of memory"):
        assert out_of_device_memory(RuntimeError(message)), message
    assert out_of_device_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    for other in (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
                  RuntimeError("CUDA error: an illegal memory access was encountered"),
                  ValueError("out of memory")):
        assert not out_of_device_memory(other), other
