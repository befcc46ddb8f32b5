"""What the host, or its container, gives a job: memory and cores, read from the cgroups
above the process. Real cgroups where this machine can make them; the layouts it cannot
(containers, cgroup v2 slices) as their /proc and cgroup files show them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

from tests.cgroups import joining, made_cgroup
from texprod.engine import GeneratorConfig, random_generator
from texprod.host import available_cores, memory_limit
from texprod.models import save_generator


def _layout(tmp_path: Path, cgroup: str, mount_root: str, files: dict[str, str],
            controller: str) -> tuple[Path, Path]:
    """A /proc/self and one cgroup hierarchy of `controller` as a kernel shows them."""
    version = ("cgroup2 cgroup2 rw" if cgroup.startswith("0::")
               else f"cgroup cgroup rw,{controller}")
    mount, proc = tmp_path / "sys-fs-cgroup", tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(f"35 31 0:32 {mount_root} {mount} rw,relatime - {version}\n")
    for name, value in files.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_text(value + "\n")
    return proc, mount


@pytest.mark.parametrize(("cgroup", "mount_root", "files", "expected"), [
    # Docker on cgroup v2 with its own namespace: the container's cgroup is the mount's root
    ("0::/\n", "/", {"memory.max": "536870912"}, (536870912, "")),
    # Docker on cgroup v1 without one: /docker/ID is both the process's and the mount's root
    ("4:memory:/docker/abc\n", "/docker/abc", {"memory.limit_in_bytes": "268435456"},
     (268435456, "")),
    # a systemd slice's tighter limit above the process's unlimited service
    ("0::/jobs.slice/render.service\n", "/",
     {"jobs.slice/render.service/memory.max": "max", "jobs.slice/memory.max": "1073741824"},
     (1073741824, "jobs.slice")),
    # no limit anywhere (v1's "unlimited" is the page counter's maximum): the host's memory
    ("4:memory:/\n", "/", {"memory.limit_in_bytes": "9223372036854771712"}, None),
])
def test_the_memory_limit_is_read_from_the_process_cgroup_and_its_parents(
        tmp_path, cgroup, mount_root, files, expected):
    proc, mount = _layout(tmp_path, cgroup, mount_root, files, "memory")
    limit = memory_limit(proc)
    if expected is None:
        assert limit.cgroup is None and limit.total == psutil.virtual_memory().total
    else:
        total, where = expected
        assert (limit.total, limit.cgroup) == (total, mount / where)
        assert 0 < limit.free <= total


@pytest.mark.parametrize(("cgroup", "files", "expected"), [
    ("0::/\n", {"cpu.max": "150000 100000"}, 2),  # --cpus=1.5: two threads to keep busy
    ("0::/pod/ctr\n", {"pod/ctr/cpu.max": "max 100000", "pod/cpu.max": "100000 100000"}, 1),
    ("2:cpu,cpuacct:/docker/abc\n", {"docker/abc/cpu.cfs_quota_us": "100000",
                                     "docker/abc/cpu.cfs_period_us": "100000"}, 1),
    ("2:cpu,cpuacct:/\n", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}, None),
])
def test_the_cores_are_capped_by_a_cpu_quota_above_the_process(tmp_path, cgroup, files,
                                                               expected):
    proc, _ = _layout(tmp_path, cgroup, "/", files, "cpu")
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(proc) == (affinity if expected is None else min(expected, affinity))


def test_a_job_in_a_one_cpu_container_renders_one_stripe_at_a_time(tmp_path):
    """A real CPU cgroup capped at one CPU's time (`docker run --cpus 1`) on this machine:
    the dry run plans one stripe thread where the host's cores would give one each."""
    model = save_generator(random_generator(GeneratorConfig(
        nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8)), 3), tmp_path / "m")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "quota", "model": str(model),
        "print": {"width_px": 1024, "height_px": 1024, "dpi": 300, "color": "rgb"},
        "render": {"device": "cpu", "tile_px": 256}, "output": {"dir": str(tmp_path / "out")}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no API: the job runs in-process
    texprod = [str(Path(sys.executable).with_name("texprod")), "generate", str(path),
               "--dry-run"]

    def render_row(**options) -> str:
        done = subprocess.run(texprod, capture_output=True, text=True, timeout=300, env=env,
                              **options)
        assert done.returncode == 0, done.stderr[-2000:]
        return next(row for row in done.stdout.splitlines() if row.startswith("render"))

    cores = len(os.sched_getaffinity(0))
    assert render_row().endswith(f"in-process on {cores} thread(s)")
    with made_cgroup("cpu", {"v2": {"cpu.max": "100000 100000"},
                             "v1": {"cpu.cfs_quota_us": "100000",
                                    "cpu.cfs_period_us": "100000"}}) as cpu_cgroup:
        assert render_row(preexec_fn=joining(cpu_cgroup)).endswith("in-process on 1 thread(s)")
