"""The dashboard's twin page (/ui/twin, SPEC §15 and §16.3) in a real browser: the predicted
p95 band of each prediction against the p95 observed over its horizon, the calibration so
far, and a what-if asked from the page's form, with the API key.

The same set-up as test_dashboard.py (read its notes): Debian's chromium, nothing resolved
but this machine, module-scoped `playwright`/`browser` fixtures. Its own server, with
synthetic agents (``service_agents``: ids with ``-twin``) and traffic from a thread.
"""

from __future__ import annotations

import json
import os
import shutil
import time
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
from twin_traffic import Traffic

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
KEY = "twin-key-1"
ASK = {"windowMs": 4000, "horizonMs": 2500, "minSamples": 30}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        raise RuntimeError("chromium not found: run `make test` (it installs it)")
    d = tmp_path_factory.mktemp("dashboard_twin")
    srv = ServiceProcess(f"sqlite:///{d}/orchkit.db", api_key=KEY, log=d / "server.log")
    traffic = Traffic(srv)
    try:
        yield srv
    finally:
        traffic.stop()
        srv.stop()


@pytest.fixture(scope="session")
def browser_context_args():
    return {"viewport": {"width": 1280, "height": 900}}


def test_the_twin_page_draws_each_predicted_band_against_what_happened(
    new_context, server, tmp_path
):
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as c:
        time.sleep(4.5)  # a first window of traffic
        made = []
        for extra in ({}, {"latency": {"tutor-agent-*": 3.0}}, {"load": 1.5}):
            r = c.post("/api/twin/what-if", json={**ASK, **extra, "seed": len(made)})
            assert r.status_code == 200, r.text
            made.append(r.json())
        deadline = time.monotonic() + 30
        while True:
            preds = c.get("/api/twin/predictions").json()["predictions"]
            if all(p["status"] == "checked" for p in preds) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [p["id"] for p in preds] == [m["id"] for m in reversed(made)]
        assert all(p["status"] == "checked" for p in preds), preds
        cal = c.get("/api/twin/calibration").json()
    slow = next(p for p in preds if p["request"]["latency"])
    assert slow["p95"]["covered"] is False  # the tutor did not slow down

    context = new_context()
    context.add_init_script(f"localStorage.setItem('orchkit.apiKey', {json.dumps(KEY)})")
    seen: list[str] = []
    context.on("request", lambda req: seen.append(req.url))
    page = context.new_page()
    page.goto(server.url + "/ui/runs")
    page.locator("header nav a", has_text="Twin").click()
    page.wait_for_url("**/ui/twin")
    page.locator("[data-testid=twin-chart][data-predictions='3']").wait_for(timeout=10_000)
    rows = page.locator("[data-testid=twin-row]")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == [p["id"] for p in preds]
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.covered)") == [
        str(p["p95"]["covered"]).lower() for p in preds
    ]
    checked = page.locator("[data-testid=twin-calibration]")
    assert checked.get_attribute("data-checked") == str(cal["checked"]) == "3"
    p95 = cal["metrics"]["makespan_p95_ms"]
    assert f"p95 {p95['covered']}/3" in checked.inner_text()

    # the figure: a band per prediction, the observed points, axes that hold them, units
    fig = page.evaluate(
        """() => { const gd = document.querySelector('[data-testid=twin-chart]');
        const L = gd._fullLayout;
        return { data: gd.data.map(t => ({ name: t.name, x: t.x.map(d => +new Date(d)), y: t.y,
                   plus: t.error_y ? t.error_y.array : null,
                   minus: t.error_y ? t.error_y.arrayminus : null })),
                 y: L.yaxis.range, x: L.xaxis.range.map(d => +new Date(d)),
                 ytitle: L.yaxis.title.text, xtitle: L.xaxis.title.text,
                 title: L.title.text }; }"""
    )
    band, observed = fig["data"]
    assert band["name"] == "predicted p95 (90 % interval)" and observed["name"] == "observed p95"
    oldest_first = list(reversed(preds))
    assert band["y"] == pytest.approx([p["p95"]["value"] for p in oldest_first])
    lows = [y - m for y, m in zip(band["y"], band["minus"])]
    highs = [y + m for y, m in zip(band["y"], band["plus"])]
    assert lows == pytest.approx([p["p95"]["ciLow"] for p in oldest_first])
    assert highs == pytest.approx([p["p95"]["ciHigh"] for p in oldest_first])
    assert observed["y"] == pytest.approx([p["p95"]["observed"] for p in oldest_first])
    y0, y1 = fig["y"]
    assert y0 <= min(lows + observed["y"]) and max(highs + observed["y"]) <= y1
    assert y1 < 2 * max(highs + observed["y"])  # not a range that squashes the band
    x0, x1 = fig["x"]
    assert x0 < min(band["x"]) and max(band["x"]) < x1
    assert band["x"] == pytest.approx([p["horizonEndMs"] for p in oldest_first], abs=1)
    assert "(ms)" in fig["ytitle"] and "(UTC)" in fig["xtitle"] and "(ms)" in fig["title"]
    assert not page.locator("#page-error").count()

    path = tmp_path / "dashboard-twin.png"
    page.locator("main").screenshot(path=path)
    assert path.stat().st_size > 10_000
    if os.environ.get("ORCHKIT_DOCS_SCREENSHOTS") == "1":
        (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ROOT / "docs" / "images" / path.name)

    # a what-if asked from the page's form: stored, listed, drawn
    form = page.locator("[data-testid=twin-form]")
    form.locator("input[name=load]").fill("1.2")
    form.locator("input[name=windowMs]").fill("4000")
    form.locator("input[name=horizonMs]").fill("60000")
    form.locator("[data-testid=twin-ask]").click()
    result = page.locator("[data-testid=twin-result][data-id]")
    result.wait_for(timeout=30_000)
    new_id = result.get_attribute("data-id")
    assert "p95" in result.inner_text() and "ms" in result.inner_text()
    page.locator(f"[data-testid=twin-row][data-id='{new_id}'][data-status=pending]").wait_for(
        timeout=5000
    )
    page.locator("[data-testid=twin-chart][data-predictions='4']").wait_for(timeout=5000)
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as c:
        mine = c.get(f"/api/twin/predictions/{new_id}").json()
    assert mine["request"]["load"] == 1.2 and mine["request"]["windowMs"] == 4000
    assert mine["request"]["minSamples"] is None  # the server's default: 50
    here = urlparse(server.url).netloc
    assert [u for u in seen if not u.startswith("data:") and urlparse(u).netloc != here] == []
    context.close()
