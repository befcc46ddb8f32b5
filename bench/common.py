"""What the benchmark scripts share: device names, BENCHMARKS.md sections, estimate records.

BENCHMARKS.md is the human record (tables, newest last). texprod/data/benchmarks.json keeps
the latest headline figures per device kind, which `texprod generate --dry-run` uses to
estimate how long a job will take.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"
RECORDS = REPO / "texprod" / "data" / "benchmarks.json"
HEADER = (
    "# Benchmarks\n\n"
    "Results of the scripts in `bench/` (`make bench`), newest last. Each section records the\n"
    "date (UTC), the device and the exact command; throughput is canvas pixels per second.\n"
)


def cpu_name() -> str:
    """CPU model, the cores this process may use and its widest vector units: virtual
    machines often name only "Intel(R) Xeon(R) Processor", and AVX2 / AVX-512 / AMX machines
    differ by 2x in render speed."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    units = ("AVX-512 + AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags
             else "AVX2" if "avx2" in flags else None)
    cores = f"{len(os.sched_getaffinity(0))} cores"
    return f"{model} ({cores}, {units})" if units else f"{model} ({cores})"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    return cpu_name()


def command_line() -> str:
    """The command that ran this script, repo-relative, for the record."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    return shlex.join(["python", script, *sys.argv[1:]])


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def append_section(kind: str, device: str, text: str, *, stamp: str | None = None,
                   command: str | None = None, path: Path = BENCHMARKS) -> None:
    """A section of `path` (BENCHMARKS.md); stamp and command default to now and this run."""
    section = (f"\n## {stamp or now_utc()} — {kind} — {device}\n\n"
               f"`{command or command_line()}`\n\n{text}\n")
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as f:
        f.write(section)
    print(f"appended to {path}", file=sys.stderr)


def update_record(section: str, key: str, values: dict, *, date: str | None = None,
                  path: Path = RECORDS) -> None:
    """Keep the latest headline figure of one kind (e.g. render / cpu/fp32) for estimates."""
    records = json.loads(path.read_text()) if path.exists() else {}
    values = {**values, "date": date or datetime.now(UTC).strftime("%Y-%m-%d")}
    records.setdefault(section, {})[key] = values
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line, with the options they all have: --no-append, and the
    hidden --one JSON that makes it the child that runs one measurement (`spawn`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    ap.add_argument("--one", metavar="JSON", help=argparse.SUPPRESS)
    return ap


def run_as_child(args: argparse.Namespace, run_one: Callable[[dict], dict]) -> bool:
    """With --one: run that measurement, print its JSON line for the parent, say so."""
    if not args.one:
        return False
    print(json.dumps(run_one(json.loads(args.one))))
    return True


def spawn(script: str, job: dict, timeout: float, cwd: Path = REPO) -> dict:
    """Run one measurement, `python SCRIPT --one JSON`, in a fresh interpreter and return
    the JSON of its last stdout line, or {"error": ...}. Each measurement gets a process of
    its own so its peak RSS is its own: on Linux a child starts with its parent's ru_maxrss
    high-water mark (fork + exec), so the parent must not run the work itself."""
    cmd = [sys.executable, str(Path(script).resolve()), "--one", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])
