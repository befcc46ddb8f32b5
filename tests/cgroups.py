"""Real cgroups for tests: a container's limits, made on this machine (root, and a cgroup v2
or v1 hierarchy of the controller). A child process joins one before it runs texprod."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from texprod.host import _cgroup_mounts


@contextlib.contextmanager
def made_cgroup(controller: str, settings: dict[str, dict[str, str]]) -> Iterator[Path]:
    """A fresh cgroup of `controller` ("memory", "cpu") with `settings[version]` written
    into its files, in the first hierarchy (v2, then v1) that takes them; skips the test
    where none does. Removed afterwards (its processes must have exited)."""
    mounts = _cgroup_mounts(Path("/proc/self/mountinfo"), controller)
    for version in ("v2", "v1"):
        if version not in mounts:
            continue
        directory = mounts[version][0] / f"texprod-test-{uuid.uuid4().hex[:8]}"
        try:
            directory.mkdir()
            for name, value in settings[version].items():
                (directory / name).write_text(value)
        except OSError:  # not ours to make, or the controller is not in this hierarchy
            if directory.exists():
                directory.rmdir()
            continue
        try:
            yield directory
        finally:
            directory.rmdir()
        return
    pytest.skip(f"no {controller} cgroup can be made here (needs root and a cgroup "
                f"{controller} controller)")


def joining(directory: Path):
    """A subprocess preexec_fn: the child moves itself into the cgroup before it runs."""
    return lambda: (directory / "cgroup.procs").write_text(str(os.getpid()))
