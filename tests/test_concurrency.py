"""Two jobs cannot corrupt each other; a killed job's successor resumes; dead jobs'
temporaries are swept and live ones' never; s3:// staging is private to its user.

The races are made deterministic with real processes: a job is frozen with SIGSTOP once
its spool holds a finished stripe, the other job runs, then the first is resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.s3_server import admin_client
from texprod.engine import GeneratorConfig, random_generator
from texprod.models import save_generator
from texprod.press.preflight import inspect_tiff

TINY = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
TEXPROD = str(Path(sys.executable).with_name("texprod"))
STRIPE_DONE = ".race-*.stripes/stripe-*.json"  # a finished stripe in a job's spool


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_generator(random_generator(TINY, 6), tmp_path_factory.mktemp("m") / "tiny")


def _spec(directory: Path, model: Path, out: Path | str, **render) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "race", "model": str(model), "seed": 2,
        "print": {"width_mm": 200, "height_mm": 300, "dpi": 150, "bleed_mm": 1,
                  "color": "cmyk"},
        "render": {"device": "cpu", "tile_px": 16, **render},
        "output": {"dir": str(out)},
    }))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # no API: the job runs in-process
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(spec: Path, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([TEXPROD, "generate", str(spec)], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _stop(process: subprocess.Popen) -> None:
    """SIGSTOP, and wait until every thread has stopped: a thread inside a write() to
    the growing print file stops only when that write is done."""
    process.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        states = []
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        return all(state in "Tt" for state in states)

    _wait_for(stopped, process)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> str:
    """sha256 of the print file the job makes when it runs alone."""
    tmp = tmp_path_factory.mktemp("reference")
    done = subprocess.run([TEXPROD, "generate", str(_spec(tmp, model, tmp / "out"))],
                          env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (tiff,) = (tmp / "out").glob("race-*.tif")
    return _sha(tiff)


def test_a_second_identical_job_is_refused_while_the_first_runs(model, reference, tmp_path):
    out = tmp_path / "out"
    spec = _spec(tmp_path, model, out)
    first = _start(spec, tmp_path)
    _wait_for(lambda: any(out.glob(STRIPE_DONE)), first)
    _stop(first)  # frozen mid-render, holding its lock
    try:
        # its stripes: in the growing print file, or waiting in the spool
        (growing,) = out.glob(".race-*.tif.growing")
        parts = [growing, *sorted(out.glob(".race-*.stripes/stripe-*"))]
        before = [(p.stat().st_ino, p.stat().st_size, _sha(p)) for p in parts]
        second = subprocess.run([TEXPROD, "generate", str(spec)], env=_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        (line,) = second.stderr.strip().splitlines()
        assert "another texprod job is making race-" in line and f"pid {first.pid}" in line
        # the first job's file and spool are untouched: same files, same bytes
        assert [(p.stat().st_ino, p.stat().st_size, _sha(p)) for p in parts] == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    (tiff,) = out.glob("race-*.tif")
    assert _sha(tiff) == reference  # complete and identical to a job that ran alone
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_a_killed_jobs_successor_resumes_its_spool(model, reference, tmp_path):
    out = tmp_path / "out"
    spec = _spec(tmp_path, model, out)
    first = _start(spec, tmp_path)
    _wait_for(lambda: any(out.glob(STRIPE_DONE)), first)
    first.kill()  # SIGKILL: no cleanup at all, its lock file stays behind
    first.wait()
    assert any(out.glob(".race-*.lock"))
    done = subprocess.run([TEXPROD, "generate", str(spec)], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (tiff,) = out.glob("race-*.tif")
    assert _sha(tiff) == reference
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_dead_jobs_temporaries_are_swept_and_live_ones_are_not(model, tmp_path):
    out = tmp_path / "out"
    live_spec = _spec(tmp_path / "live", model, out)
    live = _start(live_spec, tmp_path)
    _wait_for(lambda: any(out.glob(STRIPE_DONE)), live)
    _stop(live)
    try:
        (lock,) = out.glob(".race-*.lock")
        live_stem = lock.name[1:-len(".lock")]
        # what a live job's export and proof look like on disk, and a dead job's leftovers
        live_files = [out / f".{live_stem}.tif.k2j4h6.partial.tif",
                      out / f".{live_stem}.proof.jpg.x8f0qa.partial.jpg"]
        dead_files = [out / ".old-job-0123456789ab.tif.a1b2c3.partial.tif",
                      out / ".old-job-0123456789ab.thumb.jpg.zz9zz9.partial.jpg",
                      out / ".other-fedcba987654.tif.q1w2e3.partial.tif"]
        unrelated = [out / "notes.txt", out / ".hidden"]
        for path in live_files + dead_files + unrelated:
            path.write_bytes(b"partial")
        # another job into the same directory sweeps on its way in
        other = subprocess.run([TEXPROD, "generate", str(_spec(tmp_path / "other", model, out)),
                                "--set", "seed=3", "--set", "print.width_mm=20",
                                "--set", "print.height_mm=20"],
                               env=_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert other.returncode == 0, other.stderr
        assert all(p.exists() for p in live_files + unrelated)
        assert not any(p.exists() for p in dead_files)
        assert not any(out.glob(".old-job-*")) and not any(out.glob(".other-*"))
    finally:
        live.send_signal(signal.SIGCONT)
    _, err = live.communicate(timeout=300)
    assert live.returncode == 0, err


def test_s3_staging_is_private_and_a_planted_directory_is_refused(model, s3_bucket, tmp_path):
    scratch = tmp_path / "scratch"
    spec = _spec(tmp_path, model, f"{s3_bucket}/prints/", scratch_dir=str(scratch))
    env = {**_env(tmp_path), **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    staging = scratch / f"texprod-staging-{os.getuid()}"
    # someone else got there first: a symlink to a directory they control
    scratch.mkdir()
    (tmp_path / "attacker").mkdir()
    staging.symlink_to(tmp_path / "attacker")
    done = subprocess.run([TEXPROD, "generate", str(spec), "--set", "print.width_mm=20",
                           "--set", "print.height_mm=20"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert f"the staging directory {staging} is not a private directory" in done.stderr
    assert list((tmp_path / "attacker").iterdir()) == []
    # a directory open to others is refused too; a fresh one is made 0700 and left empty
    staging.unlink()
    staging.mkdir(mode=0o755)
    staging.chmod(0o755)
    done = subprocess.run([TEXPROD, "generate", str(spec), "--set", "print.width_mm=20",
                           "--set", "print.height_mm=20"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "not a private directory" in done.stderr
    staging.rmdir()
    done = subprocess.run([TEXPROD, "generate", str(spec), "--set", "print.width_mm=20",
                           "--set", "print.height_mm=20"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    assert list(staging.iterdir()) == []  # the job's own staging dir is gone after upload
    uri = next(line for line in done.stdout.splitlines()
               if line.strip().startswith("file")).split()[1]
    assert uri.startswith(f"{s3_bucket}/prints/race-")
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    local = tmp_path / "downloaded.tif"
    admin_client().download_file(bucket, key, str(local))
    assert inspect_tiff(local).ok


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_job_non_zero_and_leaves_nothing(model, tmp_path, signum):
    """A signal mid-render: the job stops at its next safe point, removes what it wrote
    (spool included) and exits 128 + the signal number."""
    out = tmp_path / "out"
    job = _start(_spec(tmp_path, model, out, tile_px=64), tmp_path)
    _wait_for(lambda: any(out.glob(STRIPE_DONE)), job, timeout=300)
    job.send_signal(signum)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 128 + signum, err
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith(f"texprod: error: stopped by {signal.Signals(signum).name}")
    assert "Traceback" not in err and "Exception ignored" not in err
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("stage", ["export", "proof", "preflight"])
def test_a_stop_signal_in_a_later_stage_leaves_nothing(model, tmp_path, stage):
    """The signal arrives as a stage begins (sent by the stage runner, so it lands there
    every time): the job stops at that stage's next safe point and leaves no file."""
    from texprod.job import stop
    from texprod.job.pipeline import run_job
    from texprod.job.spec import load_spec

    out = tmp_path / "out"
    spec = load_spec(_spec(tmp_path, model, out, tile_px=64))

    def signal_at(name, work):
        if name == stage:
            os.kill(os.getpid(), signal.SIGTERM)
        return work()

    with stop.stop_on_signals(), pytest.raises(stop.JobInterrupted):
        run_job(spec, stage=signal_at)
    assert sorted(p.name for p in out.iterdir()) == []
    assert stop.pending() is None  # acted on: the next job in this process runs
