"""Traffic for the digital twin's service tests: runs of ``PLAN`` (on the synthetic agents
``service_agents`` gives ids with ``-twin``) posted to a real `orchkit serve` from a
thread, with Poisson arrivals."""

from __future__ import annotations

import random
import threading
import time

import httpx
from service_harness import ServiceProcess

PLAN = {
    "id": "twin-lesson",
    "steps": [
        {"id": "ask", "agentId": "tutor-agent-twin-1", "action": "ask", "timeout": 500},
        {
            "id": "score",
            "agentId": "learning-agent-twin-1",
            "action": "score",
            "dependencies": ["ask"],
        },
    ],
}
RATE = 25.0  # runs/s the traffic thread offers (Poisson arrivals)


class Traffic:
    """Runs of ``PLAN`` posted at ``RATE`` per second (exponential gaps, seeded) from a
    thread, until ``stop()``."""

    def __init__(self, srv: ServiceProcess, rate: float = RATE, seed: int = 0):
        self.srv, self.rate = srv, rate
        self.rng = random.Random(seed)
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.srv.url, headers=self.srv.headers, timeout=10) as c:
            t = time.monotonic()
            while not self._stop.is_set():
                t += self.rng.expovariate(self.rate)
                pause = t - time.monotonic()
                if pause > 0 and self._stop.wait(pause):
                    return
                r = c.post("/api/runs", json=PLAN)
                if r.status_code != 202:
                    self.errors.append(r.text)
                self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
