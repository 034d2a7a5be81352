"""Agents that `orchkit worker --factory remote_agents:make` serves in tests/test_remote*.py.

Every action reads its ``input``; ``marker`` (a file path) records what happened in the
worker process ("started <pid>", "cancelled", "finished"), so a test can see it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import orchkit as ok

_made = itertools.count(1)


def _mark(input, text: str) -> None:
    if isinstance(input, dict) and input.get("marker"):
        with open(input["marker"], "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


class ScriptAgent(ok.Agent):
    def __init__(self, agent_id: str):
        super().__init__(agent_id)
        self.serial = next(_made)  # which agent object of this worker process served it

    async def process(self, action, input, context):
        input = input or {}
        data = {
            "pid": os.getpid(),
            "agentId": self.agent_id,
            "serial": self.serial,
            "attempt": context["attempt"],
            "input": input,
        }
        _mark(input, f"started {os.getpid()} attempt {context['attempt']}")
        if action == "echo":
            data["seen"] = {sid: r.data for sid, r in context["results"].items()}
        elif action == "sleep":
            ms = input.get("ms", 0) if context["attempt"] in input.get("sleep_on", [1]) else 0
            try:
                await asyncio.sleep(ms / 1000)
            except asyncio.CancelledError:
                _mark(input, "cancelled")
                raise
        elif action == "stubborn":  # ignores cancellation on its first attempt
            if context["attempt"] == 1:
                await asyncio.shield(asyncio.sleep(input.get("ms", 0) / 1000))
        elif action == "fail":
            raise ok.AgentError(
                input.get("message", "scripted failure"), retryable=input.get("retryable", True)
            )
        elif action == "crash":
            raise ValueError("scripted bug")
        elif action == "insight":
            self.emit("insight", {"type": "struggling_detected", "learnerId": "l-1"})
        else:
            raise ok.AgentError(f"no action {action!r}", retryable=False)
        _mark(input, "finished")
        return ok.AgentResponse(action=action, confidence=1.0, reasoning="scripted", data=data)


def make(agent_id: str) -> ok.Agent:
    return ScriptAgent(agent_id)


def read(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []
