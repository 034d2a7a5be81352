"""Property tests of the scheduling core over random DAGs and random scripted outcomes.

Plans of 1-12 steps with random acyclic dependencies (acyclic by construction, then the
plan order shuffled so a dependency may come after its dependent), parallel or not,
maxConcurrency, failFast, retries, step and plan timeouts, hedged steps, an optional
fallback, agents with random capacities and circuit breakers (SPEC §10), and 1-3 runs
sharing one Scheduler, driven by the virtual-clock harness of ``core_harness``.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from core_harness import Harness, all_deps_succeeded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchkit import Plan
from orchkit._engine.core import CANCELLED, FAILED, SKIPPED, SUCCEEDED
from orchkit._engine.result import span_rows
from orchkit.testing import Crash, Fail, Garbage, Hang, Ok

AGENTS = ("A", "B", "C")
TERMINAL_EVENT = {"step:completed": SUCCEEDED, "step:failed": FAILED, "step:skipped": SKIPPED}

latency = st.integers(min_value=0, max_value=60)


def outcome(can_hang: bool):
    """One scripted outcome; about half are Ok so that plenty of runs get far or succeed."""
    choices = [
        st.builds(Ok, latency),
        st.builds(Fail, latency, st.just("scripted failure"), st.booleans()),
        st.builds(Garbage, latency),
        st.builds(Crash, latency),
    ]
    if can_hang:
        choices.append(st.just(Hang()))
    return st.integers(0, 9).flatmap(lambda k: choices[0] if k < 5 else st.one_of(*choices[1:]))


@st.composite
def retry_policy(draw):
    if draw(st.booleans()):
        return None
    rp = {
        "maxRetries": draw(st.integers(0, 3)),
        "backoffMs": draw(st.integers(0, 50)),
        "strategy": draw(st.sampled_from(["linear", "exponential", "fixed"])),
        "jitter": draw(st.sampled_from([0, 0.25, 1])),
    }
    if draw(st.booleans()):
        rp["maxBackoffMs"] = draw(st.integers(0, 80))
    rp["retryOn"] = draw(st.sampled_from([["error"], ["timeout"], ["error", "timeout"]]))
    return rp


@st.composite
def plan_dict(draw, plan_id: str, fallback_depth: int):
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    order = draw(st.permutations(range(n)))
    plan_timeout = draw(st.one_of(st.none(), st.integers(30, 600)))
    steps, scripts = [], {}
    for i in order:
        sid = f"s{i}"
        timeout = draw(st.one_of(st.none(), st.integers(5, 100)))
        step = {
            "id": sid,
            "agentId": draw(st.sampled_from(AGENTS)),
            "action": f"act{i % 3}",
            "dependencies": [f"s{d}" for d in deps[i]],
        }
        rp = draw(retry_policy())
        if rp is not None:
            step["retryPolicy"] = rp
        if timeout is not None:
            step["timeout"] = timeout
        if draw(st.integers(0, 3)) == 0:
            step["hedge"] = {
                "delayMs": draw(st.integers(0, 60)),
                "maxHedges": draw(st.integers(1, 2)),
            }
        steps.append(step)
        # a hang is only allowed when something will end it
        can_hang = timeout is not None or plan_timeout is not None
        scripts[f"{plan_id}/{sid}"] = draw(st.lists(outcome(can_hang), max_size=5))
    plan = {
        "id": plan_id,
        "steps": steps,
        "parallel": draw(st.booleans()),
        "failFast": draw(st.booleans()),
    }
    mc = draw(st.one_of(st.none(), st.integers(1, 4)))
    if mc is not None:
        plan["maxConcurrency"] = mc
    if plan_timeout is not None:
        plan["timeout"] = plan_timeout
    if fallback_depth and draw(st.booleans()):
        fb, fb_scripts = draw(plan_dict(f"{plan_id}_fb", fallback_depth - 1))
        plan["fallbackPlan"] = fb
        scripts.update(fb_scripts)
    return plan, scripts


@st.composite
def breaker(draw):
    window = draw(st.integers(1, 4))
    out = {
        "window": window,
        "minCalls": draw(st.integers(1, window)),
        "failureRate": draw(st.sampled_from([0.25, 0.5, 1.0])),
        "openMs": draw(st.integers(1, 100)),
        "halfOpenCalls": draw(st.integers(1, 2)),
    }
    if draw(st.booleans()):
        out["slowCallMs"] = draw(st.integers(1, 40))
        out["slowCallRate"] = draw(st.sampled_from([0.5, 1.0]))
    return out


@st.composite
def scenario(draw):
    plan, scripts = draw(plan_dict("p", 1))
    breakers = {a: draw(breaker()) for a in AGENTS if draw(st.integers(0, 2)) == 0}
    return {
        "policies": {"breakers": breakers} if breakers else None,
        "plan": plan,
        "script": scripts,
        "default": draw(
            st.integers(0, 3).flatmap(
                lambda k: st.builds(Ok, latency) if k else st.builds(Fail, latency)
            )
        ),
        "capacity": {a: draw(st.one_of(st.none(), st.integers(1, 3))) for a in AGENTS},
        "arrivals": draw(st.lists(st.integers(0, 80), min_size=1, max_size=3)),
        "seed": draw(st.integers(0, 2**16)),
        "deliver_stale": draw(st.booleans()),
        "fire_cancelled": draw(st.booleans()),
    }


def play(sc, events=True):
    h = Harness(
        sc["capacity"],
        script=sc["script"],
        default=sc["default"],
        seed=sc["seed"],
        deliver_stale=sc["deliver_stale"],
        fire_cancelled=sc["fire_cancelled"],
        events=events,
        policies=sc["policies"],
    )
    plan = Plan.model_validate(sc["plan"])
    ids = [h.submit(plan, at_ms=t, run_id=f"run{k}") for k, t in enumerate(sc["arrivals"])]
    h.run()
    return h, [h.runs[i] for i in ids]


def comparable_log(h):
    return [(t, e, sorted(p.items())) for t, e, p in h.events]


def spans(runs):
    """Every attempt's span row; NaN (never started) as None so rows compare equal."""
    return [
        tuple(None if v != v else v for v in row) for run in runs for row in span_rows(run, 0.0)
    ]


SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(scenario())
def test_scheduling_invariants(sc):
    h, runs = play(sc)
    assert not h.violations, h.violations
    caps = sc["capacity"]

    # every run ends exactly once, and nothing is left in flight
    assert sorted(r.run_id for r in h.finished) == sorted(r.run_id for r in runs)
    assert not h.in_flight

    # in flight: never above an agent's capacity, nor a plan run's limit
    for agent, peak in h.peak_agent.items():
        if caps[agent] is not None:
            assert peak <= caps[agent], (agent, peak)
    for run in runs:
        for pr, p in zip(run.plans, Plan.model_validate(sc["plan"]).chain()):
            # the plan's limit counts steps in flight; a step's hedges share its slot
            limit = (p.max_concurrency or len(p.steps)) if p.parallel else 1
            per_step = 1 + max((s.hedge.max_hedges for s in p.steps if s.hedge), default=0)
            assert h.peak_plan.get(id(pr), 0) <= limit * per_step

    # no step starts before every dependency succeeded (state and time)
    for rec in h.starts:
        assert all_deps_succeeded(rec), rec
        assert rec.breaker != "breaker:opened", rec  # an open breaker lets no call through
        pr, i = rec.attempt.prun, rec.attempt.step
        for d in pr.cp.deps[i]:
            ok_at = [
                a.end_ms
                for a in pr.run.attempts
                if a.prun is pr and a.step == d and a.outcome == "succeeded"
            ]
            assert len(ok_at) == 1 and ok_at[0] <= rec.at_ms

    terminal_events = Counter()
    terminal_state: dict[tuple, int | None] = defaultdict(lambda: None)
    for _, name, p in h.events:
        if name in TERMINAL_EVENT:
            key = (p["runId"], p["planId"], p["stepId"])
            terminal_events[key] += 1
            terminal_state[key] = TERMINAL_EVENT[name]
    assert max(terminal_events.values(), default=1) == 1  # at most one terminal event each

    for run in runs:
        plan = Plan.model_validate(sc["plan"])
        chain = plan.chain()
        assert [pr.cp.id for pr in run.plans] == [p.id for p in chain[: len(run.plans)]]
        for earlier in run.plans[:-1]:
            assert earlier.status != "succeeded"  # a fallback follows only a failure
        assert run.status == run.plans[-1].status
        assert run.end_ms == run.plans[-1].end_ms >= run.start_ms

        by_step = defaultdict(list)
        for a in run.attempts:
            by_step[(id(a.prun), a.step)].append(a)
            assert a.outcome in ("succeeded", "error", "timeout", "cancelled", "rejected")
            assert a.end_ms is not None and a.queued_ms <= a.end_ms
            if a.outcome == "rejected":  # without calling the agent (at once, or when its
                assert a.start_ms is None  # turn came and the breaker had opened meanwhile)
            if a.start_ms is not None:
                assert a.queued_ms <= a.start_ms <= a.end_ms

        for pr, p in zip(run.plans, chain):
            # every step ends in exactly one terminal state, matching its events
            for i, sid in enumerate(pr.cp.step_ids):
                state = pr.state[i]
                assert state in (SUCCEEDED, FAILED, SKIPPED, CANCELLED), (sid, state)
                # succeeded/failed/skipped steps have exactly one terminal event, and it
                # is the one of their state; cancelled steps have none
                ended_by = terminal_state[(run.run_id, pr.cp.id, sid)]
                assert ended_by == (None if state == CANCELLED else state), (sid, state, ended_by)
                assert (sid in pr.results) == (state == SUCCEEDED)
                assert (sid in pr.errors) == (state != SUCCEEDED)
                atts = by_step[(id(pr), i)]
                # attempts numbered 1..k, k <= (maxRetries + 1) tries x (1 + maxHedges)
                rp = p.steps[i].retry_policy
                hg = p.steps[i].hedge
                assert [a.number for a in atts] == list(range(1, len(atts) + 1))
                assert len(atts) <= ((rp.max_retries if rp else 0) + 1) * (
                    1 + (hg.max_hedges if hg else 0)
                )
                assert (
                    all(not a.hedge for a in atts)
                    if hg is None
                    else not atts[:1] or not atts[0].hedge
                )
                if state == SKIPPED:
                    assert not atts
                won = [a for a in atts if a.outcome == "succeeded"]
                if state == SUCCEEDED:
                    assert len(won) == 1
                    # the others ended first, or were cancelled when it won
                    assert all(a.end_ms <= won[0].end_ms for a in atts)
                    if hg is None:
                        assert atts[-1] is won[0]
                else:
                    assert not won
                if state == FAILED:
                    failed = ("error", "timeout", "rejected")
                    assert atts and (
                        atts[-1].outcome in failed
                        if hg is None
                        else any(a.outcome in failed for a in atts)
                    )
            states = set(pr.state)
            if pr.status == "succeeded":
                assert states == {SUCCEEDED}
            elif pr.status == "timed_out":
                assert (
                    p.timeout_ms is not None and abs(pr.end_ms - pr.start_ms - p.timeout_ms) < 1e-9
                )
            else:
                assert pr.status == "failed" and states != {SUCCEEDED}
            if p.timeout_ms is not None:
                assert pr.end_ms - pr.start_ms <= p.timeout_ms + 1e-9  # start + timeout in floats

    # FIFO at every agent: among attempts that started, earlier queued -> earlier start
    started = [a for run in runs for a in run.attempts if a.start_ms is not None]
    for agent in AGENTS:
        mine = sorted((a for a in started if a.agent_id == agent), key=lambda a: a.queued_ms)
        for x, y in zip(mine, mine[1:]):
            if x.queued_ms < y.queued_ms:
                assert x.start_ms <= y.start_ms


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario())
def test_same_inputs_same_event_log(sc):
    h1, runs1 = play(sc)
    h2, runs2 = play(sc)
    assert comparable_log(h1) == comparable_log(h2)
    assert spans(runs1) == spans(runs2)
    # building events or not does not change the schedule
    _, runs3 = play(sc, events=False)
    assert spans(runs3) == spans(runs1)
