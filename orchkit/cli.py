"""The orchkit command line: validate, export, simulate, run, serve, tune, fit, demo, examples."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__, examples
from ._base.deps import EXTRAS, missing, require
from ._base.errors import OrchkitError, PlanValidationError
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
  orchkit simulate parallel_analysis --models "$(orchkit examples --models)"
  orchkit run session_initialization            run live with the built-in agents
  orchkit serve --port 8000                     REST + Socket.IO service (needs orchkit[server])
  orchkit worker --redis URL --agents tutor-agent-1   serve agents' BullMQ queues (orchkit[queue])
  orchkit run parallel_analysis --redis URL     run a plan on those workers

exit codes: 0 done, 1 the plan ran and failed, 2 invalid input or a missing extra."""


PLAN_HELP = "a plan file (JSON or YAML) or an example's name"


def _load(arg: str) -> Plan:
    """A plan file, or (when no such file exists) a shipped example's name."""
    if not Path(arg).exists() and arg in examples.names():
        return examples.plan(arg)
    return Plan.load(arg)


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


def _simulate(args: argparse.Namespace) -> int:
    from . import OverloadWarning, gantt, monte_carlo, simulate

    plan = _load(args.plan)
    workload = _workload(args.workload) if args.workload else None
    if args.mix:
        if workload is None:
            raise PlanValidationError("--mix applies to a --workload study (plans sharing agents)")
        workload = replace(workload, plans=_mix(plan, args.mix))
    quiet = args.json
    if args.gantt:
        one = simulate(plan, args.models, seed=args.seed, policies=args.policies)
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
            args.models,
            runs=args.runs,
            seed=args.seed,
            workload=workload,
            keep_spans=False,
            progress=not quiet and sys.stderr.isatty(),
            method=args.method,
            executor="processes" if args.processes else None,
            policies=args.policies,
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
        for metric, row in summary.metrics.iterrows():
            print(
                f"  {metric:<18} {row['value']:>12,.3f}   "
                f"[{row['ci_low']:,.3f}, {row['ci_high']:,.3f}]"
            )
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
    if args.gantt and not quiet:
        print(f"Gantt chart of one run written to {args.gantt}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Simulate the seed's parallel-analysis plan on the default agent models."""
    from . import Workload, gantt, makespan_chart, monte_carlo, simulate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = examples.plan("parallel_analysis")
    models = examples.models()
    one = simulate(plan, models, seed=1)
    print(f"one simulated run of '{plan.id}': {one.status} in {one.duration_ms:,.0f} ms")
    print(
        one.spans[
            ["step_id", "agent_id", "attempt", "queued_ms", "start_ms", "end_ms", "outcome"]
        ].to_string(index=False, float_format=lambda v: f"{v:,.1f}")
    )
    gantt(one, title=f"{plan.id}: one simulated run").write_html(out / "gantt.html")
    progress = sys.stderr.isatty()  # a bar on a terminal, none in a log
    mc = monte_carlo(plan, models, runs=args.runs, seed=1, keep_spans=1000, progress=progress)
    print(f"\nMonte-Carlo, {args.runs:,} runs (seed 1), times in ms:")
    print(mc.summary())
    makespan_chart(mc, color="status", title=f"{plan.id}: makespan").write_html(
        out / "makespan.html"
    )
    study = monte_carlo(
        plan,
        models,
        seed=1,
        workload=Workload(rate_per_s=1.0, horizon_ms=600_000),
        progress=progress,
    )
    print(f"\nCapacity study, 1 run/s for 10 minutes ({len(study.runs)} runs sharing capacity):")
    print(study.summary())
    mc.runs.to_csv(out / "runs.csv", index=False)
    print(f"\nwrote {out}/gantt.html, {out}/makespan.html, {out}/runs.csv")
    return 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from . import Orchestrator, gantt
    from .agents import for_plan, scaled_plan

    if args.format == "parquet":
        require("pyarrow", "--format parquet")
    plan = _load(args.plan)
    agents = for_plan(plan, args.models, args.time_scale, redis=args.redis)
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
            args.models,
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
        for name in examples.names():
            print(f"{name:<24} {examples.path(name)}")
        print(f"{'(agent models)':<24} {examples.models_path()}")
    return 0


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
    service.serve(
        host=args.host,
        port=args.port,
        store=args.store,
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
    p.add_argument("plan", help=PLAN_HELP)
    p.add_argument("--models", required=True, help="agent models file (YAML or JSON)")
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
        help="resilience policies (circuit breakers), YAML or JSON (SPEC §10.1)",
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
    p.add_argument("--models", help="agent models serving unmatched agent ids (SyntheticAgent)")
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
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once per queue (default 1)")
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
        "serve", help="run the service: REST + Socket.IO on one port (needs orchkit[server])"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
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
        help="resilience policies (YAML/JSON): circuit breakers per agent pattern",
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
    p.add_argument("--models", required=True, help="agent models file (YAML or JSON)")
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
