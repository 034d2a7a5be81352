"""Issue 7, live half: a run always ends, on time, with the right status — whatever agents
and listeners do (raise anything, hang, ignore cancellation, block the loop, return
garbage), and whenever ``shutdown()`` is called. README "Failure semantics".

Real asyncio agents; each test bounds its own waits (``asyncio.wait_for``) and
pytest-timeout bounds the file, so a regression is a failure, not a hung suite.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchkit as ok
from core_harness import plan_of, step
from orchkit import AgentResponse, Plan
from orchkit._core import (CancelAttempt, FinishRun, Scheduler, StartAttempt, StartTimer,
                           compile_plan)
from orchkit._live import EventBus
from orchkit.testing import Fail, Hang, Ok, ScriptedAgent

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ the core's rules


def _started(actions):
    return [a.attempt for a in actions if isinstance(a, StartAttempt)]


def test_a_result_after_the_step_timeout_is_late_even_if_the_timer_has_not_fired_yet():
    core = Scheduler()
    run, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=50)])), 0.0, "r")
    (att,) = _started(actions)
    # the driver reports the result at 80 ms before it ran the 50 ms timer (loop blocked)
    out = core.attempt_succeeded(att, 80.0, "late")
    assert any(isinstance(a, CancelAttempt) and a.attempt is att for a in out)
    assert att.outcome == "timeout" and run.status == "failed"
    assert "timed out after 50 ms" in run.plans[0].errors["a"]


def test_a_result_after_the_plan_deadline_is_late():
    core = Scheduler()
    cp = compile_plan(plan_of("p", [step("a")], timeout=100))
    run, actions = core.submit(cp, 0.0, "r")
    (att,) = _started(actions)
    core.attempt_succeeded(att, 100.0, "on the deadline")  # a tie: the timer goes first
    assert run.status == "timed_out" and att.outcome == "cancelled"


def test_due_timers_fire_in_time_order_before_the_fact():
    core = Scheduler()
    plan = plan_of("p", [step("a", timeout=30), step("b", timeout=20), step("c")],
                   parallel=True, failFast=True)
    run, actions = core.submit(compile_plan(plan), 0.0, "r")
    a, b, c = _started(actions)
    core.attempt_succeeded(c, 40.0, "c")  # b's timer (20) then a's (30) are due first
    assert b.outcome == "timeout" and b.end_ms == 40.0
    assert a.outcome == "cancelled" and c.outcome == "cancelled"
    assert "step 'b' failed" in run.plans[0].errors["a"]


def test_with_hold_slots_a_cancelled_attempt_keeps_its_slot_until_it_exits():
    core = Scheduler(lambda agent_id: 1, hold_slots=True)
    _, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=10)])), 0.0, "r1")
    (first,) = _started(actions)
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    _, actions = core.submit(compile_plan(plan_of("q", [step("b")])), 0.0, "r2")
    assert _started(actions) == []  # queued behind the first: capacity 1
    out = core.timer_fired(timer, 10.0)
    assert any(isinstance(a, CancelAttempt) for a in out) and _started(out) == []
    assert first.outcome == "timeout" and first.held  # cancelled, its coroutine still runs
    out = core.attempt_exited(first, 25.0)  # only now has it really stopped
    (second,) = _started(out)
    assert second.start_ms == 25.0 and not first.held
    assert core.attempt_exited(first, 30.0) == []  # a repeated exit is a stale fact
    assert core.busy_ms() == {"agent": 25.0}


def test_without_hold_slots_the_slot_is_free_at_the_cancel():
    core = Scheduler(lambda agent_id: 1)
    _, actions = core.submit(compile_plan(plan_of("p", [step("a", timeout=10)])), 0.0, "r1")
    timer = next(a.timer for a in actions if isinstance(a, StartTimer))
    core.submit(compile_plan(plan_of("q", [step("b")])), 0.0, "r2")
    assert [a.start_ms for a in _started(core.timer_fired(timer, 10.0))] == [10.0]
