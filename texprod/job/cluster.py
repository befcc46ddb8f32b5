"""What `render.cluster` (with `render.workers`, `render.threads` and TEXPROD_DASK_ADDRESS)
asks for: who works a job's stripes and how many at once, in settings, before anything is
started. `texprod.job.executors` starts them; `texprod.job.memory` counts what they hold.
"""

from __future__ import annotations

import os

from texprod.errors import ConfigError
from texprod.host import available_cores

DASK_ADDRESS_ENV = "TEXPROD_DASK_ADDRESS"
GPU_WORKER_THREADS = 4  # per GPU worker: one renders on the device, the rest encode


def describe_cluster(render) -> str:
    """Who render.cluster says works the stripes, before anything is started (dry run)."""
    kind, options = cluster_options(render)
    if kind == "in-process":
        return f"in-process on {options['threads']} thread(s)"
    if kind == "address":
        return f"on the Dask cluster at {options['address']}"
    if kind == "local":
        return (f"on a local Dask cluster of {options['n_workers']} worker(s) x "
                f"{options['threads_per_worker']} thread(s)")
    return "on a local Dask cluster of one worker per GPU"


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
        from distributed import LocalCluster  # lazy: ~0.35 s, for cluster jobs only

        return LocalCluster
    try:  # lazy: an optional dependency (texprod[cuda])
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ConfigError("render.cluster: got 'local-cuda', but dask-cuda is not installed "
                          "here (pip install 'texprod[cuda]' on a CUDA machine)") from None
    return LocalCUDACluster
