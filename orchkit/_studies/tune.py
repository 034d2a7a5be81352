"""Tuning a plan to an SLO (SPEC §7.1): an optuna search over plan and model paths, each
trial a Monte-Carlo study with the same seed (common random numbers).

A trial is feasible when every constrained metric's 95% interval lies on the right side
of its bound (ci_low for ``>=``, ci_high for ``<=``): a lucky point estimate is not enough.
Trials whose plan is invalid are recorded as infeasible with the reason. optuna's study
stays internal; the user gets a frame of trials and plans carrying their provenance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._base.deps import require
from .._base.errors import PlanValidationError
from .._base.version import VERSION
from .._spec.deployment import Deployment
from .._spec.inputs import StudyInputs
from .._spec.models import AgentModels
from .._spec.plan import Plan
from .montecarlo import run_study
from .parallel import caught, open_executor, result, rewarn, worker_count
from .summary import METRIC_NAMES

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
    """``{metric: ">= x" | "<= x"}`` -> ``{metric: (op, x)}``, x finite (times in ms);
    ``ValueError`` naming the constraint otherwise."""
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
        value = float(m.group(2))
        if not math.isfinite(value):  # e.g. '>= 1e999' overflows to infinity
            raise ValueError(
                f"constraints[{metric!r}] = {bound!r}: the bound is not a finite number; "
                "write '>= NUMBER' or '<= NUMBER' with a finite NUMBER (e.g. '<= 20000'; "
                "times in ms)"
            )
        out[str(metric)] = (m.group(1), value)
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
    minimize: str | Callable | Sequence[str | Callable],
    constraints: dict[str, str] | None = None,
    trials: int = 100,
    runs: int = 2000,
    seed: int = 0,
    sampler: Any = "auto",
    progress: bool = True,
    executor: Any = None,
    n_jobs: int | None = None,
    storage: Any = None,
    study_name: str | None = None,
    **options: Any,
) -> TuneResult:
    """Search ``space`` for the plan (and agent models) that minimise ``minimize`` subject
    to ``constraints`` (SPEC §7.1), with optuna.

    Every trial is a ``monte_carlo`` study of ``runs`` runs with the same ``seed`` (common
    random numbers). A trial is feasible when every constrained metric's 95% interval lies
    on the right side of its bound (``ci_low`` for ``>=``, ``ci_high`` for ``<=``); a trial
    whose values make an invalid plan is recorded as infeasible with the reason.

    Args:
        plan: A ``Plan``, a dict in the plan format or a plan file's path.
        models: ``AgentModels``, a dict in the models format or a models file's path.
        space: Dotted path -> ``ok.Int`` / ``ok.Float`` / ``ok.Choice``. Plan paths as in
            ``Plan.with_values`` (``"steps.*.timeout"``,
            ``"steps.<id>.retryPolicy.maxRetries"``, ``"maxConcurrency"``, ``"timeout"``,
            ...; times in ms), model paths ``"agents.<pattern>.capacity"``, breaker paths
            ``"breakers.<pattern>.openMs"`` (with ``policies=`` in ``options``). The paths
            are checked together before anything runs.
        minimize: (SPEC §13.4) a summary metric (``"makespan_p95_ms"``); a path of
            ``space`` (``"agents.tutor-agent-*.capacity"``: the smallest setting that meets
            the constraints); or a callable ``(params, metrics) -> float``, a cost:
            ``params`` maps each path to the trial's value, ``metrics`` each summary metric
            (and its ``_ci_low``/``_ci_high``) to its value (its column in ``trials``: the
            function's name, or ``"cost"``). A list of them gives a Pareto front.
        constraints: Summary metric -> ``">= x"`` / ``"<= x"`` (times in ms); judged on
            the 95% interval.
        trials: Trials to run (fewer when a grid sampler runs out of points).
        runs: Independent runs per trial (ignored with a ``workload=``).
        seed: The seed of every trial's study, and of the sampler.
        sampler: "auto" (TPE for one objective, NSGA-II for several), "tpe", "nsga2",
            "random", "grid" (every combination of Int and Choice dimensions, each once)
            or any optuna sampler (``GridSampler`` too: the search ends when its grid is
            done); seeded by ``seed``.
        progress: True (default): a progress bar of the trials.
        executor: (SPEC §20) where trials' studies run: an Executor, a Dask ``Client``,
            ``orchkit.executors.ray()`` or ``"processes"``; default with ``n_jobs`` > 1: a
            process pool of ``n_jobs`` processes. The trials never depend on it or on its
            number of workers.
        n_jobs: Trials at a time: the sampler is asked for ``n_jobs`` trials, their
            studies run at once on ``executor`` and are told in trial order. Default: 1,
            or the executor's worker count. With ``n_jobs=1`` the trials are the
            sequential search's. Across values of ``n_jobs``, "random" and "grid" give the
            same trials; TPE the same first (random) trials, then its choices depend on
            the batch (a trial is asked for without the results of the ones running beside
            it); NSGA-II likewise after its first generation.
        storage: An optuna storage the trials are recorded in: a journal file path
            (``"tune.log"``), ``"redis://host:6379/0"`` (a journal on Redis), an RDB URL
            (``"sqlite:///tune.db"``) or an optuna storage object. A call on an existing
            study adds ``trials`` trials to it, and ``trials`` holds every trial of the
            study. Several ``tune`` calls (on several machines) sharing one storage and
            study share its trials: their order, and so TPE's choices, then depend on
            timing and are not reproducible; give each caller its own sampler seed
            (``sampler=optuna.samplers.TPESampler(seed=k)``, same ``seed``) or their first
            trials repeat each other's.
        study_name: The study's name in ``storage``; default: one derived from the plan,
            the space, the objectives, the constraints, ``runs``, ``seed`` and the sampler.
        **options: Go to every trial's ``monte_carlo`` (e.g. ``workload=``, ``policies=``).

    Returns:
        The search: ``trials`` (one row per trial), ``best`` (or ``pareto``) as plans
            carrying their provenance, ``verify()``, ``chart()`` and ``deployment()``.

    Raises:
        TypeError: ``space`` is not a dict of dimensions, or ``minimize`` is not a metric,
            a path of the space, a callable or a list of them.
        ValueError: An unknown metric in ``minimize`` or ``constraints``, a bound that is
            not ``">= x"``/``"<= x"``, ``trials``, ``runs`` or ``n_jobs`` < 1, or an
            unknown sampler.
        PlanValidationError: An invalid plan, models or policies, or a space whose paths
            make no valid combination (the message names the path at fault).
        MissingDependencyError: optuna is not installed.

    Warns:
        HangWarning: A step can hang and no step or plan timeout would end it.

    Example:
        ```python
        result = ok.tune(
            ok.examples.plan("parallel_analysis"), ok.examples.models(),
            {"steps.tutor_analysis.timeout": ok.Float(2_000, 30_000, log=True),
             "steps.tutor_analysis.retryPolicy": ok.Choice(
                 [None, {"maxRetries": 1, "backoffMs": 200}])},
            minimize="makespan_p95_ms", constraints={"success_rate": ">= 0.85"},
            trials=20, runs=1000,
        )
        result.best.meta["tuned"]["values"]
        result.verify()
        ```
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
    bounds = parse_constraints(constraints)
    if not isinstance(space, dict) or not space:
        raise TypeError(
            "space must be a non-empty dict of dotted path -> ok.Int/ok.Float/ok.Choice"
        )
    for path, dim in space.items():
        if not isinstance(dim, _DIMENSIONS):
            raise TypeError(f"space[{path!r}] must be ok.Int, ok.Float or ok.Choice, got {dim!r}")
    objectives, costs = _objectives(minimize, space)
    metric_objectives = [o for o in objectives if o not in costs and o not in space]
    _check_metrics(list(METRIC_NAMES), metric_objectives, bounds)
    for name, value in (("trials", trials), ("runs", runs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    _check_paths(base, space)
    if n_jobs is not None and (
        not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1
    ):
        raise ValueError(f"n_jobs must be an integer >= 1 (trials at a time), got {n_jobs!r}")
    options.pop("executor", None)  # tune's own executor runs the trials' studies
    known: list[str] | None = None
    cache: dict[str, Any] = {}  # a trial's values -> its study's (metrics, reason), or future
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    bar = tqdm(total=trials, desc=f"tuning {base.plan.id}", unit="trial", disable=not progress)
    pool: Executor | None = None
    batch_size = 1
    asked = 0  # trials this call has asked for

    def start(values: dict[str, Any]) -> str:
        """Start (or recall) the study of a trial's values; its key in ``cache``."""
        key = json.dumps(values, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = (
                _evaluate(base, values, runs, seed, options)
                if pool is None
                else pool.submit(caught, _evaluate, base, values, runs, seed, options)
            )
        return key

    def objective(trial: Any) -> list[float]:
        """A batch of trials: this one and ``batch_size - 1`` more asked of the sampler;
        their studies run at once; the others are told here, in trial order."""
        nonlocal asked
        size = min(batch_size, trials - asked)
        grid = _grid_size(study.sampler)
        if grid is not None:  # never ask past the end of a grid (optuna would repeat it)
            size = min(size, 1 + max(0, grid - len(study.get_trials(deepcopy=False))))
        batch, keys, told = [trial], [], set()
        try:
            while True:
                values = {p: _suggest(batch[-1], p, dim) for p, dim in space.items()}
                keys.append((values, start(values)))
                if len(batch) == size:
                    break
                batch.append(study.ask())
            asked += len(batch)
            for t, (values, key) in zip(batch[1:], keys[1:]):
                study.tell(t, record(t, values, key))
                told.add(t.number)
        except BaseException:  # the batch's other trials end as failed, not left running
            for t in batch[1:]:
                if t.number not in told:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
            raise
        return record(trial, *keys[0])

    def record(trial: Any, values: dict[str, Any], key: str) -> list[float]:
        """A trial's row, from its study's metrics; its scores for optuna."""
        nonlocal known
        if not isinstance(cache[key], tuple):  # a future: its study ran on the pool
            cache[key], seen = result(cache[key], pool)
            rewarn(seen, stacklevel=5)
        metrics, reason = cache[key]
        if metrics is not None and known is None:
            known = list(metrics.index)
            _check_metrics(known, metric_objectives, bounds)
        violations, reason = _violations(metrics, bounds, reason)
        for name, v in violations.items():
            trial.set_constraint(name, v)
        row: dict[str, Any] = {"trial": trial.number, **trial.params}  # objects as JSON text
        metrics_cols = []
        if metrics is not None:
            for metric, r in metrics.iterrows():
                row[metric] = r["value"]
                row[f"{metric}_ci_low"] = r["ci_low"]
                row[f"{metric}_ci_high"] = r["ci_high"]
                metrics_cols += [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
        scores = []
        for o in objectives:
            if metrics is None:  # an invalid plan: nothing to score
                v = math.nan
            elif o in costs:
                v = _cost(costs[o], o, values, {k: x for k, x in row.items() if k in metrics_cols})
            elif o in space:
                v = float(values[o])
            else:
                v = float(metrics.loc[o, "value"])
            if o in costs:
                row[o] = v
            scores.append(v if math.isfinite(v) else math.inf)
        row["feasible"] = not reason
        row["reason"] = reason
        if storage is not None:  # for the calls that share the study, and for later ones
            trial.set_user_attr(ROW_ATTR, row)
        rows.append(row)
        bar.update(1)
        return scores

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pools = ExitStack()
    try:
        use = executor if executor is not None or (n_jobs or 1) == 1 else "processes"
        pool = pools.enter_context(open_executor(use, n_jobs))
        batch_size = n_jobs or worker_count(pool)
        study = optuna.create_study(
            directions=["minimize"] * len(objectives),
            sampler=_sampler(optuna, sampler, len(objectives), seed, trials, space),
            storage=_storage(optuna, storage),
            study_name=study_name
            or _study_name(base, space, objectives, bounds, runs, seed, sampler),
            load_if_exists=storage is not None,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # optimize(), not ask-and-tell: a sampler may end the search itself (GridSampler
            # and BruteForceSampler call study.stop() once every point has been tried, which
            # optuna allows only inside optimize); fewer trials than asked are then recorded.
            # Each call of the objective is a batch of batch_size trials.
            study.optimize(
                objective,
                n_trials=math.ceil(trials / batch_size),
                catch=(),
                show_progress_bar=False,
            )
        if storage is not None:  # the study's other trials (earlier calls, other callers)
            mine = {r["trial"] for r in rows}
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if t.number not in mine and ROW_ATTR in t.user_attrs:
                    rows.append(dict(t.user_attrs[ROW_ATTR]))
    finally:
        optuna.logging.set_verbosity(verbosity)
        bar.close()
        pools.close()
    rows.sort(key=lambda r: r["trial"])
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
        costs=costs,
    )


#: The user attribute of an optuna trial that holds its row of ``TuneResult.trials``.
ROW_ATTR = "orchkit_row"


def _grid_size(sampler: Any) -> int | None:
    """The number of points of a grid sampler (None for another sampler)."""
    grids = getattr(sampler, "_all_grids", None)
    return len(grids) if isinstance(grids, list) else None


def _storage(optuna: Any, storage: Any) -> Any:
    """``storage=`` as optuna takes it: a journal file for a path, a journal on Redis for a
    redis:// URL, an RDB URL or a storage object as they are."""
    if storage is None or not isinstance(storage, (str, Path)):
        return storage
    text = str(storage)
    journal = optuna.storages.journal
    if text.startswith(("redis://", "rediss://", "unix://")):
        require("redis", "tune(storage='redis://...')")
        with warnings.catch_warnings():  # "JournalRedisBackend is experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return journal.JournalStorage(journal.JournalRedisBackend(text))
    if "://" in text:
        return text  # sqlite:///..., postgresql://...: optuna's RDB storage
    return journal.JournalStorage(journal.JournalFileBackend(text))


def _study_name(
    base: StudyInputs,
    space: dict,
    objectives: list[str],
    bounds: dict,
    runs: int,
    seed: int,
    sampler: Any,
) -> str:
    """A name for the study in a storage: the same search (plan, space, objectives,
    constraints, runs, seed, sampler) finds its study again; another gets its own."""
    text = json.dumps(
        [
            base.plan.to_dict(),
            {p: repr(d) for p, d in space.items()},
            objectives,
            {m: list(b) for m, b in bounds.items()},
            runs,
            seed,
            sampler if isinstance(sampler, str) else type(sampler).__name__,
        ],
        sort_keys=True,
        default=str,
    )
    return f"orchkit-{base.plan.id}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _sampler(
    optuna: Any, sampler: Any, n_objectives: int, seed: int, trials: int, space: dict | None = None
) -> Any:
    if not isinstance(sampler, str):
        return sampler
    if sampler == "auto":
        sampler = "tpe" if n_objectives == 1 else "nsga2"
    if sampler == "grid":  # every combination of a small space, in a seeded order
        grid: dict[str, list] = {}
        for path, dim in (space or {}).items():
            if isinstance(dim, Int):
                grid[path] = list(range(dim.low, dim.high + 1, dim.step))
            elif isinstance(dim, Choice):
                grid[path] = dim._labels()
            else:
                raise ValueError(
                    f"sampler='grid' tries every value, so it needs ok.Int or ok.Choice "
                    f"dimensions; space[{path!r}] is {dim!r}: give ok.Choice([...]) of the "
                    "values to try"
                )
        return optuna.samplers.GridSampler(grid, seed=seed)
    if sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)))
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=min(50, max(8, trials // 5))
        )
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(
        "sampler must be 'auto', 'tpe', 'nsga2', 'random', 'grid' or an optuna sampler, "
        f"got {sampler!r}"
    )


def _corners(space: dict, limit: int = 256) -> list[dict[str, Any]]:
    """Combinations of the ends of the space's ranges (every choice of a ``Choice``), all
    low ends first, then all high ends: every combination when there are at most
    ``limit``, else those two, and each end of each path with the others at their low
    ends, then at their high ends."""
    paths = list(space)
    ends = [dim._ends() for dim in space.values()]
    aligned = [
        {p: e[min(i, len(e) - 1)] for p, e in zip(paths, ends, strict=True)}
        for i in range(max(len(e) for e in ends))
    ]
    if math.prod(len(e) for e in ends) <= limit:
        rest = [dict(zip(paths, c, strict=True)) for c in itertools.product(*ends)]
    else:
        rest = [
            {**a, p: v}
            for p, e in zip(paths, ends, strict=True)
            for v in e
            for a in (aligned[0], aligned[-1])
        ]
    out: dict[str, dict[str, Any]] = {}
    for values in [*aligned, *rest]:
        out.setdefault(json.dumps(values, sort_keys=True, default=repr), values)
    return list(out.values())


def _invalid(base: StudyInputs, values: dict[str, Any]) -> PlanValidationError | None:
    """Why ``values`` make no valid study (None: they do)."""
    try:
        base.with_values(values)
    except PlanValidationError as exc:
        return exc
    return None


def _check_paths(base: StudyInputs, space: dict) -> None:
    """The space's paths are checked together, before anything runs: one may need another
    (``retryPolicy.maxRetries`` on a step without a retry policy is valid only with
    ``retryPolicy.backoffMs``), so combinations of the ends of their ranges (or their
    choices) are tried at once. The space is wrong only when every combination fails; then
    the path at fault is named: the one without which some combination is valid, else one
    that fails alone at every end. Some combinations failing is a legitimate infeasible
    region (tune records those trials as infeasible, with the reason)."""
    errors = []
    for values in _corners(space):
        error = _invalid(base, values)
        if error is None:
            return
        errors.append(error)
    for path, dim in space.items():  # the path whose removal leaves a valid combination
        others = {p: d for p, d in space.items() if p != path}
        valid = (
            next((v for v in _corners(others) if _invalid(base, v) is None), None) if others else {}
        )
        if valid is not None:
            errs = [_invalid(base, {**valid, path: x}) for x in dim._ends()]
            if not all(errs):  # a combination the corners above did not try is valid
                return
            raise PlanValidationError(f"space[{path!r}]: {errs[0]}")
    for path, dim in space.items():  # several at fault: the first that fails alone
        alone = [_invalid(base, {path: x}) for x in dim._ends()]
        if all(alone):
            raise PlanValidationError(f"space[{path!r}]: {alone[0]}")
    raise PlanValidationError(
        f"space: no combination of the ends of {', '.join(map(repr, space))} is valid "
        f"together (each is valid alone at some end): {errors[0]}"
    )


def _suggest(trial: Any, path: str, dim: Int | Float | Choice) -> Any:
    """The trial's value for ``path`` (a Choice's own value, not its label)."""
    if isinstance(dim, Int):
        return trial.suggest_int(path, dim.low, dim.high, step=dim.step, log=dim.log)
    if isinstance(dim, Float):
        return trial.suggest_float(path, float(dim.low), float(dim.high), log=dim.log)
    return dim._value(trial.suggest_categorical(path, dim._labels()))


def _objectives(minimize: Any, space: dict) -> tuple[list[str], dict[str, Callable]]:
    """``minimize`` as column names of the trials frame, and the callables among them (by
    the column that records their value): a metric name, a path of ``space`` (minimise a
    setting) or a callable ``(params, metrics) -> float``; one or a list."""
    items = [minimize] if isinstance(minimize, str) or callable(minimize) else minimize
    if isinstance(items, (bytes, dict)) or not isinstance(items, Sequence) or not items:
        raise TypeError(
            "minimize must be a metric name, a path of the space, a callable (params, "
            f"metrics) -> float, or a list of them; got {minimize!r}"
        )
    names: list[str] = []
    costs: dict[str, Callable] = {}
    for item in items:
        if callable(item):
            name = getattr(item, "__name__", "") or ""
            name = name if name.isidentifier() and name not in space else "cost"
            base, k = name, 2
            while name in names or name in space or name in METRIC_NAMES:
                name, k = f"{base}_{k}", k + 1
            costs[name] = item
            names.append(name)
            continue
        if not isinstance(item, str):
            raise TypeError(
                "minimize must be a metric name, a path of the space, a callable (params, "
                f"metrics) -> float, or a list of them; got {item!r}"
            )
        dim = space.get(item)
        if isinstance(dim, Choice) and not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in dim.choices
        ):
            raise TypeError(
                f"minimize={item!r}: a setting to minimise must be a number; space[{item!r}] "
                f"is {dim!r}"
            )
        if (
            item.startswith(
                ("agents.", "breakers.", "admission.", "throttle.", "autoscale.", "steps.")
            )
            and dim is None
        ):
            raise ValueError(
                f"minimize={item!r} is a path but not one of the space's ({', '.join(space)}); "
                "a setting to minimise must be searched"
            )
        names.append(item)
    return names, costs


def _cost(fn: Callable, name: str, params: dict[str, Any], metrics: dict[str, Any]) -> float:
    """The value of a ``minimize`` callable on one trial: a number (NaN when it says so)."""
    value = fn(dict(params), dict(metrics))
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"minimize callable {name!r} must return a number (the cost to minimise), got "
            f"{type(value).__name__} {value!r}"
        )
    return float(value)


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

    Attributes:
        trials: One row per trial: ``trial``, the values tried (one column per path; a
            ``Choice`` of objects as JSON text), every summary metric with
            ``_ci_low``/``_ci_high`` (times in ms), a column per callable objective,
            ``feasible`` and ``reason`` (why not).
        plan: The plan searched from.
        models: The agent models searched from.
        space: The search space (path -> dimension).
        minimize: The objectives: the column of ``trials`` of each.
        constraints: Metric -> (``">="`` or ``"<="``, bound).
        runs: Runs per trial.
        seed: The trials' seed.
        options: The options every trial's study got (``workload``, ``policies``, ...).
        seconds: How long the search took, s.
        inputs: The study's inputs, normalised (plan, models, policies, workload).
        costs: The callable objectives, by column.
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
    costs: dict[str, Callable] = field(default_factory=dict, repr=False)  # callable objectives

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
        """The feasible trial with the lowest objective (ties: the earliest), as a Plan
        whose ``meta["tuned"]`` holds its provenance (see ``plan_for``).

        Raises:
            ValueError: No trial is feasible, or there are several objectives (use
                ``pareto``).
        """
        if len(self.minimize) > 1:
            raise ValueError(f"{len(self.minimize)} objectives have no single best: use .pareto")
        return self.plan_for(self._chosen()[0])

    @property
    def pareto(self) -> list[Plan]:
        """The feasible trials no other feasible trial dominates (one per distinct
        objective vector), ordered by the first objective, as Plans (see ``plan_for``).

        Raises:
            ValueError: No trial is feasible.
        """
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
        """The agent models of a trial.

        Args:
            trial: A trial's number (the ``trial`` column).

        Returns:
            The models with the trial's ``agents.…`` paths applied.

        Raises:
            KeyError: No trial has that number.
        """
        return self._inputs().with_values(self._values(trial)).models

    def plan_for(self, trial: int) -> Plan:
        """The plan of a trial, carrying its provenance.

        Args:
            trial: A trial's number (the ``trial`` column).

        Returns:
            The plan with the trial's values; its ``meta["tuned"]`` holds ``trial``,
                ``values``, ``minimize``, ``constraints``, ``predicted`` (each objective
                and constrained metric with ``ciLow``/``ciHigh``), ``runs``, ``seed``,
                ``modelsDigest``, ``modelsSource`` and ``orchkitVersion``.

        Raises:
            KeyError: No trial has that number.
        """
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
            if f"{m}_ci_low" in row.index
            else {"value": _jsonable(row[m])}  # a setting or a cost: no interval
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

    def deployment(self, trial: int | None = None, *, role: str | None = None) -> Deployment:
        """A trial as a deployment bundle (SPEC §14).

        Args:
            trial: A trial's number; None (default): ``best``.
            role: The plan's role; default: the plan's id (``orchkit serve`` runs the roles
                ``session_initialization`` and ``process_interaction``).

        Returns:
            The bundle: the trial's plan under ``role``, the capacities of the agents it
                calls, its policies and models; the provenance of ``plan_for`` in
                ``meta["tuned"]``.

        Raises:
            ValueError: No trial is feasible, or ``trial`` is None and the Pareto front has
                several trials.
            KeyError: No trial has that number.
        """
        if trial is None:
            chosen = self._chosen()
            if len(chosen) > 1:
                raise ValueError(
                    f"{len(chosen)} trials on the Pareto front: name one, deployment(trial=N)"
                )
            trial = chosen[0]
        plan = self.plan_for(trial)
        study = self._inputs().with_values(self._values(trial))
        meta = {"tuned": (plan.meta or {})["tuned"]}
        return Deployment.of_study(plan, study.models, study.policies, meta, role=role)

    def verify(self, runs: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """Re-simulate the chosen plans (``best`` or every ``pareto`` plan) on a fresh seed,
        to measure the winner's curse.

        Args:
            runs: Runs per plan; default: as tuned.
            seed: The seed; default: the tuning seed + 1.

        Returns:
            One row per (trial, metric) for the objectives and constrained metrics (a
                callable objective: recomputed on the verified metrics, no interval; a
                setting: no row): ``predicted`` and ``verified`` values with their
                intervals (``_ci_low``/``_ci_high``; times in ms), ``optimism`` (how much
                better the search said it was than it is: verified − predicted for
                minimised and ``<=`` metrics, predicted − verified for ``>=``; positive =
                the winner's curse) and ``feasible`` (the verified intervals still meet
                every constraint).

        Raises:
            ValueError: No trial is feasible.

        Warns:
            UserWarning: ``seed`` is the tuning seed: the optimism is then 0 by
                construction.
        """
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
            values = self._values(trial)
            for m in dict.fromkeys([*self.minimize, *self.constraints]):
                if m in self.costs:  # a cost: recomputed on the verified metrics
                    flat = {}
                    for name, r in metrics.iterrows():
                        flat[name] = r["value"]
                        flat[f"{name}_ci_low"] = r["ci_low"]
                        flat[f"{name}_ci_high"] = r["ci_high"]
                    v = _cost(self.costs[m], m, values, flat)
                    rows.append(
                        {
                            "trial": trial,
                            "metric": m,
                            "predicted": pred[m],
                            "predicted_ci_low": math.nan,
                            "predicted_ci_high": math.nan,
                            "verified": v,
                            "verified_ci_low": math.nan,
                            "verified_ci_high": math.nan,
                            "optimism": v - pred[m],
                            "feasible": not reason,
                        }
                    )
                    continue
                if m not in metrics.index:  # a setting minimised: it does not change
                    continue
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
        """The search as a figure (times in ms).

        Top panel, one objective: each feasible trial's value and the best feasible value
        so far (a staircase from the first feasible trial on, the best trial starred);
        several objectives: the feasible trials in the first two objectives' plane and the
        Pareto front. Infeasible trials never share that panel (missing a constraint often
        makes a trial look better than any candidate): one panel per constraint below
        shows, per trial, the end of the metric's 95% interval the constraint judges
        (ci_low for >=, ci_high for <=) against its bound, trials that meet it green and
        those that miss it grey.

        Args:
            title: The figure's title; None (default): the plan's id and the counts of
                trials, feasible ones and invalid plans.

        Returns:
            A plotly Figure.
        """
        from plotly.subplots import make_subplots

        def _unit(metric: str) -> str:  # by the metric's name: ms, fraction of runs, per run
            if metric.endswith("_ms"):
                return "ms"
            if metric.endswith("_rate"):
                return "fraction of runs"
            return "per run" if metric.endswith("_per_run") else ""

        def _with_unit(metric: str) -> str:  # an axis title: "makespan_p95_ms (ms)"
            return f"{metric} ({_unit(metric)})" if _unit(metric) else metric

        def _short(value: float) -> str:
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"

        df = self.trials
        ok = df[df["feasible"]]
        several = len(self.minimize) > 1
        rows = 1 + len(self.constraints)
        fig = make_subplots(
            rows=rows,
            cols=1,
            shared_xaxes=not several,  # one objective: every panel is per trial
            vertical_spacing=0.12 if several else 0.06,
            row_heights=[0.6] + [0.4 / (rows - 1)] * (rows - 1) if rows > 1 else None,
        )

        def text(d: pd.DataFrame) -> list[str]:  # hover text: the values tried, the reason
            return [
                ", ".join(f"{p}={r[p]}" for p in self.space)
                + ("" if r["feasible"] else f"<br>infeasible: {r['reason']}")
                for _, r in d.iterrows()
            ]

        if not several:
            m = self.minimize[0]
            if not ok.empty:
                fig.add_scatter(
                    x=ok["trial"],
                    y=ok[m],
                    mode="markers",
                    name="feasible trial",
                    marker={"color": "#2ca02c"},
                    text=text(ok),
                    row=1,
                    col=1,
                )
                best = df[m].where(df["feasible"]).cummin().ffill()  # flat across infeasible
                keep = best.notna()
                fig.add_scatter(
                    x=df.loc[keep, "trial"],
                    y=best[keep],
                    mode="lines",
                    name="best feasible so far",
                    line={"shape": "hv", "color": "black"},
                    row=1,
                    col=1,
                )
                chosen = df[df["trial"] == self._chosen()[0]]
                fig.add_scatter(
                    x=chosen["trial"],
                    y=chosen[m],
                    mode="markers",
                    name=f"best: trial {int(chosen['trial'].iloc[0])}, "
                    f"{_short(float(chosen[m].iloc[0]))}{' ms' if m.endswith('_ms') else ''}",
                    marker={"color": "black", "symbol": "star", "size": 13},
                    text=text(chosen),
                    row=1,
                    col=1,
                )
            fig.update_yaxes(title_text=_with_unit(m), row=1, col=1)
        else:
            x, y = self.minimize[:2]
            if not ok.empty:
                fig.add_scatter(
                    x=ok[x],
                    y=ok[y],
                    mode="markers",
                    name="feasible trial",
                    marker={"color": "#9ecae1"},
                    text=text(ok),
                    row=1,
                    col=1,
                )
                front = df[df["trial"].isin(self._chosen())].sort_values(x)
                fig.add_scatter(
                    x=front[x],
                    y=front[y],
                    mode="lines+markers",
                    name="Pareto front",
                    line={"shape": "hv", "color": "#2ca02c"},
                    text=text(front),
                    row=1,
                    col=1,
                )
            fig.update_xaxes(title_text=_with_unit(x), row=1, col=1)
            fig.update_yaxes(title_text=_with_unit(y), row=1, col=1)
        for row, (metric, (op, bound)) in enumerate(self.constraints.items(), start=2):
            edge = "ci_low" if op == ">=" else "ci_high"
            judged = df.get(f"{metric}_{edge}", pd.Series(np.nan, index=df.index))
            meets = judged >= bound if op == ">=" else judged <= bound
            sign = "≥" if op == ">=" else "≤"
            for hit, name, colour in ((True, "meets", "#2ca02c"), (False, "misses", "#aaaaaa")):
                d = df[(meets == hit) & judged.notna()]
                if d.empty:
                    continue
                fig.add_scatter(
                    x=d["trial"],
                    y=judged[d.index],
                    mode="markers",
                    name=f"{name} {metric} {sign} {bound:g}",
                    marker={"color": colour, "symbol": "circle" if hit else "x"},
                    text=text(d),
                    row=row,
                    col=1,
                )
            fig.add_scatter(
                x=[df["trial"].min(), df["trial"].max()],
                y=[bound, bound],
                mode="lines",
                name=f"bound: {metric} {sign} {bound:g}",
                line={"color": "#d62728", "dash": "dash"},
                row=row,
                col=1,
            )
            fig.update_yaxes(
                title_text=f"{metric}<br>95% {edge.replace('ci_', '')}"
                + ("" if _with_unit(metric) == metric else " (" + _unit(metric) + ")"),
                row=row,
                col=1,
            )
        fig.update_xaxes(title_text="trial", row=rows, col=1)
        no_metrics = df.get("success_rate", pd.Series(np.nan, index=df.index)).isna()
        invalid = int((~df["feasible"] & no_metrics).sum())  # an invalid plan: never ran
        fig.update_layout(
            title=title
            or f"tuning {self.plan.id}: {len(df)} trials, {len(ok)} feasible"
            + (f", {invalid} with an invalid plan" if invalid else ""),
            height=420 + 180 * (rows - 1),
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
