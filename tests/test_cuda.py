"""The CUDA path of a whole job: same bytes from any process, the CPU's pixels within a
step, 16-bit on the device, and the pinned copy back; and training on the device. Skipped
without a GPU; the GPU check (`make gpu-check`) runs them on a lent one and fails if any is
skipped there.

Nothing here imports Prefect or moto: the GPU machine has neither."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from texprod.engine import GeneratorConfig, random_generator
from texprod.job.stripes import to_host
from texprod.models import save_generator

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
REPO = Path(__file__).resolve().parent.parent
# run_job in a fresh interpreter: cuDNN picks its algorithms per process
RUN = ("import json, sys; from texprod.job.pipeline import run_job; "
       "from texprod.job.spec import parse_spec; "
       "r = run_job(parse_spec(json.loads(sys.argv[1]))); print(r.tiff.path)")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=8, nz_global=4, nz_periodic=2, kernel=5,
                             filters=(64, 32, 16))
    return save_generator(random_generator(config, 3), tmp_path_factory.mktemp("m") / "g")


def spec(model: Path, out: Path, device: str, **over) -> dict:
    render = {"device": device, "precision": "fp32", "tile_px": 256, "batch": 3,
              **over.pop("render", {})}
    return {"name": "cuda", "model": str(model), "seed": 11,
            "print": {"width_mm": 90, "height_mm": 60, "dpi": 300, "bleed_mm": 2,
                      "color": "cmyk", **over.pop("print", {})},
            "render": render, "output": {"dir": str(out), "proof": True}}


def run_in_process_of_its_own(job: dict) -> Path:
    done = subprocess.run([sys.executable, "-c", RUN, json.dumps(job)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_cuda_job_is_the_same_bytes_from_two_processes(model, tmp_path, precision):
    """Same spec, same bytes, on the GPU too: what a resumed job or another GPU renders
    must match (cuDNN's algorithm choice is fixed per shape, not timed per process)."""
    paths = [run_in_process_of_its_own(spec(model, tmp_path / str(i), "cuda",
                                            render={"precision": precision}))
             for i in range(2)]
    assert sha256(paths[0]) == sha256(paths[1])


def test_a_cuda_job_matches_the_cpu_job(model, tmp_path):
    """fp32 on the GPU (tiled, batched, the LUT colour engine) vs the CPU (libvips): the
    sRGB render within 1/255, so the print within what 1/255 of sRGB moves the inks."""
    rgb = {}
    for device in ("cuda", "cpu"):
        job = spec(model, tmp_path / f"rgb-{device}", device, print={"color": "rgb"})
        rgb[device] = tifffile.imread(run_in_process_of_its_own(job)).astype(int)
    assert np.abs(rgb["cuda"] - rgb["cpu"]).max() <= 1
    cmyk = {}
    for device in ("cuda", "cpu"):
        path = run_in_process_of_its_own(spec(model, tmp_path / f"cmyk-{device}", device))
        with tifffile.TiffFile(path) as tif:
            prov = json.loads(tif.pages[0].description)["texprod"]
            cmyk[device] = tif.asarray().astype(int)
        assert prov["colour_engine"] == ("lut" if device == "cuda" else "libvips")
    diff = np.abs(cmyk["cuda"] - cmyk["cpu"])
    assert diff.mean() < 0.1 and diff.max() <= 4


@pytest.mark.parametrize("engine", ["lut", "libvips"])
def test_a_dry_run_on_cuda_measures_the_device_and_the_host(model, tmp_path, engine):
    import re

    from texprod.job.pipeline import measured_estimate
    from texprod.job.plan import plan_job
    from texprod.job.spec import parse_spec

    plan = plan_job(parse_spec(spec(model, tmp_path, "cuda", render={"colour_engine": engine})))
    estimate = measured_estimate(plan)
    times = re.search(r"network ([\d.e-]+) s, colour and encoding ([\d.e-]+) s of work",
                      estimate)
    assert times and float(times[1]) > 0 and float(times[2]) > 0, estimate
    assert "measured now on cuda" in estimate, estimate
    assert not any(tmp_path.iterdir())


# run_job in a process that may use only `argv[2]` bytes of the GPU (the caching
# allocator's own limit: a real CUDA out-of-memory error, whatever the device's size)
RUN_CAPPED = ("import json, sys, torch; from texprod.job.pipeline import run_job; "
              "from texprod.job.spec import parse_spec; "
              "torch.cuda.set_per_process_memory_fraction(int(sys.argv[2]) / "
              "torch.cuda.get_device_properties(0).total_memory); "
              "run_job(parse_spec(json.loads(sys.argv[1])))")


def test_a_gpu_out_of_memory_fails_the_job_in_one_line_that_says_what_to_change(model,
                                                                                tmp_path):
    out = tmp_path / "out"
    job = spec(model, out, "cuda", render={"tile_px": 2048, "batch": 4})
    from texprod.job.memory import memory_need
    from texprod.job.plan import plan_job
    from texprod.job.spec import parse_spec

    need = memory_need(plan_job(parse_spec(job)))
    assert need.total > need.need  # the device is big enough: the plan passes its check
    cap = need.maps // 4  # the process may not use that much: the render runs out
    done = subprocess.run([sys.executable, "-c", RUN_CAPPED, json.dumps(job), str(cap)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "JobFailure: render: cuda ran out of memory on stripe 0" in last, done.stderr[-3000:]
    assert "lower render.tile_px or render.batch" in last and "(CUDA: " in last, last
    assert not out.exists() or not any(out.iterdir())


def test_16_bit_prints_render_on_cuda(model, tmp_path):
    """uint16 through the device path (quantize, rows, the LUT, the preview)."""
    sixteen = {}
    for device in ("cuda", "cpu"):
        job = spec(model, tmp_path / device, device, print={"bit_depth": 16})
        sixteen[device] = tifffile.imread(run_in_process_of_its_own(job)).astype(int)
    assert sixteen["cuda"].dtype == sixteen["cpu"].dtype
    diff = np.abs(sixteen["cuda"] - sixteen["cpu"])
    assert diff.mean() < 0.1 * 257 and diff.max() <= 4 * 257


def test_the_pinned_copy_back_is_exact_and_waits_for_the_tensor():
    """`to_host` copies on a side stream, which does not wait for the default stream by
    itself: the copy must still see the tensor's final values, not what its memory held."""
    for dtype in (torch.uint8, torch.uint16):
        busy = torch.rand(4096, 4096, device="cuda") * 2 - 1
        for _ in range(30):  # ~0.1 s of queued work before the tensor exists
            busy = torch.sin(busy @ busy)
        on_gpu = ((busy[:1000, :3108] + 1) * 127).reshape(1000, 777, 4).to(dtype)
        host = to_host(on_gpu)  # no synchronisation before it
        expected = on_gpu.cpu().numpy()  # .cpu() waits for the default stream
        assert host.dtype == expected.dtype
        assert np.array_equal(host, expected)


def test_a_stripe_renders_and_converts_without_waiting_for_the_device():
    """A blocking copy to the GPU (a tensor made from Python numbers, a CPU tensor moved
    per batch) or a value read back makes Python wait until the device has finished, so
    it idles while the next batch is prepared. A stripe's render, colour conversion and
    preview must only queue work: PyTorch's sync debug mode raises at any such call. With
    every kind of global field, and in repeat mode."""
    from tests.test_colour_lut import FOGRA39, cmyk
    from texprod.engine.noise import NoiseField, QuiltField, TableField
    from texprod.engine.render import Renderer
    from texprod.job.stripes import shrink_preview_tensor
    from texprod.press.colour_lut import colour_lut

    gen = random_generator(GeneratorConfig(nz_local=8, nz_global=4, nz_periodic=2, kernel=5,
                                           filters=(64, 32, 16)), 3)  # 16 px cells
    weights = torch.rand(2, 6, 9)
    painted = TableField(weights / weights.sum(0), torch.rand(2, 4) * 2 - 1, (1, 2), 0)
    fields = [NoiseField(gen.config, 1, waves=gen.waves),
              NoiseField(gen.config, 1, waves=gen.waves, period=(8, 12)),
              NoiseField(gen.config, 1, waves=gen.waves,
                         global_field=QuiltField(4, 2, block=3, transition=2)),
              NoiseField(gen.config, 1, waves=gen.waves, global_field=painted)]
    table = colour_lut(cmyk(FOGRA39))
    renderer = Renderer(gen, "cuda", "bf16")
    plan = renderer.plan(640, 384, 128, x0=-40, y0=24)

    def stripe(field: NoiseField) -> None:
        rows = renderer.rows(field, plan, batch=3)  # (384, 640, 3) uint8
        table.apply(rows)
        shrink_preview_tensor(rows, 4, chunk_px=640 * 64)

    for field in fields:
        stripe(field)  # the first moves the field's constants and the table there, once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            stripe(field)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_a_stripe_leaves_nothing_on_the_device_while_it_is_encoded(model, tmp_path):
    """The device's memory is planned for one stripe at a time: the stripe's sRGB rows,
    print pixels and preview are freed before it is encoded, while the next renders."""
    from texprod.job.executors import prepare
    from texprod.job.plan import plan_job
    from texprod.job.spec import parse_spec
    from texprod.job.stripes import stripe_on_device

    plan = plan_job(parse_spec(spec(model, tmp_path, "cuda", render={"colour_engine": "lut"})))
    ready = prepare(plan)
    stripe = plan.stripes[0]

    def work():
        return stripe_on_device(plan, stripe, ready.field, ready.renderer, ready.lut,
                                render_lock=ready.render_lock)

    work()  # the first moves the colour table and the field's constants there, once
    held = torch.cuda.memory_allocated()
    out, preview, tac, _ = work()
    assert torch.cuda.memory_allocated() == held
    assert out.shape == (stripe.h, plan.geometry.width_px, 4) and tac is not None
    assert preview.shape[2] == 3


def test_jobs_in_one_process_take_turns_on_its_gpu(model, tmp_path):
    """A Dask GPU worker keeps two jobs: they share the GPU's render lock, since its memory
    is planned for one stripe and cuDNN's switches are process-wide (an fp32 stripe must
    not render while a tf32 one has turned TF32 on)."""
    from texprod.job.executors import prepare
    from texprod.job.plan import plan_job
    from texprod.job.spec import parse_spec

    locks = [prepare(plan_job(parse_spec(spec(model, tmp_path / p, "cuda",
                                              render={"precision": p})))).render_lock
             for p in ("fp32", "tf32")]
    assert locks[0] is locks[1]
    assert hasattr(locks[0], "locked")  # a real lock, not the CPU's no-op


def test_each_renderer_renders_with_its_own_cudnn_settings():
    """cuDNN's switches are process-wide and a worker keeps the renderers of several jobs:
    building a tf32 renderer must not turn an fp32 one's convolutions into TF32."""
    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer, render_canvas

    gen = random_generator(GeneratorConfig(nz_local=8, nz_global=4, nz_periodic=2, kernel=5,
                                           filters=(256, 128, 64)), 4)
    field = NoiseField(gen.config, 1, waves=gen.waves)

    def canvas(renderer: Renderer) -> np.ndarray:
        plan = renderer.plan(512, 512, 256)
        return render_canvas(renderer, field, plan, batch=4, output="float32")

    fp32 = Renderer(gen, "cuda", "fp32")
    alone = canvas(fp32)
    tf32 = Renderer(gen, "cuda", "tf32")
    assert np.array_equal(canvas(fp32), alone)
    assert not np.array_equal(canvas(tf32), alone)  # TF32 does change the last bits here


def test_training_on_cuda_resumes_there_and_makes_a_model_any_machine_renders(tmp_path):
    """The trainer's CUDA path: crops and noise on the device, the weight average and its
    BatchNorm calibration, sample grids through a Renderer (which must leave training's
    cuDNN switches as they were), the state saved from the device and resumed onto it."""
    from dataclasses import replace

    from tests.test_train import exemplar, tiny
    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer, render_canvas, render_reference
    from texprod.models import load_checkpoint
    from texprod.training.trainer import train_model

    cudnn = torch.backends.cudnn
    switches = (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32)
    out = tmp_path / "model"
    config = tiny(arch="psgan", nz_local=4, nz_global=2, nz_periodic=2, iters=2, crop_px=96)
    first = train_model([exemplar(tmp_path)], str(out), config, device="cuda")
    assert first["device"] == torch.cuda.get_device_name() and first["iterations"] == 2
    assert (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32) == switches
    again = train_model([exemplar(tmp_path)], str(out), replace(config, iters=4),
                        device="cuda", resume=True)
    assert again["iterations"] == 4 and again["latents"] == ["stripes"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == \
        ["iter-000002.png", "iter-000004.png"]
    gen = load_checkpoint(out).generator  # loaded onto the CPU
    assert all(t.device.type == "cpu" and torch.isfinite(t).all()
               for t in gen.state_dict().values() if t.is_floating_point())
    field = NoiseField(gen.config, 3, waves=gen.waves)
    reference = render_reference(gen, field, 64, 48, output="float32")
    for device in ("cpu", "cuda"):
        renderer = Renderer(gen, device)
        tiled = render_canvas(renderer, field, renderer.plan(64, 48, 16), output="float32")
        assert np.abs(tiled - reference).max() < 1e-3, device
