"""Fetch into .whl/ the wheels `make gpu-check` needs that the GPU machine lacks.

The lent GPU machine has no internet. Its Python 3.12 holds torch, numpy, tifffile,
safetensors, pytest, PyYAML and tqdm; everything else texprod's library pipeline imports
travels as manylinux x86_64 wheels together with the working tree, within 64 MiB. The
versions are the ones installed here, so the device runs what CI tests.

botocore's wheel is 16 MB of service descriptions, and only the S3 and STS ones could
ever be used by texprod; the check touches no S3 at all, but `texprod.storage` imports
boto3. So its wheel is rebuilt with only those (about 1 MB), with a fresh RECORD.

    python bench/gpu_wheels.py          # make gpu-wheels
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from lock_dependencies import locked  # noqa: E402 - constraints.txt's pins, one parser

WHEELS = REPO / ".whl"
BUDGET = 64 * 2**20  # the working tree and the wheels, together
# what texprod imports at its top and the device does not have (its image's package list:
# device_packages.txt), with their own needs
PACKAGES = [
    "pyvips", "pyvips-binary", "cffi", "pycparser",
    "imagecodecs",
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
    "boto3", "botocore", "s3transfer", "jmespath",
    "pikepdf",  # needs lxml, Pillow and packaging, which the device has
    # the `cluster` step: a local Dask cluster (dask-cuda needs cuda-core, nvidia-ml-py,
    # pandas, click and the rest of Dask's needs, which the device has)
    "dask", "distributed", "dask-cuda", "rapids-dask-dependency", "partd", "locket",
    "tornado", "zict", "tblib",
    "importlib-metadata", "lazy-importer",  # dask's on Python < 3.12 (the dry run here)
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
BOTOCORE_SERVICES = ("s3", "sts", "sso", "sso-oidc")


def download(name: str, dest: Path) -> None:
    """The wheel of `name` at this environment's version, for CPython 3.12 on x86_64; a
    pure-Python package published only as an sdist (pyvips) is built into a wheel here."""
    pinned = f"{name}=={pinned_version(name)}"
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    got = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest),
         pinned], capture_output=True, text=True)
    if got.returncode == 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary=:all:", "-d", tmp, pinned], check=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", tmp, *Path(tmp).glob("*.tar.gz")],
                       check=True)
        built = [w for w in Path(tmp).glob("*.whl") if w.name.endswith("-py3-none-any.whl")]
        if not built:
            raise SystemExit(f"{pinned}: no wheel for CPython 3.12 x86_64 and its sdist does "
                             f"not build a pure-Python one:\n{got.stderr}")
        shutil.copy(built[0], dest)


def pinned_version(name: str) -> str:
    """The version installed here, else (dask-cuda: CUDA machines only) constraints.txt's."""
    try:
        return version(name)
    except PackageNotFoundError:
        pinned = locked(REPO / "constraints.txt").get(name)
        if pinned is None:
            raise SystemExit(f"{name}: neither installed here nor pinned in "
                             "constraints.txt") from None
        return pinned


def slim_botocore(wheel: Path) -> None:
    """Keep only the service descriptions texprod could use; rewrite RECORD to match."""
    keep = tuple(f"botocore/data/{s}/" for s in BOTOCORE_SERVICES)
    out = io.BytesIO()
    record_name = None
    rows = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename
            if name.endswith(".dist-info/RECORD"):
                record_name = name
                continue
            in_data = name.startswith("botocore/data/") and name.count("/") > 2
            if in_data and not name.startswith(keep):
                continue
            data = src.read(item)
            dst.writestr(item, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{name},sha256={digest.decode()},{len(data)}")
        assert record_name is not None, f"{wheel}: no RECORD"
        rows.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(rows) + "\n")
    wheel.write_bytes(out.getvalue())


def tree_bytes() -> int:
    """What travels besides the wheels: tracked and untracked, not ignored, files."""
    names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / n.decode()).stat().st_size for n in names
               if n and (REPO / n.decode()).is_file())


def main() -> int:
    if WHEELS.exists():
        shutil.rmtree(WHEELS)
    WHEELS.mkdir()
    for name in PACKAGES:
        download(name, WHEELS)
    (botocore,) = WHEELS.glob("botocore-*.whl")
    slim_botocore(botocore)
    wheels = sum(w.stat().st_size for w in WHEELS.glob("*.whl"))
    tree = tree_bytes()
    for w in sorted(WHEELS.glob("*.whl")):
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    total = tree + wheels
    print(f"wheels {wheels / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
          f"{total / 2**20:.1f} MiB of the {BUDGET / 2**20:.0f} MiB a device call carries")
    if total > BUDGET:
        print("over the budget: the device call would be refused", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
