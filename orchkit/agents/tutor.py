"""The AI-tutor agent (SPEC §5): conversation, hints and feedback through an
OpenAI-compatible chat-completions endpoint, or a deterministic offline responder.

Settings (constructor argument first, then environment variable):

- ``base_url`` / ``ORCHKIT_LLM_BASE_URL`` — e.g. ``http://127.0.0.1:8000/v1``. Unset or
  empty: the agent answers offline from templates, and says so in every response
  (``data["source"] == "offline"``, reasoning starts with "Offline responder").
- ``api_key`` / ``ORCHKIT_LLM_API_KEY`` — optional (local servers need none).
- ``model`` / ``ORCHKIT_LLM_MODEL`` — default ``gpt-4o-mini``.
- ``timeout_ms`` / ``ORCHKIT_LLM_TIMEOUT_MS`` — per request, default 30 000 ms.

The client never retries by itself (``max_retries=0``): the plan's ``retryPolicy`` does.
LLM failures become ``AgentError``: rate limit (429), 408, 5xx, connection errors,
timeouts and malformed completions are retryable; every other 4xx is not. Bad input
(a missing or ill-typed field) is a non-retryable ``AgentError`` naming the field.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .._base.deps import missing
from .._base.errors import AgentError
from .._runtimes.agent import Agent, AgentResponse

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_MS = 30_000.0
PLACEHOLDER_API_KEY = "not-needed"
CONFIDENCE = {"llm": 0.8, "offline": 0.5}
_HISTORY_LIMIT = 200  # messages remembered per learner
_LEARNER_KEYS = ("learnerId", "learner_id", "userId", "user_id")  # accepted spellings

ACTIONS = (
    "prepare_conversation",
    "generate_feedback",
    "provide_feedback",
    "prepare_hints",
    "analyze_conversation_patterns",
    "predict_with_gpt4",
)


# ----------------------------------------------------------------------------- inputs
class _Input(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", strict=True
    )
    learner_id: str | None = Field(default=None, validation_alias=AliasChoices(*_LEARNER_KEYS))


class ConversationInput(_Input):
    topic: str = Field(
        default="general practice", min_length=1, validation_alias=AliasChoices("topic", "subject")
    )
    level: str | None = None
    grade_level: int | None = Field(default=None, ge=0, le=12)
    goals: list[str] = Field(default_factory=list)
    message: str | None = None


class FeedbackInput(_Input):
    answer: str | None = None
    correct: bool | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    question: str | None = None
    expected_answer: str | None = None
    concept: str | None = None


class ProvideFeedbackInput(_Input):
    analysis: dict[str, Any]
    focus: str | None = None


class HintsInput(_Input):
    concept: str = Field(min_length=1)
    difficulty_level: float | None = None
    count: int = Field(default=3, ge=1, le=5)
    question: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["user", "learner", "assistant", "tutor", "system"]
    content: str


class PatternsInput(_Input):
    messages: list[Message] | None = None


class PredictInput(_Input):
    concept: str | None = None
    history: list[bool] = Field(default_factory=list)
    features: Any = None


_SCHEMAS: dict[str, type[_Input]] = {
    "prepare_conversation": ConversationInput,
    "generate_feedback": FeedbackInput,
    "provide_feedback": ProvideFeedbackInput,
    "prepare_hints": HintsInput,
    "analyze_conversation_patterns": PatternsInput,
    "predict_with_gpt4": PredictInput,
}
# Fields that, when missing from a step's input, are taken from the ``data`` of steps
# that already succeeded in this run (the latest one whose value has the right type).
_NUMBER = (int, float)
_FROM_RESULTS: dict[str, dict[str, tuple[type, ...]]] = {
    "generate_feedback": {
        "answer": (str,),
        "correct": (bool,),
        "score": _NUMBER,
        "concept": (str,),
        "question": (str,),
        "expectedAnswer": (str,),
    },
    "prepare_hints": {"concept": (str,), "difficultyLevel": _NUMBER},
    "predict_with_gpt4": {"concept": (str,)},
    "provide_feedback": {},
    "prepare_conversation": {},
    "analyze_conversation_patterns": {},
}
_HINT_TEMPLATES = (
    "Say in your own words what {c} means before you answer.",
    "Split the task into small steps and apply {c} to the first step only.",
    "Recall the rule behind {c} and check each part of your answer against it.",
    "Compare your answer with a worked example of {c}, step by step.",
    "Here is the pattern for {c}: start from the example and change one part at a time.",
)


# ----------------------------------------------------------------------------- agent
class AITutorAgent(Agent):
    """Tutor agent: hints, feedback and conversation via an OpenAI-compatible LLM.

    ``timeout_ms`` is the limit of one LLM request in ms. ``temperature`` is sent with each
    request. With no ``base_url`` (argument or ``ORCHKIT_LLM_BASE_URL``) it answers from a
    deterministic offline responder. Listens on the orchestrator's ``agent:insight`` for
    ``struggling_detected`` and attaches a prepared intervention (progressive hints for
    the concept) to its next response as ``data["intervention"]``, once.
    """

    def __init__(
        self,
        agent_id: str,
        *,
        capacity: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout_ms: float | None = None,
        temperature: float = 0.2,
    ):
        super().__init__(agent_id, capacity=capacity)
        env = os.environ
        self.base_url: str | None = base_url or env.get("ORCHKIT_LLM_BASE_URL") or None
        self.api_key: str = api_key or env.get("ORCHKIT_LLM_API_KEY") or PLACEHOLDER_API_KEY
        self.model: str = model or env.get("ORCHKIT_LLM_MODEL") or DEFAULT_MODEL
        if timeout_ms is None:
            raw = env.get("ORCHKIT_LLM_TIMEOUT_MS")
            try:
                timeout_ms = float(raw) if raw else DEFAULT_TIMEOUT_MS
            except ValueError:
                raise ValueError(
                    f"agent '{agent_id}': ORCHKIT_LLM_TIMEOUT_MS must be a number of ms, "
                    f"got {raw!r}"
                ) from None
        if not timeout_ms > 0:
            raise ValueError(f"agent '{agent_id}': timeout_ms must be > 0, got {timeout_ms!r}")
        self.timeout_ms = float(timeout_ms)
        self.temperature = temperature
        self._client: Any = None
        self._interventions: deque[dict[str, Any]] = deque()
        self._history: dict[str, list[dict[str, str]]] = {}

    @property
    def offline(self) -> bool:
        """True when no LLM endpoint is configured (answers come from templates)."""
        return self.base_url is None

    # -- lifecycle ---------------------------------------------------------------
    async def initialize(self) -> None:
        """Subscribe to ``agent:insight`` on the orchestrator's bus (if registered)."""
        if self.orchestrator is not None:
            self.orchestrator.on("agent:insight", self.on_insight)

    async def shutdown(self) -> None:
        """Unsubscribe and close the HTTP client."""
        off = getattr(self.orchestrator, "off", None)
        if off is not None:
            try:
                off("agent:insight", self.on_insight)
            except Exception:  # the bus may not know the listener any more
                pass
        if self._client is not None:
            await self._client.close()
            self._client = None

    def on_insight(self, payload: dict[str, Any]) -> None:
        """Bus listener: for ``struggling_detected``, prepare an intervention for the next response.

        The intervention (three progressive template hints for the insight's concept) is
        ready at once, without an LLM call; the next successful response whose learner
        matches (or that names no learner) carries it as ``data["intervention"]``.
        """
        insight = payload.get("insight") if isinstance(payload, dict) else None
        if not isinstance(insight, dict) or insight.get("type") != "struggling_detected":
            return
        data = insight.get("data") if isinstance(insight.get("data"), dict) else {}
        concept = str(data.get("concept") or "the current topic")
        learner = data.get("learnerId") or data.get("userId") or insight.get("learnerId")
        if any((i["concept"], i["learnerId"]) == (concept, learner) for i in self._interventions):
            return  # one pending intervention per learner and concept
        self._interventions.append(
            {
                "type": "struggling_support",
                "concept": concept,
                "learnerId": learner,
                "difficultyLevel": data.get("difficultyLevel"),
                "suggestedIntervention": data.get("suggestedIntervention"),
                "fromAgent": payload.get("agentId"),
                "hints": _offline_hints(concept, 3),
                "message": (
                    f"It looks like {concept} is hard right now. Let's slow down and "
                    f"work through it with a few hints, one at a time."
                ),
            }
        )

    @property
    def pending_interventions(self) -> int:
        """Number of prepared interventions not yet shown."""
        return len(self._interventions)

    # -- process -----------------------------------------------------------------
    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        """Serve one of ``ACTIONS``; see the module docstring for settings and errors."""
        if action not in _SCHEMAS:
            raise AgentError(
                f"agent '{self.agent_id}' has no action '{action}' (actions: {', '.join(ACTIONS)})",
                retryable=False,
            )
        params = self._parse(action, input, context or {})
        handler = getattr(self, f"_{action}")
        response: AgentResponse = await handler(params)
        return self._attach_intervention(response, params.learner_id)

    def _fail(self, action: str, what: str, *, retryable: bool) -> AgentError:
        return AgentError(f"agent '{self.agent_id}' action '{action}': {what}", retryable=retryable)

    def _parse(self, action: str, input: Any, context: dict[str, Any]) -> _Input:
        if input is None:
            input = {}
        if not isinstance(input, dict):
            raise self._fail(
                action,
                f"input must be an object, got {type(input).__name__} {input!r:.80}",
                retryable=False,
            )
        merged, pulled = dict(input), set()
        earlier = _earlier_data(context)
        for key, types in {**_FROM_RESULTS[action], "learnerId": (str,)}.items():
            if key in merged or (key == "learnerId" and any(k in merged for k in _LEARNER_KEYS)):
                continue
            for data in earlier:
                value = data.get(key)
                if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
                    merged[key] = value
                    pulled.add(key)
                    break
        if action == "provide_feedback" and "analysis" not in merged and earlier:
            merged["analysis"] = earlier[0]
        try:
            try:
                params = _SCHEMAS[action].model_validate(merged)
            except ValidationError as exc:  # drop values taken from results that do not fit
                unfit = {e["loc"][0] for e in exc.errors() if e["loc"] and e["loc"][0] in pulled}
                if not unfit:
                    raise
                params = _SCHEMAS[action].model_validate(
                    {k: v for k, v in merged.items() if k not in unfit}
                )
        except ValidationError as exc:
            problems = "; ".join(
                f"field '{'.'.join(map(str, e['loc'])) or 'input'}': {e['msg']}"
                + ("" if e["type"] == "missing" else f" (got {e['input']!r:.60})")
                for e in exc.errors()
            )
            raise self._fail(action, f"invalid input: {problems}", retryable=False) from None
        if (
            action == "generate_feedback"
            and params.answer is None
            and params.correct is None
            and params.score is None
        ):
            raise self._fail(
                action,
                "invalid input: give at least one of the fields 'answer', 'correct' or 'score'",
                retryable=False,
            )
        return params

    def _attach_intervention(self, response: AgentResponse, learner: str | None) -> AgentResponse:
        for i, item in enumerate(self._interventions):
            if item["learnerId"] is None or learner is None or item["learnerId"] == learner:
                del self._interventions[i]
                data = dict(response.data or {})
                data["intervention"] = item
                recs = list(response.recommendations or [])
                recs.insert(0, f"Intervention for {item['concept']}: {item['hints'][0]}")
                return response.model_copy(
                    update={
                        "data": data,
                        "recommendations": recs,
                        "reasoning": response.reasoning + f" Includes an intervention for "
                        f"'{item['concept']}' prepared after a struggling_detected insight.",
                    }
                )
        return response

    def _respond(
        self,
        action: str,
        source: str,
        reasoning: str,
        data: dict[str, Any],
        recommendations: list[str] | None = None,
        next_steps: list[str] | None = None,
        confidence: float | None = None,
    ) -> AgentResponse:
        data = {**data, "source": source}
        if source == "llm":
            data["model"] = self.model
            reasoning = f"LLM {self.model} at {self.base_url}: {reasoning}"
        elif self.offline:
            reasoning = (
                f"Offline responder (no LLM configured; deterministic templates): {reasoning}"
            )
        else:
            reasoning = f"Template answer (no LLM call was needed): {reasoning}"
        return AgentResponse(
            action=action,
            confidence=CONFIDENCE[source] if confidence is None else confidence,
            reasoning=reasoning,
            data=data,
            recommendations=recommendations,
            next_steps=next_steps,
        )

    def _remember(self, learner: str | None, role: str, content: str) -> None:
        history = self._history.setdefault(learner or "anonymous", [])
        history.append({"role": role, "content": content})
        del history[:-_HISTORY_LIMIT]

    # -- LLM ---------------------------------------------------------------------
    async def _chat(self, action: str, system: str, user: str) -> str:
        """One chat completion; returns the assistant's text or raises ``AgentError``."""
        try:
            import openai
        except ModuleNotFoundError:
            raise AgentError(
                str(missing("openai", f"agent '{self.agent_id}' (LLM at {self.base_url})")),
                retryable=False,
            ) from None

        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                max_retries=0,
                timeout=self.timeout_ms / 1000.0,
            )
        where = f"LLM at {self.base_url} (model {self.model})"
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                temperature=self.temperature,
            )
        except openai.APITimeoutError:
            raise self._fail(
                action, f"{where} did not answer within {self.timeout_ms:g} ms", retryable=True
            ) from None
        except openai.APIConnectionError as exc:
            raise self._fail(action, f"cannot reach {where}: {exc}", retryable=True) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in (408, 429) or status >= 500
            detail = (
                "rate limited"
                if status == 429
                else ("server error" if status >= 500 else "request rejected")
            )
            after = exc.response.headers.get("retry-after")
            if after:
                detail += f"; Retry-After {after} s"
            raise self._fail(
                action,
                f"{where} returned HTTP {status} ({detail}): {_message(exc)}",
                retryable=retryable,
            ) from None
        except ValueError as exc:  # the body was not a JSON completion
            raise self._fail(
                action, f"{where} returned a malformed response: {exc}", retryable=True
            ) from None
        choices = getattr(completion, "choices", None)
        if not choices:
            raise self._fail(
                action,
                f"{where} returned a completion with no choices: {_dump(completion)}",
                retryable=True,
            )
        content = getattr(choices[0].message, "content", None)
        if not isinstance(content, str) or not content.strip():
            raise self._fail(
                action,
                f"{where} returned an empty message (finish_reason="
                f"{choices[0].finish_reason!r}): {_dump(completion)}",
                retryable=True,
            )
        return content.strip()

    # -- actions -----------------------------------------------------------------
    async def _prepare_conversation(self, p: ConversationInput) -> AgentResponse:
        level = p.level or (
            f"grade {p.grade_level}" if p.grade_level is not None else "intermediate"
        )
        system = (
            f"You are a patient tutor. Topic: {p.topic}. Learner level: {level}. "
            f"Goals: {', '.join(p.goals) or 'general practice'}. Keep replies short and ask "
            f"one question at a time."
        )
        if p.message:
            self._remember(p.learner_id, "user", p.message)
        if self.offline:
            goals = f" Today we work towards: {', '.join(p.goals)}." if p.goals else ""
            opening = (
                f"Hello! Let's practise {p.topic} at the {level} level.{goals} "
                f"To start, tell me what you already know about {p.topic}."
            )
            source, why = "offline", f"opening for topic '{p.topic}' at level '{level}'"
        else:
            opening = await self._chat(
                "prepare_conversation",
                system,
                p.message or f"Open a tutoring conversation about {p.topic}.",
            )
            source, why = "llm", f"opened a conversation on '{p.topic}' at level '{level}'"
        self._remember(p.learner_id, "assistant", opening)
        data = {
            "conversationId": f"{p.learner_id or 'anonymous'}:{p.topic}",
            "topic": p.topic,
            "level": level,
            "goals": p.goals,
            "systemPrompt": system,
            "message": opening,
        }
        return self._respond(
            "prepare_conversation",
            source,
            why,
            data,
            next_steps=["Wait for the learner's reply", "generate_feedback"],
        )

    async def _generate_feedback(self, p: FeedbackInput) -> AgentResponse:
        action = "generate_feedback"
        correct = p.correct
        if correct is None and p.answer is not None and p.expected_answer is not None:
            correct = _norm(p.answer) == _norm(p.expected_answer)
        if correct is None and p.score is not None:
            correct = p.score >= 0.7
        concept = p.concept or "this topic"
        if p.answer is not None:
            self._remember(p.learner_id, "user", p.answer)
        if self.offline:
            if correct:
                text = (
                    f"Well done: your answer on {concept} is correct. "
                    "Try a slightly harder one next."
                )
            elif correct is False:
                expected = (
                    f" The expected answer is '{p.expected_answer}'." if p.expected_answer else ""
                )
                text = (
                    f"Not quite yet on {concept}.{expected} "
                    "Look at the first step again and try once more."
                )
            else:
                text = f"Thanks for your answer on {concept}. Explain how you got it, step by step."
            source = "offline"
        else:
            user = (
                f"Question: {p.question or '(not given)'}\n"
                f"Learner's answer: {p.answer or '(not given)'}\n"
                f"Expected answer: {p.expected_answer or '(not given)'}\nConcept: {concept}\n"
                f"Judged correct: {correct if correct is not None else 'unknown'}\n"
                f"Give two or three sentences of encouraging, specific feedback."
            )
            text = await self._chat(action, "You are a supportive tutor giving feedback.", user)
            source = "llm"
        self._remember(p.learner_id, "assistant", text)
        verdict = {True: "correct", False: "incorrect", None: "unjudged"}[correct]
        data = {"feedback": text, "correct": correct, "concept": p.concept}
        recs = [] if correct else [f"Review {concept} with a worked example"]
        return self._respond(
            action,
            source,
            f"feedback on a {verdict} answer about {concept}",
            data,
            recommendations=recs or None,
            next_steps=["prepare_hints"] if correct is False else ["get_next_activity"],
        )

    async def _provide_feedback(self, p: ProvideFeedbackInput) -> AgentResponse:
        metrics = {
            k: v
            for k, v in _flatten(p.analysis).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        strengths = sorted(k for k, v in metrics.items() if 0.7 <= v <= 1.0)
        weaknesses = sorted(k for k, v in metrics.items() if 0.0 <= v < 0.5)
        focus = p.focus or (weaknesses[0] if weaknesses else "overall progress")
        if self.offline:
            parts = []
            if strengths:
                parts.append(f"Strong points: {', '.join(strengths)}.")
            if weaknesses:
                parts.append(f"To work on: {', '.join(weaknesses)}.")
            if not parts:
                parts.append(f"I looked at {len(metrics)} measures; keep practising steadily.")
            parts.append(f"Next, focus on {focus}.")
            text, source = " ".join(parts), "offline"
        else:
            user = (
                f"Analysis of the learner (JSON):\n{json.dumps(p.analysis, default=str)[:4000]}\n"
                f"Focus: {focus}\nWrite short, encouraging feedback with one concrete next step."
            )
            text, source = (
                await self._chat("provide_feedback", "You are a supportive tutor.", user),
                "llm",
            )
        self._remember(p.learner_id, "assistant", text)
        data = {
            "feedback": text,
            "strengths": strengths,
            "areasToImprove": weaknesses,
            "focus": focus,
        }
        return self._respond(
            "provide_feedback",
            source,
            f"feedback on {len(metrics)} numeric measures, focus '{focus}'",
            data,
            recommendations=[f"Practise {w}" for w in weaknesses] or None,
        )

    async def _prepare_hints(self, p: HintsInput) -> AgentResponse:
        if self.offline:
            hints, source = _offline_hints(p.concept, p.count), "offline"
        else:
            user = (
                f"Concept: {p.concept}\nQuestion: {p.question or '(not given)'}\n"
                "Difficulty level: "
                f"{p.difficulty_level if p.difficulty_level is not None else 'unknown'}\n"
                f"Write exactly {p.count} hints, one per line, from subtle to explicit. "
                f"Do not give the answer away."
            )
            text = await self._chat(
                "prepare_hints", "You are a tutor writing progressive hints.", user
            )
            hints = [h for h in (_strip_bullet(line) for line in text.splitlines()) if h][: p.count]
            source = "llm"
        data = {"concept": p.concept, "hints": hints, "difficultyLevel": p.difficulty_level}
        return self._respond(
            "prepare_hints",
            source,
            f"{len(hints)} progressive hints for '{p.concept}'",
            data,
            next_steps=["Show one hint at a time"],
        )

    async def _analyze_conversation_patterns(self, p: PatternsInput) -> AgentResponse:
        if p.messages is not None:
            messages = [{"role": m.role, "content": m.content} for m in p.messages]
            where = f"{len(messages)} given messages"
        else:
            messages = list(self._history.get(p.learner_id or "anonymous", []))
            where = f"{len(messages)} recorded messages of learner '{p.learner_id or 'anonymous'}'"
        stats = _conversation_stats(messages)
        if self.offline or not messages:
            summary, source = _stats_summary(stats), "offline"
        else:
            transcript = "\n".join(f"{m['role']}: {m['content']}" for m in messages[-40:])
            summary = await self._chat(
                "analyze_conversation_patterns",
                "You analyse tutoring conversations.",
                f"Transcript:\n{transcript}\n\nIn two sentences, describe the learner's patterns.",
            )
            source = "llm"
        data = {**stats, "summary": summary}
        return self._respond(
            "analyze_conversation_patterns",
            source,
            f"patterns of {where}",
            data,
            recommendations=[_ADVICE[x] for x in stats["patterns"]] or None,
            confidence=None if messages else 0.2,
        )

    async def _predict_with_gpt4(self, p: PredictInput) -> AgentResponse:
        n, k = len(p.history), sum(p.history)
        f = p.features if isinstance(p.features, dict) else {}
        if not n and all(
            isinstance(f.get(x), int) and f[x] >= 0 for x in ("priorCorrect", "priorIncorrect")
        ):
            k, n = f["priorCorrect"], f["priorCorrect"] + f["priorIncorrect"]
        concept = p.concept or "the next item"
        if self.offline:
            probability = (k + 1) / (n + 2)
            why = f"Laplace estimate ({k}+1)/({n}+2) from {n} past answers on {concept}"
            source = "offline"
        else:
            user = (
                f"Concept: {concept}\nPast answers (1 = correct, oldest first): "
                f"{[int(h) for h in p.history]}\n"
                f"Other features: {json.dumps(p.features, default=str)}\n"
                "Reply with JSON only: "
                '{"probability": <P(next answer correct), 0..1>, "reasoning": "<one sentence>"}'
            )
            text = await self._chat("predict_with_gpt4", "You predict learner performance.", user)
            probability, why = self._parse_prediction(text)
            source = "llm"
        data = {
            "concept": p.concept,
            "prediction": round(probability, 4),
            "predictedCorrect": probability >= 0.5,
            "observations": n,
            "method": source,
        }
        return self._respond("predict_with_gpt4", source, why, data)

    def _parse_prediction(self, text: str) -> tuple[float, str]:
        match = re.search(r"\{.*\}", text, re.DOTALL)
        try:
            obj = json.loads(match.group(0)) if match else None
            probability = float(obj["probability"])
            if not 0.0 <= probability <= 1.0:
                raise ValueError
        except (ValueError, TypeError, KeyError):
            raise self._fail(
                "predict_with_gpt4",
                f"LLM at {self.base_url} (model {self.model}) did not "
                f"return JSON with a probability in [0, 1]: {text[:200]!r}",
                retryable=True,
            ) from None
        return probability, str(obj.get("reasoning") or "LLM estimate")


# ----------------------------------------------------------------------------- helpers
def _offline_hints(concept: str, count: int) -> list[str]:
    return [t.format(c=concept) for t in _HINT_TEMPLATES[:count]]


def _earlier_data(context: dict[str, Any]) -> list[dict[str, Any]]:
    """``data`` dicts of the steps that already succeeded in this run, latest first."""
    out = []
    for result in reversed(list((context.get("results") or {}).values())):
        data = result.get("data") if isinstance(result, dict) else getattr(result, "data", None)
        if isinstance(data, dict):
            out.append(data)
    return out


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?")


def _strip_bullet(line: str) -> str:
    return re.sub(r"^\s*(?:[-*•]|\d+[.)]|hint\s*\d*:)\s*", "", line, flags=re.IGNORECASE).strip()


def _conversation_stats(messages: list[dict[str, str]]) -> dict[str, Any]:
    learner = [m["content"] for m in messages if m["role"] in ("user", "learner")]
    tutor = [m["content"] for m in messages if m["role"] in ("assistant", "tutor")]
    learner_words = [len(t.split()) for t in learner]
    tutor_words = sum(len(t.split()) for t in tutor)
    vocab = {w.strip(".,!?;:\"'").lower() for t in learner for w in t.split()} - {""}
    questions = sum(t.rstrip().endswith("?") for t in learner)
    avg = sum(learner_words) / len(learner_words) if learner_words else 0.0
    stats = {
        "turns": len(messages),
        "learnerTurns": len(learner),
        "tutorTurns": len(tutor),
        "avgLearnerWords": round(avg, 2),
        "learnerQuestionRate": round(questions / len(learner), 3) if learner else 0.0,
        "learnerVocabulary": len(vocab),
        "tutorToLearnerWordRatio": round(tutor_words / sum(learner_words), 2)
        if sum(learner_words)
        else None,
    }
    patterns = []
    if learner and avg < 5:
        patterns.append("short_answers")
    if learner and questions / len(learner) >= 0.3:
        patterns.append("asks_questions")
    if stats["tutorToLearnerWordRatio"] is not None and stats["tutorToLearnerWordRatio"] > 3:
        patterns.append("tutor_dominates")
    if not learner:
        patterns.append("no_learner_turns")
    stats["patterns"] = patterns
    return stats


def _stats_summary(stats: dict[str, Any]) -> str:
    if not stats["turns"]:
        return "No conversation recorded yet."
    return (
        f"{stats['turns']} turns ({stats['learnerTurns']} by the learner, averaging "
        f"{stats['avgLearnerWords']} words). "
        f"Patterns: {', '.join(stats['patterns']) or 'none notable'}."
    )


_ADVICE = {
    "short_answers": "Ask open questions that invite longer answers",
    "asks_questions": "Keep encouraging the learner's questions",
    "tutor_dominates": "Talk less; give the learner more turns",
    "no_learner_turns": "Start with a question the learner can answer easily",
}


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
    return str(exc)[:200]


def _dump(completion: Any) -> str:
    try:
        text = completion.model_dump_json(exclude_none=True)
    except AttributeError:
        text = repr(completion)
    return text if len(text) <= 200 else text[:197] + "..."
