"""The production print job as a Prefect flow: `texprod.job.pipeline.run_job`, its stages
as tasks.

    fetch-model, plan (retry on I/O) -> render-stripe x N (holding a GPU slot)
    -> export -> proof -> preflight -> upload (retries on I/O) -> report

Each stripe is rendered, colour-converted and encoded by a `render-stripe` task on the
task runner `render.cluster` asks for: Prefect's thread pool in this process, or
prefect-dask's DaskTaskRunner on a LocalCluster, a LocalCUDACluster or a running Dask
scheduler. The Dask dashboard link is in the report.

The flow runs the library's one orchestration of the job and passes a stage runner that
turns each stage into a task, so the CLI, tests, benchmarks and production run the same
steps. Tasks return paths and small records, never pixels. Operators see, in the run's
Artifacts tab: a progress bar that moves as tiles finish, the job report (with the
thumbnail), the proof image inline, and the outputs with their sizes and checksums. A
failed run is renamed `...-FAILED`; an expected error (a `TexprodError`: bad spec, missing
model, credentials, ink over the limit) ends it with one ERROR line naming the cause and no
traceback (`flows/logs.py`); a bug keeps its traceback.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips
from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.urls import url_for

from flows.logs import quiet_expected_errors
from texprod import __version__
from texprod.job.cluster import cluster_class, cluster_options
from texprod.job.executors import (
    StripeJob,
    cluster_threads,
    describe_workers,
    drain,
    run_stripe,
)
from texprod.job.pipeline import JobResult, describe_stripe_work, run_job
from texprod.job.plan import JobPlan
from texprod.job.spec import JobSpec, load_spec, parse_spec, resolve_spec_path
from texprod.job.stripes import StripeResult
from texprod.storage import is_s3, presigned_url

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
    """Tiles rendered so far, as run_job reports them: the run's progress artifact (made
    at the first report; rounded to 0.1 %, updated at most every PROGRESS_SECONDS and at
    the end) and this process's listeners (every tile)."""

    def __init__(self, akey: str, name: str) -> None:
        self.akey, self.name = akey, name
        self.megapixels = 0.0  # set when the plan is known
        self.artifact_id = None
        self._sent, self._last = -1.0, 0.0
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            for listener in progress_listeners:
                listener(done, total, self.megapixels)
            percent = round(100.0 * done / total, 1)
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    percent, key=f"{self.akey}-progress",
                    description=f"{self.name}: % of {total} tiles rendered")
                self._sent, self._last = percent, time.monotonic()
                return
            now = time.monotonic()
            if percent != self._sent and (done == total or now - self._last >= PROGRESS_SECONDS):
                update_progress_artifact(self.artifact_id, percent)
                self._sent, self._last = percent, now


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


# the run name's parse of the spec, by flow run id, for the flow body: parsed once a run
_PARSED: dict[Any, tuple[JobSpec, Path | None]] = {}


def _run_name() -> str:
    run = FlowRunContext.get().flow_run
    params = run.parameters
    try:
        parsed = _spec_of(params["spec"], params.get("overrides") or [])
    except Exception:  # noqa: BLE001 - an invalid spec fails in the flow, with its message
        return "invalid-spec"
    _PARSED[run.id] = parsed
    return f"{parsed[0].name}-seed{parsed[0].seed}"


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "job"


# ---------------------------------------------------------------------------------- flow


class _Stages:
    """run_job's stage runner: each stage a task; I/O stages retry; render holds a GPU slot."""

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress

    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        if name == "render":  # all bands: a slot of the global limit serialises GPU work
            # across deployments (`make deploy` creates it; without it this is a no-op)
            with concurrency(GPU_LIMIT, occupy=1, strict=False):
                return work()
        options = {}
        if name in ("fetch-model", "plan", "upload"):  # plan fetches a mask on S3
            options = {"retries": IO_RETRIES, "retry_delay_seconds": IO_RETRY_DELAYS,
                       "retry_condition_fn": _retry_on_io}
        result = task(name=name, **options)(work)()
        if name == "plan":
            g = result.geometry
            self.progress.megapixels = g.megapixels
            get_run_logger().info("%s: %d x %d px, %d tiles in %d stripes on %s",
                                  result.spec.name, g.width_px, g.height_px,
                                  result.tile_count, len(result.stripes), result.device)
        return result


@task(name="render-stripe", cache_policy=NO_CACHE)
def render_stripe(job: StripeJob, index: int) -> StripeResult:
    """One stripe rendered, converted and encoded, wherever the task runner puts it; it
    returns encoded chunks (idempotent: Dask may run it again when a worker dies)."""
    return run_stripe(job, index)


class _PrefectStripes:
    """run_job's stripe executor in the flow: each stripe a `render-stripe` task on the
    task runner render.cluster asks for."""

    def __init__(self, render) -> None:
        self.cluster, self.options = cluster_options(render)
        self.dashboard: str | None = None
        self.workers = ""

    def task_runner(self):
        if self.cluster == "in-process":
            return ThreadPoolTaskRunner(max_workers=self.options["threads"])
        from prefect_dask import DaskTaskRunner  # lazy: ~1.1 s to import, cluster runs only

        if self.cluster == "address":
            return DaskTaskRunner(address=self.options["address"])
        kwargs = dict(self.options)
        if self.cluster == "local":  # its workers report task runs to this flow's API, a
            # throwaway one included: else each worker starts a throwaway server of its own
            with get_client(sync_client=True) as client:
                kwargs["env"] = {"PREFECT_API_URL": str(client.api_url)}
        return DaskTaskRunner(cluster_class=cluster_class(self.cluster), cluster_kwargs=kwargs)

    def run(self, job: StripeJob, indices: list[int], on_result) -> None:
        with self.task_runner() as runner:
            window = self.options.get("threads", 1) + 1
            if self.cluster != "in-process":
                self.dashboard = runner.client.dashboard_link
                self.workers = "Dask: " + describe_workers(runner.client)
                window = 2 * cluster_threads(runner.client)
                get_run_logger().info("stripes on %s (dashboard %s)", self.workers,
                                      self.dashboard)
            drain(lambda i: runner.submit(render_stripe, {"job": job, "index": i}), indices,
                  window, on_result)


def _rename_failed_run(flow, flow_run, state) -> None:
    """Failed and crashed runs carry -FAILED in their name, so the runs list tells them apart."""
    if not flow_run.name.endswith(FAILED_SUFFIX):
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=flow_run.name + FAILED_SUFFIX)


@flow(name="generate-texture", flow_run_name=_run_name,
      on_failure=[_rename_failed_run], on_crashed=[_rename_failed_run],
      description="Render a job spec into a checked, print-ready TIFF with proof.")
def generate_texture(spec: str | dict, overrides: list[str] | None = None) -> dict:
    """Run the print job a spec (path, name in specs/, or dict) describes."""
    parsed = _PARSED.pop(FlowRunContext.get().flow_run.id, None)
    # a spec error fails here, first (the run name could not parse it)
    job_spec, spec_dir = parsed or _spec_of(spec, overrides or [])
    akey = _artifact_key(job_spec.name)
    progress = _Progress(akey, job_spec.name)
    stripes = _PrefectStripes(job_spec.render)
    result = run_job(job_spec, spec_dir, progress=progress, stage=_Stages(progress),
                     executor=stripes)
    logger = get_run_logger()
    logger.info("preflight of %s:\n%s", result.tiff.path, result.report.table())
    summary = result.summary()
    summary["workers"] = stripes.workers or (
        "none (nothing rendered)" if result.uploaded_kept
        else f"in-process, {stripes.options['threads']} thread(s)")
    _report(result, summary, akey, stripes)
    summary["run_url"] = url_for(FlowRunContext.get().flow_run)  # the CLI shows it
    logger.info("done: %s", ", ".join(o["uri"] for o in summary["outputs"]))
    return summary


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


def _report(result: JobResult, summary: dict, akey: str, stripes: _PrefectStripes) -> None:
    """The run's artifacts: report (with thumbnail), inline proof, outputs table, links."""
    plan: JobPlan = result.plan
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
         + (f", TAC max {result.tac_max:.1f}% (limit {plan.spec.print.tac_limit:g}%)"
            if result.tac_max is not None else "")),
        ("TIFF", f"{plan.tiff.compression} {plan.tiff.layout}, "
                 f"{'BigTIFF' if result.tiff.bigtiff else 'classic'} ({plan.bigtiff_reason})"),
        *[("spot plate", line) for line in summary["plates"]],
        *([("region map", summary["region_map"])] if summary["region_map"] else []),
        *([("PDF/X-4", summary["pdf"])] if summary["pdf"] else []),
        ("file", f"{summary['file']}"),
        ("size", f"{summary['bytes'] / 1e6:.2f} MB ({summary['bytes']:,} bytes)"),
        ("sha256", f"`{summary['sha256']}`"),
        ("device", f"{plan.device} {plan.spec.render.precision}, {plan.tile_count} tiles in "
                   f"{len(plan.stripes)} stripes"),
        ("workers", summary["workers"]
                    + (f", [Dask dashboard]({stripes.dashboard})" if stripes.dashboard else "")),
        ("timings", stages),
        *([("stripe work", describe_stripe_work(summary["stripe_seconds"])
                           + " (summed over the stripes, which overlap)")]
          if summary["stripe_seconds"] else []),  # none when a resume found them all done
        ("throughput", f"{mpx / t['total']:.2f} Mpx/s end to end, "
                       f"{mpx / max(t.get('render', 0), 1e-9):.2f} Mpx/s render"
                       if "render" in t else "nothing rendered: uploaded the checked outputs "
                       f"an earlier run kept in {summary['uploaded_kept']}"),
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
