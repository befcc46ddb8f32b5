"""Who works the stripes of a job: threads of this process, or a Dask cluster.

`render.cluster` chooses: null runs them on `render.threads` threads here (unless
TEXPROD_DASK_ADDRESS names a Dask scheduler); `local` starts a `distributed.LocalCluster`
of `render.workers` processes for the job; `local-cuda` a `dask_cuda.LocalCUDACluster`
(one worker per visible GPU); `tcp://HOST:PORT` joins a running cluster. Dask schedules,
retries and moves the work; texprod only submits one task per stripe and takes the
results as they come. A task carries the spec (as JSON), never the model or pixels: each
worker process builds the job's plan once (the model from its digest-keyed cache) and
returns encoded chunks, which travel worker -> driver.

What the workers must reach: the model (an s3:// or NAME@VERSION reference, or a path
all hosts share), the input files the spec names (paint mask, ICC profile) at the same
paths, and S3 when the model lives there. Nothing else is shared: no disk, no scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from texprod.engine.devices import indexed
from texprod.engine.noise import NoiseField
from texprod.engine.render import Renderer
from texprod.errors import ConfigError, JobFailure, TexprodError
from texprod.job import stop
from texprod.job.cluster import cluster_class, cluster_options
from texprod.job.memory import MemoryNeed, check_worker_memory, stripe_bytes
from texprod.job.plan import JobPlan, make_renderer, noise_field, plan_job
from texprod.job.spec import parse_spec
from texprod.job.stripes import StripeResult, work_stripe
from texprod.press.colour_lut import ColourLUT, colour_lut

OnResult = Callable[[StripeResult], None]


@dataclass(frozen=True)
class StripeJob:
    """What a worker needs to rebuild a job's plan: small, picklable, the same for all."""

    spec: dict  # the JobSpec as JSON, tile size and batch fixed by the driver
    spec_dir: str | None  # where the spec's relative paths resolve
    spec_digest: str  # the driver's: a worker's plan must agree, or it renders another job
    stripe_bytes: tuple[int, int]  # the driver's measure (memory.stripe_bytes), used as is

    @classmethod
    def of(cls, plan: JobPlan, spec_dir: Path | None) -> StripeJob:
        return cls(_worker_spec(plan), str(spec_dir) if spec_dir else None, plan.spec_digest,
                   stripe_bytes(plan))

    @property
    def key(self) -> str:
        return _job_key(self.spec, self.spec_digest)


def _worker_spec(plan: JobPlan) -> dict:
    """The plan's spec as JSON, with the tiling the driver chose and no cluster."""
    spec = plan.spec.model_dump(mode="json")
    spec["render"].update(tile_px=plan.tile_px, batch=plan.batch, cluster=None)
    return spec


def _job_key(spec: dict, spec_digest: str) -> str:
    """What a prepared job is kept under: the digest (the image) and every setting that
    changes a stripe's work but not the image (plates as channels or files, the colour
    engine, the device): two jobs alike in the one but not the other are two jobs."""
    text = json.dumps([spec, spec_digest], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Prepared:
    """A job made ready in this process: its plan, noise field and prepared generator."""

    plan: JobPlan
    field: NoiseField
    renderer: Renderer
    render_lock: threading.Lock | contextlib.nullcontext
    lut: ColourLUT | None  # the colour table, on the LUT colour engine
    on_tile: Callable[[int], None] | None = None  # (stripe index): the driver's progress


_prepared: dict[str, _Prepared] = {}  # by StripeJob.key; the last few jobs of this process
_prepared_lock = threading.Lock()
KEEP_PREPARED = 2
_device_locks: dict[int, threading.Lock] = {}  # by CUDA device index


def _device_lock(device: torch.device) -> threading.Lock | contextlib.nullcontext:
    """The render lock of `device`. One stripe at a time on a GPU, whichever job it belongs
    to: the device's memory is planned for one stripe, and cuDNN's switches (TF32, ...)
    are process-wide, set by each renderer as it starts a stripe. CPU stripes render side
    by side."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return _device_locks.setdefault(indexed(device).index, threading.Lock())


def prepare(plan: JobPlan) -> _Prepared:
    """Make `plan` ready to work stripes in this process (once per job and process)."""
    with _prepared_lock:
        key = _job_key(_worker_spec(plan), plan.spec_digest)
        ready = _prepared.get(key)
        if ready is None:
            renderer = make_renderer(plan)
            lut = colour_lut(plan.colour) if plan.colour_engine == "lut" else None
            ready = _Prepared(plan, noise_field(plan), renderer,
                              _device_lock(renderer.device), lut)
            _prepared[key] = ready
            while len(_prepared) > KEEP_PREPARED:
                _prepared.pop(next(iter(_prepared)))
        return ready


def _prepared_for(job: StripeJob) -> _Prepared:
    with _prepared_lock:
        ready = _prepared.get(job.key)
    if ready is not None:
        return ready
    plan, _ = _checked_plan(job, _dask_worker())
    return prepare(plan)


def _checked_plan(job: StripeJob, worker) -> tuple[JobPlan, MemoryNeed | None]:
    """The job's plan built here from its spec, checked to be the driver's image and, on a
    Dask `worker`, to fit the worker's memory (the driver cannot see it); what the stripes
    need there."""
    where = _worker_name(worker)
    try:
        plan = plan_job(parse_spec(job.spec, "spec"),
                        Path(job.spec_dir) if job.spec_dir else None)
    except Exception as e:  # noqa: BLE001 - named and re-raised for the driver
        raise JobFailure(f"worker {where} cannot prepare the job (model "
                         f"{job.spec['model']}): {type(e).__name__}: {e}") from None
    if plan.spec_digest != job.spec_digest:
        raise JobFailure(f"worker {where} resolved model {job.spec['model']} to other "
                         f"content (spec digest {plan.spec_digest[:12]}, the driver's "
                         f"{job.spec_digest[:12]}): give every host the same model")
    if worker is None:
        return plan, None
    plan.stripe_bytes = job.stripe_bytes  # the same image: the same shapes
    return plan, check_worker_memory(plan, worker.address, worker.state.nthreads,
                                     worker.memory_manager.memory_limit)


def _dask_worker():
    """The Dask worker running this code, or None (a thread of the driver)."""
    try:
        from distributed import get_worker  # lazy: see stripe_executor

        return get_worker()
    except (ImportError, ValueError):
        return None


def _worker_name(worker=None) -> str:
    host, pid, worker = socket.gethostname(), os.getpid(), worker or _dask_worker()
    return f"{worker.address} ({host}, pid {pid})" if worker else f"{host} (pid {pid})"


def run_stripe(job: StripeJob, index: int) -> StripeResult:
    """Work stripe `index` of `job` here: the body of every thread, Dask or Prefect task.
    In the driver's own process each tile is reported to it as it finishes."""
    ready = _prepared_for(job)
    report = ready.on_tile
    result = work_stripe(ready.plan, ready.plan.stripes[index], ready.field, ready.renderer,
                         (lambda: report(index)) if report else None, ready.render_lock,
                         ready.lut)
    result.worker = _worker_name()
    return result


# ------------------------------------------------------------------------------ executors


def drain(submit: Callable[[int], Any], indices: list[int], window: int,
          on_result: OnResult) -> None:
    """Submit stripes, at most `window` outstanding, and hand each result to `on_result`
    in this thread as it completes (any order). `submit(index)` returns a future with
    `add_done_callback` and `result()`: a concurrent, Dask or Prefect future. A result is
    dropped as soon as it is handed on, so memory holds at most `window` stripes."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    todo = iter(indices)
    outstanding: set = set()

    def start_next() -> None:
        index = next(todo, None)
        if index is not None:
            future = submit(index)
            outstanding.add(future)
            future.add_done_callback(finished.put)

    try:
        for _ in range(max(1, window)):
            start_next()
        while outstanding:
            try:
                future = finished.get(timeout=0.5)
            except queue.Empty:
                stop.check()
                continue
            outstanding.discard(future)
            on_result(_result(future))
            del future
            start_next()
            stop.check()
    finally:
        for future in outstanding:
            getattr(future, "wrapped_future", future).cancel()


def _result(future) -> StripeResult:
    try:
        return future.result()
    except TexprodError:
        raise
    except Exception as e:
        if type(e).__module__.startswith("distributed"):  # e.g. KilledWorker after retries
            raise JobFailure(f"a stripe failed on the Dask cluster: {type(e).__name__}: "
                             f"{e}") from None
        raise


class ThreadStripes:
    """Stripes on threads of this process; at most `threads` (plus one waiting) in memory."""

    dashboard = None

    def __init__(self, threads: int):
        self.threads = threads

    def describe(self) -> str:
        return f"in-process, {self.threads} thread(s)"

    def run(self, job: StripeJob, indices: list[int], on_result: OnResult) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="stripe") as pool:
            drain(lambda i: pool.submit(run_stripe, job, i), indices, self.threads + 1,
                  on_result)


class DaskStripes:
    """Stripes as tasks of a Dask cluster; results are taken (and released) as they come."""

    def __init__(self, client, description: str):
        self.client = client
        self.description = description
        self.dashboard = client.dashboard_link

    def describe(self) -> str:
        return f"{self.description}: {describe_workers(self.client)}"

    def run(self, job: StripeJob, indices: list[int], on_result: OnResult) -> None:
        # a key per job and stripe: a stripe lost with its worker is recomputed by Dask
        drain(lambda i: self.client.submit(run_stripe, job, i, pure=False,
                                           key=f"stripe-{job.spec_digest[:16]}-{i:06d}"),
              indices, 2 * cluster_threads(self.client), on_result)


def cluster_threads(client) -> int:
    """Threads of all the workers of a Dask client's cluster (at least 1)."""
    workers = client.scheduler_info().get("workers", {}).values()
    return max(1, sum(w.get("nthreads", 1) for w in workers))


def describe_workers(client) -> str:
    workers = client.scheduler_info().get("workers", {})
    if not workers:  # e.g. an adaptive cluster scaled to zero: Dask holds the tasks
        return "no worker has joined yet: the stripes wait until one does"
    return f"{len(workers)} worker(s), {cluster_threads(client)} thread(s)"


@dataclass(frozen=True)
class WorkerReport:
    """What one worker of a cluster elsewhere found when it checked a job (dry run)."""

    address: str
    host: str
    threads: int
    device: str  # "cpu", "cuda (NVIDIA H100 80GB HBM3)"
    memory: MemoryNeed

    def describe(self) -> str:
        return (f"{self.address} on {self.host}, {self.device}, {self.threads} thread(s): "
                f"{self.memory.describe()}")


def check_cluster(plan: JobPlan, spec_dir: Path | None) -> list[WorkerReport] | None:
    """For a dry run on a cluster elsewhere (a tcp:// render.cluster or
    TEXPROD_DASK_ADDRESS): every worker builds the job's plan and checks its memory, as it
    would before its first stripe, so a worker that cannot load the model or hold the
    stripes is found now rather than minutes into the job. The first refusal is raised as
    the job would raise it. None for the other executors, which the driver checks itself."""
    kind, options = cluster_options(plan.spec.render)
    if kind != "address":
        return None
    with _connect(options["address"]) as client:
        found = client.run(_report_here, StripeJob.of(plan, spec_dir), on_error="return")
    for address in sorted(found):  # {worker address: WorkerReport | the exception it raised}
        if isinstance(found[address], TexprodError):
            raise found[address]
        if isinstance(found[address], BaseException):
            raise JobFailure(f"worker {address} cannot check the job: "
                             f"{type(found[address]).__name__}: {found[address]}")
    return [found[address] for address in sorted(found)]


async def _report_here(job: StripeJob, dask_worker) -> WorkerReport:
    """Run by `Client.run` on each worker; off its event loop, since building the plan may
    download the model."""
    return await asyncio.to_thread(_report, job, dask_worker)


def _report(job: StripeJob, worker) -> WorkerReport:
    plan, need = _checked_plan(job, worker)
    device = plan.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return WorkerReport(worker.address, socket.gethostname(), worker.state.nthreads, device,
                        need)


def _connect(address: str):
    """A Dask client of the scheduler at `address`, or a ConfigError saying it is not there."""
    from distributed import Client  # lazy: see stripe_executor

    try:  # waits Dask's `distributed.comm.timeouts.connect` (30 s unless configured)
        return Client(address)
    except OSError as e:
        raise ConfigError(f"render.cluster: cannot reach the Dask scheduler at {address}: "
                          f"{e}") from None


@contextlib.contextmanager
def stripe_executor(render) -> Iterator[ThreadStripes | DaskStripes]:
    """The executor render.cluster asks for, for the length of one job."""
    kind, options = cluster_options(render)
    if kind == "in-process":
        yield ThreadStripes(options["threads"])
        return
    # lazy: importing distributed costs ~0.35 s (measured here), which only cluster jobs
    # should pay; in-process jobs never load it
    from distributed import Client

    if kind == "address":
        with _connect(options["address"]) as client:
            yield DaskStripes(client, f"Dask cluster at {options['address']}")
        return
    with cluster_class(kind)(**options) as cluster, Client(cluster) as client:
        yield DaskStripes(client, f"{kind} Dask cluster")
