"""The AI-tutor agent against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import socket
import time

import pytest
from llm_server import LLMServer, Reply

import orchkit as ok
from orchkit import AgentError, AgentResponse
from orchkit.agents.tutor import ACTIONS, AITutorAgent

CTX = {"plan_id": "p", "step_id": "s", "attempt": 1, "run_id": 1, "results": {}}


@pytest.fixture
def server():
    with LLMServer() as srv:
        yield srv


@pytest.fixture
async def llm_agent(server):
    agent = AITutorAgent(
        "tutor-llm",
        base_url=server.base_url,
        api_key="sk-test",
        model="tiny-tutor",
        timeout_ms=2000,
    )
    yield agent
    await agent.shutdown()


@pytest.fixture
def offline_env(monkeypatch):
    for name in (
        "ORCHKIT_LLM_BASE_URL",
        "ORCHKIT_LLM_API_KEY",
        "ORCHKIT_LLM_MODEL",
        "ORCHKIT_LLM_TIMEOUT_MS",
    ):
        monkeypatch.delenv(name, raising=False)


# -------------------------------------------------------------------------- LLM success
async def test_llm_success_sends_model_and_messages(server, llm_agent):
    server.script(Reply(content="1. Think about halves.\n2) Draw the pie.\n- Count the slices."))
    r = await llm_agent.process("prepare_hints", {"concept": "fractions", "count": 3}, CTX)
    assert r.data["source"] == "llm" and r.data["model"] == "tiny-tutor"
    assert r.data["hints"] == ["Think about halves.", "Draw the pie.", "Count the slices."]
    assert r.confidence == 0.8 and r.reasoning.startswith("LLM tiny-tutor")
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == "Bearer sk-test"
    body = req["json"]
    assert body["model"] == "tiny-tutor"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "fractions" in body["messages"][1]["content"]
    assert "exactly 3 hints" in body["messages"][1]["content"]


async def test_llm_feedback_and_prediction(server, llm_agent):
    r = await llm_agent.process(
        "generate_feedback", {"answer": "3/4", "expectedAnswer": "3/4", "concept": "fractions"}, CTX
    )
    assert r.data["correct"] is True
    assert r.data["feedback"].startswith("[tiny-tutor] reply to: Question")  # the server's text
    server.script(Reply(content='Estimate: {"probability": 0.82, "reasoning": "mostly right"}'))
    r = await llm_agent.process("predict_with_gpt4", {"history": [True, True, False]}, CTX)
    assert r.data["prediction"] == 0.82 and r.data["predictedCorrect"] is True
    assert "[1, 1, 0]" in server.requests[-1]["json"]["messages"][1]["content"]
    assert r.reasoning.endswith("mostly right")
    server.script(Reply(content="I think it is likely."))
    with pytest.raises(AgentError, match="did not return JSON with a probability") as exc:
        await llm_agent.process("predict_with_gpt4", {"history": [True]}, CTX)
    assert exc.value.retryable


async def test_settings_from_environment(server, monkeypatch):
    monkeypatch.setenv("ORCHKIT_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("ORCHKIT_LLM_MODEL", "env-model")
    monkeypatch.setenv("ORCHKIT_LLM_TIMEOUT_MS", "1500")
    monkeypatch.delenv("ORCHKIT_LLM_API_KEY", raising=False)
    agent = AITutorAgent("tutor-env")
    assert not agent.offline and agent.timeout_ms == 1500
    r = await agent.process("prepare_conversation", {"topic": "verbs"}, CTX)
    await agent.shutdown()
    assert r.data["source"] == "llm"
    assert server.requests[0]["json"]["model"] == "env-model"
    assert server.requests[0]["headers"]["authorization"] == "Bearer not-needed"  # no key needed
    monkeypatch.setenv("ORCHKIT_LLM_TIMEOUT_MS", "soon")
    with pytest.raises(ValueError, match="ORCHKIT_LLM_TIMEOUT_MS"):
        AITutorAgent("tutor-env-2")


# -------------------------------------------------------------------------- LLM errors
@pytest.mark.parametrize(
    "reply, retryable, words",
    [
        (Reply(429, retry_after_s=2), True, ["HTTP 429", "rate limited", "Retry-After 2 s"]),
        (Reply(500), True, ["HTTP 500", "server error"]),
        (Reply(503), True, ["HTTP 503"]),
        (Reply(400), False, ["HTTP 400", "request rejected", "scripted HTTP 400"]),
        (Reply(401), False, ["HTTP 401"]),
        (Reply(body={"id": "x", "object": "chat.completion", "choices": []}), True, ["no choices"]),
        (Reply(content="   "), True, ["empty message", "finish_reason='stop'"]),
        (Reply(raw=b"<html>gateway</html>"), True, ["malformed response"]),
    ],
    ids=["429", "500", "503", "400", "401", "no-choices", "empty-content", "not-json"],
)
async def test_llm_errors_map_to_agent_errors(server, llm_agent, reply, retryable, words):
    server.script(reply)
    with pytest.raises(AgentError) as exc:
        await llm_agent.process("prepare_hints", {"concept": "fractions"}, CTX)
    assert exc.value.retryable is retryable
    message = str(exc.value)
    assert "agent 'tutor-llm' action 'prepare_hints'" in message
    for word in words:
        assert word in message
    assert len(server.requests) == 1  # the client itself never retries


async def test_timeout_is_retryable(server):
    agent = AITutorAgent("tutor-slow", base_url=server.base_url, timeout_ms=200)
    server.script(Reply(delay_ms=3000))
    t0 = time.perf_counter()
    with pytest.raises(AgentError, match="did not answer within 200 ms") as exc:
        await agent.process("generate_feedback", {"answer": "x"}, CTX)
    elapsed = time.perf_counter() - t0
    await agent.shutdown()
    assert exc.value.retryable
    assert 0.15 < elapsed < 1.5


async def test_connection_refused_is_retryable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    agent = AITutorAgent("tutor-nowhere", base_url=f"http://127.0.0.1:{port}/v1", timeout_ms=2000)
    with pytest.raises(AgentError, match="cannot reach LLM") as exc:
        await agent.process("prepare_hints", {"concept": "x"}, CTX)
    assert exc.value.retryable


# -------------------------------------------------------------------------- offline
async def _all_actions(agent: AITutorAgent) -> list[dict]:
    inputs = {
        "prepare_conversation": {"learnerId": "l1", "subject": "mathematics", "gradeLevel": 5},
        "generate_feedback": {
            "learnerId": "l1",
            "answer": "3/5",
            "expectedAnswer": "3/4",
            "concept": "fractions",
        },
        "provide_feedback": {"analysis": {"fluencyScore": 0.35, "accuracy": 0.9, "wpm": 140}},
        "prepare_hints": {"concept": "fractions", "count": 2},
        "analyze_conversation_patterns": {"learnerId": "l1"},
        "predict_with_gpt4": {"history": [True, False, True, True]},
    }
    assert set(inputs) == set(ACTIONS)
    return [(await agent.process(a, inputs[a], CTX)).to_dict() for a in ACTIONS]


async def test_offline_is_deterministic_and_says_so(offline_env):
    first = await _all_actions(AITutorAgent("tutor-a"))
    second = await _all_actions(AITutorAgent("tutor-a"))
    assert first == second
    for r in first:
        assert r["data"]["source"] == "offline"
        assert r["reasoning"].startswith("Offline responder (no LLM configured")
    conv, feedback, provide, hints, patterns, predict = first
    assert conv["data"]["level"] == "grade 5" and conv["data"]["topic"] == "mathematics"
    assert feedback["data"]["correct"] is False and "3/4" in feedback["data"]["feedback"]
    assert provide["data"]["strengths"] == ["accuracy"]
    assert provide["data"]["areasToImprove"] == ["fluencyScore"]
    assert len(hints["data"]["hints"]) == 2 and all(
        "fractions" in h for h in hints["data"]["hints"]
    )
    # the agent recorded l1's conversation: opening, answer, feedback
    assert (patterns["data"]["turns"], patterns["data"]["learnerTurns"]) == (3, 1)
    assert "short_answers" in patterns["data"]["patterns"]
    assert predict["data"]["prediction"] == pytest.approx(4 / 6, abs=1e-4)  # (3+1)/(4+2)


async def test_offline_prediction_from_seed_style_features(offline_env):
    agent = AITutorAgent("t")
    r = await agent.process(
        "predict_with_gpt4", {"features": {"priorCorrect": 7, "priorIncorrect": 1}}, CTX
    )
    assert r.data["prediction"] == 0.8 and r.data["observations"] == 8  # (7+1)/(8+2)
    r = await agent.process("predict_with_gpt4", {"features": [0.62, 0.4, 3, 1]}, CTX)  # the seed's
    assert r.data["prediction"] == 0.5 and r.data["observations"] == 0


async def test_conversation_statistics_of_given_messages(offline_env):
    msgs = [
        {"role": "assistant", "content": "What is a fraction?"},
        {"role": "user", "content": "A part of a whole, like one half?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Why is the bottom number called the denominator?"},
    ]
    r = await AITutorAgent("t").process("analyze_conversation_patterns", {"messages": msgs}, CTX)
    d = r.data
    assert (d["turns"], d["learnerTurns"], d["tutorTurns"]) == (4, 2, 2)
    assert d["avgLearnerWords"] == 8.0 and d["learnerQuestionRate"] == 1.0
    assert d["patterns"] == ["asks_questions"]


async def test_missing_fields_come_from_earlier_results(offline_env):
    earlier = AgentResponse(
        action="process_interaction",
        confidence=0.9,
        data={
            "learnerId": "l9",
            "concept": "fractions",
            "answer": "3/5",
            "correct": False,
            "score": 0,
            "expectedAnswer": "3/4",
            "difficultyLevel": {"fractions": 2},
        },
    )
    ctx = {**CTX, "results": {"answer": earlier}}
    agent = AITutorAgent("t")
    r = await agent.process("generate_feedback", {}, ctx)
    assert r.data["correct"] is False and r.data["concept"] == "fractions"
    r = await agent.process("prepare_hints", {}, ctx)  # difficultyLevel there is a dict: not taken
    assert r.data["concept"] == "fractions" and r.data["difficultyLevel"] is None
    r = await agent.process("provide_feedback", {}, ctx)
    assert r.data["areasToImprove"] == ["score"]


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "action, payload, words",
    [
        ("prepare_hints", {}, ["field 'concept'", "Field required"]),
        ("prepare_hints", {"concept": 7}, ["field 'concept'", "valid string", "got 7"]),
        (
            "prepare_hints",
            {"concept": "x", "count": 9},
            ["field 'count'", "less than or equal to 5"],
        ),
        ("generate_feedback", {}, ["'answer', 'correct' or 'score'"]),
        ("generate_feedback", {"correct": "yes"}, ["field 'correct'", "valid boolean"]),
        ("generate_feedback", {"score": 1.5}, ["field 'score'"]),
        ("provide_feedback", {}, ["field 'analysis'", "Field required"]),
        ("provide_feedback", {"analysis": [1, 2]}, ["field 'analysis'", "valid dictionary"]),
        (
            "analyze_conversation_patterns",
            {"messages": [{"role": "bot", "content": "hi"}]},
            ["field 'messages.0.role'"],
        ),
        ("analyze_conversation_patterns", {"messages": "hello"}, ["field 'messages'"]),
        ("prepare_conversation", {"topic": ""}, ["field 'topic'"]),
        ("prepare_conversation", {"learnerId": 12}, ["field 'learnerId'"]),
        ("predict_with_gpt4", {"history": [1, 0]}, ["field 'history.0'", "valid boolean"]),
        ("prepare_hints", ["concept"], ["input must be an object, got list"]),
        ("teach_everything", {}, ["has no action 'teach_everything'", "prepare_hints"]),
    ],
)
async def test_bad_input_is_a_clear_non_retryable_error(offline_env, action, payload, words):
    with pytest.raises(AgentError) as exc:
        await AITutorAgent("tutor-x").process(action, payload, CTX)
    assert exc.value.retryable is False
    assert "agent 'tutor-x'" in str(exc.value)
    for word in words:
        assert word in str(exc.value)


async def test_bad_input_never_reaches_the_llm(server, llm_agent):
    with pytest.raises(AgentError):
        await llm_agent.process("prepare_hints", {"concept": None}, CTX)
    assert server.requests == []


# -------------------------------------------------------------------------- insight
class TinyBus:
    def __init__(self):
        self.listeners = {}

    def on(self, event, callback):
        self.listeners.setdefault(event, []).append(callback)

    def emit(self, event, payload):
        for cb in self.listeners.get(event, []):
            cb(payload)


STRUGGLING = {
    "agentId": "learning-1",
    "insight": {
        "type": "struggling_detected",
        "data": {
            "learnerId": "l1",
            "concept": "fractions",
            "difficultyLevel": 2,
            "suggestedIntervention": "progressive_hints",
        },
    },
}


async def test_struggling_insight_prepares_one_intervention(offline_env):
    agent, bus = AITutorAgent("tutor-1"), TinyBus()
    agent.orchestrator = bus
    await agent.initialize()
    assert bus.listeners["agent:insight"] == [agent.on_insight]
    bus.emit("agent:insight", {"agentId": "x", "insight": {"type": "progress_update", "data": {}}})
    assert agent.pending_interventions == 0
    bus.emit("agent:insight", STRUGGLING)
    bus.emit("agent:insight", STRUGGLING)  # the same learner and concept again: still one
    assert agent.pending_interventions == 1
    other = await agent.process("generate_feedback", {"learnerId": "l2", "correct": True}, CTX)
    assert "intervention" not in other.data  # prepared for l1, not l2
    r = await agent.process("generate_feedback", {"learnerId": "l1", "correct": False}, CTX)
    iv = r.data["intervention"]
    assert (iv["concept"], iv["learnerId"], iv["fromAgent"]) == ("fractions", "l1", "learning-1")
    assert len(iv["hints"]) == 3 and all("fractions" in h for h in iv["hints"])
    assert "struggling_detected" in r.reasoning and r.recommendations[0].startswith("Intervention")
    again = await agent.process("generate_feedback", {"learnerId": "l1", "correct": False}, CTX)
    assert "intervention" not in again.data  # consumed once


# -------------------------------------------------------------------------- orchestrator

needs_orchestrator = pytest.mark.skipif(
    not hasattr(ok, "Orchestrator"), reason="orchkit.Orchestrator not available yet"
)


@needs_orchestrator
async def test_retry_policy_recovers_from_500(server):
    orch = ok.Orchestrator()
    await orch.register_agent(AITutorAgent("tutor-1", base_url=server.base_url, timeout_ms=2000))
    server.script(500, 200)
    plan = {
        "id": "hints",
        "steps": [
            {
                "id": "h",
                "agentId": "tutor-1",
                "action": "prepare_hints",
                "input": {"concept": "fractions"},
                "retryPolicy": {"maxRetries": 1, "backoffMs": 10},
            }
        ],
    }
    result = await orch.orchestrate(plan)
    await orch.shutdown()
    assert result.status == "succeeded", result.errors
    assert result.results["h"].data["source"] == "llm"
    spans = result.spans.sort_values("attempt")
    assert list(spans["attempt"]) == [1, 2]
    assert list(spans["outcome"]) == ["error", "succeeded"]
    assert "HTTP 500" in spans["error"].iloc[0]
    assert spans["start_ms"].iloc[1] - spans["end_ms"].iloc[0] >= 9.5  # backoffMs * 1
    assert len(server.requests) == 2


@needs_orchestrator
async def test_non_retryable_400_is_not_retried(server):
    orch = ok.Orchestrator()
    await orch.register_agent(AITutorAgent("tutor-1", base_url=server.base_url, timeout_ms=2000))
    server.script(400, 200)
    plan = {
        "id": "hints",
        "steps": [
            {
                "id": "h",
                "agentId": "tutor-1",
                "action": "prepare_hints",
                "input": {"concept": "fractions"},
                "retryPolicy": {"maxRetries": 3, "backoffMs": 10},
            }
        ],
    }
    result = await orch.orchestrate(plan)
    await orch.shutdown()
    assert result.status == "failed" and "HTTP 400" in result.errors["h"]
    assert len(result.spans) == 1 and len(server.requests) == 1


@needs_orchestrator
@pytest.mark.skipif(
    importlib.util.find_spec("orchkit.agents.learning") is None
    or importlib.util.find_spec("sklearn") is None,
    reason="learning agent not available",
)
async def test_struggling_learner_end_to_end(offline_env):
    from orchkit.agents import PersonalizedLearningAgent

    orch = ok.Orchestrator()
    learning = PersonalizedLearningAgent("learning-1", seed=0)
    tutor = AITutorAgent("tutor-1")
    await orch.register_agent(learning)
    await orch.register_agent(tutor)
    insights = []
    orch.on("agent:insight", insights.append)
    concept = learning.concepts[0]
    items = [a for a in learning.activities.values() if a["concept"] == concept][:4]
    steps, previous = [], []
    for i, item in enumerate(items):
        steps.append(
            {
                "id": f"answer{i}",
                "agentId": "learning-1",
                "action": "process_interaction",
                "input": {
                    "learnerId": "l1",
                    "activityId": item["activityId"],
                    "response": {"answer": "surely-not-the-answer"},
                },
                "dependencies": previous,
            }
        )
        previous = [f"answer{i}"]
    steps.append(
        {
            "id": "help",
            "agentId": "tutor-1",
            "action": "generate_feedback",
            "input": {"learnerId": "l1"},
            "dependencies": previous,
        }
    )
    result = await orch.orchestrate({"id": "struggle", "steps": steps})
    await orch.shutdown()
    assert result.status == "succeeded", result.errors
    struggling = [e for e in insights if e["insight"]["type"] == "struggling_detected"]
    assert len(struggling) == 1 and struggling[0]["agentId"] == "learning-1"
    help_ = result.results["help"]
    assert help_.data["correct"] is False  # taken from the learning agent's result
    assert help_.data["intervention"]["concept"] == concept
    assert help_.data["intervention"]["learnerId"] == "l1"
    assert tutor.pending_interventions == 0


async def test_intervention_survives_a_failed_attempt(server, llm_agent):
    bus = TinyBus()
    llm_agent.orchestrator = bus
    await llm_agent.initialize()
    bus.emit("agent:insight", STRUGGLING)
    server.script(500)
    with pytest.raises(AgentError):
        await llm_agent.process("prepare_hints", {"learnerId": "l1", "concept": "fractions"}, CTX)
    assert llm_agent.pending_interventions == 1  # not lost with the failed attempt
    r = await llm_agent.process("prepare_hints", {"learnerId": "l1", "concept": "fractions"}, CTX)
    assert r.data["source"] == "llm" and r.data["intervention"]["concept"] == "fractions"
