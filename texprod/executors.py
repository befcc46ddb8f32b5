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

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from texprod.errors import ConfigError, JobFailure, TexprodError
from texprod.noise import NoiseField
from texprod.render import Renderer
from texprod.stripes import StripeResult, TileDone, work_stripe

DASK_ADDRESS_ENV = "TEXPROD_DASK_ADDRESS"
GPU_WORKER_THREADS = 4  # per GPU worker: one renders on the device, the rest encode

OnResult = Callable[[StripeResult], None]


@dataclass(frozen=True)
class StripeJob:
    """What a worker needs to rebuild a job's plan: small, picklable, the same for all."""

    spec: dict  # the JobSpec as JSON, tile size and batch fixed by the driver
    spec_dir: str | None  # where the spec's relative paths resolve
    spec_digest: str  # the driver's: a worker's plan must agree, or it renders another job

    @classmethod
    def of(cls, plan, spec_dir: Path | None) -> StripeJob:
        spec = plan.spec.model_dump(mode="json")
        spec["render"].update(tile_px=plan.tile_px, batch=plan.batch, cluster=None)
        return cls(spec, str(spec_dir) if spec_dir else None, plan.spec_digest)


@dataclass
class _Prepared:
    """A job made ready in this process: its plan, noise field and prepared generator."""

    plan: object  # JobPlan
    field: NoiseField
    renderer: Renderer | None
    render_lock: threading.Lock | contextlib.nullcontext


_prepared: dict[str, _Prepared] = {}  # by spec digest; the last few jobs of this process
_prepared_lock = threading.Lock()
KEEP_PREPARED = 2


def prepare(plan) -> _Prepared:
    """Make `plan` ready to work stripes in this process (once per job and process)."""
    with _prepared_lock:
        ready = _prepared.get(plan.spec_digest)
        if ready is None:
            from texprod.job import make_renderer, noise_field

            renderer = make_renderer(plan) if plan.tile_px != 0 else None
            # one stripe at a time on a GPU (memory); CPU stripes render side by side
            lock = threading.Lock() if plan.device.startswith("cuda") \
                else contextlib.nullcontext()
            ready = _Prepared(plan, noise_field(plan), renderer, lock)
            _prepared[plan.spec_digest] = ready
            while len(_prepared) > KEEP_PREPARED:
                _prepared.pop(next(iter(_prepared)))
        return ready


def _prepared_for(job: StripeJob) -> _Prepared:
    with _prepared_lock:
        ready = _prepared.get(job.spec_digest)
    if ready is not None:
        return ready
    from texprod.job import plan_job
    from texprod.spec import parse_spec

    where = _worker_name()
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
    return prepare(plan)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address} ({socket.gethostname()}, pid {os.getpid()})"
    except (ImportError, ValueError):
        return f"{socket.gethostname()} (pid {os.getpid()})"


def run_stripe(job: StripeJob, index: int, on_tile: TileDone | None = None) -> StripeResult:
    """Work stripe `index` of `job` here: the body of every thread, Dask or Prefect task."""
    ready = _prepared_for(job)
    result = work_stripe(ready.plan, ready.plan.stripes[index], ready.field, ready.renderer,
                         on_tile, ready.render_lock)
    result.worker = _worker_name()
    return result


# ------------------------------------------------------------------------------ executors


class ThreadStripes:
    """Stripes on threads of this process; at most `threads` (plus one waiting) in memory."""

    kind = "in-process"
    dashboard = None

    def __init__(self, threads: int):
        self.threads = threads

    def describe(self) -> str:
        return f"in-process, {self.threads} thread(s)"

    def run(self, job: StripeJob, indices: list[int], on_result: OnResult,
            on_tile: TileDone | None = None) -> None:
        from texprod import stop

        todo = iter(indices)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="stripe") as pool:
            pending = set()
            try:
                while True:
                    while len(pending) <= self.threads:
                        index = next(todo, None)
                        if index is None:
                            break
                        pending.add(pool.submit(run_stripe, job, index, on_tile))
                    if not pending:
                        return
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        on_result(future.result())
                    stop.check()
            finally:
                for future in pending:
                    future.cancel()


class DaskStripes:
    """Stripes as tasks of a Dask cluster; results are taken (and released) as they come."""

    kind = "dask"

    def __init__(self, client, description: str):
        self.client = client
        self.description = description
        self.dashboard = client.dashboard_link

    def describe(self) -> str:
        workers = self.client.scheduler_info().get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        return f"{self.description}: {len(workers)} worker(s), {threads} thread(s)"

    def run(self, job: StripeJob, indices: list[int], on_result: OnResult,
            on_tile: TileDone | None = None) -> None:
        from distributed import as_completed

        from texprod import stop

        window = max(2, 2 * _cluster_threads(self.client))
        todo = iter(indices)

        def submit(index: int):
            # a key per job and stripe: a stripe lost with its worker is recomputed
            return self.client.submit(run_stripe, job, index, pure=False,
                                      key=f"stripe-{job.spec_digest[:16]}-{index:06d}")

        futures = [submit(i) for _, i in zip(range(window), todo, strict=False)]
        running = as_completed(futures)
        try:
            for future in running:
                try:
                    result = future.result()
                except TexprodError:
                    raise
                except Exception as e:  # noqa: BLE001 - e.g. KilledWorker after retries
                    raise JobFailure(f"stripe {future.key} failed on the Dask cluster: "
                                     f"{type(e).__name__}: {e}") from None
                future.release()
                on_result(result)
                index = next(todo, None)
                if index is not None:
                    running.add(submit(index))
                stop.check()
        finally:
            for future in running.futures:
                future.cancel()


def _cluster_threads(client) -> int:
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(w.get("nthreads", 1) for w in workers.values()))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cluster_address(render) -> str | None:
    """The scheduler a job joins: render.cluster's address, else TEXPROD_DASK_ADDRESS
    (only when render.cluster is null)."""
    if render.cluster and "://" in render.cluster:
        return render.cluster
    if render.cluster is None:
        return os.environ.get(DASK_ADDRESS_ENV) or None
    return None


def cluster_options(render) -> tuple[str, dict]:
    """("address"|"local"|"local-cuda"|"in-process", options) for render.cluster."""
    address = cluster_address(render)
    if address:
        return "address", {"address": address}
    if render.cluster == "local":
        workers = available_cores() if render.workers == "auto" else render.workers
        threads = 1 if render.threads == "auto" else render.threads
        return "local", {"n_workers": workers, "threads_per_worker": threads,
                         "processes": True, "dashboard_address": ":0"}
    if render.cluster == "local-cuda":
        threads = GPU_WORKER_THREADS if render.threads == "auto" else render.threads
        return "local-cuda", {"threads_per_worker": threads, "dashboard_address": ":0"}
    threads = available_cores() if render.threads == "auto" else render.threads
    return "in-process", {"threads": threads}


def cluster_class(kind: str):
    """The Dask cluster class of a kind, with a clear error when it is not installed."""
    if kind == "local":
        from distributed import LocalCluster

        return LocalCluster
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ConfigError("render.cluster: got 'local-cuda', but dask-cuda is not installed "
                          "here (pip install 'texprod[cuda]' on a CUDA machine)") from None
    return LocalCUDACluster


@contextlib.contextmanager
def stripe_executor(render) -> Iterator[ThreadStripes | DaskStripes]:
    """The executor render.cluster asks for, for the length of one job."""
    kind, options = cluster_options(render)
    if kind == "in-process":
        yield ThreadStripes(options["threads"])
        return
    from distributed import Client

    if kind == "address":
        try:
            client = Client(options["address"], timeout="20s")
        except OSError as e:
            raise ConfigError(f"render.cluster: cannot reach the Dask scheduler at "
                              f"{options['address']}: {e}") from None
        with client:
            yield DaskStripes(client, f"Dask cluster at {options['address']}")
        return
    with cluster_class(kind)(**options) as cluster, Client(cluster) as client:
        yield DaskStripes(client, f"{kind} Dask cluster")
