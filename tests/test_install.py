"""The install is locked: constraints.txt (`make lock`) pins every dependency `make install`
puts in the environment, agrees with pyproject.toml's bounds, and is what these tests run
on, so that a fresh machine months from now installs what was tested."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([a-z0-9]+(?:-[a-z0-9]+)*)==(\S+)$")


def locked() -> dict[str, str]:
    """{canonical name: version} of constraints.txt; every line a pin, in order, once."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt: {line!r} is not NAME==VERSION with a canonical name"
        name, version = match.groups()
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = version
    assert list(pins) == sorted(pins), "constraints.txt is not sorted"
    return pins


def installed_needs(root: str, extras: set[str]) -> set[str]:
    """The canonical names of every installed distribution `root[extras]` needs, following
    each requirement's markers and extras; torch's own needs are left out (a CUDA build of
    torch needs packages the CPU lock never names)."""
    seen: dict[str, set[str]] = {}
    todo = [(canonicalize_name(root), extras)]
    while todo:
        name, wanted = todo.pop()
        if name in seen and wanted <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | wanted
        if name == "torch":
            continue
        for line in metadata.distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in wanted | {""}):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return set(seen) - {canonicalize_name(root)}


def test_the_environment_is_the_locked_one():
    """Every distribution texprod[dev] needs is pinned, at the version installed here: a
    missing pin would float on a fresh machine, another version means these tests did not
    run on the lock (`make install` puts it back)."""
    pins = locked()
    assert "torch" not in pins and "texprod" not in pins  # the Makefile's TORCH; this project
    needs = installed_needs("texprod", {"dev"}) - {"torch"}
    assert {"prefect", "fastapi", "sqlalchemy", "distributed", "moto", "pyvips"} <= needs
    unpinned = sorted(needs - set(pins))
    assert not unpinned, f"not in constraints.txt (run `make lock`): {unpinned}"
    drifted = {n: (metadata.version(n), pins[n]) for n in needs
               if metadata.version(n) != pins[n]}
    assert not drifted, f"installed != locked (run `make install`): {drifted}"


def test_the_lock_keeps_within_pyproject_bounds():
    """Each pin satisfies every bound pyproject.toml puts on it, the known-bad releases'
    upper bounds and the cuda extra's included (dask-cuda holds Dask to one release: the
    CPU tests run the Dask the GPU worker image runs)."""
    pins = locked()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [d for deps in project["optional-dependencies"].values()
                                       for d in deps]
    checked = 0
    for req in map(Requirement, lines):
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in pins, f"{req} from pyproject.toml is not in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        checked += 1
    assert checked >= 20 and "dask-cuda" in pins


@pytest.mark.parametrize("dockerfile", ["infra/Dockerfile", "infra/Dockerfile.server"])
def test_the_stack_images_install_under_the_same_lock(dockerfile):
    """The GPU worker's and the Prefect server's images: their build context (the
    repository root, as docker-compose.yml says) carries the lock, and their pip obeys it."""
    text = (REPO / dockerfile).read_text()
    ignore = (REPO / f"{dockerfile}.dockerignore").read_text().splitlines()
    assert "!constraints.txt" in ignore
    copied = re.search(r"^COPY constraints.txt (\S+)$", text, re.M)
    assert copied, f"{dockerfile} does not copy constraints.txt"
    lock, install = copied[1], text.index("RUN python -m pip install")
    obeyed = f"pip install --no-cache-dir -c {lock} " in text or (  # the server's one pip
        f"cat {lock} >> /etc/texprod-constraints.txt" in text  # the worker: every pip
        and text.index("ENV PIP_CONSTRAINT=/etc/texprod-constraints.txt") < install)
    assert obeyed, f"{dockerfile}'s pip does not install under {lock}"
    compose = yaml.safe_load((REPO / "infra/docker-compose.yml").read_text())
    builds = [service["build"] for service in compose["services"].values()
              if service.get("build", {}).get("dockerfile") == dockerfile]
    assert builds and all(build["context"] == ".." for build in builds)
