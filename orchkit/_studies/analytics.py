"""Learning analytics in numpy: Bayesian knowledge tracing (BKT) fitted by EM, learners'
mastery, and learning joined with the orchestration runs that served it (SPEC §18).

BKT (Corbett & Anderson 1995) is a two-state hidden Markov model per skill: a learner
either has mastered the skill (state 1) or not (state 0). ``prior`` = P(mastered before
the first opportunity); after each opportunity an unmastered learner masters it with
probability ``learn`` (and, with ``forgets``, a mastered one loses it with ``forget``);
a response is correct with probability ``1 - slip`` when mastered, ``guess`` otherwise.

The fit is Baum–Welch EM (scaled forward–backward), vectorised over every
(learner, skill) sequence and every restart at once: one Python loop over opportunities,
numpy over the rest. Restarts begin from seeded random parameters; the M-step keeps
``guess`` and ``slip`` below 0.5 (the identifiable solution: mastery means "more likely
right"), which is the constrained maximum of each step, so the likelihood never decreases.
Per skill the restart with the highest likelihood wins.

``join`` gives each response the run that served it (key: ``run_id``, the response's and
the spans'), with the tutor's latency and outcome; ``outcomes`` compares mastery gain and
next-response correctness across outcomes and latency bands with a bootstrap over
learners (the unit that is independent).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._base.errors import PlanValidationError

MASTERY = 0.95  # P(mastered) at or above which a skill counts as mastered
WHEEL_SPIN = 10  # opportunities without mastery that make a wheel-spinning learner
MAX_GUESS = MAX_SLIP = 0.5 - 1e-6  # kept below 0.5: the identifiable solution
EPS = 1e-6  # every probability stays in [EPS, 1 - EPS]
PARAMS = ("prior", "learn", "guess", "slip")
START_RANGES = {  # seeded random starts, uniform in these ranges
    "prior": (0.05, 0.6),
    "learn": (0.02, 0.4),
    "guess": (0.05, 0.45),
    "slip": (0.02, 0.3),
    "forget": (0.0, 0.1),
}
OUTCOMES = ("ok", "fallback", "timeout", "shed", "error", "none", "unknown")
"""A response's orchestration outcome, as ``join`` names it (in this order of reference):

- ``ok``: a tutor attempt succeeded in the run's first plan;
- ``fallback``: the run fell back to another plan (whatever the tutor did);
- ``timeout``: no tutor attempt succeeded and one timed out (or the plan's deadline
  cancelled it);
- ``shed``: no tutor attempt succeeded and one was refused (shed by admission control,
  or rejected by an open circuit breaker);
- ``error``: the tutor's attempts failed with errors;
- ``none``: the run made no tutor attempt;
- ``unknown``: no span carries the response's run id.
"""
JOIN_COLUMNS = ("tutor_ms", "outcome", "hedged", "tutor_attempts")
SPAN_NEEDS = ("run_id", "plan_id", "agent_id", "queued_ms", "end_ms", "outcome", "hedge")


# -- input ---------------------------------------------------------------------------------


def _rows(index: pd.Index, bad: np.ndarray, values: Any = None, shown: int = 5) -> str:
    """ "rows 3, 17 (2 of 100 rows)" for the rows where ``bad`` holds, with their values."""
    labels = index[bad]
    head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in labels[:shown])
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    text = f"rows {head}{more} ({len(labels)} of {len(index)} rows)"
    if values is not None:
        vals = ", ".join(repr(v) for v in list(values[bad])[:shown])
        text += f" hold {vals}"
    return text


def _is01(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return True
    return isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1)


def _order_values(col: pd.Series) -> np.ndarray:
    """The order column as float: numbers as they are, datetimes as ms since the epoch;
    anything else (text, booleans, missing) NaN."""
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        values = col.to_numpy(dtype="datetime64[ns]").astype("int64") / 1e6
        return np.where(col.isna().to_numpy(), np.nan, values)
    if col.dtype == bool:
        return np.full(len(col), np.nan)
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype=float, na_value=np.nan)
    return np.array(
        [
            float(v)
            if isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_))
            else np.nan
            for v in col.to_numpy(dtype=object)
        ],
        dtype=float,
    )


def check_responses(
    responses: Any,
    *,
    learner: str,
    skill: str,
    correct: str,
    order: str,
    what: str = "responses",
) -> pd.DataFrame:
    """The response rows as a clean frame, or one ``PlanValidationError`` that names every
    bad column and its rows (index labels): a column missing, a learner or skill missing, a
    ``correct`` that is not 0/1 (or True/False), an ``order`` (time in ms, or a sequence
    number) that is not a finite number.

    Returns a frame with the original index and columns ``learner``, ``skill``,
    ``correct`` (int8), ``order`` (float64).
    """
    if not isinstance(responses, pd.DataFrame):
        raise PlanValidationError(
            f"{what}: expected a pandas DataFrame with one row per response, got "
            f"{type(responses).__name__}"
        )
    names = {"learner": learner, "skill": skill, "correct": correct, "order": order}
    missing = [c for c in names.values() if c not in responses.columns]
    if missing:
        has = ", ".join(map(str, responses.columns)) or "no columns"
        keys = ", ".join(f"{k}=" for k, v in names.items() if v in missing)
        raise PlanValidationError(
            f"{what}: missing column(s) {', '.join(map(repr, missing))} (the frame has: "
            f"{has}); name yours with {keys}"
        )
    if responses.empty:
        raise PlanValidationError(f"{what}: the frame has no rows")
    problems = []
    index = responses.index
    for key in ("learner", "skill"):
        col = responses[names[key]]
        bad = col.isna().to_numpy()
        if bad.any():
            problems.append(f"column {names[key]!r} is missing a value in {_rows(index, bad)}")
    col = responses[names["correct"]]
    raw = col.to_numpy(dtype=object)
    if col.dtype == bool:
        ok01 = np.ones(len(col), dtype=bool)
    elif pd.api.types.is_numeric_dtype(col.dtype):
        ok01 = col.isin([0, 1]).to_numpy()
    else:
        ok01 = np.array([_is01(v) for v in raw], dtype=bool)
    if not ok01.all():
        problems.append(
            f"column {names['correct']!r} must be 0 or 1 (or True/False): "
            f"{_rows(index, ~ok01, raw)}"
        )
    num = _order_values(responses[names["order"]])
    bad = ~np.isfinite(num)
    if bad.any():
        problems.append(
            f"column {names['order']!r} (the responses' order: time in ms or a sequence "
            "number) must be a finite number: "
            f"{_rows(index, bad, responses[names['order']].to_numpy(dtype=object))}"
        )
    if problems:
        raise PlanValidationError(f"{what}: " + "; ".join(problems))
    return pd.DataFrame(
        {
            "learner": responses[names["learner"]].to_numpy(),
            "skill": responses[names["skill"]].to_numpy(),
            "correct": np.asarray(
                [bool(v) for v in raw] if col.dtype == object else col, dtype=np.int8
            ),
            "order": num,
        },
        index=index,
    )


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and the distinct values (sorted when they compare, else as met)."""
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types (1 and "a"): in the order met
        codes, uniques = pd.factorize(values, sort=False)
    return codes, pd.Index(uniques)


@dataclass
class Sequences:
    """Responses as ragged (learner, skill) sequences, without padding: sequences are
    numbered longest first, so the ones that reach opportunity t are ``0 .. counts[t]-1``,
    and opportunity t of sequence i sits at ``offsets[t] + i`` of the flat arrays (memory
    in proportion to the responses, whatever the longest sequence)."""

    skills: pd.Index  # skill names
    seq_skill: np.ndarray  # (N,) skill code of each sequence
    seq_learner: np.ndarray  # (N,) learner of each sequence (object)
    lengths: np.ndarray  # (N,) non-increasing
    counts: np.ndarray  # (T,) sequences with an opportunity t
    offsets: np.ndarray  # (T,) where opportunity t starts in the flat arrays
    obs: np.ndarray  # (n,) int8 0/1, flat
    row_pos: np.ndarray  # (n,) input row -> flat position
    row_seq: np.ndarray  # (n,) input row -> sequence
    row_t: np.ndarray  # (n,) input row -> opportunity (0-based)

    @classmethod
    def of(cls, clean: pd.DataFrame) -> Sequences:
        skill_code, skills = _codes(clean["skill"])
        learner_code, learners = _codes(clean["learner"])
        n = len(clean)
        pos = np.arange(n)
        perm = np.lexsort((pos, clean["order"].to_numpy(), learner_code, skill_code))
        ss, lc = skill_code[perm], learner_code[perm]
        new = np.ones(n, dtype=bool)
        new[1:] = (ss[1:] != ss[:-1]) | (lc[1:] != lc[:-1])
        found = np.cumsum(new) - 1  # sequence of each sorted row, in the order found
        first = np.flatnonzero(new)
        found_len = np.diff(np.append(first, n))
        t_sorted = pos - first[found]
        by_length = np.argsort(-found_len, kind="stable")  # sequence i = found by_length[i]
        number = np.empty(len(first), dtype=np.int64)
        number[by_length] = np.arange(len(first))
        lengths = found_len[by_length]
        seq_sorted = number[found]
        T = int(lengths[0])
        per_length = np.bincount(lengths, minlength=T + 1)
        counts = per_length[::-1].cumsum()[::-1][1 : T + 1]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat = offsets[t_sorted] + seq_sorted
        obs = np.empty(n, dtype=np.int8)
        obs[flat] = clean["correct"].to_numpy()[perm]
        row_pos, row_seq, row_t = (np.empty(n, dtype=np.int64) for _ in range(3))
        row_pos[perm], row_seq[perm], row_t[perm] = flat, seq_sorted, t_sorted
        return cls(
            skills,
            ss[first][by_length],
            np.asarray(learners, dtype=object)[lc[first][by_length]],
            lengths,
            counts,
            offsets,
            obs,
            row_pos,
            row_seq,
            row_t,
        )

    def at(self, t: int) -> slice:
        """The flat positions of opportunity ``t`` (sequences ``0 .. counts[t]-1``)."""
        return slice(int(self.offsets[t]), int(self.offsets[t] + self.counts[t]))


# -- the forward-backward pass ---------------------------------------------------------------


def _full(p: dict[str, Any], seqs: Sequences) -> tuple[dict[str, np.ndarray], tuple]:
    """Every parameter (``forget`` 0 when absent) as an array (..., N), and that shape."""
    keys = (*PARAMS, "forget")
    shape = np.broadcast_shapes(*(np.shape(p.get(k, 0.0)) for k in keys), (len(seqs.lengths),))
    return {k: np.broadcast_to(np.asarray(p.get(k, 0.0), float), shape) for k in keys}, shape


def forward(p: dict[str, Any], seqs: Sequences, *, keep: bool = False) -> dict:
    """Filtering with parameters ``p`` (arrays broadcasting to (R, N) or (N,)), flat arrays
    (..., n): ``before`` = P(mastered at the opportunity | responses before it), ``after``
    = P(mastered at it | responses up to and including it); ``ll`` (..., N): each
    sequence's log-likelihood; with ``keep``, also ``e0``, ``e1`` (P(response | un- /
    mastered)) and ``c`` (P(response | responses before it))."""
    q, shape = _full(p, seqs)
    lead, n = shape[:-1], len(seqs.obs)
    out = {
        k: np.empty((*lead, n)) for k in ("before", "after", *(("e0", "e1", "c") if keep else ()))
    }
    ll = np.zeros(shape)
    pred = np.array(q["prior"], dtype=float)
    for t in range(len(seqs.counts)):
        m, at = int(seqs.counts[t]), seqs.at(t)
        right = seqs.obs[at] == 1
        pred = pred[..., :m]
        g, s = q["guess"][..., :m], q["slip"][..., :m]
        e0 = np.where(right, g, 1.0 - g)
        e1 = np.where(right, 1.0 - s, s)
        num1 = pred * e1
        c = num1 + (1.0 - pred) * e0
        a = num1 / c
        ll[..., :m] += np.log(c)
        out["before"][..., at], out["after"][..., at] = pred, a
        if keep:
            out["e0"][..., at], out["e1"][..., at], out["c"][..., at] = e0, e1, c
        pred = a * (1.0 - q["forget"][..., :m]) + (1.0 - a) * q["learn"][..., :m]
    out["ll"] = ll
    return out


def _backward(p: dict[str, Any], f: dict, seqs: Sequences, visit: Any) -> None:
    """The scaled backward pass over ``f = forward(p, seqs, keep=True)``: calls
    ``visit(t, at, g0, g1, xi01, xi10)`` for t = T-1 .. 0, where ``at`` is the opportunity's
    flat slice, ``g0``, ``g1`` the smoothed P(un- / mastered at t) of its sequences and,
    for t < T-1, ``xi01`` P(unmastered at t, mastered at t+1) and ``xi10`` the reverse, of
    the sequences that reach t+1 (the first ``counts[t+1]``)."""
    q, shape = _full(p, seqs)
    lead, T = shape[:-1], len(seqs.counts)
    b0 = np.ones((*lead, int(seqs.counts[T - 1])))
    b1 = b0.copy()
    xi01 = xi10 = None
    for t in range(T - 1, -1, -1):
        m, at = int(seqs.counts[t]), seqs.at(t)
        a = f["after"][..., at]
        visit(t, at, (1.0 - a) * b0, a * b1, xi01, xi10)
        if t == 0:
            break
        prev = seqs.at(t - 1)  # the transition t-1 -> t, for the first m sequences
        w0 = f["e0"][..., at] * b0 / f["c"][..., at]
        w1 = f["e1"][..., at] * b1 / f["c"][..., at]
        a_prev = f["after"][..., prev][..., :m]
        learn, forget = q["learn"][..., :m], q["forget"][..., :m]
        xi01 = (1.0 - a_prev) * learn * w1
        xi10 = a_prev * forget * w0
        b0 = np.ones((*lead, int(seqs.counts[t - 1])))
        b1 = b0.copy()
        b0[..., :m] = (1.0 - learn) * w0 + learn * w1
        b1[..., :m] = forget * w0 + (1.0 - forget) * w1


def expected_counts(p: dict[str, Any], seqs: Sequences) -> dict[str, np.ndarray]:
    """The E-step: per sequence (arrays (R, N)) BKT's expected sufficient statistics under
    ``p`` and the log-likelihood ``ll``."""
    f = forward(p, seqs, keep=True)
    zero = np.zeros_like(f["ll"])
    s = {k: zero.copy() for k in ("l_num", "l_den", "f_num", "f_den", "g_num", "g_den")}
    s.update(s_num=zero.copy(), s_den=zero.copy(), p_num=zero.copy())

    def visit(t, at, g0, g1, xi01, xi10):
        m = g0.shape[-1]
        right = seqs.obs[at] == 1
        s["g_num"][..., :m] += np.where(right, g0, 0.0)
        s["g_den"][..., :m] += g0
        s["s_num"][..., :m] += np.where(right, 0.0, g1)
        s["s_den"][..., :m] += g1
        if xi01 is not None:  # transition t -> t+1, of the sequences that reach t+1
            k = xi01.shape[-1]
            s["l_num"][..., :k] += xi01
            s["l_den"][..., :k] += g0[..., :k]
            s["f_num"][..., :k] += xi10
            s["f_den"][..., :k] += g1[..., :k]
        if t == 0:
            s["p_num"] += g1

    _backward(p, f, seqs, visit)
    s["ll"] = f["ll"]
    return s


def smoothed(p: dict[str, Any], seqs: Sequences) -> dict[str, np.ndarray]:
    """Per opportunity (flat arrays (n,)), given each sequence's whole record: ``mastered``
    P(mastered at t); ``learned`` P(unmastered at t, mastered at t+1) and ``forgot`` the
    reverse (0 at a sequence's last opportunity). ``p`` holds one value per sequence."""
    n = len(seqs.obs)
    out = {k: np.zeros(n) for k in ("mastered", "learned", "forgot")}

    def visit(t, at, g0, g1, xi01, xi10):
        out["mastered"][at] = g1
        if xi01 is not None:
            head = slice(at.start, at.start + xi01.shape[-1])
            out["learned"][head], out["forgot"][head] = xi01, xi10

    _backward(p, forward(p, seqs, keep=True), seqs, visit)
    return out


# -- the fit ---------------------------------------------------------------------------------


def _per_skill(x: np.ndarray, seqs: Sequences) -> np.ndarray:
    """Sum (R, N) per skill -> (R, S)."""
    S = len(seqs.skills)
    return np.stack([np.bincount(seqs.seq_skill, weights=row, minlength=S) for row in x])


def _m_step(s: dict[str, np.ndarray], old: dict[str, np.ndarray], seqs: Sequences, forgets: bool):
    counts = np.bincount(seqs.seq_skill, minlength=len(seqs.skills))
    new = {}

    def ratio(num: str, den: str, key: str, hi: float) -> np.ndarray:
        n, d = _per_skill(s[num], seqs), _per_skill(s[den], seqs)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(d > 1e-12, n / d, old[key])
        return np.clip(value, EPS, hi)

    new["prior"] = np.clip(_per_skill(s["p_num"], seqs) / counts, EPS, 1.0 - EPS)
    new["learn"] = ratio("l_num", "l_den", "learn", 1.0 - EPS)
    new["guess"] = ratio("g_num", "g_den", "guess", MAX_GUESS)
    new["slip"] = ratio("s_num", "s_den", "slip", MAX_SLIP)
    if forgets:
        new["forget"] = ratio("f_num", "f_den", "forget", 1.0 - EPS)
    return new


def _gather(p: dict[str, np.ndarray], seqs: Sequences) -> dict[str, np.ndarray]:
    """Per-skill parameters (R, S) -> per-sequence (R, N)."""
    return {k: v[:, seqs.seq_skill] for k, v in p.items()}


@dataclass
class FitOutcome:
    params: pd.DataFrame
    info: pd.DataFrame


def fit(
    clean: pd.DataFrame,
    *,
    forgets: bool,
    restarts: int,
    seed: int,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> FitOutcome:
    """EM from ``restarts`` seeded random starts, all at once; per skill the best restart.
    Stops when no (restart, skill) improves its mean log-likelihood per response by more
    than ``tol``, or after ``max_iter`` iterations."""
    seqs = Sequences.of(clean)
    S = len(seqs.skills)
    rng = np.random.default_rng(seed)
    keys = PARAMS + (("forget",) if forgets else ())
    p = {k: rng.uniform(*START_RANGES[k], size=(restarts, S)) for k in keys}
    n_resp = np.bincount(seqs.seq_skill, weights=seqs.lengths, minlength=S)
    ll_old = np.full((restarts, S), -np.inf)
    iterations, converged = 0, False
    while iterations < max_iter and not converged:
        iterations += 1
        s = expected_counts(_gather(p, seqs), seqs)
        ll = _per_skill(s["ll"], seqs)
        p = _m_step(s, p, seqs, forgets)
        converged = bool(np.all((ll - ll_old) / n_resp < tol))
        ll_old = ll
    s = expected_counts(_gather(p, seqs), seqs)
    ll = _per_skill(s["ll"], seqs)
    best = np.argmax(ll, axis=0)
    cols = np.arange(S)
    params = pd.DataFrame({k: p[k][best, cols] for k in keys}, index=seqs.skills)
    params.index.name = "skill"
    learners = np.bincount(seqs.seq_skill, minlength=S)
    info = pd.DataFrame(
        {
            "responses": n_resp.astype(int),
            "learners": learners,
            "loglik": ll[best, cols],
            "restarts_agreeing": (ll[best, cols] - ll <= 1e-4 * n_resp).sum(axis=0),
            "iterations": iterations,
            "converged": converged,
        },
        index=seqs.skills,
    )
    info.index.name = "skill"
    return FitOutcome(params, info)


# -- using a model -----------------------------------------------------------------------------


def per_sequence(params: pd.DataFrame, seqs: Sequences) -> dict[str, np.ndarray]:
    """The model's parameters for each sequence (arrays (N,)); ``PlanValidationError`` for
    a skill the model has no parameters for."""
    unknown = [s for s in seqs.skills if s not in params.index]
    if unknown:
        raise PlanValidationError(
            f"responses: no BKT parameters for skill(s) {', '.join(map(repr, unknown[:10]))} "
            f"(the model knows: {', '.join(map(str, params.index[:10]))}); fit on responses "
            "that include them"
        )
    rows = params.loc[list(seqs.skills)]
    out = {k: rows[k].to_numpy(dtype=float)[seqs.seq_skill] for k in rows.columns}
    out.setdefault("forget", np.zeros(len(seqs.seq_skill)))
    return out


def filtered(params: pd.DataFrame, clean: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per input row: P(correct) given the responses before it, and P(mastered) after it
    (before the next opportunity: the learning step included), in input order."""
    seqs = Sequences.of(clean)
    p = per_sequence(params, seqs)
    f = forward(p, seqs)
    pb, pa = f["before"][seqs.row_pos], f["after"][seqs.row_pos]
    g, s = p["guess"][seqs.row_seq], p["slip"][seqs.row_seq]
    lr, fg = p["learn"][seqs.row_seq], p["forget"][seqs.row_seq]
    return pb * (1.0 - s) + (1.0 - pb) * g, pa * (1.0 - fg) + (1.0 - pa) * lr


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties counted half); NaN without both classes."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = pd.Series(np.asarray(score, dtype=float)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


# -- cohorts -----------------------------------------------------------------------------------


def learner_skills(params: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """One row per (learner, skill): ``opportunities``, ``correct``, ``mastery`` (P(mastered)
    after the last response), ``mastered`` (mastery >= ``MASTERY``),
    ``opportunities_to_mastery`` (responses until mastery first reached ``MASTERY``; NaN if
    never) and ``wheel_spinning`` (``WHEEL_SPIN`` opportunities or more without mastery
    within the first ``WHEEL_SPIN``; NaN while undecided: fewer opportunities, no mastery)."""
    _, mastery = filtered(params, clean)
    frame = clean.assign(mastery=mastery).sort_values(["skill", "learner", "order"], kind="stable")
    frame["n"] = frame.groupby(["skill", "learner"], sort=False).cumcount() + 1
    reached = frame[frame["mastery"] >= MASTERY].groupby(["learner", "skill"])["n"].min()
    g = frame.groupby(["learner", "skill"])
    out = pd.DataFrame(
        {
            "opportunities": g.size(),
            "correct": g["correct"].sum().astype(int),
            "mastery": g["mastery"].last(),
        }
    )
    out["mastered"] = out["mastery"] >= MASTERY
    out["opportunities_to_mastery"] = reached.reindex(out.index).astype(float)
    spun = out["opportunities_to_mastery"].fillna(np.inf) > WHEEL_SPIN
    decided = (out["opportunities"] >= WHEEL_SPIN) | out["opportunities_to_mastery"].notna()
    out["wheel_spinning"] = np.where(decided, spun.astype(float), np.nan)
    return out


def cohort_table(per_pair: pd.DataFrame) -> pd.DataFrame:
    """Per skill and overall (row ``"all"``): ``learners``, ``mastery_rate`` (share of
    (learner, skill) pairs mastered now), ``median_opportunities_to_mastery`` (over pairs
    that reached it), ``wheel_spin_rate`` (share of decided pairs spinning)."""

    def summarise(x: pd.DataFrame) -> dict[str, float]:
        return {
            "learners": int(len(x)),
            "mastery_rate": float(x["mastered"].mean()) if len(x) else math.nan,
            "median_opportunities_to_mastery": float(x["opportunities_to_mastery"].median()),
            "wheel_spin_rate": float(x["wheel_spinning"].mean()),
        }

    rows = {skill: summarise(x) for skill, x in per_pair.groupby(level="skill")}
    rows["all"] = summarise(per_pair)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "skill"
    return table


# -- joining responses with runs ---------------------------------------------------------------


def spans_frame(spans: Any) -> pd.DataFrame:
    """The spans frame of ``spans`` (a frame, or anything with ``.spans``), checked."""
    frame = getattr(spans, "spans", spans)
    if not isinstance(frame, pd.DataFrame):
        raise PlanValidationError(
            "spans: expected a spans DataFrame (RunResult.spans, MonteCarloResult.spans), a "
            f"RunResult or a MonteCarloResult, got {type(spans).__name__}"
        )
    missing = [c for c in SPAN_NEEDS if c not in frame.columns]
    if missing:
        raise PlanValidationError(
            f"spans: missing column(s) {', '.join(map(repr, missing))}; a spans frame has "
            "run_id, plan_id, step_id, agent_id, action, attempt, queued_ms, start_ms, "
            "end_ms, outcome, error, hedge (ok.SPAN_COLUMNS)"
        )
    return frame


def served(spans: pd.DataFrame, tutor: str) -> pd.DataFrame:
    """Per run id (index): ``tutor_ms``, ``outcome``, ``hedged``, ``tutor_attempts`` (see
    ``join``)."""
    s = spans.loc[:, list(SPAN_NEEDS)].copy()
    s["outcome"] = s["outcome"].astype(str)
    s["plan_id"] = s["plan_id"].astype(str)
    s = s.sort_values(["run_id", "queued_ms"], kind="stable")
    first_plan = s.groupby("run_id", sort=False)["plan_id"].first()
    fell_back = (s["plan_id"] != s["run_id"].map(first_plan)).groupby(s["run_id"]).any()
    ids = s["agent_id"].astype(str).to_numpy()
    is_tutor = np.fromiter((fnmatch.fnmatchcase(a, tutor) for a in ids), bool, len(ids))
    t = s[is_tutor].copy()
    t["in_first"] = t["plan_id"].to_numpy() == t["run_id"].map(first_plan).to_numpy()
    t["ok"] = (t["outcome"] == "succeeded") & t["in_first"]
    t["timeout"] = t["outcome"].isin(["timeout", "cancelled"])
    t["shed"] = t["outcome"].isin(["shed", "rejected"])
    ok_end = t["end_ms"].where(t["outcome"] == "succeeded")
    t["ok_end"] = ok_end
    g = t.groupby("run_id", sort=False)
    start = g["queued_ms"].min()
    answered = g["ok_end"].min()
    last = g["end_ms"].max()
    tutor_ms = answered.fillna(last) - start
    any_ok, any_to, any_shed = g["ok"].any(), g["timeout"].any(), g["shed"].any()
    out = pd.DataFrame(index=fell_back.index)
    out["tutor_ms"] = tutor_ms.reindex(out.index)
    outcome = np.where(
        any_ok.reindex(out.index, fill_value=False),
        "ok",
        np.where(
            fell_back,
            "fallback",
            np.where(
                any_to.reindex(out.index, fill_value=False),
                "timeout",
                np.where(any_shed.reindex(out.index, fill_value=False), "shed", "error"),
            ),
        ),
    )
    has_tutor = out.index.isin(start.index)
    out["outcome"] = np.where(has_tutor | fell_back.to_numpy(), outcome, "none")
    out["hedged"] = g["hedge"].any().reindex(out.index, fill_value=False).astype(bool)
    out["tutor_attempts"] = g.size().reindex(out.index, fill_value=0).astype(int)
    return out


def join(
    responses: pd.DataFrame, spans: Any, *, run: str = "run_id", tutor: str = "tutor-agent-*"
) -> pd.DataFrame:
    """``responses`` with ``JOIN_COLUMNS`` of the run named in its ``run`` column (see the
    public ``ok.analytics.join``)."""
    if not isinstance(responses, pd.DataFrame):
        raise PlanValidationError(
            f"responses: expected a pandas DataFrame, got {type(responses).__name__}"
        )
    if run not in responses.columns:
        raise PlanValidationError(
            f"responses: missing column {run!r}, the id of the run that served each response "
            f"(the frame has: {', '.join(map(str, responses.columns))}); name yours with run="
        )
    frame = spans_frame(spans)
    per_run = served(frame, tutor)
    keys = responses[run]
    matched = keys.isin(per_run.index)
    if len(per_run) and len(keys) and not matched.any():
        raise PlanValidationError(
            f"join: no response's {run!r} matches a span's run_id (responses: e.g. "
            f"{keys.iloc[0]!r} ({keys.dtype}); spans: e.g. {per_run.index[0]!r} "
            f"({frame['run_id'].dtype})): are they the same ids, of the same type?"
        )
    got = per_run.reindex(keys.to_numpy())
    out = responses.copy()
    out["tutor_ms"] = got["tutor_ms"].to_numpy(dtype=float)
    out["outcome"] = np.where(matched.to_numpy(), got["outcome"].to_numpy(dtype=object), "unknown")
    out["outcome"] = pd.Categorical(out["outcome"], categories=list(OUTCOMES))
    out["hedged"] = got["hedged"].fillna(False).to_numpy(dtype=bool)
    out["tutor_attempts"] = got["tutor_attempts"].fillna(0).to_numpy(dtype=int)
    return out


# -- outcomes ------------------------------------------------------------------------------------


def _fmt_ms(x: float) -> str:
    return f"{x:,.0f}"


def latency_bands(ms: pd.Series, edges: Any = None) -> pd.Series:
    """Band labels of tutor latencies (ms): at ``edges`` (ascending ms), or by default at
    the quartiles (two significant digits); NaN latency -> NaN band. Ordered categorical."""
    x = ms.to_numpy(dtype=float)
    if edges is None:
        finite = x[np.isfinite(x)]
        if finite.size == 0:
            return pd.Series(pd.Categorical([None] * len(x)), index=ms.index)
        qs = np.quantile(finite, [0.25, 0.5, 0.75])
        edges = sorted({float(f"{q:.2g}") for q in qs if q > 0})
    edges = [float(e) for e in edges]
    if any(not math.isfinite(e) or e <= 0 for e in edges) or edges != sorted(set(edges)):
        raise PlanValidationError(
            f"outcomes: bands must be ascending latencies in ms > 0, got {edges!r}"
        )
    bounds = [-np.inf, *edges, np.inf]
    labels = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo == -np.inf:
            labels.append(f"< {_fmt_ms(hi)} ms")
        elif hi == np.inf:
            labels.append(f"≥ {_fmt_ms(lo)} ms")
        else:
            labels.append(f"{_fmt_ms(lo)}–{_fmt_ms(hi)} ms")
    codes = np.searchsorted(np.asarray(edges), x, side="right")
    cat = pd.Categorical.from_codes(np.where(np.isfinite(x), codes, -1), labels, ordered=True)
    return pd.Series(cat, index=ms.index)


@dataclass
class _Per:
    """Per-interaction quantities of ``outcomes``, in the input's order."""

    learner: np.ndarray
    gain: np.ndarray
    unmastered: np.ndarray
    next_correct: np.ndarray
    has_next: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def per_interaction(params: pd.DataFrame, clean: pd.DataFrame) -> _Per:
    """For each response t: ``gain`` = P(mastered at t+1) - P(mastered at t), both given the
    learner's whole record on the skill; ``unmastered`` = P(unmastered at t | record);
    ``next_correct`` = the next response on the skill (NaN for the last)."""
    seqs = Sequences.of(clean)
    p = per_sequence(params, seqs)
    sm = smoothed(p, seqs)
    r, t, at = seqs.row_seq, seqs.row_t, seqs.row_pos
    has_next = t + 1 < seqs.lengths[r]
    gain = sm["learned"][at] - sm["forgot"][at]
    unmastered = 1.0 - sm["mastered"][at]
    t_next = np.minimum(t + 1, len(seqs.counts) - 1)
    nxt = np.where(has_next, seqs.obs[np.where(has_next, seqs.offsets[t_next] + r, 0)], 0)
    return _Per(
        clean["learner"].to_numpy(),
        gain,
        unmastered,
        np.where(has_next, nxt, np.nan).astype(float),
        has_next,
    )


METRICS = ("gain", "norm_gain", "next_correct")
"""``outcomes``' metrics: ``gain`` mean mastery gain per interaction; ``norm_gain`` the gain
over the gap left (sum of gains / sum of P(unmastered)): the group's rate of learning, the
BKT ``learn`` of its interactions; ``next_correct`` the share of next responses (same
learner, same skill) that were correct. One model serves every group, so gains are pulled
toward the pooled rate: differences between groups are conservative."""


def _group_sums(per: _Per, use: np.ndarray, lcode: np.ndarray, L: int, gcode: np.ndarray, G: int):
    """Per (learner, group) sums of interactions, gains, gaps and next-correct answers."""
    keep = gcode >= 0
    idx = lcode[keep] * G + gcode[keep]
    parts = {
        "n": np.ones(int(use.sum())),
        "gain": per.gain[use],
        "gap": per.unmastered[use],
        "nc": per.next_correct[use],
    }
    return {
        k: np.bincount(idx, weights=x[keep], minlength=L * G).reshape(L, G)
        for k, x in parts.items()
    }


def _metrics(sums: dict[str, np.ndarray], w: np.ndarray | None) -> dict[str, np.ndarray]:
    """The metrics of the learners weighted by ``w`` (bootstrap counts (B, L); None: all once)."""
    tot = {k: (v.sum(axis=0) if w is None else w @ v) for k, v in sums.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "gain": tot["gain"] / tot["n"],
            "norm_gain": tot["gain"] / tot["gap"],
            "next_correct": tot["nc"] / tot["n"],
        }


def outcomes_table(
    per: _Per,
    groups: dict[str, pd.Series],
    *,
    boot: int,
    seed: int,
    level: float = 0.95,
) -> pd.DataFrame:
    """The table of ``outcomes``: per dimension (``groups``: name -> categorical group label
    of each response, the reference first) and group, each metric with its percentile
    bootstrap interval over learners (resampled with replacement, ``boot`` times, seeded)
    and its difference from the dimension's first group present (paired: same resamples)."""
    use = per.has_next
    _, lcode = np.unique(per.learner[use].astype(str), return_inverse=True)
    L = int(lcode.max()) + 1 if len(lcode) else 0
    rng = np.random.default_rng(seed)
    weights = (
        [
            rng.multinomial(L, np.full(L, 1.0 / L), size=min(100, boot - b)).astype(float)
            for b in range(0, boot, 100)
        ]
        if L
        else []
    )
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    rows = []
    for by, labels in groups.items():
        lab = labels.to_numpy()[use]
        cats = [c for c in labels.cat.categories if (lab == c).any()]
        gcode = np.full(len(lab), -1)
        for i, c in enumerate(cats):
            gcode[lab == c] = i
        G = len(cats)
        if G == 0:
            continue
        sums = _group_sums(per, use, lcode, L, gcode, G)
        point = _metrics(sums, None)
        reps = [_metrics(sums, w) for w in weights]
        learners_in = (sums["n"] > 0).sum(axis=0)
        n = sums["n"].sum(axis=0)
        for m in METRICS:
            R = np.concatenate([r[m] for r in reps], axis=0) if reps else np.full((1, G), np.nan)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a group never drawn
                ci = np.nanpercentile(R, q, axis=0)
                dci = np.nanpercentile(R - R[:, :1], q, axis=0)
            for i, c in enumerate(cats):
                diff = point[m][i] - point[m][0]
                rows.append(
                    (by, str(c), m, int(n[i]), int(learners_in[i]), float(point[m][i]))
                    + (float(ci[0, i]), float(ci[1, i]), float(diff))
                    + ((float(dci[0, i]), float(dci[1, i])) if i else (0.0, 0.0))
                )
    cols = ["by", "group", "metric", "n", "learners", "value", "ci_low", "ci_high"]
    table = pd.DataFrame(rows, columns=[*cols, "diff", "diff_low", "diff_high"])
    return table.set_index(["by", "group", "metric"])
