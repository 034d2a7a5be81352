"""Agents as the live runtime sees them: the ``Agent`` base class and ``AgentResponse``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .._base.errors import AgentError


class AgentResponse(BaseModel):
    """What an agent returns for one attempt (the seed's shape).

    An agent may also return a dict of this shape (camelCase or snake_case keys); extra
    keys are kept. Anything else fails the attempt with a retryable error naming the agent,
    the action and what came back.

    Attributes:
        action: The action served.
        confidence: How sure the agent is, in [0, 1].
        reasoning: Why, in words (may be empty).
        data: The action's result (any JSON-like value).
        recommendations: Optional list of recommendations.
        next_steps: Optional list of suggested next steps (``nextSteps``).

    Example:
        ```python
        ok.AgentResponse(action="prepare_hints", confidence=0.8, data={"hints": ["..."]})
        ```
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    action: str
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str = ""
    data: Any = None
    recommendations: list[Any] | None = None
    next_steps: list[Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The response as the seed's agents return it.

        Returns:
            A camelCase dict without the fields that are None.
        """
        return self.model_dump(by_alias=True, exclude_none=True)


def coerce_response(value: Any, agent_id: str, action: str) -> AgentResponse:
    """Turn what an agent returned into an ``AgentResponse`` or raise ``AgentError``."""
    if isinstance(value, AgentResponse):
        return value
    if isinstance(value, dict):
        try:
            return AgentResponse.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'response'}: {e['msg']}" for e in exc.errors()
            )
            raise AgentError(
                f"agent '{agent_id}' action '{action}' returned an invalid response "
                f"({problems}): {_short(value)}"
            ) from None
    raise AgentError(
        f"agent '{agent_id}' action '{action}' returned {type(value).__name__} "
        f"{_short(value)}, not an AgentResponse "
        "(return ok.AgentResponse(action=..., confidence=...))"
    )


def _short(value: Any, limit: int = 120) -> str:
    text = describe(value, repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any, text: Callable[[Any], str] | None = None) -> str:
    """``value`` as text for a message, never raising: ``text(value)`` (default: an
    exception as "Type: message"), or "<unprintable Type>" if that raises."""
    name = type(value).__name__
    try:
        return text(value) if text is not None else f"{name}: {value}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - a broken __str__/__repr__ must not hide the failure
        return f"<unprintable {name}>"


AGENT_KINDS = ("insight", "error")  # the kinds an agent emits under the bus's own names


def agent_event(agent_id: str, kind: str) -> str:
    """The bus event an agent's ``emit(kind, ...)`` becomes: ``agent:insight`` and
    ``agent:error``; any other kind is the agent's own, ``agent:<agent_id>:<kind>``, so an
    agent can never forge an orchestrator event such as ``agent:registered``."""
    return f"agent:{kind}" if kind in AGENT_KINDS else f"agent:{agent_id}:{kind}"


class Agent:
    """Base class of live agents.

    Subclass it and implement ``async process(action, input, context)``, returning an
    ``AgentResponse`` (or a dict of that shape); a plain ``def process`` works too, but
    it blocks the event loop while it runs and cannot be cancelled by a timeout. Raise
    ``AgentError(msg, retryable=False)`` for a permanent failure; any other exception fails
    the attempt with a retryable error. Register it with ``Orchestrator.register_agent``.

    Args:
        agent_id: The id steps name in ``agentId``; a non-empty string.
        capacity: The most attempts the agent serves at once (the others wait FIFO, and
            the wait counts toward the step's timeout); None (default): unlimited, or the
            class attribute ``capacity`` when a subclass sets one.

    Raises:
        ValueError: An empty ``agent_id``, or a ``capacity`` that is not an int >= 1.

    Example:
        ```python
        class Echo(ok.Agent):
            async def process(self, action, input, context):
                return ok.AgentResponse(action=action, confidence=0.9, data=input)

        await orch.register_agent(Echo("learning-agent-123", capacity=4))
        ```
    """

    capacity: int | None = None

    def __init__(self, agent_id: str, *, capacity: int | None = None):
        if not isinstance(agent_id, str) or not agent_id:
            raise ValueError("agent id must be a non-empty string")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(
                f"agent '{agent_id}': capacity must be an int >= 1 or None, got {capacity!r}"
            )
        self.agent_id = agent_id
        if capacity is not None:
            self.capacity = capacity
        self._listeners: list[Callable[[str, Any], None]] = []
        self.orchestrator: Any = None  # set by Orchestrator.register_agent

    async def initialize(self) -> None:
        """Called once by ``Orchestrator.register_agent``; load models, open clients."""

    async def shutdown(self) -> None:
        """Called by ``Orchestrator.shutdown``; release what ``initialize`` acquired."""

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        """Serve one attempt of ``action`` with the step's ``input``.

        Args:
            action: The step's ``action``.
            input: The step's ``input`` (plain JSON).
            context: ``plan_id``, ``step_id``, ``attempt`` (1-based), ``run_id``, ``job_id``
                (the attempt's ``jobId`` in events) and ``results`` (step id ->
                AgentResponse of the steps that already succeeded).

        Returns:
            The response (or a dict of its shape).

        Raises:
            AgentError: The attempt failed; ``retryable=False`` fails the step at once.
        """
        raise AgentError(f"agent '{self.agent_id}' does not implement process()", retryable=False)

    def job_ref(self, job_id: str) -> str | None:
        """The id, in the system that ran it, of the attempt whose ``jobId`` is ``job_id``.

        The live runtime asks once, when the attempt ends, and adds it to
        ``queue:completed`` / ``queue:failed`` as ``bullJobId``.

        Args:
            job_id: The attempt's ``jobId`` (``runId:planId:stepId:attempt``).

        Returns:
            The id (RemoteAgent: its BullMQ job id), or None (the default: no other system).
        """
        return None

    def emit(self, kind: str, payload: Any) -> None:
        """Report ``payload`` to the orchestrator's bus.

        Args:
            kind: ``"insight"`` and ``"error"`` become ``agent:insight`` {agentId, insight,
                timeMs} / ``agent:error`` {agentId, error, timeMs}; any other kind is the
                agent's own, ``agent:<agent_id>:<kind>`` {agentId, <kind>, timeMs} (never
                an orchestrator event).
            payload: What to report (any value).

        Raises:
            ValueError: ``kind`` is not a non-empty string.
        """
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(
                f"agent '{self.agent_id}': emit() kind must be a non-empty string "
                f"such as 'insight' or 'error', got {_short(kind)}"
            )
        for listener in list(self._listeners):
            listener(kind, payload)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.agent_id!r})"
