"""The one exception hierarchy of orchkit.

    OrchkitError
    ├── PlanValidationError (also ValueError)   a plan, a model file or a workload is wrong
    ├── PlanTimeoutError                        raise_for_status(): the plan's deadline passed
    ├── PlanFailedError                         raise_for_status(): a step failed
    ├── AgentError                              raised by an agent for one attempt
    ├── MissingDependencyError (also ImportError) an optional extra is not installed
    └── ServiceError                            the service (orchkit serve) refused a request
        ├── UnknownActionError (also ValueError)    no such action; lists the valid ones
        ├── NoSessionError                          the learner has no active session
        └── RunNotFoundError (also KeyError)        no run has this id

Every message says what is wrong, where (plan, step) and how to fix it.
"""

from __future__ import annotations


class OrchkitError(Exception):
    """Root of every error orchkit raises on purpose."""


class PlanValidationError(OrchkitError, ValueError):
    """A plan (or agent model, or workload) is invalid; raised before anything runs."""


class PlanTimeoutError(OrchkitError):
    """The plan's ``timeout`` passed before it finished (message: ``Orchestration plan X
    timed out``)."""


class PlanFailedError(OrchkitError):
    """At least one step of the plan failed."""


class AgentError(OrchkitError):
    """An agent could not serve one attempt; raise it from ``Agent.process``.

    Args:
        message: What went wrong; it becomes the attempt's ``error`` (in spans, events
            and ``RunResult.errors``).
        retryable: True (default): the retry policy may try again. False: a permanent
            failure (e.g. invalid input): the step fails at once, whatever its retry
            policy says.

    Attributes:
        retryable (bool): As given.

    Example:
        ```python
        class Lookup(ok.Agent):
            async def process(self, action, input, context):
                if "learnerId" not in input:  # retrying will not help
                    raise ok.AgentError("input has no learnerId", retryable=False)
                return ok.AgentResponse(action=action, confidence=1.0)
        ```
    """

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class MissingDependencyError(OrchkitError, ImportError):
    """An optional dependency is not installed; the message names the extra to install
    (``pip install 'orchkit[speech]'``)."""


class ServiceError(OrchkitError):
    """The service refused a request (``orchkit.service``); the message says why and the fix."""


class UnknownActionError(ServiceError, ValueError):
    """An agent request named an action that does not exist; the message lists the valid ones."""


class NoSessionError(ServiceError):
    """The learner has no active session (never started, ended or released when idle)."""


class RunNotFoundError(ServiceError, KeyError):
    """No run has this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
