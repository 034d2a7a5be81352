"""Fitting agent models from traces (SPEC §7.3): censored maximum likelihood on scipy.stats.

The model of one attempt is the simulator's (``ActionModel``): with probability ``hang`` it
never returns; otherwise its latency T follows a distribution F and it ends in an error
with probability error / (1 − hang). A trace therefore has three kinds of attempt:

- ``succeeded`` / ``error``: the latency end − start is observed: likelihood (1 − h)·f(t);
- ``timeout`` / ``cancelled``: the attempt was still running at c = end − start, so T > c
  or it hung — right-censored: h + (1 − h)·S(c) (a mixture-cure model; h is the cure, here
  hang, fraction). Dropping these attempts fits a slow agent too fast.
- attempts that never started (they waited for capacity) say nothing about the agent.

h is estimated only when the group has timeouts (0 otherwise), with a profile-likelihood
95% interval. The family is chosen per group by AIC; parameters come with standard errors
(observed information, delta method). Times are in ms.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._base.deps import require
from .._base.errors import PlanValidationError
from .._base.stats import wilson_ci
from .parse import short

REPORT_COLUMNS = [
    "agent_id",
    "action",
    "n",
    "censored",
    "family",
    "params",
    "aic",
    "ks_stat",
    "ks_p",
    "error",
    "error_ci_low",
    "error_ci_high",
    "hang",
    "hang_ci_low",
    "hang_ci_high",
    "params_se",
    "time_scale",
]
_OBSERVED = ("succeeded", "error")
_CENSORED = ("timeout", "cancelled")
_Z95 = 1.6448536269514722  # standard normal 95th percentile (p95 of a lognormal)
_LOGIT_MIN = -25.0  # the cure fraction's lower bound (h ≈ 1e-11): "no hangs"


def require_scipy() -> Any:
    """``scipy.stats``, or ``MissingDependencyError`` naming the ``tune`` extra."""
    require("scipy", "fitting agent models")
    from scipy import stats

    return stats


# ------------------------------------------------------------------ families


@dataclass(frozen=True)
class _Family:
    """A latency family on an unconstrained parameter vector theta."""

    name: str
    scipy: Callable[[Any, np.ndarray], Any]  # (stats, theta) -> frozen scipy dist
    logpdf: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (theta, x, ln x)
    logsf: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    start: Callable[[np.ndarray], np.ndarray]  # observed latencies -> theta0
    friendly: Callable[[np.ndarray], dict]  # theta -> the models file's parameters


_LN_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _lognormal_friendly(t: np.ndarray) -> dict:
    return {"median": math.exp(t[0]), "p95": math.exp(t[0] + _Z95 * math.exp(t[1]))}


def _weibull_friendly(t: np.ndarray) -> dict:
    k, lam = math.exp(t[0]), math.exp(t[1])
    return {"median": lam * math.log(2.0) ** (1 / k), "p95": lam * math.log(20.0) ** (1 / k)}


def _log_moments(x: np.ndarray) -> tuple[float, float]:
    ln = np.log(x)
    return float(ln.mean()), max(float(ln.std()), 1e-3)


def _gamma_start(x: np.ndarray) -> np.ndarray:
    m, v = float(x.mean()), max(float(x.var()), 1e-12)
    return np.log([m * m / v, v / m])


def _weibull_start(x: np.ndarray) -> np.ndarray:
    m, s = _log_moments(x)
    k = math.pi / (s * math.sqrt(6.0))
    return np.array([math.log(k), m + 0.5772156649 / k])


def _families() -> dict[str, _Family]:
    from scipy.special import gammaincc, gammaln, log_ndtr

    def ln_logpdf(t, x, lx):
        s = math.exp(t[1])
        return -lx - t[1] - _LN_SQRT_2PI - 0.5 * ((lx - t[0]) / s) ** 2

    def ga_logpdf(t, x, lx):
        k, th = math.exp(t[0]), math.exp(t[1])
        return (k - 1) * lx - x / th - gammaln(k) - k * t[1]

    def ga_logsf(t, x, lx):
        k, th = math.exp(t[0]), math.exp(t[1])
        return np.log(np.maximum(gammaincc(k, x / th), 1e-300))

    def wb_logpdf(t, x, lx):
        k = math.exp(t[0])
        return t[0] - t[1] + (k - 1) * (lx - t[1]) - np.exp(k * (lx - t[1]))

    fams = (
        _Family(
            "lognormal",
            lambda st, t: st.lognorm(math.exp(t[1]), scale=math.exp(t[0])),
            ln_logpdf,
            lambda t, x, lx: log_ndtr(-(lx - t[0]) / math.exp(t[1])),
            lambda x: np.array([_log_moments(x)[0], math.log(_log_moments(x)[1])]),
            _lognormal_friendly,
        ),
        _Family(
            "gamma",
            lambda st, t: st.gamma(math.exp(t[0]), scale=math.exp(t[1])),
            ga_logpdf,
            ga_logsf,
            _gamma_start,
            lambda t: {"mean": math.exp(t[0] + t[1]), "cv": math.exp(-0.5 * t[0])},
        ),
        _Family(
            "weibull",
            lambda st, t: st.weibull_min(math.exp(t[0]), scale=math.exp(t[1])),
            wb_logpdf,
            lambda t, x, lx: -np.exp(math.exp(t[0]) * (lx - t[1])),
            _weibull_start,
            _weibull_friendly,
        ),
        _Family(
            "exponential",
            lambda st, t: st.expon(scale=math.exp(t[0])),
            lambda t, x, lx: -t[0] - x / math.exp(t[0]),
            lambda t, x, lx: -x / math.exp(t[0]),
            lambda x: np.array([math.log(float(x.mean()))]),
            lambda t: {"mean": math.exp(t[0])},
        ),
    )
    return {f.name: f for f in fams}


_CACHE: dict[str, dict[str, _Family]] = {}


def _family() -> dict[str, _Family]:
    if not _CACHE:
        _CACHE["f"] = _families()
    return _CACHE["f"]


def _sig(v: float, digits: int = 4) -> float:
    """``v`` rounded to ``digits`` significant digits (readable model files)."""
    if not math.isfinite(v) or v == 0:
        return v
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


# ------------------------------------------------------------------ one group


@dataclass
class _GroupFit:
    family: str | None
    theta: np.ndarray | None
    hang: float
    hang_ci: tuple[float, float]
    aic: float
    params: dict
    params_se: dict
    ks_stat: float
    ks_p: float
    obs: np.ndarray
    cens: np.ndarray
    constant: float | None = None

    def dist(self, stats: Any) -> Any:
        """The fitted scipy distribution (a group fitted by a family, not a constant)."""
        assert self.family is not None and self.theta is not None, "a constant has no family"
        return _family()[self.family].scipy(stats, self.theta)

    def latency_dict(self) -> dict:
        if self.constant is not None:
            return {"dist": "constant", "value": _sig(self.constant)}
        return {"dist": self.family, **{k: _sig(v) for k, v in self.params.items()}}


def _nll_factory(
    fam: _Family, obs: np.ndarray, cens: np.ndarray, cure: bool
) -> Callable[[np.ndarray], float]:
    from scipy.special import log_expit

    lobs, lcens = np.log(obs), np.log(cens)
    n_obs = obs.size

    def nll(x: np.ndarray) -> float:
        theta = x[:-1] if cure else x
        if not np.all(np.abs(theta) < 700):
            return math.inf
        with np.errstate(all="ignore"):
            ll = float(np.sum(fam.logpdf(theta, obs, lobs)))
            if cure:
                z = min(max(x[-1], _LOGIT_MIN), 25.0)
                ll += n_obs * float(log_expit(-z))
                if cens.size:
                    ls = fam.logsf(theta, cens, lcens)
                    ll += float(np.sum(np.logaddexp(log_expit(z), log_expit(-z) + ls)))
            elif cens.size:
                ll += float(np.sum(fam.logsf(theta, cens, lcens)))
        return -ll if math.isfinite(ll) else math.inf

    return nll


def _minimize(f: Callable, x0: np.ndarray) -> Any:
    from scipy.optimize import minimize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(f, x0, method="BFGS", options={"gtol": 1e-6})
        if not math.isfinite(res.fun) or (not res.success and res.nit < 3):
            res2 = minimize(
                f,
                res.x if math.isfinite(res.fun) else x0,
                method="Nelder-Mead",
                options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10},
            )
            if res2.fun < res.fun:
                res = res2
    return res


def _hessian(f: Callable, x: np.ndarray) -> np.ndarray:
    n = len(x)
    h = 1e-4 * np.maximum(1.0, np.abs(x))
    out = np.empty((n, n))
    f0 = f(x)
    for i in range(n):
        for j in range(i, n):
            if i == j:
                e = np.zeros(n)
                e[i] = h[i]
                out[i, i] = (f(x + e) - 2 * f0 + f(x - e)) / (h[i] * h[i])
            else:
                ei, ej = np.zeros(n), np.zeros(n)
                ei[i], ej[j] = h[i], h[j]
                out[i, j] = out[j, i] = (
                    f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
                ) / (4 * h[i] * h[j])
    return out


def _friendly_se(fam: _Family, theta: np.ndarray, cov: np.ndarray | None) -> dict:
    base = fam.friendly(theta)
    if cov is None:
        return {k: math.nan for k in base}
    out = {}
    for k in base:
        grad = np.empty(len(theta))
        for i in range(len(theta)):
            d = np.zeros(len(theta))
            d[i] = 1e-6 * max(1.0, abs(theta[i]))
            grad[i] = (fam.friendly(theta + d)[k] - fam.friendly(theta - d)[k]) / (2 * d[i])
        var = float(grad @ cov @ grad)
        out[k] = math.sqrt(var) if var >= 0 else math.nan
    return out


def _fit_family(
    fam: _Family, obs: np.ndarray, cens: np.ndarray, cure: bool
) -> tuple[float, np.ndarray, Callable]:
    """Maximum likelihood of one family (with the cure fraction as a last parameter, its
    logit, when ``cure``): (minimised negative log-likelihood, parameters, nll)."""
    nll = _nll_factory(fam, obs, cens, cure)
    x0 = fam.start(obs)
    if cure:  # start with half the censored share hung
        h0 = max(0.5 * cens.size / (cens.size + obs.size), 1e-3)
        x0 = np.append(x0, math.log(h0 / (1 - h0)))
    res = _minimize(nll, x0)
    if cure:
        res.x[-1] = min(max(res.x[-1], _LOGIT_MIN), 25.0)
    return res.fun, res.x, nll


def _profile_hang_ci(nll: Callable, x: np.ndarray, fun: float, se_z: float) -> tuple[float, float]:
    """95% profile-likelihood interval of the cure fraction h = expit(x[-1]); ``se_z`` (the
    Wald standard error of logit h, or nan) sizes the first step of the bracket search."""
    from scipy.optimize import brentq
    from scipy.special import expit

    target = fun + 1.920729410347062  # chi2(1).ppf(0.95) / 2
    theta = x[:-1].copy()

    def prof(z: float) -> float:
        nonlocal theta
        res = _minimize(lambda t: nll(np.append(t, z)), theta)
        if math.isfinite(res.fun):
            theta = res.x
        return res.fun - target

    def bound(direction: float) -> float:
        nonlocal theta
        theta = x[:-1].copy()
        z = x[-1]
        step = 2.0 * se_z if math.isfinite(se_z) and 0 < se_z < 5 else 1.0
        while True:
            z_next = z + direction * step
            if z_next <= _LOGIT_MIN:
                return 0.0 if prof(_LOGIT_MIN) <= 0 else _root(_LOGIT_MIN, z)
            if z_next >= 25.0:
                return 1.0
            if prof(z_next) > 0:
                return _root(z, z_next)
            z, step = z_next, step * 2

    def _root(a: float, b: float) -> float:
        lo, hi = sorted((a, b))
        return float(expit(brentq(prof, lo, hi, xtol=2e-3)))

    low = 0.0 if x[-1] <= _LOGIT_MIN + 1e-6 else bound(-1.0)
    return low, bound(+1.0)


def _km_ks(stats: Any, obs: np.ndarray, cens: np.ndarray, cdf: Callable) -> tuple[float, float]:
    """Largest distance between the Kaplan–Meier CDF and the model's, at the event times;
    p from the Kolmogorov distribution with n = attempts (approximate under censoring)."""
    km = stats.ecdf(stats.CensoredData(uncensored=obs, right=cens)).sf
    t = km.quantiles
    after = 1.0 - km.probabilities
    before = np.concatenate([[0.0], after[:-1]])
    model = cdf(t)
    d = float(max(np.max(np.abs(after - model)), np.max(np.abs(before - model))))
    return d, float(stats.kstwo.sf(d, obs.size + cens.size))


def _fit_group(
    stats: Any, obs: np.ndarray, cens: np.ndarray, timeouts: int, families: Sequence[str]
) -> _GroupFit:
    from scipy.special import expit

    if np.ptp(obs) <= 1e-9 * max(1.0, float(obs.max())):  # every latency the same
        return _GroupFit(
            None,
            None,
            0.0,
            (0.0, 0.0),
            math.nan,
            {"value": float(obs[0])},
            {},
            math.nan,
            math.nan,
            obs,
            cens,
            constant=float(obs[0]),
        )
    cure = timeouts > 0
    fits = []
    for name in families:
        fam = _family()[name]
        fun, x, nll = _fit_family(fam, obs, cens, cure)
        if math.isfinite(fun):
            fits.append((2 * len(x) + 2 * fun, name, fun, x, nll))
    if not fits:
        raise PlanValidationError(f"fit: no family in {list(families)} could be fitted")
    aic, name, fun, x, nll = min(fits, key=lambda r: r[0])
    fam = _family()[name]
    theta = x[:-1] if cure else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cov: np.ndarray | None
        try:
            cov = np.linalg.inv(_hessian(nll, x))
            cov = cov if np.all(np.diag(cov) >= 0) else None
        except np.linalg.LinAlgError:
            cov = None
    k = len(theta)
    params_se = _friendly_se(fam, theta, None if cov is None else cov[:k, :k])
    hang, hang_ci = 0.0, (0.0, 0.0)
    if cure:
        hang = float(expit(x[-1])) if x[-1] > _LOGIT_MIN + 1e-6 else 0.0
        se_z = math.sqrt(cov[-1, -1]) if cov is not None else math.nan
        hang_ci = _profile_hang_ci(nll, x, fun, se_z)
    d = fam.scipy(stats, theta)
    if cens.size:
        ks_stat, ks_p = _km_ks(stats, obs, cens, lambda t: (1 - hang) * d.cdf(t))
    else:
        res = stats.kstest(obs, d.cdf)
        ks_stat, ks_p = float(res.statistic), float(res.pvalue)
    return _GroupFit(
        name,
        theta,
        hang,
        hang_ci,
        float(aic),
        fam.friendly(theta),
        params_se,
        ks_stat,
        ks_p,
        obs,
        cens,
    )


# ------------------------------------------------------------------ the public function


def qq_figure(groups: dict, agent_id: str, action: str = "*") -> Any:
    """Q-Q plot (plotly) of one fitted group of ``groups`` (``FitResult.qq``): observed
    latency quantiles (Kaplan–Meier under censoring) against the fitted model's, in ms;
    points on the diagonal = a good fit."""
    import plotly.graph_objects as go

    g = groups.get((agent_id, action))
    if g is None:
        have = ", ".join(f"({a!r}, {b!r})" for a, b in groups)
        raise KeyError(f"qq: no fitted group ({agent_id!r}, {action!r}); fitted: {have}")
    stats = require_scipy()
    if g.cens.size:
        km = stats.ecdf(stats.CensoredData(uncensored=g.obs, right=g.cens)).sf
        y = np.sort(g.obs)
        gap = 1e-9 * np.maximum(1.0, y)  # mid-step plotting positions of the KM curve
        p = 1.0 - 0.5 * (km.evaluate(y) + km.evaluate(y - gap))
    else:
        y = np.sort(g.obs)
        p = (np.arange(1, y.size + 1) - 0.5) / y.size
    if g.constant is not None:
        x = np.full(y.size, g.constant)
    else:
        q = np.clip(p / (1.0 - g.hang), 0.0, 1.0 - 1e-12)
        x = g.dist(stats).ppf(q)
    label = g.family or "constant"
    top = float(np.nanmax(np.concatenate([x[np.isfinite(x)], y])))
    fig = go.Figure(
        [
            go.Scatter(x=x, y=y, mode="markers", name=f"{agent_id} {action}", marker={"size": 4}),
            go.Scatter(
                x=[0, top],
                y=[0, top],
                mode="lines",
                name="y = x",
                line={"dash": "dash", "color": "grey"},
            ),
        ]
    )
    fig.update_layout(
        title=f"Q-Q: {agent_id} / {action} vs fitted {label}",
        xaxis_title="fitted quantile (ms)",
        yaxis_title="observed (ms)",
    )
    return fig


def _as_spans(spans: Any) -> tuple[pd.DataFrame, dict]:
    """A spans frame and the time scales its records carry, from a frame, a RunResult /
    MonteCarloResult, or a list of them."""
    if isinstance(spans, pd.DataFrame):
        return spans, dict(spans.attrs.get("time_scale") or {})
    if hasattr(spans, "spans"):
        return _as_spans(spans.spans)
    if isinstance(spans, Iterable) and not isinstance(spans, (str, bytes)):
        parts = [_as_spans(s) for s in spans]
        if not parts:
            raise PlanValidationError("fit: no spans given (an empty list)")
        scales: dict = {}
        for _, sc in parts:
            scales.update(sc)
        return pd.concat([f for f, _ in parts], ignore_index=True), scales
    raise TypeError(
        f"spans must be a spans DataFrame, a RunResult/MonteCarloResult or a list "
        f"of them, got {type(spans).__name__}"
    )


def _times(
    frame: pd.DataFrame, column: str, rows: pd.Series | None, total: int, *, required: bool = False
) -> pd.Series:
    """``frame[column]`` as float ms; ``PlanValidationError`` naming the column, the count
    and the first rows (of ``rows``, default all; of ``total`` spans) whose value is text
    that is not a number, infinite, or (``required``) missing."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    check = pd.Series(True, index=frame.index) if rows is None else rows
    text = check & raw.notna() & values.isna()
    _refuse(frame.index[text], column, "not a number", total, raw)
    inf = check & values.abs().eq(math.inf)
    _refuse(frame.index[inf], column, "infinite", total, raw)
    if required:
        _refuse(frame.index[check & values.isna()], column, "missing", total)
    return values


def _refuse(
    bad: pd.Index, column: str, what: str, total: int, raw: pd.Series | None = None
) -> None:
    """Raise ``PlanValidationError`` for the rows ``bad`` (if any): the column, the count
    and the first five rows (by the frame's index, named by its name or "row")."""
    if not len(bad):
        return
    noun = bad.name if isinstance(bad.name, str) and bad.name else "row"
    first = ", ".join(str(i) for i in bad[:5]) + (", …" if len(bad) > 5 else "")
    value = None if raw is None else raw.loc[bad[0]]
    example = "" if raw is None else f", e.g. {short(getattr(value, 'item', lambda: value)())}"
    raise PlanValidationError(
        f"fit: column '{column}' has {len(bad)} bad value(s) in {total} spans ({what}"
        f"{example}) at {noun}(s) {first}; every attempt that started needs finite "
        "start_ms and end_ms in ms, end_ms >= start_ms: fix or drop those rows"
    )


def fit_agents(
    spans: Any,
    *,
    families: Sequence[str],
    by: Sequence[str],
    time_scale: float | dict[str, float] | None,
    min_samples: int,
) -> tuple[dict[str, Any], pd.DataFrame, dict, int]:
    """The work of ``orchkit.fit_models`` (its docstring says what is fitted): the agents'
    models in their on-disk form, the report (REPORT_COLUMNS), the fitted groups and the
    number of attempts used. Bad rows are an error, never a silent number: every attempt
    that started and ended succeeded/error/timeout/cancelled needs numeric, finite
    ``start_ms`` and ``end_ms`` with ``end_ms >= start_ms`` (and a ``time_scale`` column,
    if any, numbers > 0); the ``PlanValidationError`` names the column, the count and the
    first rows."""
    stats = require_scipy()
    frame, carried = _as_spans(spans)
    if not frame.index.is_unique:  # rows are named by their index label
        frame = frame.reset_index(drop=True)
    need = {"agent_id", "action", "start_ms", "end_ms", "outcome"}
    missing = need - set(frame.columns)
    if missing:
        raise PlanValidationError(
            f"fit: the spans frame lacks columns {sorted(missing)} (have {list(frame.columns)})"
        )
    by = tuple(by)
    if by not in (("agent_id", "action"), ("agent_id",)):
        raise ValueError(f"by must be ('agent_id', 'action') or ('agent_id',), got {by!r}")
    families = tuple(families)
    bad = [f for f in families if f not in _family()]
    if not families or bad:
        raise ValueError(
            f"families: unknown {bad or 'none given'}; choose from {', '.join(_family())}"
        )
    if time_scale is None:
        scales = carried
    elif isinstance(time_scale, dict):
        scales = dict(time_scale)
    else:
        scales = {a: time_scale for a in frame["agent_id"].unique()}
    if any(
        isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf
        for s in scales.values()
    ):
        raise ValueError(f"time_scale must be a finite number > 0 (per agent), got {scales!r}")

    used = frame["outcome"].isin(_OBSERVED + _CENSORED)
    start = _times(frame, "start_ms", used, len(frame))
    started = frame[used & start.notna()]
    if not started["outcome"].isin(_OBSERVED).any():
        raise PlanValidationError("fit: no span ended 'succeeded' or 'error'; nothing to fit")
    start = start[started.index]
    end = _times(started, "end_ms", None, len(frame), required=True)
    dur = (end - start).to_numpy(dtype=float)
    _refuse(started.index[dur < 0], "end_ms", "end_ms < start_ms", len(frame))
    if time_scale is None and "time_scale" in started.columns:  # a file written by orchkit run
        col = _times(started, "time_scale", None, len(frame))
        _refuse(started.index[col.notna() & ~(col > 0)], "time_scale", "not > 0", len(frame))
        scale = col.fillna(1.0).to_numpy(dtype=float)
    else:
        scale = started["agent_id"].map(lambda a: float(scales.get(a, 1.0))).to_numpy(dtype=float)
    # a latency of 0 ms (a clock's resolution) counts as 1e-6 ms: the families live on t > 0
    started = started.assign(_t=np.maximum(dur / scale, 1e-6), _scale=scale)

    groups: dict[tuple[str, str], _GroupFit] = {}
    rows, agents = [], {}
    for agent_id, ga in started.groupby("agent_id", sort=True):
        agent_id = str(agent_id)
        parts = (
            [(str(a), g) for a, g in ga.groupby("action", sort=True)]
            if len(by) == 2
            else [("*", ga)]
        )
        fitted: dict[str, tuple[_GroupFit, float, float]] = {}
        for action, g in parts:
            outcome = g["outcome"].to_numpy()
            t = g["_t"].to_numpy()
            is_obs = np.isin(outcome, _OBSERVED)
            obs, cens = t[is_obs], t[~is_obs]
            errors = int((outcome == "error").sum())
            row = {
                "agent_id": agent_id,
                "action": action,
                "n": len(g),
                "censored": int(cens.size),
                "time_scale": float(g["_scale"].iloc[0]),
            }
            if obs.size < max(min_samples, 1):
                rows.append({**row, "family": None})
                continue
            gf = _fit_group(stats, obs, cens, int((outcome == "timeout").sum()), families)
            err, lo, hi = (v * (1.0 - gf.hang) for v in wilson_ci(errors, obs.size))
            groups[(agent_id, action)] = gf
            fitted[action] = (gf, err, gf.hang)
            rows.append(
                {
                    **row,
                    "family": gf.family or "constant",
                    "params": {k: _sig(v) for k, v in gf.params.items()},
                    "aic": gf.aic,
                    "ks_stat": gf.ks_stat,
                    "ks_p": gf.ks_p,
                    "error": err,
                    "error_ci_low": lo,
                    "error_ci_high": hi,
                    "hang": gf.hang,
                    "hang_ci_low": gf.hang_ci[0],
                    "hang_ci_high": gf.hang_ci[1],
                    "params_se": gf.params_se,
                }
            )
        if not fitted:
            raise PlanValidationError(
                f"fit: agent '{agent_id}' has fewer than {max(min_samples, 1)} finished "
                "attempts ('succeeded' or 'error') in every group; nothing to fit for it"
            )

        def entry(gf: _GroupFit, err: float, hang: float) -> dict:
            # hang always written: an action's 0 must override its agent's own value
            return {"latency": gf.latency_dict(), "error": _sig(err), "hang": _sig(hang)}

        # the agent's own keys: its most frequent action's model (a fallback for others)
        base = max(fitted, key=lambda a: (fitted[a][0].obs.size, a))
        agents[agent_id] = entry(*fitted[base])
        if len(by) == 2:
            agents[agent_id]["actions"] = {a: entry(*v) for a, v in fitted.items()}
    report = pd.DataFrame(rows).reindex(columns=REPORT_COLUMNS)
    return agents, report, groups, len(started)
