"""The run dashboard (SPEC §15) in a real browser: Playwright driving Debian's chromium
against a real `orchkit serve` (SQLite store prefilled with 10,000 runs, an API key, the
scripted agents of dashboard_agents.py, a circuit breaker on speech-agent-dash*).

Chromium resolves no host but 127.0.0.1/localhost, and every test checks that each request
its pages made went to the server: nothing is fetched from outside. Each page's screenshot
goes to the test's tmp dir; with ORCHKIT_DOCS_SCREENSHOTS=1 also to docs/images/ (the
service guide's). Never runs `playwright install`: the browser is the system's chromium, which
`make test` installs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from browser_fixtures import (  # noqa: F401 - fixtures, found by name
    CHROMIUM,
    browser,
    browser_type_launch_args,
    playwright,
)
from service_harness import ServiceProcess

from orchkit.service import SQLiteStore

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
KEY = "dash-key-1"
N_STORED = 10_000
OUTCOME_ERROR = "#d62728"  # ok.gantt's colour for an attempt that raised (OUTCOME_COLORS)
ERROR_503 = (
    "model server returned HTTP 503: upstream connect error or disconnect/reset before "
    "headers; reset reason: connection termination"
)

MAIN = {  # a retried step (analyse fails once), then a failed step -> the fallback plan
    "id": "dash_main",
    "parallel": False,
    "timeout": 30000,
    "steps": [
        {"id": "fetch", "agentId": "learning-agent-dash-1", "action": "work", "input": {"ms": 900}},
        {
            "id": "analyse",
            "agentId": "learning-agent-dash-1",
            "action": "work",
            "dependencies": ["fetch"],
            "input": {"ms": 600, "fail": 1, "error": ERROR_503},
            "retryPolicy": {"maxRetries": 2, "backoffMs": 300},
        },
        {
            "id": "report",
            "agentId": "tutor-agent-dash-1",
            "action": "work",
            "dependencies": ["analyse"],
            "input": {"ms": 400, "fail": 99, "error": "report renderer crashed: KeyError 'grade'"},
            "retryPolicy": {"maxRetries": 1, "backoffMs": 300},
        },
    ],
    "fallbackPlan": {
        "id": "dash_fallback",
        "parallel": False,
        "timeout": 10000,
        "steps": [
            {
                "id": "summary",
                "agentId": "tutor-agent-dash-2",
                "action": "work",
                "input": {"ms": 900},
            }
        ],
    },
}

BIG = {  # 100 steps x 10 attempts (9 failures, then a success) = 1,000 attempts
    "id": "thousand_attempts",
    "parallel": True,
    "maxConcurrency": 100,
    "timeout": 60000,
    "steps": [
        {
            "id": f"s{i:03d}",
            "agentId": f"learning-agent-dash-big{i % 4}",
            "action": "work",
            "input": {"ms": 1, "fail": 9, "error": f"flaky dependency {i}"},
            "retryPolicy": {"maxRetries": 9, "backoffMs": 1},
        }
        for i in range(100)
    ],
}

BREAKER = {  # 2 failures open speech-agent-dash-brk's breaker; the next tries are rejected
    "id": "breaker_trip",
    "steps": [
        {
            "id": "transcribe",
            "agentId": "speech-agent-dash-brk",
            "action": "work",
            "input": {"ms": 5, "fail": 99, "error": "speech backend unavailable"},
            "retryPolicy": {"maxRetries": 3, "backoffMs": 20},
        }
    ],
}


async def _prefill(db: Path, n: int) -> None:
    """``n`` finished runs over the last week, as an older server would have left them."""
    store = SQLiteStore(db)
    await store.open()
    now = time.time() * 1000.0
    statuses = ["succeeded"] * 6 + ["failed", "timed_out", "cancelled", "interrupted"]
    plans = ["session_initialization", "learning_activity", "parallel_analysis", "nightly_report"]
    try:
        for i in range(n):
            t = now - 60_000.0 * (i + 1)
            status = statuses[i % len(statuses)]
            session = i % 3 == 0
            plan = "session_initialization" if session else plans[1 + i % 3]
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t / 1000)) + ".000Z"
            await store.save_run(
                {
                    "runId": f"run_hist_{i:05d}",
                    "planId": plan,
                    "status": status,
                    "kind": "session" if session else "api",
                    "learnerId": f"learner-{i % 37}" if session else None,
                    "plan": {"id": plan, "steps": []},
                    "createdMs": t,
                    "createdAt": iso,
                    "finishedAt": iso,
                    "durationMs": 40.0 + (i * 7919) % 900,
                    "result": None,
                    "error": None
                    if status == "succeeded"
                    else f"Orchestration plan {plan} {status.replace('_', ' ')}",
                    "spans": [],
                    "events": [],
                }
            )
    finally:
        await store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        raise RuntimeError("chromium not found: run `make test` (it installs it)")
    d = tmp_path_factory.mktemp("dashboard")
    db = d / "orchkit.db"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        pool.submit(asyncio.run, _prefill(db, N_STORED)).result()
    (d / "policies.yaml").write_text(
        "breakers:\n  speech-agent-dash*: {window: 2, minCalls: 2, failureRate: 0.5, "
        "openMs: 600000}\n"
    )
    srv = ServiceProcess(
        f"sqlite:///{db}",
        api_key=KEY,
        extra=["--agent-factory", "dashboard_agents:make", "--policies", str(d / "policies.yaml")],
        log=d / "server.log",
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
        yield c


def _submit(http, plan) -> str:
    r = http.post("/api/runs", json=plan)
    assert r.status_code == 202, r.text
    return r.json()["runId"]


def _finished(http, server, run_id) -> dict:
    rec = server.wait_run(http, run_id, timeout_s=30)
    assert rec["status"] != "running", rec
    return rec


@pytest.fixture(scope="session")
def browser_context_args():
    return {"viewport": {"width": 1280, "height": 900}}


class Seen:
    """Every URL the pages of a context asked for (requests and sockets)."""

    def __init__(self, context):
        self.urls: list[str] = []
        context.on("request", lambda r: self.urls.append(r.url))
        context.on("page", lambda p: p.on("websocket", lambda ws: self.urls.append(ws.url)))

    def outside(self, server) -> list[str]:
        here = urlparse(server.url).netloc
        return [u for u in self.urls if not u.startswith("data:") and urlparse(u).netloc != here]


@pytest.fixture
def ui(new_context, server):
    """A page whose browser already holds the API key (as after the prompt, once)."""
    context = new_context()
    context.add_init_script(f"localStorage.setItem('orchkit.apiKey', {json.dumps(KEY)})")
    seen = Seen(context)
    page = context.new_page()
    page.on("websocket", lambda ws: seen.urls.append(ws.url))
    yield page
    assert seen.outside(server) == [], "fetched from outside the machine"


def _shot(page, tmp_path: Path, name: str, *, docs: bool = True) -> Path:
    path = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 10_000
    if docs and os.environ.get("ORCHKIT_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ROOT / "docs" / "images" / path.name)
    return path


GANTT = """() => {
  const g = document.getElementById('gantt');
  if (!g || !g.data) return null;
  const attempts = g.data.filter(t => t.meta === 'attempt');
  return {
    bars: attempts.reduce((n, t) => n + t.x.length, 0),
    svgBars: [...g.querySelectorAll('.barlayer .trace')]
      .filter((el, i) => (g.data[i] || {}).meta === 'attempt')
      .reduce((n, el) => n + el.querySelectorAll('.point').length, 0),
    done: g.dataset.done === 'true',
    traces: attempts.map(t => ({name: t.name, color: t.marker.color, y: t.y, text: t.text,
                                customdata: t.customdata})),
  };
}"""


def test_a_run_with_a_retry_and_a_fallback_shows_live_in_the_list_and_its_gantt_grows(
    ui, server, http, tmp_path
):
    page = ui
    page.goto(server.url + "/")  # redirects to the list
    assert page.url.endswith("/ui/runs")
    page.wait_for_selector("[data-testid=run-row]")
    run_id = _submit(http, MAIN)
    row = page.locator(f"[data-testid=run-row][data-run-id='{run_id}']")
    row.wait_for(timeout=2000)  # live: within 2 s, without a reload
    assert row.get_attribute("data-status") == "running"
    assert page.locator("[data-testid=run-row]").first.get_attribute("data-run-id") == run_id
    _shot(page, tmp_path, "runs-live", docs=False)

    row.locator("a").click()
    page.wait_for_url(f"**/ui/runs/{run_id}")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        g = page.evaluate(GANTT)
        if g is not None:
            seen.append((g["bars"], g["done"]))
            if g["done"]:
                break
        time.sleep(0.1)
    rec = _finished(http, server, run_id)
    assert rec["status"] == "succeeded"
    assert [(c["plan_id"], c["status"]) for c in rec["result"]["fallbackChain"]] == [
        ("dash_main", "failed"),
        ("dash_fallback", "succeeded"),
    ]
    live = [n for n, done in seen if not done]
    assert live and live == sorted(live), seen  # drawn while running, only ever growing
    assert len(set(live)) >= 2 and min(live) < len(rec["spans"]), seen  # it grew live

    g = page.evaluate(GANTT)
    assert g["done"] and g["bars"] == g["svgBars"] == len(rec["spans"]) == 6
    error = next(t for t in g["traces"] if t["name"] == "error")
    assert error["color"] == OUTCOME_ERROR
    retried = [i for i, y in enumerate(error["y"]) if y == "dash_main/analyse"]
    assert len(retried) == 1 and error["text"][retried[0]] == "#1"
    assert ERROR_503 in error["customdata"][retried[0]][2]  # the bar's hover text
    ok_bars = next(t for t in g["traces"] if t["name"] == "succeeded")
    assert "#2" in [t for y, t in zip(ok_bars["y"], ok_bars["text"]) if y == "dash_main/analyse"]

    nodes = page.locator("[data-testid=dag] [data-step-id]")
    assert nodes.count() == 4  # one node per step, across the fallback chain
    states = {n.get_attribute("data-step-id"): n.get_attribute("data-state") for n in nodes.all()}
    assert states == {
        "fetch": "succeeded",
        "analyse": "succeeded",
        "report": "failed",
        "summary": "succeeded",
    }

    rows = page.locator("[data-testid=attempts-table] tbody tr")
    assert rows.count() == len(rec["spans"])
    first_try = page.locator(
        "[data-testid=attempts-table] tr[data-step-id=analyse][data-outcome=error]"
    )
    assert first_try.count() == 1
    assert first_try.locator("td.err").inner_text() == ERROR_503 + " (attempt 1)"  # in full
    cells = first_try.locator("td").all_inner_texts()
    assert cells[4:7] == ["1", "0", ""]  # attempt 1, retry 0, not a hedge
    second = page.locator("[data-testid=attempts-table] tr[data-step-id=analyse]").nth(1)
    assert second.locator("td").all_inner_texts()[4:6] == ["2", "1"]
    _shot(page, tmp_path, "run")

    page.go_back()
    page.locator(f"[data-testid=run-row][data-run-id='{run_id}'][data-status=succeeded]").wait_for(
        timeout=3000
    )
    page.select_option("[data-testid=page-size]", "25")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=run-row]').length === 25")
    _shot(page, tmp_path, "runs")


def test_the_status_filter_hides_other_runs_and_pages_go_on(ui, server):
    page = ui
    page.goto(server.url + "/ui/runs")
    rows = page.locator("[data-testid=run-row]")
    rows.first.wait_for()
    assert rows.count() == 100  # the default page
    assert len({r.get_attribute("data-status") for r in rows.all()}) > 1
    page.select_option("[data-testid=status-filter]", "timed_out")
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('[data-testid=run-row]')];"
        " return r.length > 0 && r.every(x => x.dataset.status === 'timed_out'); }",
        timeout=3000,
    )
    assert "status=timed_out" in page.url  # linkable
    first = [r.get_attribute("data-run-id") for r in rows.all()]
    page.click("[data-testid=next-page]")
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=run-row]')?.dataset.runId !== '{first[0]}'"
    )
    second = [r.get_attribute("data-run-id") for r in rows.all()]
    assert len(second) == 100 and not set(first) & set(second)
    assert {r.get_attribute("data-status") for r in rows.all()} == {"timed_out"}
    assert min(second) > max(first)  # older: the stored ids count back in time
    page.fill("[data-testid=plan-filter]", "nightly_report")
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('[data-testid=run-row]')];"
        " return r.length > 0 && r.every(x => x.children[1].textContent === 'nightly_report'"
        " && x.dataset.status === 'timed_out'); }",
        timeout=3000,
    )


def test_the_list_shows_its_first_row_within_3_s_with_10000_runs_stored(
    ui, server, http, record_property
):
    total, cursor = 0, None
    while True:  # the store really holds them (pages of 1,000: the most one page may hold)
        params = {"limit": 1000} if cursor is None else {"limit": 1000, "cursor": cursor}
        page = http.get("/api/runs", params=params).json()
        total += len(page["runs"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert total >= N_STORED
    responses = []
    ui.on("response", lambda r: responses.append(r) if "/api/runs?" in r.url else None)
    ui.goto(server.url + "/ui/runs")
    table = ui.locator("[data-testid=runs-table][data-first-row-ms]")
    table.wait_for(timeout=3000)
    ms = float(table.get_attribute("data-first-row-ms"))
    record_property("first_row_ms", ms)
    print(f"first row of /ui/runs with {total} runs stored: {ms:.0f} ms from navigation")
    assert ms < 3000
    assert ui.locator("[data-testid=run-row]").count() == 100
    assert len(responses[0].body()) < 100_000  # one page of summaries, never every run


def test_a_1000_attempt_run_is_drawn_within_2_s(ui, server, http, record_property, tmp_path):
    run_id = _submit(http, BIG)
    rec = _finished(http, server, run_id)
    assert len(rec["spans"]) == 1000
    ui.goto(f"{server.url}/ui/runs/{run_id}")
    gantt = ui.locator("[data-testid=gantt][data-first-draw-ms]")
    gantt.wait_for(timeout=5000)
    ms = float(gantt.get_attribute("data-first-draw-ms"))
    record_property("gantt_1000_ms", ms)
    print(f"Gantt of {len(rec['spans'])} attempts drawn {ms:.0f} ms from navigation")
    g = ui.evaluate(GANTT)
    assert g["bars"] == g["svgBars"] == 1000
    assert ms < 2000
    assert ui.locator("[data-testid=attempts-table] tbody tr").count() == 1000
    assert ui.locator("[data-testid=dag] [data-step-id]").count() == 100


def test_a_hedge_is_hatched_in_the_gantt_and_marked_in_the_table(ui, server, http):
    plan = {
        "id": "hedged",
        "steps": [
            {
                "id": "hint",
                "agentId": "tutor-agent-dash-hedge",
                "action": "work",
                "input": {"ms": 500},
                "hedge": {"delayMs": 150, "maxHedges": 1},
            }
        ],
    }
    rec = _finished(http, server, _submit(http, plan))
    assert [(s["attempt"], s["hedge"], s["outcome"]) for s in rec["spans"]] == [
        (1, False, "succeeded"),
        (2, True, "cancelled"),
    ]
    ui.goto(f"{server.url}/ui/runs/{rec['runId']}")
    ui.locator("[data-testid=gantt][data-done=true]").wait_for(timeout=5000)
    marks = ui.evaluate(
        "() => document.getElementById('gantt').data.filter(t => t.meta === 'attempt')"
        ".flatMap(t => t.text.map((x, i) => [t.name, x, t.marker.pattern.shape[i]]))"
    )
    assert sorted(marks) == [["cancelled", "#2 h", "/"], ["succeeded", "#1", ""]]
    hedge = ui.locator("[data-testid=attempts-table] tbody tr").nth(1).locator("td")
    assert hedge.all_inner_texts()[4:7] == ["2", "0", "hedge"]  # a hedge is no retry


def test_a_breaker_opened_by_failures_shows_open_on_the_agents_page(ui, server, http, tmp_path):
    rec = _finished(http, server, _submit(http, BREAKER))
    outcomes = [s["outcome"] for s in rec["spans"]]
    assert outcomes[:2] == ["error", "error"] and set(outcomes[2:]) == {"rejected"}
    ui.goto(server.url + "/ui/agents")
    row = ui.locator("[data-testid=agent-row][data-agent-id=speech-agent-dash-brk]")
    row.wait_for(timeout=3000)
    assert row.get_attribute("data-breaker") == "open"
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "speech" and cells[6] == "open" and cells[8] == "100.0 %"
    assert ui.locator("[data-testid=agent-row]").count() >= 3
    _finished(http, server, _submit(http, MAIN))  # the agents of the picture, with figures
    ui.locator("[data-testid=agent-row][data-agent-id=tutor-agent-dash-2]").wait_for(timeout=3000)
    ui.wait_for_timeout(1200)  # one more poll: the figures after the run
    _shot(ui, tmp_path, "agents")


def test_with_a_key_set_the_pages_ask_for_it_once_and_show_nothing_without_it(new_context, server):
    context = new_context()
    seen = Seen(context)
    page = context.new_page()
    page.goto(server.url + "/ui/runs")
    key = page.locator("[data-testid=api-key]")
    key.wait_for(timeout=3000)
    assert not page.locator("[data-testid=runs-table]").is_visible()
    assert page.locator("[data-testid=run-row]").count() == 0
    key.fill("wrong")
    key.press("Enter")
    page.locator("#key-error:has-text('refused')").wait_for(timeout=3000)
    assert page.locator("[data-testid=run-row]").count() == 0
    page.locator("[data-testid=api-key]").fill(KEY)
    page.locator("[data-testid=api-key]").press("Enter")
    page.locator("[data-testid=run-row]").first.wait_for(timeout=3000)
    assert not page.locator("[data-testid=api-key]").is_visible()
    page.goto(server.url + "/ui/agents")  # asked once: the other pages have it
    page.locator("[data-testid=agents-table]").wait_for(state="visible", timeout=3000)
    assert not page.locator("[data-testid=api-key]").is_visible()
    assert seen.outside(server) == []


def test_the_api_docs_render_offline(ui, server):
    ui.goto(server.url + "/docs")
    title = ui.locator(".swagger-ui .info .title")
    title.wait_for(timeout=10_000)
    assert "orchkit service" in title.inner_text()
    ui.locator(".opblock-summary-path[data-path='/api/agents/health']").wait_for(timeout=5000)
    assert "Unable to render" not in ui.content()
