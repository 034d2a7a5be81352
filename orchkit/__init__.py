"""orchkit: design, simulate, tune and run orchestration plans for AI agents.

Every time in the public API is in milliseconds.

Names are imported on first use (PEP 562 module ``__getattr__``), so ``import orchkit``
and the light commands (``orchkit validate``, ``export``, ``--help``) never import pandas,
numpy, SimPy or plotly; ``from orchkit import X`` and ``dir(orchkit)`` work as usual.
The code lives in private wings (``ARCHITECTURE.md``); this namespace is the public one.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._base.errors import (
    AgentError,
    MissingDependencyError,
    NoSessionError,
    OrchkitError,
    PlanFailedError,
    PlanTimeoutError,
    PlanValidationError,
    RunNotFoundError,
    ServiceError,
    UnknownActionError,
)
from ._base.version import VERSION as __version__

_LAZY = {  # public name -> the module defining it (imported on first use)
    "Agent": "._runtimes.agent",
    "AgentResponse": "._runtimes.agent",
    "draw": "._views.charts",
    "gantt": "._views.charts",
    "makespan_chart": "._views.charts",
    "utilisation_chart": "._views.charts",
    "critical_path_chart": "._views.charts",
    "CapacityPlan": "._studies.capacity",
    "capacity_chart": "._studies.capacity",
    "capacity_for": "._studies.capacity",
    "Comparison": "._studies.compare",
    "compare": "._studies.compare",
    "FitResult": "._spec.models",
    "fit_models": "._spec.models",
    "EventBus": "._runtimes.bus",
    "Orchestrator": "._runtimes.live",
    "ActionModel": "._spec.models",
    "AgentModels": "._spec.models",
    "Hedge": "._spec.plan",
    "Plan": "._spec.plan",
    "RetryPolicy": "._spec.plan",
    "SeedCompatWarning": "._spec.plan",
    "Step": "._spec.plan",
    "PlanWarning": "._spec.plan",
    "BreakerPolicy": "._spec.policies",
    "Policies": "._spec.policies",
    "AdmissionPolicy": "._spec.policies",
    "AimdLimit": "._spec.policies",
    "AutoscalePolicy": "._spec.policies",
    "CodelPolicy": "._spec.policies",
    "FixedLimit": "._spec.policies",
    "Gradient2Limit": "._spec.policies",
    "ThrottlePolicy": "._spec.policies",
    "HangWarning": "._spec.inputs",
    "Deployment": "._spec.deployment",
    "Workload": "._spec.workload",
    "RemoteAgent": ".agents.remote",
    "RUN_COLUMNS": "._engine.result",
    "SPAN_COLUMNS": "._engine.result",
    "RunResult": "._engine.result",
    "simulate": "._runtimes.sim",
    "OverloadWarning": "._studies.montecarlo",
    "monte_carlo": "._studies.montecarlo",
    "sweep": "._studies.montecarlo",
    "MonteCarloResult": "._studies.summary",
    "Summary": "._studies.summary",
    "Choice": "._studies.tune",
    "Float": "._studies.tune",
    "Int": "._studies.tune",
    "TuneResult": "._studies.tune",
    "tune": "._studies.tune",
    "Twin": "._studies.twin",
    "WhatIf": "._studies.twin",
}
_SUBMODULES = ("agents", "analytics", "examples", "executors", "testing")  # imported on first use

__all__ = [
    "ActionModel",
    "AdmissionPolicy",
    "Agent",
    "AgentError",
    "AgentModels",
    "AgentResponse",
    "AimdLimit",
    "AutoscalePolicy",
    "BreakerPolicy",
    "CapacityPlan",
    "Choice",
    "CodelPolicy",
    "Comparison",
    "Deployment",
    "EventBus",
    "FitResult",
    "FixedLimit",
    "Float",
    "Gradient2Limit",
    "HangWarning",
    "Hedge",
    "Int",
    "MissingDependencyError",
    "MonteCarloResult",
    "NoSessionError",
    "Orchestrator",
    "OrchkitError",
    "OverloadWarning",
    "Plan",
    "PlanFailedError",
    "PlanTimeoutError",
    "PlanValidationError",
    "PlanWarning",
    "Policies",
    "RUN_COLUMNS",
    "RemoteAgent",
    "RetryPolicy",
    "RunNotFoundError",
    "RunResult",
    "SPAN_COLUMNS",
    "SeedCompatWarning",
    "ServiceError",
    "Step",
    "Summary",
    "ThrottlePolicy",
    "TuneResult",
    "Twin",
    "UnknownActionError",
    "WhatIf",
    "Workload",
    "capacity_chart",
    "capacity_for",
    "compare",
    "critical_path_chart",
    "draw",
    "examples",
    "fit_models",
    "gantt",
    "makespan_chart",
    "monte_carlo",
    "simulate",
    "sweep",
    "tune",
    "utilisation_chart",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module, __name__), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'orchkit' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    """The user's vocabulary: the public names, the public submodules and ``__version__``."""
    return sorted({*__all__, *_SUBMODULES, "__version__"})


if _TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import agents, analytics, examples, executors, testing
    from ._engine.result import RUN_COLUMNS, SPAN_COLUMNS, RunResult
    from ._runtimes.agent import Agent, AgentResponse
    from ._runtimes.bus import EventBus
    from ._runtimes.live import Orchestrator
    from ._runtimes.sim import simulate
    from ._spec.deployment import Deployment
    from ._spec.inputs import HangWarning
    from ._spec.models import ActionModel, AgentModels, FitResult, fit_models
    from ._spec.plan import Hedge, Plan, PlanWarning, RetryPolicy, SeedCompatWarning, Step
    from ._spec.policies import (
        AdmissionPolicy,
        AimdLimit,
        AutoscalePolicy,
        BreakerPolicy,
        CodelPolicy,
        FixedLimit,
        Gradient2Limit,
        Policies,
        ThrottlePolicy,
    )
    from ._spec.workload import Workload
    from ._studies.capacity import CapacityPlan, capacity_chart, capacity_for
    from ._studies.compare import Comparison, compare
    from ._studies.montecarlo import OverloadWarning, monte_carlo, sweep
    from ._studies.summary import MonteCarloResult, Summary
    from ._studies.tune import Choice, Float, Int, TuneResult, tune
    from ._studies.twin import Twin, WhatIf
    from ._views.charts import (
        critical_path_chart,
        draw,
        gantt,
        makespan_chart,
        utilisation_chart,
    )
    from .agents.remote import RemoteAgent
