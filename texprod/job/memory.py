"""The memory a job's stripes hold at once, checked against the machine before rendering.

A tiling (or a one-pass render) too big for the device used to be found out by the
kernel's OOM killer on the CPU, which ends the process without a word, or by CUDA
midway through a job. Now the plan's figures are compared with the device's memory first:
more than it has is refused with the figures and what to change; more than is free now is
a warning. A Dask worker checks the same against its own memory limit (or GPU) before its
first stripe of a job, where the driver cannot see the devices. The figures are lower
bounds (`texprod.engine.memory`): the convolution libraries add their buffers on top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from texprod import host
from texprod.engine.memory import render_bytes
from texprod.engine.render import Renderer
from texprod.errors import RenderError
from texprod.job.cluster import cluster_options
from texprod.job.plan import JobPlan

log = logging.getLogger(__name__)
GiB = 2**30


@dataclass(frozen=True)
class MemoryNeed:
    device: str  # "cpu", "cuda", "cuda:1"
    maps: int  # bytes: the network's tensors at the peak of one batch
    pixels: int  # bytes: a stripe's rendered rows and its converted print pixels
    at_once: int  # stripes worked at the same time on one device
    total: int | None  # bytes the device has; None: on a cluster elsewhere, not known here
    holder: str = "the device has"  # who has `total`, in words

    @property
    def need(self) -> int:
        return (self.maps + self.pixels) * self.at_once

    def describe(self) -> str:
        each = f"{_gib(self.maps)} network + {_gib(self.pixels)} stripe pixels"
        text = (f"at least {_gib(self.need)} of {self.device} memory ("
                + (f"{self.at_once} stripes at once x ({each})" if self.at_once > 1
                   else each) + ")")
        if self.total is None:
            return text + " on each worker of the cluster"
        return text + f"; {self.holder} {_gib(self.total)}"


def memory_need(plan: JobPlan) -> MemoryNeed:
    """What the plan's stripes need in memory at once on the device that renders them."""
    maps, pixels = stripe_bytes(plan)
    kind, options = cluster_options(plan.spec.render)
    on_gpu = plan.device.startswith("cuda")
    if kind == "in-process":  # a GPU renders one stripe at a time (the render lock)
        at_once, here = (1 if on_gpu else options["threads"]), True
    elif kind == "local":
        at_once, here = options["n_workers"] * options["threads_per_worker"], True
    elif kind == "local-cuda":  # one worker per GPU, each rendering one stripe at a time
        at_once, here = 1, True
    else:  # a scheduler elsewhere: its workers' devices are not known here
        at_once, here = 1, False
    device = "cuda" if kind == "local-cuda" else plan.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        here = False  # local-cuda on a machine without CUDA: the cluster's start says so
    need = MemoryNeed(device, maps, pixels, min(at_once, len(plan.stripes)), None)
    if not here:
        return need
    total, holder = _device_total(device)
    return replace(need, total=total, holder=f"the {holder}")


def stripe_bytes(plan: JobPlan) -> tuple[int, int]:
    """(network, pixels): the bytes of the network's tensors at the peak of a batch and of
    a stripe's rendered and converted pixels; measured once and kept in the plan."""
    if plan.stripe_bytes is None:
        # the shapes do not depend on the device: measured with a CPU copy of the network,
        # so that planning never initialises CUDA
        renderer = Renderer(plan.checkpoint.generator, "cpu", plan.spec.render.precision)
        stripe = plan.stripes[0]  # the tallest: the others are as high or less
        output = "uint8" if plan.render_bits == 8 else "uint16"
        maps = render_bytes(renderer, stripe.tiles, plan.batch, output)
        bands = plan.colour.bands + (len(plan.plates.plates) if plan.plates_in_tiff else 0)
        pixels = stripe.h * plan.geometry.width_px * (3 * plan.render_bits + bands
                                                      * plan.colour.bits) // 8
        plan.stripe_bytes = maps, pixels
    return plan.stripe_bytes


def check_memory(plan: JobPlan) -> MemoryNeed:
    """Refuse a plan whose stripes need more memory than the device has; warn when they
    need more than it has free now."""
    need = memory_need(plan)
    if need.total is None:
        return need
    render = plan.spec.render
    _refuse_beyond_total(plan, need, "render.threads", f"threads {render.threads}")
    free = _device_free(need.device)
    if need.need > free:
        log.warning("render: %s needs %s, and %s is free now: the job may run out of memory "
                    "or swap", plan.tiling, need.describe(), _gib(free))
    return need


def check_worker_memory(plan: JobPlan, worker: str, threads: int,
                        memory_limit: int | None) -> MemoryNeed:
    """On a Dask worker, before its first stripe of a job (and for a dry run): refuse the
    job if its stripes need more than this worker may use, its `memory_limit` (or the
    host's memory) for the `threads` stripes it renders at once on a CPU, the GPU's memory
    for the one it renders there. Without it the nanny restarts the worker at its limit,
    the stripe moves to the next worker, and the job ends minutes later in a KilledWorker
    that names no setting. The plan carries the driver's `stripe_bytes`: measured in a
    Dask task, whose frames the worker's sampling profiler holds now and then, a tensor
    could outlive its last use and the figure grow at random. Returns what the worker
    needs and has."""
    need = memory_need(plan)  # its sizes; where and how many at once are the worker's
    on_gpu = need.device.startswith("cuda")
    at_once = 1 if on_gpu else min(threads, len(plan.stripes))
    if on_gpu:
        total, holder = _device_total(need.device)[0], "GPU has"
    elif memory_limit:
        total, holder = memory_limit, "memory limit is"
    else:  # no Dask limit: the host's memory, or its container's
        total, holder = _device_total("cpu")
        holder = holder.replace("device", "host")
    need = replace(need, at_once=at_once, total=total)
    _refuse_beyond_total(plan, replace(need, holder=f"Dask worker {worker}'s {holder}"),
                         "the workers' threads", f"{threads} thread(s) here")
    return replace(need, holder=f"its {holder}")


def _refuse_beyond_total(plan: JobPlan, need: MemoryNeed, threads: str, got: str) -> None:
    """A RenderError naming what to change when `need` is more than its device has;
    `threads` names the setting of the stripes at once (`got`: its value)."""
    if need.need <= need.total:
        return
    render = plan.spec.render
    if plan.tile_px == 0:
        fix = ("render in tiles (render.tile_px: got 0, the whole canvas in one pass; "
               "use auto or a tile size)")
    else:
        several = need.at_once > 1
        fix = (f"lower render.tile_px, render.batch{f' or {threads}' if several else ''}"
               f" (got tile_px {render.tile_px}, batch {render.batch}"
               f"{f', {got}' if several else ''})")
    raise RenderError(f"render: {plan.tiling} needs {need.describe()}: {fix}")


def _device_total(device: str) -> tuple[int, str]:
    """The bytes the device has for this process, and who sets them in words ("device
    has", or on the CPU "memory cgroup PATH allows" where a container limits it)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory, "device has"
    limit = host.memory_limit()
    return limit.total, (f"memory cgroup {limit.cgroup} allows" if limit.cgroup
                         else "device has")


def _device_free(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return host.memory_limit().free


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.0f} MiB"
