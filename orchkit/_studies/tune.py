"""Tuning a plan to an SLO (SPEC §7.1): an optuna search over plan and model paths, each
trial a Monte-Carlo study with the same seed (common random numbers).

A trial is feasible when every constrained metric's 95% interval lies on the right side
of its bound (ci_low for ``>=``, ci_high for ``<=``): a lucky point estimate is not enough.
Trials whose plan is invalid are recorded as infeasible with the reason. optuna's study
stays internal; the user gets a frame of trials and plans carrying their provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._base.deps import require
from .._base.errors import PlanValidationError
from .._base.version import VERSION
from .._spec.inputs import StudyInputs
from .._spec.models import AgentModels
from .._spec.plan import Plan
from .montecarlo import run_study

# ------------------------------------------------------------------ search space


@dataclass(frozen=True)
class Int:
    """Integers low..high (inclusive), in steps of ``step``; ``log=True`` samples on a log scale."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step)
        ):
            raise TypeError(f"Int(low, high, step) takes integers, got {self}")
        if self.low > self.high or self.step < 1 or (self.log and self.low < 1):
            raise ValueError(f"{self}: need low <= high, step >= 1 (and low >= 1 with log=True)")

    def _optuna(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def _ends(self) -> list:
        return [self.low, self.high]


@dataclass(frozen=True)
class Float:
    """Real numbers in [low, high]; ``log=True`` samples on a log scale (e.g. timeouts)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in (self.low, self.high)
        ):
            raise TypeError(f"Float(low, high) takes finite numbers, got {self}")
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"{self}: need low <= high (and low > 0 with log=True)")

    def _optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def _ends(self) -> list:
        return [self.low, self.high]


@dataclass(frozen=True)
class Choice:
    """One of ``choices``: any JSON values (numbers, strings, None, or objects such as a
    whole ``retryPolicy``)."""

    choices: tuple

    def __init__(self, choices: Sequence[Any]):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices:
            raise TypeError(f"Choice takes a non-empty list of values, got {choices!r}")
        object.__setattr__(self, "choices", tuple(choices))

    def _labels(self) -> list:
        return [
            c
            if c is None or isinstance(c, (bool, int, float, str))
            else json.dumps(c, sort_keys=True)
            for c in self.choices
        ]

    def _optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self._labels())

    def _value(self, label: Any) -> Any:
        label = _jsonable(label)
        return self.choices[self._labels().index(label)]

    def _ends(self) -> list:
        return list(self.choices)


_DIMENSIONS = (Int, Float, Choice)
_BOUND = re.compile(r"^\s*(>=|<=)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


def _require_optuna() -> Any:
    require("optuna", "tuning")
    import optuna

    return optuna


def parse_constraints(constraints: dict[str, str] | None) -> dict[str, tuple[str, float]]:
    if constraints is None:
        return {}
    if not isinstance(constraints, dict):
        raise TypeError(
            f"constraints must be a dict of metric -> bound such as "
            f"{{'success_rate': '>= 0.995'}}, got {type(constraints).__name__}"
        )
    out = {}
    for metric, bound in constraints.items():
        m = _BOUND.match(bound) if isinstance(bound, str) else None
        if m is None:
            raise ValueError(
                f"constraints[{metric!r}] = {bound!r}: write '>= NUMBER' or "
                "'<= NUMBER' (e.g. '>= 0.995', '<= 20000'; times in ms)"
            )
        out[str(metric)] = (m.group(1), float(m.group(2)))
    return out


def _digest(models: Any) -> str:
    try:
        text = json.dumps(models.to_dict(), sort_keys=True, default=str)
    except AttributeError:
        text = repr(models)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ------------------------------------------------------------------ the search


def tune(
    plan: Plan | dict | str | Path,
    models: AgentModels | str | Path | dict,
    space: dict[str, Int | Float | Choice],
    *,
    minimize: str | Sequence[str],
    constraints: dict[str, str] | None = None,
    trials: int = 100,
    runs: int = 2000,
    seed: int = 0,
    sampler: Any = "auto",
    progress: bool = True,
    **options: Any,
) -> TuneResult:
    """Search ``space`` for the plan (and agent models) that minimise ``minimize`` subject
    to ``constraints``; returns a ``TuneResult``.

    - ``space``: dotted path -> ``ok.Int`` / ``ok.Float`` / ``ok.Choice``. Plan paths as in
      ``Plan.with_values`` (``"steps.*.timeout"``, ``"steps.<id>.retryPolicy.maxRetries"``,
      ``"maxConcurrency"``, ``"timeout"``, ...), model paths ``"agents.<pattern>.capacity"``,
      breaker paths ``"breakers.<pattern>.openMs"`` (with ``policies=`` in ``options``).
    - ``minimize``: a summary metric (``"makespan_p95_ms"``) or a list of them (Pareto).
    - ``constraints``: metric -> ``">= x"`` / ``"<= x"``; judged on the 95% interval.
    - every trial is a ``monte_carlo`` of ``runs`` runs with the same ``seed``; ``options``
      (e.g. ``workload=``) go to every call. ``sampler``: "auto" (TPE for one objective,
      NSGA-II for several), "tpe", "nsga2", "random" or an optuna sampler; seeded by ``seed``.
    """
    optuna = _require_optuna()
    base = StudyInputs.of(
        plan,
        models,
        options.pop("policies", None),
        options.pop("workload", None),
        where="tune",
        stacklevel=2,
    )
    objectives = [minimize] if isinstance(minimize, str) else list(minimize)
    if not objectives or not all(isinstance(m, str) for m in objectives):
        raise TypeError(f"minimize must be a metric name or a list of them, got {minimize!r}")
    bounds = parse_constraints(constraints)
    if not isinstance(space, dict) or not space:
        raise TypeError(
            "space must be a non-empty dict of dotted path -> ok.Int/ok.Float/ok.Choice"
        )
    for path, dim in space.items():
        if not isinstance(dim, _DIMENSIONS):
            raise TypeError(f"space[{path!r}] must be ok.Int, ok.Float or ok.Choice, got {dim!r}")
    for name, value in (("trials", trials), ("runs", runs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    _check_paths(base, space)
    distributions = {path: dim._optuna() for path, dim in space.items()}
    known: list[str] | None = None
    cache: dict[str, tuple] = {}
    rows = []
    started = time.perf_counter()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            directions=["minimize"] * len(objectives),
            sampler=_sampler(optuna, sampler, len(objectives), seed, trials),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for _ in tqdm(
                range(trials), desc=f"tuning {base.plan.id}", unit="trial", disable=not progress
            ):
                trial = study.ask(distributions)
                values = {
                    p: space[p]._value(v) if isinstance(space[p], Choice) else v
                    for p, v in trial.params.items()
                }
                key = json.dumps(values, sort_keys=True, default=str)
                if key not in cache:
                    cache[key] = _evaluate(base, values, runs, seed, options)
                metrics, reason = cache[key]
                if metrics is not None and known is None:
                    known = list(metrics.index)
                    _check_metrics(known, objectives, bounds)
                violations, reason = _violations(metrics, bounds, reason)
                for name, v in violations.items():
                    trial.set_constraint(name, v)
                objective = (
                    [float(metrics.loc[m, "value"]) for m in objectives]
                    if metrics is not None
                    else [math.inf] * len(objectives)
                )
                study.tell(trial, [v if math.isfinite(v) else math.inf for v in objective])
                row = {"trial": trial.number, **trial.params}  # objects as their JSON text
                if metrics is not None:
                    for metric, r in metrics.iterrows():
                        row[metric] = r["value"]
                        row[f"{metric}_ci_low"] = r["ci_low"]
                        row[f"{metric}_ci_high"] = r["ci_high"]
                row["feasible"] = not reason
                row["reason"] = reason
                rows.append(row)
    finally:
        optuna.logging.set_verbosity(verbosity)
    frame = pd.DataFrame(rows)
    tail = ["feasible", "reason"]
    frame = frame[[c for c in frame.columns if c not in tail] + tail]
    return TuneResult(
        trials=frame,
        plan=base.plan,
        models=base.models,
        space=dict(space),
        minimize=objectives,
        constraints=bounds,
        runs=runs,
        seed=seed,
        options=options,
        seconds=time.perf_counter() - started,
        inputs=base,
    )


def _sampler(optuna: Any, sampler: Any, n_objectives: int, seed: int, trials: int) -> Any:
    if not isinstance(sampler, str):
        return sampler
    if sampler == "auto":
        sampler = "tpe" if n_objectives == 1 else "nsga2"
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)))
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=min(50, max(8, trials // 5))
        )
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(
        f"sampler must be 'auto', 'tpe', 'nsga2', 'random' or an optuna sampler, got {sampler!r}"
    )


def _check_paths(base: StudyInputs, space: dict) -> None:
    """A path that fails at both ends of its range (or for every choice) is wrong: say so
    before anything runs. One end failing is a legitimate infeasible region."""
    for path, dim in space.items():
        errors = []
        for value in dim._ends():
            try:
                base.with_values({path: value})
            except PlanValidationError as exc:
                errors.append(exc)
        if len(errors) == len(dim._ends()):
            raise PlanValidationError(f"space[{path!r}]: {errors[0]}")


def _check_metrics(known: list[str], objectives: list[str], bounds: dict) -> None:
    for metric in [*objectives, *bounds]:
        if metric not in known:
            raise ValueError(
                f"unknown metric {metric!r} in minimize/constraints; summary "
                f"metrics are: {', '.join(known)}"
            )


def _evaluate(
    base: StudyInputs, values: dict, runs: int, seed: int, options: dict
) -> tuple[pd.DataFrame | None, str]:
    try:
        mc = run_study(
            base.with_values(values),
            runs=runs,
            seed=seed,
            progress=False,
            keep_spans=False,
            **options,
        )
    except PlanValidationError as exc:
        return None, f"invalid: {exc}"
    return mc.summary().metrics, ""


def _violations(
    metrics: pd.DataFrame | None, bounds: dict, reason: str
) -> tuple[dict[str, float], str]:
    """optuna constraint values (<= 0 feasible; relative to the bound) and the reason."""
    if metrics is None:
        return {"valid": 1.0, **{m: 1.0 for m in bounds}}, reason
    out, why = {"valid": 0.0}, []
    for metric, (op, bound) in bounds.items():
        edge = "ci_low" if op == ">=" else "ci_high"
        x = float(metrics.loc[metric, edge])
        scale = max(abs(bound), 1e-12)
        v = 1.0 if math.isnan(x) else ((bound - x) if op == ">=" else (x - bound)) / scale
        out[metric] = v
        if v > 0:
            why.append(f"{metric} {edge} {x:.6g} not {op} {bound:g}")
    return out, "; ".join(why)


# ------------------------------------------------------------------ the result


def _pareto_mask(points: np.ndarray) -> np.ndarray:
    """True for rows no other row dominates (all <=, one <), minimising every column."""
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        dominated = np.all(points <= p, axis=1) & np.any(points < p, axis=1)
        keep[i] = not dominated.any()
    return keep


@dataclass
class TuneResult:
    """What ``tune`` found.

    - ``trials``: one row per trial — ``trial``, the values tried (one column per path),
      every summary metric with ``_ci_low``/``_ci_high``, ``feasible`` and ``reason``.
    - ``best`` (one objective) / ``pareto`` (several): Plans whose ``meta["tuned"]`` holds
      the provenance (values, models digest, seed, runs, predicted metrics, version).
    - ``best_models`` / ``models_for(trial)``: the agent models with a trial's model paths.
    - ``verify(runs, seed)``: the chosen plans re-simulated on a fresh seed.
    - ``chart()``: optimisation history (one objective) or Pareto front (several).
    """

    trials: pd.DataFrame
    plan: Plan
    models: AgentModels
    space: dict
    minimize: list[str]
    constraints: dict[str, tuple[str, float]]
    runs: int
    seed: int
    options: dict = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    inputs: StudyInputs | None = field(default=None, repr=False)  # the study's normalised inputs

    @property
    def feasible(self) -> pd.DataFrame:
        """The feasible trials."""
        return self.trials[self.trials["feasible"]]

    def _chosen(self) -> list[int]:
        ok = self.feasible
        if ok.empty:
            closest = self.trials.iloc[0]["reason"] if len(self.trials) else ""
            raise ValueError(
                f"no trial of {len(self.trials)} met the constraints "
                f"(e.g. trial 0: {closest}); relax the constraints, widen the "
                "space or run more trials"
            )
        if len(self.minimize) == 1:
            return [int(ok.sort_values([self.minimize[0], "trial"]).iloc[0]["trial"])]
        uniq = ok.sort_values("trial").drop_duplicates(subset=self.minimize)
        front = uniq[_pareto_mask(uniq[self.minimize].to_numpy(dtype=float))]
        return [int(t) for t in front.sort_values([*self.minimize, "trial"])["trial"]]

    @property
    def best(self) -> Plan:
        """The feasible trial with the lowest objective (ties: the earliest), as a Plan."""
        if len(self.minimize) > 1:
            raise ValueError(f"{len(self.minimize)} objectives have no single best: use .pareto")
        return self.plan_for(self._chosen()[0])

    @property
    def pareto(self) -> list[Plan]:
        """The feasible trials no other feasible trial dominates (one per distinct
        objective vector), ordered by the first objective."""
        return [self.plan_for(t) for t in self._chosen()]

    @property
    def best_models(self) -> AgentModels:
        """The agent models of ``best`` (its ``agents.…`` paths applied)."""
        return self.models_for(self._chosen()[0])

    def _inputs(self) -> StudyInputs:
        return self.inputs or StudyInputs.of(self.plan, self.models, where="TuneResult")

    def _values(self, trial: int) -> dict[str, Any]:
        row = self.trials.loc[self.trials["trial"] == trial]
        if row.empty:
            raise KeyError(f"no trial {trial} (trials 0..{len(self.trials) - 1})")
        return {
            p: dim._value(row.iloc[0][p]) if isinstance(dim, Choice) else _jsonable(row.iloc[0][p])
            for p, dim in self.space.items()
        }

    def models_for(self, trial: int) -> AgentModels:
        """The agent models with trial ``trial``'s model paths applied."""
        return self._inputs().with_values(self._values(trial)).models

    def plan_for(self, trial: int) -> Plan:
        """Trial ``trial``'s plan, its provenance in ``meta["tuned"]``."""
        values = self._values(trial)
        plan = self._inputs().with_values(values).plan
        row = self.trials.loc[self.trials["trial"] == trial].iloc[0]
        metrics = [m for m in dict.fromkeys([*self.minimize, *self.constraints])]
        predicted = {
            m: {
                "value": _jsonable(row[m]),
                "ciLow": _jsonable(row[f"{m}_ci_low"]),
                "ciHigh": _jsonable(row[f"{m}_ci_high"]),
            }
            for m in metrics
        }
        tuned = {
            "trial": trial,
            "values": values,
            "minimize": self.minimize,
            "constraints": {m: f"{op} {b:g}" for m, (op, b) in self.constraints.items()},
            "predicted": predicted,
            "runs": self.runs,
            "seed": self.seed,
            "modelsDigest": _digest(self.models),
            "modelsSource": Path(str(getattr(self.models, "source", ""))).name,
            "orchkitVersion": VERSION,
        }
        data = plan.to_dict()
        data["meta"] = {**(plan.meta or {}), "tuned": tuned}
        return Plan.model_validate(data)

    def verify(self, runs: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """Re-simulate the chosen plans (``best`` or every ``pareto`` plan) on a fresh seed
        (default: the tuning seed + 1) and ``runs`` runs (default: as tuned). One row per
        (trial, metric) for the objectives and constrained metrics: predicted and verified
        values with their intervals, ``optimism`` (how much better the search said it was
        than it is: verified − predicted for minimised and ``<=`` metrics, predicted −
        verified for ``>=``; positive = the winner's curse) and ``feasible`` (the verified
        intervals still meet every constraint)."""
        runs = self.runs if runs is None else runs
        seed = self.seed + 1 if seed is None else seed
        if seed == self.seed:
            warnings.warn(
                "verify() with the tuning seed re-draws the same runs: the optimism "
                "it measures is 0 by construction; use another seed",
                stacklevel=2,
            )
        rows = []
        for trial in self._chosen():
            study = self._inputs().with_values(self._values(trial))
            metrics = (
                run_study(
                    study, runs=runs, seed=seed, progress=False, keep_spans=False, **self.options
                )
                .summary()
                .metrics
            )
            _, reason = _violations(metrics, self.constraints, "")
            pred = self.trials.loc[self.trials["trial"] == trial].iloc[0]
            for m in dict.fromkeys([*self.minimize, *self.constraints]):
                v = float(metrics.loc[m, "value"])
                sign = -1.0 if self.constraints.get(m, ("<=",))[0] == ">=" else 1.0
                rows.append(
                    {
                        "trial": trial,
                        "metric": m,
                        "predicted": pred[m],
                        "predicted_ci_low": pred[f"{m}_ci_low"],
                        "predicted_ci_high": pred[f"{m}_ci_high"],
                        "verified": v,
                        "verified_ci_low": float(metrics.loc[m, "ci_low"]),
                        "verified_ci_high": float(metrics.loc[m, "ci_high"]),
                        "optimism": sign * (v - pred[m]),
                        "feasible": not reason,
                    }
                )
        return pd.DataFrame(rows)

    def chart(self, title: str | None = None) -> Any:
        """Plotly figure: objective per trial with the best-so-far line (one objective), or
        the first two objectives with the Pareto front (several). Infeasible trials grey."""
        import plotly.graph_objects as go

        df = self.trials
        ok, bad = df[df["feasible"]], df[~df["feasible"]]

        def text(d: pd.DataFrame) -> list[str]:  # hover text: the values tried
            return [", ".join(f"{p}={r[p]}" for p in self.space) for _, r in d.iterrows()]

        fig = go.Figure()
        if len(self.minimize) == 1:
            m = self.minimize[0]
            fig.add_scatter(
                x=bad["trial"],
                y=bad.get(m),
                mode="markers",
                name="infeasible",
                marker={"color": "lightgrey"},
                text=text(bad),
            )
            fig.add_scatter(
                x=ok["trial"],
                y=ok[m],
                mode="markers",
                name="feasible",
                marker={"color": "#2ca02c"},
                text=text(ok),
            )
            best = df[m].where(df["feasible"]).cummin()
            fig.add_scatter(
                x=df["trial"],
                y=best,
                mode="lines",
                name="best so far",
                line={"shape": "hv", "color": "black"},
            )
            fig.update_layout(xaxis_title="trial", yaxis_title=m)
        else:
            x, y = self.minimize[:2]
            fig.add_scatter(
                x=bad.get(x),
                y=bad.get(y),
                mode="markers",
                name="infeasible",
                marker={"color": "lightgrey"},
                text=text(bad),
            )
            fig.add_scatter(
                x=ok[x],
                y=ok[y],
                mode="markers",
                name="feasible",
                marker={"color": "#9ecae1"},
                text=text(ok),
            )
            if not ok.empty:
                front = df[df["trial"].isin(self._chosen())].sort_values(x)
                fig.add_scatter(
                    x=front[x],
                    y=front[y],
                    mode="lines+markers",
                    name="Pareto front",
                    line={"shape": "hv", "color": "#2ca02c"},
                    text=text(front),
                )
            fig.update_layout(xaxis_title=x, yaxis_title=y)
        fig.update_layout(
            title=title or f"tuning {self.plan.id}: {len(df)} trials, {len(ok)} feasible"
        )
        return fig

    def __repr__(self) -> str:
        return (
            f"TuneResult(plan={self.plan.id!r}, trials={len(self.trials)}, "
            f"feasible={int(self.trials['feasible'].sum())}, minimize={self.minimize}, "
            f"runs={self.runs}, seed={self.seed})"
        )


# ------------------------------------------------------------------ search spaces on disk


def space_from_dict(data: Any, source: str = "space") -> dict[str, Int | Float | Choice]:
    """A search space from its file form (YAML/JSON), one entry per dotted path::

        steps.*.timeout: {float: [1000, 30000], log: true}
        steps.*.retryPolicy.maxRetries: {int: [0, 4]}
        maxConcurrency: {choice: [1, 2, 4]}
        agents.tutor-agent-*.capacity: {int: [1, 8]}

    Raises ``PlanValidationError`` naming the path and the fix."""
    if not isinstance(data, dict) or not data:
        raise PlanValidationError(
            f"{source}: expected a mapping of dotted path to "
            "{int: [low, high]} | {float: [low, high]} | {choice: [...]}"
        )
    space: dict[str, Int | Float | Choice] = {}
    for path, spec in data.items():
        where = f"{source}: '{path}'"
        kinds = [k for k in ("int", "float", "choice") if isinstance(spec, dict) and k in spec]
        if len(kinds) != 1:
            raise PlanValidationError(
                f"{where}: give exactly one of int, float or choice, e.g. "
                "{int: [0, 4]}, {float: [500, 20000], log: true}, "
                f"{{choice: [1, 2, 4]}}; got {spec!r}"
            )
        kind = kinds[0]
        extra = set(spec) - {kind, "log", "step"} - ({"step"} if kind == "int" else set())
        if extra or (kind != "int" and "step" in spec) or (kind == "choice" and "log" in spec):
            raise PlanValidationError(
                f"{where}: unknown keys {sorted(set(spec) - {kind})} for "
                f"{kind} (int takes log, step; float takes log)"
            )
        value = spec[kind]
        try:
            if kind == "choice":
                space[str(path)] = Choice(value)
                continue
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError(f"{kind} takes [low, high], got {value!r}")
            if kind == "int":
                space[str(path)] = Int(
                    value[0], value[1], log=bool(spec.get("log", False)), step=spec.get("step", 1)
                )
            else:
                space[str(path)] = Float(value[0], value[1], log=bool(spec.get("log", False)))
        except (TypeError, ValueError) as exc:
            raise PlanValidationError(f"{where}: {exc}") from None
    return space


def load_space(path: str | Path) -> dict[str, Int | Float | Choice]:
    """Read a search space file (YAML or JSON); see ``space_from_dict``."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except OSError as exc:
        raise PlanValidationError(f"cannot read space file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PlanValidationError(f"{path}: not valid YAML/JSON: {exc}") from None
    return space_from_dict(data, str(path))
