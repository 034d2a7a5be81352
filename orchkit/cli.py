"""The orchkit command line: validate, export, simulate, run, serve, tune, fit, demo, examples."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__, examples
from ._base.deps import EXTRAS, missing, require
from ._base.errors import MissingDependencyError, OrchkitError, PlanValidationError
from ._spec.plan import Plan, SeedCompatWarning

DESCRIPTION = """\
Design, simulate and run orchestration plans for AI agents. Times are in ms.

A PLAN argument is a plan file (JSON or YAML) or the name of a shipped example
(list them with: orchkit examples)."""

EPILOG = """\
examples:
  orchkit demo                                  simulate an example plan, write charts to out/
  orchkit examples                              the shipped example plans and their files
  orchkit validate my_plan.json                 exit 0, or 2 with the reason
  orchkit simulate parallel_analysis            10,000 runs on the shipped agent models
  orchkit capacity session_initialization --slo makespan_p95_ms=3000 --workload rate=20
                                                tutor slots for a p95 SLO (or why none can)
  orchkit run session_initialization            run live with the built-in agents
  orchkit run parallel_analysis --simulate speech   a simulated speech agent (no TensorFlow)
  orchkit serve --port 8000                     REST + Socket.IO service (needs orchkit[server])
  orchkit worker --redis URL --agents tutor-agent-1   serve agents' BullMQ queues (orchkit[queue])
  orchkit run parallel_analysis --redis URL     run a plan on those workers

exit codes: 0 done, 1 the plan ran and failed, 2 invalid input or a missing extra."""


PLAN_HELP = "a plan file (JSON or YAML), or an example's name or plan id"


def _load(arg: str) -> Plan:
    """A plan file, or (when no such file exists) a shipped example's name or its plan's
    id; a name that is neither is one error listing the examples and the closest ones."""
    if Path(arg).exists():
        return Plan.load(arg)
    known = examples.ids()
    if arg in known or arg in known.values():
        return examples.plan(arg)
    if Path(arg).suffix.lower() in (".json", ".yaml", ".yml") or "/" in arg or "\\" in arg:
        return Plan.load(arg)  # a file's path: the reader's own "cannot read" error
    raise PlanValidationError(
        f"cannot read plan file {arg}: no such file, and no example is named so "
        f"({examples.suggest(arg)})"
    )


def _validate(args: argparse.Namespace) -> int:
    plan = _load(args.plan)
    chain = plan.chain()
    steps = sum(len(p.steps) for p in chain)
    print(f"{args.plan}: plan '{plan.id}' is valid ({steps} steps in {len(chain)} plan(s))")
    return 0


def _export(args: argparse.Namespace) -> int:
    plan = _load(args.plan)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SeedCompatWarning)
        data = plan.to_dict(compat=args.compat)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    text = json.dumps(data, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _workload(text: str):
    from . import Workload

    keys = {
        "rate": "rate_per_s",
        "interval": "interval_ms",
        "horizon": "horizon_ms",
        "arrivals": "arrivals_ms",
        "population": "population",
        "think": "think_ms",
    }
    usage = (
        f"--workload {text[:80]!r}: use key=value pairs from {', '.join(keys)} (e.g. "
        "rate=20,horizon=600000; rate=0:5;600000:20,horizon=900000 for rates from "
        "given ms; arrivals=0;250;900; population=200,think=30000,horizon=3600000 for "
        "200 users who think 30 s between runs)"
    )
    kwargs: dict = {}

    def number(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            raise PlanValidationError(f"{usage}: {v.strip()[:40]!r} is not a number") from None

    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in keys or not value:
            raise PlanValidationError(usage)
        field = keys[key.strip()]
        if field == "arrivals_ms":
            kwargs[field] = tuple(number(v) for v in value.split(";"))
        elif field == "rate_per_s" and ":" in value:  # piecewise: FROM_MS:RATE;FROM_MS:RATE
            pieces = [piece.partition(":") for piece in value.split(";")]
            if any(not sep for _, sep, _ in pieces):
                raise PlanValidationError(f"{usage}: write every rate piece as FROM_MS:RUNS_PER_S")
            kwargs[field] = [(number(a), number(b)) for a, _, b in pieces]
        elif field == "population":
            n = number(value)
            if n != int(n):
                raise PlanValidationError(
                    f"{usage}: population must be a whole number, got {value}"
                )
            kwargs[field] = int(n)
        else:
            kwargs[field] = number(value)
    return Workload(**kwargs)  # its errors are PlanValidationErrors: one line, exit 2


def _mix(plan: Plan, mixes: list[str]) -> list[tuple[Plan, float]]:
    """``--mix PLAN:WEIGHT`` entries plus the positional plan, which gets 1 - their sum."""
    out = []
    for text in mixes:
        name, sep, weight = text.rpartition(":")
        try:
            w = float(weight)
        except ValueError:
            w = float("nan")
        if not sep or not name or not 0 < w < 1:
            raise PlanValidationError(
                f"--mix {text[:80]!r}: write PLAN:WEIGHT with a plan file "
                "or example name and a weight in (0, 1), e.g. "
                "--mix learning_activity:0.3"
            )
        out.append((_load(name), w))
    rest = 1.0 - sum(w for _, w in out)
    if rest <= 0:
        raise PlanValidationError(
            f"--mix weights add up to {1 - rest:g}; they must leave the "
            f"plan '{plan.id}' a share (sum < 1)"
        )
    return [(plan, rest), *out]


def _metric_lines(summary, deadline_ms: float | None, *, short: bool = False) -> list[str]:
    """The summary's metrics, one line each with its 95% interval (``short``: ms to whole
    ms, rates as percentages, else three decimals). A figure at the plan's deadline is
    flagged (a run that times out counts at its deadline), and when every run timed out
    the makespans are the deadline, not a measurement: said once instead of intervals
    like ``[30,000.000, 30,000.000]``."""
    m = summary.metrics
    every_run_out = "timeout_rate" in m.index and m.loc["timeout_rate", "value"] >= 1

    def fmt(metric: str, v: float) -> str:
        if v != v:
            return "n/a"
        if not short:
            text = f"{v:,.3f}"
        elif metric.endswith("_ms"):
            text = f"{v:,.0f}"
        elif metric.endswith("_rate"):
            text = f"{v:.1%}"
        else:
            text = f"{v:,.2f}"
        at = deadline_ms is not None and metric.endswith("_ms") and abs(v - deadline_ms) < 1e-6
        return text + ("†" if at and not every_run_out else "")

    lines, flagged = [], False
    for metric, row in m.iterrows():
        value, lo, hi = (float(row[k]) for k in ("value", "ci_low", "ci_high"))
        name = f"  {metric:<18} {fmt(metric, value):>12}"
        if value != value:
            lines.append(f"{name}   (no run to measure: none succeeded)")
        elif every_run_out and metric.startswith("makespan_") and deadline_ms is not None:
            lines.append(f"{name}   = the plan's deadline: every run timed out (no interval)")
        else:
            lines.append(f"{name}   [{fmt(metric, lo)}, {fmt(metric, hi)}]")
            flagged = flagged or "†" in lines[-1]
    note = ""
    if every_run_out and deadline_ms is not None:
        note = (
            f"every run hit the plan's {deadline_ms:,.0f} ms deadline: the agents could not "
            "keep up (see the warnings), so the makespans measure the deadline, not the "
            "work; lower the rate, add capacity or shorten the work"
        )
    elif flagged:
        note = (
            f"† the plan's deadline ({deadline_ms:,.0f} ms): a run that times out counts "
            "at it, so a figure or bound there says runs timed out, not how long they took"
        )
    if note:
        lines.append(textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="    "))
    return lines


def _study_inputs(args: argparse.Namespace) -> tuple[Plan, Any, Any]:
    """The plan, models and policies ``simulate`` studies: the arguments', or with
    ``--deployment`` exactly what ``orchkit serve --deployment`` would run (the bundle's
    plan of ``--plan NAME``, its capacities over the models, its policies)."""
    if args.deployment is None:
        if args.plan is None:
            raise PlanValidationError("simulate: give a plan (a file or an example name)")
        if args.role is not None:
            raise PlanValidationError("--plan NAME picks a plan of a --deployment bundle")
        # default: the shipped agent models
        return _load(args.plan), args.models or examples.models_path(), args.policies
    from . import AgentModels, Deployment

    if args.plan is not None:
        raise PlanValidationError(
            "with --deployment the plan is the bundle's (--plan NAME picks one of its plans); "
            "drop the plan argument"
        )
    if args.policies is not None:
        raise PlanValidationError("with --deployment the bundle's policies apply; drop --policies")
    bundle = Deployment.load(args.deployment)
    if args.models is not None:
        models = AgentModels.load(args.models)
    else:
        models = bundle.models or examples.models()
    return bundle.plan(args.role), bundle.simulated_models(models), bundle.policies


def _simulate(args: argparse.Namespace) -> int:
    from . import OverloadWarning, gantt, monte_carlo, simulate

    plan, models, policies = _study_inputs(args)
    workload = _workload(args.workload) if args.workload else None
    if args.mix:
        if workload is None:
            raise PlanValidationError("--mix applies to a --workload study (plans sharing agents)")
        workload = replace(workload, plans=_mix(plan, args.mix))
    quiet = args.json
    if args.gantt:
        one = simulate(plan, models, seed=args.seed, policies=policies)
        gantt(one, title=f"{plan.id}: one simulated run (seed {args.seed})").write_html(args.gantt)
    if (args.warmup is not None or args.replications != 1) and workload is None:
        raise PlanValidationError("--warmup and --replications apply to a --workload study")
    if args.replications < 1:
        raise PlanValidationError(f"--replications must be >= 1, got {args.replications}")
    if args.warmup is not None and not (0 <= args.warmup < float("inf")):
        raise PlanValidationError(f"--warmup must be a finite number of ms >= 0, got {args.warmup}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OverloadWarning)
        mc = monte_carlo(
            None if args.mix else plan,
            models,
            runs=args.runs,
            seed=args.seed,
            workload=workload,
            keep_spans=False,
            progress=not quiet and sys.stderr.isatty(),
            method=args.method,
            executor="processes" if args.processes else None,
            policies=policies,
            warmup_ms=args.warmup,
            replications=args.replications,
        )
    for w in caught:  # one line each, not a source listing
        if issubclass(w.category, OverloadWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    summary = mc.summary()
    if args.json:
        print(
            json.dumps(
                {
                    "plan_id": plan.id,
                    "runs": len(mc.runs),
                    "seed": args.seed,
                    "method": mc.method,
                    "method_reason": mc.method_reason,
                    **summary.to_dict(),
                    "breaker_events": mc.breakers["event"].value_counts().to_dict(),
                    "overload_events": mc.overload["event"].value_counts().to_dict(),
                },
                indent=2,
            )
        )
    else:
        what = f"workload {args.workload}" if workload else f"{len(mc.runs):,} runs"
        print(
            f"plan '{plan.id}': {what}, seed {args.seed}, {mc.method} path; times in ms, "
            "[95% confidence interval]"
        )
        if workload is not None:
            print(f"  {summary.describe()}")
        for line in _metric_lines(summary, None if args.mix else plan.timeout_ms):
            print(line)
        print("  agent utilisation (running attempts / capacity):")
        for row in summary.agents.itertuples():
            cap = (
                "unlimited"
                if row.capacity is None or row.capacity != row.capacity
                else int(row.capacity)
            )
            print(
                f"    {row.agent_id:<24} capacity {cap!s:<9} in flight {row.mean_in_flight:8.3f}"
                f"   utilisation {row.utilisation:6.3f}"
            )
        if args.policies:
            counts = mc.breakers["event"].value_counts()
            print(
                "  circuit breakers: "
                + (", ".join(f"{e} x{n}" for e, n in counts.items()) or "no transition")
            )
            if len(mc.overload):
                counts = mc.overload["event"].value_counts()
                print("  overload control: " + ", ".join(f"{e} x{n}" for e, n in counts.items()))
    if args.gantt and not quiet:
        print(f"Gantt chart of one run written to {args.gantt}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Simulate the seed's parallel-analysis plan on the default agent models: one run,
    independent runs, a capacity study; then what the numbers say and where the files are."""
    from . import Workload, gantt, makespan_chart, monte_carlo, simulate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = examples.plan("parallel_analysis")
    models = examples.models()
    one = simulate(plan, models, seed=1)
    print(f"one simulated run of '{plan.id}': {one.status} in {one.duration_ms:,.0f} ms")
    print("  its attempts (times in ms from the run's start):")
    table = one.spans[
        ["step_id", "agent_id", "attempt", "queued_ms", "start_ms", "end_ms", "outcome"]
    ].to_string(index=False, float_format=lambda v: f"{v:,.0f}")
    print("\n".join("  " + line for line in table.splitlines()))
    gantt(one, title=f"{plan.id}: one simulated run").write_html(out / "gantt.html")
    progress = sys.stderr.isatty()  # a bar on a terminal, none in a log
    mc = monte_carlo(plan, models, runs=args.runs, seed=1, keep_spans=1000, progress=progress)
    alone = mc.summary()
    print(
        f"\n{args.runs:,} independent runs (seed 1; each run has the agents to itself), "
        "times in ms, [95% interval]:"
    )
    print("\n".join(_metric_lines(alone, plan.timeout_ms, short=True)))
    makespan_chart(mc, title=f"{plan.id}: makespan of {args.runs:,} runs").write_html(
        out / "makespan.html"
    )
    rate = 1.0
    study = monte_carlo(
        plan,
        models,
        seed=1,
        workload=Workload(rate_per_s=rate, horizon_ms=600_000),
        progress=progress,
    )
    shared = study.summary()
    print(
        f"\ncapacity study: {rate:g} run/s for 10 minutes, {len(study.runs)} runs sharing "
        f"the agents' slots, times in ms;\n  {shared.describe()} [in brackets]:"
    )
    print("\n".join(_metric_lines(shared, plan.timeout_ms, short=True)))
    print(f"  {'agent':<20} {'slots':>5} {'busy':>6}   wait for a slot: mean, p95 (ms)")
    for row in shared.agents.itertuples():
        slots = "-" if row.capacity != row.capacity else f"{int(row.capacity)}"
        busy = "-" if row.utilisation != row.utilisation else f"{row.utilisation:.0%}"
        print(
            f"  {row.agent_id:<20} {slots:>5} {busy:>6}   "
            f"{row.queue_wait_mean_ms:,.0f}, {row.queue_wait_p95_ms:,.0f}"
        )
    mc.runs.to_csv(out / "runs.csv", index=False)
    print("\n" + _demo_reading(plan, models, alone, shared, rate, args.runs, out))
    return 0


def _demo_reading(plan, models, alone, shared, rate: float, runs: int, out: Path) -> str:
    """Three sentences reading the demo's own numbers: the bottleneck (the busiest agent of
    the capacity study) and what it costs, what to try next, and where the files are."""
    import fnmatch

    agents = shared.agents.dropna(subset=["utilisation"])
    top = agents.loc[agents["utilisation"].idxmax()]
    agent, busy, slots = str(top["agent_id"]), float(top["utilisation"]), int(top["capacity"])
    p95_alone, p95_shared = alone["makespan_p95_ms"], shared["makespan_p95_ms"]
    steps = " and ".join(s.id for s in plan.steps if s.agent_id == agent)
    pattern = next((p for p in models.patterns if fnmatch.fnmatchcase(agent, p)), agent)
    if busy >= 0.7:
        first = (
            f"The bottleneck is {agent}: {busy:.0%} busy with its {slots} slots at {rate:g} "
            f"run/s, its calls wait {top['queue_wait_mean_ms']:,.0f} ms on average for a slot "
            f"(p95 {top['queue_wait_p95_ms']:,.0f} ms), and the p95 makespan grows from "
            f"{p95_alone:,.0f} ms for a run alone to {p95_shared:,.0f} ms."
        )
        second = (
            f"Try next: more {agent} slots (tune `agents.{pattern}.capacity`) or a hedge or a "
            f"shorter timeout on {steps}; "
        )
    else:
        first = (
            f"No agent is a bottleneck at {rate:g} run/s: the busiest, {agent}, is "
            f"{busy:.0%} busy with {slots} slots, and the p95 makespan is {p95_shared:,.0f} ms "
            f"shared vs {p95_alone:,.0f} ms alone."
        )
        second = f"Try next: a higher rate (orchkit simulate {plan.id} --workload rate=…); "
    failed = 1 - alone["success_rate"]
    second += f"and {failed:.1%} of runs fail, which retries (a retryPolicy per step) would lift."
    third = (
        f"Files: {out}/gantt.html (the run above), {out}/makespan.html (the makespan CDF of "
        f"{runs:,} runs) and {out}/runs.csv (one row per run)."
    )
    text = f"{first} {second} {third}"  # paths and ids are never split across lines
    return "\n".join(textwrap.wrap(text, 100, break_on_hyphens=False, break_long_words=False))


def _stand_ins(plan: Plan, items: list[str]) -> list[tuple[str, list[str]]]:
    """``--simulate`` items (kinds, agent id globs, "all"; comma lists too) with the agent
    ids of the plan each names; an item naming none is an error listing what would."""
    import fnmatch

    from .agents import KINDS

    ids = list(dict.fromkeys(s.agent_id for p in plan.chain() for s in p.steps))
    out = []
    for item in (i.strip() for text in items or () for i in text.split(",") if i.strip()):
        pattern = "*" if item == "all" else KINDS.get(item, item)
        named = [a for a in ids if fnmatch.fnmatchcase(a, pattern)]
        if not named:
            raise PlanValidationError(
                f"--simulate {item}: names no agent of plan '{plan.id}' (kinds: "
                f"{', '.join(KINDS)}, all; agents: {', '.join(ids)})"
            )
        out.append((item, named))
    return out


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from . import Orchestrator, gantt
    from .agents import for_plan, kind_of, scaled_plan

    if args.format == "parquet":
        require("pyarrow", "--format parquet")
    plan = _load(args.plan)
    simulate = _stand_ins(plan, args.simulate)
    models = args.models or (examples.models_path() if simulate else None)
    try:
        agents = for_plan(
            plan, models, args.time_scale, redis=args.redis, simulate=[i for i, _ in simulate]
        )
    except MissingDependencyError as exc:  # a built-in agent without its library
        kind = kind_of(getattr(exc, "agent_id", "")) or "all"
        raise MissingDependencyError(
            f"{exc}; or stand in a simulated one: orchkit run {args.plan} --simulate {kind}"
        ) from None
    for item, ids in simulate:
        print(
            f"warning: --simulate {item}: {', '.join(ids)} simulated (a SyntheticAgent "
            f"drawing latency and errors from {models}), not the built-in agent",
            file=sys.stderr,
        )
    if args.time_scale > 0 and args.time_scale != 1:  # timeouts keep pace with the agents
        plan = scaled_plan(plan, args.time_scale)

    async def go():
        orch = Orchestrator(seed=args.seed)
        if args.verbose:
            orch.on(
                "*",
                lambda event, p: print(
                    f"  {p.get('timeMs', 0):10.1f} ms  {event:<16} "
                    f"{p.get('stepId') or p.get('planId') or p.get('agentId', '')}"
                ),
            )
        for agent in agents:
            await orch.register_agent(agent)
        try:
            return await orch.orchestrate(plan)
        finally:
            await orch.shutdown()

    result = asyncio.run(go())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spans_path = out / f"{plan.id}_spans.{args.format}"
    spans = result.spans  # with a time_scale column if SyntheticAgents slept scaled latencies
    if args.format == "parquet":
        spans.to_parquet(spans_path, index=False)
    else:
        spans.to_csv(spans_path, index=False)
    gantt_path = out / f"{plan.id}_gantt.html"
    gantt(result, title=f"{plan.id}: live run").write_html(gantt_path)
    chain = " -> ".join(f"{p['plan_id']} ({p['status']})" for p in result.fallback_chain)
    print(
        f"plan '{plan.id}': {result.status} in {result.duration_ms:,.1f} ms; plans tried: {chain}"
    )
    for step_id, state in result.step_states.items():
        extra = result.errors.get(step_id) or _brief(result.results.get(step_id))
        print(f"  {step_id:<24} {state:<10} {extra}")
    print(f"spans: {spans_path}\nGantt chart: {gantt_path}")
    return 0 if result.success else 1


def _worker(args: argparse.Namespace) -> int:
    from ._worker import main

    return main(args)


def _tune(args: argparse.Namespace) -> int:
    """Tune a plan to an SLO (SPEC §7.5): one line per chosen plan, the tuned plan(s) saved."""
    from ._studies.tune import load_space, tune

    plan = _load(args.plan)
    constraints = {}
    for text in args.constraint or []:
        metric, op, bound = next(
            ((text.partition(o)[0], o, text.partition(o)[2]) for o in (">=", "<=") if o in text),
            (text, "", ""),
        )
        if not op or not metric.strip():
            raise PlanValidationError(
                f"--constraint {text!r}: write METRIC>=NUMBER or "
                "METRIC<=NUMBER, e.g. success_rate>=0.995"
            )
        constraints[metric.strip()] = f"{op} {bound.strip()}"
    minimize = args.minimize[0] if len(args.minimize) == 1 else args.minimize
    try:
        res = tune(
            plan,
            args.models or examples.models_path(),  # default: the shipped models
            load_space(args.space),
            minimize=minimize,
            constraints=constraints,
            trials=args.trials,
            runs=args.runs,
            seed=args.seed,
            progress=sys.stderr.isatty(),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, OrchkitError):
            raise
        raise PlanValidationError(str(exc)) from None
    feasible = int(res.trials["feasible"].sum())
    print(
        f"plan '{plan.id}': {len(res.trials)} trials ({feasible} feasible) of {args.runs:,} "
        f"runs each, seed {args.seed}; {1000 * res.seconds / len(res.trials):,.0f} ms a trial"
    )
    if args.trials_csv:
        res.trials.to_csv(args.trials_csv, index=False)
        print(f"trials: {args.trials_csv}")
    if not feasible:
        print("no trial met the constraints; nearest reasons:", file=sys.stderr)
        for reason in res.trials["reason"].value_counts().index[:3]:
            print(f"  {reason}", file=sys.stderr)
        return 1
    plans = res.pareto
    out = Path(args.output)
    for i, tuned in enumerate(plans, 1):
        target = out if len(plans) == 1 else out.with_name(f"{out.stem}_{i}{out.suffix}")
        tuned.save(target)
        meta = tuned.meta["tuned"]
        values = ", ".join(f"{k}={v}" for k, v in meta["values"].items())
        print(f"trial {meta['trial']}: {values}  ->  {target}")
        for metric, p in meta["predicted"].items():
            print(f"  {metric:<18} {p['value']:>12,.4g}   [{p['ciLow']:,.4g}, {p['ciHigh']:,.4g}]")
    if args.verify:
        v = res.verify()
        print(f"verified on fresh seed {args.seed + 1} (optimism > 0: the search was optimistic):")
        for row in v.itertuples(index=False):
            print(
                f"  trial {row.trial} {row.metric:<18} predicted {row.predicted:,.4g}  verified "
                f"{row.verified:,.4g}  optimism {row.optimism:+,.4g}"
            )
    return 0


def _capacity_workload(text: str):
    """``--workload`` for ``orchkit capacity``: as ``simulate --workload``, except that a
    missing horizon defaults to enough time for about 10,000 runs (at least 10 minutes)."""
    keys = {part.partition("=")[0].strip() for part in text.split(",")}
    if "horizon" in keys or "arrivals" in keys:
        return _workload(text), None
    if any(part.strip().startswith("rate=") and ":" in part for part in text.split(",")):
        raise PlanValidationError(
            f"--workload {text[:80]!r}: piecewise rates need a horizon (add ,horizon=MS)"
        )
    probe = _workload(text + ",horizon=1000")  # its rate, to choose the horizon
    horizon = max(600_000.0, math.ceil(10_000 / probe.peak_rate_per_s()) * 1000.0)
    return replace(probe, horizon_ms=horizon), horizon


def _scale(models, text: str):
    """``--scale PATTERN:latency=X[,error=P,hang=P,capacity=N]`` applied to ``models``."""
    pattern, sep, rest = text.rpartition(":")
    usage = (
        f"--scale {text[:80]!r}: write PATTERN:latency=FACTOR, e.g. 'tutor-agent-*:latency=2' "
        "(2 = twice as slow), optionally with ,error=P ,hang=P ,capacity=N"
    )
    if not sep or not pattern or not rest:
        raise PlanValidationError(usage)
    kwargs: dict = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in ("latency", "error", "hang", "capacity") or not eq:
            raise PlanValidationError(usage)
        try:
            kwargs[key] = int(value) if key == "capacity" else float(value)
        except ValueError:
            raise PlanValidationError(f"{usage}: {value.strip()[:40]!r} is not a number") from None
    return models.scaled(pattern, **kwargs)


def _capacity(args: argparse.Namespace) -> int:
    """The smallest capacities that meet an SLO (SPEC §13.2): the answer, or "infeasible" and
    why; exit 0 either way (an answer, not an error)."""
    from . import AgentModels, capacity_for

    plan = _load(args.plan)
    slo: dict[str, float] = {}
    for text in args.slo:
        metric, sep, bound = text.partition("=")
        try:
            value = float(bound)
        except ValueError:
            value = math.nan
        if not sep or not metric.strip() or not math.isfinite(value):
            raise PlanValidationError(
                f"--slo {text[:80]!r}: write METRIC=BOUND, e.g. makespan_p95_ms=3000 (ms) or "
                "success_rate=0.99"
            )
        slo[metric.strip()] = value
    workload, horizon = _capacity_workload(args.workload)
    models = AgentModels.load(args.models) if args.models else examples.models()
    for text in args.scale:
        models = _scale(models, text)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()] if args.agents else None
    res = capacity_for(
        plan,
        models,
        slo=slo,
        workload=workload,
        agents=agents,
        max_capacity=args.max_capacity,
        seed=args.seed,
        policies=args.policies,
        progress=sys.stderr.isatty(),
    )
    where = args.models or "the default agent models"
    scaled = f", scaled {'; '.join(args.scale)}" if args.scale else ""
    auto = f" (horizon {horizon / 1000:,.0f} s: give horizon=MS to change it)" if horizon else ""
    print(f"plan '{plan.id}' on {where}{scaled}; workload {args.workload}{auto}; seed {args.seed}")
    print(res.describe())
    if args.chart:
        res.chart().write_html(args.chart)
        print(f"chart: {args.chart}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    """Fit agent models to a spans file (SPEC §7.5)."""
    import pandas as pd

    from . import fit_models

    path = Path(args.spans)
    if not path.exists():
        raise PlanValidationError(f"fit: no such spans file {path}")
    if path.suffix.lower() == ".parquet":
        require("pyarrow", "reading Parquet spans")
        spans = pd.read_parquet(path)
    else:
        try:
            spans = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise PlanValidationError(f"fit: {path} is not a CSV spans file: {exc}") from None
        spans.index = pd.RangeIndex(2, len(spans) + 2, name="line")  # errors name the line
    by = ("agent_id",) if args.by == "agent" else ("agent_id", "action")
    result = fit_models(spans, by=by, time_scale=args.time_scale)
    result.models.save(args.output)
    cols = ["agent_id", "action", "n", "censored", "family", "params", "error", "hang", "ks_p"]
    print(result.report[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.report:
        result.report.to_csv(args.report, index=False)
        print(f"report: {args.report}")
    print(f"models: {args.output}")
    return 0


def _brief(response) -> str:
    if response is None:
        return ""
    text = f"{response.action}: confidence {response.confidence:.2f}; {response.reasoning}"
    return text if len(text) <= 100 else text[:97] + "..."


def _examples(args: argparse.Namespace) -> int:
    if args.models:
        print(examples.models_path())
    elif args.path:
        try:
            print(examples.path(args.path))
        except ValueError as exc:
            raise PlanValidationError(str(exc)) from None
    else:
        for name, plan_id in examples.ids().items():  # either one names it on the CLI
            print(f"{name:<24} {'plan ' + plan_id:<29} {examples.path(name)}")
        print(f"{'(agent models)':<24} {'':<29} {examples.models_path()}")
    return 0


def _loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from . import service  # MissingDependencyError (exit 2) without the server extra

    factory = args.agent_factory
    if args.redis:
        from .agents.remote import require_bullmq, service_factory

        if factory:
            raise OrchkitError(
                "--redis and --agent-factory exclude each other: with --redis "
                "the workers make the agents (orchkit worker --factory ...)"
            )
        require_bullmq()
        try:
            factory = service_factory(args.redis, args.queue_partitions)
        except ValueError as exc:
            raise OrchkitError(str(exc)) from None
    api_key = os.environ.get("ORCHKIT_API_KEY") or None
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").rstrip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise OrchkitError(
                f"--api-key-file {args.api_key_file}: cannot read it ({exc})"
            ) from None
        if api_key is None:
            raise OrchkitError(f"--api-key-file {args.api_key_file} is empty")
    if api_key is None and not _loopback(args.host) and not args.insecure:
        raise OrchkitError(
            f"--host {args.host} is reachable from other machines: set a key "
            "(ORCHKIT_API_KEY or --api-key-file FILE), or pass --insecure to serve without one"
        )
    service.serve(
        host=args.host,
        port=args.port,
        store=args.store,
        api_key=api_key,
        deployment=args.deployment,
        idle_ms=args.idle_ms,
        call_timeout_ms=args.call_timeout_ms,
        max_body_bytes=args.max_body_bytes,
        log_level=args.log_level,
        agent_factory=factory,
        policies=args.policies,
        cors_origins=args.cors_origin,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchkit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"orchkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a plan file; exit 2 with the reason if invalid")
    p.add_argument("plan", help=PLAN_HELP)
    p.set_defaults(func=_validate)
    p = sub.add_parser("export", help="write a plan back as JSON (optionally for the seed)")
    p.add_argument("plan", help=PLAN_HELP)
    p.add_argument("--compat", choices=["seed"], default=None)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=_export)
    p = sub.add_parser("simulate", help="Monte-Carlo study of a plan against agent models")
    p.add_argument("plan", nargs="?", help=PLAN_HELP + " (none with --deployment)")
    p.add_argument(
        "--models",
        help="agent models file (YAML or JSON; default: the shipped models, "
        "orchkit examples --models; with --deployment, the bundle's)",
    )
    p.add_argument(
        "--deployment",
        metavar="FILE",
        help="simulate exactly what `orchkit serve --deployment FILE` runs: the bundle's "
        "plan, its capacities over the models, its policies",
    )
    p.add_argument(
        "--plan",
        dest="role",
        metavar="NAME",
        help="with --deployment: the bundle's plan to study (default: session_initialization, "
        "or its only plan)",
    )
    p.add_argument("--runs", type=int, default=10_000, help="independent runs (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workload",
        help="capacity study instead: rate=RUNS_PER_S,horizon=MS | "
        "rate=FROM_MS:RUNS_PER_S;FROM_MS:RUNS_PER_S,horizon=MS | "
        "interval=MS,horizon=MS | arrivals=MS;MS;...",
    )
    p.add_argument(
        "--warmup",
        type=float,
        metavar="MS",
        help="workload study: leave out runs arriving before MS (default: MSER-5)",
    )
    p.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="PLAN:WEIGHT",
        help="workload study with a mix of plans sharing the agents: each --mix "
        "plan (file or example name) arrives with this probability, PLAN with "
        "the rest (repeatable)",
    )
    p.add_argument(
        "--replications",
        type=int,
        default=1,
        metavar="K",
        help="workload study: K independent replications (intervals across them)",
    )
    p.add_argument("--method", choices=["auto", "simpy", "fast"], default="auto")
    p.add_argument(
        "--policies",
        metavar="FILE",
        help="resilience policies (circuit breakers, overload control), YAML or JSON "
        "(SPEC §10.1, §17)",
    )
    p.add_argument(
        "--processes",
        action="store_true",
        help="spread the SimPy path's runs over one process per core",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--gantt", metavar="FILE.html", help="write a Gantt chart of one run")
    p.set_defaults(func=_simulate)
    p = sub.add_parser("run", help="run a plan live against the built-in agents")
    p.add_argument("plan", help=PLAN_HELP)
    p.add_argument("--out", default="out", help="folder for spans and the Gantt chart")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument(
        "--models",
        help="agent models serving unmatched agent ids and --simulate's stand-ins "
        "(SyntheticAgent; with --simulate, default: the shipped models)",
    )
    p.add_argument(
        "--simulate",
        action="append",
        default=[],
        metavar="KIND|GLOB",
        help="a SyntheticAgent of the models stands in for these built-in agents: "
        "learning, tutor, speech, all, or an agent id glob (repeatable; e.g. "
        "--simulate speech without TensorFlow)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="SyntheticAgents sleep latency x this, and the plan's timeouts, "
        "backoffs and deadline are scaled to match (built-in agents are not "
        "scaled; the spans file records it; default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the backoff jitter")
    p.add_argument("-v", "--verbose", action="store_true", help="print every event")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="run every agent remotely: jobs on BullMQ queues at this Redis, "
        "served by `orchkit worker` processes (queue = agent id)",
    )
    p.set_defaults(func=_run)
    p = sub.add_parser(
        "worker", help="serve agents' BullMQ queues for remote runs (SIGTERM stops it cleanly)"
    )
    p.add_argument("--redis", required=True, metavar="URL", help="e.g. redis://127.0.0.1:6379/0")
    p.add_argument(
        "--agents",
        required=True,
        metavar="ID[,ID...]",
        help="agent ids to serve, one queue each; with --queue, globs of the ids "
        "the pool serves (e.g. 'learning-agent-*')",
    )
    p.add_argument(
        "--queue",
        metavar="NAME",
        help="serve one pool queue for many agent ids, each created on first use",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="jobs at once per queue (default 1)"
    )
    p.add_argument(
        "--deployment",
        metavar="FILE",
        help="take the concurrency from a deployment bundle: the capacity it gives the "
        "agents served (the largest, if they differ)",
    )
    p.add_argument(
        "--factory",
        metavar="MODULE:FUNCTION",
        help="function(agent_id) -> orchkit.Agent (default: the built-in agents)",
    )
    p.add_argument(
        "--models", help="agent models for ids no built-in agent serves (SyntheticAgent)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="SyntheticAgent sleeps latency x this (default 1)",
    )
    p.add_argument(
        "--lock-ms",
        type=int,
        default=30_000,
        help="BullMQ job lock; a dead worker's job is failed as stalled after at "
        "most lock + stall interval (default 30000)",
    )
    p.add_argument(
        "--stalled-interval-ms",
        type=int,
        default=30_000,
        help="how often this worker checks for stalled jobs (default 30000)",
    )
    p.add_argument(
        "--grace-ms",
        type=int,
        default=10_000,
        help="on SIGTERM/SIGINT, time active jobs get to finish (default 10000)",
    )
    p.add_argument(
        "--idle-ms",
        type=float,
        default=30 * 60_000,
        help="with --queue, release an agent after this long without a job (its "
        "in-memory state starts over on the next one; default 1800000)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every job")
    p.set_defaults(func=_worker)
    p = sub.add_parser(
        "serve",
        help="run the service: REST + Socket.IO on one port (needs orchkit[server])",
        description="Run the service. API key: $ORCHKIT_API_KEY or --api-key-file FILE "
        "(trailing whitespace stripped); with a key every /api route and socket needs it. "
        "A --host other machines can reach needs a key, or --insecure.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; another address needs a key or --insecure)",
    )
    p.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="read the API key from FILE (default: $ORCHKIT_API_KEY; none: no key)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without an API key",
    )
    p.add_argument(
        "--deployment",
        metavar="FILE",
        help="a deployment bundle (YAML/JSON, SPEC §14): its session_initialization plan, "
        "its agents' capacities, its policies; GET /api/deployment shows it",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--store",
        default="sqlite:///orchkit.db",
        help="sqlite:///FILE (default sqlite:///orchkit.db) or redis://HOST:PORT/DB",
    )
    p.add_argument(
        "--idle-ms",
        type=float,
        default=1_800_000,
        help="release a learner's agents after this long without a request "
        "(default 1800000 = 30 min)",
    )
    p.add_argument(
        "--call-timeout-ms",
        type=float,
        default=30_000,
        help="a request waiting for agents fails after this long (503) instead of "
        "hanging (default 30000)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="larger request bodies get 413 (default 1048576)",
    )
    p.add_argument(
        "--agent-factory",
        metavar="MODULE:FUNCTION",
        help="function(kind, agent_id) -> orchkit.Agent making every agent "
        "(default: the built-in learning, tutor and speech agents)",
    )
    p.add_argument(
        "--policies",
        metavar="FILE",
        help="resilience policies (YAML/JSON): circuit breakers and overload control per "
        "agent pattern",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to call the API and open sockets, e.g. "
        "http://localhost:3000 (repeatable; default: same origin only)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="run every agent remotely: RemoteAgents on the pool queues "
        "orchkit-learning / orchkit-tutor / orchkit-speech, served by "
        "`orchkit worker --queue orchkit-learning --agents 'learning-agent-*'` …",
    )
    p.add_argument(
        "--queue-partitions",
        type=int,
        default=1,
        metavar="N",
        help="with --redis: split each pool into orchkit-<kind>-0..N-1 by agent id, "
        "so that a learner's agent always runs on the same worker (default 1)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(func=_serve)
    p = sub.add_parser(
        "tune", help="search timeouts/retries/capacity for an SLO (needs orchkit[tune])"
    )
    p.add_argument("plan", help=PLAN_HELP)
    p.add_argument("--models", help="agent models file (YAML or JSON; default: the shipped models)")
    p.add_argument(
        "--space",
        required=True,
        metavar="SPACE.yaml",
        help="search space: dotted path -> {int: [lo, hi]} | {float: [lo, hi], "
        "log: true} | {choice: [...]}",
    )
    p.add_argument(
        "--minimize",
        required=True,
        action="append",
        metavar="METRIC",
        help="summary metric to minimise (repeat for a Pareto front)",
    )
    p.add_argument(
        "--constraint",
        action="append",
        metavar="METRIC>=X",
        help="e.g. success_rate>=0.995 or makespan_p95_ms<=20000 (judged on the "
        "95%% interval; repeatable)",
    )
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--runs", type=int, default=2000, help="simulated runs per trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "-o",
        "--output",
        default="tuned.json",
        help="tuned plan file (several objectives: NAME_1.json, NAME_2.json, ...)",
    )
    p.add_argument("--trials-csv", metavar="FILE", help="write every trial to a CSV file")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-simulate the tuned plan(s) on a fresh seed and print the optimism",
    )
    p.set_defaults(func=_tune)
    p = sub.add_parser(
        "capacity", help="the smallest agent capacities that meet an SLO under a workload"
    )
    p.add_argument("plan", help=PLAN_HELP)
    p.add_argument(
        "--slo",
        required=True,
        action="append",
        metavar="METRIC=BOUND",
        help="e.g. makespan_p95_ms=3000 (ms; an upper bound) or success_rate=0.99 (a lower "
        "bound); judged on the 95%% interval's conservative end (repeatable)",
    )
    p.add_argument(
        "--workload",
        required=True,
        help="arrivals as for simulate: rate=RUNS_PER_S[,horizon=MS] | interval=MS | "
        "population=N,think=MS (no horizon: about 10,000 runs, at least 10 minutes)",
    )
    p.add_argument("--models", help="agent models file (YAML or JSON; default: the shipped models)")
    p.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="PATTERN:latency=X",
        help="what-if: scale the latency of the model entries matching PATTERN by X (2 = twice "
        "as slow); also ,error=P ,hang=P ,capacity=N (repeatable)",
    )
    p.add_argument(
        "--agents",
        metavar="PATTERN[,PATTERN...]",
        help="the model patterns whose capacity is searched (default: every one the plan uses)",
    )
    p.add_argument("--max-capacity", type=int, default=256, help="largest capacity tried")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", metavar="FILE", help="resilience policies (YAML/JSON)")
    p.add_argument("--chart", metavar="FILE.html", help="write the SLO metric vs capacity chart")
    p.set_defaults(func=_capacity)
    p = sub.add_parser("fit", help="fit agent models to a spans file (needs orchkit[tune])")
    p.add_argument("spans", help="spans file (.csv or .parquet) from orchkit run or a study")
    p.add_argument("-o", "--output", default="models.yaml", help="models file to write")
    p.add_argument("--report", metavar="FILE.csv", help="write the fit report")
    p.add_argument(
        "--by",
        choices=["action", "agent"],
        default="action",
        help="one model per (agent, action) (default) or per agent",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="the trace ran at this time scale (SyntheticAgent --time-scale): "
        "times are divided by it",
    )
    p.set_defaults(func=_fit)
    p = sub.add_parser("demo", help="simulate the seed's parallel-analysis plan (defaults)")
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--out", default="out", help="folder for the charts (default: out)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("examples", help="list the shipped example plans and their files")
    p.add_argument("--path", metavar="NAME", help="print only the file of example NAME")
    p.add_argument(
        "--models", action="store_true", help="print only the default agent models' file"
    )
    p.set_defaults(func=_examples)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for invalid input: one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # one line per warning, not Python's two
            warnings.showwarning = _show_warning
            return args.func(args)
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except (OrchkitError, ValueError) as exc:  # bad input, also from argument checks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder that cannot be read or written
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional library imported deeper down
        if (exc.name or "").split(".")[0] not in EXTRAS:
            raise
        print(f"error: {missing(exc.name, f'orchkit {args.command}')}", file=sys.stderr)
        return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)
