"""Workloads (SPEC §4.2, §11.3): when plan runs arrive in a capacity study, and the offered
load they put on each agent. Pure input: nothing here runs a simulation."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .._base.errors import PlanValidationError
from .plan import Plan, as_plan

if TYPE_CHECKING:
    from .models import AgentModels


def _number(value: Any, name: str, *, low: float = 0.0, strict: bool = True) -> float:
    """A finite int/float > ``low`` (>= with ``strict=False``); TypeError names the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"workload: {name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise PlanValidationError(f"workload: {name} must be finite, got {value!r}")
    if value < low or (strict and value == low):
        raise PlanValidationError(
            f"workload: {name} must be {'>' if strict else '>='} {low:g}, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Workload:
    """Arrivals of plan runs over ``horizon_ms`` for a capacity study (SPEC §4.2, §11.3).

    Give exactly one of ``rate_per_s``, ``interval_ms``, ``arrivals_ms`` or ``population``
    (with ``think_ms``). Runs that arrive before the horizon run to their end; times count
    from the study's start. Pass it as ``workload=`` to ``ok.monte_carlo``, ``ok.sweep``,
    ``ok.tune`` or ``ok.capacity_for``.

    Args:
        rate_per_s: Poisson arrivals at that many runs per second, or piecewise-constant
            rates ``[(from_ms, runs_per_s), ...]`` (the first piece from 0, ``from_ms``
            increasing; a rate may be 0), e.g. ``[(0, 5), (600_000, 20)]`` for a peak after
            ten minutes.
        interval_ms: One run every ``interval_ms`` ms, from t = 0.
        arrivals_ms: Explicit arrival times in ms (>= 0, sorted).
        horizon_ms: No run arrives at or after this time, ms; needed by every form but
            ``arrivals_ms``.
        population: A closed population of that many users (learners), each thinking for
            an exponential time of mean ``think_ms``, then starting a run, and thinking
            again once it has ended (a run that never ends keeps its user). Users start
            thinking at t = 0; no user starts a run after the horizon. The load regulates
            itself: a slow agent slows the arrivals, and queues never exceed the population
            (no ``OverloadWarning``).
        think_ms: Mean think time of a ``population``'s users, ms.
        plans: A mix ``[(plan, weight), ...]`` (Plan objects, dicts or file paths; weights
            > 0, normalised): each arrival runs one of them, drawn independently with those
            probabilities; the plans share the agents. Pass None as the study's plan.
        give_up_ms: The clients' patience, ms (SPEC §17.2): a run is *useful* only if it
            succeeded within this time of its arrival. Nothing is cancelled (a real client
            that gives up does not stop the server's work; a plan deadline would): the
            summary's ``useful_rate`` and ``goodput_per_s`` count useful runs. None
            (default): every succeeded run is useful.

    Raises:
        TypeError: A parameter that is not a number (a string rate, say), naming it.
        PlanValidationError: Not exactly one form given; a value that is not finite, not
            positive or not sorted; a plan of the mix that is invalid; or more than
            ``Workload.MAX_ARRIVALS`` (10 million) arrivals expected (raise the class
            attribute if you have the memory, about 1 kB a run).

    Example:
        ```python
        peak = ok.Workload(rate_per_s=[(0, 0.5), (300_000, 1.0)], horizon_ms=900_000)
        users = ok.Workload(population=200, think_ms=30_000, horizon_ms=3_600_000)
        mc = ok.monte_carlo(plan, models, workload=peak, seed=1)
        impatient = ok.Workload(rate_per_s=2, horizon_ms=600_000, give_up_ms=20_000)
        ok.monte_carlo(plan, models, workload=impatient, seed=1).summary()["goodput_per_s"]
        ```
    """

    rate_per_s: float | Sequence[tuple[float, float]] | None = None
    interval_ms: float | None = None
    arrivals_ms: tuple[float, ...] | None = None
    horizon_ms: float | None = None
    population: int | None = None
    think_ms: float | None = None
    plans: tuple[tuple[Plan, float], ...] | None = field(default=None, repr=False)
    give_up_ms: float | None = None
    MAX_ARRIVALS: ClassVar[int] = 10_000_000

    def __post_init__(self) -> None:
        given = [
            k
            for k in ("rate_per_s", "interval_ms", "arrivals_ms", "population")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise PlanValidationError(
                "workload: give exactly one of rate_per_s, interval_ms, arrivals_ms or "
                f"population (with think_ms) (got {', '.join(given) or 'none'})"
            )
        if self.horizon_ms is not None:
            _number(self.horizon_ms, "horizon_ms")
        elif self.arrivals_ms is None:
            raise PlanValidationError(f"workload: horizon_ms must be > 0 for {given[0]}")
        if (self.think_ms is None) != (self.population is None):
            raise PlanValidationError(
                "workload: population and think_ms go together (a closed "
                "population of users who think think_ms between runs)"
            )
        if self.population is not None:
            if isinstance(self.population, bool) or not isinstance(self.population, int):
                raise TypeError(
                    f"workload: population must be an int >= 1, got "
                    f"{type(self.population).__name__} {self.population!r}"
                )
            if self.population < 1:
                raise PlanValidationError(
                    f"workload: population must be >= 1, got {self.population}"
                )
            object.__setattr__(self, "think_ms", _number(self.think_ms, "think_ms"))
        if self.rate_per_s is not None:
            object.__setattr__(self, "rate_per_s", self._rates(self.rate_per_s))
        if self.interval_ms is not None:
            _number(self.interval_ms, "interval_ms")
        if self.arrivals_ms is not None:
            if isinstance(self.arrivals_ms, (str, bytes)) or not hasattr(
                self.arrivals_ms, "__iter__"
            ):
                raise TypeError(
                    "workload: arrivals_ms must be a sequence of times in ms, got "
                    f"{type(self.arrivals_ms).__name__}"
                )
            times = tuple(self.arrivals_ms)
            if len(times) > self.MAX_ARRIVALS:
                self._too_many(len(times))
            times = tuple(
                _number(t, f"arrivals_ms[{i}]", strict=False) for i, t in enumerate(times)
            )
            if any(a > b for a, b in zip(times, times[1:])):
                raise PlanValidationError("workload: arrivals_ms must be sorted (ms, ascending)")
            object.__setattr__(self, "arrivals_ms", times)
        expected = self.expected_arrivals()
        if expected > self.MAX_ARRIVALS:
            self._too_many(expected)
        if self.plans is not None:
            object.__setattr__(self, "plans", self._mix(self.plans))
        if self.give_up_ms is not None:
            object.__setattr__(self, "give_up_ms", _number(self.give_up_ms, "give_up_ms"))

    def _rates(self, rate: Any) -> Any:
        if isinstance(rate, (list, tuple)):
            if not rate:
                raise PlanValidationError("workload: rate_per_s pieces must not be empty")
            pieces = []
            for i, piece in enumerate(rate):
                if not isinstance(piece, (list, tuple)) or len(piece) != 2:
                    raise TypeError(
                        f"workload: rate_per_s[{i}] must be a pair (from_ms, runs_per_s),"
                        f" got {piece!r}"
                    )
                pieces.append(
                    (
                        _number(piece[0], f"rate_per_s[{i}] from_ms", strict=False),
                        _number(piece[1], f"rate_per_s[{i}] runs_per_s", strict=False),
                    )
                )
            if pieces[0][0] != 0:
                raise PlanValidationError(
                    f"workload: the first rate_per_s piece must start at 0 ms, got {pieces[0][0]:g}"
                )
            if any(a[0] >= b[0] for a, b in zip(pieces, pieces[1:])):
                raise PlanValidationError("workload: rate_per_s pieces need increasing from_ms")
            if not any(r > 0 for _, r in pieces):
                raise PlanValidationError("workload: every rate_per_s piece is 0: no run arrives")
            return tuple(pieces)
        return _number(rate, "rate_per_s")

    @staticmethod
    def _mix(plans: Any) -> tuple[tuple[Plan, float], ...]:
        if (
            isinstance(plans, (str, bytes, dict))
            or not isinstance(plans, (list, tuple))
            or not plans
        ):
            raise TypeError("workload: plans must be a non-empty list of (plan, weight) pairs")
        out = []
        for i, pair in enumerate(plans):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"workload: plans[{i}] must be a pair (plan, weight), got {pair!r}")
            out.append((as_plan(pair[0]), _number(pair[1], f"plans[{i}] weight")))
        total = math.fsum(w for _, w in out)
        return tuple((p, w / total) for p, w in out)

    def _too_many(self, n: float) -> None:
        raise PlanValidationError(
            f"workload: about {n:,.0f} arrivals expected, more than Workload.MAX_ARRIVALS "
            f"({self.MAX_ARRIVALS:,}); shorten horizon_ms or lower the rate, or raise the cap "
            "(orchkit.Workload.MAX_ARRIVALS = ...) if you have the memory (~1 kB a run)"
        )

    def pieces(self) -> tuple[tuple[float, float], ...]:
        """The arrival rate as ``((from_ms, runs_per_s), ...)`` (Poisson workloads only)."""
        rate = self.rate_per_s
        if rate is None or isinstance(rate, (int, float)):
            return ((0.0, float(rate or 0.0)),)
        return tuple(rate)

    @property
    def _horizon(self) -> float:
        """``horizon_ms``, which every form but explicit arrivals has (checked when made)."""
        return math.inf if self.horizon_ms is None else self.horizon_ms

    @property
    def _think(self) -> float:
        """``think_ms`` of a closed population (checked when made)."""
        assert self.think_ms is not None, "think_ms goes with population"
        return self.think_ms

    def expected_arrivals(self) -> float:
        """The expected number of arrivals before the horizon (a closed population: at
        most, as if runs took no time)."""
        if self.population is not None:
            return self.population * (1.0 + self._horizon / self._think)
        if self.arrivals_ms is not None:
            return float(len(self.times(random.Random(0))))
        if self.interval_ms is not None:
            ratio = self._horizon / self.interval_ms
            return float(math.ceil(ratio)) if math.isfinite(ratio) else math.inf
        bounds = [a for a, _ in self.pieces()] + [math.inf]
        return sum(
            r * max(0.0, min(b, self._horizon) - a) / 1000.0
            for (a, r), b in zip(self.pieces(), bounds[1:])
        )

    def mean_rate_per_s(self, from_ms: float, to_ms: float) -> float | None:
        """The expected arrival rate between ``from_ms`` and ``to_ms``, runs/s, when the
        workload fixes it (Poisson rates, fixed intervals); None when the arrivals decide
        it (explicit times, a closed population)."""
        if self.interval_ms is not None:
            return 1000.0 / self.interval_ms
        if self.rate_per_s is None or to_ms <= from_ms:
            return None
        pieces = self.pieces()
        bounds = [a for a, _ in pieces[1:]] + [math.inf]
        runs = sum(
            r * max(0.0, min(b, to_ms) - max(a, from_ms)) for (a, r), b in zip(pieces, bounds)
        )
        return runs / (to_ms - from_ms)

    def peak_rate_per_s(self) -> float:
        """The highest arrival rate, runs/s (explicit arrivals: their mean rate; a closed
        population: population / think time, a bound its throughput never reaches)."""
        if self.population is not None:
            return 1000.0 * self.population / self._think
        if self.interval_ms is not None:
            return 1000.0 / self.interval_ms
        if self.arrivals_ms is not None:
            times = self.times(random.Random(0))
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            return 1000.0 * (len(times) - 1) / span if span > 0 else 0.0
        return max(r for a, r in self.pieces() if a < self._horizon)

    def times(self, rng: random.Random) -> list[float]:
        """Arrival times in ms (Poisson arrivals drawn from ``rng``; with piecewise rates
        each piece's gaps at its own rate, memoryless across piece boundaries). A closed
        population's arrivals depend on the runs: its users' first arrivals."""
        if self.population is not None:
            return sorted(rng.expovariate(1.0 / self._think) for _ in range(self.population))
        if self.arrivals_ms is not None:
            return [t for t in self.arrivals_ms if t < self._horizon]
        if self.interval_ms is not None:
            return [
                i * self.interval_ms for i in range(math.ceil(self._horizon / self.interval_ms))
            ]
        out: list[float] = []
        pieces = self.pieces()
        for k, (start, rate) in enumerate(pieces):
            end = min(pieces[k + 1][0] if k + 1 < len(pieces) else math.inf, self._horizon)
            if rate <= 0 or start >= end:
                continue
            t, mean = start, 1000.0 / rate
            lambd, draw, append = 1.0 / mean, rng.expovariate, out.append
            while True:
                t += draw(lambd)
                if t >= end:
                    break
                append(t)
        return out

    def plans_of(self, plan: Plan) -> list[Plan]:
        """The plans a study of this workload runs: its mix, or ``plan``."""
        return [p for p, _ in self.plans] if self.plans is not None else [plan]

    def picker(self, rng: random.Random) -> Callable[[], int]:
        """For a mix of plans: a function giving the plan index of each next arrival,
        drawn from ``rng`` (one plan: always 0)."""
        if self.plans is None or len(self.plans) == 1:
            return lambda: 0
        cum = list(itertools.accumulate(w for _, w in self.plans))
        return lambda: min(bisect.bisect_right(cum, rng.random()), len(cum) - 1)


def offered_load(
    workload: Workload, models: AgentModels, plan: Plan | None = None
) -> dict[str, float]:
    """Offered load per capacity-limited agent (SPEC §11.4): ρ = λ·E[service]/capacity, λ the
    workload's peak arrival rate, E[service] the mean latency its first attempts ask of the
    agent per run (summed over the steps of each plan of the mix, weighted by its share).
    Retries, timeouts, hangs and fallback plans add load that is not counted: ρ is a lower
    bound, and ρ >= 1 means overload for sure."""
    demand: dict[str, float] = {}
    if workload.plans is not None:
        mix = workload.plans
    elif plan is not None:
        mix = ((plan, 1.0),)
    else:
        raise TypeError("offered_load: give a plan, or a workload with a mix of plans")
    for p, weight in mix:
        for step in p.steps:
            latency = getattr(models.resolve(step.agent_id, step.action), "latency", None)
            if latency is not None:
                demand[step.agent_id] = demand.get(step.agent_id, 0.0) + weight * latency.mean_ms
    lam = workload.peak_rate_per_s() / 1000.0
    out = {}
    for agent_id, ms in sorted(demand.items()):
        cap = models.capacity(agent_id)
        if cap:
            out[agent_id] = lam * ms / cap
    return out
