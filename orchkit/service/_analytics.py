"""Learning analytics in the service (SPEC §18): every scored answer becomes a response row
in the store, and the learner and cohort reports and the mastery gauge are read from them.

Where the rows come from (``Service`` calls ``rows_of_call`` / ``rows_of_run``):

- a direct ``process_interaction`` call on a learning agent (``POST /api/agents``, session
  or agent action, or the socket's ``agent:learning``): one row; its ``runId`` is the
  ``runId`` the client put in ``data`` (the run that served the item, e.g. one it submitted
  with the tutor's feedback), else None;
- a plan run (``POST /api/runs``): one row per ``process_interaction`` step that succeeded,
  with the run's id, whatever the run's end (a later tutor step may have timed out).

A row: ``learnerId``, ``skill`` (the item's concept), ``correct``, ``tsMs`` (when it was
scored, ms since the epoch), ``runId``, ``activityId``, ``responseTimeMs``, ``source``.

BKT parameters, per skill: fitted (``ok.analytics.fit_bkt``, seed 0) on the store's
responses once the skill has ``MIN_RESPONSES`` responses from ``MIN_LEARNERS`` learners
(refitted when the store has grown by ``REFIT_GROWTH``); until then, for a concept of the
shipped learner data set (the learning agent's training data,
``orchkit/data/learners/interactions.csv``), BKT fitted on that data set; for any other
skill ``DEFAULT_PARAMS``. Each report says which (``source``: store, shipped, default).

A tutor outcome comes from the run named by the row: its spans, joined with
``ok.analytics.join`` (tutor: agents ``tutor-agent-*``); a row without a stored run is
``unknown``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from .. import analytics as an
from .._base.resources import data_path

log = logging.getLogger("orchkit.service")

MIN_RESPONSES = 200  # a skill's own fit needs this many responses ...
MIN_LEARNERS = 20  # ... from this many learners
REFIT_GROWTH = 1.25  # refit once the store holds 25 % more responses than at the last fit
DEFAULT_PARAMS = {"prior": 0.3, "learn": 0.1, "guess": 0.2, "slip": 0.1}
"""A skill with too few responses and not in the shipped data set: a learner is unlikely to
know it at first, learns it in ~10 opportunities, guesses 1 in 5, slips 1 in 10."""
GAUGE_TTL_MS = 10_000.0  # the mastery gauge is recomputed at most this often (on /metrics)
BOOT = 1000  # bootstrap resamples of the cohort's gains by outcome
COLUMNS = {"learner": "learnerId", "skill": "skill", "correct": "correct", "order": "tsMs"}


def _clip_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _row(data: Any, learner_id: Any, ts_ms: float, run_id: Any, rt: Any, source: str):
    """A response row from a process_interaction response's ``data``, or None."""
    if not isinstance(data, dict):
        return None
    learner = data.get("learnerId", learner_id)
    skill, correct = data.get("concept"), data.get("correct")
    if not (isinstance(learner, str) and isinstance(skill, str) and isinstance(correct, bool)):
        return None
    ok_rt = isinstance(rt, (int, float)) and not isinstance(rt, bool) and math.isfinite(rt)
    return {
        "learnerId": learner,
        "skill": skill,
        "correct": correct,
        "tsMs": float(ts_ms),
        "runId": _clip_id(run_id),
        "activityId": _clip_id(data.get("activityId")),
        "responseTimeMs": float(rt) if ok_rt else None,
        "source": source,
    }


def rows_of_call(input: Any, data: Any, ts_ms: float) -> list[dict[str, Any]]:
    """The row of a direct ``process_interaction`` call (``input`` its input, ``data`` its
    response's data); [] when the response scored nothing."""
    input = input if isinstance(input, dict) else {}
    response = input.get("response")
    rt = response.get("responseTimeMs") if isinstance(response, dict) else None
    row = _row(data, input.get("learnerId"), ts_ms, input.get("runId"), rt, "call")
    return [] if row is None else [row]


def rows_of_run(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ``process_interaction`` step that succeeded in a run ``record`` (from
    its ``step:completed`` events; time = the run's createdMs + the event's timeMs)."""
    rows = []
    t0 = float(record.get("createdMs") or 0.0)
    for ev in record.get("events") or ():
        response = ev.get("response")
        if ev.get("event") != "step:completed" or not isinstance(response, dict):
            continue
        if response.get("action") != "process_interaction":
            continue
        t = ev.get("timeMs")
        t = float(t) if isinstance(t, (int, float)) and math.isfinite(t) else 0.0
        row = _row(response.get("data"), None, t0 + t, record.get("runId"), None, "run")
        if row is not None:
            rows.append(row)
    return rows


@functools.lru_cache(maxsize=1)
def shipped_params() -> pd.DataFrame:
    """BKT fitted on the shipped learner data set (per concept; empty if it is missing)."""
    path = data_path("learners", "interactions.csv")
    try:
        df = pd.read_csv(path, usecols=["learner_id", "concept", "correct", "seq"])
    except (OSError, ValueError):
        return pd.DataFrame(columns=list(DEFAULT_PARAMS))
    return an.fit_bkt(df, skill="concept", order="seq").params


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["learnerId", "skill", "correct", "tsMs", "runId"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["correct"] = frame["correct"].astype(bool)
    frame["tsMs"] = frame["tsMs"].astype(float)
    return frame


def _num(x: Any, digits: int | None = None) -> float | None:
    """A finite float (rounded to ``digits``), else None (JSON has no NaN)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return x if digits is None else round(x, digits)


def _iso(ms: float) -> str:
    """ISO-8601 UTC with ms (as the service's other timestamps)."""
    stamp = datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class LearningAnalytics:
    """The service's analytics over its store: the BKT model (fitted or defaults, cached),
    the learner and cohort reports, and the ``orchkit_mastery_rate{skill}`` gauge."""

    def __init__(
        self,
        store: Any,
        gauge: Any = None,
        before_read: Callable[[], Awaitable[None]] | None = None,
    ):
        self.store = store
        self.before_read = before_read  # writes what the service keeps for the store
        self.gauge = gauge
        self._model: an.BKTModel | None = None
        self._sources: dict[str, str] = {}
        self._fitted_at = 0  # responses in the store at the last fit
        self._lock = asyncio.Lock()
        self._gauge_at = -math.inf  # ms of the gauge's last refresh
        self._gauge_count = -1  # responses it counted
        self._gauge_skills: set[str] = set()

    async def _responses(self, **where: Any) -> list[dict[str, Any]]:
        if self.before_read is not None:
            await self.before_read()
        return await self.store.list_responses(**where)

    async def _count(self) -> int:
        if self.before_read is not None:
            await self.before_read()
        return int(await self.store.count_responses())

    # -- the model ------------------------------------------------------------------------

    async def model(self, frame: pd.DataFrame | None = None) -> an.BKTModel:
        """The BKT model covering every skill of the store (``frame``: rows read from it
        since); rebuilt from the store's responses when they have grown by ``REFIT_GROWTH``
        or ``frame`` has a skill the model lacks."""
        async with self._lock:
            count = await self._count()
            skills = set() if frame is None else set(frame["skill"])
            known = set() if self._model is None else set(self._model.params.index)
            if self._model is None or count >= REFIT_GROWTH * self._fitted_at or skills - known:
                everything = _frame(await self._responses())
                self._model, self._sources = await asyncio.to_thread(_build_model, everything)
                self._fitted_at = max(count, 1)
            return self._model

    def _params(self, skill: str) -> dict[str, Any]:
        assert self._model is not None
        row = self._model.params.loc[skill]
        return {k: round(float(v), 4) for k, v in row.items()} | {
            "source": self._sources.get(skill, "default")
        }

    # -- reports --------------------------------------------------------------------------

    async def learner(self, learner_id: str) -> dict[str, Any]:
        """``GET /api/analytics/learners/{id}``: per skill the learner's mastery now, the
        opportunities, when mastery was reached and the trajectory (P(mastered) after each
        response)."""
        frame = _frame(await self._responses(learner_id=learner_id))
        out: dict[str, Any] = {
            "learnerId": learner_id,
            "responses": len(frame),
            "masteryThreshold": an.MASTERY,
            "skills": {},
        }
        if frame.empty:
            return out
        model = await self.model(frame)
        mastery, per = await asyncio.to_thread(
            lambda: (model.mastery(frame), model.learners(frame))
        )
        frame["mastery"] = mastery
        for skill, part in frame.groupby("skill", sort=True):
            s = per.loc[(learner_id, skill)]
            out["skills"][skill] = {
                "mastery": round(float(s["mastery"]), 4),
                "mastered": bool(s["mastered"]),
                "opportunities": int(s["opportunities"]),
                "correct": int(s["correct"]),
                "opportunitiesToMastery": _num(s["opportunities_to_mastery"]),
                "wheelSpinning": None
                if math.isnan(s["wheel_spinning"])
                else bool(s["wheel_spinning"]),
                "params": self._params(skill),
                "trajectory": [
                    {
                        "tsMs": float(r.tsMs),
                        "at": _iso(r.tsMs),
                        "correct": bool(r.correct),
                        "mastery": round(float(r.mastery), 4),
                        "runId": r.runId,
                    }
                    for r in part.sort_values("tsMs", kind="stable").itertuples()
                ],
            }
        return out

    async def cohort(self, since_ms: float | None) -> dict[str, Any]:
        """``GET /api/analytics/cohort``: the learners with a response at or after
        ``since_ms`` (all when None), each read over their whole record; the gains by tutor
        outcome and the tutor's p95 latency over the interactions at or after it."""
        rows = await self._responses()
        frame = _frame(rows)
        window = np.ones(len(frame), dtype=bool) if since_ms is None else frame["tsMs"] >= since_ms
        learners = set(frame.loc[window, "learnerId"])
        frame = frame[frame["learnerId"].isin(learners)].reset_index(drop=True)
        window = np.ones(len(frame), dtype=bool) if since_ms is None else frame["tsMs"] >= since_ms
        out: dict[str, Any] = {
            "since": None if since_ms is None else _iso(since_ms),
            "sinceMs": since_ms,
            "learners": len(learners),
            "responses": int(np.sum(window)),
            "masteryThreshold": an.MASTERY,
            "wheelSpinOpportunities": an.WHEEL_SPIN,
            "masteryRate": None,
            "medianOpportunitiesToMastery": None,
            "wheelSpinRate": None,
            "skills": {},
            "byOutcome": {},
            "tutorLatencyP95Ms": None,
            "servedResponses": 0,
        }
        if frame.empty:
            return out
        model = await self.model()
        spans = await self._spans(frame.loc[window, "runId"])
        table, by_outcome, latency = await asyncio.to_thread(
            _cohort_numbers, model, frame, np.asarray(window), spans
        )
        overall = table.loc["all"]
        out.update(
            masteryRate=_num(overall["mastery_rate"]),
            medianOpportunitiesToMastery=_num(overall["median_opportunities_to_mastery"]),
            wheelSpinRate=_num(overall["wheel_spin_rate"]),
        )
        for skill, r in table.drop(index="all").iterrows():
            out["skills"][skill] = {
                "learners": int(r["learners"]),
                "masteryRate": _num(r["mastery_rate"]),
                "medianOpportunitiesToMastery": _num(r["median_opportunities_to_mastery"]),
                "wheelSpinRate": _num(r["wheel_spin_rate"]),
                "params": self._params(skill),
            }
        out["byOutcome"] = by_outcome
        out["tutorLatencyP95Ms"] = _num(latency[0])
        out["servedResponses"] = latency[1]
        if since_ms is None:
            self._set_gauge(table)
        return out

    async def _spans(self, run_ids: pd.Series) -> pd.DataFrame | None:
        """The spans of the stored runs ``run_ids`` names (None when there are none)."""
        frames = []
        for run_id in sorted({r for r in run_ids if isinstance(r, str)}):
            rec = await self.store.get_run(run_id)
            spans = (rec or {}).get("spans") or []
            if spans:
                frames.append(pd.DataFrame(spans))
        if not frames:
            return None
        spans = pd.concat(frames, ignore_index=True)
        for col in ("queued_ms", "start_ms", "end_ms"):
            spans[col] = pd.to_numeric(spans[col], errors="coerce")
        spans["hedge"] = spans["hedge"].fillna(False).astype(bool)
        return spans

    # -- the gauge --------------------------------------------------------------------------

    async def refresh_gauge(self) -> None:
        """Recompute ``orchkit_mastery_rate{skill}`` (share of learners with a response on
        the skill whose P(mastered) is at least ``MASTERY`` now) from the store, at most
        every ``GAUGE_TTL_MS`` and only when responses were added."""
        if self.gauge is None:
            return
        now = time.time() * 1000.0
        if now - self._gauge_at < GAUGE_TTL_MS:
            return
        self._gauge_at = now
        try:
            count = await self._count()
            if count == self._gauge_count:
                return
            frame = _frame(await self._responses())
            if not frame.empty:
                model = await self.model()
                self._set_gauge(await asyncio.to_thread(model.cohort, frame))
            self._gauge_count = count
        except Exception as exc:  # noqa: BLE001 - /metrics answers, with the last values
            log.warning("orchkit_mastery_rate not refreshed: %s: %s", type(exc).__name__, exc)

    def _set_gauge(self, table: pd.DataFrame) -> None:
        if self.gauge is None:
            return
        for skill, rate in table["mastery_rate"].drop(index="all").items():
            self.gauge.labels(skill=str(skill)).set(float(rate))
            self._gauge_skills.add(str(skill))


def _build_model(frame: pd.DataFrame) -> tuple[an.BKTModel, dict[str, str]]:
    """Per skill of ``frame``: the store's own fit where it has enough responses, else the
    shipped data set's, else ``DEFAULT_PARAMS``; and which it was."""
    params, sources = {}, {}
    if not frame.empty:
        counts = frame.groupby("skill").agg(
            n=("correct", "size"), learners=("learnerId", "nunique")
        )
        enough = counts[(counts["n"] >= MIN_RESPONSES) & (counts["learners"] >= MIN_LEARNERS)]
        if len(enough):
            fitted = an.fit_bkt(frame[frame["skill"].isin(enough.index)], **COLUMNS).params
            for skill, row in fitted.iterrows():
                params[skill], sources[skill] = row[list(DEFAULT_PARAMS)].to_dict(), "store"
    shipped = shipped_params()
    for skill in sorted(set(frame["skill"]) - set(params)):
        if skill in shipped.index:
            params[skill] = shipped.loc[skill, list(DEFAULT_PARAMS)].to_dict()
            sources[skill] = "shipped"
        else:
            params[skill], sources[skill] = dict(DEFAULT_PARAMS), "default"
    if not params:
        params["(none)"] = dict(DEFAULT_PARAMS)
    return an.BKTModel.from_params(params, **COLUMNS), sources


def _cohort_numbers(
    model: an.BKTModel, frame: pd.DataFrame, window: np.ndarray, spans: pd.DataFrame | None
) -> tuple[pd.DataFrame, dict[str, Any], tuple[float, int]]:
    """The cohort's table, its gains by tutor outcome (window only) and the tutor's p95."""
    table = model.cohort(frame)
    joined = frame.copy()
    if spans is not None:
        served = joined["runId"].isin(set(spans["run_id"]))
        part = an.join(joined[served], spans, run="runId")
        joined["outcome"] = "unknown"
        joined.loc[served, "outcome"] = part["outcome"].astype(str)
        joined["tutor_ms"] = np.nan
        joined.loc[served, "tutor_ms"] = part["tutor_ms"]
    else:
        joined["outcome"], joined["tutor_ms"] = "unknown", np.nan
    joined.loc[~window, "outcome"] = None  # outside the window: no group
    joined["outcome"] = pd.Categorical(joined["outcome"], categories=list(an.OUTCOMES))
    by_outcome: dict[str, Any] = {}
    if joined["outcome"].notna().any():
        t = an.outcomes(joined, model=model, by=("outcome",), boot=BOOT, seed=0)
        has_ok = "ok" in t.index.get_level_values("group")  # the diffs are against "ok"
        for (_, group, metric), r in t.iterrows():
            g = by_outcome.setdefault(
                group, {"interactions": int(r["n"]), "learners": int(r["learners"])}
            )
            key = {"gain": "gain", "norm_gain": "normGain", "next_correct": "nextCorrect"}[metric]
            g[key] = _num(r["value"], 4)
            g[key + "Ci"] = [_num(r["ci_low"], 4), _num(r["ci_high"], 4)]
            g[key + "VsOk"] = (
                [_num(r[c], 4) for c in ("diff", "diff_low", "diff_high")] if has_ok else None
            )
    lat = joined.loc[window, "tutor_ms"].to_numpy(dtype=float)
    lat = lat[np.isfinite(lat)]
    p95 = float(np.percentile(lat, 95)) if lat.size else math.nan
    return table, by_outcome, (p95, int(lat.size))
