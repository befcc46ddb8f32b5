"""What this host gives the process, or less where a cgroup (a container, a Kubernetes pod,
a systemd slice, a batch scheduler's job) limits it: memory, and cores to keep busy.

psutil and os report the host. In a container limited to 8 GiB and 4 CPUs on a 256 GiB,
64-core host, a plan checked against the host's memory passes and the kernel then kills
the job without a word (exit 137), and 64 stripe threads share 4 CPUs' worth of time. The
limits are read from the process's own cgroup and each of its ancestors up to the
hierarchy's mount (a cgroup cannot use more than its parents allow), for cgroup v2 and v1,
as /proc/self/cgroup and /proc/self/mountinfo place them (in a container with its own
cgroup namespace, its cgroup is the mount's root).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

# cgroup v1 says "no limit" with the page counter's maximum (~2^63, rounded to pages)
V1_UNLIMITED = 2**62
# (limit file, usage file, the memory.stat line of reclaimable page cache) per version
FILES = {"v2": ("memory.max", "memory.current", "inactive_file"),
         "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}


@dataclass(frozen=True)
class MemoryLimit:
    total: int  # bytes this process may use
    free: int  # bytes of it free now
    cgroup: Path | None  # the memory cgroup whose limit `total` is; None: the host's memory


def memory_limit(proc: Path = Path("/proc/self")) -> MemoryLimit:
    """The host's memory, or the tightest memory cgroup's limit above this process."""
    host = psutil.virtual_memory()
    best = MemoryLimit(host.total, host.available, None)
    for directory, version in _cgroup_directories(proc, "memory"):
        limit_file, usage_file, cache_line = FILES[version]
        limit = _read_limit(directory / limit_file)
        if limit is None or limit >= best.total:
            continue
        # page cache the kernel reclaims before it kills counts as free, as `docker stats`
        used = _read_int(directory / usage_file) - _stat(directory / "memory.stat", cache_line)
        best = MemoryLimit(limit, max(0, min(host.available, limit - used)), directory)
    return best


def available_cores(proc: Path = Path("/proc/self")) -> int:
    """The cores this process may keep busy: its CPU affinity, or fewer where a CPU cgroup
    caps its time (a container's --cpus, a pod's CPU limit: quota / period, rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    for directory, version in _cgroup_directories(proc, "cpu"):
        if version == "v2":
            quota, _, period = _read_text(directory / "cpu.max").partition(" ")
        else:
            quota = _read_text(directory / "cpu.cfs_quota_us")
            period = _read_text(directory / "cpu.cfs_period_us")
        if quota.isdigit() and period.isdigit() and int(period) > 0:  # "max", -1: none
            cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)


def _cgroup_directories(proc: Path, controller: str) -> Iterator[tuple[Path, str]]:
    """Each directory of this process's cgroup of `controller` ("memory", "cpu") and its
    ancestors, with its version."""
    mounts = _cgroup_mounts(proc / "mountinfo", controller)
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            version = "v2"
        elif controller in controllers.split(","):
            version = "v1"
        else:
            continue
        if version not in mounts:
            continue
        mount, root = mounts[version]
        prefix = root.rstrip("/") + "/"  # the mount shows the hierarchy from `root` down
        inside = path[len(prefix):] if (path + "/").startswith(prefix) else ""
        directory = mount / inside if inside else mount
        yield directory, version
        while directory != mount and mount in directory.parents:
            directory = directory.parent
            yield directory, version


def _cgroup_mounts(mountinfo: Path, controller: str) -> dict[str, tuple[Path, str]]:
    """{"v1" | "v2": (mount point, the cgroup path at its root)} of the hierarchies of
    `controller`."""
    mounts: dict[str, tuple[Path, str]] = {}
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, kind, options = fields[3], Path(fields[4]), tail[0], tail[2].split(",")
        if kind == "cgroup2":
            mounts.setdefault("v2", (point, root))
        elif kind == "cgroup" and controller in options:
            mounts.setdefault("v1", (point, root))
    return mounts


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_limit(path: Path) -> int | None:
    text = _read_text(path)
    if text == "max" or not text.isdigit() or int(text) >= V1_UNLIMITED:
        return None
    return int(text)


def _read_int(path: Path) -> int:
    text = _read_text(path)
    return int(text) if text.isdigit() else 0


def _stat(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
