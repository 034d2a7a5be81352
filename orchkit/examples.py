"""The examples shipped with orchkit: the seed's six plans and the default agent models.

    >>> import orchkit as ok
    >>> ok.examples.names()[:2]
    ['graceful_degradation', 'learning_activity']
    >>> plan = ok.examples.plan("parallel_analysis")      # a Plan
    >>> ok.simulate(plan, ok.examples.models(), seed=1)   # doctest: +SKIP

They are package data, so they work from an installed wheel as well as from a checkout;
``path(name)`` gives the file for the command line (``orchkit run "$(...)"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._base.resources import data_path
from ._spec.plan import Plan

if TYPE_CHECKING:
    from ._spec.models import AgentModels

__all__ = ["models", "models_path", "names", "path", "plan"]


def names() -> list[str]:
    """The example plans' names (file stems), sorted: ``parallel_analysis``, …"""
    return sorted(p.stem for p in data_path("plans").glob("*.json"))


def path(name: str) -> Path:
    """The file of the example plan ``name`` (see ``names()``)."""
    if not isinstance(name, str):
        raise TypeError(f"examples.path(): name must be a str, got {type(name).__name__}")
    known = names()
    if name not in known:
        raise ValueError(f"examples: no example plan named {name!r} (examples: {', '.join(known)})")
    return data_path("plans", f"{name}.json")


def plan(name: str) -> Plan:
    """The example plan ``name`` (see ``names()``), loaded and validated."""
    return Plan.load(path(name))


def models_path() -> Path:
    """The file of the default agent models (YAML; assumptions, not measurements)."""
    return data_path("agents", "default.yaml")


def models() -> AgentModels:
    """The default agent models: latency, errors and capacity of the seed's three agents."""
    from ._spec.models import AgentModels  # numpy: not for the light commands

    return AgentModels.load(models_path())
