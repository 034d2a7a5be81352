"""The front door for a user's input: every entry point (``simulate``, ``monte_carlo``,
``sweep``, ``tune``, the live orchestrator, the CLI) normalises what it was given here, once,
and passes the values down; nothing below re-checks them.

A plan, models or policies may be given as an object, a dict or a file path; the types'
own coercers (``as_plan``, ``as_models``, ``as_policies``) turn each into one shape, as
httpx's ``Timeout`` does. ``StudyInputs`` holds a study's normalised inputs, checked against
each other (every step's agent has a model), and applies dotted-path changes
(``with_values``) for sweeps and tuning.
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from dataclasses import dataclass
from typing import Any

from .._base.errors import PlanValidationError
from .models import AgentModels, as_models
from .parse import short
from .plan import Plan, as_plan
from .policies import Policies, as_policies
from .workload import Workload


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (numpy ints too; not a bool, a float or a string) >= ``minimum``;
    else a TypeError/PlanValidationError naming the parameter ``name``."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {short(value)}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise PlanValidationError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool; else a TypeError naming the parameter ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {short(value)}")
    return value


class HangWarning(UserWarning):
    """A step's model can hang and nothing (step timeout, plan timeout) would end it.

    Warned before a simulation starts (``ok.simulate``, ``ok.monte_carlo`` and the studies
    built on them), naming the plan, the step and its agent. Such a run never ends on its
    own: it is recorded ``failed`` at the last moment anything happened in it. Give the
    step a ``timeout`` or the plan one to silence it.
    """


def check_models(plan: Plan, models: AgentModels, stacklevel: int = 2) -> None:
    """Raise if a step's agent has no model; warn (``HangWarning``, ``stacklevel`` frames
    above the caller) if a step can hang forever."""
    models.check_plan(plan)
    for p in plan.chain():
        if p.timeout_ms is not None:
            continue
        for step in p.steps:
            if (
                step.timeout_ms is None
                and getattr(models.resolve(step.agent_id, step.action), "hang", 0.0) > 0
            ):
                warnings.warn(
                    f"plan '{p.id}' step '{step.id}': agent '{step.agent_id}' action "
                    f"'{step.action}' can hang and neither the step nor the plan has a timeout; "
                    "such runs count as failed at their last event. Add a step 'timeout' "
                    "or a plan 'timeout'.",
                    HangWarning,
                    stacklevel=stacklevel + 1,
                )


# The first segment of a dotted path names the study input it changes; any other path
# changes the plan. Each input has ``with_values(paths)`` taking the full dotted paths.
VALUE_TARGETS: dict[str, str] = {
    "agents": "models",
    "breakers": "policies",
    "admission": "policies",
    "throttle": "policies",
    "autoscale": "policies",
}


def path_target(path: str) -> str:
    """The study input a dotted path changes: ``"models"`` for ``agents.…``, ``"policies"``
    for ``breakers.…``, ``admission.…``, ``throttle.…`` and ``autoscale.…``, else
    ``"plan"``."""
    if not isinstance(path, str):
        raise TypeError(f"grid/values keys must be dotted path strings, got {path!r}")
    return VALUE_TARGETS.get(path.split(".", 1)[0], "plan")


@dataclass(frozen=True)
class StudyInputs:
    """A study's inputs, normalised and checked against each other: ``plan`` (the first plan
    of a workload's mix when it has one), ``models``, ``policies`` (None: no breakers) and
    ``workload`` (None: independent runs)."""

    plan: Plan
    models: AgentModels
    policies: Policies | None = None
    workload: Workload | None = None

    @classmethod
    def of(
        cls,
        plan: Any,
        models: Any,
        policies: Any = None,
        workload: Any = None,
        *,
        where: str = "monte_carlo",
        stacklevel: int = 2,
    ) -> StudyInputs:
        """Normalise and check what a user gave an entry point (``where`` names it in
        errors; ``stacklevel`` places a ``HangWarning`` at the user's call)."""
        if workload is not None and not isinstance(workload, Workload):
            raise TypeError(f"workload must be an orchkit.Workload, got {type(workload).__name__}")
        mix = workload.plans if workload is not None else None
        if plan is None and mix:
            plan = mix[0][0]
        elif plan is None:
            raise TypeError(f"{where}: plan is required (or a workload with a mix, plans=...)")
        elif mix:
            raise PlanValidationError(
                f"{where}: give either plan or a workload with a mix of "
                "plans (Workload(plans=...)), not both; pass plan=None"
            )
        inputs = cls(as_plan(plan), as_models(models), as_policies(policies) or None, workload)
        inputs.check(stacklevel + 1)
        return inputs

    @property
    def plans(self) -> list[Plan]:
        """The plans the study runs: the workload's mix, or ``plan``."""
        return self.workload.plans_of(self.plan) if self.workload is not None else [self.plan]

    def check(self, stacklevel: int = 2) -> None:
        """Every step of every plan has a model (else ``PlanValidationError``); a step that
        can hang forever warns (``HangWarning``)."""
        for p in self.plans:
            check_models(p, self.models, stacklevel + 1)

    def with_values(self, values: dict[str, Any], stacklevel: int = 2) -> StudyInputs:
        """A copy with ``values`` (dotted path -> value) applied, each path to the input it
        names (``path_target``), checked again; inputs no path names are shared."""
        groups: dict[str, dict[str, Any]] = {}
        for path, value in values.items():
            groups.setdefault(path_target(path), {})[path] = value
        changes = {}
        for target, paths in groups.items():
            current = getattr(self, target)
            if current is None:
                raise PlanValidationError(
                    f"paths {', '.join(paths)} change the study's {target}, but none was given"
                )
            changes[target] = current.with_values(paths)
        if not changes:
            return self
        out = dataclasses.replace(self, **changes)
        if "plan" in changes or "models" in changes:
            out.check(stacklevel + 1)
        return out


__all__ = [
    "HangWarning",
    "StudyInputs",
    "VALUE_TARGETS",
    "as_models",
    "as_plan",
    "as_policies",
    "check_flag",
    "check_int",
    "check_models",
    "path_target",
]
