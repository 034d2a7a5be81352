"""Deployment bundles (SPEC §14): tuned settings travel to production as one file.

A bundle holds the plans by role (``session_initialization`` and ``process_interaction``
are the ones ``orchkit serve`` runs; other names are free), the agents' capacities by id or
glob, the resilience policies, optionally the agent models it was tuned on, and its
provenance (``meta``: orchkit version, study seed, SLO, predicted metrics with intervals,
the models' source). It loads as strictly as a plan file and saves so that it loads back
equal. Where a bundle is simulated, its capacities override the models' own.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

from .._base.errors import PlanValidationError
from .models import AgentModels, best_match
from .parse import json_value, read_file, short, write_file
from .plan import Plan
from .policies import Policies

#: The plan roles ``orchkit serve`` runs (a missing one falls back to the built-in plan).
SERVE_ROLES = ("session_initialization", "process_interaction")
_TOP_KEYS = ("plans", "agents", "policies", "models", "meta")
_AGENT_KEYS = ("capacity",)


def _unknown(keys: Any, valid: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in valid:
            hint = difflib.get_close_matches(str(key), valid, n=1)
            fix = f"did you mean '{hint[0]}'? " if hint else ""
            raise PlanValidationError(
                f"{where}: unknown key '{key}': {fix}(valid: {', '.join(valid)})"
            )


def _capacity(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanValidationError(
            f"{where}: capacity must be an int >= 1 or null (unlimited), got {short(value)}"
        )
    return value


class Deployment:
    """A deployment bundle (SPEC §14): plans by role, agent capacities by id or glob,
    policies, optionally models, and provenance ``meta``, as one strict file.

    ``Deployment.load(path)`` / ``save(path)`` (YAML or JSON by suffix; loads back equal);
    ``plan(role)`` picks a plan; ``capacity(agent_id)`` the bundle's capacity for an agent;
    ``simulated_models(models)`` the models with the bundle's capacities applied.
    ``TuneResult.deployment()`` and ``CapacityPlan.deployment()`` build one from a study;
    ``orchkit serve --deployment FILE`` runs one.

    Args:
        plans: Role -> plan (a ``Plan`` or its dict, camelCase, ms). ``orchkit serve``
            runs the roles ``session_initialization`` and ``process_interaction``; other
            names are free.
        agents: Agent id or glob -> ``{"capacity": n}`` (an int >= 1, or None: unlimited).
        policies: A ``Policies`` or its dict (``{"breakers": ...}``).
        models: An ``AgentModels`` or its dict, e.g. the models a study assumed.
        meta: Provenance, any JSON object (orchkit version, seed, SLO, predicted metrics).
        source: Where the bundle comes from, named in error messages.

    Attributes:
        plans (dict[str, Plan]): Role -> plan.
        agents (dict[str, dict]): Pattern -> ``{"capacity": int | None}``.
        policies (Policies | None): The policies; None when none (or no breaker) was given.
        models (AgentModels | None): The models, if given.
        meta (dict): The provenance.
        source (str): Where the bundle comes from (the file's path after ``load``).

    Raises:
        PlanValidationError: No plans, an invalid plan, a wrong capacity, an unknown key,
            or invalid policies or models; the message names the key and the fix.

    Example:
        ```python
        plan = ok.examples.plan("parallel_analysis")
        bundle = ok.Deployment({"process_interaction": plan},
                               {"tutor-agent-*": {"capacity": 6}}, models=ok.examples.models())
        bundle.save("deployment.yaml")
        ok.Deployment.load("deployment.yaml") == bundle  # True
        bundle.capacity("tutor-agent-123")  # 6
        ```
    """

    def __init__(
        self,
        plans: dict[str, Any],
        agents: dict[str, Any] | None = None,
        policies: Any = None,
        models: Any = None,
        meta: dict[str, Any] | None = None,
        *,
        source: str = "deployment",
    ):
        self.source = source
        if not isinstance(plans, dict) or not plans:
            raise PlanValidationError(
                f"{source}: 'plans' must be a non-empty mapping of a role (e.g. "
                f"{SERVE_ROLES[0]}) to a plan"
            )
        self.plans: dict[str, Plan] = {}
        for role, plan in plans.items():
            if not isinstance(role, str) or not role.strip():
                raise PlanValidationError(f"{source}: plan roles must be non-blank strings")
            if not isinstance(plan, (Plan, dict)):
                raise PlanValidationError(
                    f"{source}: plans.{role} must be a plan (a mapping with id and steps), "
                    f"got {short(plan)}"
                )
            try:
                self.plans[role] = Plan.model_validate(plan)
            except PlanValidationError as exc:
                raise PlanValidationError(f"{source}: plans.{role}: {exc}") from None
        agents = {} if agents is None else agents
        if not isinstance(agents, dict):
            raise PlanValidationError(
                f"{source}: 'agents' must map an agent id or glob to its settings, e.g. "
                "{'tutor-agent-*': {capacity: 4}}"
            )
        self.agents: dict[str, dict[str, Any]] = {}
        for pattern, settings in agents.items():
            where = f"{source}: agents.{pattern}"
            if not isinstance(pattern, str) or not pattern:
                raise PlanValidationError(f"{source}: agent ids and globs must be non-empty")
            if not isinstance(settings, dict):
                raise PlanValidationError(
                    f"{where}: expected a mapping ({', '.join(_AGENT_KEYS)}), got {short(settings)}"
                )
            _unknown(settings, _AGENT_KEYS, where)
            self.agents[pattern] = {"capacity": _capacity(settings.get("capacity"), where)}
        self._patterns = list(self.agents)
        if policies is None or isinstance(policies, Policies):
            self.policies = policies or None
        elif isinstance(policies, dict):
            self.policies = Policies.from_dict(policies, f"{source}: policies") or None
        else:
            raise PlanValidationError(
                f"{source}: 'policies' must be a mapping (breakers: ...), got {short(policies)}"
            )
        if models is None or isinstance(models, AgentModels):
            self.models = models
        elif isinstance(models, dict):
            self.models = AgentModels.from_dict(models, source=f"{source}: models")
        else:
            raise PlanValidationError(
                f"{source}: 'models' must be a mapping (agents: ...), got {short(models)}"
            )
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise PlanValidationError(f"{source}: 'meta' must be a mapping, got {short(meta)}")
        self.meta: dict[str, Any] = json_value(meta, f"{source}: meta")

    # -------------------------------------------------------------- files

    @classmethod
    def from_dict(cls, data: Any, source: str = "deployment") -> Deployment:
        """Validate a bundle in its on-disk form.

        Args:
            data: ``{"plans": ..., "agents": ..., "policies": ..., "models": ...,
                "meta": ...}`` (only ``plans`` required; camelCase plans, ms), as the
                class takes them.
            source: Where it comes from, named in error messages.

        Returns:
            The bundle.

        Raises:
            PlanValidationError: ``data`` is not a mapping, lacks ``plans``, has an
                unknown key, or holds an invalid part.
        """
        if not isinstance(data, dict):
            raise PlanValidationError(
                f"{source}: a deployment is a mapping ({', '.join(_TOP_KEYS)}), got {short(data)}"
            )
        _unknown(data, _TOP_KEYS, source)
        if "plans" not in data:
            raise PlanValidationError(f"{source}: missing required key 'plans'")
        return cls(
            data["plans"],
            data.get("agents"),
            data.get("policies"),
            data.get("models"),
            data.get("meta"),
            source=source,
        )

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        """Read a bundle from a file, with the plan files' safe reader (duplicate keys,
        aliases and depth are refused alike).

        Args:
            path: A ``.yaml``/``.yml`` file, or JSON (any other suffix); it becomes
                ``source``.

        Returns:
            The bundle.

        Raises:
            PlanValidationError: The file cannot be read or parsed, or its bundle is
                invalid.
        """
        return cls.from_dict(read_file(path, "deployment file"), str(path))

    def to_dict(self) -> dict[str, Any]:
        """The bundle in its on-disk form.

        Returns:
            A dict of plain JSON values: ``plans`` (camelCase, ms), ``agents``, then
                ``policies`` and ``models`` when the bundle has them, and ``meta``.
        """
        out: dict[str, Any] = {
            "plans": {role: plan.to_dict() for role, plan in self.plans.items()},
            "agents": {p: dict(s) for p, s in self.agents.items()},
        }
        if self.policies is not None:
            out["policies"] = self.policies.to_dict()
        if self.models is not None:
            out["models"] = self.models.to_dict()
        out["meta"] = self.meta
        return out

    def save(self, path: str | Path) -> None:
        """Write the bundle to a file that ``load`` reads back equal.

        Args:
            path: Where to write: YAML for a ``.yaml``/``.yml`` suffix, else JSON.

        Raises:
            OSError: The file cannot be written.
        """
        write_file(path, self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Deployment) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        caps = {p: s["capacity"] for p, s in self.agents.items()}
        return f"Deployment(plans={list(self.plans)}, capacities={caps})"

    @classmethod
    def of_study(
        cls,
        plan: Plan,
        models: AgentModels,
        policies: Policies | None,
        meta: dict[str, Any],
        *,
        role: str | None = None,
    ) -> Deployment:
        """A bundle of what a study assumed (what ``TuneResult.deployment`` and
        ``CapacityPlan.deployment`` build).

        Args:
            plan: The plan, put under ``role``.
            models: The study's models: the capacity of every entry that serves an agent of
                the plan or its fallbacks is the bundle's (None where unlimited), under the
                entry's pattern; the models are kept too.
            policies: The study's policies, or None.
            meta: The provenance.
            role: The plan's role; default: the plan's id.

        Returns:
            The bundle.
        """
        agents: dict[str, dict[str, Any]] = {}
        for p in plan.chain():
            for step in p.steps:
                pattern = models.match(step.agent_id)
                if pattern is not None:
                    agents[pattern] = {"capacity": models.capacity(step.agent_id)}
        return cls({role or plan.id: plan}, agents, policies, models, meta)

    # -------------------------------------------------------------- use

    def plan(self, role: str | None = None) -> Plan:
        """The plan of a role.

        Args:
            role: A role of ``plans``; None (default): ``session_initialization``, or the
                only plan.

        Returns:
            The plan.

        Raises:
            PlanValidationError: No plan has ``role``, or ``role`` is None and the bundle
                has several plans but no ``session_initialization``.
        """
        if role is None:
            if SERVE_ROLES[0] in self.plans:
                role = SERVE_ROLES[0]
            elif len(self.plans) == 1:
                role = next(iter(self.plans))
            else:
                raise PlanValidationError(
                    f"{self.source}: several plans ({', '.join(self.plans)}) and no "
                    f"{SERVE_ROLES[0]}: name one (--plan NAME)"
                )
        if role not in self.plans:
            raise PlanValidationError(
                f"{self.source}: no plan '{role}' (plans: {', '.join(self.plans)})"
            )
        return self.plans[role]

    def capacity(self, agent_id: str) -> int | None:
        """The bundle's capacity for an agent.

        Args:
            agent_id: An agent id (``agentId``).

        Returns:
            The capacity of the most specific pattern of ``agents`` matching
                ``agent_id``; None when it is unlimited or no pattern matches.
        """
        i = best_match(agent_id, self._patterns)
        return None if i is None else self.agents[self._patterns[i]]["capacity"]

    def simulated_models(self, models: AgentModels | None = None) -> AgentModels:
        """Models with the bundle's capacities, to simulate the bundle as deployed.

        A pattern of ``agents`` that is a model entry gets its capacity; another
        (``tutor-agent-7`` where the models have ``tutor-agent-*``) gets a copy of the
        entry that serves it, with the capacity. None removes an entry's capacity
        (unlimited).

        Args:
            models: The models to apply them to; None (default): the bundle's own.

        Returns:
            New models (``models`` are unchanged).

        Raises:
            PlanValidationError: No models were given and the bundle has none, or a
                pattern of ``agents`` that no model entry serves.
        """
        models = models if models is not None else self.models
        if models is None:
            raise PlanValidationError(
                f"{self.source}: the bundle has no models; give models to simulate it"
            )
        if not self.agents:
            return models
        data = models.to_dict()
        entries = data["agents"]
        for pattern, settings in self.agents.items():
            if pattern not in entries:
                keys = list(entries)
                i = best_match(pattern, keys)
                if i is None:
                    raise PlanValidationError(
                        f"{self.source}: agents.{pattern}: no agent model serves it (models: "
                        f"{', '.join(keys)})"
                    )
                entries[pattern] = copy.deepcopy(entries[keys[i]])
            entry = entries[pattern]
            entry.pop("capacity", None)
            if settings["capacity"] is not None:
                entry["capacity"] = settings["capacity"]
        return AgentModels.from_dict(
            data, source=f"{models.source} with {self.source}'s capacities"
        )
