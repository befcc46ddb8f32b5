"""A real Prefect server for tests: `make server` (= `prefect server start`) on loopback.

Unlike `prefect_test_harness`, this is the process an operator runs, with its background
services (the scheduler among them) and the UI. `make server` is used on purpose: the
test then also proves that the Makefile passes the port through to the API and the UI.

`prefect_server` (session): one server on a free port with its own PREFECT_HOME; the
scheduler loop runs every 2 s instead of 60 so that schedule tests take seconds.
`prefect_api` (module): points this process's Prefect client at it for the module's tests.
`server_env(server)`: the environment a subprocess (worker, deploy, CLI) needs to use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent
START_TIMEOUT = 240  # a fresh database migrates first: slow on a busy 2-core machine


@dataclass
class PrefectServer:
    url: str  # the UI, http://127.0.0.1:PORT
    port: int
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(server: PrefectServer, **extra: str) -> dict[str, str]:
    """This process's environment pointed at `server` (its own PREFECT_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(server.home), PREFECT_API_URL=server.api_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def _wait_healthy(server: PrefectServer, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited: {server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT} s: "
                       f"{server.log.read_text()[-3000:]}")


def start_server(home: Path, port: int | None = None) -> tuple[PrefectServer, subprocess.Popen]:
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    server = PrefectServer(f"http://127.0.0.1:{port}", port, home, home / "server.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with open(server.log, "wb") as log:
        process = subprocess.Popen(
            ["make", "-C", str(REPO), "server", "HOST=127.0.0.1", f"PORT={port}",
             f"VENV={VENV}"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: make and prefect stop together
    try:
        _wait_healthy(server, process)
    except BaseException:
        stop_server(process)
        raise
    return server, process


def stop_server(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server, process = start_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server
        APILogWorker.drain_all(timeout=10)  # logs still queued reach the server while it runs
