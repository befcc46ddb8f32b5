"""The GPU check: prove texprod's CUDA path and measure it, in one command (`make gpu-check`).

Made to run unattended on a lent GPU machine (one H100/H200, no internet, about 8
minutes): it installs the wheels `make gpu-wheels` put in .whl/ into a temporary site
directory when texprod's dependencies are missing, then

1. `tests`: the CUDA tests (`pytest -m cuda` on the files that hold them); on CUDA a
   skipped or failed test fails the check;
2. `ceilings`: what the device can do at best (a large matrix product per precision, a
   device copy), so that each render rate has a share of the possible;
3. `render`: the reference generator at fp32/tf32/bf16/fp16, one pass and tiled (tile
   sizes, batches, the three forms of the upsampling layers), with FLOP/px, TFLOP/s and
   the GPU memory peak;
4. `job`: a 1 Gpx CMYK LZW print end to end through the library pipeline, with
   per-stage times, host peak RSS and GPU memory;
5. `accuracy`: how far each precision's tiled output is from the CPU fp32 reference, for
   the random-weights reference generator and each bundled (trained) model;
6. `colour`: the colour conversion, libvips on all CPU cores against the LUT on the
   device;
7. `layers`: each upsampling layer alone in each form and precision;
8. `cluster`: one print on a local Dask cluster (dask-cuda's LocalCUDACluster, a worker
   per GPU) and again in-process: the same bytes, and the cluster's cost;

and writes one markdown report to stdout and to $OUT/gpu-check.md (else
./gpu-check-out/), with the raw figures beside it as gpu-check.json.

The machine is lent for minutes, so one broken step must not cost the others' figures:
each step runs in a process of its own (a CUDA error poisons its process's context) under
a time limit, with its output in STEP.log; a failed or timed-out step is reported with the
end of its log and the check goes on. The report is rewritten after every step, so what
was measured comes back even if the whole command is stopped.

`--device cpu` (make gpu-check DEVICE=cpu) runs the same steps at tiny sizes; a test runs
it so that this script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, now_utc  # noqa: E402 - the standard library only

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl"
NEEDED = ("pyvips", "imagecodecs", "pydantic", "boto3", "pikepdf", "yaml", "tifffile",
          "safetensors")
CUDA_TEST_FILES = ["tests/test_render.py", "tests/test_noise.py", "tests/test_colour_lut.py",
                   "tests/test_cuda.py"]
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
FORMS = ("subpixel", "phases", "native")  # of the upsampling layers (Renderer)
# The check's sizes per device: render canvas side, tiled (tile px, batch) configurations,
# timed repeats (median; of each layer alone), accuracy canvas, colour side, job side,
# matrix side and copy bytes of the ceilings, the reference generator's filters. On the CPU
# the dry run is tiny, its generator narrow: bf16/fp16 convolutions there can be ~30x
# slower than fp32 (no AVX-512).
SIZES = {
    # bench_render's CUDA grid: tiles 1024-4096 px, batches 1-8
    "cuda": {"render": 8192, "tiles": [(t, b) for t in (1024, 2048, 4096) for b in (1, 4, 8)],
             "repeats": 3, "layer_repeats": 10, "accuracy": 1024, "colour": 16384,
             "job": 32768, "cluster": 8192, "matmul": 8192, "copy": 2**32,
             "filters": (512, 256, 128, 64)},
    "cpu": {"render": 128, "tiles": [(64, 1), (64, 4)], "repeats": 1, "layer_repeats": 1,
            "accuracy": 128, "colour": 512, "job": 1024, "cluster": 1024, "matmul": 256,
            "copy": 2**24, "filters": (64, 32, 16, 8)},
}
# in order of what the issue's goals need most: a step late in the order is the one the
# budget squeezes when an earlier one runs long
STEPS = ("tests", "ceilings", "render", "job", "accuracy", "colour", "layers", "cluster")
# The most seconds each step may take on the GPU (a few times what it should need) and the
# steps' budget (the issue's 8 minutes, less ~30 s to unpack the wheels and time the disk);
# a step gets the lesser of its limit and what is left of the budget.
STEP_LIMITS_S = {"tests": 240, "ceilings": 30, "render": 150, "layers": 60, "accuracy": 60,
                 "colour": 60, "job": 240, "cluster": 120}
BUDGET_S = 450


# ------------------------------------------------------------------------- environment


def ensure_packages() -> None:
    """Re-run this script with the carried wheels when texprod's dependencies are missing
    (the GPU machine has no internet: they travel in .whl/)."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels or os.environ.get("TEXPROD_GPU_CHECK_SITE"):
        sys.exit(f"gpu-check: missing {', '.join(missing)}; run `make gpu-wheels` where pip "
                 "can download and carry .whl/ with the working tree")
    site = tempfile.mkdtemp(prefix="texprod-site-")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--target", site, *map(str, wheels)],
                   check=True)
    path = os.pathsep.join(p for p in (site, str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TEXPROD_GPU_CHECK_SITE": site}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def environment(device: str) -> dict:
    import pyvips
    import torch

    info = {"kind": device, "date": now_utc(), "python": sys.version.split()[0],
            "torch": torch.__version__,
            "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
            "cpu cores": len(os.sched_getaffinity(0))}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
        with suppress(OSError):  # no nvidia-smi: no driver version in the report
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True)
            if smi.returncode == 0:
                info["driver"] = smi.stdout.strip()
    else:
        info["device"] = cpu_name()
    info["disk write"] = disk_write_speed(Path(tempfile.gettempdir()),
                                          2**30 if device == "cuda" else 64 * 2**20)
    return info


def disk_write_speed(directory: Path, size: int) -> str:
    """Sequential write speed to `directory` (where the check's print goes), fsync
    included: the 1 Gpx print is ~5 GB, so a slow disk shows in its time."""
    block = os.urandom(16 * 2**20)
    with tempfile.NamedTemporaryFile(dir=directory) as fh:
        started = time.perf_counter()
        for _ in range(size // len(block)):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
        seconds = time.perf_counter() - started
    return f"{size / seconds / 1e9:.2f} GB/s to {directory}"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------- tests


def cuda_tests(device: str, out: Path) -> dict:
    """The CUDA tests in a pytest of their own, its output going live into tests.log (so a
    hung test shows where it hung); counts from its JUnit report."""
    report = out / "cuda-tests.xml"
    # Most of the tests' time is jobs in fresh interpreters (import torch, start CUDA):
    # four at a time where pytest-xdist is installed (the GPU machine's image has it)
    parallel = ["-n", "4"] if device == "cuda" and importlib.util.find_spec("xdist") else []
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-m", "cuda", "-rs",
                           "-p", "no:cacheprovider", f"--junitxml={report}", *parallel,
                           *CUDA_TEST_FILES], cwd=REPO, stdout=sys.stderr)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if report.exists():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    counts["seconds"] = time.perf_counter() - started
    bad = counts["failures"] + counts["errors"] + (counts["skipped"] if device == "cuda" else 0)
    counts["ok"] = done.returncode in (0, 5) and bad == 0 and counts["tests"] > 0
    counts["tail"] = _tail(out / "tests.log")
    return counts


def _tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------ render


REFERENCE_NAME = "reference, random weights"


def _reference_generator(sizes: dict):
    """The papers' 5 upsampling layers, 512-256-128-64 filters on the GPU; the dry run on
    the CPU keeps the layers and narrows them (`SIZES`)."""
    from texprod.engine import make_config, random_generator

    return random_generator(make_config(filters=sizes["filters"]), seed=1)


def _on_meta(renderer, plan, batch: int, hook) -> None:
    """Run the plan's network on one batch of its windows on the meta device (shapes only,
    nothing computed), calling hook(module, inputs, output) after every convolution."""
    import copy

    import torch

    from texprod.engine.render import forward_interior

    model = copy.deepcopy(renderer.generator if plan.one_pass else renderer.model).to("meta")
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(hook)
    z = torch.empty((batch, renderer.generator.config.nz, *plan.window_cells),
                    device="meta", dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        if plan.one_pass:
            model(z)
        else:
            forward_interior(model.blocks, renderer.rf, z, plan.tile_cells)


def flops_per_px(renderer, plan) -> float:
    """Floating-point operations (2 per multiply-add) the plan's convolutions do per canvas
    pixel, halos, crops and the sub-pixel form's zero taps included."""
    import torch

    macs = 0

    def count(module, inputs, output):
        nonlocal macs
        weight_taps = module.weight[0].numel()  # (C_in / groups) * kh * kw, or C_out / g
        if isinstance(module, torch.nn.ConvTranspose2d):  # each input scatters C_out taps
            macs += inputs[0].numel() * weight_taps
        else:  # each output gathers C_in * kh * kw taps
            macs += output.numel() * weight_taps

    _on_meta(renderer, plan, 1, count)
    return 2 * macs * len(plan.tiles) / (plan.width * plan.height)


def planned_bytes(renderer, plan, batch: int) -> int:
    """What the job's memory check plans for `renderer.rows` over `plan`: the tensors of one
    batch at their peak (`texprod.engine.memory`), the canvas and the weights; set beside
    the measured peak, it shows how far cuDNN's workspaces and the allocator's rounding
    take the device above that lower bound."""
    from texprod.engine.memory import render_bytes

    model = renderer.generator if plan.one_pass else renderer.model
    weights = sum(p.numel() for p in model.parameters()) * renderer.dtype.itemsize
    return render_bytes(renderer, plan, batch) + plan.width * plan.height * 3 + weights


def ceilings(device: str, sizes: dict) -> dict:
    """What the device can do at best, measured here (METHOD: datasheets are only leads):
    TFLOP/s of a large random matrix product per precision, and GB/s of a device copy
    (bytes read + written)."""
    import torch

    n = sizes["matmul"]
    rates = {}
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32),
                             ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        seconds = _median_seconds(lambda a=a, b=b: a @ b, device, 10)
        rates[precision] = 2 * n**3 / seconds / 1e12
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    src = torch.empty(sizes["copy"] // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = _median_seconds(lambda: dst.copy_(src), device, 10)
    return {"matmul_tflops": rates, "matmul_n": n, "copy_gb_s": 2 * sizes["copy"] / seconds / 1e9}


def _median_seconds(work, device: str, repeats: int) -> float:
    """Median wall time of `work` after a warm-up; on CUDA timed with device events."""
    import torch

    work()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _time_rows(renderer, field, plan, batch: int, repeats: int) -> float:
    """Median seconds of `renderer.rows` over the plan, after a warm-up (which is also
    when cuDNN picks, or with autotuning times, its algorithms); on CUDA the GPU memory
    peak counts from the timed runs only."""
    import torch

    device = renderer.device.type
    renderer.rows(field, plan, batch)
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        renderer.rows(field, plan, batch)
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def render_rows(device: str, sizes: dict) -> Iterator[dict]:
    """Device render throughput per precision, one pass and tiled (rows left on the
    device, as the LUT colour path uses them), and the GPU memory peak of each. A
    configuration that fails is a row with its error: the others still run."""
    import torch

    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer

    gen = _reference_generator(sizes)
    field = NoiseField(gen.config, 0, waves=gen.waves)
    side = sizes["render"]
    middle = sizes["tiles"][len(sizes["tiles"]) // 2]
    for precision in PRECISIONS:
        configs = [(0, 1, False, "subpixel")] + [(t, b, False, "subpixel")
                                                 for t, b in sizes["tiles"]]
        # the other forms of the upsampling layers: as trained, and split by phase
        configs += [(*middle, False, "native"), (*middle, False, "phases")]
        if precision == "bf16":  # cuDNN autotuning, for what fixed algorithms cost
            configs.append((*middle, True, "subpixel"))
        for tile, batch, autotune, upsampling in configs:
            row = {"precision": precision, "tile": tile, "batch": batch, "autotune": autotune,
                   "upsampling": upsampling, "side": side, "repeats": sizes["repeats"]}
            renderer = None
            try:
                renderer = Renderer(gen, device, precision, autotune=autotune,
                                    upsampling=upsampling)
                plan = renderer.plan(side, side, tile)
                row["flop_px"] = flops_per_px(renderer, plan)
                row["planned_mb"] = planned_bytes(renderer, plan, batch) / 2**20
                seconds = _time_rows(renderer, field, plan, batch, sizes["repeats"])
                row.update(seconds=seconds, mpx_s=side * side / seconds / 1e6,
                           tflops=row["flop_px"] * side * side / seconds / 1e12,
                           gpu_mb=torch.cuda.max_memory_allocated() / 2**20
                           if device == "cuda" else None)
            except torch.OutOfMemoryError as e:
                row["error"] = f"out of memory: {(str(e).splitlines() or [''])[0]}"
            except Exception as e:  # noqa: BLE001 - recorded in the report, the check goes on
                row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            finally:
                del renderer
                if device == "cuda":
                    torch.cuda.empty_cache()
            yield row


def layer_rows(device: str, sizes: dict) -> Iterator[dict]:
    """Each upsampling layer of the reference generator alone, in each form and precision,
    at its input shape in the middle tiling: which form to use for which layer. Then, per
    precision, the whole network with each layer in its fastest form."""
    import copy

    import torch

    from texprod.engine.model import phase_layer, subpixel_layer
    from texprod.engine.noise import NoiseField
    from texprod.engine.render import PRECISIONS as DTYPES  # precision -> torch dtype
    from texprod.engine.render import Renderer, use_cudnn_settings

    gen = _reference_generator(sizes)
    tile, batch = sizes["tiles"][len(sizes["tiles"]) // 2]
    native = Renderer(gen, "cpu", "fp32", upsampling="native")
    layers = [m for m in native.model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    shapes = []  # each layer's input (B, C_in, h, w) in the tiled plan
    _on_meta(native, native.plan(sizes["render"], sizes["render"], tile), batch,
             lambda m, i, o: shapes.append(tuple(i[0].shape)))
    fastest: dict[str, list[str]] = {p: [] for p in PRECISIONS}  # per layer, in order
    for index, (layer, shape) in enumerate(zip(layers, shapes, strict=True)):
        forms = {"native": layer, "subpixel": subpixel_layer(layer, after_upsample=False),
                 "phases": phase_layer(layer, after_upsample=False)}
        for precision in PRECISIONS:
            row = {"layer": index + 1, "c_in": shape[1], "c_out": layer.out_channels,
                   "shape": list(shape), "precision": precision}
            dtype = DTYPES[precision]
            if device == "cuda":
                use_cudnn_settings(precision)
            layout = torch.channels_last if device == "cuda" else torch.contiguous_format
            x = torch.randn(shape, device=device).to(dtype, memory_format=layout)
            for name, module in forms.items():
                module = copy.deepcopy(module).to(device=device, dtype=dtype,
                                                  memory_format=layout).eval()
                try:
                    with torch.inference_mode():
                        row[name] = _median_seconds(lambda m=module, x=x: m(x), device,
                                                    sizes["layer_repeats"])
                except Exception as e:  # noqa: BLE001 - recorded in the report
                    row[name] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            timed = {f: row[f] for f in FORMS if isinstance(row.get(f), float)}
            row["fastest"] = min(timed, key=timed.get) if timed else None
            fastest[precision].append(row["fastest"] or "subpixel")
            yield row
    field = NoiseField(gen.config, 0, waves=gen.waves)
    for precision, forms in fastest.items():
        row = {"layer": "network", "precision": precision, "forms": forms, "tile": tile,
               "batch": batch, "side": sizes["render"]}
        try:
            renderer = Renderer(gen, device, precision, upsampling=tuple(forms))
            seconds = _time_rows(renderer, field, renderer.plan(row["side"], row["side"], tile),
                                 batch, sizes["repeats"])
            row.update(seconds=seconds, mpx_s=row["side"] ** 2 / seconds / 1e6)
        except Exception as e:  # noqa: BLE001 - recorded in the report
            row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        yield row


def render_accuracy(device: str, sizes: dict) -> Iterator[dict]:
    """Each precision's tiled output (uint8) on the device vs the CPU fp32 one-pass
    reference, in 1/255 steps: for the random-weights reference generator and for each
    bundled (trained) model, whose errors differ (a CPU dry run: bf16 3/255 for random
    weights, 2/255 for the trained models)."""
    import numpy as np

    from texprod.engine.noise import NoiseField
    from texprod.engine.render import Renderer, render_canvas, render_reference
    from texprod.models.checkpoint import load_checkpoint
    from texprod.models.references import BUNDLED_PREFIX, bundled_models, resolve_model

    generators = [(REFERENCE_NAME, lambda: _reference_generator(sizes))]
    generators += [(BUNDLED_PREFIX + name, lambda name=name: load_checkpoint(
        resolve_model(BUNDLED_PREFIX + name)).generator) for name in bundled_models()]
    side = sizes["accuracy"]
    for name, load in generators:
        gen = load()
        field = NoiseField(gen.config, 3, waves=gen.waves)
        reference = render_reference(gen, field, side, side, x0=-37, y0=11).astype(np.int16)
        for precision in PRECISIONS:
            renderer = Renderer(gen, device, precision)
            plan = renderer.plan(side, side, side // 4, x0=-37, y0=11)
            tiled = render_canvas(renderer, field, plan, batch=4).astype(np.int16)
            diff = np.abs(tiled - reference)
            yield {"generator": name, "precision": precision, "side": side,
                   "tiles": len(plan.tiles), "max_diff": int(diff.max()),
                   "mean_diff": float(diff.mean()), "share_off": float((diff > 0).mean())}


# ------------------------------------------------------------------------------ colour


def colour_rows(device: str, sizes: dict) -> list[dict]:
    """sRGB -> FOGRA39 CMYK of a texture: libvips on all CPU cores vs the LUT on `device`
    (on the device alone, and with the copies there and back)."""
    import numpy as np
    import pyvips
    import torch

    from texprod.press.colour import DEFAULT_CMYK_PROFILE, ICC_DIR, OutputColour, to_output
    from texprod.press.colour_lut import colour_lut

    side = sizes["colour"]
    profile = Path(str(ICC_DIR / DEFAULT_CMYK_PROFILE))
    colour = OutputColour("cmyk", profile.read_bytes(), profile, "FOGRA39", "relative", True, 8)
    rgb = _texture(side, sizes)  # (side, side, 3) uint8
    rows = []

    started = time.perf_counter()
    image = pyvips.Image.new_from_memory(rgb.data, side, side, 3, "uchar")
    reference = np.ndarray((side, side, 4), np.uint8,
                           to_output(image.copy(interpretation="srgb"), colour).write_to_memory())
    seconds = time.perf_counter() - started
    rows.append({"path": "libvips icc_transform", "where": f"CPU x{os.cpu_count()}",
                 "seconds": seconds, "max_diff": 0})

    started = time.perf_counter()
    lut = colour_lut(colour)
    build = {"path": "LUT build (65^3 samples via libvips)", "where": "CPU",
             "seconds": time.perf_counter() - started, "max_diff": None}
    pixels = torch.from_numpy(rgb).to(device)
    lut.apply(pixels[:64])  # warm-up: the table moves to the device once
    _sync(device)
    started = time.perf_counter()
    converted = lut.apply(pixels)
    _sync(device)
    on_device = time.perf_counter() - started
    started = time.perf_counter()
    converted = lut.apply(torch.from_numpy(rgb).to(device)).cpu().numpy()
    with_copies = time.perf_counter() - started
    diff = int(np.abs(converted.astype(np.int16) - reference).max())
    rows.append({"path": "LUT, tetrahedral", "where": f"{device} (on the device)",
                 "seconds": on_device, "max_diff": diff})
    rows.append({"path": "LUT, tetrahedral", "where": f"{device} (with copies)",
                 "seconds": with_copies, "max_diff": diff})
    for row in rows:
        row["mpx_s"] = side * side / row["seconds"] / 1e6
    return [*rows, {**build, "mpx_s": None}]


def _texture(side: int, sizes: dict):
    """A texture-like sRGB image: a render of the reference generator, tiled."""
    import numpy as np

    from texprod.engine.noise import NoiseField
    from texprod.engine.render import render_reference

    gen = _reference_generator(sizes)
    tile = render_reference(gen, NoiseField(gen.config, 5, waves=gen.waves), 512, 512)
    reps = -(-side // 512)
    return np.ascontiguousarray(np.tile(tile, (reps, reps, 1))[:side, :side])


# --------------------------------------------------------------------------------- job


def _reference_model(sizes: dict, work: Path) -> Path:
    from texprod.models import save_generator

    return save_generator(_reference_generator(sizes), work / "reference", overwrite=True)


def _square_print(model: Path, device: str, side: int, out: Path, render: dict,
                  output: dict | None = None):
    """The spec of a side x side CMYK LZW (tiled) print of `model` at 300 dpi, bf16 on
    CUDA (fp32 in the dry run), written to `out`."""
    from texprod.job.spec import parse_spec

    side_mm = side / 300 * 25.4
    return parse_spec({
        "name": "gpu-check", "model": str(model), "seed": 7,
        "print": {"width_mm": side_mm, "height_mm": side_mm, "dpi": 300, "bleed_mm": 0,
                  "color": "cmyk"},
        "tiff": {"compression": "lzw", "layout": "tiled"},
        "render": {"device": device, "precision": "bf16" if device == "cuda" else "fp32",
                   **render},
        "output": {"dir": str(out), **(output or {})},
    })


def job_row(device: str, sizes: dict, work: Path) -> dict:
    """A side x side CMYK LZW print through `run_job` (its step's process is its own, so
    the peak RSS is the job's)."""
    import torch

    from texprod.job.memory import memory_need
    from texprod.job.pipeline import measured_estimate, run_job

    side = sizes["job"]
    spec = _square_print(_reference_model(sizes, work), device, side, work / "out",
                         {"colour_engine": "lut"})
    result = run_job(spec)
    summary = result.summary()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # what `generate --dry-run` would have said (after the job: its stripe is not the job's
    # memory), to check its model of the device and the host threads against the real run
    estimate = measured_estimate(result.plan)
    return {"side": side, "megapixels": result.plan.geometry.megapixels, "estimate": estimate,
            "precision": spec.render.precision, "colour_engine": result.plan.colour_engine,
            "tile_px": result.plan.tile_px, "batch": result.plan.batch,
            "stripes": len(result.plan.stripes), "timings": result.timings,
            "busy": result.stripe_seconds, "workers": result.workers,
            "bytes": summary["bytes"], "sha256": summary["sha256"], "tac_max": result.tac_max,
            "preflight_ok": result.report.ok, "rss_mb": rss_mb,
            # the plan's model of the device's memory, beside the peak it had
            "planned_mb": memory_need(result.plan).need / 2**20,
            "gpu_mb": torch.cuda.max_memory_allocated() / 2**20
            if device == "cuda" else None}


def cluster_row(device: str, sizes: dict, work: Path) -> dict:
    """A side x side CMYK LZW print worked by a local Dask cluster (on CUDA dask-cuda's
    LocalCUDACluster, one worker per GPU; in the dry run a LocalCluster of 2 workers),
    then in this process: the same bytes (scaling out changes no pixel), and what the
    cluster costs (its start and the stripes' travel)."""
    from texprod.job.pipeline import run_job

    model = _reference_model(sizes, work)
    side = sizes["cluster"]
    kind = "local-cuda" if device == "cuda" else "local"

    def job(cluster: str | None) -> tuple[dict, float]:
        spec = _square_print(model, device, side, work / (cluster or "in-process"),
                             {"cluster": cluster,
                              **({"workers": 2} if cluster == "local" else {})},
                             {"proof": False})
        started = time.perf_counter()
        result = run_job(spec)
        seconds = time.perf_counter() - started
        return {"workers": result.workers, "sha256": result.summary()["sha256"],
                "megapixels": result.plan.geometry.megapixels,
                "stripes": len(result.plan.stripes)}, seconds

    on_cluster, cluster_s = job(kind)
    here, here_s = job(None)
    return {"cluster": kind, "side": side, "megapixels": here["megapixels"],
            "stripes": here["stripes"], "workers": on_cluster["workers"],
            "seconds": cluster_s, "in_process": here["workers"], "in_process_seconds": here_s,
            "same_bytes": on_cluster["sha256"] == here["sha256"]}


# ------------------------------------------------------------------------------ report


def _table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(v) for v in r) + " |" for r in rows)]


def _failed(figures: dict, name: str) -> list[str] | None:
    """The lines that stand for a step that did not run or did not finish, else None."""
    got = figures.get(name)
    if got is None:
        return ["not run"]
    if _step_failed(got):
        tail = got.get("tail")
        return [f"FAILED: {got['error']} (whole output in {name}.log)",
                *(["", "```", tail, "```"] if tail else [])]
    return None


def rows_of(figures: dict, name: str) -> list[dict]:
    """A row-by-row step's rows: all of them, or those measured before it failed."""
    got = figures.get(name)
    if isinstance(got, list):
        return got
    return (got or {}).get("rows") or []


def _rows_section(figures: dict, name: str, table) -> list[str]:
    """`table` of the step's rows, then, if it failed, why (and what is missing)."""
    rows = rows_of(figures, name)
    failed = _failed(figures, name)
    if failed is None:
        return table(rows)
    return (table(rows) + ["", "Only the rows above were measured.", ""] if rows else []) \
        + failed


def report(figures: dict, sizes: dict) -> str:
    """The markdown report of what `figures` holds so far: a section per step."""
    out = ["# texprod GPU check", "",
           ", ".join(f"{k} {v}" for k, v in figures["environment"].items()), ""]
    out += tests_section(figures) + [""] + render_section(figures, sizes) + [""]
    out += ["## Upsampling layers alone: each form at its tiled input shape", ""]
    out += _rows_section(figures, "layers",
                         lambda rows: layers_table(rows, rows_of(figures, "render"))) + [""]
    out += ["## Accuracy: tiled output on the device vs the CPU fp32 one-pass reference", ""]
    out += _rows_section(figures, "accuracy", lambda rows: _table(
        ["generator", "precision", "canvas", "tiles", "max diff (1/255)", "mean diff",
         "pixels off"],
        [[a["generator"], a["precision"], f"{a['side']}²", a["tiles"], a["max_diff"],
          f"{a['mean_diff']:.4f}", f"{a['share_off']:.2%}"] for a in rows]))
    out += ["", f"## Colour: sRGB -> FOGRA39 CMYK, {sizes['colour']}² px", ""]
    out += _failed(figures, "colour") or colour_table(figures["colour"])
    out += ["", "## A print end to end (CMYK 8-bit, LZW, tiled, proof and preflight)", ""]
    out += _failed(figures, "job") or job_section(figures["job"])
    out += ["", "## Dask: one print on a local cluster, then in-process (CMYK LZW)", ""]
    out += _failed(figures, "cluster") or cluster_section(figures["cluster"])
    out += ["", "## Goals (issue 17, on one H100/H200)", ""]
    out += _table(["goal", "measured", "met"], goals(figures))
    return "\n".join(out) + "\n"


def tests_section(figures: dict) -> list[str]:
    failed = _failed(figures, "tests")
    if failed:
        return ["## CUDA tests: FAIL", "", *failed]
    tests = figures["tests"]
    out = [f"## CUDA tests: {'PASS' if tests['ok'] else 'FAIL'}", "",
           f"{tests['tests']} tests, {tests['failures']} failed, {tests['errors']} errors, "
           f"{tests['skipped']} skipped, {tests['seconds']:.0f} s"]
    return out + (["", "```", tests["tail"], "```"] if not tests["ok"] else [])


def render_section(figures: dict, sizes: dict) -> list[str]:
    filters = "-".join(map(str, sizes["filters"]))
    out = [f"## Render (reference generator, {filters} filters, rows on the device)", ""]
    ceiling = figures.get("ceilings")
    peaks = {}
    if ceiling and "error" not in ceiling:
        peaks = ceiling["matmul_tflops"]
        out += ["Ceilings measured here: a random " + "x".join([str(ceiling["matmul_n"])] * 3)
                + " matrix product at " + ", ".join(f"{p} {v:.1f}" for p, v in peaks.items())
                + f" TFLOP/s; a device copy at {ceiling['copy_gb_s']:.0f} GB/s (read + "
                "written). `% matmul` is a row's convolution rate against its precision's "
                "ceiling.", ""]
    else:
        out += ["Ceilings: " + " ".join(_failed(figures, "ceilings") or []), ""]
    return out + _rows_section(figures, "render", lambda rows: render_table(rows, peaks))


def render_table(render: list[dict], peaks: dict) -> list[str]:
    one_pass = {r["precision"]: r.get("mpx_s") for r in render if r["tile"] == 0}
    rows = []
    for r in render:
        layers = "" if r["upsampling"] == "subpixel" else r["upsampling"]
        if "error" in r:
            rows.append([r["precision"], r["tile"] or "one pass", r["batch"], layers,
                         "yes" if r["autotune"] else "", r["error"], *[""] * 7])
            continue
        ratio = r["mpx_s"] / one_pass[r["precision"]] if one_pass.get(r["precision"]) else None
        peak = peaks.get(r["precision"])
        rows.append([r["precision"], r["tile"] or "one pass", r["batch"], layers,
                     "yes" if r["autotune"] else "", f"{r['seconds']:.3f}",
                     f"{r['mpx_s']:.1f}", f"{ratio:.2f}" if ratio else "-",
                     f"{r['flop_px'] / 1e3:.0f}", f"{r['tflops']:.3g}",
                     f"{r['tflops'] / peak:.0%}" if peak else "-",
                     f"{r['gpu_mb']:.0f}" if r["gpu_mb"] is not None else "-",
                     f"{r['planned_mb']:.0f}" if r.get("planned_mb") else "-"])
    out = _table(["precision", "tile px", "batch", "layers", "autotune", "s", "Mpx/s",
                  "tiled/one-pass", "kFLOP/px", "TFLOP/s", "% matmul", "GPU peak MB",
                  "planned MB"], rows)
    out += ["", f"Canvas {render[0]['side']}² px; median of {render[0]['repeats']} after a "
            "warm-up. Tiled rows compute the upsampling layers in sub-pixel form (the "
            "default: dense 3x3 convolutions and a pixel shuffle, with the zero taps of the "
            "5x5 stride-2 kernels' phases) unless `layers` says native (transposed "
            "convolutions, as trained) or phases (one convolution per output phase, no "
            "zero taps); one pass is the unmodified network. kFLOP/px counts "
            "what the convolutions compute per canvas pixel, halos included. Planned MB is "
            "the job's memory check's lower bound for the same work (tensors at their peak, "
            "canvas, weights), beside the measured GPU peak.", "",
            "Fastest tiling per precision (the candidates for `default_tiling`):", ""]
    out += _table(["precision", "tile px", "batch", "Mpx/s", "GPU peak MB"],
                  [[b["precision"], b["tile"], b["batch"], f"{b['mpx_s']:.1f}",
                    f"{b['gpu_mb']:.0f}" if b["gpu_mb"] is not None else "-"]
                   for b in best_tiling(render)])
    return out + ["", "Forms of the upsampling layers side by side (the candidates for the "
                  "renderer's default `upsampling`):", ""] + _table(
        ["precision", "tile px", "batch", *(f"{f} Mpx/s" for f in FORMS), "fastest"],
        form_rows(render))


def rates_by_tiling(render: list[dict]) -> dict[tuple, dict[str, float]]:
    """{(precision, tile, batch): {form: Mpx/s}} of the tiled rows with fixed algorithms."""
    rates: dict[tuple, dict[str, float]] = {}
    for r in render:
        if r["tile"] and not r["autotune"] and "mpx_s" in r:
            rates.setdefault((r["precision"], r["tile"], r["batch"]), {})[r["upsampling"]] = \
                r["mpx_s"]
    return rates


def form_rows(render: list[dict]) -> list[list]:
    """Per precision and tiling measured in more than one form: each form's rate."""
    return [[*key, *(f"{forms[f]:.1f}" if f in forms else "-" for f in FORMS),
             max(forms, key=forms.get)]
            for key, forms in rates_by_tiling(render).items() if len(forms) > 1]


def layers_table(rows: list[dict], render: list[dict]) -> list[str]:
    lines = []
    for r in (r for r in rows if r["layer"] != "network"):
        lines.append([r["layer"], f"{r['c_in']} -> {r['c_out']}",
                      "x".join(map(str, r["shape"])), r["precision"],
                      *(f"{r[f] * 1e3:.2f}" if isinstance(r.get(f), float) else r.get(f, "-")
                        for f in FORMS), r["fastest"] or "-"])
    return _table(["layer", "channels", "input (B x C x h x w)", "precision",
                   *(f"{f} ms" for f in FORMS), "fastest"], lines) + [
        "", "Median of the check's repeats (device events on CUDA) at the middle tiling's "
        "shapes.", ""] + network_table([r for r in rows if r["layer"] == "network"], render)


def network_table(rows: list[dict], render: list[dict]) -> list[str]:
    """The whole network with each layer in its fastest form, against one form for all."""
    if not rows:
        return []
    rates = rates_by_tiling(render)
    lines = []
    for r in rows:
        same = rates.get((r["precision"], r["tile"], r["batch"]), {})
        lines.append([r["precision"], ", ".join(r["forms"]), r.get("error") or
                      f"{r['mpx_s']:.1f}",
                      *(f"{r['mpx_s'] / same[f]:.2f}x" if f in same and "mpx_s" in r
                        else "-" for f in FORMS)])
    return ["The whole network with each layer in its fastest form (the candidate for a "
            f"per-layer `upsampling`), tile {rows[0]['tile']} batch {rows[0]['batch']}:",
            ""] + _table(["precision", "forms, first layer to last", "Mpx/s",
                          *(f"vs all {f}" for f in FORMS)], lines)


def colour_table(colour: list[dict]) -> list[str]:
    base = colour[0]["seconds"]
    return _table(["path", "where", "s", "Mpx/s", "vs libvips", "max diff (1/255)"],
                  [[c["path"], c["where"], f"{c['seconds']:.3f}",
                    f"{c['mpx_s']:.0f}" if c["mpx_s"] else "-",
                    f"{base / c['seconds']:.1f}x" if c["max_diff"] is not None else "-",
                    "-" if c["max_diff"] is None else c["max_diff"]] for c in colour])


def job_section(job: dict) -> list[str]:
    t, busy = job["timings"], job["busy"]
    out = _table(
        ["stage", "seconds"],
        [["plan (model, texture, stripes)", f"{t['plan']:.2f}"],
         ["render + colour + encode (wall)", f"{t['render']:.2f}"],
         ["  render, busy", f"{busy.get('render', 0):.2f}"],
         ["  colour + ink + preview, busy", f"{busy.get('colour', 0):.2f}"],
         ["  encode (LZW), busy", f"{busy.get('encode', 0):.2f}"],
         ["finish the file (IFD, fsync: the chunks went in while rendering)",
          f"{t['export']:.2f}"],
         ["proof", f"{t['proof']:.2f}"],
         ["preflight (read back in bands, TAC; SHA-256 beside it)", f"{t['preflight']:.2f}"],
         ["**total**", f"**{t['total']:.2f}**"]])
    return out + ["", f"{job['megapixels']:.0f} Mpx ({job['side']}² px), "
                  f"{job['precision']}, colour {job['colour_engine']}, tile {job['tile_px']} "
                  f"batch {job['batch']}, {job['stripes']} stripes on {job['workers']}; "
                  f"file {job['bytes'] / 2**30:.2f} GiB, TAC max {job['tac_max']:.1f}%, "
                  f"preflight {'ok' if job['preflight_ok'] else 'FAILED'}; host peak RSS "
                  f"{job['rss_mb']:.0f} MB"
                  + (f", GPU peak {job['gpu_mb']:.0f} MB (planned "
                     f"{job.get('planned_mb', 0):.0f} MB)" if job["gpu_mb"] else "") + ".",
                  *(["", f"`generate --dry-run` estimate, measured after the job: "
                     f"{job['estimate']}"] if job.get("estimate") else [])]


def cluster_section(row: dict) -> list[str]:
    return _table(["worked by", "seconds (start included)"],
                  [[f"{row['cluster']}: {row['workers']}", f"{row['seconds']:.1f}"],
                   [row["in_process"], f"{row['in_process_seconds']:.1f}"]]) + [
        "", f"{row['megapixels']:.1f} Mpx ({row['side']}² px), {row['stripes']} stripes; "
        f"the same bytes both ways: {'yes' if row['same_bytes'] else 'NO'}."]


def best_tiling(render: list[dict]) -> list[dict]:
    """Per precision, the fastest tiled configuration with fixed cuDNN algorithms."""
    best = {}
    for r in render:
        if r["tile"] and not r["autotune"] and r["upsampling"] == "subpixel" and \
                "mpx_s" in r and r["mpx_s"] > best.get(r["precision"], {}).get("mpx_s", 0):
            best[r["precision"]] = r
    return [best[p] for p in PRECISIONS if p in best]


def goals(figures: dict) -> list[list[str]]:
    """The GPU goals against what was measured (meaningful on a GPU only); a step that
    failed meets none of its goals."""
    render, accuracy = rows_of(figures, "render"), rows_of(figures, "accuracy")
    job = figures.get("job") or {}
    timed = [r for r in render if "mpx_s" in r and not r["autotune"]
             and r["upsampling"] == "subpixel"]
    best_bf16 = max((r["mpx_s"] for r in timed if r["precision"] == "bf16" and r["tile"]),
                    default=0)
    ratios = []
    for precision in PRECISIONS:
        one = next((r["mpx_s"] for r in timed if r["precision"] == precision
                    and r["tile"] == 0), None)
        tiled = max((r["mpx_s"] for r in timed if r["precision"] == precision
                     and r["tile"]), default=None)
        if one and tiled:
            ratios.append(tiled / one)

    def worst(precision: str, trained: bool) -> int | None:
        """The largest max diff of `precision` over the trained (bundled) models, or of the
        random-weights reference generator."""
        return max((a["max_diff"] for a in accuracy if a["precision"] == precision
                    and (a["generator"] != REFERENCE_NAME) == trained), default=None)

    def within(precision: str, trained: bool, limit: int) -> tuple[str, bool]:
        diff = worst(precision, trained)
        return ("-", False) if diff is None else (f"{diff}/255", diff <= limit)

    total = job.get("timings", {}).get("total")
    rows = [
        ("bf16 render >= 3 Gpx/s", f"{best_bf16 / 1000:.2f} Gpx/s", best_bf16 >= 3000),
        ("tiled / one-pass >= 0.95", f"{min(ratios):.2f} (worst precision)" if ratios
         else "-", bool(ratios) and min(ratios) >= 0.95),
        ("1 Gpx CMYK LZW print <= 15 s", f"{total:.1f} s for {job.get('megapixels', 0):.0f} "
         "Mpx" if total else "-", bool(total) and total <= 15
         and job.get("megapixels", 0) >= 1000),
        ("fp32 tiled on the device = CPU reference within 1/255 (trained models)",
         *within("fp32", True, 1)),
        ("fp32 within 1/255 (random-weights reference generator)", *within("fp32", False, 1)),
        ("bf16 within 2/255 of the CPU reference (trained models)", *within("bf16", True, 2)),
        ("bf16 within 2/255 (random-weights reference generator)", *within("bf16", False, 2)),
    ]
    return [[goal, measured, "yes" if met else "NO"] for goal, measured, met in rows]


def run_step(name: str, device: str, out: Path, work: Path, timeout: float):
    """One step in a process of its own (its own CUDA context and peak RSS), killed with
    everything it started after `timeout` seconds: its figures, or {"error", "tail"}."""
    log_path = out / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--step", name,
           "--out", str(out), "--work", str(work)]
    with log_path.open("w") as log:
        child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                 start_new_session=True)
        try:
            stdout, _ = child.communicate(timeout=max(timeout, 1))
            error = f"exit {child.returncode}" if child.returncode else None
        except subprocess.TimeoutExpired:
            child.terminate()  # the step writes where each of its threads is to its log
            with suppress(subprocess.TimeoutExpired):
                child.wait(2)
            with suppress(ProcessLookupError):  # the step and its pytest / TAC bands
                os.killpg(child.pid, signal.SIGKILL)
            stdout, _ = child.communicate()
            error = f"timed out after {timeout:.0f} s"
    figures = None
    for line in reversed(stdout.strip().splitlines()):  # the last whole line of figures
        with suppress(ValueError):
            figures = json.loads(line)
            break
    if error or figures is None:
        failed = {"error": error or "no figures printed", "tail": _tail(log_path)}
        return {**failed, "rows": figures} if isinstance(figures, list) else failed
    return figures


def hang_until_killed() -> None:
    while True:
        time.sleep(1)


def step_here(name: str, device: str, out: Path, work: Path) -> None:
    """Run one step in this (child) process and print its figures as a JSON line; a step
    that measures row by row prints all its rows so far after each one, so that what was
    measured before a crash or a timeout still reaches the report."""
    if os.environ.get("GPU_CHECK_HANG_IN") == name:  # how the test of the time limits hangs
        hang_until_killed()
    sizes = SIZES[device]
    work.mkdir(parents=True, exist_ok=True)
    figures = {"tests": lambda: cuda_tests(device, out),
               "ceilings": lambda: ceilings(device, sizes),
               "render": lambda: render_rows(device, sizes),
               "layers": lambda: layer_rows(device, sizes),
               "accuracy": lambda: render_accuracy(device, sizes),
               "colour": lambda: colour_rows(device, sizes),
               "job": lambda: job_row(device, sizes, work),
               "cluster": lambda: cluster_row(device, sizes, work)}[name]()
    if isinstance(figures, Iterator):
        rows = []
        for row in figures:
            rows.append(row)
            print(json.dumps(rows, default=str), flush=True)
        figures = rows
    print(json.dumps(figures, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--out", type=Path, default=None,
                    help="report directory (default: $OUT, else ./gpu-check-out)")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help=f"the steps to run, in order (default: {','.join(STEPS)})")
    ap.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS",
                    help="change one step's time limit (default: "
                    + ", ".join(f"{k}={v}" for k, v in STEP_LIMITS_S.items()) + ")")
    ap.add_argument("--budget", type=float, default=BUDGET_S,
                    help=f"seconds for all steps together (default {BUDGET_S})")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    limits = dict(STEP_LIMITS_S)
    for item in args.limit:
        step, _, seconds = item.partition("=")
        if step not in STEPS or not seconds.replace(".", "", 1).isdigit():
            ap.error(f"--limit {item!r}: expected STEP=SECONDS with STEP one of {STEPS}")
        limits[step] = float(seconds)
    if unknown := [s for s in steps if s not in STEPS]:
        ap.error(f"--steps: unknown {', '.join(unknown)}; allowed: {', '.join(STEPS)}")
    if args.step:  # first, so that a step stopped at any point says where it was
        faulthandler.register(signal.SIGTERM, all_threads=True)  # see run_step
    ensure_packages()
    sys.path.insert(0, str(REPO))
    out = args.out or Path(os.environ.get("OUT") or REPO / "gpu-check-out")
    out.mkdir(parents=True, exist_ok=True)
    if args.step:
        step_here(args.step, args.device, out, args.work)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu-check: no CUDA device here (use --device cpu for a dry run)")
    sizes = SIZES[args.device]
    started = time.perf_counter()
    figures: dict = {"environment": environment(args.device)}
    with tempfile.TemporaryDirectory(prefix="texprod-gpu-check-") as work:
        for name in steps:
            t = time.perf_counter()
            left = args.budget - (t - started)
            figures[name] = run_step(name, args.device, out, Path(work) / name,
                                     min(limits[name], left)) if left >= 5 else \
                {"error": f"not run: the {args.budget:.0f} s budget was spent", "tail": ""}
            print(f"gpu-check: {name} {'FAILED' if _step_failed(figures[name]) else 'done'} "
                  f"in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            (out / "gpu-check.json").write_text(json.dumps(figures, indent=1, default=str))
            (out / "gpu-check.md").write_text(report(figures, sizes))
    text = report(figures, sizes) + f"\nThe check took {time.perf_counter() - started:.0f} s.\n"
    (out / "gpu-check.md").write_text(text)
    print(text)
    if site := os.environ.get("TEXPROD_GPU_CHECK_SITE"):  # the wheels unpacked for this run
        shutil.rmtree(site, ignore_errors=True)
    tests, job = figures.get("tests", {}), figures.get("job", {})
    ok = not any(_step_failed(figures[name]) for name in steps) and tests.get("ok", True) \
        and job.get("preflight_ok", True) and figures.get("cluster", {}).get("same_bytes", True)
    return 0 if ok else 1


def _step_failed(figures) -> bool:
    return isinstance(figures, dict) and "error" in figures


if __name__ == "__main__":
    sys.exit(main())
