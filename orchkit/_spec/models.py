"""Agent models for the simulator (SPEC §4.1): latency distributions, error and hang
probabilities and capacity per agent id (exact or glob) and action.

The file format is checked here, once, with messages that name the agent pattern, the
action and the fix; inside, every model is a small frozen object whose ``sample(rng)``
costs a few hundred nanoseconds. All times are milliseconds.

Matching rule (``AgentModels.resolve``): among the entries whose pattern matches the agent
id (``fnmatch.fnmatchcase``: case-sensitive, ``*``, ``?``, ``[seq]``), the most specific
wins: an exact id (no wildcard) beats any glob; then the pattern with the most literal
(non-wildcard) characters; then the entry listed first. Action keys under ``actions`` are
matched by the same rule, and the winning override's keys replace the agent entry's.
Entries never merge with each other: only the winning agent entry is used.

Outages (SPEC §10.3): an entry's ``outages: [{startMs, endMs, error, hang, latency}]``
replaces, for attempts that *start* in ``[startMs, endMs)`` of the study clock, the error
probability (default 1.0: the agent is down), the hang probability (default 0) and,
if given, the latency of every action of the entry. The study clock is ms from the start
of a workload study, or from each run's own start for independent runs and ``simulate``.
Only the SimPy path simulates outages (``monte_carlo`` picks it; the fast path declines).
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from math import cos, exp, log, sqrt, tau
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._base.errors import PlanValidationError
from .parse import json_value, read_file, short, write_file

if TYPE_CHECKING:
    import random

    import pandas as pd


__all__ = [
    "ActionModel",
    "AgentModels",
    "Constant",
    "Distribution",
    "Empirical",
    "Exponential",
    "Gamma",
    "Lognormal",
    "OUTCOMES",
    "Outage",
    "Uniform",
    "Weibull",
    "FAMILIES",
    "FitResult",
    "as_models",
    "best_match",
    "distribution_from_dict",
    "fit_models",
]

_Z95 = NormalDist().inv_cdf(0.95)  # 1.6448536269514722

# Parameter ranges that keep every draw finite on both simulation paths (SPEC §4.1; the
# docs/guides/simulation.md, "Agent models"). Latencies and their parameters are at most
# MAX_LATENCY_MS (about 31.7 years). The shapes: lognormal sigma <= 10, so
# mu + sigma·z stays far below exp's overflow (709) for any normal draw either sampler
# can make; gamma cv in [1e-9, 10] (shape 1/cv² in [0.01, 1e18], where both samplers
# work); weibull shape >= 0.1, so scale·(-ln u)^(1/shape) <= 1e12·37^10 stays finite.
MAX_LATENCY_MS = 1e12
_SIGMA_MAX = 10.0
_CV_RANGE = (1e-9, 10.0)
_WEIBULL_SHAPE_MIN = 0.1


def _num(v: float) -> float | int:
    """Integral floats as ints, so a saved file reads like the one written by hand."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q!r}")


# ---------------------------------------------------------------- distributions


class Distribution:
    """A latency distribution in ms.

    ``sample(rng)`` draws one value from a ``random.Random``; ``sample_array(gen, n)``
    draws ``n`` from a ``numpy.random.Generator``; ``mean_ms`` and ``quantile(q)`` are
    closed forms; ``to_dict()`` gives the on-disk form.
    """

    __slots__ = ()
    name: ClassVar[str]

    def sample(self, rng: random.Random) -> float:
        """One latency in ms."""
        raise NotImplementedError

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        """``n`` latencies in ms (float array)."""
        raise NotImplementedError

    @property
    def mean_ms(self) -> float:
        """The mean latency in ms."""
        raise NotImplementedError

    def quantile(self, q: float) -> float:
        """The latency in ms below which a fraction ``q`` (in [0, 1]) of draws fall."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form, e.g. ``{"dist": "constant", "value": 50}``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Constant(Distribution):
    """Always ``value`` ms."""

    value: float
    name: ClassVar[str] = "constant"

    def sample(self, rng: random.Random) -> float:
        return self.value

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=float)

    @property
    def mean_ms(self) -> float:
        return self.value

    def quantile(self, q: float) -> float:
        _check_q(q)
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"dist": "constant", "value": _num(self.value)}


@dataclass(frozen=True, slots=True)
class Exponential(Distribution):
    """Exponential with mean ``mean`` ms (memoryless)."""

    mean: float
    name: ClassVar[str] = "exponential"

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.exponential(self.mean, n)

    @property
    def mean_ms(self) -> float:
        return self.mean

    def quantile(self, q: float) -> float:
        _check_q(q)
        return -self.mean * math.log1p(-q)

    def to_dict(self) -> dict[str, Any]:
        return {"dist": "exponential", "mean": _num(self.mean)}


@dataclass(frozen=True, slots=True)
class Lognormal(Distribution):
    """ln(latency ms) ~ Normal(mu, sigma). Built from ``median``/``p95`` (then
    ``quantile(0.5) == median`` and ``quantile(0.95) == p95``) or from ``mu``/``sigma``."""

    mu: float
    sigma: float
    median: float | None = None  # kept for to_dict() when given that way
    p95: float | None = None
    name: ClassVar[str] = "lognormal"

    @classmethod
    def from_median_p95(cls, median: float, p95: float) -> Lognormal:
        """The lognormal whose median and 95th percentile are the given ms."""
        return cls(math.log(median), math.log(p95 / median) / _Z95, median, p95)

    def sample(self, rng: random.Random) -> float:
        # Box-Muller (one normal per call): exact, and ~1.7x faster than lognormvariate
        return exp(
            self.mu + self.sigma * sqrt(-2.0 * log(1.0 - rng.random())) * cos(tau * rng.random())
        )

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.lognormal(self.mu, self.sigma, n)

    @property
    def mean_ms(self) -> float:
        return math.exp(self.mu + 0.5 * self.sigma * self.sigma)

    def quantile(self, q: float) -> float:
        _check_q(q)
        if q in (0.0, 1.0):
            return 0.0 if q == 0.0 else math.inf
        return math.exp(self.mu + self.sigma * NormalDist().inv_cdf(q))

    def to_dict(self) -> dict[str, Any]:
        if self.median is not None and self.p95 is not None:
            return {"dist": "lognormal", "median": _num(self.median), "p95": _num(self.p95)}
        return {"dist": "lognormal", "mu": self.mu, "sigma": self.sigma}


@dataclass(frozen=True, slots=True)
class Gamma(Distribution):
    """Gamma with mean ``mean`` ms and coefficient of variation ``cv`` (sd / mean);
    shape k = 1/cv², scale = mean·cv². No closed-form quantile."""

    mean: float
    cv: float
    name: ClassVar[str] = "gamma"

    @property
    def shape(self) -> float:
        """Shape k = 1/cv² (dimensionless)."""
        return 1.0 / (self.cv * self.cv)

    @property
    def scale(self) -> float:
        """Scale θ = mean·cv² in ms."""
        return self.mean * self.cv * self.cv

    def sample(self, rng: random.Random) -> float:
        # shape and scale inlined: this runs once per simulated attempt
        return rng.gammavariate(1.0 / (self.cv * self.cv), self.mean * self.cv * self.cv)

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.gamma(self.shape, self.scale, n)

    @property
    def mean_ms(self) -> float:
        return self.mean

    def quantile(self, q: float) -> float:
        raise NotImplementedError(
            "gamma has no closed-form quantile; estimate it with "
            "np.quantile(dist.sample_array(np.random.default_rng(seed), n), q)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"dist": "gamma", "mean": _num(self.mean), "cv": _num(self.cv)}


@dataclass(frozen=True, slots=True)
class Uniform(Distribution):
    """Uniform on [low, high] ms."""

    low: float
    high: float
    name: ClassVar[str] = "uniform"

    def sample(self, rng: random.Random) -> float:
        return self.low + (self.high - self.low) * rng.random()

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.uniform(self.low, self.high, n)

    @property
    def mean_ms(self) -> float:
        return 0.5 * (self.low + self.high)

    def quantile(self, q: float) -> float:
        _check_q(q)
        return self.low + q * (self.high - self.low)

    def to_dict(self) -> dict[str, Any]:
        return {"dist": "uniform", "low": _num(self.low), "high": _num(self.high)}


@dataclass(frozen=True, slots=True)
class Empirical(Distribution):
    """Resamples the given latencies (ms) with equal probability (e.g. from a live trace).
    ``quantile`` is the inverse of their CDF (numpy's ``method="inverted_cdf"``)."""

    samples: tuple[float, ...]
    name: ClassVar[str] = "empirical"

    def sample(self, rng: random.Random) -> float:
        return rng.choice(self.samples)

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return gen.choice(np.asarray(self.samples, dtype=float), n)

    @property
    def mean_ms(self) -> float:
        return math.fsum(self.samples) / len(self.samples)

    def quantile(self, q: float) -> float:
        _check_q(q)
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def to_dict(self) -> dict[str, Any]:
        return {"dist": "empirical", "samples": [_num(s) for s in self.samples]}


@dataclass(frozen=True, slots=True)
class Weibull(Distribution):
    """Weibull with ``shape`` k and ``scale`` λ ms: P(latency > t) = exp(-(t/λ)^k). Built
    from ``median``/``p95`` (kept for ``to_dict()``) or from ``shape``/``scale``."""

    shape: float
    scale: float
    median: float | None = None
    p95: float | None = None
    name: ClassVar[str] = "weibull"

    @classmethod
    def from_median_p95(cls, median: float, p95: float) -> Weibull:
        """The Weibull whose median and 95th percentile are the given ms."""
        shape = math.log(math.log(20.0) / math.log(2.0)) / math.log(p95 / median)
        return cls(shape, median / math.log(2.0) ** (1.0 / shape), median, p95)

    def sample(self, rng: random.Random) -> float:
        return rng.weibullvariate(self.scale, self.shape)

    def sample_array(self, gen: np.random.Generator, n: int) -> np.ndarray:
        return self.scale * gen.weibull(self.shape, n)

    @property
    def mean_ms(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)

    def quantile(self, q: float) -> float:
        _check_q(q)
        return math.inf if q == 1.0 else self.scale * (-math.log1p(-q)) ** (1.0 / self.shape)

    def to_dict(self) -> dict[str, Any]:
        if self.median is not None and self.p95 is not None:
            return {"dist": "weibull", "median": _num(self.median), "p95": _num(self.p95)}
        return {"dist": "weibull", "shape": self.shape, "scale": self.scale}


# parameter sets of each dist, in the order they are listed in messages
_DIST_PARAMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "constant": (("value",),),
    "exponential": (("mean",),),
    "lognormal": (("median", "p95"), ("mu", "sigma")),
    "gamma": (("mean", "cv"),),
    "uniform": (("low", "high"),),
    "empirical": (("samples",),),
    "weibull": (("median", "p95"), ("shape", "scale")),
}


def _fmt_sets(dist: str) -> str:
    return " or ".join("{" + ", ".join(s) + "}" for s in _DIST_PARAMS[dist])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def distribution_from_dict(spec: Any, where: str = "latency") -> Distribution:
    """Build a distribution from its on-disk form, e.g. ``{"dist": "gamma", "mean": 80,
    "cv": 0.5}``; raises ``PlanValidationError`` (prefixed with ``where``) if it is wrong."""
    valid = ", ".join(_DIST_PARAMS)
    if not isinstance(spec, dict):
        raise PlanValidationError(
            f"{where}: expected a mapping such as {{dist: lognormal, median: 250, p95: 900}}, "
            f"got {short(spec)}"
        )
    dist = spec.get("dist")
    if dist is None:
        raise PlanValidationError(f"{where}: missing 'dist' (one of: {valid})")
    if dist not in _DIST_PARAMS:
        hint = difflib.get_close_matches(str(dist), list(_DIST_PARAMS), n=1)
        fix = f"did you mean '{hint[0]}'? " if hint else ""
        raise PlanValidationError(f"{where}: unknown dist '{dist}': {fix}(valid: {valid})")
    given = [k for k in spec if k != "dist"]
    sets = _DIST_PARAMS[dist]
    # the parameter set that shares most keys with what was given decides the messages
    chosen = max(sets, key=lambda s: sum(k in s for k in given))
    extra = [k for k in given if k not in chosen]
    if extra:
        raise PlanValidationError(
            f"{where}: {dist} does not take {', '.join(repr(k) for k in extra)}; "
            f"{dist} takes {_fmt_sets(dist)} — remove or rename it"
        )
    missing = [k for k in chosen if k not in spec]
    if missing:
        raise PlanValidationError(
            f"{where}: {dist} is missing {', '.join(repr(k) for k in missing)} "
            f"({dist} takes {_fmt_sets(dist)})"
        )
    p = {k: spec[k] for k in chosen}
    if dist == "empirical":
        samples = p["samples"]
        if not isinstance(samples, (list, tuple)) or not samples:
            raise PlanValidationError(
                f"{where}: empirical 'samples' must be a non-empty list of latencies in ms, "
                f"got {short(samples)}"
            )
        bad = [s for s in samples if not _is_number(s) or not 0 <= s <= MAX_LATENCY_MS]
        if bad:
            raise PlanValidationError(
                f"{where}: empirical 'samples' must be numbers >= 0 and <= {MAX_LATENCY_MS:g} "
                f"(ms); bad values: {short(bad[:5])}"
            )
        return Empirical(tuple(float(s) for s in samples))
    for k, v in p.items():
        if not _is_number(v):
            raise PlanValidationError(
                f"{where}: {dist} '{k}' must be a finite number, got {short(v)}"
            )
    for k in ("value", "mean", "median", "p95", "low", "high", "scale"):
        if k in p and p[k] > MAX_LATENCY_MS:
            raise PlanValidationError(
                f"{where}: {dist} '{k}' is {p[k]:g} ms; latencies are at most "
                f"{MAX_LATENCY_MS:g} ms (about 31.7 years)"
            )

    def positive(*keys: str) -> None:
        for k in keys:
            if p[k] <= 0:
                raise PlanValidationError(f"{where}: {dist} '{k}' must be > 0, got {p[k]!r}")

    def shape_range(name: str, value: float, lo: float, hi: float, given: str) -> None:
        if not lo <= value <= hi:
            raise PlanValidationError(
                f"{where}: {dist} {given} gives {name} = {value:.3g}, outside the range "
                f"[{lo:g}, {hi:g}] in which draws stay finite and both simulation paths agree; "
                "use a less extreme spread"
            )

    if dist == "constant":
        if p["value"] < 0:
            raise PlanValidationError(
                f"{where}: constant 'value' is a latency in ms and must be >= 0, got {p['value']!r}"
            )
        return Constant(float(p["value"]))
    if dist == "exponential":
        positive("mean")
        return Exponential(float(p["mean"]))
    if dist == "gamma":
        positive("mean", "cv")
        shape_range("cv", p["cv"], *_CV_RANGE, given=f"cv {p['cv']!r}")
        return Gamma(float(p["mean"]), float(p["cv"]))
    if dist == "uniform":
        if p["low"] < 0:
            raise PlanValidationError(
                f"{where}: uniform 'low' is a latency in ms and must be >= 0, got {p['low']!r}"
            )
        if p["low"] > p["high"]:
            raise PlanValidationError(
                f"{where}: uniform needs low <= high, got low={p['low']!r} > high={p['high']!r}; "
                "swap them"
            )
        return Uniform(float(p["low"]), float(p["high"]))
    if dist == "weibull":
        if "median" not in p:
            positive("shape", "scale")
            shape_range("shape", p["shape"], _WEIBULL_SHAPE_MIN, math.inf, "")
            return Weibull(float(p["shape"]), float(p["scale"]))
        positive("median")
        if p["p95"] <= p["median"]:
            raise PlanValidationError(
                f"{where}: weibull needs p95 > median (got median="
                f"{p['median']!r}, p95={p['p95']!r})"
            )
        w = Weibull.from_median_p95(float(p["median"]), float(p["p95"]))
        shape_range(
            "shape",
            w.shape,
            _WEIBULL_SHAPE_MIN,
            math.inf,
            f"p95/median = {p['p95'] / p['median']:.3g}",
        )
        return w
    # lognormal
    if "median" in p:
        positive("median")
        if p["p95"] <= p["median"]:
            raise PlanValidationError(
                f"{where}: lognormal needs p95 > median (got median={p['median']!r}, "
                f"p95={p['p95']!r}); p95 is the 95th percentile in ms — for a fixed latency "
                "use {dist: constant, value: ...}"
            )
        d = Lognormal.from_median_p95(float(p["median"]), float(p["p95"]))
        shape_range(
            "sigma",
            d.sigma,
            0.0,
            _SIGMA_MAX,
            f"p95/median = {p['p95'] / p['median']:.3g} (at most "
            f"{math.exp(_SIGMA_MAX * _Z95):.3g})",
        )
        return d
    positive("sigma")
    shape_range("sigma", p["sigma"], 0.0, _SIGMA_MAX, "")
    if p["mu"] > math.log(MAX_LATENCY_MS):
        raise PlanValidationError(
            f"{where}: lognormal mu {p['mu']:g} puts the median at e^mu > {MAX_LATENCY_MS:g} ms; "
            f"mu is ln(ms) and is at most {math.log(MAX_LATENCY_MS):.4g}"
        )
    return Lognormal(float(p["mu"]), float(p["sigma"]))


# ---------------------------------------------------------------- action models

OUTCOMES = ("ok", "error", "hang")  # codes 0, 1, 2 of ActionModel.draw_arrays


@dataclass(frozen=True, slots=True)
class Outage:
    """A window ``[start_ms, end_ms)`` of the study clock during which attempts that start
    are drawn from ``model`` instead of the agent's own (SPEC §10.3)."""

    start_ms: float
    end_ms: float
    model: ActionModel


@dataclass(frozen=True, slots=True)
class ActionModel:
    """What one attempt of an (agent, action) does in a simulation: what
    ``AgentModels.resolve`` returns. P(ok) = 1 − error − hang.

    Attributes:
        latency: How long the attempt runs, ms (a distribution with ``sample``,
            ``quantile(q)`` and ``mean_ms``).
        error: P(the attempt ends in an error after its latency), in [0, 1].
        hang: P(the attempt never returns; only a timeout ends it), in [0, 1].
        outages: Windows of the study clock during which attempts that start use another
            model (``at``).

    Example:
        ```python
        import random
        model = ok.examples.models().resolve("tutor-agent-1", "prepare_hints")
        model.error, model.latency.quantile(0.95)  # 0.03, 4500 ms
        model.draw(random.Random(0))  # (1296.6..., 'ok'): latency in ms, outcome
        ```
    """

    latency: Distribution
    error: float = 0.0
    hang: float = 0.0
    outages: tuple[Outage, ...] = ()
    _fail: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fail", self.hang + self.error)

    def at(self, t_ms: float) -> ActionModel:
        """The model of an attempt that starts at ``t_ms``.

        Args:
            t_ms: When the attempt starts, ms on the study clock (from a workload study's
                start; from the run's own start for independent runs and ``simulate``).

        Returns:
            The outage's model while one is on (a window includes its start, excludes its
                end), else this model.
        """
        for o in self.outages:
            if o.start_ms <= t_ms < o.end_ms:
                return o.model
        return self

    def draw(self, rng: random.Random) -> tuple[float, str]:
        """Draw one attempt: always its latency, then one ``rng.random()``.

        Args:
            rng: A ``random.Random`` (a run's own, in the simulator).

        Returns:
            ``(latency_ms, outcome)``: outcome ``"ok"``, ``"error"`` (after latency_ms) or
                ``"hang"`` (latency_ms is ``inf``).
        """
        latency = self.latency.sample(rng)
        u = rng.random()
        if u < self.hang:
            return math.inf, "hang"
        if u < self._fail:
            return latency, "error"
        return latency, "ok"

    def draw_arrays(self, gen: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` attempts at once (the fast path's vectorised draw).

        Args:
            gen: A ``numpy.random.Generator``.
            n: How many attempts.

        Returns:
            Two arrays of length ``n``: the latencies in ms (``inf`` for a hang), and int8
                outcome codes: 0 ok, 1 error, 2 hang (indexes into ``OUTCOMES``).
        """
        latency = self.latency.sample_array(gen, n)
        u = gen.random(n)
        code = (u < self._fail).astype(np.int8)
        if self.hang > 0:  # (most models never hang: no second pass)
            hung = u < self.hang
            code += hung
            latency[hung] = math.inf
        return latency, code


# ---------------------------------------------------------------- the models file

_TOP_KEYS = ("agents", "description")
_ENTRY_KEYS = ("capacity", "latency", "error", "hang", "actions", "outages")
_OUTAGE_KEYS = ("startMs", "endMs", "error", "hang", "latency")
_ACTION_KEYS = ("latency", "error", "hang")
_BRACKET = re.compile(r"\[!?\]?[^\]]*\]")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _specificity(pattern: str, index: int) -> tuple[bool, int, int]:
    """Sort key, larger = more specific: exact id, then literal characters, then file order."""
    literal = len(_BRACKET.sub("", pattern).replace("*", "").replace("?", ""))
    return (not _is_glob(pattern), literal, -index)


def best_match(name: str, patterns: list[str]) -> int | None:
    """Index of the most specific pattern matching ``name`` (see module docstring)."""
    best, best_key = None, None
    for i, pat in enumerate(patterns):
        if pat == name or (_is_glob(pat) and fnmatchcase(name, pat)):
            key = _specificity(pat, i)
            if best_key is None or key > best_key:
                best, best_key = i, key
    return best


def _unknown_keys(keys: Any, valid: tuple[str, ...], where: str, what: str) -> None:
    for k in keys:
        if k not in valid:
            hint = difflib.get_close_matches(str(k), valid, n=1)
            fix = f"did you mean '{hint[0]}'? " if hint else ""
            raise PlanValidationError(
                f"{where}: unknown {what} '{k}': {fix}(valid: {', '.join(valid)})"
            )


def _probability(value: Any, where: str, key: str) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise PlanValidationError(
            f"{where}: '{key}' is a probability and must be a number in [0, 1], got {short(value)}"
            + (
                " (write percentages as fractions: 2% is 0.02)"
                if _is_number(value) and value > 1
                else ""
            )
        )
    return float(value)


class _Entry:
    """One compiled agent entry: its capacity, base model and action overrides."""

    __slots__ = ("pattern", "capacity", "base", "action_patterns", "action_models", "raw")

    def __init__(self, pattern: str, raw: dict[str, Any], where: str):
        self.pattern = pattern
        self.raw = raw
        capacity = raw.get("capacity")
        if capacity is not None and (
            not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1
        ):
            raise PlanValidationError(
                f"{where}: 'capacity' must be an integer >= 1 (attempts served at once), or "
                f"omitted for unlimited; got {short(capacity)}"
            )
        self.capacity = capacity
        if "latency" not in raw:
            raise PlanValidationError(
                f"{where}: missing 'latency' (e.g. latency: {{dist: lognormal, median: 250, "
                "p95: 900}}); action overrides may change it, but the agent entry needs one"
            )
        latency = distribution_from_dict(raw["latency"], f"{where} latency")
        error = _probability(raw.get("error", 0.0), where, "error")
        hang = _probability(raw.get("hang", 0.0), where, "hang")
        outages = _outages(raw.get("outages"), where)
        self.base = _action_model(latency, error, hang, where, outages)
        actions = raw.get("actions") or {}
        if not isinstance(actions, dict):
            raise PlanValidationError(
                f"{where}: 'actions' must be a mapping of action name (or glob) to overrides, "
                f"got {short(actions)}"
            )
        self.action_patterns: list[str] = []
        self.action_models: list[ActionModel] = []
        for action, over in actions.items():
            awhere = f"{where} action '{action}'"
            if not isinstance(action, str) or not action:
                raise PlanValidationError(
                    f"{where}: action names must be non-empty strings, got {short(action)}"
                )
            if not isinstance(over, dict):
                raise PlanValidationError(
                    f"{awhere}: expected a mapping of overrides ({', '.join(_ACTION_KEYS)}), "
                    f"got {short(over)}"
                )
            if "capacity" in over:
                raise PlanValidationError(
                    f"{awhere}: 'capacity' belongs to the agent, not to one action; move it up "
                    f"to agent '{pattern}'"
                )
            _unknown_keys(over, _ACTION_KEYS, awhere, "key")
            a_latency = (
                distribution_from_dict(over["latency"], f"{awhere} latency")
                if "latency" in over
                else latency
            )
            a_error = _probability(over["error"], awhere, "error") if "error" in over else error
            a_hang = _probability(over["hang"], awhere, "hang") if "hang" in over else hang
            self.action_patterns.append(action)
            self.action_models.append(_action_model(a_latency, a_error, a_hang, awhere, outages))

    def model_for(self, action: str) -> ActionModel:
        i = best_match(action, self.action_patterns)
        return self.base if i is None else self.action_models[i]


def _scale_latency(spec: dict[str, Any], k: float) -> dict[str, Any]:
    """A distribution's on-disk form with every quantile multiplied by ``k`` (> 0): the
    scale parameters scaled (lognormal ``mu`` shifted by ln k), the shape kept."""
    d = dict(spec)
    dist = d.get("dist")
    if dist == "empirical":
        d["samples"] = [s * k for s in d["samples"]]
    elif dist == "lognormal" and "mu" in d:
        d["mu"] = d["mu"] + math.log(k)
    else:
        for key in ("value", "mean", "median", "p95", "low", "high", "scale"):
            if key in d:
                d[key] = d[key] * k
    return d


def _path_entries(keys: list[str], rest: str) -> tuple[list[str], list[str]]:
    """Split ``"<pattern>.<key>..."`` (agent patterns may hold dots): the entries it names
    and the remaining path parts. An exact key wins over a glob; longer prefixes first."""
    parts = rest.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in keys:
            return [".".join(parts[:cut])], parts[cut:]
    for cut in range(len(parts) - 1, 0, -1):
        hits = [k for k in keys if fnmatchcase(k, ".".join(parts[:cut]))]
        if hits:
            return hits, parts[cut:]
    return [], parts


def _action_model(
    latency: Distribution,
    error: float,
    hang: float,
    where: str,
    outages: Sequence[tuple[float, float, Distribution | None, float, float]] = (),
) -> ActionModel:
    if error + hang > 1.0 + 1e-12:
        raise PlanValidationError(
            f"{where}: error + hang = {error + hang:g} > 1; they are the probabilities of two "
            "exclusive outcomes of one attempt, so their sum must be <= 1"
        )
    return ActionModel(
        latency,
        error,
        hang,
        tuple(
            Outage(start, end, ActionModel(o_latency or latency, o_error, o_hang))
            for start, end, o_latency, o_error, o_hang in outages
        ),
    )


def _outages(raw: Any, where: str) -> list[tuple[float, float, Distribution | None, float, float]]:
    """Check an entry's ``outages`` list: ``{startMs, endMs, error (default 1.0), hang
    (default 0), latency (default: the agent's or action's own)}``, windows not overlapping.
    The outage applies to every action of the entry."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PlanValidationError(
            f"{where}: 'outages' must be a list such as [{{startMs: 60000, endMs: 180000, "
            f"error: 1.0}}], got {short(raw)}"
        )
    out = []
    for k, o in enumerate(raw):
        owhere = f"{where} outage {k}"
        if not isinstance(o, dict):
            raise PlanValidationError(
                f"{owhere}: expected a mapping ({', '.join(_OUTAGE_KEYS)}), got {short(o)}"
            )
        _unknown_keys(o, _OUTAGE_KEYS, owhere, "key")
        for key in ("startMs", "endMs"):
            if key not in o:
                raise PlanValidationError(f"{owhere}: missing '{key}' (ms on the study clock)")
            if not _is_number(o[key]) or o[key] < 0:
                raise PlanValidationError(
                    f"{owhere}: '{key}' must be a finite number of ms >= 0, got {short(o[key])}"
                )
        if not o["startMs"] < o["endMs"]:
            raise PlanValidationError(
                f"{owhere}: needs startMs < endMs, got startMs={o['startMs']!r}, "
                f"endMs={o['endMs']!r}"
            )
        error = _probability(o.get("error", 1.0), owhere, "error")
        hang = _probability(o.get("hang", 0.0), owhere, "hang")
        if error + hang > 1.0 + 1e-12:
            raise PlanValidationError(
                f"{owhere}: error + hang = {error + hang:g} > 1 (error defaults to 1.0: set it "
                "lower when the outage hangs)"
            )
        latency = (
            distribution_from_dict(o["latency"], f"{owhere} latency") if "latency" in o else None
        )
        out.append((float(o["startMs"]), float(o["endMs"]), latency, error, hang))
    out.sort(key=lambda w: w[0])
    for a, b in zip(out, out[1:]):
        if b[0] < a[1]:
            raise PlanValidationError(
                f"{where}: outages [{a[0]:g}, {a[1]:g}) and [{b[0]:g}, {b[1]:g}) ms overlap; "
                "merge them or make them disjoint"
            )
    return out


class AgentModels:
    """Latency, error, hang and capacity models of the agents a simulated plan calls
    (SPEC §4.1). Times in ms.

    Load with ``AgentModels.load(path)`` (YAML or JSON) or ``AgentModels.from_dict(d)``;
    look up with ``resolve(agent_id, action)`` and ``capacity(agent_id)``. An agent id is
    served by the most specific entry whose pattern matches it (``fnmatch``,
    case-sensitive): an exact id beats any glob, then the pattern with the most literal
    characters, then the entry listed first; action keys under ``actions`` are matched the
    same way, and entries never merge. ``with_values`` and ``scaled`` return changed
    copies.

    Args:
        data: The on-disk form, ``{"agents": {pattern: entry}, "description": text}``. An
            entry has ``latency`` (required; e.g. ``{dist: lognormal, median: 250, p95:
            900}``, ms), ``error`` and ``hang`` (probabilities of one attempt, default 0),
            ``capacity`` (attempts served at once, an int >= 1; omitted: unlimited),
            ``actions`` (action name or glob -> its own latency, error, hang) and
            ``outages`` (``[{startMs, endMs, error, hang, latency}]``, ms on the study
            clock).
        source: Where the models come from, named in every error message.

    Attributes:
        source (str): Where the models come from (the file's path after ``load``).
        description (str | None): The file's free-text ``description``.

    Raises:
        PlanValidationError: ``data`` is wrong (an unknown key or dist, a missing latency,
            a probability outside [0, 1], error + hang > 1, overlapping outages, ...);
            the message names the pattern, the action and the fix.

    Example:
        ```python
        models = ok.AgentModels.from_dict({"agents": {
            "tutor-agent-*": {"capacity": 4, "error": 0.03,
                              "latency": {"dist": "lognormal", "median": 1500, "p95": 6000}},
        }})
        models.capacity("tutor-agent-1")  # 4
        models.resolve("tutor-agent-1", "prepare_hints").latency.quantile(0.5)  # 1500 ms
        ```
    """

    def __init__(self, data: dict[str, Any], *, source: str = "agent models"):
        if not isinstance(data, dict):
            raise PlanValidationError(
                f"{source}: expected a mapping with an 'agents' key, got "
                f"{type(data).__name__} {short(data)}"
            )
        data = json_value(data, source, finite=False)
        _unknown_keys(data, _TOP_KEYS, source, "top-level key")
        agents = data.get("agents")
        if not isinstance(agents, dict) or not agents:
            raise PlanValidationError(
                f"{source}: 'agents' must be a non-empty mapping of agent id or glob to its "
                "model, e.g. agents: {'tutor-agent-*': {latency: {dist: exponential, mean: 1500}}}"
            )
        self.source = source
        self.description = data.get("description")
        self._entries: list[_Entry] = []
        for pattern, raw in agents.items():
            if not isinstance(pattern, str) or not pattern:
                raise PlanValidationError(
                    f"{source}: agent ids and globs must be non-empty strings, got "
                    f"{short(pattern)} (quote it in YAML)"
                )
            where = f"{source}: agent '{pattern}'"
            if not isinstance(raw, dict):
                raise PlanValidationError(
                    f"{where}: expected a mapping ({', '.join(_ENTRY_KEYS)}), got {short(raw)}"
                )
            _unknown_keys(raw, _ENTRY_KEYS, where, "key")
            self._entries.append(_Entry(pattern, raw, where))
        self._patterns = [e.pattern for e in self._entries]
        self._cache: dict[tuple[str, str], ActionModel] = {}

    # -------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "agent models") -> AgentModels:
        """Validate and compile the on-disk form (what a models file holds).

        Args:
            data: ``{"agents": {pattern: entry}, "description": text}`` (see the class).
            source: Where it comes from, named in error messages.

        Returns:
            The models.

        Raises:
            PlanValidationError: ``data`` is wrong; the message names the pattern, the
                action and the fix.
        """
        return cls(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> AgentModels:
        """Read models from a file, with the plan files' safe reader.

        Args:
            path: A ``.yaml``/``.yml`` file, or JSON (any other suffix); it becomes
                ``source``.

        Returns:
            The models.

        Raises:
            PlanValidationError: The file cannot be read or parsed, or its models are
                wrong.
        """
        return cls(read_file(path, "agent models file"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form (numbers as given; distributions in the form they were given)."""
        out: dict[str, Any] = {}
        if self.description is not None:
            out["description"] = self.description
        agents: dict[str, Any] = {}
        for e in self._entries:
            d: dict[str, Any] = {}
            for key in _ENTRY_KEYS:
                if key not in e.raw:
                    continue
                if key == "latency":
                    d[key] = e.base.latency.to_dict()
                elif key == "actions":
                    d[key] = {
                        a: {
                            k: (m.latency.to_dict() if k == "latency" else e.raw["actions"][a][k])
                            for k in _ACTION_KEYS
                            if k in e.raw["actions"][a]
                        }
                        for a, m in zip(e.action_patterns, e.action_models)
                    }
                else:
                    d[key] = e.raw[key]
            agents[e.pattern] = d
        out["agents"] = agents
        return out

    def save(self, path: str | Path) -> None:
        """Write the models (``to_dict``) to a file that ``load`` reads back.

        Args:
            path: Where to write: YAML for a ``.yaml``/``.yml`` suffix, else JSON.

        Raises:
            OSError: The file cannot be written.
        """
        write_file(path, self.to_dict())

    def with_values(self, values: dict[str, Any]) -> AgentModels:
        """A copy with on-disk fields set by dotted path, validated like a loaded file.

        Args:
            values: Paths ``"agents.<pattern>.<key>[.<key>...]"`` to their new values,
                e.g. ``"agents.tutor-agent-*.capacity"``, ``"agents.llm.latency.median"``
                (ms) or ``"agents.llm.actions.summarise.error"``. ``<pattern>`` is a key
                of the file (an agent id or glob, as written) or a glob matching keys
                (``"agents.*.capacity"`` sets every entry's capacity).

        Returns:
            The new models (these are unchanged).

        Raises:
            TypeError: ``values`` is not a dict.
            PlanValidationError: A path that does not start ``agents.<pattern>.``, a
                pattern that names no entry (the message lists the keys), or a value that
                makes the models invalid.

        Example:
            ```python
            bigger = ok.examples.models().with_values({"agents.tutor-agent-*.capacity": 8})
            bigger.capacity("tutor-agent-1")  # 8
            ```
        """
        if not isinstance(values, dict):
            raise TypeError(
                f"values must be a dict of dotted path -> value, got {type(values).__name__}"
            )
        data = copy.deepcopy(self.to_dict())
        agents = data["agents"]
        for path, value in values.items():
            if not isinstance(path, str) or not path.startswith("agents.") or path.count(".") < 2:
                raise PlanValidationError(
                    f"{self.source}: model path {path!r} must look like 'agents.<pattern>.<key>', "
                    "e.g. 'agents.tutor-agent-*.capacity'"
                )
            keys, rest = _path_entries(list(agents), path[len("agents.") :])
            if not keys:
                raise PlanValidationError(
                    f"{self.source}: '{path}' names no agent entry: no key is or matches the "
                    f"pattern in it (keys: {', '.join(agents)})"
                )
            for key in keys:
                node = agents[key]
                *parents, leaf = rest
                for part in parents:
                    child = node.setdefault(part, {})
                    if not isinstance(child, dict):
                        raise PlanValidationError(
                            f"{self.source}: '{path}': '{part}' of agent '{key}' is not a mapping"
                        )
                    node = child
                node[leaf] = copy.deepcopy(value)
        return AgentModels(data, source=self.source)

    def scaled(
        self,
        pattern: str,
        *,
        latency: float = 1.0,
        error: float | None = None,
        hang: float | None = None,
        capacity: int | None = None,
    ) -> AgentModels:
        """A copy with the entries that match ``pattern`` slower, more or less reliable,
        or with another capacity: "what if" questions (SPEC §13.1).

        Args:
            pattern: The entries to change: an entry's pattern as written
                (``"tutor-agent-*"``, not an agent id such as ``"tutor-agent-1"``), or a
                glob over the entries' patterns (``"*"``: every entry).
            latency: A factor > 0 for every latency distribution of the entry (its own,
                its actions', its outages'): every quantile is multiplied by it, the shape
                (e.g. p95/median) is kept; ``latency=2``: "the agent got 2× slower".
            error: The error probability, in [0, 1], set on the entry and on every action
                that sets its own (outages keep theirs); None: unchanged.
            hang: The hang probability, likewise; None: unchanged.
            capacity: Attempts served at once, an int >= 1; None: unchanged.

        Returns:
            The new models (these are unchanged).

        Raises:
            TypeError: ``pattern`` is not a non-empty string.
            PlanValidationError: ``latency`` is not a finite number > 0, ``pattern``
                matches no entry (the message names the entry serving it, if it is an
                agent id), or a value is invalid (e.g. error + hang > 1).

        Example:
            ```python
            slower = ok.examples.models().scaled("tutor-agent-*", latency=2)
            slower.resolve("tutor-agent-1", "prepare_hints").latency.quantile(0.5)  # 2400 ms
            ```
        """
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"scaled(): pattern must be a non-empty str, got {pattern!r}")
        if (
            isinstance(latency, bool)
            or not isinstance(latency, (int, float))
            or not (math.isfinite(latency) and latency > 0)
        ):
            raise PlanValidationError(
                f"scaled(): latency is a factor and must be a finite number > 0 (2 = twice as "
                f"slow), got {short(latency)}"
            )
        data = copy.deepcopy(self.to_dict())
        agents = data["agents"]
        hits = [k for k in agents if k == pattern or fnmatchcase(k, pattern)]
        if not hits:
            i = best_match(pattern, list(agents))
            hint = (
                f"; did you mean '{list(agents)[i]}' (the entry serving '{pattern}')?"
                if (i is not None)
                else ""
            )
            raise PlanValidationError(
                f"{self.source}: scaled('{pattern}') matches no agent entry (entries: "
                f"{', '.join(agents)}){hint}"
            )
        for key in hits:
            entry = agents[key]
            if latency != 1.0:
                entry["latency"] = _scale_latency(entry["latency"], latency)
                for over in (entry.get("actions") or {}).values():
                    if isinstance(over, dict) and "latency" in over:
                        over["latency"] = _scale_latency(over["latency"], latency)
                for outage in entry.get("outages") or []:
                    if isinstance(outage, dict) and "latency" in outage:
                        outage["latency"] = _scale_latency(outage["latency"], latency)
            for name, value in (("error", error), ("hang", hang)):
                if value is None:
                    continue
                entry[name] = value
                for over in (entry.get("actions") or {}).values():
                    if isinstance(over, dict) and name in over:
                        over[name] = value
            if capacity is not None:
                entry["capacity"] = capacity
        return AgentModels(data, source=self.source)

    # -------------------------------------------------------------- look-ups

    @property
    def patterns(self) -> list[str]:
        """The agent ids and globs, in file order."""
        return list(self._patterns)

    def match(self, agent_id: str) -> str | None:
        """The pattern of the entry that serves ``agent_id``.

        Args:
            agent_id: An agent id, as steps name it (``agentId``).

        Returns:
            The most specific matching pattern as written (``"tutor-agent-*"``), or None
                when no entry matches.
        """
        i = best_match(agent_id, self._patterns)
        return None if i is None else self._patterns[i]

    def _entry(self, agent_id: str) -> _Entry:
        i = best_match(agent_id, self._patterns)
        if i is None:
            raise PlanValidationError(self._no_match(agent_id))
        return self._entries[i]

    def _no_match(self, agent_id: str) -> str:
        return (
            f"no agent model matches agent '{agent_id}' (patterns in {self.source}: "
            f"{', '.join(self._patterns)}); add an entry for '{agent_id}' or a glob that "
            "matches it under 'agents:'"
        )

    def resolve(self, agent_id: str, action: str) -> ActionModel:
        """The model of one attempt of ``action`` on ``agent_id`` (cached).

        Args:
            agent_id: An agent id (``agentId``).
            action: The step's action.

        Returns:
            The entry's model, with the most specific matching action override's
                ``latency``, ``error`` and ``hang`` in place of the entry's own.

        Raises:
            PlanValidationError: No entry matches ``agent_id``; the message lists the
                patterns.
        """
        key = (agent_id, action)
        model = self._cache.get(key)
        if model is None:
            model = self._cache[key] = self._entry(agent_id).model_for(action)
        return model

    def capacity(self, agent_id: str) -> int | None:
        """How many attempts ``agent_id`` serves at once.

        Args:
            agent_id: An agent id (``agentId``).

        Returns:
            The entry's ``capacity``, or None: unlimited.

        Raises:
            PlanValidationError: No entry matches ``agent_id``.
        """
        return self._entry(agent_id).capacity

    def check_plan(self, plan: Any) -> None:
        """Check that every step of ``plan`` and of its fallback plans has a model.

        Args:
            plan: A ``Plan``.

        Raises:
            PlanValidationError: A step calls an agent that no entry matches; the message
                names the plan, the step and the agent.
        """
        while plan is not None:
            for step in plan.steps:
                if best_match(step.agent_id, self._patterns) is None:
                    raise PlanValidationError(
                        f"plan '{plan.id}': step '{step.id}' calls agent '{step.agent_id}', but "
                        + self._no_match(step.agent_id)
                    )
                self.resolve(step.agent_id, step.action)
            plan = plan.fallback_plan

    def __repr__(self) -> str:
        return f"AgentModels({self.source!r}, patterns={self._patterns!r})"

    # -------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, spans: pd.DataFrame, *, min_samples: int = 2) -> AgentModels:
        """Fit models to a trace: the one-line shortcut for
        ``ok.fit_models(spans, min_samples=min_samples).models``.

        Args:
            spans: A spans frame (``SPAN_COLUMNS``; live or simulated), a ``RunResult`` or
                ``MonteCarloResult``, or a list of them.
            min_samples: The fewest observed latencies (attempts that ended
                ``succeeded`` or ``error``) an (agent, action) group needs to get its own
                model; a group with fewer uses its agent's.

        Returns:
            One entry per agent id, with an override per action; no capacity (unlimited).

        Raises:
            PlanValidationError: The trace cannot be fitted (see ``fit_models``).
            MissingDependencyError: scipy is not installed.

        Example:
            ```python
            run = ok.simulate(ok.examples.plan("parallel_analysis"), ok.examples.models())
            ok.AgentModels.fit(run.spans, min_samples=1).save("fitted.yaml")
            ```
        """
        return fit_models(spans, min_samples=min_samples).models


@dataclass
class FitResult:
    """What ``fit_models`` found.

    Attributes:
        models: The fitted ``AgentModels``: one entry per agent id, with an override per
            action (``by=("agent_id", "action")``); no capacity (unlimited).
        report: One row per group: ``agent_id``, ``action`` (``"*"`` with
            ``by=("agent_id",)``), ``n`` (attempts that started), ``censored`` (of them,
            ended by a timeout or cancelled), ``family`` (None: too few samples, the
            agent's model serves it), ``params`` (ms), ``aic``, ``ks_stat`` and ``ks_p``
            (the fit's KS test), ``error`` and ``hang`` with their 95% intervals
            (``_ci_low``/``_ci_high``), ``params_se`` and ``time_scale``.
    """

    models: AgentModels
    report: pd.DataFrame
    _groups: dict = field(repr=False)

    def qq(self, agent_id: str, action: str = "*") -> Any:
        """Q-Q plot of one fitted group: observed latency quantiles (Kaplan–Meier under
        censoring) against the fitted model's, in ms; points on the diagonal: a good fit.

        Args:
            agent_id: The group's agent id.
            action: The group's action; ``"*"`` (default) for a fit with
                ``by=("agent_id",)``.

        Returns:
            A plotly Figure.

        Raises:
            KeyError: No fitted group (``agent_id``, ``action``); the message lists them.
        """
        from .fitting import qq_figure

        return qq_figure(self._groups, agent_id, action)

    def __repr__(self) -> str:
        return f"FitResult({len(self.report)} groups)\n" + self.report.to_string(index=False)

    def _repr_html_(self) -> str:
        return self.report.to_html(index=False)


#: The latency families ``fit_models`` chooses from (by AIC).
FAMILIES = ("lognormal", "gamma", "weibull", "exponential")


def fit_models(
    spans: Any,
    *,
    families: Sequence[str] = FAMILIES,
    by: Sequence[str] = ("agent_id", "action"),
    time_scale: float | dict[str, float] | None = None,
    min_samples: int = 2,
) -> FitResult:
    """Fit agent models (SPEC §4.1) to a trace, live or simulated.

    Per group the latency (end_ms − start_ms of every attempt that started) is fitted by
    censored maximum likelihood: ``timeout``/``cancelled`` attempts are right-censored,
    never dropped; the family with the lowest AIC wins. ``error`` is the error share with a
    Wilson interval; ``hang`` the cure fraction of a mixture-cure model when the group has
    timeouts (0 otherwise). Capacity is not fitted (unlimited): set it by hand.

    Args:
        spans: A spans frame (``SPAN_COLUMNS``), a ``RunResult`` or ``MonteCarloResult``,
            or a list of them.
        families: The latency families to try (``FAMILIES``: lognormal, gamma, weibull,
            exponential).
        by: The groups: ``("agent_id", "action")`` (default) or ``("agent_id",)``.
        time_scale: Live traces of ``SyntheticAgent(time_scale=s)`` ran s× faster than
            their model; their times are divided by s (one number, or agent id -> s).
            Default: the scale the trace carries (a ``time_scale`` column, as live
            ``RunResult.spans`` and ``orchkit run``'s files have, or
            ``spans.attrs["time_scale"]``), else 1.
        min_samples: The fewest observed latencies (attempts that ended ``succeeded`` or
            ``error``) a group needs to get its own model; a group with fewer uses its
            agent's.

    Returns:
        The fitted models (``.models``), the report of every group (``.report``) and a
            Q-Q plot per group (``.qq(agent_id, action)``).

    Raises:
        PlanValidationError: The trace lacks a column, has a bad time (not a finite number
            of ms, end before start; the message names the rows), or leaves nothing to fit
            for an agent.
        ValueError: ``by``, ``families`` or ``time_scale`` is not one of the values above.
        TypeError: ``spans`` is none of the kinds above.
        MissingDependencyError: scipy is not installed.

    Example:
        ```python
        mc = ok.monte_carlo(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                            runs=500, progress=False)
        fit = ok.fit_models(mc)
        fit.report[["agent_id", "action", "n", "family", "error"]]
        fit.qq("tutor-agent-123", "analyze_conversation_patterns")
        ```
    """
    from .fitting import fit_agents  # scipy's numerics: loaded when used

    agents, report, groups, n = fit_agents(
        spans, families=families, by=by, time_scale=time_scale, min_samples=min_samples
    )
    models = AgentModels.from_dict(
        {"description": f"fitted by orchkit.fit_models from {n} attempts", "agents": agents},
        source="fitted agent models",
    )
    return FitResult(models, report, groups)


def as_models(models: AgentModels | str | Path | dict) -> AgentModels:
    """An ``AgentModels`` as given (or any object with its resolve/capacity/check_plan, such
    as ``orchkit.testing.ScriptedModels``), or one read from a dict or a YAML/JSON file."""
    if isinstance(models, dict):
        return AgentModels.from_dict(models)
    if isinstance(models, (str, Path)):
        return AgentModels.load(models)
    if not (hasattr(models, "resolve") and hasattr(models, "capacity")):
        raise TypeError(
            "models must be an AgentModels, a dict or a path to a models file, "
            f"got {type(models).__name__}"
        )
    return models
