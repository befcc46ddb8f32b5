"""Write constraints.txt: the exact versions `make install` gives every dependency.

pyproject.toml says what texprod works with (lower bounds, and upper bounds where a
release is known to break it); the lock says what was tested. Without it a fresh machine
resolves the newest releases of the day, and a new release of any of ~170 distributions
(Prefect's server alone pulls fastapi, SQLAlchemy, uvicorn, ...) can change a result or
break the install long after the last change here: two such breakages are pinned in
pyproject.toml already.

This asks pip's resolver for a fresh resolve of torch (the Makefile's TORCH) and
texprod[dev,cuda], ignoring what is installed (`pip install --dry-run --report`: nothing
is installed, it takes seconds), and writes every distribution it picks except torch and
texprod: torch comes from the Makefile (or a CUDA index, or the base image), so only its
own needs are pinned. The cuda extra is resolved with the rest although the CPU install
leaves it out: dask-cuda holds Dask to one release, and so the tests here run the Dask
that the GPU worker image (`pip install '.[cuda]'` under the same lock) runs. Then run
the tests on it (`make install test`, or CI from a fresh clone) and commit
constraints.txt with that run.

    python scripts/lock_dependencies.py [--torch torch==2.13.0]     # make lock
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "constraints.txt"
UNLOCKED = {"torch", "texprod"}
HEADER = """\
# The versions `make install` installs (pip -c constraints.txt): every distribution that
# texprod[dev,cuda] and torch need on Linux x86_64, CPython {python}, except torch itself
# (the Makefile's TORCH) and texprod; the stack's images (infra/) install under it too.
# Made by `make lock` (scripts/lock_dependencies.py) from a fresh resolve of
# pyproject.toml; commit it with the test run that passed on it.
"""


def resolve(torch: str) -> dict[str, str]:
    """{name: version} of a fresh resolve of `torch` and texprod[dev,cuda] for this
    Python."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--ignore-installed", "--report", str(report), torch,
                        f"{REPO}[dev,cuda]"], check=True)
        picked = json.loads(report.read_text())["install"]
    return {canonicalize_name(p["metadata"]["name"]): p["metadata"]["version"] for p in picked}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", default="torch==2.13.0",
                    help="the torch requirement resolved with the rest (default: %(default)s)")
    args = ap.parse_args()
    versions = {n: v for n, v in resolve(args.torch).items() if n not in UNLOCKED}
    before = locked(LOCK) if LOCK.exists() else {}
    python = ".".join(map(str, sys.version_info[:2]))
    LOCK.write_text(HEADER.format(python=python)
                    + "".join(f"{name}=={versions[name]}\n" for name in sorted(versions)))
    for name in sorted(before.keys() | versions.keys()):  # what a review of the lock reads
        if before.get(name) != versions.get(name):
            print(f"  {name}: {before.get(name, '-')} -> {versions.get(name, '-')}")
    print(f"{LOCK.name}: {len(versions)} distributions pinned for CPython {python}")
    return 0


def locked(path: Path) -> dict[str, str]:
    """{name: version} of a constraints file's NAME==VERSION lines."""
    pins = (line.partition("==") for line in path.read_text().splitlines()
            if line and not line.startswith("#"))
    return {name: version for name, _, version in pins}


if __name__ == "__main__":
    sys.exit(main())
