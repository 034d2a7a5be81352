"""The personalised-learning agent: a scikit-learn model of learner mastery per concept.

The model is a logistic regression (in the spirit of Performance Factors Analysis) that
predicts P(the learner answers the next item correctly) from the learner's history:
the item's concept and difficulty, prior correct / incorrect answers on that concept, the
last answers on it, and the learner's overall record. It is trained in ``initialize()`` on
the data set that ``simulations/learners.py`` generates from a BKT learner model with known
ground truth (``data/learners/interactions.csv``; activities in ``curriculum.json``).

"Mastery" of a concept is the model's P(correct) on a medium (difficulty 2) item of it.
Per-learner state (answers, mastery, difficulty level per concept) lives in memory.
A step without ``learnerId`` acts for the learner named by an earlier step of the same plan
run (``context["results"][...].data["learnerId"]``), else for ``DEFAULT_LEARNER_ID``.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._agent import Agent, AgentResponse
from .._errors import AgentError

DEFAULT_LEARNER_ID = "default-learner"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "learners"
DAY_MS = 86_400_000
LEVELS = (1, 2, 3)
RECENT = 3  # answers per concept that the "recent" features look at
FEATURE_KEYS = ("concept", "difficulty", "priorCorrect", "priorIncorrect", "recentCorrect",
                "recentIncorrect", "overallCorrect", "overallIncorrect")
DATA_SOURCES = ("curriculum_api", "learner_dataset")


class _History:
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

    def counts(self, concept: str) -> dict[str, int]:
        recent = self.recent[concept]
        return {"priorCorrect": self.correct[concept], "priorIncorrect": self.wrong[concept],
                "recentCorrect": sum(recent), "recentIncorrect": len(recent) - sum(recent),
                "overallCorrect": sum(self.correct.values()),
                "overallIncorrect": sum(self.wrong.values())}


def _features(concepts: list[str], concept: str, difficulty: int, n: dict[str, int]) -> list[float]:
    """Feature vector of one prediction (see ``FEATURE_KEYS`` for ``n``)."""
    onehot = [float(c == concept) for c in concepts]
    succ, fail = math.log1p(n["priorCorrect"]), math.log1p(n["priorIncorrect"])
    recent_n = n["recentCorrect"] + n["recentIncorrect"]
    total = n["overallCorrect"] + n["overallIncorrect"]
    return [
        *onehot, float(difficulty == 1), float(difficulty == 3),
        *(succ * o for o in onehot), *(fail * o for o in onehot),
        (n["recentCorrect"] + 0.5) / (recent_n + 1.0), float(recent_n > 0),
        (n["overallCorrect"] + 1.0) / (total + 2.0), math.log1p(total),
    ]


def build_training_set(df, concepts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a data set of answers (columns learner_id, seq, concept, difficulty, correct).

    Each row's features use only that learner's earlier answers.
    """
    X, y = [], []
    ordered = df.sort_values(["learner_id", "seq"], kind="stable")
    learner, hist = None, None
    for lid, concept, diff, correct in zip(ordered["learner_id"], ordered["concept"],
                                           ordered["difficulty"], ordered["correct"]):
        if lid != learner:
            learner, hist = lid, _History(concepts)
        X.append(_features(concepts, concept, int(diff), hist.counts(concept)))
        y.append(int(correct))
        hist.add(concept, bool(correct))
    return np.asarray(X, dtype=float), np.asarray(y, dtype=int)


def fit_mastery_model(X: np.ndarray, y: np.ndarray):
    """A scikit-learn pipeline (standardise, logistic regression) fitted to (X, y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y)
