"""The production print job as a Prefect flow: thin tasks over `texprod.job`.

    fetch model (retries on I/O) -> plan -> render bands (mapped, one at a time per device)
    -> export -> proof -> preflight -> upload (retries on I/O) -> report

Tasks pass job keys, paths and digests, never pixels: the plan, the prepared generator and
the scratch canvas of a running job live in this process (`_JOBS`) for the flow's duration.
Operators see, in the run's Artifacts tab: a progress bar that moves as tiles finish, the
job report (with the thumbnail), the proof image inline, and the outputs with their sizes
and checksums. A failed run is renamed `...-FAILED`; an expected error (a `TexprodError`:
bad spec, missing model, credentials, ink over the limit) ends it with one ERROR line
naming the cause and no traceback (`flows/logs.py`); a bug keeps its traceback.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyvips
from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.urls import url_for

from flows.logs import quiet_expected_errors
from texprod import __version__
from texprod.canvas import ScratchCanvas
from texprod.job import (
    JobPlan,
    PreflightError,
    check_disk_space,
    export_job,
    job_lock,
    job_summary,
    make_renderer,
    open_canvas,
    output_records,
    plan_job,
    preflight_job,
    prepare_directories,
    proof_job,
    remove_staging,
    render_job,
    upload_job,
)
from texprod.joblock import JobLock, sweep_dead_temporaries
from texprod.preflight import InspectionReport
from texprod.render import Renderer
from texprod.spec import JobSpec, load_spec, parse_spec, resolve_spec_path
from texprod.storage import is_s3, presigned_url, resolve_model

# Bands render one at a time: one device per flow run. (Several GPUs: one worker per GPU.)
DEVICE_WORKERS = 1
# global concurrency limit held while rendering: `prefect gcl create texprod-gpu --limit N`
GPU_LIMIT = os.environ.get("TEXPROD_GPU_LIMIT", "texprod-gpu")
IO_RETRIES = 3
IO_RETRY_DELAYS = [2, 10, 30]
# the progress artifact moves per tile, but talks to the API at most this often
PROGRESS_SECONDS = float(os.environ.get("TEXPROD_PROGRESS_SECONDS", "1"))
INLINE_PROOF_PX = 1024  # local proofs are embedded in the artifact at this size
FAILED_SUFFIX = "-FAILED"

# Called with (tiles done, tiles total, megapixels) after every tile, in this process:
# `texprod generate` draws its terminal progress bar from it.
progress_listeners: list[Callable[[int, int, float], None]] = []

quiet_expected_errors()


class _Progress:
    """Tiles rendered so far: the run's progress artifact (rounded to 0.1 %, updated at
    most every PROGRESS_SECONDS and at the end) and this process's listeners (every tile)."""

    def __init__(self, total: int, megapixels: float, artifact_id) -> None:
        self.total, self.megapixels, self.artifact_id = total, megapixels, artifact_id
        self.done = 0
        self._sent = -1.0
        self._last = 0.0
        self._lock = threading.Lock()

    def set(self, done: int) -> None:
        with self._lock:
            self.done = done
            for listener in progress_listeners:
                listener(done, self.total, self.megapixels)
            percent = round(100.0 * done / self.total, 1)
            now = time.monotonic()
            if percent != self._sent and (done == self.total
                                          or now - self._last >= PROGRESS_SECONDS):
                update_progress_artifact(self.artifact_id, percent)
                self._sent, self._last = percent, now


@dataclass
class _Job:
    plan: JobPlan
    canvas: ScratchCanvas
    lock: JobLock
    renderer: Renderer | None = None
    progress: _Progress | None = None
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
    params = FlowRunContext.get().flow_run.parameters
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
    prepare_directories(plan)
    lock = job_lock(plan).acquire()  # another live job on the same name is refused here
    try:
        sweep_dead_temporaries(plan.outputs.tiff.parent)
        job = _Job(plan, open_canvas(plan), lock)
    except BaseException:
        lock.release()
        remove_staging(plan)
        raise
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
    base, start = job.progress.done, None

    def tile_done(done: int, total: int) -> None:
        nonlocal start
        if start is None:  # render_job's first call: its count before this band
            start = done
        else:
            job.progress.set(base + done - start)

    rendered = render_job(job.plan, job.canvas, bands=[band], renderer=job.renderer,
                          progress=tile_done)
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
def preflight_task(key: str) -> InspectionReport:
    job = _job(key)
    report = preflight_job(job.plan)
    get_run_logger().info("preflight of %s:\n%s", job.plan.outputs.tiff, report.table())
    if not report.ok:
        failed = ", ".join(f"{c.name} (found {c.found}, expected {c.expected})"
                           for c in report.checks if not c.ok)
        raise PreflightError(f"preflight failed for {job.plan.outputs.tiff}: {failed}")
    return report


@task(name="upload", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=_retry_on_io)
def upload_task(key: str) -> list[dict]:
    """Outputs with their final locations, sizes and sha256 (uploaded when on S3)."""
    job = _job(key)
    rows = output_records(job.plan)  # before upload: staged copies are removed after it
    uploaded = {u["uri"]: u for u in upload_job(job.plan)}
    for row in rows:
        row["etag"] = uploaded.get(row["uri"], {}).get("etag", "")
    return rows


# ----------------------------------------------------------------------------------- flow


def _rename_failed_run(flow, flow_run, state) -> None:
    """Failed and crashed runs carry -FAILED in their name, so the runs list tells them apart."""
    if not flow_run.name.endswith(FAILED_SUFFIX):
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=flow_run.name + FAILED_SUFFIX)


@flow(name="generate-texture", flow_run_name=_run_name,
      task_runner=ThreadPoolTaskRunner(max_workers=DEVICE_WORKERS),
      on_failure=[_rename_failed_run], on_crashed=[_rename_failed_run],
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
        total = planned["tiles"]
        progress_id = create_progress_artifact(
            0.0, key=f"{akey}-progress",
            description=f"{job_spec.name}: % of {total} tiles rendered")
        job.progress = _Progress(total, job.plan.geometry.megapixels, progress_id)
        bands = job.plan.tiles.bands
        done = sum(len(bands[b]) for b in planned["done"])
        todo = [b for b in range(planned["bands"]) if b not in planned["done"]]
        if done:
            logger.info("resuming: %d of %d tiles already on the scratch canvas", done, total)
        job.progress.set(done)
        t = time.perf_counter()
        # a slot of the global concurrency limit (`make deploy` creates it) serialises
        # GPU work across deployments; without the limit this is a no-op
        with concurrency(GPU_LIMIT, occupy=1, strict=False):
            for future in as_completed(render_band.map(key, todo)):
                future.result()  # the last tile set the progress to 100
        job.timings["render"] = time.perf_counter() - t
        results = {}
        for name, stage in (("export", export_task), ("proof", proof_task),
                            ("preflight", preflight_task), ("upload", upload_task)):
            t = time.perf_counter()
            results[name] = stage(key)
            job.timings[name] = time.perf_counter() - t
        job.timings["total"] = time.perf_counter() - started
        summary = job_summary(job.plan, results["upload"], job.timings,
                              results["export"]["tac_max"], results["preflight"])
        _report(job, summary, results["export"], akey)
        summary["run_url"] = url_for(FlowRunContext.get().flow_run)  # the CLI shows it
        logger.info("done: %s", ", ".join(o["uri"] for o in summary["outputs"]))
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
            job.lock.release()
            remove_staging(job.plan)


# --------------------------------------------------------------------------------- report


def _cell(text: object) -> str:
    """A markdown table cell: a bare | would end the cell early."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _image_url(uri: str, local_max_px: int) -> str:
    """A URL the operator's browser can load from the dashboard: a presigned URL for S3,
    else the image itself as a data: URL (a browser cannot open the worker's file://),
    shrunk to `local_max_px` to keep the artifact small."""
    if is_s3(uri):
        return presigned_url(uri)
    image = pyvips.Image.thumbnail(uri, local_max_px)
    data = image.jpegsave_buffer(Q=85, optimize_coding=True, strip=True)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _link(uri: str) -> str:
    return presigned_url(uri) if is_s3(uri) else Path(uri).absolute().as_uri()


def _report(job: _Job, summary: dict, export: dict, akey: str) -> None:
    """The run's artifacts: report (with thumbnail), inline proof, outputs table, links."""
    plan = job.plan
    g = plan.geometry
    config = plan.checkpoint.generator.config
    t = summary["timings"]
    mpx = g.megapixels
    stages = " · ".join(f"{k} {v:.1f} s" for k, v in t.items())
    thumb = summary["thumbnail"]
    rows = [
        ("spec digest", f"`{plan.spec_digest[:16]}`"),
        ("model", f"{plan.spec.model} ({config.arch}/{config.upsample}, depth {config.depth}, "
                  f"digest `{plan.checkpoint.digest[:12]}`)"),
        ("seed", plan.spec.seed),
        ("print", f"{g.trim_mm[0]:.1f} x {g.trim_mm[1]:.1f} mm + {summary['bleed_mm']:g} mm "
                  f"bleed ({g.bleed_px} px; spec {plan.spec.print.bleed_mm:g} mm) at "
                  f"{g.dpi:g} dpi"),
        ("pixels", f"{g.width_px} x {g.height_px} ({mpx:.1f} Mpx), trim box "
                   f"{list(g.trim_box)}"),
        ("texture", plan.texture.summary),
        *([("repeat", plan.repeat.describe())] if plan.repeat else []),
        ("colour", summary["colour"]
         + (f", TAC max {export['tac_max']:.1f}% (limit {plan.spec.print.tac_limit:g}%)"
            if export["tac_max"] is not None else "")),
        ("TIFF", f"{plan.tiff.compression} {plan.tiff.layout}, "
                 f"{'BigTIFF' if export['bigtiff'] else 'classic'} ({plan.bigtiff_reason})"),
        ("file", f"{summary['file']}"),
        ("size", f"{summary['bytes'] / 1e6:.2f} MB ({summary['bytes']:,} bytes)"),
        ("sha256", f"`{summary['sha256']}`"),
        ("device", f"{plan.device} {plan.spec.render.precision}, {len(plan.tiles.tiles)} tiles"),
        ("timings", stages),
        ("throughput", f"{mpx / t['total']:.2f} Mpx/s end to end, "
                       f"{mpx / max(t.get('render', 0), 1e-9):.2f} Mpx/s render"),
        ("preflight", f"passed ({summary['preflight']['checks']} checks)"),
        ("texprod", __version__),
    ]
    lines = [f"# {plan.spec.name}", ""]
    if plan.spec.description:
        lines += [plan.spec.description, ""]
    if thumb:
        lines += [f"![thumbnail of {plan.spec.name}]({_image_url(thumb, 256)})", ""]
    lines += ["| | |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in rows)]
    create_markdown_artifact("\n".join(lines), key=f"{akey}-report",
                             description=f"print job report: {plan.spec.name}")
    create_table_artifact(
        [{"file": o["name"], "location": o["uri"], "MB": round(o["bytes"] / 1e6, 2),
          "sha256": o["sha256"]} for o in summary["outputs"]],
        key=f"{akey}-outputs", description="outputs with sizes and checksums")
    for kind, uri in (("proof", summary["proof"]), ("repeat-preview", summary["repeat_preview"])):
        if uri:  # the image itself, inline in the Artifacts tab
            name = uri.rsplit("/", 1)[-1]
            create_markdown_artifact(
                f"# {kind}: {plan.spec.name}\n\n![{kind} of {name}]"
                f"({_image_url(uri, INLINE_PROOF_PX)})\n\n[{name}]({_link(uri)})",
                key=f"{akey}-{kind}", description=f"{kind} of {plan.spec.name} ({name})")
    for kind, uri in (("print", summary["file"]), ("thumbnail", thumb)):
        if uri:
            create_link_artifact(_link(uri), link_text=f"{kind}: {uri.rsplit('/', 1)[-1]}",
                                 key=f"{akey}-{kind}", description=f"{kind} of {plan.spec.name}")
