"""The agent factory the service tests start `orchkit serve` with (--agent-factory
service_agents:make): the built-in agents, except that an id containing ``-slow`` gets a
``SleepyAgent`` (action ``sleep`` {ms}), so that tests can hold a run in flight, a
speech agent whose id contains ``-no-extra`` fails as it does without TensorFlow, and an
id containing ``-twin`` gets a ``SyntheticAgent`` of ``TWIN_MODELS`` (random latencies and
errors: traffic for the digital twin's tests)."""

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


TWIN_MODELS = ok.AgentModels.from_dict(
    {
        "agents": {
            "tutor-agent-*": {
                "capacity": 4,
                "error": 0.05,
                "latency": {"dist": "lognormal", "median": 20, "p95": 60},
            },
            "learning-agent-*": {
                "capacity": 8,
                "latency": {"dist": "gamma", "mean": 8, "cv": 0.5},
            },
        }
    }
)


def make(kind: str, agent_id: str) -> ok.Agent:
    if "-twin" in agent_id:
        return ok.agents.SyntheticAgent(agent_id, TWIN_MODELS, seed=0)
    if "-slow" in agent_id:
        return SleepyAgent(agent_id)
    if kind == "speech" and "-no-extra" in agent_id:
        raise ok.MissingDependencyError(
            f"the {kind} agent needs TensorFlow: pip install 'orchkit[speech]'"
        )
    return default_agent_factory(kind, agent_id)
