"""orchkit: design, simulate, tune and run orchestration plans for AI agents.

Every time in the public API is in milliseconds.
"""

from ._agent import Agent, AgentResponse
from ._charts import draw, gantt, makespan_chart, utilisation_chart
from ._compare import Comparison, compare
from ._errors import (AgentError, MissingDependencyError, NoSessionError, OrchkitError,
                      PlanFailedError, PlanTimeoutError, PlanValidationError, RunNotFoundError,
                      ServiceError, UnknownActionError)
from ._fit import FitResult, fit_models
from ._live import EventBus, Orchestrator
from ._models import ActionModel, AgentModels
from ._plan import Hedge, Plan, RetryPolicy, SeedCompatWarning, Step
from ._policies import BreakerPolicy, Policies
from ._remote import RemoteAgent
from ._result import SPAN_COLUMNS, RunResult
from ._sim import HangWarning, simulate
from ._study import (RUN_COLUMNS, MonteCarloResult, OverloadWarning, Summary, Workload,
                     monte_carlo, sweep)
from ._tune import Choice, Float, Int, TuneResult, tune

from . import agents  # noqa: E402  (lazy: imports no agent library until one is used)
from . import examples  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ActionModel", "Agent", "AgentError", "AgentModels", "AgentResponse", "BreakerPolicy",
    "Choice", "Comparison", "EventBus", "FitResult", "Float", "HangWarning", "Hedge", "Int",
    "MissingDependencyError", "MonteCarloResult", "NoSessionError", "Orchestrator",
    "OrchkitError", "OverloadWarning", "Plan", "PlanFailedError", "PlanTimeoutError", "PlanValidationError",
    "Policies", "RUN_COLUMNS", "RemoteAgent", "RetryPolicy", "RunNotFoundError", "RunResult",
    "SPAN_COLUMNS", "SeedCompatWarning", "ServiceError", "Step", "Summary", "TuneResult",
    "UnknownActionError", "Workload", "compare", "draw", "examples", "fit_models", "gantt",
    "makespan_chart", "monte_carlo", "simulate", "sweep", "tune", "utilisation_chart",
]
