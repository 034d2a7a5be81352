"""The agent factory the dashboard tests start `orchkit serve` with (--agent-factory
dashboard_agents:make): an id containing ``-dash`` gets a ``ScriptAgent`` whose behaviour
the plan's step input says — action ``work`` {ms, fail, error}: wait ``ms``, then fail the
step's first ``fail`` attempts with ``error`` (retryable), else succeed. Other ids get the
service tests' agents (service_agents:make)."""

from __future__ import annotations

import asyncio

import service_agents

import orchkit as ok


class ScriptAgent(ok.Agent):
    ACTIONS = ("work",)

    async def process(self, action, input, context):
        input = input or {}
        await asyncio.sleep(float(input.get("ms", 10)) / 1000.0)
        attempt = int(context.get("attempt") or 1)
        if attempt <= int(input.get("fail", 0)):
            raise ok.AgentError(
                f"{input.get('error', 'scripted failure')} (attempt {attempt})", retryable=True
            )
        return ok.AgentResponse(action=action, confidence=1.0, data={"attempt": attempt})


def make(kind: str, agent_id: str) -> ok.Agent:
    if "-dash" in agent_id:
        return ScriptAgent(agent_id)
    return service_agents.make(kind, agent_id)
