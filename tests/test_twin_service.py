"""The digital twin in the service (SPEC §16.3) against real `orchkit serve` processes: a
what-if fitted on the service's own spans, checked automatically once its horizon has passed
while traffic goes on, counted in the calibration, exported as gauges, kept across a
restart; bad bodies are 422 naming the field (hypothesis), too few spans a 409 saying how
many are needed. And ``ok.Twin`` over a store URL (SQLite, Redis) is the twin of the same
spans as a frame."""

from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_harness import ServiceProcess
from twin_traffic import PLAN, RATE, Traffic

import orchkit as ok
from orchkit.service import RedisStore, SQLiteStore

pytestmark = pytest.mark.timeout(180)


def gauge(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    m = re.search(r"^" + pattern + "$", text, re.M)
    assert m, f"{name}{{{want}}} not in /metrics"
    return float(m.group(1))


def test_a_what_if_is_checked_once_its_horizon_passes_counted_and_exported(tmp_path):
    srv = ServiceProcess(f"sqlite:///{tmp_path}/o.db", api_key="k", log=tmp_path / "server.log")
    traffic = None
    try:
        c = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60)
        # no traffic yet: a clear 409 saying what the twin needs
        r = c.post("/api/twin/what-if", json={"windowMs": 5000})
        assert r.status_code == 409 and "needs a window of spans" in r.json()["detail"], r.text
        assert c.get("/api/twin/calibration").json()["checked"] == 0

        traffic = Traffic(srv)
        time.sleep(6.0)  # a window of ~150 runs
        r = c.post("/api/twin/what-if", json={"windowMs": 5000, "minSamples": 100_000})
        assert r.status_code == 409, r.text
        assert "at least 100000 finished attempts" in r.json()["detail"]
        assert "'tutor-agent-twin-1', 'ask'" in r.json()["detail"]

        body = {"windowMs": 5000, "horizonMs": 4000, "minSamples": 40, "seed": 1, "load": 1.0}
        r = c.post("/api/twin/what-if", json=body)
        assert r.status_code == 200, r.text
        p = r.json()
        assert re.fullmatch(r"twin_\d+_[0-9a-f]{8}", p["id"]) and p["status"] == "pending"
        assert p["unstable"] is False and p["check"] is None and p["level"] == 0.9
        metrics = {m["metric"]: m for m in p["metrics"]}
        p95 = metrics["makespan_p95_ms"]
        assert set(p95) == {
            "metric",
            "value",
            "simLow",
            "simHigh",
            "paramLow",
            "paramHigh",
            "ciLow",
            "ciHigh",
        }
        assert 0 < p95["ciLow"] <= p95["value"] <= p95["ciHigh"] < 2000
        a = p["assumptions"]
        assert a["runs"] > 50 and a["spans"] > a["runs"] and a["mix"] == {"twin-lesson": 1.0}
        assert a["capacity"] == {"learning-agent-twin-1": 8, "tutor-agent-twin-1": 4}
        assert RATE / 2 < a["rate_per_s"] < 2 * RATE
        assert "tutor-agent-twin-1/ask" in a["families"]
        assert p["dueMs"] == p["horizonEndMs"] == p["createdMs"] + 4000
        assert "predictedRuns" not in p and "plans" not in p

        # before its horizon has passed: pending, unchecked
        early = c.get(f"/api/twin/predictions/{p['id']}").json()
        assert early["status"] == "pending" and early["check"] is None

        text = c.get("/metrics").text
        assert gauge(text, "orchkit_twin_predicted_p95_ms", bound="value") == pytest.approx(
            p95["value"]
        )
        assert gauge(text, "orchkit_twin_predicted_p95_ms", bound="ci_high") == pytest.approx(
            p95["ciHigh"]
        )

        # the horizon passes while traffic goes on: the service's tick checks it by itself
        # (the calibration only reads; nobody asks for the prediction meanwhile)
        while time.time() * 1000 < p["dueMs"] + 500:
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while c.get("/api/twin/calibration").json()["checked"] < 1:
            assert time.monotonic() < deadline, "the tick did not check a due prediction"
            time.sleep(0.2)
        got = c.get(f"/api/twin/predictions/{p['id']}").json()
        traffic.stop()
        assert traffic.errors == []
        assert got["status"] == "checked", got
        check = {m["metric"]: m for m in got["check"]}
        assert {"makespan_p95_ms", "success_rate", "fallback_rate", "timeout_rate"} <= set(check)
        for row in check.values():
            assert isinstance(row["covered"], bool)
            if row["observed"] is not None and row["ciLow"] is not None:
                assert row["covered"] == (row["ciLow"] <= row["observed"] <= row["ciHigh"])
        seen = check["makespan_p95_ms"]
        assert seen["predicted"] == p95["value"] and 0 < seen["observed"] < 2000
        assert abs(check["makespan_p50_ms"]["relativeError"]) < 0.5  # the same traffic
        assert check["timeout_rate"]["observed"] == 0.0
        assert 50 < got["observedRuns"] < 4 * RATE * 4
        assert 0 <= seen["ksP"] <= 1

        cal = c.get("/api/twin/calibration").json()
        assert cal["predictions"] == 1 and cal["checked"] == 1 and cal["pending"] == 0
        for metric, row in check.items():
            assert cal["metrics"][metric] == {
                "checked": 1,
                "covered": int(row["covered"]),
                "coverage": float(row["covered"]),
            }
        text = c.get("/metrics").text
        assert gauge(text, "orchkit_twin_coverage", metric="makespan_p95_ms") == float(
            seen["covered"]
        )
        assert gauge(text, "orchkit_twin_observed_p95_ms") == pytest.approx(seen["observed"])
        assert gauge(text, "orchkit_twin_predictions", status="checked") == 1.0

        listed = c.get("/api/twin/predictions").json()["predictions"]
        assert [x["id"] for x in listed] == [p["id"]]
        assert listed[0]["p95"] == {
            "value": p95["value"],
            "ciLow": p95["ciLow"],
            "ciHigh": p95["ciHigh"],
            "observed": seen["observed"],
            "covered": seen["covered"],
        }
        assert httpx.get(srv.url + "/api/twin/calibration").status_code == 401  # the key
        assert c.get("/api/twin/predictions/nope").status_code == 404

        srv.stop()  # predictions live in the store: a restarted server answers the same
        srv.start()
        assert c.get(f"/api/twin/predictions/{p['id']}").json() == got
        assert c.get("/api/twin/calibration").json() == cal
        text = c.get("/metrics").text
        assert gauge(text, "orchkit_twin_coverage", metric="makespan_p95_ms") == float(
            seen["covered"]
        )
    finally:
        if traffic is not None:
            traffic.stop()
        srv.stop()


# -- bad input: 422 naming the field, never a 5xx ------------------------------------------------

BAD = [
    ({"load": -1}, "load"),
    ({"load": "lots"}, "load"),
    ({"latency": {"tutor-agent-*": 0}}, "latency.tutor-agent-*"),
    ({"latency": ["tutor-agent-*"]}, "latency"),
    ({"capacity": {"tutor-agent-*": 1.5}}, "capacity.tutor-agent-*"),
    ({"horizonMs": 0}, "horizonMs"),
    ({"level": 1.0}, "level"),
    ({"seed": -3}, "seed"),
    ({"windowMs": "15 min"}, "windowMs"),
    ({"lod": 2}, "lod"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f for _, f in BAD])
def test_a_malformed_what_if_is_a_422_naming_the_field(service_server, body, field):
    srv = service_server
    r = httpx.post(srv.url + "/api/twin/what-if", json=body, headers=srv.headers, timeout=30)
    assert r.status_code == 422, r.text
    assert f"'{field}'" in r.json()["detail"], r.text


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["load", "latency", "capacity", "horizonMs", "windowMs", "minSamples", "level", "seed", "x"]
)


def test_fuzzed_what_if_bodies_never_get_a_5xx(service_server):
    srv = service_server
    seen: set[int] = set()
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:

        @settings(
            max_examples=80,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=st.dictionaries(FIELDS, JSON, max_size=4) | JSON)
        def check(body):
            r = c.post("/api/twin/what-if", json=body)
            assert r.status_code < 500, (body, r.text)
            seen.add(r.status_code)
            if r.status_code == 422:
                assert "'" in r.json()["detail"], r.text  # a field is named

        check()
    assert 422 in seen


# -- a store URL as the source ---------------------------------------------------------------------

TWIN_PLAN = ok.Plan.model_validate(PLAN)
MODELS = ok.AgentModels.from_dict(
    {
        "agents": {
            "tutor-agent-*": {
                "capacity": 2,
                "error": 0.05,
                "latency": {"dist": "lognormal", "median": 80, "p95": 250},
            },
            "learning-agent-*": {
                "capacity": 4,
                "latency": {"dist": "gamma", "mean": 30, "cv": 0.5},
            },
        }
    }
)
T0 = 1.8e12  # ms since the epoch of the simulated traffic's start


def simulated_records(seed: int = 5) -> tuple[list[dict], pd.DataFrame]:
    """Run records as the service stores them (spans in ms from the run's start) of a
    simulated workload, and the same spans as a frame on one clock."""
    mc = ok.monte_carlo(
        TWIN_PLAN,
        MODELS,
        workload=ok.Workload(rate_per_s=8, horizon_ms=30_000),
        seed=seed,
        progress=False,
    )
    spans = mc.spans.copy()
    spans["run_id"] = "r" + spans["run_id"].astype(str)
    arrival = spans.groupby("run_id")["queued_ms"].transform("min")
    records = []
    for rid, part in spans.groupby("run_id", sort=False, observed=True):
        t0 = float(arrival[part.index[0]])
        rows = part.assign(**{c: part[c] - t0 for c in ("queued_ms", "start_ms", "end_ms")})
        records.append(
            {
                "runId": rid,
                "planId": "twin-lesson",
                "status": "succeeded",
                "kind": "api",
                "learnerId": None,
                "plan": TWIN_PLAN.to_dict(),
                "createdMs": T0 + t0,
                "spans": json.loads(rows.to_json(orient="records", double_precision=15)),
            }
        )
    frame = spans.assign(**{c: spans[c] + T0 for c in ("queued_ms", "start_ms", "end_ms")})
    return records, frame


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/o.db", SQLiteStore(tmp_path / "o.db")
    server = request.getfixturevalue("redis_server")
    url = server.url[: -len("/0")] + "/9"
    redis.Redis.from_url(url).flushdb()  # a clean db for this test
    return url, RedisStore(url)


async def test_a_twin_from_a_store_url_equals_the_twin_of_the_same_spans_as_a_frame(store_url):
    url, store = store_url
    records, frame = simulated_records()
    await store.open()
    try:
        for rec in records:
            await store.save_run(rec)
        await store.save_run(  # a run in flight is not read; neither is a session's run
            {**records[0], "runId": "live", "status": "running", "createdMs": T0 + 100}
        )
        await store.save_run(
            {**records[1], "runId": "init_x", "kind": "session", "createdMs": T0 + 100}
        )
        page, cursor = await store.runs_between(T0, T0 + 10_000, limit=7)
        assert len(page) == 7 and cursor is not None  # pages of full records, oldest first
        assert [r["createdMs"] for r in page] == sorted(r["createdMs"] for r in page)
        rest, _ = await store.runs_between(T0, T0 + 10_000, limit=100_000, cursor=cursor)
        assert {r["runId"] for r in page}.isdisjoint(r["runId"] for r in rest)
    finally:
        await store.close()

    window = 20_000
    a = ok.Twin(url, TWIN_PLAN, models=MODELS, window_ms=window, bootstrap=4)
    b = ok.Twin(frame, TWIN_PLAN, models=MODELS, window_ms=window, bootstrap=4)
    assert a.window_bounds == pytest.approx(b.window_bounds)
    assert len(a.window_runs) == len(b.window_runs) and a.rate_per_s == b.rate_per_s
    cols = ["run_id", "agent_id", "action", "queued_ms", "start_ms", "end_ms", "outcome"]
    left = a.window[cols].astype({"run_id": str}).sort_values(["run_id", "queued_ms"])
    right = b.window[cols].astype({c: str for c in ("run_id", "agent_id", "action", "outcome")})
    right = right.sort_values(["run_id", "queued_ms"])
    np.testing.assert_allclose(left["end_ms"], right["end_ms"], rtol=0, atol=1e-3)  # ms
    assert list(left["outcome"].astype(str)) == list(right["outcome"])
    pa, pb = a.what_if(seed=2), b.what_if(seed=2)
    pd.testing.assert_frame_equal(pa.metrics, pb.metrics, rtol=1e-9)
    # a store URL twin re-reads its store on refit()
    assert a.refit() is a and len(a.window_runs) == len(b.window_runs)
    # check(prediction, url) reads the runs created over the horizon after the window
    arrival = frame.groupby("run_id", observed=True)["queued_ms"].transform("min")
    first = ok.Twin(frame[arrival < T0 + 15_000], TWIN_PLAN, models=MODELS, window_ms=15_000)
    p = first.what_if(seed=3, horizon_ms=10_000)
    end = first.window_bounds[1]
    after = frame[(arrival > end) & (arrival <= end + 10_000)]
    by_url, by_frame = first.check(p, url), first.check(p, after)
    assert by_url.at["timeout_rate", "observed"] == 0.0  # the store's runs carry a status
    assert "timeout_rate" not in by_frame.index  # a frame's do not
    pd.testing.assert_frame_equal(by_url.drop(index="timeout_rate"), by_frame, rtol=1e-4)
    assert by_frame.at["fallback_rate", "observed"] == 0.0


def test_a_store_url_that_is_not_there_names_the_url_and_the_fix(tmp_path):
    missing = f"sqlite:///{tmp_path}/nothing-here.db"
    with pytest.raises(ok.PlanValidationError, match=r"no SQLite store at .*does not exist"):
        ok.Twin(missing, TWIN_PLAN, models=MODELS)
    assert not (tmp_path / "nothing-here.db").exists()  # not created by reading it
    with pytest.raises(ok.PlanValidationError, match=r"neither a spans frame nor a service store"):
        ok.Twin("postgres://db/x", TWIN_PLAN, models=MODELS)
    with pytest.raises(ok.PlanValidationError, match=r"cannot read the store.*reachable"):
        ok.Twin("redis://127.0.0.1:1/0?retry_ms=10", TWIN_PLAN)
