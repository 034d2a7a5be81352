"""The personalised-learning agent: a scikit-learn model of learner mastery per concept.

The model is a logistic regression (in the spirit of Performance Factors Analysis) that
predicts P(the learner answers the next item correctly) from the learner's history:
the item's concept and difficulty, prior correct / incorrect answers on that concept, the
last answers on it, and the learner's overall record. It is trained in ``initialize()`` on
the data set that ``simulations/learners.py`` generates from a BKT learner model with known
ground truth (``orchkit/data/learners/interactions.csv``; activities in ``curriculum.json``).

"Mastery" of a concept is the model's P(correct) on a medium (difficulty 2) item of it.
Per-learner state (answers, mastery, difficulty level per concept) lives in memory.
A step without ``learnerId`` acts for the learner named by an earlier step of the same plan
run (``context["results"][...].data["learnerId"]``), else for ``DEFAULT_LEARNER_ID``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .._base.errors import AgentError
from .._base.resources import data_path
from .._runtimes.agent import Agent, AgentResponse

DEFAULT_LEARNER_ID = "default-learner"
DEFAULT_DATA_DIR = data_path("learners")  # shipped in the package (orchkit/data/learners)
DAY_MS = 86_400_000
LEVELS = (1, 2, 3)
RECENT = 3  # answers per concept that the "recent" features look at
FEATURE_KEYS = (
    "concept",
    "difficulty",
    "priorCorrect",
    "priorIncorrect",
    "recentCorrect",
    "recentIncorrect",
    "overallCorrect",
    "overallIncorrect",
)
FEATURE_VECTOR = ("accuracy", "recentAccuracy", "answers", "difficulty")  # list form of 'features'
DATA_SOURCES = ("curriculum_api", "learner_dataset")


class History:
    """What the model sees of one learner: answer counts and recent answers per concept.

    Training replays the data set through this same class, so features are identical
    offline and online.
    """

    def __init__(self, concepts: list[str]):
        self.concepts = concepts
        self.correct = dict.fromkeys(concepts, 0)
        self.wrong = dict.fromkeys(concepts, 0)
        self.recent: dict[str, deque[int]] = {c: deque(maxlen=RECENT) for c in concepts}

    def add(self, concept: str, correct: bool) -> None:
        self.correct[concept] += int(correct)
        self.wrong[concept] += int(not correct)
        self.recent[concept].append(int(correct))

    def seen(self, concept: str) -> int:
        """Answers given so far on ``concept``."""
        return self.correct[concept] + self.wrong[concept]

    def counts(self, concept: str) -> dict[str, int]:
        recent = self.recent[concept]
        return {
            "priorCorrect": self.correct[concept],
            "priorIncorrect": self.wrong[concept],
            "recentCorrect": sum(recent),
            "recentIncorrect": len(recent) - sum(recent),
            "overallCorrect": sum(self.correct.values()),
            "overallIncorrect": sum(self.wrong.values()),
        }


def features_of(
    concepts: list[str], concept: str, difficulty: int, n: dict[str, int]
) -> list[float]:
    """Feature vector of one prediction (see ``FEATURE_KEYS`` for ``n``)."""
    onehot = [float(c == concept) for c in concepts]
    succ, fail = math.log1p(n["priorCorrect"]), math.log1p(n["priorIncorrect"])
    recent_n = n["recentCorrect"] + n["recentIncorrect"]
    total = n["overallCorrect"] + n["overallIncorrect"]
    return [
        *onehot,
        float(difficulty == 1),
        float(difficulty == 3),
        *(succ * o for o in onehot),
        *(fail * o for o in onehot),
        (n["recentCorrect"] + 0.5) / (recent_n + 1.0),
        float(recent_n > 0),
        (n["overallCorrect"] + 1.0) / (total + 2.0),
        math.log1p(total),
    ]


def build_training_set(df, concepts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a data set of answers (columns learner_id, seq, concept, difficulty, correct).

    Each row's features use only that learner's earlier answers.
    """
    X, y = [], []
    ordered = df.sort_values(["learner_id", "seq"], kind="stable")
    learner, hist = None, None
    for lid, concept, diff, correct in zip(
        ordered["learner_id"], ordered["concept"], ordered["difficulty"], ordered["correct"]
    ):
        if lid != learner:
            learner, hist = lid, History(concepts)
        X.append(features_of(concepts, concept, int(diff), hist.counts(concept)))
        y.append(int(correct))
        hist.add(concept, bool(correct))
    return np.asarray(X, dtype=float), np.asarray(y, dtype=int)


def fit_mastery_model(X: np.ndarray, y: np.ndarray):
    """A scikit-learn pipeline (standardise, logistic regression) fitted to (X, y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y)


class _DataError(Exception):
    pass


@dataclass(frozen=True)
class _Trained:
    """The model and catalogue trained from one data directory (shared, read-only)."""

    subject: str
    concepts: list[str]
    activities: dict[str, dict[str, Any]]
    by_level: dict[tuple[str, int], list[dict[str, Any]]]
    dataset: Any
    model: Any
    model_info: dict[str, Any]
    weights: np.ndarray  # the pipeline folded into one linear map: P = expit(X @ w + b)
    bias: float


@functools.lru_cache(maxsize=8)
def _train(data_dir: str, csv_mtime_ns: int, cur_mtime_ns: int, seed: int) -> _Trained:
    """Load a data directory and fit the model; cached per (directory, file versions, seed),
    so several agents in one process train once. The two mtimes (ns) are only cache keys:
    a regenerated file gives a new key."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    csv, cur = Path(data_dir) / "interactions.csv", Path(data_dir) / "curriculum.json"
    try:
        curriculum = json.loads(cur.read_text())
        subject, concepts = curriculum["subject"], list(curriculum["concepts"])
        activities = {a["activityId"]: a for a in curriculum["activities"]}
        by_level: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for a in activities.values():
            by_level.setdefault((a["concept"], int(a["difficulty"])), []).append(a)
        df = pd.read_csv(csv)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise _DataError(
            f"cannot read the data in {data_dir} ({type(exc).__name__}: {exc}); "
            "regenerate it with `python simulations/learners.py`"
        ) from None
    missing = {"learner_id", "seq", "concept", "difficulty", "correct"} - set(df.columns)
    if (
        missing
        or df.empty
        or not set(df["concept"]) <= set(concepts)
        or any((c, d) not in by_level for c in concepts for d in LEVELS)
    ):
        raise _DataError(
            f"{csv} is not a learner data set of {cur.name} (missing columns "
            f"{sorted(missing)}, no rows, unknown concepts or a level without activities)"
        )
    # Held-out check: fit on 80 % of the learners, score on the other 20 % (seeded choice).
    df = df.sort_values(["learner_id", "seq"], kind="stable").reset_index(drop=True)
    X, y = build_training_set(df, concepts)
    ids = df["learner_id"].unique()
    test_ids = np.random.default_rng(seed).choice(ids, size=max(1, len(ids) // 5), replace=False)
    is_test = df["learner_id"].isin(test_ids).to_numpy()
    held_out = fit_mastery_model(X[~is_test], y[~is_test])
    base_rate = df[~is_test].groupby("concept")["correct"].mean()
    baseline = df.loc[is_test, "concept"].map(base_rate).fillna(y[~is_test].mean())
    info = {
        "model": "logistic regression on per-concept answer history",
        "trainedOn": int(len(y)),
        "learners": int(len(ids)),
        "heldOutAuc": round(
            float(roc_auc_score(y[is_test], held_out.predict_proba(X[is_test])[:, 1])), 4
        ),
        "baselineAuc": round(float(roc_auc_score(y[is_test], baseline)), 4),
    }
    model = fit_mastery_model(X, y)
    scaler, logit = model[0], model[-1]  # standardise, then a logistic regression
    weights = logit.coef_[0] / scaler.scale_
    bias = float(logit.intercept_[0] - scaler.mean_ @ weights)
    return _Trained(subject, concepts, activities, by_level, df, model, info, weights, bias)


@dataclass
class _Learner:
    """In-memory state of one learner."""

    history: History
    level: dict[str, int]  # difficulty level 1..3 per concept
    wrong_streak: dict[str, int]  # consecutive wrong answers per concept
    trend: dict[str, int]  # signed run since the last level change (+right, -wrong)
    flagged: set[str] = field(default_factory=set)  # concepts with a struggling insight open
    answers: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # activity key -> times served
    pending: dict[str, Any] | None = None  # the activity get_next_activity served last


def _grade_to_level(grade: int) -> int:
    return 1 if grade <= 3 else 2 if grade <= 6 else 3


def _as_number(text: str) -> Fraction | None:
    """'3/4', '0.75', '1 1/2', '75%' -> Fraction; None if not a number."""
    t = text.strip().replace(",", "")
    scale = Fraction(1)
    if t.endswith("%"):
        t, scale = t[:-1].strip(), Fraction(1, 100)
    parts = t.split()
    try:
        if len(parts) == 2 and "/" in parts[1] and "/" not in parts[0]:
            whole, frac = Fraction(parts[0]), Fraction(parts[1])
            return (whole + frac if whole >= 0 else whole - frac) * scale
        if len(parts) == 1:
            return Fraction(parts[0]) * scale
    except (ValueError, ZeroDivisionError):
        return None
    return None


def answers_match(given: str, expected: str) -> bool:
    """True if ``given`` equals ``expected`` as a number (3/4 = 0.75 = 6/8) or, else, as text."""
    a, b = _as_number(given), _as_number(expected)
    if a is not None and b is not None:
        return a == b
    return " ".join(given.lower().split()) == " ".join(expected.lower().split())


def _data_of(result: Any) -> Any:
    if isinstance(result, AgentResponse):
        return result.data
    return result.get("data") if isinstance(result, dict) else None


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, AgentResponse):
        return result.to_dict()
    return dict(result) if isinstance(result, dict) else {"data": result}


class PersonalizedLearningAgent(Agent):
    """Personalised-learning agent: picks activities, scores answers, reports performance.

    ``seed`` drives the held-out split of ``initialize()`` and the order in which a learner
    sees a level's items. ``data_dir`` holds ``interactions.csv`` and ``curriculum.json``
    (default: the package's ``orchkit/data/learners``). ``target_correct`` is the P(correct) that
    ``get_next_activity`` aims at. A wrong answer signals a struggling learner (insight
    ``struggling_detected``, once per run of wrong answers on a concept) after
    ``wrong_streak`` consecutive wrong answers on the concept, or after 2 when the concept's
    mastery is below ``mastery_threshold``. ``clock`` returns the time in ms (default: wall clock).

    Actions (input fields; ``learnerId`` is optional everywhere, see the module docstring):

    - ``initialize_session`` {subject, gradeLevel 0..12, sessionId}: opens a session; a new
      learner starts at difficulty 1 (grades 0-3), 2 (4-6) or 3 (7-12).
    - ``get_next_activity`` {learnerId}: the concept, at the learner's level, whose predicted
      P(correct) is nearest ``target_correct``; the item's prompt (never its answer).
    - ``process_interaction`` {activityId, response: {answer, responseTimeMs?}}: scores the
      answer (3/4 = 0.75 = 6/8), updates mastery; two right answers in a row raise the
      concept's level, two wrong lower it. An activityId the curriculum lacks is scored as the
      learner's current activity (the one get_next_activity served) and the reasoning says so.
    - ``analyze_performance``, ``generate_recommendation`` {learnerId};
      ``analyze_learning_patterns`` {learnerId, days (default 7)}: answers of the last
      ``days`` days (trend, streaks, ...).
    - ``generate_comprehensive_report`` {}: combines ``context["results"]`` (every earlier
      step of the run) with the learner's performance.
    - ``predict_with_ml`` / ``predict_with_rules`` {features}: P(correct) by the model / by a
      rule (Laplace-smoothed success rate, no ML). ``features`` is an object with keys
      ``FEATURE_KEYS`` (no concept: every concept) or a list
      [accuracy, recentAccuracy, answers, difficulty].
    - ``fetch_external_data`` {source}: ``curriculum_api`` (the local curriculum) or
      ``learner_dataset`` (a summary of the training data).
    """

    ACTIONS = (
        "initialize_session",
        "get_next_activity",
        "process_interaction",
        "analyze_performance",
        "analyze_learning_patterns",
        "generate_comprehensive_report",
        "generate_recommendation",
        "predict_with_ml",
        "predict_with_rules",
        "fetch_external_data",
    )

    def __init__(
        self,
        agent_id: str,
        *,
        capacity: int | None = None,
        seed: int = 0,
        data_dir: str | Path | None = None,
        target_correct: float = 0.7,
        mastery_threshold: float = 0.4,
        wrong_streak: int = 3,
        clock: Callable[[], float] | None = None,
    ):
        super().__init__(agent_id, capacity=capacity)
        if not 0.0 < target_correct < 1.0:
            raise ValueError(
                f"agent '{agent_id}': target_correct must be in (0, 1), got {target_correct!r}"
            )
        if not 0.0 <= mastery_threshold <= 1.0:
            raise ValueError(
                f"agent '{agent_id}': mastery_threshold must be in [0, 1], "
                f"got {mastery_threshold!r}"
            )
        if not isinstance(wrong_streak, int) or wrong_streak < 2:
            raise ValueError(
                f"agent '{agent_id}': wrong_streak must be an int >= 2, got {wrong_streak!r}"
            )
        self.seed = seed
        self.data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
        self.target_correct = target_correct
        self.mastery_threshold = mastery_threshold
        self.wrong_streak = wrong_streak
        self._clock = clock or (lambda: time.time() * 1000.0)
        self._rng = np.random.default_rng(seed)
        self.model = None
        self.model_info: dict[str, Any] = {}
        self.concepts: list[str] = []
        self.subject = ""
        self.activities: dict[str, dict[str, Any]] = {}
        self._by_level: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._dataset = None
        self.learners: dict[str, _Learner] = {}
        self.sessions: dict[str, dict[str, Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Load the data set and train the mastery model (about 0.3 s once scikit-learn is imported;
        agents of one process that share ``data_dir`` and ``seed`` train once)."""
        self._load()

    def _load(self) -> None:
        if self.model is not None:
            return
        csv, cur = self.data_dir / "interactions.csv", self.data_dir / "curriculum.json"
        for path in (csv, cur):
            if not path.is_file():
                raise AgentError(
                    f"agent '{self.agent_id}': data file {path} is missing; regenerate it with "
                    "`python simulations/learners.py` or pass data_dir=",
                    retryable=False,
                )
        try:
            t = _train(
                str(self.data_dir.resolve()),
                csv.stat().st_mtime_ns,
                cur.stat().st_mtime_ns,
                self.seed,
            )
        except _DataError as exc:
            raise AgentError(f"agent '{self.agent_id}': {exc}", retryable=False) from None
        self.subject, self.concepts, self.activities = t.subject, t.concepts, t.activities
        self._by_level, self._dataset, self.model_info = t.by_level, t.dataset, t.model_info
        self.model, self._weights, self._bias = t.model, t.weights, t.bias

    # -- dispatch ----------------------------------------------------------------------------

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        """Serve one attempt of ``action`` (see the class docstring for the inputs)."""
        if action not in self.ACTIONS:
            raise AgentError(
                f"agent '{self.agent_id}': unknown action '{action}' "
                f"(valid actions: {', '.join(self.ACTIONS)})",
                retryable=False,
            )
        if input is None:
            input = {}
        if not isinstance(input, dict):
            self._fail(action, f"input must be an object, got {type(input).__name__}")
        self._load()
        return getattr(self, "_" + action)(action, input, context or {})

    def _fail(self, action: str, problem: str) -> None:
        raise AgentError(f"agent '{self.agent_id}' action '{action}': {problem}", retryable=False)

    def _str(self, action: str, input: dict, key: str, *, required: bool = True) -> str | None:
        if key not in input or input[key] is None:
            if required:
                self._fail(action, f"field '{key}' is missing (expected a non-empty string)")
            return None
        value = input[key]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            self._fail(action, f"field '{key}' must be a non-empty string, got {value!r}")
        return value

    def _learner_id(self, action: str, input: dict, context: dict) -> str:
        given = self._str(action, input, "learnerId", required=False)
        if given is not None:
            return given
        for result in reversed(list((context.get("results") or {}).values())):
            data = _data_of(result)
            if (
                isinstance(data, dict)
                and isinstance(data.get("learnerId"), str)
                and data["learnerId"]
            ):
                return data["learnerId"]
        return DEFAULT_LEARNER_ID

    def learner(self, learner_id: str) -> _Learner:
        """The in-memory state of ``learner_id`` (created on first use)."""
        if learner_id not in self.learners:
            self.learners[learner_id] = _Learner(
                history=History(self.concepts),
                level=dict.fromkeys(self.concepts, 1),
                wrong_streak=dict.fromkeys(self.concepts, 0),
                trend=dict.fromkeys(self.concepts, 0),
            )
        return self.learners[learner_id]

    # -- model -------------------------------------------------------------------------------

    def _predict(self, rows: list[tuple[str, int, dict[str, int]]]) -> list[float]:
        """P(correct) of each (concept, difficulty, counts) row: ``self.model``'s
        ``predict_proba`` computed as one folded linear map (the same numbers, without
        scikit-learn's per-call input checks: ~50x cheaper for a few rows, and this runs
        on the event loop)."""
        X = np.asarray([features_of(self.concepts, c, d, n) for c, d, n in rows], dtype=float)
        return (1.0 / (1.0 + np.exp(-(X @ self._weights + self._bias)))).tolist()

    def mastery(self, learner_id: str) -> dict[str, float]:
        """P(correct) of ``learner_id`` on a medium item of each concept, by the model."""
        st = self.learner(learner_id)
        ps = self._predict([(c, 2, st.history.counts(c)) for c in self.concepts])
        return {c: round(p, 4) for c, p in zip(self.concepts, ps)}

    @staticmethod
    def _evidence_confidence(n: int) -> float:
        return round(0.5 + 0.45 * n / (n + 5), 3)

    # -- actions -----------------------------------------------------------------------------

    def _initialize_session(self, action: str, input: dict, context: dict) -> AgentResponse:
        subject = self._str(action, input, "subject")
        session_id = self._str(action, input, "sessionId")
        grade = input.get("gradeLevel")
        if grade is None:
            self._fail(action, "field 'gradeLevel' is missing (expected an integer 0..12, e.g. 5)")
        if isinstance(grade, str) and grade.strip().isdigit():
            grade = int(grade.strip())
        if isinstance(grade, bool) or not isinstance(grade, int) or not 0 <= grade <= 12:
            self._fail(action, f"field 'gradeLevel' must be an integer 0..12, got {grade!r}")
        learner_id = self._learner_id(action, input, context)
        st = self.learner(learner_id)
        if not st.answers:  # a new learner starts at the level of their grade
            st.level = dict.fromkeys(self.concepts, _grade_to_level(grade))
        known = subject.strip().lower() in {"math", "maths", "mathematics", self.subject}
        self.sessions[session_id] = {
            "sessionId": session_id,
            "subject": subject,
            "gradeLevel": grade,
            "learnerId": learner_id,
            "startedMs": self._clock(),
        }
        note = (
            ""
            if known
            else (
                f"; subject '{subject}' is not in the curriculum, "
                f"so its {self.subject} activities are used"
            )
        )
        return AgentResponse(
            action=action,
            confidence=0.95 if known else 0.5,
            reasoning=f"session {session_id} opened for learner {learner_id} (grade {grade}){note}",
            data={
                "sessionId": session_id,
                "learnerId": learner_id,
                "subject": subject,
                "curriculumSubject": self.subject,
                "gradeLevel": grade,
                "concepts": self.concepts,
                "difficultyLevel": dict(st.level),
                "mastery": self.mastery(learner_id),
                "model": self.model_info,
            },
            next_steps=["get_next_activity"],
        )

    def _get_next_activity(self, action: str, input: dict, context: dict) -> AgentResponse:
        learner_id = self._learner_id(action, input, context)
        st = self.learner(learner_id)
        ps = self._predict([(c, st.level[c], st.history.counts(c)) for c in self.concepts])
        order = sorted(
            range(len(self.concepts)),
            key=lambda i: (
                round(abs(ps[i] - self.target_correct), 6),
                st.history.seen(self.concepts[i]),
                i,
            ),
        )
        best = order[0]
        concept, level = self.concepts[best], st.level[self.concepts[best]]
        items = self._by_level[(concept, level)]
        key = f"{concept}-d{level}"
        if key not in st.served:
            st.served[key] = int(self._rng.integers(len(items)))
        item = items[st.served[key] % len(items)]
        st.served[key] += 1
        activity = {k: item[k] for k in ("activityId", "concept", "difficulty", "prompt")}
        st.pending = item
        p = ps[best]
        return AgentResponse(
            action=action,
            confidence=round(max(0.0, 1.0 - abs(p - self.target_correct)), 3),
            reasoning=(
                f"{concept} at difficulty {level} has predicted P(correct) {p:.2f}, the "
                f"nearest of {len(self.concepts)} concepts to the target {self.target_correct:.2f}"
            ),
            data={
                "learnerId": learner_id,
                "activity": activity,
                "predictedCorrect": round(p, 4),
                "targetCorrect": self.target_correct,
                "alternatives": [
                    {
                        "concept": self.concepts[i],
                        "difficulty": st.level[self.concepts[i]],
                        "predictedCorrect": round(ps[i], 4),
                    }
                    for i in order[1:3]
                ],
            },
            next_steps=["process_interaction"],
        )

    def _process_interaction(self, action: str, input: dict, context: dict) -> AgentResponse:
        activity_id = self._str(action, input, "activityId")
        response = input.get("response")
        if response is None:
            self._fail(action, "field 'response' is missing (expected an object {answer: ...})")
        if not isinstance(response, dict):
            self._fail(
                action, f"field 'response' must be an object {{answer: ...}}, got {response!r}"
            )
        answer = response.get("answer")
        if answer is None:
            self._fail(action, "field 'response.answer' is missing")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            self._fail(
                action, f"field 'response.answer' must be a string or a number, got {answer!r}"
            )
        rt = response.get("responseTimeMs")
        if rt is not None and (isinstance(rt, bool) or not isinstance(rt, (int, float)) or rt < 0):
            self._fail(action, f"field 'response.responseTimeMs' must be a number >= 0, got {rt!r}")
        learner_id = self._learner_id(action, input, context)
        st = self.learner(learner_id)
        item, note = self.activities.get(activity_id), ""
        if item is None:
            if st.pending is None:
                examples = ", ".join(list(self.activities)[:3])
                self._fail(
                    action,
                    f"field 'activityId': '{activity_id}' is not in the curriculum and "
                    f"learner {learner_id} has no current activity (ids look like {examples}; "
                    "call get_next_activity first)",
                )
            item = st.pending
            note = (
                f" (activityId '{activity_id}' is not in the curriculum: "
                f"scored as the learner's current activity {item['activityId']})"
            )
        concept, level = item["concept"], int(item["difficulty"])
        before = self._predict([(concept, level, st.history.counts(concept))])[0]
        correct = answers_match(str(answer), item["answer"])
        st.history.add(concept, correct)
        st.answers.append(
            {
                "activityId": item["activityId"],
                "concept": concept,
                "difficulty": level,
                "correct": correct,
                "timestampMs": self._clock(),
                "responseTimeMs": None if rt is None else float(rt),
            }
        )
        if st.pending is not None and st.pending["activityId"] == item["activityId"]:
            st.pending = None
        # Adapt the difficulty: two right answers in a row -> up, two wrong -> down.
        st.trend[concept] = (
            max(st.trend[concept], 0) + 1 if correct else min(st.trend[concept], 0) - 1
        )
        st.wrong_streak[concept] = 0 if correct else st.wrong_streak[concept] + 1
        change = "same"
        if st.trend[concept] >= 2 and st.level[concept] < 3:
            st.level[concept], st.trend[concept], change = st.level[concept] + 1, 0, "up"
        elif st.trend[concept] <= -2 and st.level[concept] > 1:
            st.level[concept], st.trend[concept], change = st.level[concept] - 1, 0, "down"
        mastery = self._predict([(concept, 2, st.history.counts(concept))])[0]
        streak = st.wrong_streak[concept]
        struggling = not correct and (
            streak >= self.wrong_streak or (streak >= 2 and mastery < self.mastery_threshold)
        )
        if correct:
            st.flagged.discard(concept)
        if struggling and concept not in st.flagged:
            st.flagged.add(concept)
            self.emit(
                "insight",
                {
                    "type": "struggling_detected",
                    "learnerId": learner_id,
                    "data": {
                        "learnerId": learner_id,
                        "concept": concept,
                        "difficultyLevel": st.level[concept],
                        "mastery": round(mastery, 4),
                        "consecutiveWrong": streak,
                        "activityId": item["activityId"],
                        "suggestedIntervention": "progressive_hints",
                    },
                },
            )
        recs = []
        if struggling:
            recs = [f"Offer progressive hints on {concept}", f"Review a worked {concept} example"]
        elif change == "up":
            recs = [f"Move on to difficulty {st.level[concept]} {concept} items"]
        return AgentResponse(
            action=action,
            confidence=self._evidence_confidence(st.history.seen(concept)),
            reasoning=(
                f"answer {'correct' if correct else 'wrong'} on {item['activityId']}{note}; "
                f"{concept} mastery {before:.2f} -> {mastery:.2f}, difficulty {change}"
                + ("; learner is struggling" if struggling else "")
            ),
            data={
                "learnerId": learner_id,
                "activityId": item["activityId"],
                "concept": concept,
                "answer": str(answer),
                "correct": correct,
                "score": int(correct),
                "expectedAnswer": item["answer"],
                "predictedCorrectBefore": round(before, 4),
                "mastery": round(mastery, 4),
                "difficultyLevel": st.level[concept],
                "difficultyChange": change,
                "consecutiveWrong": streak,
                "struggling": struggling,
            },
            recommendations=recs or None,
            next_steps=["get_next_activity"],
        )

    def _performance(self, learner_id: str) -> dict[str, Any]:
        st = self.learner(learner_id)
        mastery = self.mastery(learner_id)
        concepts = {}
        for c in self.concepts:
            right, wrong = st.history.correct[c], st.history.wrong[c]
            concepts[c] = {
                "answers": right + wrong,
                "correct": right,
                "accuracy": round(right / (right + wrong), 4) if right + wrong else None,
                "mastery": mastery[c],
                "difficultyLevel": st.level[c],
            }
        n = len(st.answers)
        right = sum(a["correct"] for a in st.answers)
        return {
            "learnerId": learner_id,
            "answers": n,
            "correct": right,
            "accuracy": round(right / n, 4) if n else None,
            "meanMastery": round(float(np.mean(list(mastery.values()))), 4),
            "strengths": [c for c in self.concepts if mastery[c] >= 0.8],
            "weaknesses": sorted((c for c in self.concepts if mastery[c] < 0.5), key=mastery.get),
            "concepts": concepts,
        }

    def _analyze_performance(self, action: str, input: dict, context: dict) -> AgentResponse:
        learner_id = self._learner_id(action, input, context)
        perf = self._performance(learner_id)
        recs = [
            f"Practise {c} (mastery {perf['concepts'][c]['mastery']:.2f})"
            for c in perf["weaknesses"][:3]
        ]
        acc = (
            "no answers yet"
            if perf["accuracy"] is None
            else f"accuracy {perf['accuracy']:.0%} over {perf['answers']} answers"
        )
        return AgentResponse(
            action=action,
            confidence=self._evidence_confidence(perf["answers"]),
            reasoning=(
                f"learner {learner_id}: {acc}; mean mastery {perf['meanMastery']:.2f}; "
                f"strengths {perf['strengths'] or 'none yet'}, "
                f"weaknesses {perf['weaknesses'] or 'none'}"
            ),
            data=perf,
            recommendations=recs or None,
            next_steps=["generate_recommendation"],
        )

    def _analyze_learning_patterns(self, action: str, input: dict, context: dict) -> AgentResponse:
        days = input.get("days", 7)
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 36_500:
            self._fail(action, f"field 'days' must be a number of days in (0, 36500], got {days!r}")
        learner_id = self._learner_id(action, input, context)
        now = self._clock()
        since = now - days * DAY_MS
        window = [a for a in self.learner(learner_id).answers if a["timestampMs"] >= since]
        data: dict[str, Any] = {
            "learnerId": learner_id,
            "days": days,
            "fromMs": since,
            "toMs": now,
            "answers": len(window),
        }
        if not window:
            return AgentResponse(
                action=action,
                confidence=0.2,
                data=data,
                reasoning=f"learner {learner_id} has no answers in the last {days} days",
                recommendations=["Start with a short practice session"],
                next_steps=["get_next_activity"],
            )
        correct = np.array([a["correct"] for a in window], dtype=float)
        half = len(window) // 2
        first, second = (
            (correct[:half].mean(), correct[half:].mean()) if half else (correct.mean(),) * 2
        )
        trend = (
            "improving"
            if second - first > 0.1
            else "declining"
            if first - second > 0.1
            else "steady"
        )
        longest = run = 0
        for ok in correct:
            run = 0 if ok else run + 1
            longest = max(longest, run)
        by = lambda key: {  # noqa: E731 - accuracy grouped by a field
            str(v): {"answers": len(g), "accuracy": round(sum(a["correct"] for a in g) / len(g), 4)}
            for v in dict.fromkeys(a[key] for a in window)
            for g in [[a for a in window if a[key] == v]]
        }
        times = [a["responseTimeMs"] for a in window if a["responseTimeMs"] is not None]
        data.update(
            {
                "accuracy": round(float(correct.mean()), 4),
                "trend": trend,
                "accuracyFirstHalf": round(float(first), 4),
                "accuracySecondHalf": round(float(second), 4),
                "longestWrongStreak": longest,
                "byConcept": by("concept"),
                "byDifficulty": by("difficulty"),
                "meanResponseTimeMs": round(float(np.mean(times)), 1) if times else None,
                "activeDays": len({int(a["timestampMs"] // DAY_MS) for a in window}),
            }
        )
        practised = data["byConcept"]
        recs = [
            f"Practise {c}: not seen in the last {days} days"
            for c in self.concepts
            if c not in practised
        ][:2]
        if trend == "declining":
            recs.insert(0, "Accuracy is falling: lower the difficulty and add a review")
        return AgentResponse(
            action=action,
            confidence=self._evidence_confidence(len(window)),
            data=data,
            reasoning=(
                f"{len(window)} answers in the last {days} days: accuracy {correct.mean():.0%}, "
                f"{trend} ({first:.0%} -> {second:.0%}), longest wrong streak {longest}"
            ),
            recommendations=recs or None,
            next_steps=["generate_recommendation"],
        )

    def _generate_recommendation(self, action: str, input: dict, context: dict) -> AgentResponse:
        learner_id = self._learner_id(action, input, context)
        st = self.learner(learner_id)
        perf = self._performance(learner_id)
        ps = self._predict([(c, st.level[c], st.history.counts(c)) for c in self.concepts])
        focus = min(range(len(self.concepts)), key=lambda i: (abs(ps[i] - self.target_correct), i))
        recs = [
            {
                "type": "practice",
                "concept": self.concepts[focus],
                "difficulty": st.level[self.concepts[focus]],
                "reason": (
                    f"predicted P(correct) {ps[focus]:.2f} is nearest the target "
                    f"{self.target_correct:.2f}"
                ),
            }
        ]
        for c in perf["weaknesses"]:
            if c != self.concepts[focus]:
                recs.append(
                    {
                        "type": "review",
                        "concept": c,
                        "difficulty": 1,
                        "reason": f"mastery {perf['concepts'][c]['mastery']:.2f} is below 0.5",
                    }
                )
        for c in perf["strengths"]:
            if st.level[c] < 3:
                recs.append(
                    {
                        "type": "advance",
                        "concept": c,
                        "difficulty": st.level[c] + 1,
                        "reason": (
                            f"mastery {perf['concepts'][c]['mastery']:.2f}: ready for harder items"
                        ),
                    }
                )
        return AgentResponse(
            action=action,
            confidence=self._evidence_confidence(perf["answers"]),
            reasoning=(
                f"{len(recs)} recommendations for learner {learner_id} from the mastery model"
            ),
            data={
                "learnerId": learner_id,
                "recommendations": recs,
                "mastery": self.mastery(learner_id),
            },
            recommendations=[
                f"{r['type']} {r['concept']} at difficulty {r['difficulty']}" for r in recs
            ],
            next_steps=["get_next_activity"],
        )

    def _generate_comprehensive_report(
        self, action: str, input: dict, context: dict
    ) -> AgentResponse:
        learner_id = self._learner_id(action, input, context)
        results = context.get("results") or {}
        sections, recs, confidences = {}, [], []
        for step_id, result in results.items():
            r = _as_dict(result)
            sections[step_id] = r
            if isinstance(r.get("confidence"), (int, float)):
                confidences.append(float(r["confidence"]))
            for rec in r.get("recommendations") or []:
                if rec not in recs:
                    recs.append(rec)
        perf = self._performance(learner_id)
        confidence = (
            float(np.mean(confidences))
            if confidences
            else self._evidence_confidence(perf["answers"])
        )
        steps = (
            ", ".join(f"{s} ({sections[s].get('action', '?')})" for s in sections)
            or "no earlier steps"
        )
        return AgentResponse(
            action=action,
            confidence=round(confidence, 3),
            reasoning=(
                f"report for learner {learner_id} combining {len(sections)} step results: {steps}"
            ),
            data={
                "learnerId": learner_id,
                "combinedSteps": list(sections),
                "sections": sections,
                "performance": perf,
                "meanConfidence": round(confidence, 3),
            },
            recommendations=recs or [f"Practise {c}" for c in perf["weaknesses"][:3]] or None,
            next_steps=["generate_recommendation"],
        )

    def _parse_features(
        self, action: str, input: dict, context: dict
    ) -> tuple[str, list[str], int, dict, list[str]]:
        """(learner id, concepts, difficulty, counts, ignored keys) of a predict_* input."""
        features = input.get("features")
        form = (
            f"an object with keys {', '.join(FEATURE_KEYS)}, or a list "
            f"[{', '.join(FEATURE_VECTOR)}] such as [0.62, 0.4, 3, 1]"
        )
        if features is None:
            self._fail(action, f"field 'features' is missing (expected {form})")
        if isinstance(features, list):
            features = self._vector_features(action, features, form)
        if not isinstance(features, dict):
            self._fail(action, f"field 'features' must be {form}, got {features!r}")
        learner_id = self._learner_id(action, input, context)
        concept = features.get("concept")
        if concept is not None and concept not in self.concepts:
            self._fail(
                action,
                f"field 'features.concept' must be one of {', '.join(self.concepts)}, "
                f"got {concept!r}",
            )
        difficulty = features.get("difficulty", 2)
        if isinstance(difficulty, bool) or difficulty not in LEVELS:
            self._fail(action, f"field 'features.difficulty' must be 1, 2 or 3, got {difficulty!r}")
        given = {}
        for key in FEATURE_KEYS[2:]:
            if key in features:
                v = features[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
                    self._fail(
                        action, f"field 'features.{key}' must be a whole number >= 0, got {v!r}"
                    )
                given[key] = int(v)
        if given.get("recentCorrect", 0) + given.get("recentIncorrect", 0) > RECENT:
            self._fail(
                action,
                f"fields 'features.recentCorrect' + 'features.recentIncorrect' count the last "
                f"{RECENT} answers, so they must add up to at most {RECENT}",
            )
        ignored = sorted(k for k in features if k not in FEATURE_KEYS)
        return (
            learner_id,
            [concept] if concept else list(self.concepts),
            int(difficulty),
            given,
            ignored,
        )

    def _vector_features(self, action: str, vector: list, form: str) -> dict[str, Any]:
        """[accuracy 0..1, recentAccuracy 0..1, answers >= 0, difficulty 1..3] -> feature dict.

        ``answers`` prior answers on the concept, ``accuracy`` of them correct; the last
        min(3, answers) of them were correct with ``recentAccuracy``; no concept is named.
        """
        if len(vector) != len(FEATURE_VECTOR) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            for v in vector
        ):
            self._fail(action, f"field 'features' must be {form}, got {vector!r}")
        acc, recent_acc, answers, difficulty = vector
        for i, (name, ok) in enumerate(
            [
                ("accuracy", 0 <= acc <= 1),
                ("recentAccuracy", 0 <= recent_acc <= 1),
                ("answers", answers >= 0 and answers == int(answers)),
                ("difficulty", difficulty in LEVELS),
            ]
        ):
            if not ok:
                self._fail(
                    action,
                    f"field 'features[{i}]' ({name}) is out of range: {vector[i]!r} "
                    f"(accuracies in [0, 1], answers a whole number >= 0, difficulty 1, 2 or 3)",
                )
        answers, right = int(answers), int(round(acc * answers))
        recent = min(RECENT, answers)
        recent_right = int(round(recent_acc * recent))
        return {
            "difficulty": int(difficulty),
            "priorCorrect": right,
            "priorIncorrect": answers - right,
            "recentCorrect": recent_right,
            "recentIncorrect": recent - recent_right,
        }

    def _counts(
        self, learner_id: str, concept: str, given: dict[str, int], explicit_learner: bool
    ) -> dict[str, int]:
        """Answer counts of one predict_* row: the named learner's (else zeros), overridden
        by ``given``."""
        base = self.learner(learner_id).history.counts(concept) if explicit_learner else None
        n = dict(base) if base is not None else dict.fromkeys(FEATURE_KEYS[2:], 0)
        n.update({k: v for k, v in given.items() if k in ("priorCorrect", "priorIncorrect")})
        if ("priorCorrect" in given or "priorIncorrect" in given) and not (
            "recentCorrect" in given or "recentIncorrect" in given
        ):
            total = (
                n["priorCorrect"] + n["priorIncorrect"]
            )  # estimate the last answers from the counts
            k = min(RECENT, total)
            n["recentCorrect"] = round(k * n["priorCorrect"] / total) if total else 0
            n["recentIncorrect"] = k - n["recentCorrect"]
        for key in ("recentCorrect", "recentIncorrect"):
            n[key] = given.get(key, n[key])
        for prior, overall in (
            ("priorCorrect", "overallCorrect"),
            ("priorIncorrect", "overallIncorrect"),
        ):
            default = n[prior] + (base[overall] - base[prior] if base is not None else 0)
            n[overall] = max(given.get(overall, default), n[prior])
        return n

    def _predict_with_ml(self, action: str, input: dict, context: dict) -> AgentResponse:
        learner_id, concepts, difficulty, given, ignored = self._parse_features(
            action, input, context
        )
        explicit = "learnerId" in input
        rows = [(c, difficulty, self._counts(learner_id, c, given, explicit)) for c in concepts]
        ps = self._predict(rows)
        preds = {c: round(p, 4) for c, p in zip(concepts, ps)}
        mean = float(np.mean(ps))
        note = (
            f"; ignored unknown features {ignored} (known: {', '.join(FEATURE_KEYS)})"
            if ignored
            else ""
        )
        return AgentResponse(
            action=action,
            confidence=round(max(mean, 1 - mean), 3),
            reasoning=(
                f"logistic-regression mastery model (held-out AUC {self.model_info['heldOutAuc']}) "
                f"predicts P(correct) {mean:.2f} at difficulty {difficulty}{note}"
            ),
            data={
                "prediction": round(mean, 4),
                "predictedCorrect": mean >= 0.5,
                "predictions": preds,
                "difficulty": difficulty,
                "features": {c: r[2] for c, r in zip(concepts, rows)},
                "ignoredFeatures": ignored,
                "method": "ml",
                "model": self.model_info,
            },
            next_steps=["get_next_activity"],
        )

    def _predict_with_rules(self, action: str, input: dict, context: dict) -> AgentResponse:
        learner_id, concepts, difficulty, given, ignored = self._parse_features(
            action, input, context
        )
        explicit = "learnerId" in input
        preds, evidence = {}, 0
        for c in concepts:
            n = self._counts(learner_id, c, given, explicit)
            right, wrong = n["priorCorrect"], n["priorIncorrect"]
            p = (right + 1) / (right + wrong + 2)  # Laplace-smoothed success rate
            recent = n["recentCorrect"] + n["recentIncorrect"]
            if recent:
                p = 0.5 * p + 0.5 * n["recentCorrect"] / recent
            p += {1: 0.1, 2: 0.0, 3: -0.15}[difficulty]
            preds[c] = round(min(0.95, max(0.05, p)), 4)
            evidence += right + wrong
        mean = float(np.mean(list(preds.values())))
        note = f"; ignored unknown features {ignored}" if ignored else ""
        return AgentResponse(
            action=action,
            confidence=round(min(0.7, 0.4 + 0.3 * evidence / (evidence + 10)), 3),
            reasoning=(
                "rule-based estimate (no ML): Laplace-smoothed success rate, blended with the "
                f"last answers, shifted by difficulty: P(correct) {mean:.2f}{note}"
            ),
            data={
                "prediction": round(mean, 4),
                "predictedCorrect": mean >= 0.5,
                "predictions": preds,
                "difficulty": difficulty,
                "ignoredFeatures": ignored,
                "method": "rules",
            },
            next_steps=["get_next_activity"],
        )

    def _fetch_external_data(self, action: str, input: dict, context: dict) -> AgentResponse:
        source = self._str(action, input, "source")
        if source not in DATA_SOURCES:
            self._fail(
                action, f"field 'source' must be one of {', '.join(DATA_SOURCES)}, got {source!r}"
            )
        if source == "curriculum_api":
            acts = [
                {k: a[k] for k in ("activityId", "concept", "difficulty", "prompt")}
                for a in self.activities.values()
            ]
            data = {
                "source": source,
                "subject": self.subject,
                "concepts": self.concepts,
                "activities": acts,
                "count": len(acts),
            }
            why = (
                f"{len(acts)} {self.subject} activities over {len(self.concepts)} concepts "
                "from the local curriculum"
            )
        else:
            df = self._dataset
            data = {
                "source": source,
                "answers": int(len(df)),
                "learners": int(df["learner_id"].nunique()),
                "accuracyByConcept": {
                    c: round(float(v), 4)
                    for c, v in df.groupby("concept")["correct"].mean().items()
                },
                "model": self.model_info,
            }
            why = f"summary of the shipped data set ({len(df)} answers)"
        return AgentResponse(
            action=action, confidence=1.0, reasoning=why + f" ({self.data_dir})", data=data
        )
