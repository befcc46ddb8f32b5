"""The production print job as a Prefect flow: thin tasks over `texprod.job`.

    fetch model (retries on I/O) -> plan -> render bands (mapped, one at a time per device)
    -> export -> proof -> preflight -> upload (retries on I/O) -> report

Tasks pass job keys, paths and digests, never pixels: the plan, the prepared generator and
the scratch canvas of a running job live in this process (`_JOBS`) for the flow's duration.
Operators see a progress artifact that moves as bands finish, a markdown report, a table of
outputs with sizes and checksums, and links to the outputs and the proof.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from texprod import __version__
from texprod.canvas import ScratchCanvas
from texprod.job import (
    JobPlan,
    PreflightError,
    check_disk_space,
    export_job,
    make_renderer,
    open_canvas,
    plan_job,
    preflight_job,
    proof_job,
    render_job,
    upload_job,
)
from texprod.render import Renderer
from texprod.spec import JobSpec, load_spec, parse_spec, resolve_spec_path
from texprod.storage import is_s3, presigned_url, resolve_model, sha256_file

# Bands render one at a time: one device per flow run. (Several GPUs: one worker per GPU.)
DEVICE_WORKERS = 1
# global concurrency limit held while rendering: `prefect gcl create texprod-gpu --limit N`
GPU_LIMIT = os.environ.get("TEXPROD_GPU_LIMIT", "texprod-gpu")
IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 10, 30]


@dataclass
class _Job:
    plan: JobPlan
    canvas: ScratchCanvas
    renderer: Renderer | None = None
    written: list[Path] = field(default_factory=list)  # local outputs this run wrote
    timings: dict[str, float] = field(default_factory=dict)


_JOBS: dict[str, _Job] = {}
_JOBS_LOCK = threading.Lock()


def _job(key: str) -> _Job:
    with _JOBS_LOCK:
        return _JOBS[key]


def _retry_on_io(task, task_run, state) -> bool:
    """Retry only I/O that may succeed next time: never a missing key or a spec error."""
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - we classify, not handle
        return getattr(error, "transient", False) or isinstance(
            error, ConnectionError | TimeoutError)
    return False


def _spec_of(spec: str | dict, overrides: list[str]) -> tuple[JobSpec, Path | None]:
    if isinstance(spec, dict):
        return parse_spec(spec, "spec"), None
    path = resolve_spec_path(spec)
    return load_spec(path, overrides), path.parent


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    try:
        job, _ = _spec_of(params["spec"], params.get("overrides") or [])
        return f"{job.name}-seed{job.seed}"
    except Exception:  # noqa: BLE001 - an invalid spec fails in the flow, with its message
        return "invalid-spec"


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "job"


# ---------------------------------------------------------------------------------- tasks


@task(name="fetch-model", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=_retry_on_io)
def fetch_model(model: str, spec_dir: str | None, registry: str | None) -> str:
    """The spec's model as a local checkpoint: a path, bundled, S3 or registry NAME@VERSION."""
    path = resolve_model(model, spec_dir, registry=registry)
    get_run_logger().info("model %s -> %s", model, path)
    return str(path)


@task(name="plan")
def plan_task(spec: dict, spec_dir: str | None, model_path: str) -> dict:
    """Check everything before rendering; open the scratch canvas. Returns the job key."""
    started = time.perf_counter()
    plan = plan_job(parse_spec(spec), Path(spec_dir) if spec_dir else None, Path(model_path))
    check_disk_space(plan)
    plan.outputs.tiff.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(plan, open_canvas(plan))
    job.timings["plan"] = time.perf_counter() - started
    key = plan.spec_digest
    with _JOBS_LOCK:
        _JOBS[key] = job
    g = plan.geometry
    get_run_logger().info("%s: %d x %d px, %d tiles in %d bands on %s", plan.spec.name,
                          g.width_px, g.height_px, len(plan.tiles.tiles),
                          len(plan.tiles.bands), plan.device)
    return {"key": key, "bands": len(plan.tiles.bands), "tiles": len(plan.tiles.tiles),
            "done": sorted(job.canvas.done_bands)}


@task(name="render-band")
def render_band(key: str, band: int) -> dict:
    job = _job(key)
    started = time.perf_counter()
    if job.renderer is None and job.plan.tile_px != 0:
        job.renderer = make_renderer(job.plan)
    rendered = render_job(job.plan, job.canvas, bands=[band], renderer=job.renderer)
    return {"band": band, "tiles": len(job.plan.tiles.bands[band]), "rendered": bool(rendered),
            "seconds": time.perf_counter() - started}


@task(name="export")
def export_task(key: str) -> dict:
    job = _job(key)
    written, tac = export_job(job.plan, job.canvas)
    job.written.append(written.path)
    get_run_logger().info("wrote %s (%.1f MB, %s)", written.path, written.bytes / 1e6,
                          "BigTIFF" if written.bigtiff else "classic TIFF")
    return {"path": str(written.path), "bytes": written.bytes, "tac_max": tac,
            "bigtiff": written.bigtiff, "seconds": written.seconds}


@task(name="proof")
def proof_task(key: str) -> list[str]:
    job = _job(key)
    paths = proof_job(job.plan, job.canvas) or ()
    job.written += paths
    return [str(p) for p in paths]


@task(name="preflight")
def preflight_task(key: str) -> dict:
    job = _job(key)
    report = preflight_job(job.plan)
    get_run_logger().info("preflight of %s:\n%s", job.plan.outputs.tiff, report.table())
    if not report.ok:
        failed = ", ".join(f"{c.name} (found {c.found}, expected {c.expected})"
                           for c in report.checks if not c.ok)
        raise PreflightError(f"preflight failed for {job.plan.outputs.tiff}: {failed}")
    return {"ok": True, "checks": len(report.checks)}


@task(name="upload", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=_retry_on_io)
def upload_task(key: str) -> list[dict]:
    """Outputs with their final locations, sizes and sha256 (uploaded when on S3)."""
    job = _job(key)
    outputs = job.plan.outputs
    checksums = {p.name: (sha256_file(p), p.stat().st_size) for p in outputs.local}
    uploaded = {u["uri"]: u for u in upload_job(job.plan)}
    rows = []
    for path in outputs.local:
        final = outputs.final(path)
        sha, size = checksums[path.name]
        rows.append({"name": path.name, "uri": final, "bytes": size, "sha256": sha,
                     "etag": uploaded.get(final, {}).get("etag", "")})
    return rows


# ----------------------------------------------------------------------------------- flow


@flow(name="generate-texture", flow_run_name=_run_name,
      task_runner=ThreadPoolTaskRunner(max_workers=DEVICE_WORKERS),
      description="Render a job spec into a checked, print-ready TIFF with proof.")
def generate_texture(spec: str | dict, overrides: list[str] | None = None) -> dict:
    """Run the print job a spec (path, name in specs/, or dict) describes."""
    logger = get_run_logger()
    started = time.perf_counter()
    job_spec, spec_dir = _spec_of(spec, overrides or [])  # a spec error fails here, first
    spec_data = job_spec.model_dump(mode="json")
    akey = _artifact_key(job_spec.name)
    model_path = fetch_model(job_spec.model, str(spec_dir) if spec_dir else None,
                             job_spec.registry)
    planned = plan_task(spec_data, str(spec_dir) if spec_dir else None, model_path)
    key = planned["key"]
    try:
        job = _job(key)
        progress_id = create_progress_artifact(
            0.0, key=f"{akey}-progress",
            description=f"{job_spec.name}: tiles rendered ({planned['tiles']} tiles)")
        total = planned["tiles"]
        bands = job.plan.tiles.bands
        done = sum(len(bands[b]) for b in planned["done"])
        todo = [b for b in range(planned["bands"]) if b not in planned["done"]]
        if done:
            logger.info("resuming: %d of %d tiles already on the scratch canvas", done, total)
        update_progress_artifact(progress_id, 100.0 * done / total)
        t = time.perf_counter()
        # a slot of the global concurrency limit (if an operator created it) serialises
        # GPU work across deployments; without the limit this is a no-op
        with concurrency(GPU_LIMIT, occupy=1, strict=False):
            for future in as_completed(render_band.map(key, todo)):
                done += future.result()["tiles"]
                update_progress_artifact(progress_id, 100.0 * done / total)
        job.timings["render"] = time.perf_counter() - t
        for name, stage in (("export", export_task), ("proof", proof_task),
                            ("preflight", preflight_task), ("upload", upload_task)):
            t = time.perf_counter()
            result = stage(key)
            job.timings[name] = time.perf_counter() - t
            if name == "export":
                export = result
            elif name == "upload":
                outputs = result
        job.timings["total"] = time.perf_counter() - started
        summary = _report(job, export, outputs, akey)
        logger.info("done: %s", ", ".join(o["uri"] for o in outputs))
        return summary
    except BaseException:
        with _JOBS_LOCK:
            job = _JOBS.get(key)
        if job is not None:
            for path in job.written:  # a failed run leaves no output behind
                path.unlink(missing_ok=True)
        raise
    finally:
        with _JOBS_LOCK:
            job = _JOBS.pop(key, None)
        if job is not None:
            job.canvas.close(remove=True)


def _link(uri: str) -> str:
    return presigned_url(uri) if is_s3(uri) else Path(uri).absolute().as_uri()


def _report(job: _Job, export: dict, outputs: list[dict], akey: str) -> dict[str, Any]:
    plan = job.plan
    g, c = plan.geometry, plan.colour
    config = plan.checkpoint.generator.config
    t = job.timings
    mpx = g.megapixels
    tiff = next(o for o in outputs if o["name"] == plan.outputs.tiff.name)
    stages = " | ".join(f"{k} {v:.1f} s" for k, v in t.items())
    lines = [
        f"# {plan.spec.name}",
        "",
        f"{plan.spec.description}" if plan.spec.description else "",
        "",
        "| | |",
        "|---|---|",
        f"| spec digest | `{plan.spec_digest[:16]}` |",
        f"| model | {plan.spec.model} ({config.arch}/{config.upsample}, depth {config.depth}, "
        f"digest `{plan.checkpoint.digest[:12]}`) |",
        f"| seed | {plan.spec.seed} |",
        f"| print | {g.trim_mm[0]:.1f} x {g.trim_mm[1]:.1f} mm + {g.bleed_mm:.2f} mm bleed "
        f"at {g.dpi:g} dpi |",
        f"| pixels | {g.width_px} x {g.height_px} ({mpx:.1f} Mpx), trim box {list(g.trim_box)} |",
        f"| texture | {plan.texture.summary} |",
        *([f"| repeat | {plan.repeat.describe()} |"] if plan.repeat else []),
        f"| colour | {c.color.upper()} {c.bits}-bit, {c.description}, {c.intent}"
        + (f", TAC max {export['tac_max']:.1f}% (limit {plan.spec.print.tac_limit:g}%)"
           if export["tac_max"] is not None else "") + " |",
        f"| TIFF | {plan.tiff.compression} {plan.tiff.layout}, "
        f"{'BigTIFF' if export['bigtiff'] else 'classic'} ({plan.bigtiff_reason}) |",
        f"| device | {plan.device} {plan.spec.render.precision}, {len(plan.tiles.tiles)} tiles |",
        f"| timings | {stages} |",
        f"| throughput | {mpx / t['total']:.2f} Mpx/s end to end, "
        f"{mpx / max(t.get('render', 0), 1e-9):.2f} Mpx/s render |",
        "| preflight | passed |",
        f"| output | {tiff['uri']} |",
        f"| texprod | {__version__} |",
    ]
    create_markdown_artifact("\n".join(lines), key=f"{akey}-report",
                             description=f"print job report: {plan.spec.name}")
    create_table_artifact(
        [{"file": o["name"], "location": o["uri"], "MB": round(o["bytes"] / 1e6, 2),
          "sha256": o["sha256"]} for o in outputs],
        key=f"{akey}-outputs", description="outputs with sizes and checksums")
    for o in outputs:
        kind = "proof" if o["name"].endswith(".proof.jpg") else \
            "thumbnail" if o["name"].endswith(".thumb.jpg") else \
            "repeat-preview" if o["name"].endswith(".repeat.jpg") else "print"
        create_link_artifact(_link(o["uri"]), link_text=f"{kind}: {o['name']}",
                             key=f"{akey}-{kind}", description=f"{kind} of {plan.spec.name}")
    return {"spec_digest": plan.spec_digest, "outputs": outputs, "timings": t,
            "megapixels": mpx, "tac_max": export["tac_max"]}
