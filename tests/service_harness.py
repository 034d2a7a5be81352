"""A real `orchkit serve` process for the service tests: free loopback port, always stopped.

``ServiceProcess(store_url, env=...)`` starts ``python -m orchkit serve`` (with the test agent
factory ``service_agents:make``) in its own process group and waits for /healthz;
``.stop(kill=False)`` ends it (SIGTERM, or SIGKILL to simulate a crash); ``.start()`` again
on the same port and store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


class ServiceProcess:
    def __init__(
        self,
        store: str,
        *,
        api_key: str | None = None,
        extra: list[str] = (),
        log: Path | None = None,
    ):
        self.store, self.api_key, self.extra = store, api_key, list(extra)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
        env.pop("ORCHKIT_API_KEY", None)
        env.pop("ORCHKIT_LLM_BASE_URL", None)
        if self.api_key:
            env["ORCHKIT_API_KEY"] = self.api_key
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchkit",
                "serve",
                "--port",
                str(self.port),
                "--store",
                self.store,
                "--agent-factory",
                "service_agents:make",
                "--log-level",
                "warning",
                *self.extra,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orchkit serve exited with code {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop(kill=True)
        raise RuntimeError("orchkit serve did not answer /healthz within 30 s")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self.proc = None

    def wait_run(self, client: httpx.Client, run_id: str, timeout_s: float = 20) -> dict:
        """Poll GET /api/runs/{run_id} until it is no longer running."""
        deadline = time.monotonic() + timeout_s
        while True:
            rec = client.get(f"{self.url}/api/runs/{run_id}", headers=self.headers).json()
            if rec.get("status") != "running" or time.monotonic() > deadline:
                return rec
            time.sleep(0.05)


API_KEY = "test-key-123"


def shared_service(tmp_path_factory):
    """Body of the session-scoped ``service_server`` fixture (conftest.py): one `orchkit
    serve` on SQLite with ``API_KEY`` for the REST, socket and fuzz tests."""
    d = tmp_path_factory.mktemp("svc")
    srv = ServiceProcess(f"sqlite:///{d}/orchkit.db", api_key=API_KEY, log=d / "server.log")
    try:
        yield srv
    finally:
        srv.stop()
