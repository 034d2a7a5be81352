"""The digital twin in the service (SPEC §16.3): predictions from the service's own spans,
checked automatically once their time has passed, and how often they came true.

- ``POST /api/twin/what-if``: a twin (``ok.Twin``) is fitted on the spans of the runs
  created in the last ``windowMs`` (default 15 minutes), read from the store page by page;
  the what-if runs in a worker thread, one at a time, so the event loop keeps serving. The
  prediction is stored (it survives a restart) and speaks of the runs created over its
  horizon: ``horizonMs`` (default: the window's length) from the moment it was made.
- ``GET /api/twin/predictions/{id}``: the prediction and, once its horizon has passed (and
  its runs have ended, or ``GRACE_MS`` more has passed), its check against the spans of the
  runs created over the horizon (``check_prediction``). Due predictions are checked when
  asked for and every ``TICK_MS`` by a background task.
- ``GET /api/twin/predictions``: the newest predictions (the dashboard's /ui/twin reads it).
- ``GET /api/twin/calibration``: per metric, how many checked predictions' intervals
  covered what happened.

Which runs: those submitted as plans (``POST /api/runs``, kind ``api``) and ended; a
session's initialisation runs on its learner's own agents and is left out. Capacities come
from the agents registered now (spans cannot show them). A plan id stands for one plan.

Gauges (in the service's registry): ``orchkit_twin_predicted_p95_ms{bound}`` (the latest
prediction's p95 makespan: ``value``, ``ci_low``, ``ci_high``; +Inf when unstable),
``orchkit_twin_observed_p95_ms`` (the latest checked prediction's observed p95),
``orchkit_twin_coverage{metric}`` (share of checked predictions whose interval covered the
observed value) and ``orchkit_twin_predictions{status}`` (pending, checked, no_runs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
import uuid
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .._base.errors import PlanValidationError, ServiceError
from .._engine.result import SPAN_COLUMNS
from .._studies import twin as tw
from ._schemas import ERRORS, ErrorBody
from ._store import Store, open_store

log = logging.getLogger("orchkit.service")

DEFAULT_WINDOW_MS = 900_000.0  # SPEC §16.1's default window
DEFAULT_MIN_SAMPLES = 50  # finished attempts an (agent, action) needs in the window
BOOTSTRAP = 20  # the parameter interval's bootstrap size
TICK_MS = 5_000.0  # due predictions are checked this often
GRACE_MS = 30_000.0  # past its horizon, a check waits at most this long for runs to end
PAGE = 500  # run records read per page
KEEP_RUNS = 5_000  # simulated makespans kept with a prediction (for the KS test)
MAX_SIMULATED_RUNS = 50_000  # rate x load x horizon above this: refused (422)
CALIBRATION_LIMIT = 1_000  # the newest predictions calibration counts
KINDS = ("api",)  # the runs the twin reads (see the module's docstring)
STATUSES = ("pending", "checked", "no_runs")

Pattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _now_ms() -> float:
    return time.time() * 1000.0


def _iso(ms: float) -> str:
    stamp = datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _num(x: Any) -> float | None:
    """A finite float, else None (JSON has no NaN or Infinity)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# -- reading a window of spans from a store --------------------------------------------------


def spans_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans of ended run ``records`` on one clock (ms since the epoch: each run's
    ``createdMs`` plus its spans' times), with their run's status as ``run_status``."""
    rows = []
    for rec in records:
        t0 = float(rec.get("createdMs") or 0.0)
        for span in rec.get("spans") or ():
            row = {c: span.get(c) for c in SPAN_COLUMNS}
            for c in ("queued_ms", "start_ms", "end_ms"):
                v = row[c]
                row[c] = t0 + float(v) if isinstance(v, (int, float)) else math.nan
            row["run_status"] = rec.get("status")
            rows.append(row)
    return rows


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A spans frame (``SPAN_COLUMNS`` and ``run_status``) of ``spans_of`` rows."""
    frame = pd.DataFrame(rows, columns=[*SPAN_COLUMNS, "run_status"])
    for c in ("queued_ms", "start_ms", "end_ms"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    frame["hedge"] = frame["hedge"].fillna(False).astype(bool)
    return frame


async def read_window(
    store: Store, since_ms: float, until_ms: float
) -> tuple[pd.DataFrame, dict[str, Any], int]:
    """The spans of the ended runs (kinds ``KINDS``) created in [since_ms, until_ms], read
    page by page; their plans ``{id: plan dict}`` (the newest of an id); how many of the
    window's runs are still running."""
    rows: list[dict[str, Any]] = []
    plans: dict[str, Any] = {}
    running, cursor = 0, None
    while True:
        page, cursor = await store.runs_between(since_ms, until_ms, limit=PAGE, cursor=cursor)
        ended = []
        for rec in page:
            if rec.get("kind") not in KINDS:
                continue
            if rec.get("status") == "running":
                running += 1
                continue
            ended.append(rec)
            if isinstance(rec.get("plan"), dict):
                plans[str(rec.get("planId"))] = rec["plan"]
        rows.extend(spans_of(ended))
        if cursor is None:
            return frame_of(rows), plans, running


def _run_sync(coro_fn: Any) -> Any:
    """Run ``coro_fn()`` to its end from sync code, in a thread of its own when this one
    already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result()


def read_store_url(
    url: str,
    *,
    window_ms: float | None = None,
    since_ms: float | None = None,
    until_ms: float | None = None,
) -> pd.DataFrame:
    """``ok.Twin``'s reader of a store URL (``STORE_READERS``): the spans of the runs
    created in the most recent ``window_ms`` up to the newest run, or in [since_ms,
    until_ms]. A SQLite file that does not exist is refused, not created."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path != ":memory:" and not Path(path).is_file():
            raise PlanValidationError(
                f"twin: source {url!r}: no SQLite store at {path!r} (the file does not "
                "exist); give the URL `orchkit serve --store` was started with"
            )

    async def read() -> pd.DataFrame:
        store = open_store(url)
        await store.open()
        try:
            lo, hi = since_ms, until_ms
            if window_ms is not None:
                latest = await store.latest_run_ms()
                if latest is None:
                    return frame_of([])
                lo, hi = latest - window_ms, latest
            frame, _, _ = await read_window(
                store, -math.inf if lo is None else lo, math.inf if hi is None else hi
            )
            return frame
        finally:
            await store.close()

    return _run_sync(read)


for _scheme in ("sqlite", "redis", "rediss", "unix"):
    tw.STORE_READERS[_scheme] = read_store_url


# -- the request -----------------------------------------------------------------------------


class WhatIfBody(BaseModel):
    """``POST /api/twin/what-if``: the observed workload of the window, changed."""

    model_config = ConfigDict(extra="forbid")

    load: float = Field(
        1.0, gt=0, le=1000, allow_inf_nan=False, description="factor on the arrival rate"
    )
    latency: dict[Pattern, Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        max_length=64,
        description="{agent id or glob: factor}: those agents' latencies scaled",
    )
    capacity: dict[Pattern, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=dict, max_length=64, description="{agent id or glob: n}: capacities"
    )
    horizonMs: float | None = Field(
        None,
        gt=0,
        le=86_400_000,
        allow_inf_nan=False,
        description="how long the prediction speaks for, ms from now (default: windowMs)",
    )
    windowMs: float | None = Field(
        None,
        gt=0,
        le=7 * 86_400_000,
        allow_inf_nan=False,
        description="the refit window: spans of the runs created in the last windowMs "
        "(default: the server's, 900000)",
    )
    minSamples: int | None = Field(
        None, ge=1, le=1_000_000, description="finished attempts an (agent, action) needs"
    )
    level: float = Field(0.9, gt=0, lt=1, allow_inf_nan=False, description="intervals' level")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the simulations")


# -- the twin of one service -----------------------------------------------------------------


def _metric_records(metrics: pd.DataFrame) -> list[dict[str, Any]]:
    names = {
        "value": "value",
        "sim_low": "simLow",
        "sim_high": "simHigh",
        "param_low": "paramLow",
        "param_high": "paramHigh",
        "ci_low": "ciLow",
        "ci_high": "ciHigh",
    }
    return [
        {"metric": str(m), **{names[c]: _num(r[c]) for c in names}} for m, r in metrics.iterrows()
    ]


def _metrics_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A stored prediction's metrics back as a frame (None: +inf for a high bound or a value
    of an unstable prediction, else NaN)."""
    frame = pd.DataFrame(records).set_index("metric")
    frame = frame.rename(columns={"ciLow": "ci_low", "ciHigh": "ci_high"})
    for c in ("value", "ci_low", "ci_high"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    inf = frame["value"].isna()
    frame.loc[inf, "value"] = math.inf
    frame.loc[frame["ci_high"].isna() & inf, "ci_high"] = math.inf
    return frame


def _check_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "metric": str(m),
            "observed": _num(r["observed"]),
            "predicted": _num(r["predicted"]),
            "ciLow": _num(r["ci_low"]),
            "ciHigh": _num(r["ci_high"]),
            "covered": bool(r["covered"]),
            "relativeError": _num(r["relative_error"]),
            "ksP": _num(r["ks_p"]),
        }
        for m, r in table.iterrows()
    ]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            ("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): _jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, str)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    return str(obj)


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    """A stored prediction as the API shows it (without the simulated makespans)."""
    return {k: v for k, v in rec.items() if k not in ("predictedRuns", "plans")}


def _p95(rec: dict[str, Any]) -> dict[str, Any]:
    """The p95 makespan row of a prediction and of its check."""
    row = next((m for m in rec.get("metrics", ()) if m["metric"] == "makespan_p95_ms"), {})
    seen = next((m for m in rec.get("check") or () if m["metric"] == "makespan_p95_ms"), {})
    return {
        "value": row.get("value"),
        "ciLow": row.get("ciLow"),
        "ciHigh": row.get("ciHigh"),
        "observed": seen.get("observed"),
        "covered": seen.get("covered"),
    }


_GAUGES: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def _gauges(registry: Any) -> tuple[Any, ...]:
    """The twin's gauges in ``registry``, made once (an app made twice over one service
    shares them)."""
    if registry not in _GAUGES:
        from prometheus_client import Gauge

        _GAUGES[registry] = (
            Gauge(
                "orchkit_twin_predicted_p95_ms",
                "The latest twin prediction's p95 makespan in ms (bound: value, ci_low, ci_high)",
                ["bound"],
                registry=registry,
            ),
            Gauge(
                "orchkit_twin_observed_p95_ms",
                "The p95 makespan in ms observed over the latest checked prediction's horizon",
                registry=registry,
            ),
            Gauge(
                "orchkit_twin_coverage",
                "Share of the checked twin predictions whose interval covered the observed value",
                ["metric"],
                registry=registry,
            ),
            Gauge(
                "orchkit_twin_predictions",
                "Twin predictions by status",
                ["status"],
                registry=registry,
            ),
        )
    return _GAUGES[registry]


class TwinService:
    """The twin of one ``Service``: what-ifs on its spans, their records in its store, their
    checks, the calibration and the gauges. ``start()`` loads the pending predictions and
    starts the tick; ``stop()`` ends it."""

    def __init__(
        self,
        service: Any,
        *,
        window_ms: float = DEFAULT_WINDOW_MS,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        bootstrap: int = BOOTSTRAP,
        tick_ms: float = TICK_MS,
    ):
        self.service = service
        self.window_ms = float(window_ms)
        self.min_samples = int(min_samples)
        self.bootstrap = int(bootstrap)
        self.tick_ms = float(tick_ms)
        self._predicting = asyncio.Lock()  # one what-if at a time (each takes seconds)
        self._checking = asyncio.Lock()
        self._pending: dict[str, float] = {}  # prediction id -> when it is due (ms)
        self._task: asyncio.Task | None = None
        (self.g_predicted, self.g_observed, self.g_coverage, self.g_predictions) = _gauges(
            service.metrics.registry
        )

    @property
    def store(self) -> Store:
        return self.service.store

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            recs = await self.store.list_predictions(CALIBRATION_LIMIT)
            self._pending = {r["id"]: r["dueMs"] for r in recs if r.get("status") == "pending"}
            latest = recs[0] if recs else None
            if latest is not None:
                self._set_predicted(latest)
            await self.calibration()
        except Exception as exc:  # noqa: BLE001 - the twin never stops the service starting
            log.warning("twin: predictions not loaded: %s: %s", type(exc).__name__, exc)
        self._task = asyncio.ensure_future(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_ms / 1000.0)
            now = _now_ms()
            for pid, due in sorted(self._pending.items(), key=lambda kv: kv[1]):
                if due > now:
                    continue
                try:
                    await self.check_due(pid)
                except Exception as exc:  # noqa: BLE001 - keep ticking
                    log.warning("twin: check of %s failed: %s: %s", pid, type(exc).__name__, exc)

    # -- predictions -----------------------------------------------------------------------

    async def what_if(self, body: WhatIfBody) -> dict[str, Any]:
        """Fit a twin on the window's spans and predict (in a thread); store the record."""
        async with self._predicting:
            made = _now_ms()
            window = body.windowMs or self.window_ms
            frame, plans, _ = await read_window(self.store, made - window, made)
            if frame.empty:
                raise ServiceError(
                    f"the twin needs a window of spans: no ended run (POST /api/runs) was "
                    f"created in the last {window:,.0f} ms (windowMs); send traffic first, "
                    "or widen windowMs"
                )
            capacity = {
                a.agent_id: a.capacity
                for a in self.service.orch.all_agents()
                if isinstance(getattr(a, "capacity", None), int)
            }
            twin, p = await asyncio.to_thread(self._predict, frame, plans, capacity, body, window)
        horizon = float(p.assumptions["horizon_ms"])
        rng = np.random.default_rng(body.seed)
        runs = p.runs
        if len(runs) > KEEP_RUNS:
            runs = runs.iloc[np.sort(rng.choice(len(runs), KEEP_RUNS, replace=False))]
        rec = {
            "id": f"twin_{int(made)}_{uuid.uuid4().hex[:8]}",
            "createdMs": made,
            "createdAt": _iso(made),
            "status": "pending",
            "request": body.model_dump(),
            "windowMs": window,
            "windowStartMs": made - window,
            "windowEndMs": made,
            "horizonMs": horizon,
            "horizonStartMs": made,
            "horizonEndMs": made + horizon,
            "dueMs": made + horizon,
            "level": p.level,
            "unstable": bool(p.unstable),
            "offeredLoad": _jsonable(p.offered_load),
            "assumptions": _jsonable(p.assumptions),
            "stale": _jsonable(twin.stale),
            "metrics": _metric_records(p.metrics),
            "check": None,
            "observedRuns": None,
            "checkedMs": None,
            "checkedAt": None,
            "plans": plans,
            "predictedRuns": {
                "makespanMs": [float(x) for x in runs["makespan_ms"]],
                "status": [str(x) for x in runs["status"]],
            },
        }
        await self.store.save_prediction(rec)
        self._pending[rec["id"]] = rec["dueMs"]
        self._set_predicted(rec)
        self._count()
        return _public(rec)

    def _predict(
        self,
        frame: pd.DataFrame,
        plans: dict[str, Any],
        capacity: dict[str, int],
        body: WhatIfBody,
        window: float,
    ) -> tuple[tw.Twin, tw.WhatIf]:
        min_samples = body.minSamples or self.min_samples
        try:
            twin = tw.Twin(
                frame,
                plans,
                capacity=capacity or None,
                window_ms=window,
                min_samples=min_samples,
                bootstrap=self.bootstrap,
            )
        except PlanValidationError as exc:
            if "min_samples" in str(exc) or "no run arrived" in str(exc):
                raise ServiceError(
                    f"the twin needs at least {min_samples} finished attempts per (agent, "
                    f"action) in its window of {window:,.0f} ms: {str(exc).removeprefix('twin: ')}"
                    "; send more traffic, widen windowMs or lower minSamples"
                ) from None
            raise
        horizon = body.horizonMs or window
        runs = twin.rate_per_s * body.load * horizon / 1000.0
        if runs > MAX_SIMULATED_RUNS:
            raise ValueError(
                f"fields 'load' and 'horizonMs': the window's {twin.rate_per_s:.3g} runs/s x "
                f"load {body.load:g} over {horizon:,.0f} ms is {runs:,.0f} runs to simulate "
                f"(at most {MAX_SIMULATED_RUNS:,}); lower load or horizonMs"
            )
        p = twin.what_if(
            load=body.load,
            latency=dict(body.latency) or None,
            capacity=dict(body.capacity) or None,
            horizon_ms=horizon,
            level=float(body.level),
            seed=body.seed,
        )
        return twin, p

    async def get(self, prediction_id: str) -> dict[str, Any]:
        """The prediction (checked first if it is due)."""
        rec = await self.store.get_prediction(prediction_id)
        if rec is None:
            raise HTTPException(
                404, f"no twin prediction {prediction_id!r} (POST /api/twin/what-if makes one)"
            )
        if rec.get("status") == "pending" and rec["dueMs"] <= _now_ms():
            rec = await self.check_due(prediction_id) or rec
        return _public(rec)

    async def list(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` predictions, newest first, in brief (the p95 band and what
        was observed)."""
        recs = await self.store.list_predictions(limit)
        return [
            {
                k: r.get(k)
                for k in (
                    "id",
                    "createdMs",
                    "createdAt",
                    "status",
                    "horizonStartMs",
                    "horizonEndMs",
                    "level",
                    "unstable",
                    "observedRuns",
                    "request",
                )
            }
            | {"p95": _p95(r)}
            for r in recs
        ]

    async def check_due(self, prediction_id: str) -> dict[str, Any] | None:
        """Check a due prediction against the runs created over its horizon; None while
        they still run (until ``GRACE_MS`` past the horizon)."""
        async with self._checking:
            rec = await self.store.get_prediction(prediction_id)
            if rec is None or rec.get("status") != "pending":
                self._pending.pop(prediction_id, None)
                return rec
            now = _now_ms()
            lo, hi = rec["horizonStartMs"], rec["horizonEndMs"]
            frame, plans, running = await read_window(self.store, lo, hi)
            if running and now < hi + GRACE_MS:
                return None
            if frame.empty:
                rec.update(status="no_runs", observedRuns=0)
            else:
                metrics = _metrics_frame(rec["metrics"])
                predicted = pd.DataFrame(
                    {
                        "makespan_ms": rec["predictedRuns"]["makespanMs"],
                        "status": rec["predictedRuns"]["status"],
                    }
                )
                table = await asyncio.to_thread(
                    tw.check_prediction, metrics, predicted, frame, {**plans, **rec["plans"]}
                )
                rec.update(
                    status="checked",
                    check=_check_records(table),
                    observedRuns=int(frame["run_id"].nunique()),
                )
            rec.update(checkedMs=now, checkedAt=_iso(now))
            await self.store.save_prediction(rec)
            self._pending.pop(prediction_id, None)
        p95 = _p95(rec)["observed"]
        if p95 is not None:
            self.g_observed.set(p95)
        await self.calibration()
        return rec

    async def calibration(self) -> dict[str, Any]:
        """Per metric, how many checked predictions' intervals covered what happened (the
        newest ``CALIBRATION_LIMIT`` predictions); sets the coverage gauges."""
        recs = await self.store.list_predictions(CALIBRATION_LIMIT)
        counts = {s: 0 for s in STATUSES}
        per: dict[str, dict[str, Any]] = {}
        levels = set()
        for r in recs:
            counts[r.get("status", "pending")] = counts.get(r.get("status", "pending"), 0) + 1
            if r.get("status") != "checked":
                continue
            levels.add(r.get("level"))
            for row in r.get("check") or ():
                m = per.setdefault(row["metric"], {"checked": 0, "covered": 0})
                m["checked"] += 1
                m["covered"] += bool(row["covered"])
        for name, m in per.items():
            m["coverage"] = m["covered"] / m["checked"] if m["checked"] else None
            if m["coverage"] is not None:
                self.g_coverage.labels(metric=name).set(m["coverage"])
        for s, n in counts.items():
            self.g_predictions.labels(status=s).set(n)
        return {
            "predictions": len(recs),
            "pending": counts.get("pending", 0),
            "checked": counts.get("checked", 0),
            "noRuns": counts.get("no_runs", 0),
            "levels": sorted(x for x in levels if x is not None),
            "metrics": per,
        }

    def _set_predicted(self, rec: dict[str, Any]) -> None:
        p95 = _p95(rec)
        inf = rec.get("unstable") and p95["value"] is None
        for bound, key in (("value", "value"), ("ci_low", "ciLow"), ("ci_high", "ciHigh")):
            v = p95[key]
            if v is None and inf and bound != "ci_low":
                v = math.inf
            self.g_predicted.labels(bound=bound).set(math.nan if v is None else v)

    def _count(self) -> None:
        self.g_predictions.labels(status="pending").set(len(self._pending))


# -- the routes ------------------------------------------------------------------------------


def _twin(request: Request) -> TwinService:
    return request.app.state.twin


def build_twin_router(auth: Any) -> APIRouter:
    """``/api/twin/...``; ``auth`` guards them as every /api route."""
    api = APIRouter(
        prefix="/api/twin",
        tags=["twin"],
        dependencies=[Depends(auth)],
        responses={k: ERRORS[k] for k in (400, 401, 413, 422)},
    )
    too_few = {"model": ErrorBody, "description": "too few spans in the window to fit a twin"}

    @api.post("/what-if", responses={409: too_few})
    async def what_if(body: WhatIfBody, request: Request) -> Any:
        """Fit the twin on the spans of the last `windowMs` and predict the system with the
        observed workload changed (load factor, latency factors and capacities by agent
        glob) over `horizonMs` from now. Answers the stored prediction: `id`, `metrics`
        (one record per metric: value, simLow/simHigh, paramLow/paramHigh, ciLow/ciHigh;
        ms), `unstable`, `offeredLoad`, `assumptions`, `dueMs` (when it is checked)."""
        return await _twin(request).what_if(body)

    @api.get("/predictions")
    async def predictions(request: Request, limit: int = Query(100, ge=1, le=1000)) -> Any:
        """The newest predictions, newest first: status, horizon and the p95 band with
        what was observed (`p95 {value, ciLow, ciHigh, observed, covered}`, ms)."""
        return {"predictions": await _twin(request).list(limit)}

    @api.get("/predictions/{predictionId}", responses={404: {"model": ErrorBody}})
    async def prediction(request: Request, predictionId: str = PathParam(max_length=128)) -> Any:
        """The prediction; once its horizon has passed, checked against the runs created
        over it (`status` "checked", `check`: one record per metric with observed,
        predicted, ciLow, ciHigh, covered, relativeError, ksP)."""
        return await _twin(request).get(predictionId)

    @api.get("/calibration")
    async def calibration(request: Request) -> Any:
        """How many checked predictions' intervals covered what happened, per metric
        (`metrics {metric: {checked, covered, coverage}}`), and the predictions by status."""
        return await _twin(request).calibration()

    return api


__all__ = [
    "TwinService",
    "WhatIfBody",
    "build_twin_router",
    "frame_of",
    "read_store_url",
    "read_window",
    "spans_of",
]
