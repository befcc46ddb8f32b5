"""Operating texprod as the README says, against a real `prefect server start` (via
`make server`) and moto's S3 server: the UI on any port, `make deploy` on an empty server,
a schedule that the server's own scheduler fires and a `make worker` runs, the alert a
failed run posts (`make alerts`), `make buckets`.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter

from flows.alerts import AUTOMATION, BLOCK, LATE_AUTOMATION
from flows.unresponsive import UNRESPONSIVE_AUTOMATION
from tests.prefect_server import REPO, VENV, PrefectServer, server_env
from tests.s3_server import TEST_ENV, admin_client
from texprod.engine import GeneratorConfig, random_generator
from texprod.models import save_generator
from texprod.press.preflight import inspect_tiff

TINY = GeneratorConfig(nz_local=6, nz_global=4, nz_periodic=2, kernel=5, filters=(16, 8))


def make(target: str, env: dict[str, str], *args: str, timeout: float = 300
         ) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), target, f"VENV={VENV}", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_ui_settings_name_the_port_the_server_runs_on(prefect_server: PrefectServer):
    assert prefect_server.port != 4200  # a random port: the fixture runs `make server PORT=...`
    with urllib.request.urlopen(f"{prefect_server.url}/ui-settings", timeout=10) as response:
        settings = json.load(response)
    assert settings["api_url"] == prefect_server.api_url


def test_make_deploy_on_an_empty_server_creates_pool_and_limit(prefect_server, tmp_path):
    env = server_env(prefect_server)
    prefect = str(VENV / "bin" / "prefect")
    # an empty server, whichever tests ran before on the shared one
    for kind, name in (("work-pool", "gpu"), ("gcl", "texprod-gpu")):
        subprocess.run([prefect, "--no-prompt", kind, "delete", name], env=env,
                       capture_output=True)
        assert subprocess.run([prefect, kind, "inspect", name], env=env,
                              capture_output=True).returncode != 0
    unresponsive = (UNRESPONSIVE_AUTOMATION,)
    _alerts(prefect_server, delete=True, names=unresponsive)
    too_short = make("server-objects", env, "UNRESPONSIVE_S=30")
    assert too_short.returncode == 2 and "UNRESPONSIVE_S: got 30, must be at least 60 " \
        "seconds" in too_short.stderr, too_short.stderr
    assert _alerts(prefect_server, names=unresponsive) == []  # and nothing else was made:
    assert subprocess.run([prefect, "work-pool", "inspect", "gpu"], env=env,
                          capture_output=True).returncode != 0
    saved = []
    for attempt in (1, 2):  # the second run finds everything in place and changes nothing
        done = make("deploy", env)
        assert done.returncode == 0, f"attempt {attempt}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        saved.append(_alerts(prefect_server, names=unresponsive))
    (first,), (second,) = saved
    assert second.id == first.id  # kept as it was, not replaced under the trigger service
    assert first.trigger.within.total_seconds() == 600 and first.enabled
    # one that differs in anything (here as an older texprod could have saved it) is replaced
    from prefect.automations import Automation
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _alerts(prefect_server, delete=True, names=unresponsive)
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        older = Automation(**first.model_dump(exclude={"id", "description"}),
                           description="an older texprod's").create()
    assert make("server-objects", env).returncode == 0
    (replaced,) = _alerts(prefect_server, names=unresponsive)
    assert replaced.id != older.id and replaced.description == first.description
    pool = subprocess.run([prefect, "work-pool", "inspect", "gpu"], env=env,
                          capture_output=True, text=True)
    assert pool.returncode == 0 and "process" in pool.stdout
    limit = subprocess.run([prefect, "gcl", "inspect", "texprod-gpu", "--output", "json"],
                           env=env, capture_output=True, text=True)
    assert limit.returncode == 0, limit.stderr
    assert json.loads(limit.stdout)["limit"] == 1
    for name in ("generate-texture/box-packaging", "generate-texture/city-map-gigapixel"):
        deployment = subprocess.run([prefect, "deployment", "inspect", name], env=env,
                                    capture_output=True, text=True)
        assert deployment.returncode == 0, deployment.stderr
        assert "'work_pool_name': 'gpu'" in deployment.stdout


def _tiny_deployment(tmp_path: Path, interval_s: int | None, name: str = "scheduled",
                     size_mm: int = 20, render: dict | None = None) -> tuple[Path, Path]:
    """A prefect.yaml for one deployment of generate-texture on a tiny generator's spec,
    with an active interval schedule (None: none); returns it and the job's output
    directory."""
    model = save_generator(random_generator(TINY, 2), tmp_path / "tiny", name="tiny")
    out = tmp_path / "out"
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "name": name, "seed": 1, "model": str(model),
        "print": {"width_mm": size_mm, "height_mm": size_mm, "dpi": 100, "bleed_mm": 1,
                  "color": "cmyk"},
        "render": {"device": "cpu", "tile_px": 32, **(render or {})},
        "output": {"dir": str(out)},
    }))
    config = tmp_path / "prefect.yaml"
    config.write_text(yaml.safe_dump({
        "name": "texprod-test", "prefect-version": "3.8.8", "build": None, "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
        "deployments": [{
            "name": "every-few-seconds" if interval_s else "by-hand",
            "entrypoint": "flows/generate.py:generate_texture",
            "parameters": {"spec": str(spec)}, "work_pool": {"name": "gpu"},
            # one run at a time, the others wait: as infra/prefect.yaml's deployments
            "concurrency_limit": {"limit": 1, "collision_strategy": "ENQUEUE"},
            "schedules": [{"interval": interval_s, "active": True}] if interval_s else [],
        }],
    }))
    return config, out


def test_a_schedule_fires_a_worker_runs_it_and_a_failed_run_alerts(prefect_server, tmp_path):
    """The operator's night: `make alerts`, a deployment whose schedule the server fires, a
    worker that runs it, then a run that fails: one alert reaches the webhook, naming the
    run, its cause and its page."""
    env = server_env(prefect_server, PREFECT_WORKER_QUERY_SECONDS="1",
                     PREFECT_WORKER_PREFETCH_SECONDS="5")
    config, out = _tiny_deployment(tmp_path, interval_s=10)
    done = make("server-objects", env)
    assert done.returncode == 0, done.stderr
    with _webhook() as (hook_url, posts):
        try:
            _schedule_worker_failure_alert(prefect_server, env, config, out, tmp_path,
                                           hook_url, posts)
        finally:
            _alerts(prefect_server, delete=True)  # the server outlives this test


def _schedule_worker_failure_alert(prefect_server, env, config, out, tmp_path, hook_url, posts):
    refused = make("alerts", env, "ALERT_URL=hooks.example.com/x")
    assert refused.returncode == 2 and "ALERT_URL: got 'hooks.example.com/x', must be the " \
        "http(s):// URL of a webhook" in refused.stderr
    short = make("alerts", env, f"ALERT_URL={hook_url}", "ALERT_LATE_S=5")
    assert short.returncode == 2 and "ALERT_LATE_S: got 5, must be at least 10" in short.stderr
    assert _alerts(prefect_server) == []  # nothing made by either
    for _ in range(2):  # a second time replaces the first: still one of each automation
        done = make("alerts", env, f"ALERT_URL={hook_url}")
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(a.name for a in _alerts(prefect_server)) == sorted([AUTOMATION,
                                                                      LATE_AUTOMATION])
    assert hook_url not in _alert_block(prefect_server)  # a credential: masked by the API
    _deploy(config, env)
    worker_log = tmp_path / "worker.log"
    with contextlib.ExitStack() as teardown:  # the server outlives the test: no schedule
        teardown.callback(_pause_schedules, env, "generate-texture/every-few-seconds")
        worker = teardown.enter_context(_worker(env, worker_log))
        run = _wait_for_run(prefect_server, "every-few-seconds", "completed", timeout_s=150,
                            log=worker_log)
        _pause_schedules(env, "generate-texture/every-few-seconds")
        # a run by hand with a bad override: through the worker, one ERROR line, no traceback
        started = subprocess.run(
            [str(VENV / "bin" / "prefect"), "deployment", "run",
             "generate-texture/every-few-seconds", "--param",
             'overrides=["model=/no/such/model"]'], env=env, capture_output=True, text=True,
            timeout=60)
        assert started.returncode == 0, started.stderr
        failed = _wait_for_run(prefect_server, "every-few-seconds", "failed", timeout_s=90,
                               log=worker_log)
        # its process sends its last logs as it exits: stopping the worker before then
        # would kill it with them unsent
        _wait_for_flow_run_processes_to_exit(worker.pid, timeout_s=60)
    assert not failed.auto_scheduled
    failed_logs = _run_logs(prefect_server, failed.id)
    assert _read_run(prefect_server, failed.id).name.endswith("-FAILED")
    errors = [(log.name, log.message[:300]) for log in failed_logs if log.level >= 40]
    assert len(errors) == 1 and "no such checkpoint" in errors[0][1], errors
    assert not any("Traceback" in log.message for log in failed_logs)
    assert run.auto_scheduled  # created by the server's scheduler, not by hand
    (tiff,) = out.glob("scheduled-*.tif")
    assert inspect_tiff(tiff).ok
    # the GPU concurrency limit exists (make server-objects), so no run warns about it
    warnings = [log.message for log in _run_logs(prefect_server, run.id) if log.level >= 30]
    assert not warnings, warnings
    server_log = prefect_server.log.read_text()
    assert "InvalidRequestError" not in server_log, server_log[-3000:]
    # the failed run, and only it, posted an alert: from the server, with cause and link
    deadline = time.monotonic() + 60
    while not posts and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # room for a wrong second post to arrive
    text = _the_alert(posts, prefect_server)
    # (the -FAILED suffix comes from the flow's own failure hook, racing the alert)
    assert text.startswith("texprod: generate-texture run "
                           + failed.name.removesuffix("-FAILED"))
    assert "no such checkpoint" in text and "/no/such/model" in text
    assert "Deployment generate-texture/every-few-seconds." in text
    assert text.endswith(f"{prefect_server.url}/runs/flow-run/{failed.id}")


def test_an_operator_cancels_a_run_mid_render_and_it_leaves_nothing(prefect_server,
                                                                    tmp_path):
    """Cancel on a run's page while its stripes render, in-process and on a local Dask
    cluster: the worker stops the flow run's process; the run ends Cancelled within
    seconds, leaves no file, spool, lock or Dask worker process (one would hold a GPU)
    behind, and the next run of the job completes."""
    env = server_env(prefect_server, PREFECT_WORKER_QUERY_SECONDS="1",
                     PREFECT_WORKER_PREFETCH_SECONDS="5")
    config, out = _tiny_deployment(tmp_path, None, name="cancelled", size_mm=1800,
                                   render={"tile_px": "auto"})  # 50 Mpx: ~10 s of stripes
    _deploy(config, env)
    prefect = str(VENV / "bin" / "prefect")
    worker_log = tmp_path / "worker.log"
    cancelled = {}  # cluster: (final state, seconds after the cancel, files left, processes)
    with _worker(env, worker_log) as worker:
        for cluster in ("in-process", "local"):
            overrides = [] if cluster == "in-process" else [f"render.cluster={cluster}"]
            run_id = _start_run(prefect_server, "generate-texture/by-hand", overrides)
            _wait_for_stripes(prefect_server, run_id, timeout_s=150, log=worker_log)
            dask_workers = [p for p in psutil.Process(worker.pid).children(recursive=True)
                            if "multiprocessing.spawn" in _cmdline(p)]
            assert bool(dask_workers) == (cluster == "local"), cluster  # one per core
            asked = time.monotonic()
            cancel = subprocess.run([prefect, "flow-run", "cancel", str(run_id)], env=env,
                                    capture_output=True, text=True, timeout=60)
            assert cancel.returncode == 0, cancel.stdout + cancel.stderr
            state = _wait_for_final_state(prefect_server, run_id, timeout_s=90)
            took = time.monotonic() - asked
            _wait_for_flow_run_processes_to_exit(worker.pid, timeout_s=60)
            stray = [_cmdline(p) for p in psutil.Process(worker.pid).children(recursive=True)
                     if "prefect worker" not in _cmdline(p)]
            left = sorted(str(p.relative_to(out)) for p in out.rglob("*")) \
                if out.exists() else []
            cancelled[cluster] = (state, took, left, stray)
        finished = _wait_for_final_state(
            prefect_server, _start_run(prefect_server, "generate-texture/by-hand"),
            timeout_s=150)
    for cluster, (state, took, left, stray) in cancelled.items():
        assert state.is_cancelled(), f"{cluster}: {state}: {worker_log.read_text()[-3000:]}"
        assert took < 30, f"{cluster}: cancelled {took:.0f} s after the operator asked"
        assert (left, stray) == ([], []), cluster
    assert finished.is_completed(), f"{finished}: {worker_log.read_text()[-3000:]}"
    (tiff,) = out.glob("cancelled-*.tif")
    assert inspect_tiff(tiff).ok


def test_a_run_whose_host_dies_is_marked_crashed_and_alerts(prefect_server, tmp_path):
    """The GPU host loses power mid-render: no process is left to end the run, which would
    show Running for good. Silent for UNRESPONSIVE_S (here 60 s, heartbeats every 30 s),
    the server marks it Crashed, and the failure alert posts it; the deployment's one slot
    is free again for its next run. (The dead run's slot of the GPU limit returns when
    its lease runs out, 5 min: this test's runs hold none.)"""
    env = server_env(prefect_server, PREFECT_WORKER_QUERY_SECONDS="1",
                     PREFECT_WORKER_PREFETCH_SECONDS="5", TEXPROD_GPU_LIMIT="none-here")
    config, out = _tiny_deployment(tmp_path, None, name="host-died", size_mm=1800,
                                   render={"tile_px": "auto"})
    short = ("UNRESPONSIVE_S=60", "HEARTBEAT_S=30")
    worker_log = tmp_path / "worker.log"
    with _webhook() as (hook_url, posts):
        try:
            objects = make("server-objects", env, *short)
            assert objects.returncode == 0, objects.stdout + objects.stderr
            assert "silent for 60 s are marked Crashed" in objects.stdout
            assert make("alerts", env, f"ALERT_URL={hook_url}").returncode == 0
            _deploy(config, env)
            with _worker(env, worker_log, *short) as worker:
                run_id = _start_run(prefect_server, "generate-texture/by-hand")
                _wait_for_stripes(prefect_server, run_id, timeout_s=150, log=worker_log)
                (engine,) = [p for p in psutil.Process(worker.pid).children(recursive=True)
                             if "prefect.engine" in _cmdline(p)]
                assert engine.environ()["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
                # the host goes: the worker and the run's process, at once
                host = [worker.pid, *(p.pid for p in
                                      psutil.Process(worker.pid).children(recursive=True))]
                for pid in host:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            died = time.monotonic()
            assert _read_run(prefect_server, run_id).state.is_running()
            state = _wait_for_final_state(prefect_server, run_id, timeout_s=180)
            took = time.monotonic() - died
            deadline = time.monotonic() + 60
            while not posts and time.monotonic() < deadline:
                time.sleep(0.5)
            # the host is back: the deployment's one slot is free again, the next run runs
            with _worker(env, worker_log, *short):
                next_run = _wait_for_final_state(
                    prefect_server, _start_run(prefect_server, "generate-texture/by-hand"),
                    timeout_s=150)
        finally:
            _alerts(prefect_server, delete=True,
                    names=(AUTOMATION, LATE_AUTOMATION, UNRESPONSIVE_AUTOMATION))
    assert state.is_crashed(), state
    assert state.message.startswith("no heartbeat from the run's process for 60 s"), state
    assert took < 60 + 30 + 30, f"Crashed {took:.0f} s after the host died"
    text = _the_alert(posts, prefect_server)
    assert text.startswith("texprod: generate-texture run host-died-seed1 crashed")
    assert "no heartbeat from the run's process" in text
    assert next_run.is_completed(), f"{next_run}: {worker_log.read_text()[-3000:]}"
    (tiff,) = out.glob("host-died-*.tif")
    assert inspect_tiff(tiff).ok


def _deploy(config: Path, env: dict[str, str]) -> None:
    """Every deployment of the prefect.yaml `config`, as `make deploy` deploys its own."""
    deployed = subprocess.run([str(VENV / "bin" / "prefect"), "--no-prompt", "deploy", "--all",
                               "--prefect-file", str(config)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path, *make_args: str):
    """`make worker` (with `make_args`) in a session of its own, its output added to `log`;
    stopped with SIGTERM at the end, unless the test killed it."""
    with open(log, "ab") as out:
        worker = subprocess.Popen(["make", "-C", str(REPO), "worker", f"VENV={VENV}",
                                   *make_args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def _start_run(server: PrefectServer, deployment: str, overrides: list[str] | None = None):
    """A run of `deployment` created now, as Run on its page does (with `overrides` of
    the spec); its id."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        return client.create_flow_run_from_deployment(
            found.id, parameters={"overrides": overrides} if overrides else None).id


def _wait_for_stripes(server: PrefectServer, run_id, timeout_s: float, log: Path) -> None:
    """Until a render-stripe task run of the flow run has completed, and not all have."""
    from prefect.client.schemas.filters import FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            stripes = [t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run_id]))) if t.name.startswith("render-stripe")]
            if any(t.state and t.state.is_completed() for t in stripes):
                return
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_final():
                pytest.fail(f"run ended {run.state} before the test could cancel it: "
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.2)
    pytest.fail(f"no stripe of run {run_id} done within {timeout_s} s: "
                f"{log.read_text()[-3000:]}")


def _wait_for_final_state(server: PrefectServer, run_id, timeout_s: float):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state and state.is_final():
                return state
            time.sleep(0.5)
    pytest.fail(f"run {run_id} not final within {timeout_s} s")


def test_make_alerts_refuses_a_short_window_and_fails_in_one_line_with_the_api_down(
        tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path), PREFECT_API_URL="http://127.0.0.1:9/api")
    short = make("alerts", env, "ALERT_URL=http://127.0.0.1:9/hook", "ALERT_LATE_S=5")
    assert short.returncode != 0 and "alerts: ALERT_LATE_S: got 5, must be at least 10 " \
        "seconds" in short.stderr, short.stderr
    done = make("alerts", env, "ALERT_URL=http://127.0.0.1:9/hook", timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "alerts: the Prefect API at http://127.0.0.1:9/api did not take them: " \
        "ConnectError" in done.stderr
    objects = make("server-objects", env, timeout=120)  # its first step saves an automation
    assert objects.returncode != 0 and "Traceback" not in objects.stderr, objects.stderr
    assert "unresponsive: the Prefect API at http://127.0.0.1:9/api did not take the " \
        "automation: ConnectError" in objects.stderr


@contextlib.contextmanager
def _webhook():
    """A webhook receiver on loopback: (its URL, the JSON bodies POSTed to it so far)."""
    posts: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook) as receiver:
        thread = threading.Thread(target=receiver.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{receiver.server_port}/hook", posts
        finally:
            receiver.shutdown()


def _the_alert(posts: list[dict], server: PrefectServer) -> str:
    """The text of the one alert posted. Posted again, identical, only where the test
    server's SQLite was locked as its trigger service handled the event: Prefect then
    handles the event again (seen once in CI: 4 posts, `database is locked` 3 times)."""
    texts = {p["text"] for p in posts}
    assert len(texts) == 1, "\n\n".join(texts) or server.log.read_text()[-3000:]
    if len(posts) > 1:
        assert "database is locked" in server.log.read_text(), f"{len(posts)} posts"
    return texts.pop()


def _alert_block(server: PrefectServer) -> str:
    """The alert block's data as the API shows it to any client."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        block = client.read_block_document_by_name(BLOCK, "custom-webhook",
                                                   include_secrets=False)
    return json.dumps(block.data, default=str)


def _alerts(server: PrefectServer, delete: bool = False,
            names: tuple[str, ...] = (AUTOMATION, LATE_AUTOMATION)) -> list:
    """The server's texprod automations of these names, alerts by default (deleted, with
    `delete`)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        found = [a for name in names for a in client.read_automations_by_name(name)]
        for automation in found if delete else []:
            client.delete_automation(automation.id)
        return found


def test_a_run_no_worker_takes_alerts_once_it_stays_late(prefect_server, tmp_path):
    """The GPU host is down: a run of a pool no worker polls goes Late (Prefect's
    late-runs service, 15 s), and when it is still Late ALERT_LATE_S later the server
    posts that it has not started."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelled

    env = server_env(prefect_server)
    with _webhook() as (hook_url, posts), \
            temporary_settings({PREFECT_API_URL: prefect_server.api_url}), \
            get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="no-worker", type="process"))
        deployment = client.create_deployment(
            flow_id=client.create_flow_from_name("generate-texture"), name="unattended",
            work_pool_name="no-worker")
        try:
            done = make("alerts", env, f"ALERT_URL={hook_url}", "ALERT_LATE_S=10")
            assert done.returncode == 0, done.stdout + done.stderr
            run = client.create_flow_run_from_deployment(deployment)
            deadline = time.monotonic() + 120
            while not posts and time.monotonic() < deadline:
                time.sleep(1)
            state = client.read_flow_run(run.id).state
            client.set_flow_run_state(run.id, Cancelled(), force=True)
        finally:  # the server outlives this test
            _alerts(prefect_server, delete=True)
            client.delete_deployment(deployment)
            client.delete_work_pool("no-worker")
    assert state.name == "Late"
    text = _the_alert(posts, prefect_server)
    assert text.startswith(f"texprod: generate-texture run {run.name} has not started\n")
    assert "no worker has taken it" in text
    assert "Deployment generate-texture/unattended." in text
    assert text.endswith(f"{prefect_server.url}/runs/flow-run/{run.id}")


def _wait_for_run(server: PrefectServer, deployment: str, state: str, timeout_s: float,
                  log: Path):
    """The first run of `deployment` that ended `state` (completed or failed)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment])), flow_run_filter=FlowRunFilter())
            for run in runs:
                if run.state and run.state.type.value.lower() == state:
                    return run
                if state == "completed" and run.state and run.state.is_final():
                    pytest.fail(f"run {run.name} ended {run.state}: {log.read_text()[-3000:]}")
            time.sleep(1)
    pytest.fail(f"no {state} run of {deployment} within {timeout_s} s; worker log:\n"
                f"{log.read_text()[-3000:]}\nserver log:\n{server.log.read_text()[-2000:]}")


def _wait_for_flow_run_processes_to_exit(worker_pid: int, timeout_s: float) -> None:
    """Until no `python -m prefect.engine` (a flow run) is left under the worker."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            below = psutil.Process(worker_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        if not any("prefect.engine" in _cmdline(p) for p in below):
            return
        time.sleep(0.5)
    pytest.fail(f"a flow run process still runs {timeout_s} s after its run ended")


def _cmdline(process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it ended meanwhile
        return ""


def _read_run(server: PrefectServer, run_id):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _run_logs(server: PrefectServer, run_id, timeout_s: float = 30) -> list:
    """All of a finished run's logs: they arrive in batches, the last one being the flow's
    "Finished in state ..." line."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: server.api_url}), \
            get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            if any(log.name == "prefect.flow_runs" and log.message.startswith("Finished in state")
                   for log in logs):
                return logs
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id}: its last log line has not arrived within "
                            f"{timeout_s} s; it has {[log.message[:80] for log in logs]}")
            time.sleep(0.5)


def _pause_schedules(env: dict[str, str], deployment: str) -> None:
    prefect = str(VENV / "bin" / "prefect")
    listed = subprocess.run([prefect, "deployment", "schedule", "ls", deployment, "--output",
                             "json"], env=env, capture_output=True, text=True)
    try:
        schedules = json.loads(listed.stdout)
    except ValueError:
        return
    for schedule in schedules:
        subprocess.run([prefect, "deployment", "schedule", "pause", deployment,
                        str(schedule["id"])], env=env, capture_output=True)


def test_make_buckets_creates_the_readme_buckets_once(s3_server, tmp_path):
    env = {**os.environ, **TEST_ENV, "AWS_ENDPOINT_URL": s3_server}
    names = [f"texprod-models-{os.getpid()}", f"texprod-outputs-{os.getpid()}"]
    first = make("buckets", env, f"BUCKETS={' '.join(names)}")
    assert first.returncode == 0, first.stderr
    assert all(f"s3://{n}: created" in first.stdout for n in names)
    again = make("buckets", env, f"BUCKETS={' '.join(names)}")
    assert again.returncode == 0, again.stderr
    assert all(f"s3://{n}: exists" in again.stdout for n in names)
    existing = {b["Name"] for b in admin_client().list_buckets()["Buckets"]}
    assert set(names) <= existing
    # without BUCKETS it creates the README's two
    planned = subprocess.run(["make", "-n", "-C", str(REPO), "buckets", f"VENV={VENV}"],
                             capture_output=True, text=True)
    assert "texprod-models texprod-outputs" in planned.stdout


def test_every_setting_the_compose_stack_reads_is_in_the_env_example():
    """An operator configures the stack by copying infra/.env.example: a variable the
    compose file reads that is missing there is a setting nobody finds. The worker's links
    must follow the browser's addresses, not the stack's own host names."""
    compose = (REPO / "infra" / "docker-compose.yml").read_text()
    example = (REPO / "infra" / ".env.example").read_text()
    read = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose))  # $${X}: the shell's
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert read - documented == set(), read - documented
    worker = yaml.safe_load(compose)["services"]["worker"]["environment"]
    assert worker["TEXPROD_S3_PUBLIC_URL"] == "${S3_PUBLIC_URL:-http://localhost:9000}"
    assert worker["DASK_DISTRIBUTED__DASHBOARD__LINK"].startswith(
        "http://${DASK_DASHBOARD_HOST:-localhost}:{port}")
