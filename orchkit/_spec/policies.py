"""Resilience and overload policies (SPEC §10.1, §17): circuit breakers, admission
control (concurrency limits, queue disciplines, CoDel, a queue bound), client-side
throttling and autoscaling, per agent-id pattern.

A policies file (YAML or JSON), or the same dict::

    breakers:
      "tutor-agent-*": {window: 20, minCalls: 10, failureRate: 0.5, openMs: 30000,
                        halfOpenCalls: 3}
      "speech-agent-1": {window: 50, failureRate: 0.3, slowCallMs: 2000, slowCallRate: 0.5}
    admission:
      "tutor-agent-*":
        limit: {kind: aimd, initialLimit: 10, minLimit: 1, maxLimit: 200, backoffRatio: 0.9}
        discipline: adaptive_lifo
        codel: {targetMs: 50, intervalMs: 500}
        maxLength: 100
    throttle: {k: 2.0, windowMs: 120000}
    autoscale:
      "tutor-agent-*": {metric: in_flight, target: 4, min: 1, max: 16, pollMs: 30000,
                        provisionMs: 60000, scaleDownStabilizationMs: 300000}

Patterns are exact agent ids or globs (``fnmatch``, case-sensitive); the most specific
match serves an agent, as in agent models (§4.1); an agent no pattern matches has no
breaker (admission rule, autoscaler). ``throttle`` is one setting for every agent, each
agent keeping its own counts. Each agent gets its own state, shared by every run of one
orchestrator or one workload study. The rules themselves live in the scheduling core
(``orchkit._engine.core`` and ``orchkit._engine.overload``). Hedging is a step field
(``hedge``), not a policy here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .._base.errors import PlanValidationError
from .models import best_match
from .parse import json_value, parse, read_text, short
from .plan import MAX_MS, _Count, _Ms

SECTIONS = ("breakers", "admission", "throttle", "autoscale")


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

_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _Bounded(BaseModel):
    """A limit with ``min_limit <= initial_limit <= max_limit`` (checked)."""

    model_config = _CONFIG

    kind: str
    initial_limit: _Count = Field(default=20, ge=1)
    min_limit: _Count = Field(default=1, ge=1)
    max_limit: _Count = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> _Bounded:
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                f"the limit's bounds must hold minLimit <= initialLimit <= maxLimit, got "
                f"minLimit {self.min_limit}, initialLimit {self.initial_limit}, maxLimit "
                f"{self.max_limit}; raise maxLimit or lower minLimit"
            )
        return self


class FixedLimit(BaseModel):
    """A constant concurrency limit: at most ``limit`` attempts of the agent run at once
    (``{kind: fixed, limit: 8}``)."""

    model_config = _CONFIG

    kind: Literal["fixed"]
    limit: _Count = Field(ge=1)


class AimdLimit(_Bounded):
    """Additive increase, multiplicative decrease (Netflix concurrency-limits'
    ``AIMDLimit``): on a timeout of a running attempt or a shed, limit =
    max(min_limit, floor(limit x backoff_ratio)); on a success while in flight >= limit / 2,
    limit = min(max_limit, limit + 1)."""

    kind: Literal["aimd"]
    backoff_ratio: _Ms = Field(default=0.9, gt=0.0, lt=1.0)


class Gradient2Limit(_Bounded):
    """Netflix concurrency-limits' ``Gradient2Limit``: the limit follows the gradient
    long RTT / short RTT (clamped to [0.5, 1]) plus ``queue_size``, smoothed by
    ``smoothing``; the long RTT is an exponential average over ``long_window`` samples
    (RTT: an attempt's running time, ms)."""

    kind: Literal["gradient2"]
    smoothing: _Ms = Field(default=0.2, gt=0.0, le=1.0)
    queue_size: _Ms = Field(default=4.0, ge=0.0, le=1e9)
    long_window: _Count = Field(default=600, ge=1)


LimitPolicy = Annotated[FixedLimit | AimdLimit | Gradient2Limit, Field(discriminator="kind")]
LIMIT_KINDS = {"fixed": FixedLimit, "aimd": AimdLimit, "gradient2": Gradient2Limit}


class CodelPolicy(BaseModel):
    """CoDel for an agent's queue (Facebook's "Fail at Scale" variant): when the minimum
    queue wait over an interval of ``interval_ms`` exceeded ``target_ms``, attempts that
    waited longer than 2 x ``target_ms`` are shed as they leave the queue. Times in ms
    (defaults: Facebook's 5 and 100)."""

    model_config = _CONFIG

    target_ms: _Ms = Field(default=5.0, gt=0, le=MAX_MS)
    interval_ms: _Ms = Field(default=100.0, gt=0, le=MAX_MS)


class AdmissionPolicy(BaseModel):
    """How one agent admits attempts (SPEC §17): a concurrency limit, the order its queue
    is served in, CoDel shedding and a bound on the queue. On disk the fields are camelCase.

    Attributes:
        limit (FixedLimit | AimdLimit | Gradient2Limit | None): The concurrency limit
            (``{kind: fixed | aimd | gradient2, ...}``); the agent runs at most
            min(capacity, limit) attempts at once. None (default): its capacity only.
        discipline (str): ``"fifo"`` (default), ``"lifo"`` (the newest waiting attempt
            first) or ``"adaptive_lifo"`` (FIFO, but LIFO once the queue has been
            non-empty for longer than ``lifo_after_ms``).
        codel (CodelPolicy | None): CoDel shedding (``{targetMs, intervalMs}``); None: none.
        max_length (int | None): An attempt arriving when this many attempts are already
            waiting is shed at once (running ones not counted), >= 0 (``maxLength``);
            None (default): unbounded.
        lifo_after_ms (float | None): With ``adaptive_lifo``: how long the queue must have
            been non-empty before it serves the newest first, ms (``lifoAfterMs``;
            default: CoDel's ``intervalMs``, else 100).

    Example:
        ```python
        ok.AdmissionPolicy.model_validate(
            {"limit": {"kind": "aimd", "initialLimit": 10}, "codel": {"targetMs": 50}}
        )
        ```
    """

    model_config = _CONFIG

    limit: LimitPolicy | None = None
    discipline: Literal["fifo", "lifo", "adaptive_lifo"] = "fifo"
    codel: CodelPolicy | None = None
    max_length: _Count | None = Field(default=None, ge=0)
    lifo_after_ms: _Ms | None = Field(default=None, gt=0, le=MAX_MS)

    @property
    def lifo_after(self) -> float:
        """How long (ms) the queue must stay non-empty before ``adaptive_lifo`` goes LIFO."""
        if self.lifo_after_ms is not None:
            return self.lifo_after_ms
        return self.codel.interval_ms if self.codel is not None else 100.0


class ThrottlePolicy(BaseModel):
    """Client-side adaptive throttling (Google SRE book, "Handling Overload"), one setting
    for every agent, each agent keeping its own counts: an attempt is refused before it is
    queued with probability max(0, (requests - k x accepts) / (requests + 1)) over the last
    ``window_ms``.

    Attributes:
        k (float): The multiplier, > 0 (default 2: the client sends up to twice what the
            agent accepts).
        window_ms (float): The sliding window the counts cover, ms (``windowMs``; default
            120000).
    """

    model_config = _CONFIG

    k: _Ms = Field(default=2.0, gt=0.0, le=1e6)
    window_ms: _Ms = Field(default=120_000.0, gt=0, le=MAX_MS)


class AutoscalePolicy(BaseModel):
    """An autoscaler for one agent's capacity (Kubernetes HPA / KEDA semantics): every
    ``poll_ms``, desired = ceil(metric / target) clamped to [``min``, ``max``]; an increase
    takes effect ``provision_ms`` later; a decrease only to the largest desired value of the
    last ``scale_down_stabilization_ms``. Times in ms; camelCase on disk.

    Attributes:
        metric (str): ``"in_flight"`` (attempts running and waiting, default) or
            ``"queue_length"`` (waiting only).
        target (float): The metric's value per unit of capacity, > 0.
        min (int): The smallest capacity, >= 1 (default 1).
        max (int): The largest capacity, >= ``min``.
        poll_ms (float): How often the metric is read (``pollMs``; default 15000).
        provision_ms (float): How long an increase takes to arrive (``provisionMs``;
            default 0).
        scale_down_stabilization_ms (float): The window a decrease looks back over
            (``scaleDownStabilizationMs``; default 300000; 0: decrease at once).
    """

    model_config = _CONFIG

    metric: Literal["in_flight", "queue_length"] = "in_flight"
    target: _Ms = Field(gt=0.0, le=1e9)
    min: _Count = Field(default=1, ge=1)
    max: _Count = Field(ge=1)
    poll_ms: _Ms = Field(default=15_000.0, gt=0, le=MAX_MS)
    provision_ms: _Ms = Field(default=0.0, ge=0, le=MAX_MS)
    scale_down_stabilization_ms: _Ms = Field(default=300_000.0, ge=0, le=MAX_MS)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalePolicy:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max}); use min <= max")
        return self


def _keys(model: type[BaseModel]) -> list[str]:
    return [to_camel(name) for name in model.model_fields]


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "breakers": BreakerPolicy,
    "admission": AdmissionPolicy,
    "autoscale": AutoscalePolicy,
}


class Policies:
    """Resilience and overload policies (SPEC §10.1, §17), per agent-id pattern: circuit
    breakers, admission control, client-side throttling and autoscaling.

    Give them as ``policies=`` to ``ok.Orchestrator``, ``ok.simulate``, ``ok.monte_carlo``,
    ``ok.sweep``, ``ok.tune`` and ``ok.capacity_for``: an object of this class, a dict or
    a YAML/JSON file of the form ``{breakers: {pattern: {...}}, admission: {pattern:
    {...}}, throttle: {k, windowMs}, autoscale: {pattern: {...}}}`` (every section
    optional). A pattern is an agent id or a glob; the most specific match serves an agent
    (as in ``AgentModels``), and an agent no pattern matches has no breaker (admission rule,
    autoscaler). Each agent gets its own state, shared by every run of one orchestrator or
    one workload study. Build from data with ``from_dict`` or ``load`` (this constructor
    does not validate).

    Args:
        breakers: Pattern -> its ``BreakerPolicy``.
        source: Where the policies come from, named in error messages.
        admission: Pattern -> its ``AdmissionPolicy``.
        throttle: The ``ThrottlePolicy`` of every agent, or None.
        autoscale: Pattern -> its ``AutoscalePolicy``.

    Attributes:
        breakers (dict[str, BreakerPolicy]): Pattern -> its breaker, in the order given.
        admission (dict[str, AdmissionPolicy]): Pattern -> its admission rule.
        throttle (ThrottlePolicy | None): Client-side throttling, or None.
        autoscale (dict[str, AutoscalePolicy]): Pattern -> its autoscaler.
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

    def __init__(
        self,
        breakers: dict[str, BreakerPolicy] | None = None,
        source: str = "policies",
        *,
        admission: dict[str, AdmissionPolicy] | None = None,
        throttle: ThrottlePolicy | None = None,
        autoscale: dict[str, AutoscalePolicy] | None = None,
    ):
        self.breakers = dict(breakers or {})
        self.admission = dict(admission or {})
        self.throttle = throttle
        self.autoscale = dict(autoscale or {})
        self.source = source
        self._patterns = list(self.breakers)
        self._admission = list(self.admission)
        self._autoscale = list(self.autoscale)

    @classmethod
    def from_dict(cls, data: Any, source: str = "policies") -> Policies:
        """Validate policies in their on-disk form.

        Args:
            data: ``{"breakers": {pattern: settings}, "admission": {pattern: settings},
                "throttle": settings, "autoscale": {pattern: settings}}`` (each section
                optional); settings are dicts of camelCase keys (times in ms) or the
                section's policy object (``BreakerPolicy``, ``AdmissionPolicy``,
                ``ThrottlePolicy``, ``AutoscalePolicy``).
            source: Where they come from, named in error messages.

        Returns:
            The policies.

        Raises:
            PlanValidationError: An unknown section or key, or a wrong value; the message
                names the section, the pattern, the key and the fix.
        """
        if not isinstance(data, dict):
            raise PlanValidationError(
                f"{source}: policies must be a mapping of sections ({', '.join(SECTIONS)}), "
                f"got {type(data).__name__}"
            )
        for key in data:
            if key not in SECTIONS:
                raise PlanValidationError(
                    f"{source}: unknown section '{key}'{_hint(key, SECTIONS)}"
                    f" (valid sections: {', '.join(SECTIONS)})"
                )
        per_pattern: dict[str, dict[str, Any]] = {}
        for section, model in _SECTION_MODELS.items():
            raw = data.get(section) or {}
            if not isinstance(raw, dict):
                raise PlanValidationError(
                    f"{source}: '{section}' must map agent-id patterns to "
                    f"{_WHAT[section]} settings, got {type(raw).__name__}"
                )
            out: dict[str, Any] = {}
            for pattern, spec in raw.items():
                where = f"{source}: {section} '{pattern}'"
                if not isinstance(pattern, str) or not pattern:
                    raise PlanValidationError(
                        f"{source}: {_WHAT[section]} patterns must be non-empty "
                        f"agent ids or globs, got {pattern!r}"
                    )
                if isinstance(spec, model):
                    out[pattern] = spec
                    continue
                if not isinstance(spec, dict):
                    raise PlanValidationError(
                        f"{where}: settings must be a mapping of "
                        f"{', '.join(_keys(model))}, got {short(spec)}"
                    )
                out[pattern] = _validate(model, spec, where)
            per_pattern[section] = out
        throttle = data.get("throttle")
        if throttle is not None and not isinstance(throttle, ThrottlePolicy):
            if not isinstance(throttle, dict):
                raise PlanValidationError(
                    f"{source}: 'throttle' must be a mapping of "
                    f"{', '.join(_keys(ThrottlePolicy))}, got {short(throttle)}"
                )
            throttle = _validate(ThrottlePolicy, throttle, f"{source}: throttle")
        return cls(
            per_pattern["breakers"],
            source,
            admission=per_pattern["admission"],
            throttle=throttle,
            autoscale=per_pattern["autoscale"],
        )

    @classmethod
    def load(cls, path: str | Path) -> Policies:
        """Read policies from a file, with the plan files' safe reader (duplicate keys,
        alias bombs and depth are refused alike).

        Args:
            path: A ``.yaml``/``.yml`` file, or JSON (any other suffix); it becomes
                ``source``. An empty file gives no policies.

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

    def admission_for(self, agent_id: str) -> AdmissionPolicy | None:
        """The admission rule of an agent (most specific pattern), or None."""
        i = best_match(agent_id, self._admission)
        return None if i is None else self.admission[self._admission[i]]

    def autoscale_for(self, agent_id: str) -> AutoscalePolicy | None:
        """The autoscaler of an agent (most specific pattern), or None."""
        i = best_match(agent_id, self._autoscale)
        return None if i is None else self.autoscale[self._autoscale[i]]

    def overload(
        self, agent_id: str
    ) -> tuple[AdmissionPolicy | None, ThrottlePolicy | None, AutoscalePolicy | None] | None:
        """An agent's overload rules (admission, throttle, autoscale), or None when none
        applies to it (what the scheduling core asks once per agent)."""
        rules = (self.admission_for(agent_id), self.throttle, self.autoscale_for(agent_id))
        return None if rules == (None, None, None) else rules

    @property
    def has_overload(self) -> bool:
        """True when an admission, throttle or autoscale rule is configured."""
        return bool(self.admission or self.autoscale or self.throttle is not None)

    def to_dict(self) -> dict[str, Any]:
        """The policies in their on-disk (camelCase, ms) form (the keys that were given;
        ``breakers`` always, the other sections when set)."""
        out: dict[str, Any] = {
            "breakers": {
                p: b.model_dump(by_alias=True, exclude_unset=True) for p, b in self.breakers.items()
            }
        }
        if self.admission:
            out["admission"] = {
                p: a.model_dump(by_alias=True, exclude_unset=True)
                for p, a in self.admission.items()
            }
        if self.throttle is not None:
            out["throttle"] = self.throttle.model_dump(by_alias=True, exclude_unset=True)
        if self.autoscale:
            out["autoscale"] = {
                p: a.model_dump(by_alias=True, exclude_unset=True)
                for p, a in self.autoscale.items()
            }
        return out

    def with_values(self, values: dict[str, Any]) -> Policies:
        """A copy with settings changed by dotted path, validated like a loaded file (what
        ``ok.sweep`` and ``ok.tune`` use for policy paths).

        Args:
            values: Paths to their new values: ``"breakers.<pattern>.<key>"`` (e.g.
                ``{"breakers.tutor-agent-*.openMs": 10_000}``),
                ``"admission.<pattern>.<key>"`` (``maxLength``, ``discipline``,
                ``lifoAfterMs``), ``"admission.<pattern>.limit.<key>"`` and
                ``"admission.<pattern>.codel.<key>"`` (e.g.
                ``"admission.tutor-agent-*.limit.backoffRatio"``), ``"throttle.<key>"``
                (``throttle.k``, ``throttle.windowMs``) and
                ``"autoscale.<pattern>.<key>"`` (e.g. ``"autoscale.tutor-agent-*.target"``):
                ``<pattern>`` one of the section's patterns as written (it may contain
                dots), ``<key>`` a camelCase setting (times in ms).

        Returns:
            The new policies (these are unchanged).

        Raises:
            PlanValidationError: A path that is not one of these, a pattern that is not in
                the policies, an unknown key or a wrong value.
        """
        data = self.to_dict()
        for path, value in values.items():
            section = path.split(".", 1)[0]
            if section == "throttle":
                key = path[len("throttle.") :]
                if not key or "." in key:
                    raise PlanValidationError(
                        f"{self.source}: '{path}' is not a throttle path; use throttle.<key> "
                        f"({', '.join(_keys(ThrottlePolicy))})"
                    )
                data.setdefault("throttle", {})[key] = value
                continue
            if section not in _SECTION_MODELS:
                raise PlanValidationError(
                    f"{self.source}: '{path}' is not a policy path; use breakers.<pattern>.<key>,"
                    " admission.<pattern>.<key> (limit.<key>, codel.<key>), throttle.<key> or "
                    "autoscale.<pattern>.<key>"
                )
            patterns = data.get(section, {})
            rest = path[len(section) + 1 :]
            found = [p for p in patterns if rest.startswith(p + ".") and len(rest) > len(p) + 1]
            if not found:
                raise PlanValidationError(
                    f"{self.source}: '{path}' names no {section} pattern of the policies "
                    f"({section} patterns: {', '.join(patterns) or 'none'}); use "
                    f"{section}.<pattern>.<key>"
                )
            pattern = max(found, key=len)
            keys = rest[len(pattern) + 1 :].split(".")
            nested = section == "admission" and len(keys) == 2 and keys[0] in ("limit", "codel")
            if len(keys) != 1 and not nested:
                raise PlanValidationError(
                    f"{self.source}: '{path}' is not a path of {section}; use "
                    f"{section}.<pattern>.<key>"
                    + (
                        " or admission.<pattern>.limit.<key> / .codel.<key>"
                        if section == "admission"
                        else ""
                    )
                )
            target = patterns[pattern]
            if nested:
                inner = target.get(keys[0])
                target[keys[0]] = target = dict(inner) if isinstance(inner, dict) else {}
            target[keys[-1]] = value
        return Policies.from_dict(data, self.source)

    def __bool__(self) -> bool:
        return bool(self.breakers) or self.has_overload

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Policies)
            and self.breakers == other.breakers
            and self.admission == other.admission
            and self.throttle == other.throttle
            and self.autoscale == other.autoscale
        )

    def __repr__(self) -> str:
        return "Policies(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


_WHAT = {"breakers": "breaker", "admission": "admission", "autoscale": "autoscale"}


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
    return policies.breaker if policies is not None and policies.breakers else None


def overload_lookup(policies: Policies | None):
    """The core's ``overload`` argument: None when no admission, throttle or autoscale
    rule is configured (no cost)."""
    return policies.overload if policies is not None and policies.has_overload else None


def _check_keys(spec: dict, model: type[Any], where: str, prefix: str = "") -> None:
    """Unknown keys, with a "did you mean", at every level (limit and codel included)."""
    valid = _keys(model)
    for key in spec:
        if key not in valid:
            raise PlanValidationError(
                f"{where}: unknown key '{prefix}{key}'{_hint(key, valid)} "
                f"(valid keys{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(valid)})"
            )
    if model is AdmissionPolicy:
        limit = spec.get("limit")
        if isinstance(limit, dict):
            kind = limit.get("kind")
            sub = LIMIT_KINDS.get(kind) if isinstance(kind, str) else None
            if sub is None:
                raise PlanValidationError(
                    f"{where}: 'limit' needs kind: fixed, aimd or gradient2"
                    + (
                        f" (got kind {short(kind)}{_hint(kind, LIMIT_KINDS)})"
                        if "kind" in limit
                        else ""
                    )
                )
            _check_keys(limit, sub, where, "limit.")
        codel = spec.get("codel")
        if isinstance(codel, dict):
            _check_keys(codel, CodelPolicy, where, "codel.")


def _validate(model: type[Any], spec: dict, where: str) -> Any:
    _check_keys(spec, model, where)
    spec = json_value(spec, where, finite=False)  # numpy scalars -> Python numbers
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(
                str(p) for p in err["loc"] if not isinstance(p, int) and p not in LIMIT_KINDS
            )
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error":  # a rule between settings: our own message
                lines.append(f"'{loc}': {msg}" if loc else msg)
                continue
            got = f" (got {short(err['input'])})" if loc else ""
            lines.append(f"'{loc}' {msg.lower()}{got}{_fix(err)}" if loc else msg)
        raise PlanValidationError(f"{where}: " + "; ".join(lines)) from None


def _breaker(spec: dict, where: str) -> BreakerPolicy:
    return _validate(BreakerPolicy, spec, where)


def _fix(err: Any) -> str:
    """The fix for a pydantic error (strict types and bounds, as in plans)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "less_than_equal":
        return f"; use a number <= {ctx.get('le'):g}"
    if kind == "less_than":
        return f"; use a number < {ctx.get('lt'):g}"
    if kind == "greater_than":
        return f"; use a number > {ctx.get('gt'):g}"
    if kind == "greater_than_equal":
        return f"; use a number >= {ctx.get('ge'):g}"
    if kind in ("int_type", "int_from_float"):
        return "; write a whole number such as 20 (a bool, a string or 20.0 is not a count)"
    if kind == "float_type":
        return "; write a number such as 0.5 or 30000 (a bool or a string is not a number)"
    if kind == "finite_number":
        return f"; use a finite number (times at most {MAX_MS:g} ms)"
    if kind == "literal_error":
        return f"; use one of {ctx.get('expected')}"
    if kind == "missing":
        return "; give it"
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return "; give kind: fixed, aimd or gradient2"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "; write a mapping of its settings"
    return ""


def _hint(key: Any, valid: Any) -> str:
    hint = difflib.get_close_matches(str(key), list(valid), n=1)
    return f": did you mean '{hint[0]}'?" if hint else ""
