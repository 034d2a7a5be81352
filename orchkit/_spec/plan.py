"""The plan format (SPEC §2): pydantic models at the edge, camelCase on disk, ms everywhere.

Validation happens here, before anything runs; every failure is a ``PlanValidationError``
whose message names the plan, the step and the fix.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .._base.errors import PlanValidationError
from .parse import json_value, parse, read_text, short

MAX_FALLBACK_DEPTH = 16
#: The longest time a plan may give, in ms (about 31.7 years): timeouts, ``backoffMs``,
#: ``maxBackoffMs`` and ``delayMs`` may not exceed it (so every time saves as an integer of
#: at most 13 digits and loads back), and a growing (linear or exponential) backoff stops
#: growing there, so a huge ``maxRetries`` never overflows.
MAX_MS = 1e12


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class _Nesting(threading.local):
    active = False


_INNER = _Nesting()  # pydantic calls Plan.__init__ for a fallback plan: errors go outward


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"{value!r} is blank; use a name with visible characters")
    return value


# On disk, types are strict: a bool is not a number, a string is not a bool or a number,
# and every time and count is finite (SPEC §2; docs/guides/plans.md, "Strict input").
_Id = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
_Ms = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Count = Annotated[int, Field(strict=True)]
_Flag = Annotated[bool, Field(strict=True)]


class RetryPolicy(_Model):
    """When and how a failed attempt is tried again (SPEC §3.4). Times in ms.

    After failed attempt k, attempt k + 1 starts if k <= ``max_retries``, the outcome is in
    ``retry_on`` and the error is retryable (an ``AgentError(..., retryable=False)`` fails
    the step at once); the delay is ``delay_ms(k)``. On disk the fields are camelCase
    (``maxRetries``, ``backoffMs``, ...).

    Attributes:
        max_retries (int): Attempts after the first, a whole number >= 0 (``maxRetries``).
        backoff_ms (float): Base delay before a retry, ms (``backoffMs``).
        strategy (str): How the delay grows with k: ``"linear"`` (default) backoff_ms * k (the
            seed's 1 s, 2 s, 3 s), ``"exponential"`` backoff_ms * 2 ** (k - 1), ``"fixed"``
            backoff_ms.
        max_backoff_ms (float | None): Cap on a growing delay, ms; None: 10**12 ms
            (``maxBackoffMs``).
        jitter (float): In [0, 1]: each delay is multiplied by a seeded uniform factor in
            [1 - jitter, 1 + jitter]; 0 (default) for none.
        retry_on (tuple[str, ...]): The failed outcomes that are retried: ``"error"``, ``"timeout"``
            or both (default) (``retryOn``). A breaker's rejection counts as an ``"error"``.

    Example:
        ```python
        policy = ok.RetryPolicy(max_retries=3, backoff_ms=500, strategy="exponential")
        [policy.delay_ms(k) for k in (1, 2, 3)]  # [500.0, 1000.0, 2000.0]
        ```
    """

    max_retries: _Count = Field(ge=0)
    backoff_ms: _Ms = Field(ge=0, le=MAX_MS)
    strategy: Literal["linear", "exponential", "fixed"] = "linear"
    max_backoff_ms: _Ms | None = Field(default=None, ge=0, le=MAX_MS)
    jitter: _Ms = Field(default=0.0, ge=0.0, le=1.0)
    retry_on: tuple[Literal["error", "timeout"], ...] = ("error", "timeout")

    def delay_ms(self, failed_attempt: int, uniform: float | None = None) -> float:
        """Delay in ms before attempt ``failed_attempt + 1`` (SPEC §3.4), the one place this
        rule is written. Computed on demand in O(1): a growing delay is capped by
        ``maxBackoffMs``, and always by ``MAX_MS`` (10**12 ms), before it can overflow.

        Args:
            failed_attempt: The number (1, 2, ...) of the attempt that failed.
            uniform: A draw in [0, 1) placing the delay in the jitter band
                [1 - jitter, 1 + jitter]; None gives the delay before jitter.

        Returns:
            The delay in ms.
        """
        k = failed_attempt
        if self.strategy == "linear":
            d = self.backoff_ms * k
        elif self.strategy == "exponential":
            # 2.0 ** 1024 overflows; any backoff above 1e-296 ms reaches the cap before that
            d = self.backoff_ms * 2.0 ** min(k - 1, 1023)
        else:
            d = self.backoff_ms
        cap = MAX_MS if self.max_backoff_ms is None else self.max_backoff_ms
        if d > cap:
            d = cap
        if self.jitter and uniform is not None:
            d *= 1.0 - self.jitter + 2.0 * self.jitter * uniform
        return d


class Hedge(_Model):
    """Hedged attempts of a step (SPEC §10.2, Polly's hedging). Times in ms.

    When no attempt of the step has succeeded ``delay_ms`` after the last one started
    running, one more is started, at most ``max_hedges`` per try; the first success wins and
    the others are cancelled. A hedge counts against the agent's capacity like any attempt
    and has its own step timeout; the retry policy counts tries, not hedges.

    Attributes:
        delay_ms (float): Wait after the last attempt started before the next hedge, ms
            (``delayMs``).
        max_hedges (int): Hedges per try, 1 (default) to 10 (``maxHedges``).

    Example:
        ```python
        plan.with_values({"steps.init_tutor.hedge": {"delayMs": 500, "maxHedges": 2}})
        ```
    """

    delay_ms: _Ms = Field(ge=0, le=MAX_MS)
    max_hedges: _Count = Field(default=1, ge=1, le=10)


class Step(_Model):
    """One call of ``action`` on agent ``agent_id``. ``timeout_ms`` limits one attempt.

    On disk the fields are camelCase (``agentId``, ``retryPolicy``, ``timeout``).

    Attributes:
        id (str): The step's id, unique in its plan.
        agent_id (str): The agent to call (``agentId``).
        action (str): The action to call on it.
        input (Any): The action's input: plain JSON values (``{}`` by default).
        dependencies (tuple[str, ...]): Ids of the steps of the same plan that must succeed before
            this one starts; if one does not, this step is ``skipped``.
        retry_policy (RetryPolicy | None): When and how a failed attempt is tried again; None: never
            (``retryPolicy``).
        timeout_ms (float | None): Limit on one attempt, ms from when it is queued at the agent (a
            wait for the agent's capacity counts); None: no limit (``timeout``).
        hedge (Hedge | None): Hedged attempts; None: none.
    """

    id: _Id
    agent_id: _Id
    action: _Id
    input: Any = Field(default_factory=dict)
    dependencies: tuple[_Id, ...] = ()
    retry_policy: RetryPolicy | None = None
    timeout_ms: _Ms | None = Field(default=None, gt=0, le=MAX_MS, alias="timeout")
    hedge: Hedge | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _json_input(cls, value: Any) -> Any:
        """``input`` is plain JSON, so ``save()`` writes strict JSON that loads back equal."""
        try:
            return json_value(value, "")
        except PlanValidationError as exc:  # a ValueError: named with plan and step
            raise ValueError(str(exc)) from None


class Plan(_Model):
    """A DAG of steps with a deadline (``timeout_ms``) and an optional fallback plan.

    Load with ``Plan.load(path)`` (JSON or YAML) or ``Plan.model_validate(dict)`` (camelCase,
    as in the seed); write with ``save(path)`` or ``to_dict(compat=None | "seed")``.
    A plan is immutable: ``with_values`` and ``bind`` return changed copies.

    Attributes:
        id (str): The plan's id.
        steps (tuple[Step, ...]): The steps (at least one, unique ids).
        parallel (bool): True: every ready step starts at once; False (default): one step at a time,
            the first ready step in plan order.
        timeout_ms (float | None): Deadline of the whole plan, ms from its start; None: none
            (``timeout``). When it passes, attempts in flight are cancelled and the status is
            ``timed_out``.
        fallback_plan (Plan | None): A plan run when this one does not succeed, with its own
            deadline from when it starts; at most 16 deep (``fallbackPlan``).
        max_concurrency (int | None): Cap on steps in progress at once, backoff waits included;
            None: no cap (``maxConcurrency``; no effect on a sequential plan: ``PlanWarning``).
        fail_fast (bool): True: the first failed step cancels the rest (``failFast``).
        meta (dict | None): A free-form JSON object (e.g. a tuned plan's provenance), kept by
            ``save``/``load``, ignored by every runtime, dropped by ``compat="seed"``.

    Raises:
        PlanValidationError: When built or loaded with a wrong field or value, a cycle, a
            dependency on a step that does not exist or a duplicate step id; the message
            names the plan, the step and the fix.

    Example:
        ```python
        plan = ok.Plan(
            id="homework_help",
            parallel=True,
            timeout_ms=20_000,
            steps=[
                ok.Step(id="performance", agent_id="learning-agent-1",
                        action="analyze_performance"),
                ok.Step(id="hints", agent_id="tutor-agent-1", action="prepare_hints",
                        dependencies=["performance"], timeout_ms=8_000,
                        retry_policy=ok.RetryPolicy(max_retries=1, backoff_ms=200)),
            ],
        )
        ```
    """

    id: _Id
    steps: tuple[Step, ...] = Field(min_length=1)
    parallel: _Flag = False
    timeout_ms: _Ms | None = Field(default=None, gt=0, le=MAX_MS, alias="timeout")
    fallback_plan: Plan | None = None
    max_concurrency: _Count | None = Field(default=None, ge=1)
    fail_fast: _Flag = False
    meta: dict[str, Any] | None = None

    def __init__(self, **data: Any):
        if _INNER.active:  # a fallback plan inside a validation: the outer call reports
            super().__init__(**data)
            return
        data = json_value(data, _where(data), keep=(_Model,), finite=False)
        _INNER.active = True
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _translate(exc, data) from None
        finally:
            _INNER.active = False

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Plan:
        """Validate a plan given as a dict, as a plan file holds it.

        Args:
            obj: A mapping with camelCase (or snake_case) keys and plain JSON values, or a
                ``Plan`` (returned as it is).
            **kwargs: Passed to pydantic's ``model_validate``.

        Returns:
            The plan.

        Raises:
            PlanValidationError: Anything wrong with it, naming the plan, the step and the
                fix (``dependecies`` -> "did you mean 'dependencies'?").
        """
        if isinstance(obj, Plan):
            return obj
        if not isinstance(obj, dict):
            raise PlanValidationError(
                f"a plan must be a mapping with 'id' and 'steps', got {type(obj).__name__} "
                f"{short(obj)}"
            )
        obj = json_value(obj, _where(obj), keep=(_Model,), finite=False)
        outer = not _INNER.active
        _INNER.active = True
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _translate(exc, obj) from None
        finally:
            if outer:
                _INNER.active = False

    @classmethod
    def model_validate_json(cls, data: str | bytes, **kwargs: Any) -> Plan:  # type: ignore[override]
        """Validate a plan from JSON text, through the same safe reader as ``from_text``.

        Args:
            data: UTF-8 JSON text (``str`` or ``bytes``).
            **kwargs: Ignored (pydantic's signature).

        Returns:
            The plan.

        Raises:
            PlanValidationError: Bytes that are not UTF-8, JSON that is not a plan, or an
                invalid plan.
        """
        if isinstance(data, (bytes, bytearray)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PlanValidationError(
                    f"<text>: not UTF-8 (bad byte at offset {exc.start}); plans are UTF-8 JSON"
                ) from None
        return cls.from_text(data, "json")

    @classmethod
    def from_text(
        cls, text: str, fmt: Literal["json", "yaml"] = "json", source: str = "<text>"
    ) -> Plan:
        """Parse a plan from JSON or YAML text.

        Args:
            text: The plan file's text.
            fmt: ``"json"`` (default) or ``"yaml"``.
            source: What to call the text in error messages (a file name, say).

        Returns:
            The plan.

        Raises:
            PlanValidationError: Text that does not parse, or parses to an invalid plan.
                Duplicate keys, NaN and infinities, unquoted YAML dates, YAML tags and
                documents past the size limits (depth 100, 10**6 values counting YAML
                aliases expanded) are errors too.
        """
        data = parse(text, fmt, source)
        if not isinstance(data, dict):
            raise PlanValidationError(
                f"{source}: a plan must be a {fmt.upper()} object with 'id' and 'steps', "
                f"got {type(data).__name__} {short(data)}"
            )
        return cls.model_validate(data)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan from a file.

        Args:
            path: A ``.json``, ``.yaml`` or ``.yml`` file (UTF-8; any other suffix is read
                as JSON).

        Returns:
            The plan.

        Raises:
            PlanValidationError: The file cannot be read, is not UTF-8 text, or does not
                hold a valid plan (see ``from_text``).
        """
        path = Path(path)
        yaml_file = path.suffix.lower() in (".yaml", ".yml")
        fmt: Literal["json", "yaml"] = "yaml" if yaml_file else "json"
        return cls.from_text(read_text(path, "plan file"), fmt, str(path))

    def save(self, path: str | Path, *, compat: Literal["seed"] | None = None) -> None:
        """Write the plan to a file that ``load`` reads back equal.

        Args:
            path: Where to write: YAML for a ``.yaml``/``.yml`` suffix, else JSON.
            compat: ``"seed"`` writes only what the seed's TypeScript orchestrator reads
                (see ``to_dict``); None (default) writes every field.

        Raises:
            OSError: The file cannot be written.
        """
        path = Path(path)
        data = self.to_dict(compat=compat)
        if path.suffix.lower() in (".yaml", ".yml"):
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def to_dict(self, *, compat: Literal["seed"] | None = None) -> dict[str, Any]:
        """The plan in its on-disk (camelCase, ms) form.

        Args:
            compat: ``"seed"`` keeps only the fields the seed's TypeScript orchestrator
                reads, and warns with the list of extension fields it dropped; None
                (default) keeps every field.

        Returns:
            A dict of plain JSON values.

        Raises:
            ValueError: ``compat`` is neither None nor ``"seed"``.

        Warns:
            SeedCompatWarning: With ``compat="seed"``, when extension fields were dropped.
        """
        if compat is None:
            return _dump_plan(self)
        if compat != "seed":
            raise ValueError(f"compat must be None or 'seed', got {compat!r}")
        dropped: list[str] = []
        data = _dump_seed(self, dropped)
        if dropped:
            warnings.warn(
                "the seed's orchestrator ignores these extension fields, dropped from the "
                "export: " + ", ".join(dropped),
                SeedCompatWarning,
                stacklevel=2,
            )
        return data

    def seed_dropped_fields(self) -> list[str]:
        """The extension fields that ``to_dict(compat="seed")`` would drop.

        Returns:
            One entry per dropped field, naming its plan and step (e.g.
            ``"plan 'x' step 'hints': hedge"``); empty when none.
        """
        dropped: list[str] = []
        _dump_seed(self, dropped)
        return dropped

    def with_values(self, values: dict[str, Any]) -> Plan:
        """A copy of the plan with on-disk fields set, validated like a loaded plan.

        Args:
            values: Dotted camelCase paths to their new values: ``"timeout"``,
                ``"maxConcurrency"``, ``"steps.<step id>.timeout"``,
                ``"steps.<step id>.retryPolicy.maxRetries"``, ``"fallbackPlan.timeout"``,
                ...; ``<step id>`` may be ``*`` for every step. Times in ms.

        Returns:
            The new plan (this one is unchanged).

        Raises:
            PlanValidationError: A path that names no field or step, or a value that makes
                the plan invalid.

        Example:
            ```python
            tuned = plan.with_values({"steps.tutor_analysis.timeout": 12_000})
            ```
        """
        data = self.to_dict()
        for path, value in values.items():
            _set_path(data, path.split("."), value, path, self.id)
        return Plan.model_validate(data)

    def chain(self) -> list[Plan]:
        """This plan followed by its fallback plans, in the order they would run.

        Returns:
            A list of plans, this one first.
        """
        out: list[Plan] = []
        plan: Plan | None = self
        while plan is not None:
            out.append(plan)
            plan = plan.fallback_plan
        return out

    def bind(
        self,
        *,
        agent_ids: dict[str, str] | None = None,
        inputs: dict[str, Any] | None = None,
        timeout_ms: float | None = None,
        fallback: bool = True,
    ) -> Plan:
        """This plan with concrete agents and inputs, without a round trip through a dict.
        The DAG is unchanged, so nothing else is validated again.

        Args:
            agent_ids: An agent id of the plan -> the agent id to call instead.
            inputs: A step id -> that step's new ``input`` (plain JSON: checked as a plan
                file's is).
            timeout_ms: The plan's deadline in ms, set only when it has none.
            fallback: False drops the fallback chain.

        Returns:
            The bound plan (this one is unchanged).

        Raises:
            PlanValidationError: An unknown step id in ``inputs``, a blank agent id, an
                input that is not plain JSON, or a ``timeout_ms`` outside (0, 10**12].
        """
        agent_ids, inputs = agent_ids or {}, inputs or {}
        unknown = sorted(set(inputs) - {s.id for s in self.steps})
        if unknown:
            raise PlanValidationError(
                f"plan '{self.id}': bind: no step {', '.join(unknown)} "
                f"(steps: {', '.join(s.id for s in self.steps)})"
            )
        steps = []
        for s in self.steps:
            update: dict[str, Any] = {}
            if s.agent_id in agent_ids:
                new = agent_ids[s.agent_id]
                if not isinstance(new, str) or not new.strip():
                    raise PlanValidationError(
                        f"plan '{self.id}' step '{s.id}': bind: agent id "
                        f"must be a non-blank string, got {short(new)}"
                    )
                update["agent_id"] = new
            if s.id in inputs:
                update["input"] = json_value(inputs[s.id], f"plan '{self.id}' step '{s.id}' input")
            steps.append(s.model_copy(update=update) if update else s)
        update = {"steps": tuple(steps)}
        if timeout_ms is not None and self.timeout_ms is None:
            if not (isinstance(timeout_ms, (int, float)) and 0 < timeout_ms <= MAX_MS):
                raise PlanValidationError(
                    f"plan '{self.id}': bind: timeout_ms must be a number "
                    f"of ms in (0, {MAX_MS:g}], got {timeout_ms!r}"
                )
            update["timeout_ms"] = float(timeout_ms)
        if not fallback:
            update["fallback_plan"] = None
        return self.model_copy(update=update)

    def to_mermaid(self) -> str:
        """The DAG as Mermaid ``flowchart`` text: a subgraph per plan of the fallback chain,
        one node per step (id, agent.action, timeout and retries), dependency arrows.

        Returns:
            The Mermaid text (``flowchart LR ...``).
        """
        return to_mermaid(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """In a notebook a plan shows its DAG (a Mermaid diagram: JupyterLab >= 4.1, VS Code
        and GitHub draw it; elsewhere the text reads as a list of edges)."""
        return {"text/markdown": f"```mermaid\n{self.to_mermaid()}```", "text/plain": repr(self)}

    @model_validator(mode="before")
    @classmethod
    def _check_fallback(cls, data: Any) -> Any:
        fb = data.get("fallbackPlan", data.get("fallback_plan")) if isinstance(data, dict) else None
        if isinstance(fb, dict) and not fb.get("steps"):
            raise PlanValidationError(
                f"{_where(data)}: its fallbackPlan {short(fb.get('id', ''))} has no steps; give "
                "it 'id' and 'steps', or remove the fallbackPlan"
            )
        return data

    @model_validator(mode="after")
    def _check_graph(self) -> Plan:
        _check_graph(self)
        if self.meta is not None:
            try:
                json.dumps(self.meta, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise PlanValidationError(
                    f"plan '{self.id}': 'meta' must be a JSON object (strings, finite numbers, "
                    f"booleans, null, lists, objects): {exc}"
                ) from None
        return self


def as_plan(plan: Plan | dict | str | Path) -> Plan:
    """A ``Plan`` as given, or one validated from a dict or loaded from a file path."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, Path)):
        return Plan.load(plan)
    if not isinstance(plan, dict):
        raise TypeError(
            f"plan must be a Plan, a dict or a path to a plan file, got {type(plan).__name__}"
        )
    return Plan.model_validate(plan)


class SeedCompatWarning(UserWarning):
    """An export for the seed's orchestrator dropped extension fields."""


class PlanWarning(UserWarning):
    """A plan is valid but holds a setting that has no effect (e.g. ``maxConcurrency`` on a
    sequential plan)."""


# ---------------------------------------------------------------- export


def _dump_plan(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": plan.id,
        "steps": [_dump_step(s) for s in plan.steps],
        "parallel": plan.parallel,
    }
    if plan.timeout_ms is not None:
        out["timeout"] = _num(plan.timeout_ms)
    if plan.max_concurrency is not None:
        out["maxConcurrency"] = plan.max_concurrency
    if plan.fail_fast:
        out["failFast"] = True
    if plan.fallback_plan is not None:
        out["fallbackPlan"] = _dump_plan(plan.fallback_plan)
    if plan.meta is not None:
        out["meta"] = plan.meta
    return out


def _dump_step(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": step.id,
        "agentId": step.agent_id,
        "action": step.action,
        "input": step.input,
    }
    if step.dependencies:
        out["dependencies"] = list(step.dependencies)
    if step.retry_policy is not None:
        rp = step.retry_policy.model_dump(by_alias=True, exclude_defaults=True)
        rp = {
            "maxRetries": step.retry_policy.max_retries,
            "backoffMs": _num(step.retry_policy.backoff_ms),
            **rp,
        }
        if "retryOn" in rp:
            rp["retryOn"] = list(rp["retryOn"])
        out["retryPolicy"] = {k: _num(v) for k, v in rp.items()}
    if step.timeout_ms is not None:
        out["timeout"] = _num(step.timeout_ms)
    if step.hedge is not None:
        out["hedge"] = {"delayMs": _num(step.hedge.delay_ms), "maxHedges": step.hedge.max_hedges}
    return out


def _dump_seed(plan: Plan, dropped: list[str]) -> dict[str, Any]:
    full = _dump_plan(plan)
    for key in ("maxConcurrency", "failFast", "meta"):
        if full.pop(key, None) is not None:
            dropped.append(f"plan '{plan.id}': {key}")
    full.pop("fallbackPlan", None)
    for step in full["steps"]:
        for key in ("timeout", "hedge"):
            if step.pop(key, None) is not None:
                dropped.append(f"plan '{plan.id}' step '{step['id']}': {key}")
        rp = step.get("retryPolicy")
        if rp:
            for key in [k for k in rp if k not in ("maxRetries", "backoffMs")]:
                dropped.append(f"plan '{plan.id}' step '{step['id']}': retryPolicy.{key}")
                del rp[key]
    if plan.fallback_plan is not None:
        full["fallbackPlan"] = _dump_seed(plan.fallback_plan, dropped)
    return full


def _set_path(node: dict[str, Any], parts: list[str], value: Any, path: str, plan_id: str) -> None:
    key = parts[0]
    if key == "steps" and len(parts) > 2:
        steps = [s for s in node["steps"] if parts[1] in ("*", s["id"])]
        if not steps:
            ids = ", ".join(s["id"] for s in node["steps"])
            raise PlanValidationError(
                f"plan '{plan_id}': '{path}' names step '{parts[1]}', "
                f"which is not a step of this plan (steps: {ids})"
            )
        for step in steps:
            _set_path(step, parts[2:], value, path, plan_id)
    elif len(parts) == 1:
        node[key] = value
    else:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise PlanValidationError(f"plan '{plan_id}': '{path}': '{key}' is not an object")
        _set_path(child, parts[1:], value, path, plan_id)


def _num(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


# ---------------------------------------------------------------- validation


def _where(raw: dict[str, Any]) -> str:
    plan_id = raw.get("id")
    return f"plan '{plan_id}'" if isinstance(plan_id, str) else "plan"


def _check_graph(plan: Plan) -> None:
    if plan.max_concurrency is not None and not plan.parallel:
        warnings.warn(
            f"plan '{plan.id}': maxConcurrency {plan.max_concurrency} has no effect because "
            "the plan is sequential (parallel: false); set parallel: true or remove it",
            PlanWarning,
            stacklevel=2,
        )
    ids = [s.id for s in plan.steps]
    seen: set[str] = set()
    for s in plan.steps:
        if s.id in seen:
            raise PlanValidationError(
                f"plan '{plan.id}': step id '{s.id}' is used by more than one step; "
                "give every step a unique id"
            )
        seen.add(s.id)
    for s in plan.steps:
        for dep in s.dependencies:
            if dep == s.id:
                raise PlanValidationError(
                    f"plan '{plan.id}': step '{s.id}' depends on itself; remove '{dep}' "
                    "from its dependencies"
                )
            if dep not in seen:
                hint = difflib.get_close_matches(dep, ids, n=1)
                fix = (
                    f" Did you mean '{hint[0]}'?"
                    if hint
                    else " Use one of these ids or remove the dependency."
                )
                raise PlanValidationError(
                    f"plan '{plan.id}': step '{s.id}' depends on '{dep}', which is not a step "
                    f"of this plan (steps: {', '.join(ids)}).{fix}"
                )
    cycle = _find_cycle(plan)
    if cycle:
        raise PlanValidationError(
            f"plan '{plan.id}': steps form a cycle {' -> '.join(cycle)}; remove one of these "
            "dependencies"
        )
    depth = len(plan.chain())
    if depth > MAX_FALLBACK_DEPTH + 1:
        raise PlanValidationError(
            f"plan '{plan.id}': fallback chain is {depth - 1} plans deep; at most "
            f"{MAX_FALLBACK_DEPTH} fallback plans may follow a plan"
        )


def _find_cycle(plan: Plan) -> list[str] | None:
    deps = {s.id: s.dependencies for s in plan.steps}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in deps:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(deps[node]):
                stack[-1] = (node, i + 1)
                nxt = deps[node][i]
                if state.get(nxt) == 1:
                    # nxt is a dependency of node: execution order is nxt ... -> node -> nxt
                    loop = path[path.index(nxt) :] + [nxt]
                    return loop[::-1]
                if not state.get(nxt):
                    state[nxt] = 1
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


_FIELD_ALIASES = {
    "Plan": [
        "id",
        "steps",
        "parallel",
        "timeout",
        "fallbackPlan",
        "maxConcurrency",
        "failFast",
        "meta",
    ],
    "Step": ["id", "agentId", "action", "input", "dependencies", "retryPolicy", "timeout", "hedge"],
    "RetryPolicy": ["maxRetries", "backoffMs", "strategy", "maxBackoffMs", "jitter", "retryOn"],
    "Hedge": ["delayMs", "maxHedges"],
}

_NESTED = {"retryPolicy": "RetryPolicy", "retry_policy": "RetryPolicy", "hedge": "Hedge"}

_FIXES = {
    "greater_than": "use a number > {gt:g}",
    "greater_than_equal": "use a number >= {ge:g}",
    "less_than_equal": "use a number <= {le:g}",
    "too_short": "it must not be empty",
    "string_too_short": "it must not be empty",
    "literal_error": "use one of {expected}",
    "float_type": "write a number such as 5000 (a bool or a string is not a number)",
    "int_type": "write a whole number such as 3 (a bool, a string or 3.0 is not one)",
    "bool_type": "write true or false (not 0/1 or a string)",
    "finite_number": "use a finite number",
}


def _translate(exc: ValidationError, raw: Any) -> PlanValidationError:
    """Turn pydantic's errors into one message naming plan, step, field and fix."""
    lines = []
    errors = exc.errors()
    for err in errors:
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, PlanValidationError):
            return ctx_err
        if err["type"] == "too_short" and len(errors) > 1:
            continue  # pydantic's echo of a failed item, not a second problem
        lines.append(_describe(err, raw))
    plan_id = raw.get("id") if isinstance(raw, dict) else None
    head = f"invalid plan '{plan_id}'" if isinstance(plan_id, str) else "invalid plan"
    return PlanValidationError(head + ":\n  " + "\n  ".join(lines))


def _describe(err: Any, raw: Any) -> str:
    loc = err["loc"]
    where: list[str] = []
    # walk the raw data along the error's location to name its plan and step
    node, kind, i = raw, "Plan", 0
    plan_label: str | None = None
    step_label: str | None = None
    field = None
    while i < len(loc):
        part = loc[i]
        if kind == "Plan":
            own = node.get("id") if isinstance(node, dict) else None
            if isinstance(own, str):
                plan_label = f"plan '{own}'"
            elif plan_label is not None:  # a fallback plan without an id
                plan_label = f"the fallback plan of {plan_label}"
            if part == "steps" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
                steps = node.get("steps") if isinstance(node, dict) else None
                idx = loc[i + 1]
                step = steps[idx] if isinstance(steps, list) and idx < len(steps) else None
                sid = step.get("id") if isinstance(step, dict) else None
                step_label = f"'{sid}'" if isinstance(sid, str) else f"#{idx + 1}"
                node, kind, i = step, "Step", i + 2
                continue
            if part in ("fallbackPlan", "fallback_plan") and isinstance(node, dict):
                node, i = node.get(part), i + 1
                step_label = None
                continue
        if kind == "Step" and part in _NESTED and i + 1 < len(loc):
            node, kind, i = (node or {}).get(part), _NESTED[part], i + 1
            continue
        field = part
        break
    if plan_label is not None:
        where.append(plan_label)
    if step_label is not None:
        where.append(f"step {step_label}")
    if kind in ("RetryPolicy", "Hedge"):
        where.append(kind[0].lower() + kind[1:])
    prefix = " ".join(where) + ": " if where else ""
    etype = err["type"]
    if etype == "extra_forbidden":
        valid = _FIELD_ALIASES[kind]
        hint = difflib.get_close_matches(str(field), valid, n=1)
        fix = f"did you mean '{hint[0]}'? " if hint else ""
        return f"{prefix}unknown field '{field}': {fix}(valid fields: {', '.join(valid)})"
    if etype == "missing":
        return f"{prefix}missing required field '{field}'"
    name = f"'{field}'" if field is not None else "value"
    fix_rule = _FIXES.get(etype)
    ctx = err.get("ctx") or {}
    fix_text = "; " + fix_rule.format(**ctx) if fix_rule else ""
    if etype == "value_error":  # our own validators: the message is the whole story
        return f"{prefix}{name}: {err['msg'].removeprefix('Value error, ')}"
    return f"{prefix}{name} {err['msg'].lower()} (got {short(err.get('input'))}){fix_text}"


# ------------------------------------------------------------------ the DAG as text
# Pure functions of a validated plan (the layout of ``ok.draw``, Mermaid); everything follows
# plan order, so the same plan always gives the same text (notebook outputs stay stable).


def depths(plan: Plan) -> dict[str, int]:
    """Step id -> its dependency depth: 0 for a step with no dependencies, else one more
    than its deepest dependency (the column it is drawn in)."""
    by_id = {s.id: s for s in plan.steps}
    out: dict[str, int] = {}

    def depth(step_id: str) -> int:  # validated plans have no cycles
        if step_id not in out:
            deps = by_id[step_id].dependencies
            out[step_id] = 1 + max(depth(d) for d in deps) if deps else 0
        return out[step_id]

    for s in plan.steps:
        depth(s.id)
    return {s.id: out[s.id] for s in plan.steps}


def describe_plan(plan: Plan) -> str:
    """'sequential, timeout 5,000 ms' — how the plan schedules its steps, in a few words."""
    parts = ["parallel" if plan.parallel else "sequential"]
    if plan.max_concurrency is not None:
        parts.append(f"at most {plan.max_concurrency} at once")
    if plan.fail_fast:
        parts.append("fail fast")
    if plan.timeout_ms is not None:
        parts.append(f"timeout {plan.timeout_ms:,.0f} ms")
    return ", ".join(parts)


def describe_step(step: Step) -> str:
    """'timeout 3,000 ms, 2 retries (linear, 500 ms)' or '' — the step's limits."""
    parts = []
    if step.timeout_ms is not None:
        parts.append(f"timeout {step.timeout_ms:,.0f} ms")
    rp = step.retry_policy
    if rp is not None and rp.max_retries:
        plural = "retry" if rp.max_retries == 1 else "retries"
        parts.append(f"{rp.max_retries} {plural} ({rp.strategy}, {rp.backoff_ms:,.0f} ms)")
    return ", ".join(parts)


def _text(text: str) -> str:
    """User text inside a quoted Mermaid label: quotes and angle brackets as entities, line
    breaks and other control characters as spaces (a label is one line)."""
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", text)
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(plan: Plan) -> str:
    """Mermaid ``flowchart LR`` text: one subgraph per plan of the fallback chain, one node
    per step (id, agent.action, limits), dependency arrows, a dotted ``fallback`` edge.
    Node ids are positional (``p0_s1``), so any step id is safe; labels carry the names."""
    lines = ["flowchart LR"]
    chain = plan.chain()
    for k, p in enumerate(chain):
        lines.append(f'  subgraph p{k}["{_text(f"plan {p.id}: {describe_plan(p)}")}"]')
        lines.append("    direction LR")
        index = {s.id: i for i, s in enumerate(p.steps)}
        for i, s in enumerate(p.steps):
            label = f"<b>{_text(s.id)}</b><br/>{_text(s.agent_id)}.{_text(s.action)}"
            if describe_step(s):
                label += f"<br/><i>{_text(describe_step(s))}</i>"
            lines.append(f'    p{k}_s{i}["{label}"]')
        for i, s in enumerate(p.steps):
            for d in s.dependencies:
                lines.append(f"    p{k}_s{index[d]} --> p{k}_s{i}")
        lines.append("  end")
    for k in range(len(chain) - 1):
        lines.append(f"  p{k} -. fallback .-> p{k + 1}")
    return "\n".join(lines) + "\n"
