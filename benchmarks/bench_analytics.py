"""Learning analytics speed and accuracy (SPEC §18):
  (a) ``ok.analytics.fit_bkt`` on 10,000 learners x 20 opportunities (one skill; prior 0.2,
      learn 0.15, guess 0.2, slip 0.1; 5 restarts, EM to convergence), target < 10 s;
  (b) the same-run baseline: one EM iteration (forward-backward + M-step, one start)
      written directly in numpy, here; the ratio (a)/(b) is what the whole fit costs in
      plain iterations;
  (c) what it recovered: parameter errors and AUC against the generating model's own;
  (d) the learning agent's own P(correct) beside BKT's on held-out learners (AUC), when
      scikit-learn is installed.
Run: python benchmarks/bench_analytics.py
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import orchkit as ok

ROOT = Path(__file__).resolve().parents[1]
TRUE = {"prior": 0.2, "learn": 0.15, "guess": 0.2, "slip": 0.1}


def simulator():
    spec = importlib.util.spec_from_file_location(
        "simulations.learners", ROOT / "simulations" / "learners.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def plain_em_iteration(obs: np.ndarray, p: dict[str, float]) -> dict[str, float]:
    """One Baum-Welch iteration of BKT on a full (N, T) 0/1 matrix, by hand."""
    N, T = obs.shape
    prior, learn, guess, slip = p["prior"], p["learn"], p["guess"], p["slip"]
    e1 = np.where(obs == 1, 1 - slip, slip)
    e0 = np.where(obs == 1, guess, 1 - guess)
    a = np.empty((N, T))
    c = np.empty((N, T))
    pred = np.full(N, prior)
    for t in range(T):
        n1 = pred * e1[:, t]
        c[:, t] = n1 + (1 - pred) * e0[:, t]
        a[:, t] = n1 / c[:, t]
        pred = a[:, t] + (1 - a[:, t]) * learn
    b0, b1 = np.ones(N), np.ones(N)
    g0 = np.empty((N, T))
    g1 = np.empty((N, T))
    xi = np.zeros(N)
    den = np.zeros(N)
    for t in range(T - 1, -1, -1):
        g0[:, t], g1[:, t] = (1 - a[:, t]) * b0, a[:, t] * b1
        if t:
            w0, w1 = e0[:, t] * b0 / c[:, t], e1[:, t] * b1 / c[:, t]
            xi += (1 - a[:, t - 1]) * learn * w1
            b0, b1 = (1 - learn) * w0 + learn * w1, w1
            den += (1 - a[:, t - 1]) * b0
    return {
        "prior": g1[:, 0].mean(),
        "learn": xi.sum() / den.sum(),
        "guess": (g0 * obs).sum() / g0.sum(),
        "slip": (g1 * (1 - obs)).sum() / g1.sum(),
    }


def best_s(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    learners = simulator()
    df = learners.bkt_cohort(10_000, 20, **TRUE, seed=1)
    obs = df["correct"].to_numpy().reshape(10_000, 20)
    start = {"prior": 0.3, "learn": 0.2, "guess": 0.25, "slip": 0.15}
    base = best_s(lambda: plain_em_iteration(obs, start), 5)
    models = []
    fit = best_s(lambda: models.append(ok.analytics.fit_bkt(df)), 3)
    model = models[-1]
    info = model.info.loc["skill"]
    fitted = model.params.loc["skill"]
    truth = ok.analytics.BKTModel.from_params({"skill": TRUE})
    print("fit_bkt, 10,000 learners x 20 opportunities (200,000 responses), 5 restarts:")
    print(f"  fit (best of 3)                   {fit:8.2f} s   (target < 10 s)")
    print(f"  one plain numpy EM iteration      {base * 1000:8.1f} ms  (same run, 1 start)")
    print(
        f"  fit / plain iteration             {fit / base:8.1f}     "
        f"({info['iterations']} iterations x 5 restarts, + input checks)"
    )
    errors = ", ".join(f"{k} {fitted[k] - v:+.4f}" for k, v in TRUE.items())
    print(f"  parameter errors                  {errors}")
    print(f"  AUC fitted / generating model     {model.auc(df):.4f} / {truth.auc(df):.4f}")
    small = learners.bkt_cohort(400, 20, **TRUE, seed=0)
    m400 = ok.analytics.fit_bkt(small)
    errors = ", ".join(f"{k} {m400.params.loc['skill', k] - v:+.4f}" for k, v in TRUE.items())
    print("400 learners x 20 (the issue's recovery check):")
    print(f"  parameter errors                  {errors}")
    print(f"  AUC fitted / generating model     {m400.auc(small):.4f} / {truth.auc(small):.4f}")
    try:
        from sklearn.metrics import roc_auc_score

        from orchkit.agents.learning import build_training_set, fit_mastery_model
    except ImportError:
        print("(scikit-learn missing: no learning-agent comparison)")
        return
    cohort = learners.generate(400, 40, seed=100)
    ids = cohort["learner_id"].unique()
    held = cohort["learner_id"].isin(
        np.random.default_rng(0).choice(ids, size=len(ids) // 5, replace=False)
    )
    concepts = list(learners.CONCEPTS)
    X_train, y_train = build_training_set(cohort[~held], concepts)
    X_test, y_test = build_training_set(cohort[held], concepts)
    agent = roc_auc_score(y_test, fit_mastery_model(X_train, y_train).predict_proba(X_test)[:, 1])
    bkt = ok.analytics.fit_bkt(cohort[~held], skill="concept", order="seq").auc(cohort[held])
    oracle = roc_auc_score(cohort.loc[held, "correct"], cohort.loc[held, "p_correct"])
    print("held-out learners (80 of 400; simulator with ability and item difficulty):")
    print(f"  AUC learning agent (logistic)     {agent:.4f}")
    print(f"  AUC BKT per concept               {bkt:.4f}")
    print(f"  AUC oracle (the true P(correct))  {oracle:.4f}")


if __name__ == "__main__":
    main()
