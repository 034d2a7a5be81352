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
    """"rows 3, 17 (2 of 100 rows)" for the rows where ``bad`` holds, with their values."""
    labels = index[bad]
    head = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in labels[:shown])
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    text = f"rows {head}{more} ({len(labels)} of {len(index)} rows)"
    if values is not None:
        vals = ", ".join(repr(v) for v in list(values[bad])[:shown])
        text += f" hold {vals}"
    return text


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
    ok01 = np.array(
        [
            isinstance(v, (bool, np.bool_))
            or (
                isinstance(v, (int, float, np.integer, np.floating))
                and not isinstance(v, bool)
                and v in (0, 1)
            )
            for v in raw
        ],
        dtype=bool,
    )
    if not ok01.all():
        problems.append(
            f"column {names['correct']!r} must be 0 or 1 (or True/False): "
            f"{_rows(index, ~ok01, raw)}"
        )
    col = responses[names["order"]]
    num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    if col.dtype == bool:
        num = np.full(len(col), np.nan)
    bad = ~np.isfinite(num)
    if bad.any():
        problems.append(
            f"column {names['order']!r} (the responses' order: time in ms or a sequence "
            f"number) must be a finite number: {_rows(index, bad, col.to_numpy(dtype=object))}"
        )
    if problems:
        raise PlanValidationError(f"{what}: " + "; ".join(problems))
    return pd.DataFrame(
        {
            "learner": responses[names["learner"]].to_numpy(),
            "skill": responses[names["skill"]].to_numpy(),
            "correct": raw.astype(float).astype(np.int8),
            "order": num,
        },
        index=index,
    )


@dataclass
class Sequences:
    """Responses laid out as a padded matrix: one row per (skill, learner) sequence, in
    order; sequences sorted by skill. ``row_seq[i]``, ``row_t[i]``: where the i-th input
    row sits."""

    skills: pd.Index  # skill names, in sequence order
    starts: np.ndarray  # first sequence of each skill
    seq_skill: np.ndarray  # (N,) skill code of each sequence
    seq_learner: np.ndarray  # (N,) learner of each sequence (object)
    obs: np.ndarray  # (N, T) int8, 0/1; padding holds 0
    valid: np.ndarray  # (N, T) bool
    lengths: np.ndarray  # (N,)
    row_seq: np.ndarray  # (n,) input row -> sequence
    row_t: np.ndarray  # (n,) input row -> opportunity (0-based)

    @classmethod
    def of(cls, clean: pd.DataFrame) -> Sequences:
        skill_code, skills = pd.factorize(clean["skill"], sort=True)
        learner_code, learners = pd.factorize(clean["learner"], sort=True)
        n = len(clean)
        pos = np.arange(n)
        perm = np.lexsort((pos, clean["order"].to_numpy(), learner_code, skill_code))
        ss, ll = skill_code[perm], learner_code[perm]
        new = np.ones(n, dtype=bool)
        new[1:] = (ss[1:] != ss[:-1]) | (ll[1:] != ll[:-1])
        seq_sorted = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        lengths = np.diff(np.append(first, n))
        t_sorted = pos - first[seq_sorted]
        N, T = len(first), int(lengths.max())
        obs = np.zeros((N, T), dtype=np.int8)
        valid = np.zeros((N, T), dtype=bool)
        obs[seq_sorted, t_sorted] = clean["correct"].to_numpy()[perm]
        valid[seq_sorted, t_sorted] = True
        row_seq, row_t = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        row_seq[perm], row_t[perm] = seq_sorted, t_sorted
        seq_skill = ss[first]
        starts = np.searchsorted(seq_skill, np.arange(len(skills)))
        return cls(
            pd.Index(skills),
            starts,
            seq_skill,
            np.asarray(learners)[ll[first]],
            obs,
            valid,
            lengths,
            row_seq,
            row_t,
        )


# -- the forward-backward pass ---------------------------------------------------------------


def _emissions(obs_t: np.ndarray, valid_t: np.ndarray, guess: np.ndarray, slip: np.ndarray):
    """P(response | unmastered), P(response | mastered); 1 for both where there is none."""
    e0 = np.where(obs_t == 1, guess, 1.0 - guess)
    e1 = np.where(obs_t == 1, 1.0 - slip, slip)
    return np.where(valid_t, e0, 1.0), np.where(valid_t, e1, 1.0)


def forward(p: dict[str, np.ndarray], seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """Filtering with parameters ``p`` (arrays broadcasting to (R, N)): ``before[t]`` =
    P(mastered at opportunity t | responses before it) and ``after[t]`` = P(mastered at
    opportunity t | responses up to and including it), each of shape (T, R, N)."""
    T = seqs.obs.shape[1]
    prior, learn, forget = p["prior"], p["learn"], p.get("forget", 0.0)
    shape = np.broadcast_shapes(np.shape(prior), (seqs.obs.shape[0],))
    pred = np.broadcast_to(prior, shape).astype(float)
    before = np.empty((T, *shape))
    after = np.empty((T, *shape))
    for t in range(T):
        e0, e1 = _emissions(seqs.obs[:, t], seqs.valid[:, t], p["guess"], p["slip"])
        before[t] = pred
        num1 = pred * e1
        a = num1 / (num1 + (1.0 - pred) * e0)
        after[t] = a
        pred = a * (1.0 - forget) + (1.0 - a) * learn
    return before, after


def expected_counts(p: dict[str, np.ndarray], seqs: Sequences) -> dict[str, np.ndarray]:
    """The E-step: per sequence (arrays of shape (R, N)) the expected sufficient
    statistics of BKT under ``p`` and the log-likelihood."""
    obs, valid = seqs.obs, seqs.valid
    T = obs.shape[1]
    learn, forget = p["learn"], p.get("forget", np.zeros_like(p["learn"]))
    before, after = forward(p, seqs)
    e0s, e1s, cs = [], [], []
    ll = 0.0
    for t in range(T):
        e0, e1 = _emissions(obs[:, t], valid[:, t], p["guess"], p["slip"])
        c = before[t] * e1 + (1.0 - before[t]) * e0
        ll = ll + np.log(c)
        e0s.append(e0)
        e1s.append(e1)
        cs.append(c)
    zero = np.zeros_like(after[0])
    sums = {k: zero.copy() for k in ("l_num", "l_den", "f_num", "f_den")}
    sums.update({k: zero.copy() for k in ("g_num", "g_den", "s_num", "s_den")})
    b0 = np.ones_like(after[0])
    b1 = np.ones_like(after[0])
    for t in range(T - 1, -1, -1):
        a1 = after[t]
        g1, g0 = a1 * b1, (1.0 - a1) * b0
        v = valid[:, t]
        o = obs[:, t]
        sums["g_num"] += np.where(v & (o == 1), g0, 0.0)
        sums["g_den"] += np.where(v, g0, 0.0)
        sums["s_num"] += np.where(v & (o == 0), g1, 0.0)
        sums["s_den"] += np.where(v, g1, 0.0)
        if t > 0:  # the transition t-1 -> t, counted where opportunity t exists
            a_prev = after[t - 1]
            e0, e1, c = e0s[t], e1s[t], cs[t]
            w0, w1 = e0 * b0 / c, e1 * b1 / c
            xi01 = (1.0 - a_prev) * learn * w1
            xi10 = a_prev * forget * w0
            g0_prev = (1.0 - a_prev) * ((1.0 - learn) * w0 + learn * w1)
            g1_prev = a_prev * (forget * w0 + (1.0 - forget) * w1)
            sums["l_num"] += np.where(v, xi01, 0.0)
            sums["l_den"] += np.where(v, g0_prev, 0.0)
            sums["f_num"] += np.where(v, xi10, 0.0)
            sums["f_den"] += np.where(v, g1_prev, 0.0)
            b0, b1 = g0_prev / np.maximum(1.0 - a_prev, 1e-300), g1_prev / np.maximum(a_prev, 1e-300)
    sums["p_num"] = after[0] * b1  # gamma at the first opportunity
    sums["ll"] = ll
    return sums


def smoothed(p: dict[str, np.ndarray], seqs: Sequences) -> dict[str, np.ndarray]:
    """Per opportunity (arrays (N, T)), given each sequence's whole record: ``mastered``
    P(mastered at t), ``learned`` P(unmastered at t, mastered at t+1), ``forgot`` the
    reverse, ``unmastered`` P(unmastered at t); the last two are 0 where t+1 does not exist.
    ``p`` holds one value per sequence (arrays of shape (N,))."""
    obs, valid = seqs.obs, seqs.valid
    N, T = obs.shape
    learn, forget = p["learn"], p.get("forget", np.zeros(N))
    before, after = forward(p, seqs)
    mastered = np.zeros((N, T))
    learned = np.zeros((N, T))
    forgot = np.zeros((N, T))
    b0, b1 = np.ones(N), np.ones(N)
    for t in range(T - 1, -1, -1):
        mastered[:, t] = after[t] * b1
        if t > 0:
            a_prev = after[t - 1]
            e0, e1 = _emissions(obs[:, t], valid[:, t], p["guess"], p["slip"])
            c = before[t] * e1 + (1.0 - before[t]) * e0
            w0, w1 = e0 * b0 / c, e1 * b1 / c
            learned[:, t - 1] = np.where(valid[:, t], (1.0 - a_prev) * learn * w1, 0.0)
            forgot[:, t - 1] = np.where(valid[:, t], a_prev * forget * w0, 0.0)
            b0 = (1.0 - learn) * w0 + learn * w1
            b1 = forget * w0 + (1.0 - forget) * w1
    return {"mastered": mastered, "learned": learned, "forgot": forgot}


# -- the fit ---------------------------------------------------------------------------------


def _per_skill(x: np.ndarray, seqs: Sequences) -> np.ndarray:
    """Sum (R, N) per skill -> (R, S)."""
    return np.add.reduceat(x, seqs.starts, axis=1)


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
    n_resp = np.add.reduceat(seqs.lengths, seqs.starts)
    ll_old = np.full((restarts, S), -np.inf)
    iterations = 0
    converged = False
    for iterations in range(1, max_iter + 1):
        s = expected_counts(_gather(p, seqs), seqs)
        ll = _per_skill(s["ll"], seqs)
        p = _m_step(s, p, seqs, forgets)
        gain = (ll - ll_old) / n_resp
        ll_old = ll
        if np.all(gain < tol):
            converged = True
            break
    s = expected_counts(_gather(p, seqs), seqs)
    ll = _per_skill(s["ll"], seqs)
    best = np.argmax(ll, axis=0)
    cols = np.arange(S)
    params = pd.DataFrame({k: p[k][best, cols] for k in keys}, index=seqs.skills)
    params.index.name = "skill"
    learners = pd.Series(seqs.seq_skill).value_counts().reindex(range(S)).to_numpy()
    info = pd.DataFrame(
        {
            "responses": n_resp,
            "learners": learners,
            "loglik": ll[best, cols],
            "restarts_agreeing": (np.abs(ll - ll[best, cols]) < 1e-3 * np.maximum(1, n_resp)).sum(
                axis=0
            ),
            "iterations": iterations,
            "converged": converged,
        },
        index=seqs.skills,
    )
    info.index.name = "skill"
    return FitOutcome(params, info)


def one_iteration_time_baseline(clean: pd.DataFrame, *, forgets: bool = False) -> None:
    """One E-step and M-step with one restart (the benchmark's same-run baseline)."""
    seqs = Sequences.of(clean)
    keys = PARAMS + (("forget",) if forgets else ())
    p = {k: np.full((1, len(seqs.skills)), np.mean(START_RANGES[k])) for k in keys}
    _m_step(expected_counts(_gather(p, seqs), seqs), p, seqs, forgets)


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
    before, after = forward(p, seqs)
    pb = before[seqs.row_t, seqs.row_seq]
    pa = after[seqs.row_t, seqs.row_seq]
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
    r, t = seqs.row_seq, seqs.row_t
    has_next = t + 1 < seqs.lengths[r]
    gain = sm["learned"][r, t] - sm["forgot"][r, t]
    unmastered = 1.0 - sm["mastered"][r, t]
    nxt = np.where(has_next, seqs.obs[r, np.minimum(t + 1, seqs.obs.shape[1] - 1)], 0)
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
learner, same skill) that were correct."""


def outcomes_table(
    per: _Per,
    groups: dict[str, pd.Series],
    *,
    boot: int,
    seed: int,
    level: float = 0.95,
) -> pd.DataFrame:
    """The table of ``outcomes``: per dimension (``groups``: name -> group label of each
    response, categorical order = reference first) and group, each metric with its
    percentile bootstrap interval over learners and its difference from the dimension's
    first group (same resamples, paired)."""
    use = per.has_next
    learners, lcode = np.unique(per.learner[use].astype(str), return_inverse=True)
    L = len(learners)
    rng = np.random.default_rng(seed)
    weights = [rng.multinomial(L, np.full(L, 1.0 / L), size=min(100, boot - b))
               for b in range(0, boot, 100)] if L else []
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    rows = []
    for by, labels in groups.items():
        lab = labels.to_numpy()[use]
        cats = [c for c in labels.cat.categories if (lab == c).any()]
        if not cats:
            continue
        G = len(cats)
        gcode = np.full(len(lab), -1)
        for i, c in enumerate(cats):
            gcode[lab == c] = i
        keep = gcode >= 0
        idx = lcode[keep] * G + gcode[keep]

        def sums(x: np.ndarray, keep: np.ndarray = keep, idx: np.ndarray = idx) -> np.ndarray:
            return np.bincount(idx, weights=x[keep], minlength=L * G).reshape(L, G)

        n = sums(np.ones(use.sum()))
        S = {
            "n": n,
            "gain": sums(per.gain[use]),
            "gap": sums(per.unmastered[use]),
            "nc": sums(per.next_correct[use]),
        }

        def metrics(w: np.ndarray | None, S: dict[str, np.ndarray] = S) -> dict[str, np.ndarray]:
            tot = {k: (v.sum(axis=0) if w is None else w @ v) for k, v in S.items()}
            with np.errstate(invalid="ignore", divide="ignore"):
                return {
                    "gain": tot["gain"] / tot["n"],
                    "norm_gain": tot["gain"] / tot["gap"],
                    "next_correct": tot["nc"] / tot["n"],
                }

        point = metrics(None)
        reps = [metrics(w.astype(float)) for w in weights]
        learners_in = (n > 0).sum(axis=0)
        for m in METRICS:
            R = np.concatenate([r[m] for r in reps], axis=0) if reps else np.empty((0, G))
            D = R - R[:, :1]
            with np.errstate(all="ignore"):
                ci = np.nanpercentile(R, [lo_q, hi_q], axis=0) if len(R) else np.full((2, G), np.nan)
                dci = np.nanpercentile(D, [lo_q, hi_q], axis=0) if len(D) else np.full((2, G), np.nan)
            for i, c in enumerate(cats):
                rows.append(
                    (
                        by,
                        str(c),
                        m,
                        int(n[:, i].sum()),
                        int(learners_in[i]),
                        float(point[m][i]),
                        float(ci[0, i]),
                        float(ci[1, i]),
                        float(point[m][i] - point[m][0]),
                        float(dci[0, i]) if i else 0.0,
                        float(dci[1, i]) if i else 0.0,
                    )
                )
    cols = ["by", "group", "metric", "n", "learners", "value", "ci_low", "ci_high"]
    table = pd.DataFrame(rows, columns=[*cols, "diff", "diff_low", "diff_high"])
    return table.set_index(["by", "group", "metric"])
