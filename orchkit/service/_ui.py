"""The run dashboard (SPEC §15): ``/`` -> ``/ui/runs``, the pages ``/ui/runs``,
``/ui/runs/{runId}``, ``/ui/agents``, ``/ui/learning`` and ``/ui/twin``, and ``/docs``, all
offline.

The pages are small HTML shells; their plain scripts (``static/*.js``) read the JSON API
(``GET /api/runs``, ``/api/runs/{id}``, ``/api/agents/health``, ``/api/analytics/cohort``,
``/api/twin/predictions``, ``/api/twin/calibration``; ``POST /api/twin/what-if``)
with the API key the page
asked for, and hear a run's events over Socket.IO (``subscribe {runId}``). Scripts come from
installed packages or the package itself: plotly.js from the plotly wheel, the Socket.IO
client vendored under ``static/vendor`` (MIT, its licence beside it), Swagger UI 5 from
``swagger-ui-bundle-v2``. Nothing is fetched from another host.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from .. import analytics as an
from .._views.charts import OUTCOME_COLORS, PALETTE
from ._dashboard import DEFAULT_PAGE, MAX_PAGE, stats_of
from ._service import RUN_STATUSES, Service

STATIC = Path(__file__).resolve().parent / "static"
STEP_STATES = ("pending", "running", "backing_off", "succeeded", "failed", "skipped", "cancelled")
RUN_COLORS = {  # run statuses; those that are outcomes too keep the charts' colour
    **{s: OUTCOME_COLORS[s] for s in ("succeeded", "failed", "timed_out", "cancelled")},
    "running": PALETTE[0],
    "interrupted": PALETTE[4],
}
STATE_COLORS = {  # the DAG's step states (SPEC §3)
    "pending": "#ffffff",
    "running": PALETTE[0],
    "backing_off": "#ffbb78",
    "succeeded": OUTCOME_COLORS["succeeded"],
    "failed": OUTCOME_COLORS["failed"],
    "skipped": OUTCOME_COLORS["skipped"],
    "cancelled": OUTCOME_COLORS["cancelled"],
}


def _plotly_js() -> Path:
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path  # the swagger-ui-bundle-v2 package
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _page(title: str, active: str, body: str, config: dict[str, Any], scripts: list[str]) -> str:
    cfg = json.dumps(config, separators=(",", ":")).replace("</", "<\\/")
    nav = "".join(
        f'<a href="{href}"{" class=active" if name == active else ""}>{name}</a>'
        for name, href in (
            ("Runs", "/ui/runs"),
            ("Agents", "/ui/agents"),
            ("Learning", "/ui/learning"),
            ("Twin", "/ui/twin"),
            ("API", "/docs"),
        )
    )
    gate = (
        '<form id="key-gate" class="key-gate" hidden>'
        "<h2>This server needs its API key</h2>"
        "<p>Paste the server's <code>ORCHKIT_API_KEY</code>. The page keeps it in this "
        "browser (local storage) and sends it with every request and the socket.</p>"
        '<input data-testid="api-key" id="api-key" type="password" autocomplete="off" '
        'placeholder="API key" aria-label="API key"> <button type="submit">Open</button>'
        '<p id="key-error" class="error"></p></form>'
        if config["keyRequired"]
        else ""
    )
    tags = "".join(f'<script src="{src}"></script>' for src in scripts)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · orchkit</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/dashboard.css"></head><body>'
        f'<header><span class="brand">orchkit</span><nav>{nav}</nav>'
        '<span id="live" class="live" title="live updates"></span>'
        '<a id="forget-key" href="#" hidden>forget key</a></header>'
        f'{gate}<main id="main" hidden>{body}</main>'
        f'<script id="orchkit-config" type="application/json">{cfg}</script>'
        f'<script src="/ui/static/common.js"></script>{tags}</body></html>'
    )


RUNS_BODY = """
<h1>Runs</h1>
<form id="filters" class="filters">
  <label>Status <select data-testid="status-filter" name="status"><option value="">any</option>
  {statuses}</select></label>
  <label>Plan <input data-testid="plan-filter" name="planId" placeholder="plan id"></label>
  <label>Learner <input data-testid="learner-filter" name="learnerId" placeholder="learner id">
  </label>
  <label>Since <select data-testid="since-filter" name="since"><option value="">any time</option>
    <option value="15m">last 15 min</option><option value="1h">last hour</option>
    <option value="24h">last 24 h</option><option value="7d">last 7 days</option></select></label>
  <label>Per page <select data-testid="page-size" name="limit">{sizes}</select></label>
</form>
<div class="pager">
  <button type="button" data-testid="first-page" id="first-page">Newest</button>
  <button type="button" data-testid="prev-page" id="prev-page">&larr; Newer</button>
  <button type="button" data-testid="next-page" id="next-page">Older &rarr;</button>
  <span id="page-info" class="muted"></span>
</div>
<table data-testid="runs-table" id="runs-table" class="grid">
  <thead><tr><th>Run</th><th>Plan</th><th>Status</th><th>Kind</th><th>Learner</th>
  <th>Created (UTC)</th><th class=num>Duration</th><th>Error</th></tr></thead>
  <tbody></tbody>
</table>
<p id="empty" class="muted" hidden>No runs match.</p>
"""

RUN_BODY = """
<p class="crumbs"><a href="/ui/runs">Runs</a> / <span id="run-id"></span></p>
<h1><span id="run-title"></span> <span id="run-status" class="badge"></span></h1>
<dl id="run-facts" class="facts"></dl>
<p id="run-error" class="error-text" hidden></p>
<section><h2>Attempts over time</h2>
<p class="muted">One bar per attempt (label: attempt number; hatched: a hedge), coloured by
outcome as in <code>ok.gantt</code>; a light bar before one is its wait for the agent. Click a
bar to see the attempt below.</p>
<div data-testid="gantt" id="gantt" class="gantt"></div></section>
<section><h2>Plan</h2><div data-testid="dag" id="dag" class="dag"></div></section>
<section><h2>Attempts</h2>
<table data-testid="attempts-table" id="attempts-table" class="grid attempts">
  <thead><tr><th>Plan</th><th>Step</th><th>Agent</th><th>Action</th><th class=num>Attempt</th>
  <th class=num>Retry</th><th>Hedge</th><th class=num>Queued (ms)</th>
  <th class=num>Start (ms)</th><th class=num>End (ms)</th><th class=num>Took (ms)</th>
  <th>Outcome</th><th>Error</th></tr></thead>
  <tbody></tbody>
</table></section>
"""

AGENTS_BODY = """
<h1>Agents</h1>
<p class="muted">Every registered agent; latency and errors over the attempts that ended in the
last 5 minutes. With overload policies: the capacity in force (autoscaled) and the admission
limit. Updated every second.</p>
<table data-testid="agents-table" id="agents-table" class="grid">
  <thead><tr><th>Agent</th><th>Kind</th><th>Type</th><th class=num>Capacity</th>
  <th class=num>In flight</th><th class=num>Waiting</th><th>Breaker</th>
  <th class=num>p95, 5 min</th><th class=num>Errors, 5 min</th><th>Workers</th>
  <th class=num>Capacity now</th><th class=num>Admission limit</th></tr></thead>
  <tbody></tbody>
</table>
<p id="empty" class="muted" hidden>No agents registered yet: they are made by a session
(<code>POST /api/agents</code>) or a run that names them.</p>
"""

LEARNING_BODY = """
<h1>Learning</h1>
<p class="muted">The cohort report (<code>GET /api/analytics/cohort</code>): every learner's
answers scored by BKT, and how learners did after each tutor outcome. Updated every 5 s.</p>
<section data-testid="learning-panel" id="learning-panel">
<dl class="facts cohort">
  <dt>Learners</dt><dd data-testid="cohort-learners" id="cohort-learners"></dd>
  <dt>Responses</dt><dd data-testid="cohort-responses" id="cohort-responses"></dd>
  <dt>Mastery rate</dt>
  <dd data-testid="cohort-mastery-rate" id="cohort-mastery-rate"></dd>
  <dt>Median opportunities to mastery</dt>
  <dd data-testid="cohort-median-opportunities" id="cohort-median-opportunities"></dd>
  <dt>Wheel-spin rate</dt><dd data-testid="cohort-wheel-spin-rate" id="cohort-wheel-spin-rate">
  </dd>
  <dt>Tutor p95 latency</dt><dd data-testid="cohort-tutor-p95" id="cohort-tutor-p95"></dd>
</dl>
<p id="cohort-note" class="muted"></p>
<h2>Learning gain by tutor outcome</h2>
<table data-testid="outcomes-table" id="outcomes-table" class="grid">
  <thead><tr><th>Tutor outcome</th><th class=num>Interactions</th><th class=num>Learners</th>
  <th class=num>Gain</th><th class=num>Normalised gain</th><th class=num>Next correct</th>
  <th class=num>Gain vs ok</th></tr></thead>
  <tbody></tbody>
</table>
<p id="empty" class="muted" hidden>No scored answers yet: they come from
<code>process_interaction</code> calls and plan steps.</p>
</section>
"""

TWIN_BODY = """
<h1>Digital twin</h1>
<p class="muted">Each prediction (<code>POST /api/twin/what-if</code>) was fitted on the
service's own spans and speaks of the runs created over its horizon; once that has passed,
the service checks it against what happened. Bars: the predicted p95 makespan's interval,
its dash the point prediction; diamonds: the p95 observed over the horizon, green when the
interval covered it, red when not. Updated every 5 s.</p>
<div data-testid="twin-chart" id="twin-chart" class="gantt"></div>
<p data-testid="twin-calibration" id="twin-calibration" class="muted"></p>
<section><h2>Ask a what-if</h2>
<form data-testid="twin-form" id="twin-form" class="filters">
  <label>Load &times; <input name="load" type="number" step="any" min="0" value="1"></label>
  <label>Slower agents (glob) <input name="latencyPattern" placeholder="tutor-agent-*"></label>
  <label>Latency &times; <input name="latencyFactor" type="number" step="any" min="0"
    placeholder="2"></label>
  <label>Capacity of (glob) <input name="capacityPattern" placeholder="tutor-agent-*"></label>
  <label>Capacity <input name="capacity" type="number" step="1" min="1"></label>
  <label>Window (ms) <input name="windowMs" type="number" step="any" min="1"
    placeholder="900000"></label>
  <label>Horizon (ms) <input name="horizonMs" type="number" step="any" min="1"
    placeholder="= window"></label>
  <label>Level <input name="level" type="number" step="any" min="0" max="1" value="0.9"></label>
  <label>Seed <input name="seed" type="number" step="1" min="0" value="0"></label>
  <button type="submit" data-testid="twin-ask">Predict</button>
</form>
<p data-testid="twin-result" id="twin-result" class="muted"></p></section>
<section><h2>Predictions</h2>
<table data-testid="twin-table" id="twin-table" class="grid">
  <thead><tr><th>Made (UTC)</th><th>What if</th><th>Status</th><th class=num>Runs seen</th>
  <th class=num>Predicted p95</th><th class=num>Interval</th><th class=num>Observed p95</th>
  <th>Covered</th></tr></thead>
  <tbody></tbody>
</table>
<p id="empty" class="muted" hidden>No predictions yet: ask one above once the service has
served some runs.</p>
</section>
"""


def mount_ui(api: FastAPI, service: Service, *, api_key: str | None) -> None:
    """Add the dashboard's pages, its static files and the offline ``/docs`` to ``api``
    (made with ``docs_url=None``)."""
    stats_of(service)  # hear attempts from now on, for the agents' 5-minute figures
    base = {
        "keyRequired": api_key is not None,
        "outcomeColors": OUTCOME_COLORS,
        "runColors": RUN_COLORS,
        "stateColors": STATE_COLORS,
        "statuses": list(RUN_STATUSES),
        "stepStates": list(STEP_STATES),
        "defaultPage": DEFAULT_PAGE,
        "maxPage": MAX_PAGE,
    }
    plotly = ["/ui/vendor/plotly.min.js"]
    api.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")

    @api.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=307)

    @api.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/runs", status_code=307)

    @api.get("/ui/runs", include_in_schema=False)
    async def runs_page() -> HTMLResponse:
        body = RUNS_BODY.format(
            statuses="".join(f'<option value="{s}">{s}</option>' for s in RUN_STATUSES),
            sizes="".join(
                f'<option value="{n}"{" selected" if n == DEFAULT_PAGE else ""}>{n}</option>'
                for n in (25, 100, 500, MAX_PAGE)
            ),
        )
        return _html(_page("Runs", "Runs", body, base, ["/ui/static/runs.js"]))

    @api.get("/ui/runs/{runId}", include_in_schema=False)
    async def run_view(runId: str = PathParam(max_length=128)) -> HTMLResponse:
        cfg = {**base, "runId": runId}
        scripts = [*plotly, "/ui/static/vendor/socket.io.min.js", "/ui/static/run.js"]
        return _html(_page(f"Run {runId}", "Runs", RUN_BODY, cfg, scripts))

    @api.get("/ui/agents", include_in_schema=False)
    async def agents_page() -> HTMLResponse:
        return _html(_page("Agents", "Agents", AGENTS_BODY, base, ["/ui/static/agents.js"]))

    @api.get("/ui/learning", include_in_schema=False)
    async def learning_page() -> HTMLResponse:
        cfg = {**base, "outcomes": list(an.OUTCOMES)}
        return _html(_page("Learning", "Learning", LEARNING_BODY, cfg, ["/ui/static/learning.js"]))

    @api.get("/ui/twin", include_in_schema=False)
    async def twin_page() -> HTMLResponse:
        scripts = [*plotly, "/ui/static/twin.js"]
        return _html(_page("Digital twin", "Twin", TWIN_BODY, base, scripts))

    @api.get("/ui/vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(
            _plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    swagger = _swagger_dir()
    if swagger is not None:
        api.mount("/ui/vendor/swagger", StaticFiles(directory=swagger), name="ui-swagger")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        if swagger is None:
            return _html(
                "<!DOCTYPE html><title>API docs</title><p>The offline API docs need Swagger UI "
                "5: <code>pip install 'orchkit[server]'</code> (package swagger-ui-bundle-v2). "
                'The schema itself is at <a href="/openapi.json">/openapi.json</a>.</p>'
            )
        return get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} - API docs",
            swagger_js_url="/ui/vendor/swagger/swagger-ui-bundle.js",
            swagger_css_url="/ui/vendor/swagger/swagger-ui.css",
            swagger_favicon_url="/ui/vendor/swagger/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Cache-Control": "no-cache"})
