"""A deployment bundle in production (SPEC §14): `orchkit serve --deployment` gives the
agents it creates the bundle's capacities (seen in /api/agents and in what runs at once),
shows the bundle at /api/deployment, and refuses an open address without a key."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from service_harness import ServiceProcess

import orchkit as ok

pytest.importorskip("fastapi")

FAN = {  # six naps of 300 ms on one agent, all ready at once
    "id": "fan",
    "parallel": True,
    "steps": [
        {"id": f"n{i}", "agentId": "tutor-agent-slow-1", "action": "sleep", "input": {"ms": 300}}
        for i in range(6)
    ],
}


@pytest.fixture
def bundle_file(tmp_path):
    d = ok.Deployment(
        {"process_interaction": ok.examples.plan("parallel_analysis")},
        {"tutor-agent-slow-*": {"capacity": 2}},
        meta={"capacityFor": {"seed": 7}},
    )
    d.save(tmp_path / "deploy.yaml")
    return tmp_path / "deploy.yaml"


def max_in_flight(spans: list[dict]) -> int:
    events = sorted([(s["start_ms"], 1) for s in spans] + [(s["end_ms"], -1) for s in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_serve_runs_with_the_bundles_capacities_and_shows_it(tmp_path, bundle_file):
    log = tmp_path / "server.log"
    srv = ServiceProcess(
        f"sqlite:///{tmp_path}/o.db", extra=["--deployment", str(bundle_file)], log=log
    )
    try:
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            shown = http.get("/api/deployment").json()
            assert shown["agents"] == {"tutor-agent-slow-*": {"capacity": 2}}
            assert shown["meta"] == {"capacityFor": {"seed": 7}}
            assert ok.Deployment.from_dict(shown) == ok.Deployment.load(bundle_file)
            run_id = http.post("/api/runs", json={"plan": FAN}).json()["runId"]
            agents = {a["id"]: a for a in http.get("/api/agents").json()["agents"]}
            assert agents["tutor-agent-slow-1"]["capacity"] == 2
            rec = srv.wait_run(http, run_id)
            assert rec["status"] == "succeeded"
            assert max_in_flight(rec["spans"]) == 2  # never more than the capacity
            # six naps, two at a time: three waves (uvloop's timers count from the loop's
            # cached whole-ms clock, so a nap may end a few ms early on orchkit's clock)
            assert rec["result"]["durationMs"] >= 3 * 300 - 10
    finally:
        srv.stop()
    said = log.read_text()
    assert "no session_initialization plan: start_session runs the built-in one" in said
    assert "capacities: tutor-agent-slow-*=2" in said


def test_without_a_deployment_the_endpoint_is_404(service_server):
    r = httpx.get(service_server.url + "/api/deployment", headers=service_server.headers)
    assert r.status_code == 404 and "--deployment" in r.json()["detail"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--host", "0.0.0.0"], "--insecure"),
        (["--api-key-file", "/nonexistent/key"], "cannot read it"),
        (["--deployment", "/nonexistent/d.yaml"], "cannot read deployment file"),
        (["--policies", "POLICIES", "--deployment", "BUNDLE"], "exclude each other"),
    ],
)
def test_serve_refuses_in_one_line(tmp_path, bundle_file, args, words):
    pol = tmp_path / "p.yaml"
    pol.write_text("breakers: {'x-*': {openMs: 100}}\n")
    bundle = ok.Deployment.load(bundle_file)
    with_policies = ok.Deployment(
        bundle.plans, bundle.agents, {"breakers": {"x-*": {"openMs": 100}}}
    )
    with_policies.save(tmp_path / "b.yaml")
    args = [{"POLICIES": str(pol), "BUNDLE": str(tmp_path / "b.yaml")}.get(a, a) for a in args]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchkit",
            "serve",
            "--port",
            "0",
            "--store",
            f"sqlite:///{tmp_path}/x.db",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and words in lines[-1], out.stderr
    assert "Traceback" not in out.stderr


def test_a_key_from_a_file_guards_the_api(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret \n")
    srv = ServiceProcess(f"sqlite:///{tmp_path}/k.db", extra=["--api-key-file", str(key)])
    try:
        assert httpx.get(srv.url + "/api/agents").status_code == 401
        ok_ = httpx.get(srv.url + "/api/agents", headers={"Authorization": "Bearer s3cret"})
        assert ok_.status_code == 200  # trailing whitespace stripped
    finally:
        srv.stop()
