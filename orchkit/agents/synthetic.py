"""A live agent that behaves like its agent model (SPEC §4.1): it really sleeps, fails and
hangs. Used for live load tests and for checking the simulator against live runs."""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path
from typing import Any

from .._base.errors import AgentError
from .._runtimes.agent import Agent, AgentResponse
from .._spec.models import AgentModels


class SyntheticAgent(Agent):
    """Serves every action by drawing ``(latency_ms, outcome)`` from the model that
    ``models.resolve(agent_id, action)`` gives, from its own rng seeded by ``(seed,
    agent_id)``: agents given the same seed still draw independent streams.

    - ok: sleeps ``latency_ms / 1000 * time_scale`` s, returns an ``AgentResponse`` whose
      ``data`` holds ``latencyMs`` (the drawn, unscaled latency) and ``attempt``.
    - error: sleeps the same, then raises a retryable ``AgentError``.
    - hang: never returns; only cancellation (a step or plan timeout) ends the call.

    ``models`` is an ``AgentModels`` or the path of a models file; ``capacity`` defaults to
    the model's. Draws are taken in call order, so concurrent calls get the draws in the
    order the agent was called. ``time_scale`` (>= 0) shrinks or stretches the real sleeps
    (0.01: one model second is 10 ms of wall time); the live runtime records it with the
    run's spans (``spans.attrs["time_scale"]``), so ``ok.fit_models`` fits model times.
    """

    def __init__(
        self,
        agent_id: str,
        models: AgentModels | str | Path,
        *,
        seed: int = 0,
        capacity: int | None = None,
        time_scale: float = 1.0,
    ):
        if not isinstance(models, AgentModels):
            models = AgentModels.load(models)
        if (
            not isinstance(time_scale, (int, float))
            or not math.isfinite(time_scale)
            or time_scale < 0
        ):
            raise ValueError(
                f"agent '{agent_id}': time_scale must be a finite number >= 0, got {time_scale!r}"
            )
        # raises PlanValidationError listing the patterns if no entry serves this id
        model_capacity = models.capacity(agent_id)
        super().__init__(agent_id, capacity=capacity if capacity is not None else model_capacity)
        self.models = models
        self.seed = seed
        self.time_scale = float(time_scale)
        self._rng = random.Random(f"{seed}:{agent_id}")

    async def process(self, action: str, input: Any, context: dict[str, Any]) -> AgentResponse:
        """Sleep, fail or hang as the (agent, action) model draws; see the class docstring."""
        model = self.models.resolve(self.agent_id, action)
        latency_ms, outcome = model.draw(self._rng)
        attempt = (context or {}).get("attempt")
        if outcome == "hang":
            await asyncio.get_running_loop().create_future()  # until cancelled
        await asyncio.sleep(latency_ms / 1000.0 * self.time_scale)
        if outcome == "error":
            raise AgentError(
                f"agent '{self.agent_id}' action '{action}': synthetic error after "
                f"{latency_ms:.1f} ms (model error probability {model.error:g})",
                retryable=True,
            )
        return AgentResponse(
            action=action,
            confidence=1.0 - model.error,
            reasoning=f"synthetic response after {latency_ms:.1f} ms",
            data={"synthetic": True, "latencyMs": latency_ms, "attempt": attempt},
        )


def scaled_plan(plan: Any, time_scale: float) -> Any:
    """``plan`` with every time multiplied by ``time_scale`` (plan and step ``timeout``,
    and every ``…Ms`` field such as ``backoffMs``; fallback plans too; not ``input`` or
    ``meta``): the live twin of a plan whose agents are ``SyntheticAgent(time_scale=…)``,
    so timeouts and backoffs keep their proportion to the agents' scaled latencies."""
    from .._spec.plan import Plan

    if not isinstance(time_scale, (int, float)) or not math.isfinite(time_scale) or time_scale <= 0:
        raise ValueError(f"time_scale must be a finite number > 0, got {time_scale!r}")

    def scale(node: Any) -> Any:
        if isinstance(node, list):
            return [scale(v) for v in node]
        if not isinstance(node, dict):
            return node
        return {
            k: (
                v
                if k in ("input", "meta")
                else v * time_scale
                if (k == "timeout" or k.endswith("Ms"))
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
                else scale(v)
            )
            for k, v in node.items()
        }

    return Plan.model_validate(scale(Plan.model_validate(plan).to_dict()))
