"""A study's inputs resolved once for the drivers: the plans compiled to the core's indexed
form, with the models and the policies (breakers, overload rules) beside them. Every driver
(SimPy, fast) and every tune trial takes this; none compiles or checks again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._spec.inputs import StudyInputs
from .._spec.models import AgentModels
from .._spec.plan import Plan
from .._spec.policies import Policies, breaker_lookup, overload_lookup
from .._spec.workload import Workload
from .core import CompiledPlan, compile_plan


@dataclass(frozen=True, eq=False)
class Prepared:
    """``inputs`` and ``compiled``: one ``CompiledPlan`` per plan of ``inputs.plans``."""

    inputs: StudyInputs
    compiled: tuple[CompiledPlan, ...]

    @classmethod
    def of(cls, inputs: StudyInputs) -> Prepared:
        """Compile the plans of ``inputs`` (cached per plan object by ``compile_plan``)."""
        return cls(inputs, tuple(compile_plan(p) for p in inputs.plans))

    @property
    def plan(self) -> Plan:
        return self.inputs.plan

    @property
    def models(self) -> AgentModels:
        return self.inputs.models

    @property
    def policies(self) -> Policies | None:
        return self.inputs.policies

    @property
    def workload(self) -> Workload | None:
        return self.inputs.workload

    def breakers(self) -> Any:
        """The core's ``breakers`` argument (None when no breaker is configured)."""
        return breaker_lookup(self.inputs.policies)

    def overload(self) -> Any:
        """The core's ``overload`` argument (None when no overload rule is configured)."""
        return overload_lookup(self.inputs.policies)

    def __reduce__(self) -> tuple:  # to a worker process: the inputs, compiled there
        return (Prepared.of, (self.inputs,))
