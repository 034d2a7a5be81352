"""The agent `orchkit worker --factory soak_agents:make` serves in tests/test_soak.py: it
works ``input.ms`` ms (a sleep) and logs each job it starts on the Redis list
``input.log`` as ``"<jobId> <pid>"`` (the Node soak worker does the same), so the test can
count every execution of every attempt."""

from __future__ import annotations

import asyncio
import os

import orchkit as ok


class SoakAgent(ok.Agent):
    def __init__(self, agent_id: str):
        super().__init__(agent_id)
        self._redis = None

    async def process(self, action, input, context):
        if self._redis is None:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(os.environ["SOAK_REDIS"])
        await self._redis.rpush(input["log"], f"{context['job_id']} {os.getpid()}")
        await asyncio.sleep(input["ms"] / 1000)
        data = {"pid": os.getpid(), "jobId": context["job_id"], "worker": "python"}
        return ok.AgentResponse(action=action, confidence=1.0, reasoning="soak", data=data)

    async def shutdown(self):
        if self._redis is not None:
            await self._redis.aclose()


def make(agent_id: str) -> ok.Agent:
    return SoakAgent(agent_id)
