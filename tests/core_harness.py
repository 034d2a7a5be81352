"""A tiny deterministic driver for the scheduling core, for tests.

No asyncio, no simpy: a virtual clock (ms) and a heap of pending facts (submissions,
attempt completions, timers), popped in (time, sequence) order. Outcomes of attempts come
from scripts of ``orchkit.testing`` outcomes (``Ok``, ``Fail``, ``Hang``, ``Garbage``,
``Crash``) keyed by ``"plan_id/step_id"`` or ``step_id``; the n-th outcome of a list serves
attempt n, ``default`` serves the rest.

While it runs, the harness records what a test needs to check §3: every action the core
returned, every event, the dependency states seen when an attempt starts, and the peak
number of attempts in flight per plan run and per agent.

    h = Harness(capacity={"a": 1}, script={"s1": [Fail(10), Ok(5)]})
    rid = h.submit(plan)            # at 0 ms
    h.run()
    assert h.runs[rid].status == "succeeded"

or, for one run, ``h, run = run_plan(plan, script=...)``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchkit._engine.core import (
    SUCCEEDED,
    Attempt,
    CancelAttempt,
    CancelTimer,
    Emit,
    FinishRun,
    Run,
    Scheduler,
    StartAttempt,
    StartTimer,
    Timer,
    compile_plan,
)
from orchkit._spec.plan import Plan
from orchkit._spec.policies import as_policies, breaker_lookup, overload_lookup
from orchkit.testing import Crash, Fail, Garbage, Hang, Ok

_SUBMIT, _DONE, _TIMER = 0, 1, 2


@dataclass
class StartRecord:
    """One StartAttempt: when, which attempt, the states of its step's dependencies, and
    its agent's last breaker event by then (None: no transition yet)."""

    at_ms: float
    attempt: Attempt
    dep_states: tuple
    breaker: str | None = None


class Harness:
    """Drive one ``Scheduler`` with a virtual clock.

    ``capacity``: agent id -> capacity (None or missing: unlimited), or a callable.
    ``policies``: circuit breakers and overload rules (a policies dict, SPEC §10.1, §17).
    ``deliver_stale``: still report completions of attempts the core cancelled (the core
    must ignore them). ``fire_cancelled``: still fire timers the core cancelled (harmless).
    """

    def __init__(
        self,
        capacity: Mapping[str, int | None] | Callable | None = None,
        *,
        script: Mapping[str, Sequence[Any]] | None = None,
        default: Any = Ok(10),
        seed: int = 0,
        deliver_stale: bool = False,
        fire_cancelled: bool = False,
        events: bool = True,
        policies: Any = None,
    ):
        if callable(capacity):
            cap = capacity
        else:
            caps = dict(capacity or {})
            cap = lambda agent_id: caps.get(agent_id)  # noqa: E731
        pol = as_policies(policies)
        self.core = Scheduler(
            cap,
            random.Random(seed),
            events=events,
            breakers=breaker_lookup(pol),
            overload=overload_lookup(pol),
        )
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default = default
        self.deliver_stale = deliver_stale
        self.fire_cancelled = fire_cancelled
        self.now = 0.0
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._run_ids = itertools.count(1)
        # records
        self.actions: list[tuple[float, Any]] = []  # (time, action) in order
        self.events: list[tuple[float, str, dict]] = []  # (time, event, payload)
        self.starts: list[StartRecord] = []
        self.cancelled: list[Attempt] = []  # CancelAttempt targets, in order
        self.timers: list[Timer] = []  # every StartTimer's timer
        self.cancelled_timers: set[int] = set()  # ids of timers the core cancelled
        self.runs: dict[Any, Run] = {}  # run id -> Run (once submitted)
        self.finished: list[Run] = []
        self.in_flight: set[Attempt] = set()  # started, not yet ended or cancelled
        self._reporting: Attempt | None = None  # the attempt whose end is being reported
        self.peak_plan: dict[int, int] = {}  # id(PlanRun) -> peak attempts in flight
        self.peak_agent: dict[str, int] = {}  # agent id -> peak attempts in flight
        self._plan_now: dict[int, int] = {}
        self._agent_now: dict[str, int] = {}
        self.violations: list[str] = []

    # -- inputs ---------------------------------------------------------------------

    def submit(self, plan: Plan | dict, at_ms: float = 0.0, run_id: Any = None) -> Any:
        """Submit a run of ``plan`` at ``at_ms`` (virtual ms); returns its run id.
        ``self.runs[run_id]`` holds the core's Run once the clock reached ``at_ms``."""
        plan = Plan.model_validate(plan)
        run_id = next(self._run_ids) if run_id is None else run_id
        self._push(at_ms, _SUBMIT, (plan, run_id))
        return run_id

    def outcome_for(self, att: Attempt) -> Any:
        """The scripted outcome of ``att`` (by plan/step, then step id; then default)."""
        for key in (f"{att.prun.cp.id}/{att.step_id}", att.step_id):
            outcomes = self.script.get(key)
            if outcomes is not None:
                i = att.number - 1
                return outcomes[i] if i < len(outcomes) else self.default
        return self.default

    def run(self, until_ms: float | None = None, max_facts: int = 100_000) -> Harness:
        """Pop and deliver facts in time order until none is left (or ``until_ms``)."""
        for _ in range(max_facts):
            if not self._heap or (until_ms is not None and self._heap[0][0] > until_ms):
                if until_ms is not None:
                    self.now = max(self.now, until_ms)
                return self
            at, _first, _seq, kind, obj = heapq.heappop(self._heap)
            if at < self.now:
                self.violations.append(f"time went backwards: {at} < {self.now}")
            self.now = at
            if kind == _SUBMIT:
                self._submit(*obj)
            elif kind == _TIMER:
                if id(obj) in self.cancelled_timers and not self.fire_cancelled:
                    continue
                self._apply(self.core.timer_fired(obj, at))
            else:
                att, outcome = obj
                if att not in self.in_flight:
                    if not self.deliver_stale:
                        continue
                    # the core first fires its timers due by now; the stale fact adds nothing
                    due = any(t.live and t.at_ms <= at for t in self.timers)
                    stale = self._report(att, outcome)
                    if stale and not due:
                        self.violations.append(f"stale fact for {att!r} gave actions {stale}")
                    elif stale:
                        self._apply(stale)
                    continue
                self._leave(att)
                self._reporting = att  # a timer due at this moment may cancel it first
                self._apply(self._report(att, outcome))
                self._reporting = None
        raise AssertionError(f"more than {max_facts} facts: a loop?")

    # -- helpers --------------------------------------------------------------------

    def event_log(self) -> list[tuple[float, str, dict]]:
        """Every event as (time, name, payload)."""
        return list(self.events)

    def named(self, event: str) -> list[dict]:
        """The payloads of every ``event``, in order."""
        return [p for _, e, p in self.events if e == event]

    def start_times(self, step_id: str, run: Run | None = None) -> list[float]:
        """When each attempt of ``step_id`` started (StartAttempt), in order."""
        return [
            r.at_ms
            for r in self.starts
            if r.attempt.step_id == step_id and (run is None or r.attempt.run is run)
        ]

    def retry_timers(self) -> list[float]:
        """``at_ms`` of every retry timer the core started."""
        from orchkit._engine.core import RETRY

        return [t.at_ms for t in self.timers if t.kind == RETRY]

    def _submit(self, plan: Plan, run_id: Any) -> None:
        run, actions = self.core.submit(compile_plan(plan), self.now, run_id)
        self.runs[run_id] = run
        self._apply(actions)

    def _push(self, at: float, kind: int, obj: Any) -> None:
        # timers first at equal times, as the core fires due timers before any fact
        heapq.heappush(self._heap, (at, kind != _TIMER, next(self._seq), kind, obj))

    def _report(self, att: Attempt, outcome: Any) -> list:
        now = self.now
        if isinstance(outcome, Ok):
            return self.core.attempt_succeeded(att, now, ("ok", att.step_id, att.number))
        if isinstance(outcome, Fail):
            return self.core.attempt_failed(att, now, outcome.message, retryable=outcome.retryable)
        if isinstance(outcome, Garbage):
            return self.core.attempt_failed(att, now, f"returned garbage {outcome.value!r}")
        if isinstance(outcome, Crash):
            return self.core.attempt_failed(att, now, f"raised {outcome.exception!r}")
        raise TypeError(f"no completion for outcome {outcome!r}")

    def _leave(self, att: Attempt) -> None:
        self.in_flight.discard(att)
        self._plan_now[id(att.prun)] -= 1
        self._agent_now[att.agent_id] -= 1

    def _apply(self, actions: list) -> None:
        now = self.now
        for action in actions:
            self.actions.append((now, action))
            kind = type(action)
            if kind is Emit:
                self.events.append((now, action.event, action.payload))
            elif kind is StartAttempt:
                att = action.attempt
                if att in self.in_flight:
                    self.violations.append(f"{att!r} started twice")
                pr, cp = att.prun, att.prun.cp
                last = next(
                    (e for _, a, e, *_ in reversed(self.core.breaker_log) if a == att.agent_id),
                    None,
                )
                self.starts.append(
                    StartRecord(now, att, tuple(pr.state[d] for d in cp.deps[att.step]), last)
                )
                self.in_flight.add(att)
                key = id(pr)
                self._plan_now[key] = self._plan_now.get(key, 0) + 1
                self.peak_plan[key] = max(self.peak_plan.get(key, 0), self._plan_now[key])
                agent = att.agent_id
                self._agent_now[agent] = self._agent_now.get(agent, 0) + 1
                self.peak_agent[agent] = max(self.peak_agent.get(agent, 0), self._agent_now[agent])
                outcome = self.outcome_for(att)
                if not isinstance(outcome, Hang):
                    self._push(now + outcome.latency_ms, _DONE, (att, outcome))
            elif kind is CancelAttempt:
                att = action.attempt
                self.cancelled.append(att)
                if att in self.in_flight:
                    self._leave(att)
                elif att is not self._reporting:
                    self.violations.append(f"cancel of {att!r}, which is not in flight")
            elif kind is StartTimer:
                timer = action.timer
                if timer.at_ms < now:
                    self.violations.append(f"timer in the past: {timer.at_ms} < {now}")
                self.timers.append(timer)
                self._push(timer.at_ms, _TIMER, timer)
            elif kind is CancelTimer:
                self.cancelled_timers.add(id(action.timer))
            elif kind is FinishRun:
                run = action.run
                if run in self.finished:
                    self.violations.append(f"run {run.run_id} finished twice")
                self.finished.append(run)
            else:
                self.violations.append(f"unknown action {action!r}")


def plan_of(id: str, steps: Sequence[dict], **kw: Any) -> Plan:
    """A Plan from camelCase step dicts and camelCase plan fields."""
    return Plan.model_validate({"id": id, "steps": list(steps), **kw})


def step(
    id: str,
    agent: str = "agent",
    deps: Sequence[str] = (),
    *,
    action: str | None = None,
    retry: dict | None = None,
    timeout: float | None = None,
) -> dict:
    """A camelCase step dict."""
    out: dict[str, Any] = {
        "id": id,
        "agentId": agent,
        "action": action or f"do_{id}",
        "dependencies": list(deps),
    }
    if retry is not None:
        out["retryPolicy"] = retry
    if timeout is not None:
        out["timeout"] = timeout
    return out


def state_names(run: Run, plan_index: int = -1) -> dict[str, str]:
    """step id -> state name ("succeeded", "failed", ...) of one plan of ``run``."""
    pr = run.plans[plan_index]
    return {sid: pr.state[i].name.lower() for i, sid in enumerate(pr.cp.step_ids)}


def run_plan(plan: Plan | dict, **harness_kwargs: Any) -> tuple[Harness, Run]:
    """Run one plan from 0 ms to its end in a fresh Harness; returns (harness, run)."""
    h = Harness(**harness_kwargs)
    rid = h.submit(plan)
    h.run()
    assert not h.violations, h.violations
    return h, h.runs[rid]


def all_deps_succeeded(rec: StartRecord) -> bool:
    return all(s == SUCCEEDED for s in rec.dep_states)
