"""The built-in live agents. Imported lazily: ``import orchkit`` never imports
scikit-learn, openai or TensorFlow, and simulation never needs them."""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any

from .._base.deps import missing, require
from .._base.errors import MissingDependencyError, PlanValidationError

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

KINDS = {"learning": "learning-agent-*", "tutor": "tutor-agent-*", "speech": "speech-agent-*"}

__all__ = sorted(_WHERE) + ["BUILTIN", "KINDS", "for_plan", "kind_of", "make_agent", "scaled_plan"]


def kind_of(agent_id: str) -> str | None:
    """The built-in kind serving ``agent_id`` ("learning", "tutor", "speech"), or None."""
    return next((k for k, pat in KINDS.items() if fnmatch.fnmatchcase(agent_id, pat)), None)


def _stands_in(agent_id: str, simulate: Any) -> bool:
    """Whether ``simulate`` (kinds such as "speech", agent id globs, or "all") names
    ``agent_id``: a SyntheticAgent of the models stands in for it."""
    for item in simulate or ():
        pattern = "*" if item == "all" else KINDS.get(item, item)
        if fnmatch.fnmatchcase(agent_id, pattern):
            return True
    return False


def for_plan(
    plan: Any,
    models: Any = None,
    time_scale: float = 1.0,
    *,
    seed: int = 0,
    redis: str | None = None,
    simulate: Any = (),
) -> list:
    """One agent per agent id of ``plan`` and its fallbacks: the built-in agent whose glob
    in ``BUILTIN`` matches the id, else a ``SyntheticAgent`` of ``models`` (a path or
    AgentModels; it sleeps latency x ``time_scale`` ms; its draws come from ``seed`` and its
    id, so no two agents share a stream). ``simulate`` (kinds "learning", "tutor",
    "speech", agent id globs, or "all") makes a SyntheticAgent stand in for the built-in
    agents it names, e.g. ``simulate=["speech"]`` without TensorFlow. Raises
    ``PlanValidationError`` for an id no glob matches when ``models`` is None, and
    ``MissingDependencyError`` (with ``agent_id``) for a built-in agent whose library is
    missing. With ``redis`` (a Redis URL), a ``RemoteAgent`` per id instead, served by
    ``orchkit worker`` processes."""
    ids = dict.fromkeys(s.agent_id for p in plan.chain() for s in p.steps)
    if redis is not None:
        from .remote import RemoteAgent

        return [RemoteAgent(agent_id, redis) for agent_id in ids]
    return [
        make_agent(agent_id, models, time_scale, seed=seed, plan_id=plan.id, simulate=simulate)
        for agent_id in ids
    ]


def make_agent(
    agent_id: str,
    models: Any = None,
    time_scale: float = 1.0,
    *,
    seed: int = 0,
    plan_id: str | None = None,
    simulate: Any = (),
) -> Any:
    """The agent ``for_plan`` gives ``agent_id`` (also what ``orchkit worker`` serves)."""
    name = next((cls for pat, cls in BUILTIN.items() if fnmatch.fnmatchcase(agent_id, pat)), None)
    if name is not None and _stands_in(agent_id, simulate):
        if models is None:
            raise PlanValidationError(
                f"agent '{agent_id}': simulating it needs agent models (a SyntheticAgent "
                "draws from them): pass models, e.g. ok.examples.models()"
            )
        name = None  # a SyntheticAgent below
    if name is not None:
        try:
            cls = __getattr__(name)
        except MissingDependencyError as exc:
            exc.agent_id = agent_id  # type: ignore[attr-defined]  # what could stand in
            raise
        return cls(agent_id)
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
