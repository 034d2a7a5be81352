"""orchkit: design, simulate, tune and run orchestration plans for AI agents.

Every time in the public API is in milliseconds.

Names are imported on first use (PEP 562 module ``__getattr__``), so ``import orchkit``
and the light commands (``orchkit validate``, ``export``, ``--help``) never import pandas,
numpy, SimPy or plotly; ``from orchkit import X`` and ``dir(orchkit)`` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (AgentError, MissingDependencyError, NoSessionError, OrchkitError,
                      PlanFailedError, PlanTimeoutError, PlanValidationError, RunNotFoundError,
                      ServiceError, UnknownActionError)

__version__ = "0.1.0"

_LAZY = {  # public name -> the module defining it (imported on first use)
    "Agent": "._agent", "AgentResponse": "._agent",
    "draw": "._charts", "gantt": "._charts", "makespan_chart": "._charts",
    "utilisation_chart": "._charts",
    "Comparison": "._compare", "compare": "._compare",
    "FitResult": "._fit", "fit_models": "._fit",
    "EventBus": "._live", "Orchestrator": "._live",
    "ActionModel": "._models", "AgentModels": "._models",
    "Hedge": "._plan", "Plan": "._plan", "RetryPolicy": "._plan",
    "SeedCompatWarning": "._plan", "Step": "._plan", "PlanWarning": "._plan",
    "BreakerPolicy": "._policies", "Policies": "._policies",
    "RemoteAgent": "._remote",
    "SPAN_COLUMNS": "._result", "RunResult": "._result",
    "HangWarning": "._sim", "simulate": "._sim",
    "RUN_COLUMNS": "._study", "MonteCarloResult": "._study", "OverloadWarning": "._study",
    "Summary": "._study", "Workload": "._study", "monte_carlo": "._study", "sweep": "._study",
    "Choice": "._tune", "Float": "._tune", "Int": "._tune", "TuneResult": "._tune",
    "tune": "._tune",
}
_SUBMODULES = ("agents", "examples")  # ok.agents imports no agent library until one is used

__all__ = [
    "ActionModel", "Agent", "AgentError", "AgentModels", "AgentResponse", "BreakerPolicy",
    "Choice", "Comparison", "EventBus", "FitResult", "Float", "HangWarning", "Hedge", "Int",
    "MissingDependencyError", "MonteCarloResult", "NoSessionError", "Orchestrator",
    "OrchkitError", "OverloadWarning", "Plan", "PlanFailedError", "PlanTimeoutError", "PlanValidationError",
    "PlanWarning",
    "Policies", "RUN_COLUMNS", "RemoteAgent", "RetryPolicy", "RunNotFoundError", "RunResult",
    "SPAN_COLUMNS", "SeedCompatWarning", "ServiceError", "Step", "Summary", "TuneResult",
    "UnknownActionError", "Workload", "compare", "draw", "examples", "fit_models", "gantt",
    "makespan_chart", "monte_carlo", "simulate", "sweep", "tune", "utilisation_chart",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module, __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'orchkit' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import agents, examples
    from ._agent import Agent, AgentResponse
    from ._charts import draw, gantt, makespan_chart, utilisation_chart
    from ._compare import Comparison, compare
    from ._fit import FitResult, fit_models
    from ._live import EventBus, Orchestrator
    from ._models import ActionModel, AgentModels
    from ._plan import Hedge, Plan, PlanWarning, RetryPolicy, SeedCompatWarning, Step
    from ._policies import BreakerPolicy, Policies
    from ._remote import RemoteAgent
    from ._result import SPAN_COLUMNS, RunResult
    from ._sim import HangWarning, simulate
    from ._study import (RUN_COLUMNS, MonteCarloResult, OverloadWarning, Summary, Workload,
                         monte_carlo, sweep)
    from ._tune import Choice, Float, Int, TuneResult, tune
