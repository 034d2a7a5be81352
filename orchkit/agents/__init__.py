"""The built-in live agents. Imported lazily: ``import orchkit`` never imports
scikit-learn, openai or TensorFlow, and simulation never needs them."""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any

from .._base.deps import missing, require
from .._base.errors import PlanValidationError

_WHERE = {
    "PersonalizedLearningAgent": ".learning",
    "AITutorAgent": ".tutor",
    "SpeechAnalysisAgent": ".speech",
    "SyntheticAgent": ".synthetic",
}

_NEEDS = {  # agent class -> (module it cannot work without, what it is for the message)
    "PersonalizedLearningAgent": ("sklearn", "the learning agent (PersonalizedLearningAgent)"),
    "SpeechAnalysisAgent": ("tensorflow", "the speech agent (SpeechAnalysisAgent)"),
}

BUILTIN = {  # agent id glob -> the built-in agent class serving it
    "learning-agent-*": "PersonalizedLearningAgent",
    "tutor-agent-*": "AITutorAgent",
    "speech-agent-*": "SpeechAnalysisAgent",
}

__all__ = sorted(_WHERE) + ["BUILTIN", "for_plan", "make_agent", "scaled_plan"]


def for_plan(
    plan: Any,
    models: Any = None,
    time_scale: float = 1.0,
    *,
    seed: int = 0,
    redis: str | None = None,
) -> list:
    """One agent per agent id of ``plan`` and its fallbacks: the built-in agent whose glob
    in ``BUILTIN`` matches the id, else a ``SyntheticAgent`` of ``models`` (a path or
    AgentModels; it sleeps latency x ``time_scale``; its draws come from ``seed`` and its
    id, so no two agents share a stream). Raises ``PlanValidationError`` for an
    id no glob matches when ``models`` is None. With ``redis`` (a Redis URL), a
    ``RemoteAgent`` per id instead, served by ``orchkit worker`` processes."""
    ids = dict.fromkeys(s.agent_id for p in plan.chain() for s in p.steps)
    if redis is not None:
        from .remote import RemoteAgent

        return [RemoteAgent(agent_id, redis) for agent_id in ids]
    return [
        make_agent(agent_id, models, time_scale, seed=seed, plan_id=plan.id) for agent_id in ids
    ]


def make_agent(
    agent_id: str,
    models: Any = None,
    time_scale: float = 1.0,
    *,
    seed: int = 0,
    plan_id: str | None = None,
) -> Any:
    """The agent ``for_plan`` gives ``agent_id`` (also what ``orchkit worker`` serves)."""
    name = next((cls for pat, cls in BUILTIN.items() if fnmatch.fnmatchcase(agent_id, pat)), None)
    if name is not None:
        return __getattr__(name)(agent_id)
    if models is not None:
        return __getattr__("SyntheticAgent")(agent_id, models, seed=seed, time_scale=time_scale)
    where = f"plan '{plan_id}': " if plan_id else ""
    raise PlanValidationError(
        f"{where}no built-in agent serves '{agent_id}' (built-in: {', '.join(BUILTIN)}); "
        "rename it or pass models (--models M) to serve it with a SyntheticAgent"
    )


def scaled_plan(plan: Any, time_scale: float) -> Any:
    """``plan`` with every time (timeouts, backoffs, …Ms fields) multiplied by
    ``time_scale``: run it live with ``for_plan(plan, models, time_scale)``'s agents."""
    from .synthetic import scaled_plan as scale

    return scale(plan, time_scale)


def __getattr__(name: str) -> Any:
    """The agent class ``name``, imported on first use; ``MissingDependencyError`` (naming
    the extra) when the library it needs is not installed."""
    if name not in _WHERE:
        raise AttributeError(f"module 'orchkit.agents' has no attribute {name!r}")
    if name in _NEEDS:
        require(*_NEEDS[name])
    try:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    except ModuleNotFoundError as exc:  # a library under the one we checked
        raise missing(exc.name or "?", f"orchkit.agents.{name}") from None
