"""Learning analytics: what learners learned, joined with the runs that served them (SPEC §18).

```python
import orchkit as ok

model = ok.analytics.fit_bkt(responses)          # BKT per skill, by EM (numpy)
model.params                                     # prior, learn, guess, slip per skill
model.mastery(responses)                         # P(mastered) after each response
joined = ok.analytics.join(responses, mc.spans)  # + tutor_ms, outcome, hedged
table = ok.analytics.outcomes(joined, model=model)
ok.analytics.outcomes_chart(table)
```

A *responses* frame has one row per answer: the learner, the skill, whether the answer was
correct (0/1) and its order (a time in ms, or a sequence number); to join it with runs,
also the id of the run that served it. Column names are arguments (defaults
``learner_id``, ``skill``, ``correct``, ``ts_ms``, ``run_id``). A bad frame is one
``PlanValidationError`` naming each bad column and its rows.

Mastery is Bayesian knowledge tracing (BKT, Corbett & Anderson 1995): per skill,
P(mastered) before the first opportunity (``prior``), P(mastering it at an opportunity)
(``learn``), P(right without mastery) (``guess``), P(wrong with it) (``slip``); optionally
P(losing it) (``forget``). A skill counts as mastered at P(mastered) ≥ 0.95
(``MASTERY``). The numerics live in ``orchkit._studies.analytics``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ._base.errors import PlanValidationError
from ._studies import analytics as _a

MASTERY = _a.MASTERY
WHEEL_SPIN = _a.WHEEL_SPIN
OUTCOMES = _a.OUTCOMES
METRICS = _a.METRICS

__all__ = [
    "BKTModel",
    "MASTERY",
    "METRICS",
    "OUTCOMES",
    "WHEEL_SPIN",
    "fit_bkt",
    "join",
    "outcomes",
    "outcomes_chart",
]


class BKTModel:
    """Fitted (or given) BKT parameters per skill, and the column names of its responses.

    ``params``: a frame indexed by skill with columns ``prior``, ``learn``, ``guess``,
    ``slip`` (and ``forget`` when fitted with forgetting), probabilities. ``info`` (after
    ``fit_bkt``): per skill ``responses``, ``learners``, ``loglik``, ``restarts_agreeing``
    (restarts within 1e-4 nats per response of the best), ``iterations``, ``converged``.
    """

    def __init__(
        self,
        params: pd.DataFrame,
        *,
        learner: str = "learner_id",
        skill: str = "skill",
        correct: str = "correct",
        order: str = "ts_ms",
        info: pd.DataFrame | None = None,
    ):
        self.params = _checked_params(params)
        self.info = info
        self.columns = {"learner": learner, "skill": skill, "correct": correct, "order": order}

    @classmethod
    def from_params(
        cls, params: Mapping[str, Mapping[str, float]] | pd.DataFrame, **columns: str
    ) -> BKTModel:
        """A model of given parameters: ``{skill: {prior, learn, guess, slip[, forget]}}``
        or a frame indexed by skill; ``columns`` as in ``fit_bkt`` (learner=, skill=, ...)."""
        frame = (
            params
            if isinstance(params, pd.DataFrame)
            else pd.DataFrame.from_dict(dict(params), orient="index")
        )
        return cls(frame, **columns)

    def __repr__(self) -> str:
        return f"BKTModel({len(self.params)} skills: {', '.join(map(str, self.params.index[:5]))})"

    def _clean(self, responses: pd.DataFrame) -> pd.DataFrame:
        return _a.check_responses(responses, **self.columns)

    def mastery(self, responses: pd.DataFrame) -> pd.Series:
        """P(mastered) after each response, before the learner's next opportunity on the
        skill (the learning step included: BKT's P(L_n)), given that learner's responses on
        the skill up to it; aligned with ``responses``' index. Raises
        ``PlanValidationError`` for a bad frame or a skill without parameters."""
        _, after = _a.filtered(self.params, self._clean(responses))
        return pd.Series(after, index=responses.index, name="mastery")

    def predict(self, responses: pd.DataFrame) -> pd.Series:
        """P(correct) of each response given the learner's earlier responses on the skill;
        aligned with ``responses``' index."""
        p_correct, _ = _a.filtered(self.params, self._clean(responses))
        return pd.Series(p_correct, index=responses.index, name="p_correct")

    def auc(self, responses: pd.DataFrame) -> float:
        """Area under the ROC curve of ``predict`` against the responses' correctness (0.5:
        no better than chance); NaN if every response is right or every one wrong."""
        clean = self._clean(responses)
        p_correct, _ = _a.filtered(self.params, clean)
        return _a.auc(clean["correct"].to_numpy(), p_correct)

    def learners(self, responses: pd.DataFrame) -> pd.DataFrame:
        """One row per (learner, skill): ``opportunities``, ``correct``, ``mastery`` (after
        the last response), ``mastered`` (≥ ``MASTERY``), ``opportunities_to_mastery``
        (responses until mastery was first reached; NaN if never) and ``wheel_spinning``
        (1.0: ``WHEEL_SPIN`` opportunities without mastery; 0.0: mastered within them; NaN:
        undecided yet)."""
        return _a.learner_skills(self.params, self._clean(responses))

    def cohort(self, responses: pd.DataFrame) -> pd.DataFrame:
        """Per skill and overall (row ``"all"``): ``learners`` ((learner, skill) pairs),
        ``mastery_rate``, ``median_opportunities_to_mastery`` (of the pairs that reached
        it) and ``wheel_spin_rate`` (of the decided pairs)."""
        return _a.cohort_table(self.learners(responses))


def _checked_params(params: Any) -> pd.DataFrame:
    if not isinstance(params, pd.DataFrame):
        raise PlanValidationError(
            f"BKT parameters: expected a frame indexed by skill, got {type(params).__name__}"
        )
    missing = [k for k in _a.PARAMS if k not in params.columns]
    extra = [k for k in params.columns if k not in (*_a.PARAMS, "forget")]
    if missing or extra or params.empty:
        raise PlanValidationError(
            f"BKT parameters: columns must be prior, learn, guess, slip [, forget] with one "
            f"row per skill (missing {missing}, unknown {extra})"
        )
    values = params.astype(float)
    bad = [
        f"{skill}.{k}={v!r}"
        for skill, row in values.iterrows()
        for k, v in row.items()
        if not 0.0 <= v <= 1.0 or (k in ("guess", "slip") and not v < 0.5)
    ]
    if bad:
        raise PlanValidationError(
            "BKT parameters must be probabilities, guess and slip below 0.5 (otherwise "
            f"'mastered' would mean 'more likely wrong'): {', '.join(bad[:5])}"
        )
    values.index.name = "skill"
    return values


def fit_bkt(
    responses: pd.DataFrame,
    *,
    learner: str = "learner_id",
    skill: str = "skill",
    correct: str = "correct",
    order: str = "ts_ms",
    forgets: bool = False,
    restarts: int = 5,
    seed: int = 0,
) -> BKTModel:
    """Fit BKT per skill by EM (Baum–Welch, in numpy, vectorised over learners and restarts).

    Parameters: ``responses`` (one row per answer; columns named by ``learner``, ``skill``,
    ``correct`` (0/1), ``order`` (time in ms or a sequence number: the order of a learner's
    answers)); ``forgets`` also fits P(forgetting); ``restarts`` random starts drawn from
    ``seed`` (the best likelihood wins per skill; same seed, same numbers). ``guess`` and
    ``slip`` are kept below 0.5. Returns a ``BKTModel`` (``params``, ``info``). Raises
    ``PlanValidationError`` for a bad frame (naming the column and rows).
    """
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
        raise PlanValidationError(f"fit_bkt: restarts must be an int >= 1, got {restarts!r}")
    columns = {"learner": learner, "skill": skill, "correct": correct, "order": order}
    clean = _a.check_responses(responses, **columns)
    fitted = _a.fit(clean, forgets=bool(forgets), restarts=restarts, seed=seed)
    return BKTModel(fitted.params, info=fitted.info, **columns)


def join(
    responses: pd.DataFrame,
    spans: Any,
    *,
    run: str = "run_id",
    tutor: str = "tutor-agent-*",
) -> pd.DataFrame:
    """Each response with the run that served it.

    The key: a response's ``run`` column (default ``run_id``) equals the spans' ``run_id``
    (same values, same type: a Monte-Carlo study's run numbers, a live run's id). ``spans``
    is a spans frame (``ok.SPAN_COLUMNS``) or a RunResult / MonteCarloResult (which keeps
    the spans of its first 10,000 runs unless run with ``keep_spans=True``; responses of
    the other runs read ``unknown``). The tutor is
    every agent whose id matches the glob ``tutor``. Adds:

    - ``tutor_ms``: from the tutor's first attempt being queued to its answer (the end of
      its first successful attempt; without one, the end of its last attempt), ms; NaN
      when the run made no tutor attempt;
    - ``outcome``: ``ok``, ``fallback``, ``timeout``, ``shed``, ``error``, ``none`` or
      ``unknown`` (see ``OUTCOMES``), categorical;
    - ``hedged``: a hedged tutor attempt ran; ``tutor_attempts``: how many.

    Raises ``PlanValidationError`` for a missing column, or when no response's run id
    matches any span's (a mismatch of ids or of types).
    """
    return _a.join(responses, spans, run=run, tutor=tutor)


def outcomes(
    joined: pd.DataFrame,
    *,
    model: BKTModel | None = None,
    by: Sequence[str] = ("outcome", "latency"),
    bands: Sequence[float] | None = None,
    boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    learner: str = "learner_id",
    skill: str = "skill",
    correct: str = "correct",
    order: str = "ts_ms",
) -> pd.DataFrame:
    """Learning after each interaction, by orchestration outcome and tutor latency band.

    For each response (an *interaction*: the learner answered, the run served it) that has
    a next response by the learner on the skill:

    - ``gain``: P(mastered at the next opportunity) - P(mastered at this one), both given
      the learner's whole record on the skill (BKT, forward-backward): the probability that
      the learner learned the skill right after this interaction;
    - ``norm_gain``: gain over the gap left (sum of gains / sum of P(unmastered)): the
      group's rate of learning, BKT's ``learn`` of its interactions;
    - ``next_correct``: the share of next responses that were correct.

    Gains come from one model for every group, so the groups' estimates are pulled
    toward each other (a true 0.15 against 0.05 reads about 0.135 against 0.10): a
    difference found is real, and if anything larger than it reads.

    ``joined``: ``join``'s output; ``model``: a ``BKTModel`` (default: ``fit_bkt`` on
    ``joined`` with the column names given and ``seed``); ``by``: the dimensions, any of
    ``"outcome"``, ``"latency"`` (``tutor_ms`` in ``bands``: ascending ms edges, default the
    quartiles) and other columns of ``joined`` (e.g. ``"hedged"``). Intervals: percentile
    bootstrap over learners (``boot`` resamples, seeded: same seed, same numbers) at
    ``level``. Returns a frame indexed by (``by``, ``group``, ``metric``) with ``n``
    (interactions), ``learners``, ``value``, ``ci_low``, ``ci_high`` and ``diff``,
    ``diff_low``, ``diff_high``: the difference from the dimension's first group (``ok``
    for outcomes, the fastest band for latency) with its paired interval.
    """
    if not isinstance(joined, pd.DataFrame):
        raise PlanValidationError(f"outcomes: expected join()'s frame, got {type(joined).__name__}")
    if isinstance(by, str):
        by = (by,)
    if not isinstance(boot, int) or isinstance(boot, bool) or boot < 1:
        raise PlanValidationError(f"outcomes: boot must be an int >= 1, got {boot!r}")
    if not 0.0 < level < 1.0:
        raise PlanValidationError(f"outcomes: level must be in (0, 1), got {level!r}")
    if model is None:
        model = fit_bkt(
            joined, learner=learner, skill=skill, correct=correct, order=order, seed=seed
        )
    clean = model._clean(joined)
    groups = {}
    for name in by:
        column = "tutor_ms" if name == "latency" else name
        if column not in joined.columns:
            hint = " (call ok.analytics.join first)" if name in ("outcome", "latency") else ""
            raise PlanValidationError(
                f"outcomes: by={name!r} needs column {column!r}, which the frame lacks{hint}"
            )
        if name == "latency":
            groups[name] = _a.latency_bands(joined["tutor_ms"], bands)
        elif isinstance(joined[column].dtype, pd.CategoricalDtype):
            groups[name] = joined[column]
        else:
            groups[name] = joined[column].astype("category")
    per = _a.per_interaction(model.params, clean)
    return _a.outcomes_table(per, groups, boot=boot, seed=seed, level=level)


def outcomes_chart(table: pd.DataFrame, *, metric: str = "gain", title: str | None = None) -> Any:
    """A plotly figure of ``outcomes``' ``metric`` (``gain``, ``norm_gain`` or
    ``next_correct``): one panel per dimension, a bar per group with its interval, the
    number of interactions under each bar."""
    from ._views.learning import outcomes_chart as chart

    if metric not in METRICS:
        raise PlanValidationError(
            f"outcomes_chart: metric must be one of {', '.join(METRICS)}, got {metric!r}"
        )
    return chart(table, metric=metric, title=title)
