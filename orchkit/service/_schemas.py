"""Request and response models of the REST API (the OpenAPI schema at /docs is built from
these), and the one table from refusal to HTTP status shared by REST and Socket.IO."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._base.errors import (
    AgentError,
    MissingDependencyError,
    NoSessionError,
    PlanValidationError,
    RunNotFoundError,
    ServiceError,
    UnknownActionError,
)

LEARNER_ID = r"^[A-Za-z0-9_.@:-]{1,128}$"
AgentKind = Literal["learning", "tutor", "speech"]
RunStatus = Literal["running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"]


def error_status(exc: BaseException) -> int:
    """The HTTP status (also used in socket acks) for an error the service raised."""
    if isinstance(exc, UnknownActionError):
        return 400
    if isinstance(exc, RunNotFoundError):
        return 404
    if isinstance(exc, MissingDependencyError):  # e.g. a speech agent on a server without TF
        return 501
    if isinstance(exc, (NoSessionError, ServiceError)):
        return 409
    if isinstance(exc, AgentError):
        return 503 if exc.retryable else 422
    if isinstance(exc, (PlanValidationError, ValueError, TypeError)):
        return 422
    return 500


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentRequest(_In):
    """``POST /api/agents``: a session action, or (with ``agent``) an agent's own action."""

    action: str = Field(
        min_length=1,
        max_length=100,
        examples=["start_session"],
        description="start_session | process_interaction | end_session, or an "
        "action of the agent named by `agent`",
    )
    learnerId: str = Field(pattern=LEARNER_ID, examples=["student_42"])
    agent: AgentKind | None = Field(
        default=None,
        description="whose action it is, for an agent action (learning | tutor | speech)",
    )
    data: dict[str, Any] = Field(
        default_factory=dict, examples=[{"subject": "mathematics", "gradeLevel": 5}]
    )


class StepOutcome(BaseModel):
    success: bool
    data: Any = None
    error: str | None = None


class Orchestration(BaseModel):
    success: bool
    duration: float = Field(description="ms")
    results: dict[str, StepOutcome]


class SessionAgents(BaseModel):
    model_config = ConfigDict(extra="allow")
    learning: str
    tutor: str


class StartSessionResponse(BaseModel):
    sessionId: str
    agents: SessionAgents
    status: Literal["ready", "failed"]
    orchestration: Orchestration
    timestamp: str


class InteractionResult(BaseModel):
    correct: bool | None
    nextActivity: dict[str, Any] | None
    adaptations: dict[str, Any]


class InteractionResponse(BaseModel):
    success: bool
    response: InteractionResult
    confidence: float
    reasoning: str
    timestamp: str


class EndSessionResponse(BaseModel):
    success: bool
    sessionId: str
    status: Literal["ended"]
    durationMs: float
    timestamp: str


class AgentActionResponse(BaseModel):
    success: bool
    agent: AgentKind
    agentId: str
    response: dict[str, Any] = Field(
        description="the agent's response (action, confidence, "
        "reasoning, data, recommendations, nextSteps)"
    )
    timestamp: str


AgentResponseBody = (
    StartSessionResponse | InteractionResponse | EndSessionResponse | AgentActionResponse
)


class RunAccepted(BaseModel):
    runId: str


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="ignore")
    runId: str
    planId: str
    status: RunStatus
    kind: str = Field(description="api (POST /api/runs) or session (a session's initialisation)")
    learnerId: str | None = None
    createdAt: str
    createdMs: float
    finishedAt: str | None = None
    durationMs: float | None = None
    error: str | None = None


class RunRecord(RunSummary):
    model_config = ConfigDict(extra="allow")
    plan: dict[str, Any]
    result: dict[str, Any] | None = Field(
        description="success, planId, results, errors, stepStates, durationMs, fallbackChain"
    )
    spans: list[dict[str, Any]] = Field(
        description="one row per attempt, times in ms from the run's start (orchkit.SPAN_COLUMNS)"
    )
    events: list[dict[str, Any]] = Field(description="the run's bus events, in order (seq)")


class RunList(BaseModel):
    runs: list[RunSummary]
    nextCursor: str | None = Field(
        None, description="pass as `cursor` for the next (older) page; null on the last page"
    )


class PlanValid(BaseModel):
    valid: Literal[True]
    planId: str
    plans: int = Field(description="the plan and its fallbacks")
    steps: int


class AgentInfo(BaseModel):
    id: str
    kind: str
    type: str
    capacity: int | None
    inFlight: int
    waiting: int
    breaker: str | None = Field(
        None,
        description="closed | open | half_open, for an agent with "
        "a circuit breaker (--policies) that has been called",
    )
    learnerId: str | None


class AgentList(BaseModel):
    agents: list[AgentInfo]


class WorkerInfo(BaseModel):
    id: str
    lastSeenMs: float | None = Field(None, description="when it was last heard from (epoch ms)")
    concurrency: int | None = Field(None, description="attempts it runs at once, if known")


class AgentHealth(BaseModel):
    agentId: str
    kind: str
    type: str
    capacity: int | None
    capacityNow: int | None = Field(
        None,
        description="the capacity in force (an autoscaler's, SPEC §17), or null: unlimited",
    )
    admissionLimit: int | None = Field(
        None, description="the usable admission limit (SPEC §17), or null: no limit"
    )
    inFlight: int
    waiting: int
    breaker: str | None = Field(None, description="closed | open | half_open, or null")
    p95Ms5m: float | None = Field(
        description="95th percentile of the attempts that ended in the last 5 minutes (ms)"
    )
    errorRate5m: float = Field(description="share of those attempts that failed (0..1)")
    workers: list[WorkerInfo] = Field(description="what serves the agent's attempts")


class LearnerState(BaseModel):
    learnerId: str
    session: dict[str, Any] | None
    insights: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description='"degraded" while records wait for an unavailable store'
    )
    unsavedRecords: int = Field(
        0, description="records the store refused, kept and retried until written"
    )
    storeError: str | None = Field(None, description="why the store refused the oldest one")
    store: str
    uptimeMs: float
    runsInFlight: int
    sessionsActive: int


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, naming the field, and the fix")
    errors: list[dict[str, Any]] | None = None


ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "malformed JSON, or an unknown action (the valid ones are listed)",
        401: "missing or wrong bearer key (ORCHKIT_API_KEY is set)",
        413: "request body larger than the limit (default 1 MiB)",
        422: (
            "a field has the wrong type or value, the plan is invalid, "
            "or the agent refused the input"
        ),
    }.items()
}


class LearnerAnalytics(BaseModel):
    """``GET /api/analytics/learners/{id}``: the learner's mastery per skill (BKT)."""

    learnerId: str
    responses: int = Field(description="responses recorded for the learner")
    masteryThreshold: float = Field(description="P(mastered) from which a skill is mastered")
    skills: dict[str, dict[str, Any]] = Field(
        description="per skill: mastery, mastered, opportunities, correct, "
        "opportunitiesToMastery, wheelSpinning, params {prior, learn, guess, slip, source}, "
        "trajectory [{tsMs, at, correct, mastery, runId}]"
    )


class CohortAnalytics(BaseModel):
    """``GET /api/analytics/cohort``: mastery, wheel-spinning and learning by tutor outcome."""

    since: str | None
    sinceMs: float | None
    learners: int = Field(description="learners with a response at or after since")
    responses: int = Field(description="responses at or after since")
    masteryThreshold: float
    wheelSpinOpportunities: int
    masteryRate: float | None = Field(description="share of (learner, skill) pairs mastered")
    medianOpportunitiesToMastery: float | None
    wheelSpinRate: float | None = Field(
        description="share of decided (learner, skill) pairs with wheelSpinOpportunities "
        "opportunities and no mastery"
    )
    skills: dict[str, dict[str, Any]]
    byOutcome: dict[str, dict[str, Any]] = Field(
        description="per tutor outcome (ok, fallback, timeout, shed, error, none, unknown): "
        "interactions (answers with a next one on the skill), learners, gain, normGain, "
        "nextCorrect, each with Ci [low, high] and VsOk [diff, low, high] against ok (null "
        "without an ok group); 95 % percentile bootstrap over learners, seeded"
    )
    tutorLatencyP95Ms: float | None
    servedResponses: int = Field(description="responses joined to a run with a tutor attempt")
