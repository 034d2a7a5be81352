"""Test doubles for users testing their own plans: a scripted agent.

```python
from orchkit.testing import ScriptedAgent, Ok, Fail, Hang, Garbage

agent = ScriptedAgent("learning-agent-123", {
    # fail twice, then succeed in 30 ms
    "fetch_external_data": [Fail(10), Fail(10), Ok(30)],
    # never returns: only a timeout ends it
    "predict_with_ml": [Hang()],
}, default=Ok(5))
```

A script maps a step id, an action or ``"*"`` (looked up in that order) to the outcomes of
successive attempts; when a list runs out, ``default`` applies. Every call is recorded in
``agent.calls``.

``ScriptedModels([agent, ...])`` plays the same scripts in the simulator
(``ok.simulate(plan, ScriptedModels([...]))``), so a plan can be run live and simulated
with identical outcomes; there, scripts are keyed by action or ``"*"`` only.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._base.errors import AgentError, PlanValidationError
from ._runtimes.agent import Agent, AgentResponse


@dataclass(frozen=True)
class Ok:
    """Succeed after ``latency_ms`` with ``data`` (and ``confidence``).

    Attributes:
        latency_ms: How long the attempt takes, ms.
        data: The response's ``data``.
        confidence: The response's ``confidence``, in [0, 1].
    """

    latency_ms: float = 0.0
    data: Any = None
    confidence: float = 1.0


@dataclass(frozen=True)
class Fail:
    """Raise ``AgentError(message, retryable=retryable)`` after ``latency_ms``.

    Attributes:
        latency_ms: How long the attempt takes before it fails, ms.
        message: The error message (the step's error).
        retryable: False fails the step at once, whatever its retry policy.
    """

    latency_ms: float = 0.0
    message: str = "scripted failure"
    retryable: bool = True


@dataclass(frozen=True)
class Hang:
    """Never return; only a step timeout, the plan deadline or cancellation ends it."""


@dataclass(frozen=True)
class Garbage:
    """Return ``value`` (not a valid AgentResponse) after ``latency_ms``: the attempt fails
    with a retryable error naming what came back (live only; simulated, an ``error``).

    Attributes:
        latency_ms: How long the attempt takes, ms.
        value: What the agent returns.
    """

    latency_ms: float = 0.0
    value: Any = "not a response"


@dataclass(frozen=True)
class Crash:
    """Raise ``exception`` (not an AgentError) after ``latency_ms``: the attempt fails with a
    retryable error naming its type (live only; simulated, an ``error``).

    Attributes:
        latency_ms: How long the attempt takes, ms.
        exception: What the agent raises (default ``RuntimeError("scripted crash")``).
    """

    latency_ms: float = 0.0
    exception: BaseException = field(default_factory=lambda: RuntimeError("scripted crash"))


Outcome = Ok | Fail | Hang | Garbage | Crash


@dataclass(frozen=True)
class Call:
    """One call a ScriptedAgent received (``agent.calls``).

    Attributes:
        step_id: The step the attempt was for.
        action: The action called.
        attempt: The attempt's number (1-based).
        input: The step's input.
        outcome: The scripted outcome it played.
    """

    step_id: str
    action: str
    attempt: int
    input: Any
    outcome: Outcome


class ScriptedAgent(Agent):
    """An agent whose latency and outcome per attempt are given (see the module docstring).

    Args:
        agent_id: The id steps name in ``agentId``.
        script: A step id, an action or ``"*"`` (looked up in that order) -> the outcomes
            of successive attempts (``Ok``, ``Fail``, ``Hang``, ``Garbage``, ``Crash``).
        default: The outcome once a list runs out, or for a call no key matches
            (default ``Ok()``: succeed at once).
        capacity: The most attempts served at once (None: unlimited).

    Attributes:
        calls: Every call received, in order (``Call`` records).
    """

    def __init__(
        self,
        agent_id: str,
        script: Mapping[str, Sequence[Outcome]] | None = None,
        *,
        default: Outcome = Ok(),
        capacity: int | None = None,
    ):
        super().__init__(agent_id, capacity=capacity)
        self._script = {key: list(outcomes) for key, outcomes in (script or {}).items()}
        self._used: dict[str, int] = {}
        self.default = default
        self.calls: list[Call] = []

    def _next(self, step_id: str, action: str) -> Outcome:
        for key in (step_id, action, "*"):
            outcomes = self._script.get(key)
            if outcomes is not None:
                i = self._used.get(key, 0)
                self._used[key] = i + 1
                return outcomes[i] if i < len(outcomes) else self.default
        return self.default

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        outcome = self._next(context["step_id"], action)
        self.calls.append(Call(context["step_id"], action, context["attempt"], input, outcome))
        if isinstance(outcome, Hang):
            await asyncio.Event().wait()
        if outcome.latency_ms:
            await asyncio.sleep(outcome.latency_ms / 1000.0)
        if isinstance(outcome, Fail):
            raise AgentError(outcome.message, retryable=outcome.retryable)
        if isinstance(outcome, Garbage):
            return outcome.value
        if isinstance(outcome, Crash):
            raise outcome.exception
        return AgentResponse(
            action=action, confidence=outcome.confidence, reasoning="scripted", data=outcome.data
        )


class _ScriptedAction:
    def __init__(self, agent: ScriptedAgent, action: str):
        self.agent, self.action = agent, action

    def draw(self, rng: Any) -> tuple[float, str]:
        outcome = self.agent._next("", self.action)
        if isinstance(outcome, Hang):
            return math.inf, "hang"
        if isinstance(outcome, Ok):
            return outcome.latency_ms, "ok"
        if isinstance(outcome, Fail) and not outcome.retryable:
            return outcome.latency_ms, "fatal"
        return outcome.latency_ms, "error"


class ScriptedModels:
    """Agent models for the simulator that replay ScriptedAgents' scripts (see module doc).

    Pass it where agent models go: ``ok.simulate(plan, ScriptedModels([agent, ...]))``.
    Scripts are keyed by action or ``"*"`` only (a step id is not known when an attempt is
    drawn). Use fresh ScriptedAgent objects: scripts are consumed as attempts are drawn.
    ``Garbage`` and ``Crash`` play as errors, ``Fail(retryable=False)`` as a non-retryable
    one.

    Args:
        agents: The scripted agents, one per agent id the plan calls.

    Raises:
        PlanValidationError: When the plan is checked: a step names an agent with no
            script.
    """

    def __init__(self, agents: Iterable[ScriptedAgent]):
        self._agents = {a.agent_id: a for a in agents}

    def resolve(self, agent_id: str, action: str) -> _ScriptedAction:
        return _ScriptedAction(self._agents[agent_id], action)

    def capacity(self, agent_id: str) -> int | None:
        return self._agents[agent_id].capacity

    def check_plan(self, plan: Any) -> None:
        for p in plan.chain():
            for step in p.steps:
                if step.agent_id not in self._agents:
                    raise PlanValidationError(
                        f"plan '{p.id}' step '{step.id}': no scripted agent '{step.agent_id}' "
                        f"(scripted: {', '.join(self._agents)})"
                    )
