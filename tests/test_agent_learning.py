"""The personalised-learning agent: actions on real inputs, bad inputs, the struggling
insight, the seed's plans live, and the mastery model's quality on held-out learners."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import orchkit as ok
from orchkit import AgentError, AgentResponse
from orchkit.agents import PersonalizedLearningAgent
from orchkit.agents.learning import (
    DEFAULT_LEARNER_ID,
    History,
    answers_match,
    build_training_set,
    features_of,
    fit_mastery_model,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "learners"
CURRICULUM = json.loads((DATA / "curriculum.json").read_text())
ANSWER = {a["activityId"]: a["answer"] for a in CURRICULUM["activities"]}


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "simulations.learners", ROOT / "simulations" / "learners.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


learners = _load_generator()


class Clock:
    """A settable clock in ms."""

    def __init__(self, now_ms: float = 0.0):
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms


@pytest.fixture
async def agent():
    a = PersonalizedLearningAgent("learning-agent-1", seed=0, clock=Clock(30 * learners.DAY_MS))
    await a.initialize()
    return a


@pytest.fixture
def insights(agent):
    got: list[dict] = []
    agent._listeners.append(
        lambda kind, payload: got.append(payload) if kind == "insight" else None
    )
    return got


async def run(agent, action, input, results=None):
    r = await agent.process(
        action,
        input,
        {"plan_id": "p", "step_id": "s", "attempt": 1, "run_id": 0, "results": results or {}},
    )
    assert (
        isinstance(r, AgentResponse)
        and r.action == action
        and 0 <= r.confidence <= 1
        and r.reasoning
    )
    json.dumps(r.to_dict())  # the response is plain JSON
    return r


async def answer(agent, learner, activity_id, right: bool):
    return await run(
        agent,
        "process_interaction",
        {
            "learnerId": learner,
            "activityId": activity_id,
            "response": {"answer": ANSWER[activity_id] if right else "-1"},
        },
    )


# -- the generator and its data set -------------------------------------------------------


def test_shipped_data_set_is_what_the_generator_makes():
    csv = DATA / "interactions.csv"
    assert csv.stat().st_size <= 2_000_000
    pd.testing.assert_frame_equal(pd.read_csv(csv), learners.generate(250, 40, seed=0))
    assert json.loads((DATA / "curriculum.json").read_text()) == learners.curriculum(seed=0)


def test_generator_follows_its_ground_truth():
    df = learners.generate(300, 40, seed=7)
    assert list(df.columns) == learners.COLUMNS
    # Answers are Bernoulli(p_correct): calibrated within sampling error in each state.
    for mastered, rows in df.groupby("mastered"):
        assert abs(rows["correct"].mean() - rows["p_correct"].mean()) < 0.02, mastered
    # Mastery only grows, and grows with practice.
    per_concept = df.groupby(["learner_id", "concept"])["mastered"]
    assert (per_concept.diff().dropna() >= 0).all()
    assert df[df["seq"] >= 30]["mastered"].mean() > df[df["seq"] < 10]["mastered"].mean() + 0.1
    # Ability raises P(mastered) at the start.
    first = df[df["seq"] == 0]
    assert (
        first[first["ability"] > 0]["mastered"].mean()
        > first[first["ability"] < 0]["mastered"].mean()
    )


def test_curriculum_answers_are_right():
    def value(prompt: str) -> Fraction:
        expr = re.match(r"What is (.*)\?", prompt).group(1).replace("(as a fraction)", "")
        expr = expr.replace("×", "*").replace("÷", "/").replace("% of", "/100*")
        expr = re.sub(r"(\d+) (\d+/\d+)", r"(\1+\2)", expr)
        return eval(re.sub(r"\d+", lambda m: f"F({m.group()})", expr), {"F": Fraction})

    assert len(CURRICULUM["activities"]) == 6 * 3 * learners.ITEMS_PER_LEVEL
    for a in CURRICULUM["activities"]:
        assert value(a["prompt"]) == Fraction(a["answer"]), a


def test_answers_match_equivalent_forms():
    assert (
        answers_match("0.75", "3/4")
        and answers_match("6/8", "3/4")
        and answers_match(" 3/4 ", "3/4")
    )
    assert (
        answers_match("1 1/2", "3/2")
        and answers_match("1,494", "1494")
        and answers_match("50%", "1/2")
    )
    assert (
        not answers_match("3/5", "3/4")
        and not answers_match("abc", "3/4")
        and not answers_match("1/0", "0")
    )


# -- model quality -----------------------------------------------------------------------


def test_model_beats_base_rate_on_held_out_learners():
    """Train on the shipped data; predict every next answer of 200 new simulated learners."""
    train = pd.read_csv(DATA / "interactions.csv")
    concepts = CURRICULUM["concepts"]
    model = fit_mastery_model(*build_training_set(train, concepts))
    test = learners.generate(200, 40, seed=2024).sort_values(["learner_id", "seq"], kind="stable")
    X, y = build_training_set(test, concepts)
    auc_model = roc_auc_score(y, model.predict_proba(X)[:, 1])
    rate = train.groupby("concept")["correct"].mean()
    auc_concept = roc_auc_score(y, test["concept"].map(rate))
    rate2 = train.groupby(["concept", "difficulty"])["correct"].mean()
    auc_concept_diff = roc_auc_score(
        y, [rate2[k] for k in zip(test["concept"], test["difficulty"])]
    )
    auc_truth = roc_auc_score(y, test["p_correct"])
    print(
        f"\nnext-answer AUC on {len(y)} answers of 200 held-out learners: model {auc_model:.3f}, "
        f"per-concept base rate {auc_concept:.3f}, per-concept-and-difficulty base rate "
        f"{auc_concept_diff:.3f}, ground truth p_correct {auc_truth:.3f}"
    )
    assert auc_model > auc_concept + 0.08
    assert auc_model > auc_concept_diff + 0.08
    assert auc_model < auc_truth  # the latent truth bounds what any model can do


async def test_predictions_are_the_fitted_pipelines_own(agent):
    """The agent predicts with the pipeline folded into one linear map: the same P(correct)
    as scikit-learn's predict_proba for every concept, level and answer history."""
    test = learners.generate(30, 40, seed=7).sort_values(["learner_id", "seq"], kind="stable")
    rows, hist = [], {}
    for lid, concept, diff, correct in zip(
        test["learner_id"], test["concept"], test["difficulty"], test["correct"]
    ):
        h = hist.setdefault(lid, History(agent.concepts))
        rows.append((concept, int(diff), h.counts(concept)))
        h.add(concept, bool(correct))
    X = np.asarray([features_of(agent.concepts, c, d, n) for c, d, n in rows])
    assert len(rows) > 1000
    expected = agent.model.predict_proba(X)[:, 1]
    assert np.abs(np.asarray(agent._predict(rows)) - expected).max() < 1e-12


async def test_initialize_trains_fast_and_checks_itself_on_held_out_learners():
    a = PersonalizedLearningAgent("learning-agent-2", seed=3)
    t0 = time.process_time()  # CPU seconds: what training costs, whatever else the machine runs
    await a.initialize()
    assert time.process_time() - t0 < 2.0
    info = a.model_info
    assert info["trainedOn"] == 10_000 and info["learners"] == 250
    assert info["heldOutAuc"] > info["baselineAuc"] + 0.08


async def test_missing_data_is_a_clear_permanent_error(tmp_path):
    a = PersonalizedLearningAgent("learning-agent-x", data_dir=tmp_path)
    with pytest.raises(
        AgentError, match="interactions.csv is missing.*simulations/learners.py"
    ) as e:
        await a.initialize()
    assert not e.value.retryable
    learners.main(["--learners", "3", "--items", "5", "--out", str(tmp_path)])
    (tmp_path / "interactions.csv").write_text("a,b\n1,2\n")
    with pytest.raises(AgentError, match="not a learner data set") as e:
        await a.initialize()
    assert not e.value.retryable


# -- actions ------------------------------------------------------------------------------


async def test_initialize_session(agent):
    r = await run(
        agent,
        "initialize_session",
        {"subject": "mathematics", "gradeLevel": 8, "sessionId": "s-1", "learnerId": "amy"},
    )
    assert r.data["sessionId"] == "s-1" and r.data["learnerId"] == "amy" and r.confidence > 0.9
    assert set(r.data["difficultyLevel"].values()) == {3}  # grade 8 starts at the hard level
    assert agent.sessions["s-1"]["gradeLevel"] == 8
    r = await run(
        agent, "initialize_session", {"subject": "history", "gradeLevel": "2", "sessionId": 7}
    )
    assert r.data["learnerId"] == DEFAULT_LEARNER_ID and r.data["sessionId"] == "7"
    assert "not in the curriculum" in r.reasoning and r.confidence < 0.9
    assert set(r.data["difficultyLevel"].values()) == {1}


async def test_get_next_activity_aims_at_the_target(agent):
    r = await run(agent, "get_next_activity", {"learnerId": "amy"})
    act = r.data["activity"]
    assert "answer" not in act  # never leak the answer
    item = next(a for a in CURRICULUM["activities"] if a["activityId"] == act["activityId"])
    assert (item["concept"], item["difficulty"], item["prompt"]) == (
        act["concept"],
        act["difficulty"],
        act["prompt"],
    )
    # The chosen concept's P(correct) is nearest the target among all concepts.
    st = agent.learner("amy")
    ps = agent._predict([(c, st.level[c], st.history.counts(c)) for c in agent.concepts])
    gap = abs(r.data["predictedCorrect"] - 0.7)
    assert all(gap <= abs(p - 0.7) + 1e-4 for p in ps)
    assert r.data["predictedCorrect"] == pytest.approx(
        ps[agent.concepts.index(act["concept"])], abs=1e-4
    )


async def test_practice_moves_the_choice_to_another_concept(agent):
    first = (await run(agent, "get_next_activity", {"learnerId": "bo"})).data["activity"]["concept"]
    for _ in range(6):
        act = (await run(agent, "get_next_activity", {"learnerId": "bo"})).data["activity"]
        if act["concept"] != first:
            break
        await answer(agent, "bo", act["activityId"], right=True)
    assert act["concept"] != first  # mastering a concept makes it too easy for the 0.7 target


async def test_process_interaction_scores_updates_mastery_and_adapts_difficulty(agent):
    before = agent.mastery("cy")["fractions"]
    exact = Fraction(ANSWER["fractions-d1-01"])
    r = await run(
        agent,
        "process_interaction",
        {
            "learnerId": "cy",
            "activityId": "fractions-d1-01",
            "response": {"answer": f"{exact.numerator * 3}/{exact.denominator * 3}"},
        },
    )  # an equivalent fraction
    assert r.data["correct"] is True and r.data["score"] == 1 and r.data["mastery"] > before
    assert r.data["difficultyLevel"] == 1 and r.data["difficultyChange"] == "same"
    r = await answer(agent, "cy", "fractions-d1-02", right=True)
    assert (r.data["difficultyLevel"], r.data["difficultyChange"]) == (2, "up")
    r = await answer(agent, "cy", "fractions-d2-01", right=False)
    assert r.data["correct"] is False and r.data["expectedAnswer"] == ANSWER["fractions-d2-01"]
    assert r.data["mastery"] < r.data["predictedCorrectBefore"] + 1e-9
    r = await answer(agent, "cy", "fractions-d2-02", right=False)
    assert (r.data["difficultyLevel"], r.data["difficultyChange"]) == (1, "down")
    assert agent.learner("cy").history.counts("fractions")["priorCorrect"] == 2


async def test_struggling_insight_fires_once_for_a_run_of_wrong_answers(agent, insights):
    for i in range(1, 6):
        r = await answer(agent, "dee", f"multiplication-d2-0{i}", right=False)
    assert len(insights) == 1  # once per run of wrong answers on a concept
    ins = insights[0]
    assert ins["type"] == "struggling_detected"
    d = ins["data"]
    assert d["concept"] == "multiplication" and d["suggestedIntervention"] == "progressive_hints"
    assert (
        d["difficultyLevel"] in (1, 2, 3)
        and 2 <= d["consecutiveWrong"] <= 3
        and d["learnerId"] == "dee"
    )
    assert r.data["struggling"] is True and r.recommendations
    await answer(agent, "dee", "multiplication-d1-01", right=True)  # the run ends...
    for i in range(1, 4):
        await answer(agent, "dee", f"multiplication-d1-0{i}", right=False)
    assert len(insights) == 2  # ...and a new run is reported again


async def test_no_struggling_insight_for_right_or_mixed_answers(agent, insights):
    for _ in range(12):
        act = (await run(agent, "get_next_activity", {"learnerId": "eve"})).data["activity"]
        r = await answer(agent, "eve", act["activityId"], right=True)
        assert r.data["struggling"] is False
    for i in range(1, 6):  # alternating right and wrong is not a struggle
        await answer(agent, "fin", f"division-d2-0{i}", right=i % 2 == 0)
    assert insights == []


async def test_strong_learner_struggles_only_after_three_wrong(agent, insights):
    for i in range(1, 6):
        await answer(agent, "gus", f"addition-d1-0{i}", right=True)
    await answer(agent, "gus", "addition-d3-01", right=False)
    await answer(agent, "gus", "addition-d3-02", right=False)
    assert insights == []  # mastery is still high after two slips
    await answer(agent, "gus", "addition-d3-03", right=False)
    assert [i["data"]["concept"] for i in insights] == ["addition"]


async def test_missing_learner_id_uses_the_plan_learner_or_the_default(agent):
    act = await run(agent, "get_next_activity", {"learnerId": "hal"})
    # The seed's plan: an activity id the curriculum does not know, no learnerId.
    r = await run(
        agent,
        "process_interaction",
        {"activityId": "act_789", "response": {"answer": "42"}},
        results={"present_question": act},
    )
    assert (
        r.data["learnerId"] == "hal" and r.data["activityId"] == act.data["activity"]["activityId"]
    )
    assert "not in the curriculum" in r.reasoning
    r = await run(
        agent, "process_interaction", {"activityId": "addition-d1-01", "response": {"answer": 1}}
    )
    assert r.data["learnerId"] == DEFAULT_LEARNER_ID
    with pytest.raises(AgentError, match="'activityId': 'act_789' is not in the curriculum"):
        await run(
            agent, "process_interaction", {"activityId": "act_789", "response": {"answer": "42"}}
        )


async def test_analyze_performance(agent):
    r = await run(agent, "analyze_performance", {"learnerId": "ivy"})
    assert r.data["answers"] == 0 and r.data["accuracy"] is None
    for i in range(1, 5):
        await answer(agent, "ivy", f"addition-d2-0{i}", right=True)
        await answer(agent, "ivy", f"percentages-d1-0{i}", right=False)
    r = await run(agent, "analyze_performance", {"learnerId": "ivy"})
    c = r.data["concepts"]
    assert r.data["answers"] == 8 and r.data["accuracy"] == 0.5
    assert c["addition"]["accuracy"] == 1.0 and c["percentages"]["accuracy"] == 0.0
    assert c["addition"]["mastery"] > 0.8 > 0.3 > c["percentages"]["mastery"]
    assert "addition" in r.data["strengths"] and r.data["weaknesses"][0] == "percentages"
    assert any("percentages" in rec for rec in r.recommendations)


async def test_analyze_learning_patterns_uses_the_window(agent):
    clock = agent._clock
    clock.now_ms = 0.0
    for i in range(1, 6):
        await answer(agent, "jo", f"subtraction-d1-0{i}", right=False)
    clock.now_ms = 10 * learners.DAY_MS
    for i in range(1, 5):
        await answer(agent, "jo", f"addition-d1-0{i}", right=True)
    r = await run(agent, "analyze_learning_patterns", {"learnerId": "jo", "days": 7})
    assert (
        r.data["answers"] == 4
        and r.data["accuracy"] == 1.0
        and set(r.data["byConcept"]) == {"addition"}
    )
    r = await run(agent, "analyze_learning_patterns", {"learnerId": "jo", "days": 30})
    d = r.data
    assert d["answers"] == 9 and d["trend"] == "improving" and d["longestWrongStreak"] == 5
    assert d["activeDays"] == 2 and d["byDifficulty"]["1"]["answers"] == 9
    r = await run(agent, "analyze_learning_patterns", {"learnerId": "nobody", "days": 7})
    assert r.data["answers"] == 0 and r.confidence < 0.5


async def test_comprehensive_report_combines_earlier_steps(agent):
    await answer(agent, "kim", "division-d1-01", right=False)
    perf = await run(agent, "analyze_performance", {"learnerId": "kim"})
    other = AgentResponse(
        action="analyze_speech_progress",
        confidence=0.6,
        reasoning="r",
        data={"fluency": 0.8},
        recommendations=["Read aloud daily"],
    )
    r = await run(
        agent,
        "generate_comprehensive_report",
        {},
        results={"learning_analysis": perf, "speech_analysis": other},
    )
    assert r.data["learnerId"] == "kim" and r.data["combinedSteps"] == [
        "learning_analysis",
        "speech_analysis",
    ]
    assert r.data["sections"]["speech_analysis"]["data"] == {"fluency": 0.8}
    assert "Read aloud daily" in r.recommendations and perf.recommendations[0] in r.recommendations
    assert r.confidence == pytest.approx((perf.confidence + 0.6) / 2, abs=1e-3)
    r = await run(agent, "generate_comprehensive_report", {"learnerId": "kim"})  # no earlier steps
    assert r.data["combinedSteps"] == [] and r.data["performance"]["answers"] == 1


async def test_generate_recommendation(agent):
    for i in range(1, 4):  # level 1 -> 2 after two right answers; a third one
        await answer(agent, "lu", f"addition-d1-0{i}", right=True)
    assert agent.learner("lu").level["addition"] == 2
    r = await run(agent, "generate_recommendation", {"learnerId": "lu"})
    recs = r.data["recommendations"]
    assert recs[0]["type"] == "practice" and r.recommendations
    assert {"type": "advance", "concept": "addition", "difficulty": 3} in [
        {k: x[k] for k in ("type", "concept", "difficulty")} for x in recs
    ]


async def test_predictions_ml_and_rules(agent):
    for action in ("predict_with_ml", "predict_with_rules"):
        low = await run(
            agent,
            action,
            {"features": {"concept": "fractions", "priorCorrect": 0, "priorIncorrect": 4}},
        )
        high = await run(
            agent,
            action,
            {"features": {"concept": "fractions", "priorCorrect": 4, "priorIncorrect": 0}},
        )
        assert high.data["prediction"] > low.data["prediction"] + 0.2, action
        hard = await run(
            agent,
            action,
            {"features": {"concept": "fractions", "difficulty": 3, "priorCorrect": 4}},
        )
        assert hard.data["prediction"] < high.data["prediction"], action
        seed = await run(agent, action, {"features": [0.62, 0.4, 3, 1]})  # the seed's plan
        assert (
            set(seed.data["predictions"]) == set(agent.concepts) and 0 < seed.data["prediction"] < 1
        )
        odd = await run(agent, action, {"features": {"concept": "addition", "mood": "happy"}})
        assert odd.data["ignoredFeatures"] == ["mood"] and "mood" in odd.reasoning
    assert high.data["method"] == "rules"
    ml = await run(
        agent, "predict_with_ml", {"features": {"concept": "fractions", "priorCorrect": 4}}
    )
    assert ml.data["method"] == "ml" and ml.data["model"]["heldOutAuc"] > 0.75
    # With a learnerId, the learner's own history fills the counts.
    for i in range(1, 5):
        await answer(agent, "mo", f"fractions-d1-0{i}", right=True)
    own = await run(
        agent, "predict_with_ml", {"learnerId": "mo", "features": {"concept": "fractions"}}
    )
    assert own.data["features"]["fractions"]["priorCorrect"] == 4
    assert (
        own.data["prediction"]
        > (await run(agent, "predict_with_ml", {"features": {"concept": "fractions"}})).data[
            "prediction"
        ]
    )


async def test_fetch_external_data(agent):
    r = await run(agent, "fetch_external_data", {"source": "curriculum_api"})
    assert r.data["count"] == 90 and r.data["concepts"] == CURRICULUM["concepts"]
    assert all("answer" not in a for a in r.data["activities"])
    r = await run(agent, "fetch_external_data", {"source": "learner_dataset"})
    assert r.data["answers"] == 10_000 and r.data["learners"] == 250


BAD = [
    ("initialize_session", {"gradeLevel": 5, "sessionId": "s"}, "field 'subject' is missing"),
    ("initialize_session", {"subject": "math", "sessionId": "s"}, "field 'gradeLevel' is missing"),
    (
        "initialize_session",
        {"subject": "math", "gradeLevel": "fifth", "sessionId": "s"},
        "'gradeLevel' must be an integer",
    ),
    ("initialize_session", {"subject": "math", "gradeLevel": 5}, "field 'sessionId' is missing"),
    (
        "initialize_session",
        {"subject": ["math"], "gradeLevel": 5, "sessionId": "s"},
        "'subject' must be a non-empty string",
    ),
    ("get_next_activity", {"learnerId": ""}, "'learnerId' must be a non-empty string"),
    ("get_next_activity", {"learnerId": {"id": 1}}, "'learnerId' must be a non-empty string"),
    ("process_interaction", {"response": {"answer": "1"}}, "field 'activityId' is missing"),
    ("process_interaction", {"activityId": "addition-d1-01"}, "field 'response' is missing"),
    (
        "process_interaction",
        {"activityId": "addition-d1-01", "response": "7"},
        "'response' must be an object",
    ),
    (
        "process_interaction",
        {"activityId": "addition-d1-01", "response": {}},
        "'response.answer' is missing",
    ),
    (
        "process_interaction",
        {"activityId": "addition-d1-01", "response": {"answer": [1]}},
        "'response.answer' must be",
    ),
    (
        "process_interaction",
        {"activityId": "addition-d1-01", "response": {"answer": True}},
        "'response.answer' must be",
    ),
    (
        "process_interaction",
        {"activityId": "addition-d1-01", "response": {"answer": "1", "responseTimeMs": -5}},
        "responseTimeMs",
    ),
    (
        "analyze_learning_patterns",
        {"learnerId": "x", "days": 0},
        r"'days' must be a number of days in \(0, 36500\]",
    ),
    ("analyze_learning_patterns", {"learnerId": "x", "days": 10**400}, "'days' must be"),
    ("analyze_learning_patterns", {"learnerId": "x", "days": "7"}, "'days' must be"),
    ("predict_with_ml", {}, "field 'features' is missing"),
    ("predict_with_ml", {"features": "high"}, "'features' must be an object"),
    ("predict_with_ml", {"features": [0.6, 0.4, 3]}, "'features' must be an object .* or a list"),
    (
        "predict_with_ml",
        {"features": [0.6, 0.4, 3, 7]},
        r"'features\[3\]' \(difficulty\) is out of range",
    ),
    ("predict_with_ml", {"features": [1.6, 0.4, 3, 1]}, r"'features\[0\]' \(accuracy\)"),
    ("predict_with_ml", {"features": [0.6, float("nan"), 3, 1]}, "'features' must be"),
    (
        "predict_with_ml",
        {"features": {"concept": "algebra"}},
        "'features.concept' must be one of addition",
    ),
    (
        "predict_with_rules",
        {"features": {"priorCorrect": -1}},
        "'features.priorCorrect' must be a whole number",
    ),
    (
        "predict_with_rules",
        {"features": {"priorCorrect": 2.5}},
        "'features.priorCorrect' must be a whole number",
    ),
    (
        "predict_with_rules",
        {"features": {"recentCorrect": 3, "recentIncorrect": 2}},
        "add up to at most 3",
    ),
    (
        "predict_with_rules",
        {"features": {"difficulty": "hard"}},
        "'features.difficulty' must be 1, 2 or 3",
    ),
    ("fetch_external_data", {}, "field 'source' is missing"),
    (
        "fetch_external_data",
        {"source": "weather_api"},
        "'source' must be one of curriculum_api, learner_dataset",
    ),
    ("analyze_performance", ["learnerId"], "input must be an object, got list"),
]


@pytest.mark.parametrize("action,input,message", BAD, ids=[f"{a}-{m[:30]}" for a, _, m in BAD])
async def test_bad_input_is_a_permanent_error_naming_the_field(agent, action, input, message):
    with pytest.raises(AgentError, match=message) as e:
        await run(agent, action, input)
    assert not e.value.retryable
    assert f"agent 'learning-agent-1' action '{action}'" in str(e.value)


async def test_unknown_action_lists_the_valid_ones(agent):
    with pytest.raises(
        AgentError,
        match="unknown action 'predict_with_gpt4'.*initialize_session.*fetch_external_data",
    ) as e:
        await run(agent, "predict_with_gpt4", {})
    assert not e.value.retryable


# -- live, through the orchestrator ------------------------------------------------------


class _OtherAgent(ok.Agent):
    """Stands in for the tutor and speech agents (owned elsewhere) in the seed's plans."""

    async def process(self, action, input, context):
        return AgentResponse(
            action=action,
            confidence=0.7,
            reasoning="stand-in",
            data={"learnerId": "learner_456"},
            recommendations=[f"from {action}"],
        )


async def test_seed_plans_run_live():
    orch = ok.Orchestrator()
    await orch.register_agent(PersonalizedLearningAgent("learning-agent-123"))
    for aid in ("tutor-agent-123", "speech-agent-123"):
        await orch.register_agent(_OtherAgent(aid))
    plans = sorted((ROOT / "data" / "plans").glob("*.json"))
    assert plans
    results = {}
    for path in plans:
        result = await orch.orchestrate(ok.Plan.load(path))
        assert result.status == "succeeded", (path.name, result.errors)
        results[path.stem] = result.results
    await orch.shutdown()
    if "learning_activity" in results:  # the answer "42" to activity "act_789" of learner_456
        r = results["learning_activity"]
        served = r["present_question"].data["activity"]["activityId"]
        assert r["process_answer"].data["activityId"] == served
        assert r["process_answer"].data["learnerId"] == "learner_456"
        assert r["evaluate_performance"].data["answers"] == 1
    if "parallel_analysis" in results:
        report = results["parallel_analysis"]["combine_insights"].data
        assert sorted(report["combinedSteps"]) == [
            "learning_analysis",
            "speech_analysis",
            "tutor_analysis",
        ]
    if "graceful_degradation" in results:
        assert results["graceful_degradation"]["ml_prediction"].data["method"] == "ml"


async def test_struggling_insight_reaches_the_bus():
    orch = ok.Orchestrator()
    await orch.register_agent(PersonalizedLearningAgent("learning-agent-123"))
    got = []
    orch.on("agent:insight", got.append)
    steps = [
        {
            "id": f"a{i}",
            "agentId": "learning-agent-123",
            "action": "process_interaction",
            "input": {
                "learnerId": "ned",
                "activityId": f"fractions-d2-0{i}",
                "response": {"answer": "0"},
            },
            "dependencies": [f"a{i - 1}"] if i > 1 else [],
        }
        for i in range(1, 5)
    ]
    result = await orch.orchestrate({"id": "struggle", "steps": steps})
    assert result.status == "succeeded"
    assert len(got) == 1 and got[0]["agentId"] == "learning-agent-123"
    insight = got[0]["insight"]
    assert insight["type"] == "struggling_detected" and insight["data"]["concept"] == "fractions"
    assert insight["data"]["suggestedIntervention"] == "progressive_hints"
    await orch.shutdown()
