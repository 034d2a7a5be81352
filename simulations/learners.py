"""A learner model with known ground truth, and the generator of the learning agent's data set.

The model is Bayesian Knowledge Tracing (BKT) per concept, with learner ability and item
difficulty:

* Concepts ``CONCEPTS`` each have ``p_init`` (P the learner knows it at the start),
  ``p_learn`` (P of learning it from one practice item), ``p_guess`` and ``p_slip``.
* Each learner has an ability ``theta ~ Normal(0, ABILITY_SD)`` that shifts, on the logit
  scale, ``p_init`` by ``theta`` and ``p_learn`` by ``0.7 * theta``.
* Items have a difficulty 1 (easy), 2 (medium) or 3 (hard), which scales guessing by
  ``GUESS_FACTOR[d]`` and slipping by ``SLIP_FACTOR[d]``.
* P(correct) = 1 - slip_d if the concept is mastered, else guess_d. After every item an
  unmastered concept becomes mastered with probability p_learn (mastery is never lost).
* The simulated tutor picks a concept and a difficulty uniformly at random for every item.
  Learners work in daily sessions of ``SESSION_ITEMS`` items; response times are lognormal
  (median 20 s when mastered, 35 s otherwise, times 0.8 / 1.0 / 1.3 by difficulty).

``generate(n_learners, n_items, seed)`` returns one row per answer (see ``COLUMNS``), with
the latent truth (``ability``, ``mastered``, ``p_correct``) next to what an agent could
observe. ``curriculum(seed)`` builds the activity catalogue (arithmetic items with exact
answers) that the data set's ``activity_id`` refers to.

Regenerate the shipped data set (``orchkit/data/learners/``: package data, as the agent
reads it at run time; ``data/learners/`` links to it) with::

    python simulations/learners.py            # --learners 250 --items 40 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

SUBJECT = "mathematics"


@dataclass(frozen=True)
class ConceptParams:
    """Ground-truth BKT parameters of one concept (probabilities in [0, 1])."""

    p_init: float
    p_learn: float
    p_guess: float
    p_slip: float


CONCEPTS: dict[str, ConceptParams] = {
    "addition": ConceptParams(p_init=0.60, p_learn=0.25, p_guess=0.25, p_slip=0.05),
    "subtraction": ConceptParams(p_init=0.50, p_learn=0.20, p_guess=0.20, p_slip=0.07),
    "multiplication": ConceptParams(p_init=0.35, p_learn=0.15, p_guess=0.15, p_slip=0.08),
    "division": ConceptParams(p_init=0.25, p_learn=0.12, p_guess=0.15, p_slip=0.10),
    "fractions": ConceptParams(p_init=0.15, p_learn=0.10, p_guess=0.10, p_slip=0.12),
    "percentages": ConceptParams(p_init=0.10, p_learn=0.08, p_guess=0.10, p_slip=0.15),
}
ABILITY_SD = 0.8
GUESS_FACTOR = {1: 1.4, 2: 1.0, 3: 0.6}
SLIP_FACTOR = {1: 0.6, 2: 1.0, 3: 1.6}
SESSION_ITEMS = 10
DAY_MS = 86_400_000
ITEMS_PER_LEVEL = 5

COLUMNS = [
    "learner_id",
    "seq",
    "concept",
    "difficulty",
    "activity_id",
    "correct",
    "response_time_ms",
    "timestamp_ms",
    "ability",
    "mastered",
    "p_correct",
]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def p_correct(concept: str, difficulty: int, mastered: bool) -> float:
    """Ground-truth P(correct) of one answer (difficulty 1..3)."""
    c = CONCEPTS[concept]
    if mastered:
        return 1.0 - min(0.9, c.p_slip * SLIP_FACTOR[difficulty])
    return min(0.9, c.p_guess * GUESS_FACTOR[difficulty])


def activity_id(concept: str, difficulty: int, index: int) -> str:
    """Catalogue id of item ``index`` (0-based) of a concept at a difficulty, e.g.
    ``fractions-d2-03``."""
    return f"{concept}-d{difficulty}-{index + 1:02d}"


def generate(
    n_learners: int = 250,
    n_items: int = 40,
    seed: int = 0,
    *,
    learn_factor: np.ndarray | None = None,
) -> pd.DataFrame:
    """Simulate ``n_learners`` learners answering ``n_items`` items each; one row per answer.

    ``learn_factor`` (optional, shape (n_learners, n_items)) multiplies the learner's
    P(learning the concept) right after each item: e.g. 1 where the tutor answered and 1/3
    where it timed out. Without it the draws, and so the data set, are as they always were.

    Columns (``COLUMNS``): learner_id, seq (0-based per learner), concept, difficulty (1..3),
    activity_id, correct (0/1), response_time_ms, timestamp_ms (ms since the learner's first
    session; one session of ``SESSION_ITEMS`` items per day), and the latent truth: ability
    (theta), mastered (0/1, before the answer), p_correct (true probability of a correct answer).
    """
    if n_learners < 1 or n_items < 1:
        raise ValueError(f"n_learners and n_items must be >= 1, got {n_learners}, {n_items}")
    if learn_factor is not None:
        learn_factor = np.asarray(learn_factor, dtype=float)
        if learn_factor.shape != (n_learners, n_items) or not np.all(learn_factor >= 0):
            raise ValueError(
                f"learn_factor must be ({n_learners}, {n_items}) factors >= 0, "
                f"got shape {learn_factor.shape}"
            )
    rng = np.random.default_rng(seed)
    names = list(CONCEPTS)
    rows = []
    for learner in range(n_learners):
        theta = float(rng.normal(0.0, ABILITY_SD))
        mastered = {
            c: bool(rng.random() < _sigmoid(_logit(p.p_init) + theta)) for c, p in CONCEPTS.items()
        }
        p_learn = {c: _sigmoid(_logit(p.p_learn) + 0.7 * theta) for c, p in CONCEPTS.items()}
        clock_ms = 0
        for seq in range(n_items):
            if seq % SESSION_ITEMS == 0:  # a new session starts at 16:00 on the next day
                clock_ms = (seq // SESSION_ITEMS) * DAY_MS + 16 * 3_600_000
            concept = names[int(rng.integers(len(names)))]
            difficulty = int(rng.integers(1, 4))
            was_mastered = mastered[concept]
            p = p_correct(concept, difficulty, was_mastered)
            correct = bool(rng.random() < p)
            median_s = (20.0 if was_mastered else 35.0) * {1: 0.8, 2: 1.0, 3: 1.3}[difficulty]
            rt_ms = int(round(1000 * median_s * math.exp(rng.normal(0.0, 0.4))))
            clock_ms += rt_ms
            rows.append(
                (
                    f"L{learner + 1:04d}",
                    seq,
                    concept,
                    difficulty,
                    activity_id(concept, difficulty, int(rng.integers(ITEMS_PER_LEVEL))),
                    int(correct),
                    rt_ms,
                    clock_ms,
                    round(theta, 4),
                    int(was_mastered),
                    round(p, 4),
                )
            )
            factor = 1.0 if learn_factor is None else learn_factor[learner, seq]
            if not was_mastered and rng.random() < p_learn[concept] * factor:
                mastered[concept] = True
    return pd.DataFrame(rows, columns=COLUMNS)


def bkt_cohort(
    n_learners: int,
    n_opportunities: int,
    *,
    prior: float = 0.2,
    learn: float | np.ndarray = 0.15,
    guess: float = 0.2,
    slip: float = 0.1,
    forget: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Learners of one skill drawn from plain BKT (no ability, no item difficulty), one row
    per answer: learner_id, skill ("skill"), opportunity (0-based), correct (0/1), ts_ms
    (opportunity x 60 000) and the truth ``mastered`` (before the answer). ``learn`` may be
    an array (n_learners, n_opportunities): P(learning) right after each answer (e.g.
    lower where the tutor timed out). Vectorised over learners; seeded."""
    rng = np.random.default_rng(seed)
    learn_at = np.broadcast_to(np.asarray(learn, dtype=float), (n_learners, n_opportunities))
    known = rng.random(n_learners) < prior
    mastered = np.empty((n_learners, n_opportunities), dtype=np.int8)
    correct = np.empty((n_learners, n_opportunities), dtype=np.int8)
    for t in range(n_opportunities):
        mastered[:, t] = known
        u = rng.random(n_learners)
        correct[:, t] = np.where(known, u >= slip, u < guess)
        v = rng.random(n_learners)
        known = np.where(known, v >= forget, v < learn_at[:, t])
    return pd.DataFrame(
        {
            "learner_id": np.repeat([f"B{i:05d}" for i in range(n_learners)], n_opportunities),
            "skill": "skill",
            "opportunity": np.tile(np.arange(n_opportunities), n_learners),
            "correct": correct.ravel(),
            "ts_ms": np.tile(np.arange(n_opportunities) * 60_000.0, n_learners),
            "mastered": mastered.ravel(),
        }
    )


def _item(concept: str, difficulty: int, rng: np.random.Generator) -> tuple[str, str]:
    """(prompt, exact answer) of one arithmetic item."""
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731 - inclusive bounds
    hi = {1: 9, 2: 99, 3: 999}[difficulty]
    if concept == "addition":
        a, b = r(1, hi), r(1, hi)
        return f"What is {a} + {b}?", str(a + b)
    if concept == "subtraction":
        a, b = r(1, hi), r(1, hi)
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", str(a - b)
    if concept == "multiplication":
        a, b = r(2, {1: 9, 2: 12, 3: 99}[difficulty]), r(2, {1: 9, 2: 19, 3: 99}[difficulty])
        return f"What is {a} × {b}?", str(a * b)
    if concept == "division":
        b, q = r(2, {1: 9, 2: 12, 3: 25}[difficulty]), r(2, {1: 9, 2: 20, 3: 99}[difficulty])
        return f"What is {b * q} ÷ {b}?", str(q)
    if concept == "fractions":
        d1 = r(2, 9)
        d2 = d1 if difficulty == 1 else r(2, 9)
        n1, n2 = r(1, d1 - 1 if d1 > 2 else 1), r(1, d2 - 1 if d2 > 2 else 1)
        if difficulty == 3:
            w = r(1, 3)
            total = w + Fraction(n1, d1) + Fraction(n2, d2)
            return f"What is {w} {n1}/{d1} + {n2}/{d2}? (as a fraction)", str(total)
        return f"What is {n1}/{d1} + {n2}/{d2}? (as a fraction)", str(
            Fraction(n1, d1) + Fraction(n2, d2)
        )
    if concept == "percentages":
        pct = (
            [10, 25, 50][r(0, 2)]
            if difficulty == 1
            else r(1, 19) * 5
            if difficulty == 2
            else r(1, 99)
        )
        base = r(1, 20) * 20
        return f"What is {pct}% of {base}?", str(Fraction(pct * base, 100))
    raise ValueError(f"unknown concept {concept!r}")


def curriculum(seed: int = 0) -> dict:
    """The activity catalogue: ``{"subject", "concepts": [...], "activities": [...]}``.

    Each activity: ``activityId`` (see ``activity_id``), ``concept``, ``difficulty`` (1..3),
    ``prompt`` and its exact ``answer`` (an integer or a reduced fraction, as text).
    """
    rng = np.random.default_rng(seed)
    activities = []
    for concept in CONCEPTS:
        for difficulty in (1, 2, 3):
            for i in range(ITEMS_PER_LEVEL):
                prompt, answer = _item(concept, difficulty, rng)
                activities.append(
                    {
                        "activityId": activity_id(concept, difficulty, i),
                        "concept": concept,
                        "difficulty": difficulty,
                        "prompt": prompt,
                        "answer": answer,
                    }
                )
    return {"subject": SUBJECT, "concepts": list(CONCEPTS), "activities": activities}


def main(argv: list[str] | None = None) -> None:
    """Command line: write ``interactions.csv`` and ``curriculum.json`` into ``--out``."""
    default_out = Path(__file__).resolve().parent.parent / "orchkit" / "data" / "learners"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=250)
    ap.add_argument("--items", type=int, default=40, help="answers per learner")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=default_out)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    df = generate(args.learners, args.items, args.seed)
    df.to_csv(args.out / "interactions.csv", index=False)
    (args.out / "curriculum.json").write_text(json.dumps(curriculum(args.seed), indent=1) + "\n")
    print(f"wrote {len(df)} answers of {args.learners} learners and the curriculum to {args.out}")


if __name__ == "__main__":
    main()
