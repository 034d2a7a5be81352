"""The agent factory the service tests start `orchkit serve` with (--agent-factory
service_agents:make): the built-in agents, except that an id containing ``-slow`` gets a
``SleepyAgent`` (action ``sleep`` {ms}), so that tests can hold a run in flight, and a
speech agent whose id contains ``-no-extra`` fails as it does without TensorFlow."""

from __future__ import annotations

import asyncio

import orchkit as ok
from orchkit.service import default_agent_factory


class SleepyAgent(ok.Agent):
    ACTIONS = ("sleep",)

    async def process(self, action, input, context):
        if action != "sleep":
            raise ok.AgentError(f"SleepyAgent has no action {action!r}", retryable=False)
        ms = float((input or {}).get("ms", 100))
        await asyncio.sleep(ms / 1000.0)
        return ok.AgentResponse(action=action, confidence=1.0, data={"sleptMs": ms})


def make(kind: str, agent_id: str) -> ok.Agent:
    if "-slow" in agent_id:
        return SleepyAgent(agent_id)
    if kind == "speech" and "-no-extra" in agent_id:
        raise ok.MissingDependencyError(
            f"the {kind} agent needs TensorFlow: pip install 'orchkit[speech]'"
        )
    return default_agent_factory(kind, agent_id)
