"""orchkit: design, simulate, tune and run orchestration plans for AI agents.

Every time in the public API is in milliseconds.
"""

from ._agent import Agent, AgentResponse
from ._errors import (AgentError, OrchkitError, PlanFailedError, PlanTimeoutError,
                      PlanValidationError)
from ._live import EventBus, Orchestrator
from ._plan import Plan, RetryPolicy, SeedCompatWarning, Step
from ._result import SPAN_COLUMNS, RunResult

__version__ = "0.1.0"

__all__ = [
    "Agent", "AgentError", "AgentResponse", "EventBus", "Orchestrator", "OrchkitError", "Plan",
    "PlanFailedError", "PlanTimeoutError", "PlanValidationError", "RetryPolicy", "RunResult",
    "SPAN_COLUMNS", "SeedCompatWarning", "Step",
]
