"""Resilience policies (SPEC §10.1): circuit breakers per agent-id pattern.

A policies file (YAML or JSON), or the same dict::

    breakers:
      "tutor-agent-*": {window: 20, minCalls: 10, failureRate: 0.5, openMs: 30000,
                        halfOpenCalls: 3}
      "speech-agent-1": {window: 50, failureRate: 0.3, slowCallMs: 2000, slowCallRate: 0.5}

Patterns are exact agent ids or globs (``fnmatch``, case-sensitive); the most specific
match serves an agent, as in agent models (§4.1); an agent no pattern matches has no
breaker. Each agent gets its own breaker state, shared by every run of one orchestrator
or one study. The rules themselves live in the scheduling core (``orchkit._engine.core``).
Hedging is a step field (``hedge``), not a policy here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .._base.errors import PlanValidationError
from .models import best_match
from .parse import json_value, parse, read_text, short
from .plan import MAX_MS, _Count, _Ms

SECTIONS = ("breakers",)


class BreakerPolicy(BaseModel):
    """One agent's circuit breaker: Resilience4j's count-based sliding window (SPEC §10.1).
    Times in ms; on disk the fields are camelCase (``minCalls``, ``failureRate``, ...).

    Closed, the breaker admits every attempt and records each one that called the agent:
    a failure if it ended in ``error`` or ``timeout``, slow if it ran (start to end, queue
    wait excluded) longer than ``slow_call_ms``. It opens when at least ``min_calls`` of
    the last ``window`` calls are recorded and their failure rate or slow-call rate reaches
    its threshold. Open, it rejects every attempt at once (outcome ``"rejected"``, counted
    as an ``"error"`` by ``retryOn``) for ``open_ms``; then, half-open, it admits
    ``half_open_calls`` trial attempts and opens again or closes on their rates.

    Types are strict as in plans (counts are integers, rates and times numbers; no bools
    or strings).

    Attributes:
        window (int): The last N recorded calls the rates are computed over, >= 1 (default
            100).
        min_calls (int): Calls recorded before a closed breaker may open, 1 to ``window``
            (``minCalls``; default: ``window``).
        failure_rate (float): Open when failures / calls >= this, in (0, 1]
            (``failureRate``; default 0.5).
        slow_call_ms (float | None): A call running longer than this is slow, ms
            (``slowCallMs``); None (default): no slow-call rule.
        slow_call_rate (float): With ``slow_call_ms``, also open when slow calls / calls
            >= this, in (0, 1] (``slowCallRate``; default 1.0).
        open_ms (float): How long the breaker stays open before its trial calls, ms, at
            most 1e12 (``openMs``; default 60000).
        half_open_calls (int): Trial calls admitted half-open, >= 1 (``halfOpenCalls``;
            default 10).

    Raises:
        pydantic.ValidationError: Built with a wrong type or value, or ``min_calls`` >
            ``window`` (``Policies.from_dict`` raises ``PlanValidationError`` instead).

    Example:
        ```python
        ok.BreakerPolicy(window=20, min_calls=10, failure_rate=0.5, open_ms=30_000)
        ```
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    # Strict types, as in plans: a bool is not a number, a string is not a number, an
    # integral float is not a count, and every time is finite and at most MAX_MS.
    window: _Count = Field(default=100, ge=1)
    min_calls: _Count | None = Field(default=None, ge=1)
    failure_rate: _Ms = Field(default=0.5, gt=0.0, le=1.0)
    slow_call_ms: _Ms | None = Field(default=None, gt=0, le=MAX_MS)
    slow_call_rate: _Ms = Field(default=1.0, gt=0.0, le=1.0)
    open_ms: _Ms = Field(default=60_000.0, gt=0, le=MAX_MS)
    half_open_calls: _Count = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> BreakerPolicy:
        if self.min_calls is None:
            object.__setattr__(self, "min_calls", self.window)
        elif self.min_calls > self.window:
            raise ValueError(
                f"minCalls ({self.min_calls}) is larger than window "
                f"({self.window}), so the breaker could never open; use "
                f"minCalls <= window"
            )
        return self


_KEYS = [to_camel(name) for name in BreakerPolicy.model_fields]


class Policies:
    """Resilience policies (SPEC §10.1): a circuit breaker per agent-id pattern.

    Give them as ``policies=`` to ``ok.Orchestrator``, ``ok.simulate``, ``ok.monte_carlo``,
    ``ok.sweep``, ``ok.tune`` and ``ok.capacity_for``: an object of this class, a dict or
    a YAML/JSON file of the form ``{breakers: {pattern: {window: 20, failureRate: 0.5,
    ...}}}``. A pattern is an agent id or a glob; the most specific match serves an agent
    (as in ``AgentModels``), and an agent no pattern matches has no breaker. Each agent
    gets its own breaker state, shared by every run of one orchestrator or one workload
    study. Build from data with ``from_dict`` or ``load`` (this constructor does not
    validate).

    Args:
        breakers: Pattern -> its ``BreakerPolicy``.
        source: Where the policies come from, named in error messages.

    Attributes:
        breakers (dict[str, BreakerPolicy]): Pattern -> its breaker, in the order given.
        source (str): Where the policies come from (the file's path after ``load``).

    Example:
        ```python
        policies = ok.Policies.from_dict({"breakers": {
            "tutor-agent-*": {"window": 20, "minCalls": 10, "failureRate": 0.5, "openMs": 30_000},
        }})
        policies.breaker("tutor-agent-1").open_ms  # 30000.0
        run = ok.simulate(ok.examples.plan("parallel_analysis"), ok.examples.models(),
                          policies=policies)
        ```
    """

    def __init__(self, breakers: dict[str, BreakerPolicy] | None = None, source: str = "policies"):
        self.breakers = dict(breakers or {})
        self.source = source
        self._patterns = list(self.breakers)

    @classmethod
    def from_dict(cls, data: Any, source: str = "policies") -> Policies:
        """Validate policies in their on-disk form.

        Args:
            data: ``{"breakers": {pattern: settings}}``; settings are a dict of camelCase
                keys (``window``, ``minCalls``, ``failureRate``, ``slowCallMs``,
                ``slowCallRate``, ``openMs``, ``halfOpenCalls``; times in ms) or a
                ``BreakerPolicy``.
            source: Where they come from, named in error messages.

        Returns:
            The policies.

        Raises:
            PlanValidationError: An unknown section or key, or a wrong value; the message
                names the pattern, the key and the fix.
        """
        if not isinstance(data, dict):
            raise PlanValidationError(
                f"{source}: policies must be a mapping with a 'breakers' "
                f"section, got {type(data).__name__}"
            )
        for key in data:
            if key not in SECTIONS:
                raise PlanValidationError(
                    f"{source}: unknown section '{key}'{_hint(key, SECTIONS)}"
                    f" (valid sections: {', '.join(SECTIONS)})"
                )
        raw = data.get("breakers") or {}
        if not isinstance(raw, dict):
            raise PlanValidationError(
                f"{source}: 'breakers' must map agent-id patterns to "
                f"breaker settings, got {type(raw).__name__}"
            )
        breakers = {}
        for pattern, spec in raw.items():
            where = f"{source}: breakers '{pattern}'"
            if not isinstance(pattern, str) or not pattern:
                raise PlanValidationError(
                    f"{source}: breaker patterns must be non-empty "
                    f"agent ids or globs, got {pattern!r}"
                )
            if isinstance(spec, BreakerPolicy):
                breakers[pattern] = spec
                continue
            if not isinstance(spec, dict):
                raise PlanValidationError(
                    f"{where}: settings must be a mapping of {', '.join(_KEYS)}, got {spec!r}"
                )
            breakers[pattern] = _breaker(spec, where)
        return cls(breakers, source)

    @classmethod
    def load(cls, path: str | Path) -> Policies:
        """Read policies from a file, with the plan files' safe reader (duplicate keys,
        alias bombs and depth are refused alike).

        Args:
            path: A ``.yaml``/``.yml`` file, or JSON (any other suffix); it becomes
                ``source``. An empty file gives no breakers.

        Returns:
            The policies.

        Raises:
            PlanValidationError: The file cannot be read or parsed, or its policies are
                wrong.
        """
        path = Path(path)
        fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
        data = parse(read_text(path, "policies file"), fmt, str(path))
        return cls.from_dict(data if data is not None else {}, str(path))

    def breaker(self, agent_id: str) -> BreakerPolicy | None:
        """The breaker that serves an agent.

        Args:
            agent_id: An agent id (``agentId``).

        Returns:
            The policy of the most specific pattern matching ``agent_id``, or None: the
                agent has no breaker.
        """
        i = best_match(agent_id, self._patterns)
        return None if i is None else self.breakers[self._patterns[i]]

    def to_dict(self) -> dict[str, Any]:
        """The policies in their on-disk (camelCase, ms) form (the keys that were given)."""
        return {
            "breakers": {
                p: b.model_dump(by_alias=True, exclude_unset=True) for p, b in self.breakers.items()
            }
        }

    def with_values(self, values: dict[str, Any]) -> Policies:
        """A copy with settings changed by dotted path, validated like a loaded file (what
        ``ok.sweep`` and ``ok.tune`` use for ``breakers.`` paths).

        Args:
            values: Paths ``"breakers.<pattern>.<key>"`` to their new values, e.g.
                ``{"breakers.tutor-agent-*.openMs": 10_000}``: ``<pattern>`` one of the
                policies' patterns as written (it may contain dots), ``<key>`` a camelCase
                setting (times in ms).

        Returns:
            The new policies (these are unchanged).

        Raises:
            PlanValidationError: A path that is not ``breakers.<pattern>.<key>``, a
                pattern that is not in the policies, an unknown key or a wrong value.
        """
        data = self.to_dict()
        for path, value in values.items():
            parts = path.split(".")
            if len(parts) < 3 or parts[0] != "breakers":
                raise PlanValidationError(
                    f"{self.source}: '{path}' is not a breaker path; use breakers.<pattern>.<key>"
                )
            pattern, key = ".".join(parts[1:-1]), parts[-1]
            if pattern not in data["breakers"]:
                raise PlanValidationError(
                    f"{self.source}: '{path}' names breaker pattern '{pattern}', which is not "
                    f"in the policies (patterns: {', '.join(self._patterns) or 'none'})"
                )
            data["breakers"][pattern][key] = value
        return Policies.from_dict(data, self.source)

    def __bool__(self) -> bool:
        return bool(self.breakers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policies) and self.breakers == other.breakers

    def __repr__(self) -> str:
        return f"Policies(breakers={self.to_dict()['breakers']!r})"


def as_policies(policies: Policies | dict | str | Path | None) -> Policies | None:
    """None, a ``Policies``, a dict or a YAML/JSON file path -> ``Policies`` or None."""
    if policies is None or isinstance(policies, Policies):
        return policies
    if isinstance(policies, dict):
        return Policies.from_dict(policies)
    if isinstance(policies, (str, Path)):
        return Policies.load(policies)
    raise TypeError(
        f"policies must be a dict, a YAML/JSON file path or an orchkit Policies, "
        f"got {type(policies).__name__}"
    )


def breaker_lookup(policies: Policies | None):
    """The core's ``breakers`` argument: None when no breaker is configured (no cost)."""
    return policies.breaker if policies else None


def _breaker(spec: dict, where: str) -> BreakerPolicy:
    for key in spec:
        if key not in _KEYS:
            raise PlanValidationError(
                f"{where}: unknown key '{key}'{_hint(key, _KEYS)} (valid keys: {', '.join(_KEYS)})"
            )
    spec = json_value(spec, where, finite=False)  # numpy scalars -> Python numbers
    try:
        return BreakerPolicy.model_validate(spec)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
            got = f" (got {short(err['input'])})" if loc else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"'{loc}' {msg.lower()}{got}{_fix(err)}" if loc else msg)
        raise PlanValidationError(f"{where}: " + "; ".join(lines)) from None


def _fix(err: Any) -> str:
    """The fix for a pydantic error (strict types and bounds, as in plans)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "less_than_equal":
        return f"; use a number <= {ctx.get('le'):g}"
    if kind in ("int_type", "int_from_float"):
        return "; write a whole number such as 20 (a bool, a string or 20.0 is not a count)"
    if kind == "float_type":
        return "; write a number such as 0.5 or 30000 (a bool or a string is not a number)"
    if kind == "finite_number":
        return f"; use a finite number (times at most {MAX_MS:g} ms)"
    return ""


def _hint(key: Any, valid: Any) -> str:
    hint = difflib.get_close_matches(str(key), list(valid), n=1)
    return f": did you mean '{hint[0]}'?" if hint else ""
