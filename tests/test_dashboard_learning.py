"""The dashboard's learning page (/ui/learning, SPEC §15 and §18) in a real browser: the
cohort report of `GET /api/analytics/cohort` for answers given over REST, with the API key.

The same set-up as test_dashboard.py (read its notes): Debian's chromium, nothing resolved
but this machine, and module-scoped `playwright`/`browser` fixtures (Playwright's sync API
holds an event loop in this thread while it lives; the suite's asyncio tests after this
module need it free). Its own small server: no 10,000 stored runs to wait for.
"""

from __future__ import annotations

import json
import os
import shutil
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

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
KEY = "learn-key-1"
CURRICULUM = json.loads((ROOT / "data" / "learners" / "curriculum.json").read_text())
ANSWER = {a["activityId"]: a["answer"] for a in CURRICULUM["activities"]}
ITEMS = ["addition-d1-01", "addition-d1-02", "addition-d1-03", "addition-d1-04"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        raise RuntimeError("chromium not found: run `make test` (it installs it)")
    d = tmp_path_factory.mktemp("dashboard_learning")
    srv = ServiceProcess(f"sqlite:///{d}/orchkit.db", api_key=KEY, log=d / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def browser_context_args():
    return {"viewport": {"width": 1280, "height": 720}}


def _answer(c: httpx.Client, learner: str, item: str, right: bool) -> None:
    """One direct process_interaction call (a REST session call; tutor outcome unknown)."""
    answer = ANSWER[item] if right else "no"
    body = {
        "action": "process_interaction",
        "learnerId": learner,
        "data": {"activityId": item, "response": {"answer": answer, "responseTimeMs": 900}},
    }
    r = c.post("/api/agents", json=body)
    assert r.status_code == 200, r.text


def _lesson(learner: str, item: str, answered: bool) -> dict:
    """A plan run serving one answer, then the tutor's feedback: in 10 ms, or not within
    the step's 100 ms (a timeout)."""
    return {
        "id": "lesson",
        "steps": [
            {
                "id": "answer",
                "agentId": "learning-agent-lab",
                "action": "process_interaction",
                "input": {
                    "learnerId": learner,
                    "activityId": item,
                    "response": {"answer": ANSWER[item]},
                },
            },
            {
                "id": "feedback",
                "agentId": "tutor-agent-slow-lab",
                "action": "sleep",
                "input": {"ms": 10 if answered else 400},
                "dependencies": ["answer"],
                "timeout": 2000 if answered else 100,
            },
        ],
    }


def test_the_learning_page_shows_the_cohort_mastery_rate_and_a_row_per_tutor_outcome(
    new_context, server, tmp_path
):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
        r = c.post("/api/agents", json={"action": "start_session", "learnerId": "lena"})
        assert r.status_code == 200, r.text
        for i, item in enumerate(ITEMS):  # lena answers directly, the third one wrong
            _answer(c, "lena", item, right=i != 2)
        for k, item in enumerate(ITEMS):  # leo's are served by runs: tutor ok, timeout, ...
            run = c.post("/api/runs", json=_lesson("leo", item, answered=k % 2 == 0))
            assert run.status_code == 202, run.text
            rec = server.wait_run(c, run.json()["runId"])
            assert rec["status"] == ("succeeded" if k % 2 == 0 else "failed")
        cohort = c.get("/api/analytics/cohort").json()
    outcomes = set(cohort["byOutcome"])
    assert {"ok", "timeout", "unknown"} <= outcomes

    context = new_context()
    context.add_init_script(f"localStorage.setItem('orchkit.apiKey', {json.dumps(KEY)})")
    seen: list[str] = []
    context.on("request", lambda req: seen.append(req.url))
    page = context.new_page()
    page.goto(server.url + "/ui/runs")
    page.locator("header nav a", has_text="Learning").click()
    page.wait_for_url("**/ui/learning")
    panel = page.locator("[data-testid=learning-panel]")
    panel.wait_for(state="visible", timeout=3000)
    rate = page.locator("[data-testid=cohort-mastery-rate][data-value]")
    rate.wait_for(timeout=5000)
    value = float(rate.get_attribute("data-value") or "nan")
    assert 0 <= value <= 1 and value == cohort["masteryRate"]
    assert rate.inner_text() == f"{100 * value:.1f} %"
    rows = panel.locator("[data-testid=outcome-row]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.outcome)")) == sorted(outcomes)
    ok_row = panel.locator("[data-testid=outcome-row][data-outcome=ok] td").all_inner_texts()
    assert ok_row[1:3] == [str(cohort["byOutcome"]["ok"]["interactions"]), "1"]
    assert page.locator("[data-testid=cohort-tutor-p95]").inner_text().endswith("ms")
    assert not page.locator("#page-error").count()

    path = tmp_path / "dashboard-learning.png"
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("ORCHKIT_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ROOT / "docs" / "images" / path.name)
    here = urlparse(server.url).netloc
    assert [u for u in seen if not u.startswith("data:") and urlparse(u).netloc != here] == []
    context.close()
