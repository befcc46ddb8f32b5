"""One job over many processes on Dask: the same bytes as in-process, faults survived.

Real `distributed.LocalCluster`s of worker processes on loopback; the comparison is of
whole files, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import pyvips
import yaml

from texprod.engine import GeneratorConfig, random_generator
from texprod.errors import RenderError, TexprodError
from texprod.job.pipeline import run_job
from texprod.job.spec import parse_spec
from texprod.models import save_generator

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    config = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))
    return save_generator(random_generator(config, 7), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, as `render.cluster: local` starts."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        yield cluster


def job_spec(model: Path, out: Path, **sections) -> dict:
    """A 1600 x 1280 px (2 Mpx) CMYK job in 5 stripes of 256 rows."""
    spec = {"name": "dask-job", "model": str(model), "seed": 11,
            "print": {"width_px": 1600, "height_px": 1280, "dpi": 300, "bleed_mm": 0,
                      "color": "cmyk"},
            "render": {"device": "cpu", "tile_px": 256},
            "output": {"dir": str(out), "proof": True}}
    for section, values in sections.items():
        spec.setdefault(section, {}).update(values)
    return spec


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def painted_repeat(tmp_path: Path) -> dict:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 15:45] = 255
    pyvips.Image.new_from_array(mask).pngsave(str(tmp_path / "logo.png"))
    return {"paint": {"mask": str(tmp_path / "logo.png"),
                      "latents": {"background": {"seed": 1}, "foreground": {"seed": 2}}},
            "repeat": {"width_mm": 80, "height_mm": 60}}


@pytest.mark.parametrize("variant", [
    {},
    {"tiff": {"layout": "strips", "compression": "deflate"}, "print": {"bit_depth": 16}},
    {"print": {"color": "rgb", "bit_depth": 16}},
    "painted-repeat",
])
def test_dask_workers_write_the_bytes_of_the_in_process_job(model, cluster, tmp_path,
                                                            variant):
    sections = {"texture": painted_repeat(tmp_path), "print": {"color": "rgb"}} \
        if variant == "painted-repeat" else variant
    inproc = run_job(parse_spec(job_spec(model, tmp_path / "a", render={"threads": 1},
                                         **sections)))
    on_dask = run_job(parse_spec(job_spec(model, tmp_path / "b",
                                          render={"cluster": cluster.scheduler_address},
                                          **sections)))
    assert len(inproc.plan.stripes) >= 3
    assert digest(on_dask.tiff.path) == digest(inproc.tiff.path)
    assert on_dask.tac_max == inproc.tac_max
    if variant == "painted-repeat":  # the preview comes from the file: the same too
        assert on_dask.plan.outputs.repeat_preview.exists()


def test_render_cluster_local_starts_its_own_workers(model, tmp_path, caplog):
    caplog.set_level("INFO", logger="texprod.job.pipeline")
    threads3 = run_job(parse_spec(job_spec(model, tmp_path / "a", render={"threads": 3})))
    local = run_job(parse_spec(job_spec(model, tmp_path / "b",
                                        render={"cluster": "local", "workers": 2})))
    assert digest(local.tiff.path) == digest(threads3.tiff.path)
    assert "stripes on local Dask cluster: 2 worker(s), 2 thread(s)" in caplog.text
    assert "dashboard http://" in local.summary()["workers"]  # shown by texprod generate


def test_the_bytes_do_not_depend_on_the_thread_count(model, tmp_path):
    """Each tile is computed with one intra-op thread, whatever OMP_NUM_THREADS says (with
    2 threads per convolution, a 1.4 Mpx render used to differ in 74 pixels)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(job_spec(model, tmp_path / "out", render={"threads": 1})))
    script = ("import sys, torch\nfrom texprod.job.pipeline import run_job\n"
              "from texprod.job.spec import load_spec\ntorch.set_num_threads(int(sys.argv[2]))\n"
              "print(run_job(load_spec(sys.argv[1])).summary()['sha256'])\n")
    hashes = set()
    for threads in (1, 2):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", script, str(spec), str(threads)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        hashes.add(done.stdout.split()[-1])
    assert len(hashes) == 1


def test_a_worker_killed_mid_job_costs_only_its_stripes(model, tmp_path):
    """SIGKILL a worker process while it works a stripe: Dask reruns the stripe on the
    other worker (the nanny restarts the dead one), the job completes, same bytes."""
    tall = {"print": {"height_px": 3840}}  # 15 stripes
    reference = run_job(parse_spec(job_spec(model, tmp_path / "a", **tall)))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)  # {worker address: pid}
        killed: list[tuple[str, list]] = []

        def kill_one(done: int, total: int) -> None:
            if killed or done == 0:
                return
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if busy:  # a worker in the middle of a stripe
                worker, keys = next(iter(busy.items()))
                os.kill(pids[worker], signal.SIGKILL)
                killed.append((worker, list(keys)))

        result = run_job(parse_spec(job_spec(model, tmp_path / "b",
                                             render={"cluster": cluster.scheduler_address},
                                             **tall)), progress=kill_one)
    assert killed, "no worker was busy to kill"
    assert digest(result.tiff.path) == digest(reference.tiff.path)


def test_a_worker_that_cannot_load_the_model_fails_the_job_naming_it(s3_bucket, model,
                                                                      tmp_path, capsys):
    """The driver reads the model from S3; the workers' S3 endpoint is dead and their
    model cache empty: the job (and its dry run, first) fails with one error naming the
    worker and the cause."""
    from texprod.storage import upload_file

    for path in model.iterdir():
        upload_file(path, f"{s3_bucket}/models/tiny/{path.name}")
    dead = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "TEXPROD_CACHE": str(tmp_path / "c"),
            "TEXPROD_S3_MAX_ATTEMPTS": "1"}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", env=dead) as cluster:
        spec = job_spec(f"{s3_bucket}/models/tiny", tmp_path / "out",
                        render={"cluster": cluster.scheduler_address})
        assert dry_run(spec, tmp_path) == 1  # found before any job, by asking the worker
        dry_run_error = capsys.readouterr().err
        with pytest.raises(TexprodError) as failure:
            run_job(parse_spec(spec))
    message = str(failure.value)
    assert "cannot prepare the job" in dry_run_error and "127.0.0.1:9" in dry_run_error
    assert "worker tcp://127.0.0.1:" in message and "cannot prepare the job" in message
    assert f"{s3_bucket}/models/tiny" in message and "127.0.0.1:9" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_worker_refuses_stripes_beyond_its_memory_limit_naming_the_settings(tmp_path,
                                                                               capsys):
    """The driver cannot see a remote worker's memory; the worker checks the job against
    its own limit before its first stripe (else its nanny would restart it at the limit,
    stripe after stripe, and the job end in a KilledWorker); a dry run asks it first and
    refuses the same. Nothing is left behind. The worker has TEXPROD_DASK_ADDRESS set, as
    the stack's containers do."""
    wide = save_generator(random_generator(GeneratorConfig(filters=(512, 256, 128, 64)), 1),
                          tmp_path / "wide")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  memory_limit="1GiB", dashboard_address=":0",
                                  env={"TEXPROD_DASK_ADDRESS": "tcp://127.0.0.1:9"}) as cluster:
        spec = job_spec(wide, tmp_path / "out", print={"width_px": 4096, "height_px": 2048},
                        render={"cluster": cluster.scheduler_address, "tile_px": 1024,
                                "batch": 4})
        assert dry_run(spec, tmp_path) == 2  # the dry run asks the worker the same
        dry_run_error = capsys.readouterr().err
        with pytest.raises(RenderError) as refused:
            run_job(parse_spec(spec))
    message = str(refused.value)
    assert dry_run_error == f"texprod: error: {message}\n"
    assert message.startswith("render: 1024 x 1024 px tiles in batches of 4 needs at least ")
    assert re.search(r"2 stripes at once x \(\d+\.\d GiB network \+ \d+ MiB stripe pixels\)"
                     r"\); Dask worker tcp://127\.0\.0\.1:\d+'s memory limit is 1\.0 GiB: "
                     r"lower render\.tile_px, render\.batch or the workers' threads \(got "
                     r"tile_px 1024, batch 4, 2 thread\(s\) here\)$", message), message
    assert list((tmp_path / "out").iterdir()) == []  # no spool, no lock, no partial file


def test_workers_check_memory_with_the_drivers_figure_whatever_their_profiler_holds(
        tmp_path):
    """A worker checks a job's memory in a task thread, whose frames its sampling profiler
    holds now and then (here every millisecond): a frame held past its return keeps its
    tensors alive, so a figure measured there grew at random (CI once read 1.5 GiB in the
    job where the dry run had said 1.3). Workers take the driver's figure instead."""
    import dask

    from texprod.job.executors import StripeJob, _checked_plan
    from texprod.job.memory import memory_need
    from texprod.job.plan import plan_job

    wide = save_generator(random_generator(GeneratorConfig(filters=(512, 256, 128, 64)), 1),
                          tmp_path / "wide")
    spec = job_spec(wide, tmp_path / "out", print={"width_px": 4096, "height_px": 2048},
                    render={"tile_px": 1024, "batch": 4})
    plan = plan_job(parse_spec(spec), tmp_path)
    job = StripeJob.of(plan, tmp_path)

    def network_bytes_checked(_: int) -> int:
        return _checked_plan(job, distributed.get_worker())[1].maps

    with dask.config.set({"distributed.worker.profile.interval": "1ms"}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        assert client.run(lambda: dask.config.get("distributed.worker.profile.interval")) \
            == {address: "1ms" for address in cluster.scheduler_info["workers"]}
        checked = client.gather(client.map(network_bytes_checked, range(60), pure=False))
    assert set(checked) == {memory_need(plan).maps}


def dry_run(spec: dict, tmp_path: Path) -> int:
    """`texprod generate SPEC --dry-run`, its exit status."""
    from texprod.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return main(["generate", str(path), "--dry-run"])


def test_a_dry_run_on_a_cluster_elsewhere_asks_each_worker(model, cluster, tmp_path, capsys):
    """Each worker builds the job's plan and checks it against its own memory; the rows
    name them, their threads and limits, and the estimate is spread over their threads."""
    spec = job_spec(model, tmp_path / "out", render={"cluster": cluster.scheduler_address})
    assert dry_run(spec, tmp_path) == 0
    text = capsys.readouterr().out
    assert "workers   2 joined, 2 thread(s) in all; each built the job's plan and checked " \
           "its memory" in text
    for address, worker in cluster.scheduler_info["workers"].items():
        limit = worker["memory_limit"] / 2**30
        assert re.search(rf"\n +{re.escape(address)} on \S+, cpu, 1 thread\(s\): at least "
                         rf"\d+ MiB of cpu memory \(\d+ MiB network \+ \d+ MiB stripe pixels\); "
                         rf"its memory limit is {limit:.1f} GiB\n", text), text
    assert re.search(r"estimate  render ~\d+ s .* per worker thread; .*\); ~\d+ s over the "
                     r"cluster's 2 thread\(s\) if they are as fast as this machine's", text), text
    assert not (tmp_path / "out").exists()


def test_a_dry_run_says_when_no_worker_has_joined(model, tmp_path, capsys):
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as cluster:
        spec = job_spec(model, tmp_path / "out", render={"cluster": cluster.scheduler_address})
        assert dry_run(spec, tmp_path) == 0
    text = capsys.readouterr().out
    assert "workers   none has joined the scheduler: the stripes would wait until one " \
           "does" in text
    assert "over the cluster's" not in text


def test_a_job_waits_for_a_first_worker_and_says_so(model, tmp_path, caplog):
    """A scheduler no worker has joined yet (an adaptive cluster at zero): the job logs
    that its stripes wait, and finishes once a worker joins."""
    caplog.set_level("INFO", logger="texprod.job.pipeline")
    with distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        spec = job_spec(model, tmp_path / "out", render={"cluster": cluster.scheduler_address})
        done: list = []
        job = threading.Thread(target=lambda: done.append(run_job(parse_spec(spec))))
        job.start()
        for _ in range(300):  # 30 s at most
            if "no worker has joined yet" in caplog.text or not job.is_alive():
                break
            job.join(timeout=0.1)
        assert "stripes wait until one does" in caplog.text and not done
        cluster.scale(1)
        job.join(timeout=120)
    assert done and done[0].tiff.path.exists()


def test_an_unreachable_scheduler_is_a_clear_error_and_leaves_nothing(model, tmp_path,
                                                                       capsys):
    import dask

    spec = job_spec(model, tmp_path / "out", render={"cluster": "tcp://127.0.0.1:9"})
    # Dask's own setting bounds the wait (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        assert dry_run(spec, tmp_path) == 2
        assert capsys.readouterr().err.startswith("texprod: error: render.cluster: cannot "
                                                  "reach the Dask scheduler at "
                                                  "tcp://127.0.0.1:9: ")
        with pytest.raises(TexprodError, match=r"render.cluster: cannot reach the Dask "
                                               r"scheduler at tcp://127.0.0.1:9: .* after 3 s"):
            run_job(parse_spec(spec))
    assert list((tmp_path / "out").iterdir()) == []  # no spool, no lock, no partial file


def test_a_cluster_that_is_not_one_is_refused_naming_the_field(model, tmp_path, capsys):
    from texprod.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(job_spec(model, tmp_path / "out")))
    assert main(["generate", str(path), "--set", "render.cluster=gpu-farm"]) == 2
    err = capsys.readouterr().err
    assert "render.cluster: got 'gpu-farm', must be null (in-process), local, local-cuda or " \
           "a Dask scheduler address such as tcp://scheduler:8786" in err
    assert "(from --set render.cluster=gpu-farm)" in err
    assert not (tmp_path / "out").exists()


def test_local_cuda_without_dask_cuda_says_how_to_install_it(model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed here: the message cannot be provoked")
    spec = job_spec(model, tmp_path / "out", render={"cluster": "local-cuda"})
    with pytest.raises(TexprodError, match=r"render.cluster: got 'local-cuda', but dask-cuda "
                                           r"is not installed here \(pip install "
                                           r"'texprod\[cuda\]'"):
        run_job(parse_spec(spec))
    assert list((tmp_path / "out").iterdir()) == []


def test_texprod_dask_address_sends_a_null_cluster_job_to_the_cluster(model, cluster,
                                                                      tmp_path, monkeypatch,
                                                                      caplog):
    caplog.set_level("INFO", logger="texprod.job.pipeline")
    monkeypatch.setenv("TEXPROD_DASK_ADDRESS", cluster.scheduler_address)
    run_job(parse_spec(job_spec(model, tmp_path / "out")))
    assert f"stripes on Dask cluster at {cluster.scheduler_address}" in caplog.text


def test_driver_memory_stays_flat_with_dask_workers(model, cluster, tmp_path):
    """The driver receives encoded chunks only: its peak RSS grows by far less than the
    print's raw size (60 Mpx CMYK: 245 MB raw) when 6x the pixels go through it."""
    script = ("import resource, sys\nfrom texprod.job.pipeline import run_job\n"
              "from texprod.job.spec import load_spec\nrun_job(load_spec(sys.argv[1]))\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    peaks = []
    for height in (1280, 7680):
        spec = tmp_path / f"{height}.yaml"
        spec.write_text(yaml.safe_dump(job_spec(
            model, tmp_path / f"out{height}", print={"width_px": 7680, "height_px": height},
            render={"cluster": cluster.scheduler_address, "tile_px": 512})))
        done = subprocess.run([sys.executable, "-c", script, str(spec)], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]))
    assert peaks[1] - peaks[0] < 60, peaks  # MB


def test_stop_signal_cancels_the_cluster_work(model, cluster, tmp_path):
    """SIGTERM to the driver mid-job: it stops at a safe point, cancels its stripes and
    leaves no output and no spool."""
    from texprod.job import stop

    spec = parse_spec(job_spec(model, tmp_path / "out", print={"height_px": 5120},
                               render={"cluster": cluster.scheduler_address}))
    fired = threading.Event()

    def signal_once(done: int, total: int) -> None:
        if done and not fired.is_set():
            fired.set()
            os.kill(os.getpid(), signal.SIGTERM)

    with stop.stop_on_signals(), pytest.raises(stop.JobInterrupted):
        run_job(spec, progress=signal_once)
    assert not any((tmp_path / "out").iterdir())
