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

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ._base.resources import data_path
from ._spec.plan import Plan

if TYPE_CHECKING:
    from ._spec.models import AgentModels

__all__ = ["ids", "models", "models_path", "names", "path", "plan", "suggest"]


def names() -> list[str]:
    """The example plans' names (file stems), sorted: ``parallel_analysis``, …"""
    return sorted(p.stem for p in data_path("plans").glob("*.json"))


def ids() -> dict[str, str]:
    """Each example's name -> the id of the plan inside it (``parallel_analysis`` ->
    ``multi_analysis_999``: the seed's files and ids differ; either one names it)."""
    out = {}
    for name in names():
        with open(data_path("plans", f"{name}.json"), encoding="utf-8") as fh:
            out[name] = str(json.load(fh).get("id", name))
    return out


def suggest(text: str) -> str:
    """What to tell someone who typed ``text`` for an example: the closest names (or plan
    ids) and the list of names with their plan ids."""
    known = ids()
    close = difflib.get_close_matches(text, [*known, *known.values()], n=2, cutoff=0.6)
    mean = [next((n for n, i in known.items() if i == c), c) for c in close]
    hint = f"did you mean {' or '.join(map(repr, dict.fromkeys(mean)))}? " if mean else ""
    listed = ", ".join(f"{n} (plan {i})" for n, i in known.items())
    return f"{hint}examples: {listed}"


def path(name: str) -> Path:
    """The file of the example plan ``name``: its name (see ``names()``) or its plan's id
    (``multi_analysis_999`` is ``parallel_analysis``)."""
    if not isinstance(name, str):
        raise TypeError(f"examples.path(): name must be a str, got {type(name).__name__}")
    known = names()
    if name not in known:
        by_id = {i: n for n, i in ids().items()}
        if name not in by_id:
            raise ValueError(f"examples: no example plan named {name!r} ({suggest(name)})")
        name = by_id[name]
    return data_path("plans", f"{name}.json")


def plan(name: str) -> Plan:
    """The example plan ``name`` (see ``names()``; its plan id works too), loaded and
    validated."""
    return Plan.load(path(name))


def models_path() -> Path:
    """The file of the default agent models (YAML; assumptions, not measurements)."""
    return data_path("agents", "default.yaml")


def models() -> AgentModels:
    """The default agent models: latency, errors and capacity of the seed's three agents."""
    from ._spec.models import AgentModels  # numpy: not for the light commands

    return AgentModels.load(models_path())
