"""Speed work (issue 14) that changes behaviour: events built only for listeners, finished
runs freed by reference counting (no cycles left for the cyclic GC), lazy imports."""

from __future__ import annotations

import asyncio
import gc

import pytest
from core_harness import plan_of, run_plan, step

import orchkit as ok
from orchkit import EventBus
from orchkit._engine.core import CORE_EVENTS, Emit
from orchkit._engine.prepared import Prepared
from orchkit._runtimes.sim import capacity_study
from orchkit._runtimes.tables import declines
from orchkit._spec.inputs import StudyInputs
from orchkit.testing import Fail, Ok, ScriptedAgent, ScriptedModels

pytestmark = pytest.mark.timeout(60)

RETRY = {"maxRetries": 1, "backoffMs": 5, "maxBackoffMs": 5, "jitter": 0}


class Wants:
    """A ``wants`` probe for the core: counts the questions, answers from ``names``."""

    def __init__(self, names=()):
        self.names = set(names)
        self.asked: list[str] = []

    def __contains__(self, event):
        self.asked.append(event)
        return event in self.names


def busy_plan():
    """Every kind of step event: success, a retried failure, a failure, a skip, a fallback."""
    return plan_of(
        "p",
        [step("a"), step("b", retry=RETRY), step("c", deps=["b"]), step("d", deps=["c"])],
        fallbackPlan={"id": "fb", "steps": [step("z")]},
    )


SCRIPT = {"b": [Fail(3), Ok(3)], "c": [Fail(2, retryable=False)]}


def emitted(h):
    return [(t, a.event, a.payload) for t, a in h.actions if type(a) is Emit]


def test_core_builds_no_event_nobody_wants_and_asks_for_each():
    probe = Wants()
    h, run = run_plan(busy_plan(), script=SCRIPT, events=probe)
    assert emitted(h) == []
    assert (
        {
            "plan:started",
            "step:started",
            "step:completed",
            "queue:completed",
            "queue:failed",
            "agent:error",
            "step:retrying",
            "step:failed",
            "step:skipped",
            "plan:completed",
            "plan:fallback",
        }
        <= set(probe.asked)
        <= CORE_EVENTS
    )
    # the run itself is the same as with every event built
    h_all, run_all = run_plan(busy_plan(), script=SCRIPT)
    assert run.status == run_all.status == "succeeded"
    assert [(a.step_id, a.number, a.start_ms, a.end_ms, a.outcome) for a in run.attempts] == [
        (a.step_id, a.number, a.start_ms, a.end_ms, a.outcome) for a in run_all.attempts
    ]


def test_core_builds_exactly_the_wanted_events():
    h_all, _ = run_plan(busy_plan(), script=SCRIPT)
    every = emitted(h_all)
    for names in ({"step:completed"}, {"queue:failed", "plan:fallback"}, {"step:skipped"}):
        h, _ = run_plan(busy_plan(), script=SCRIPT, events=Wants(names))
        got = emitted(h)
        assert got == [e for e in every if e[1] in names] and got


def test_bus_wanted_follows_listeners():
    bus = EventBus()
    assert bus.wanted == set()
    cb = bus.on("step:completed", lambda p: None)
    assert bus.wanted == {"step:completed"}
    star = bus.on("*", lambda e, p: None)
    assert bus.wanted == CORE_EVENTS | {"*"}
    bus.off("*", star)
    assert bus.wanted == {"step:completed"}
    bus.once("plan:started", lambda p: None)
    bus.emit("plan:started", {})
    assert bus.wanted == {"step:completed"}  # the once listener is gone
    bus.off("step:completed", cb)
    assert bus.wanted == set()
    bus.on("agent:insight", lambda p: None)  # events outside the core are listed too
    bus.clear()
    assert bus.wanted == set()


def test_live_listener_added_mid_run_hears_later_events():
    plan = plan_of("p", [step("a"), step("b", deps=["a"]), step("c", deps=["b"])])

    async def main():
        orch = ok.Orchestrator(seed=0)
        await orch.register_agent(ScriptedAgent("agent", {"*": [Ok(5)]}, default=Ok(5)))
        heard: list[tuple[str, str | None]] = []
        first = await orch.orchestrate(plan)  # no listener: nothing built, run unchanged

        def on_completed(p):
            heard.append(("step:completed", p["stepId"]))
            if p["stepId"] == "a":  # from now on every event, from the next fact on
                orch.on("*", lambda e, q: heard.append((e, q.get("stepId"))))

        orch.on("step:completed", on_completed)
        second = await orch.orchestrate(plan)
        await orch.shutdown()
        return first, second, heard

    first, second, heard = asyncio.run(main())
    assert first.status == second.status == "succeeded"
    assert heard[0] == ("step:completed", "a")
    assert ("step:started", "c") in heard and ("step:completed", "c") in heard
    assert ("plan:completed", None) in heard
    assert ("step:started", "a") not in heard  # before any listener wanted it


class RefAgent(ok.Agent):
    """Names a job for each attempt, like RemoteAgent: the driver must claim or drop it."""

    def __init__(self):
        super().__init__("agent")
        self.refs: dict[str, str] = {}
        self.jobs = 0

    async def process(self, action, input, context):
        self.refs[context["job_id"]] = f"bull-{self.jobs}"
        self.jobs += 1
        return ok.AgentResponse(action=action, confidence=1.0)

    def job_ref(self, job_id):
        return self.refs.pop(job_id, None)


@pytest.mark.parametrize("listen", [False, True])
def test_job_refs_are_claimed_or_dropped(listen):
    plan = plan_of("p", [step("a"), step("b")])

    async def main():
        orch = ok.Orchestrator(seed=0)
        agent = RefAgent()
        await orch.register_agent(agent)
        got = []
        if listen:
            orch.on("queue:completed", lambda p: got.append(p["bullJobId"]))
        await orch.orchestrate(plan)
        left = dict(agent.refs)
        await orch.shutdown()
        return got, left

    got, left = asyncio.run(main())
    assert left == {}  # no ref kept for an event nobody heard
    assert sorted(got) == (["bull-0", "bull-1"] if listen else [])


def test_simulate_same_result_with_or_without_listeners():
    plan = busy_plan()

    def models():  # fresh scripts for each run
        return ScriptedModels(
            [
                ScriptedAgent(
                    "agent",
                    {"do_b": [Fail(3), Ok(3)], "do_c": [Fail(2, retryable=False)]},
                    default=Ok(4),
                )
            ]
        )

    bus = EventBus()
    heard = []
    bus.on("step:failed", heard.append)
    quiet = ok.simulate(plan, models())
    loud = ok.simulate(plan, models(), bus=bus)
    assert quiet.spans.equals(loud.spans) and len(quiet.spans) == 5
    assert [p["stepId"] for p in heard] == ["c"]


GC_PLAN = plan_of(
    "p",
    [step("a", retry=RETRY, timeout=1000), step("b", deps=["a"]), step("c", timeout=1)],
    parallel=True,
    fallbackPlan={"id": "fb", "steps": [step("z")]},
)
GC_MODELS = {
    "agents": {"agent": {"latency": {"dist": "lognormal", "median": 10, "p95": 30}, "error": 0.2}}
}


def cyclic_garbage(work) -> int:
    """Objects only the cyclic GC could free after ``work()`` (run with the GC off)."""
    gc.collect()
    gc.disable()
    try:
        work()
        return gc.collect()
    finally:
        gc.enable()


def test_simulated_runs_leave_no_reference_cycles():
    from orchkit._engine.core import compile_plan
    from orchkit._runtimes.sim import simulate_runs

    cp, models = compile_plan(GC_PLAN), ok.AgentModels.from_dict(GC_MODELS)
    statuses = []
    sink = lambda run: statuses.append(run.status)  # noqa: E731 - keeps no run
    few = cyclic_garbage(lambda: simulate_runs(cp, models, 0, 0, 50, sink))
    many = cyclic_garbage(lambda: simulate_runs(cp, models, 0, 0, 1000, sink))
    assert many == few < 50  # a constant (the driver's own), not per run
    assert set(statuses) >= {"succeeded", "failed"}  # the runs really varied
    assert cyclic_garbage(lambda: ok.simulate(GC_PLAN, GC_MODELS, seed=3)) < 50


@pytest.mark.parametrize("tables", [True, False], ids=["table-lane", "core"])
def test_capacity_study_leaves_no_per_run_cycles(tables):
    work = ok.Workload(rate_per_s=20.0, horizon_ms=10_000)
    prepared = Prepared.of(StudyInputs.of(GC_PLAN, GC_MODELS, None, work, where="test"))
    assert declines(prepared) is None
    n = cyclic_garbage(lambda: capacity_study(prepared, 1, True, False, tables=tables))
    assert n < 50, n  # a constant; ~200 runs of ~5 attempts each would leave thousands


# no timeouts: a pending timeout timer keeps its attempt (and run) alive until it is due
LIVE_PLAN = plan_of("p", [step("a", retry=RETRY), step("b", deps=["a"]), step("c")], parallel=True)


class Flaky(ok.Agent):
    """Fails every other call of step a (so it is retried), answers the rest at once."""

    def __init__(self):
        super().__init__("agent")
        self.calls = 0

    async def process(self, action, input, context):
        self.calls += 1
        if action == "do_a" and self.calls % 2:
            raise ok.AgentError("flaky")
        return ok.AgentResponse(action=action, confidence=1.0)


def test_live_runs_leave_no_reference_cycles():
    async def main():
        orch = ok.Orchestrator(seed=0)
        await orch.register_agent(Flaky())  # (a ScriptedAgent would keep every call)
        await orch.orchestrate(LIVE_PLAN)  # warm up (caches, first-call state)
        results = []
        n = cyclic_garbage(lambda: None)
        gc.disable()
        try:
            for _ in range(20):
                results.append(await orch.orchestrate(LIVE_PLAN))
            results.clear()
            n = gc.collect()
        finally:
            gc.enable()
        await orch.shutdown()
        return n

    assert asyncio.run(main()) == 0


HEAVY = ("pandas", "numpy", "simpy", "plotly")


def imported_by(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_import_and_light_commands_import_no_heavy_module():
    assert imported_by("import orchkit") == []
    assert (
        imported_by(
            "import contextlib, io, orchkit.cli as c\n"
            "for argv in (['validate', 'parallel_analysis'], ['export', 'parallel_analysis'],"
            " ['--help'], ['--version']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        c.main(argv)"
        )
        == []
    )
    # a name is resolved on first use, whatever way it is asked for
    assert {"pandas", "numpy", "simpy"} <= set(imported_by("from orchkit import monte_carlo"))


def test_every_public_name_resolves_and_is_listed():
    names = set(ok.__all__)
    assert names <= set(dir(ok))
    for name in sorted(names):
        assert getattr(ok, name) is not None
    assert ok.Plan.__module__ == "orchkit._spec.plan" and callable(ok.monte_carlo)
    assert ok.agents.__name__ == "orchkit.agents"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ok.nope  # noqa: B018


def test_studies_pause_the_cyclic_gc_only_while_they_simulate():
    import threading

    from orchkit._runtimes.sim import gc_paused

    work = ok.Workload(rate_per_s=20.0, horizon_ms=2_000)
    assert gc.isenabled()
    ok.monte_carlo(GC_PLAN, GC_MODELS, runs=200, seed=1, method="simpy", progress=False)
    ok.monte_carlo(GC_PLAN, GC_MODELS, seed=1, workload=work, progress=False)
    assert gc.isenabled()  # restored
    gc.disable()
    try:  # a caller that turned the collector off keeps it off
        ok.monte_carlo(GC_PLAN, GC_MODELS, runs=50, seed=1, method="simpy", progress=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError):  # restored when a simulation raises
        with gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("boom")
    assert gc.isenabled()
    # overlapping studies in threads: paused until the last one ends
    inside, release = threading.Event(), threading.Event()

    def held():
        with gc_paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=held)
    thread.start()
    inside.wait(5)
    ok.monte_carlo(GC_PLAN, GC_MODELS, runs=50, seed=1, method="simpy", progress=False)
    assert not gc.isenabled()  # the other study is still simulating
    release.set()
    thread.join(5)
    assert gc.isenabled()
