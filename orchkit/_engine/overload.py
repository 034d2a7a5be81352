"""The state of SPEC §17's overload rules, one agent at a time: concurrency limiters
(fixed, AIMD, Gradient2), CoDel, client-side throttling and the autoscaler.

Pure like the core that owns them (no clock, no I/O): every method is told the time in
ms. The core (``orchkit._engine.core``) decides when each is consulted; its module
docstring states the rules as a user sees them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

FIFO, LIFO, ADAPTIVE_LIFO = 0, 1, 2
_DISCIPLINES = {"fifo": FIFO, "lifo": LIFO, "adaptive_lifo": ADAPTIVE_LIFO}
RTT_WARMUP = 10  # Gradient2's long RTT is a plain mean of its first samples (Netflix's)


class AimdLimiter:
    """Netflix's AIMDLimit: ``drop()`` multiplies by ``backoff_ratio`` (floored, at least
    ``min_limit``); ``ended`` adds one on a success while in flight >= limit / 2."""

    __slots__ = ("limit", "min_limit", "max_limit", "ratio", "initial")

    def __init__(self, policy: Any):
        self.initial = policy.initial_limit
        self.min_limit = policy.min_limit
        self.max_limit = policy.max_limit
        self.ratio = policy.backoff_ratio
        self.limit = self.initial

    @property
    def usable(self) -> int:
        return self.limit

    def reset(self) -> None:
        self.limit = self.initial

    def drop(self) -> None:
        self.limit = max(self.min_limit, math.floor(self.limit * self.ratio))

    def ended(self, outcome: str, rtt: float, in_flight: int) -> None:
        """A started attempt ended after ``rtt`` ms with ``in_flight`` attempts running (itself
        included)."""
        if outcome == "timeout":
            self.drop()
        elif outcome == "succeeded" and in_flight * 2 >= self.limit:
            self.limit = min(self.max_limit, self.limit + 1)


class Gradient2Limiter:
    """Netflix's Gradient2Limit (tolerance 1): per RTT sample, the long RTT (a mean of the
    first ``RTT_WARMUP`` samples, then an exponential average with factor
    2 / (long_window + 1)) takes the sample; if long / short > 2 the long RTT decays by
    0.95 (the drift guard); while in flight < limit / 2 nothing else changes (app-limited);
    else gradient = clamp(long / short, 0.5, 1), new = limit x gradient + queue_size and
    limit = limit x (1 - smoothing) + new x smoothing, clamped to [min_limit, max_limit].
    The usable limit is floor(limit), at least 1."""

    __slots__ = (
        "limit",
        "min_limit",
        "max_limit",
        "smoothing",
        "queue_size",
        "factor",
        "long_rtt",
        "count",
        "initial",
    )

    def __init__(self, policy: Any):
        self.initial = float(policy.initial_limit)
        self.min_limit = policy.min_limit
        self.max_limit = policy.max_limit
        self.smoothing = policy.smoothing
        self.queue_size = policy.queue_size
        self.factor = 2.0 / (policy.long_window + 1)
        self.reset()

    def reset(self) -> None:
        self.limit = self.initial
        self.long_rtt = 0.0
        self.count = 0

    @property
    def usable(self) -> int:
        return max(1, math.floor(self.limit))

    def drop(self) -> None:
        """A shed says nothing about RTT: Gradient2 ignores it."""

    def ended(self, outcome: str, rtt: float, in_flight: int) -> None:
        """Successes and timeouts are RTT samples (as Netflix's limiters sample successes
        and drops); errors and cancellations are ignored, and so is a zero RTT."""
        if (outcome == "succeeded" or outcome == "timeout") and rtt > 0:
            self.sample(rtt, in_flight)

    def sample(self, rtt: float, in_flight: int) -> None:
        """One RTT sample (ms) with ``in_flight`` attempts running."""
        if self.count < RTT_WARMUP:
            self.count += 1
            self.long_rtt += (rtt - self.long_rtt) / self.count
        else:
            self.long_rtt += (rtt - self.long_rtt) * self.factor
        long_rtt = self.long_rtt
        if long_rtt / rtt > 2:  # recovering from a long overload: let the long RTT catch up
            self.long_rtt = long_rtt * 0.95
        if in_flight < self.limit / 2:
            return  # app-limited: no evidence the limit is too small or too large
        gradient = max(0.5, min(1.0, long_rtt / rtt))
        new = self.limit * gradient + self.queue_size
        new = self.limit * (1 - self.smoothing) + new * self.smoothing
        self.limit = max(self.min_limit, min(self.max_limit, new))


class FixedLimiter:
    """A constant limit."""

    __slots__ = ("usable",)

    def __init__(self, policy: Any):
        self.usable = policy.limit

    def reset(self) -> None:
        pass

    def drop(self) -> None:
        pass

    def ended(self, outcome: str, rtt: float, in_flight: int) -> None:
        pass


Limiter = FixedLimiter | AimdLimiter | Gradient2Limiter


def limiter(policy: Any) -> Limiter:
    """The limiter of a limit policy (``FixedLimit``, ``AimdLimit``, ``Gradient2Limit``)."""
    if policy.kind == "aimd":
        return AimdLimiter(policy)
    if policy.kind == "gradient2":
        return Gradient2Limiter(policy)
    return FixedLimiter(policy)


class Codel:
    """CoDel in the form Facebook's folly uses for server queues. A sample is the queue's
    age when an attempt leaves it: the wait of the oldest attempt still waiting, the leaving
    one included (in FIFO, the leaving attempt's own wait; an attempt that starts at once
    is a sample of 0). Intervals are consecutive windows of ``interval`` ms, each opened by
    the first sample after the previous one closed (so a window always has a sample); when
    a sample arrives after its window closed, the closed window is judged (overloaded if
    its minimum sample exceeded ``target``) and a new window opens with that sample. While
    overloaded, an attempt leaving the queue after waiting more than 2 x ``target`` is shed
    (the new window's first included)."""

    __slots__ = ("target", "interval", "window_end", "min_wait", "overloaded")

    def __init__(self, policy: Any):
        self.target = policy.target_ms
        self.interval = policy.interval_ms
        self.reset()

    def reset(self) -> None:
        self.window_end = -math.inf
        self.min_wait = 0.0
        self.overloaded = False

    def observe(self, age: float, now: float) -> None:
        """A sample: the queue's age (ms) at ``now``."""
        if now >= self.window_end:
            self.overloaded = self.min_wait > self.target
            self.window_end = now + self.interval
            self.min_wait = age
        elif age < self.min_wait:
            self.min_wait = age

    def sheds(self, wait: float) -> bool:
        """Whether an attempt that waited ``wait`` ms is shed as it leaves the queue now."""
        return self.overloaded and wait > 2 * self.target


class Throttle:
    """Client-side adaptive throttling (Google SRE): the requests and accepts of the last
    ``window`` ms; ``probability(now)`` is max(0, (requests - k x accepts) /
    (requests + 1)) over the window (before the current request is counted)."""

    __slots__ = ("k", "window", "requests", "accepts")

    def __init__(self, policy: Any):
        self.k = policy.k
        self.window = policy.window_ms
        self.requests: deque[float] = deque()
        self.accepts: deque[float] = deque()

    def reset(self) -> None:
        self.requests.clear()
        self.accepts.clear()

    def probability(self, now: float) -> float:
        """The refusal probability of a request at ``now`` (times leave the window once
        ``window`` ms old)."""
        edge = now - self.window
        req, acc = self.requests, self.accepts
        while req and req[0] <= edge:
            req.popleft()
        while acc and acc[0] <= edge:
            acc.popleft()
        n = len(req)
        return max(0.0, (n - self.k * len(acc)) / (n + 1))

    def request(self, now: float) -> None:
        self.requests.append(now)

    def accept(self, now: float) -> None:
        self.accepts.append(now)


class Scaler:
    """An autoscaler (HPA semantics): ``poll`` records the desired capacity and says what
    to do now; ``goal`` is the capacity asked for (provisioning included), ``capacity``
    the one in effect."""

    __slots__ = (
        "metric_waiting_only",
        "target",
        "min",
        "max",
        "poll_ms",
        "provision_ms",
        "window",
        "initial",
        "capacity",
        "goal",
        "history",
        "timer",
        "pending",
    )

    def __init__(self, policy: Any, capacity: float, now: float = 0.0):
        self.metric_waiting_only = policy.metric == "queue_length"
        self.target = policy.target
        self.min = policy.min
        self.max = policy.max
        self.poll_ms = policy.poll_ms
        self.provision_ms = policy.provision_ms
        self.window = policy.scale_down_stabilization_ms
        self.initial = int(min(self.max, max(self.min, capacity)))
        self.timer: Any = None  # the poll timer, while polling
        self.pending: list[Any] = []  # provisioning timers
        self.reset(now)

    def reset(self, now: float = 0.0) -> None:
        """The initial capacity, which counts as a desired value at ``now`` (so nothing
        scales down within the stabilisation window of the agent's first call)."""
        self.capacity = self.goal = self.initial
        # (time, desired) with desired strictly decreasing: the max over the window is first
        self.history: deque[tuple[float, int]] = deque([(now, self.initial)])

    def desired(self, running: int, waiting: int) -> int:
        metric = waiting if self.metric_waiting_only else running + waiting
        return min(self.max, max(self.min, math.ceil(metric / self.target)))

    def poll(self, now: float, desired: int) -> int:
        """Record ``desired`` at ``now``; returns the new goal (> goal: scale up to it,
        < goal: scale down to it, = goal: nothing)."""
        hist = self.history
        edge = now - self.window
        while hist and hist[0][0] <= edge:
            hist.popleft()
        while hist and hist[-1][1] <= desired:
            hist.pop()
        hist.append((now, desired))
        if desired > self.goal:
            return desired
        return min(self.goal, hist[0][1])  # the largest desired value of the window


def next_grid(now: float, step: float) -> float:
    """The first multiple of ``step`` after ``now`` (ms)."""
    return (math.floor(now / step) + 1) * step


class Overload:
    """One agent's overload state: its limiter, queue discipline, CoDel, queue bound,
    throttle and autoscaler (each None when not configured), its own capacity (before the
    limit) and the count of attempts waiting (its queue may hold dead entries)."""

    __slots__ = (
        "agent_id",
        "limiter",
        "discipline",
        "lifo_after",
        "codel",
        "max_length",
        "throttle",
        "scaler",
        "capacity",
        "base_capacity",
        "waiting",
        "since",
        "usable",
    )

    def __init__(self, agent_id: str, rules: tuple, capacity: float, now: float = 0.0):
        admission, throttle, autoscale = rules
        self.agent_id = agent_id
        self.limiter = (
            None if admission is None or admission.limit is None else limiter(admission.limit)
        )
        self.discipline = FIFO if admission is None else _DISCIPLINES[admission.discipline]
        self.lifo_after = 100.0 if admission is None else admission.lifo_after
        self.codel = (
            None if admission is None or admission.codel is None else Codel(admission.codel)
        )
        self.max_length = None if admission is None else admission.max_length
        self.throttle = None if throttle is None else Throttle(throttle)
        self.scaler = None if autoscale is None else Scaler(autoscale, capacity, now)
        self.base_capacity = capacity
        self.capacity: float = capacity if self.scaler is None else self.scaler.capacity
        self.waiting = 0  # live attempts in the queue
        self.since = 0.0  # when the queue last became non-empty (adaptive LIFO)
        self.usable = self.limit()

    def limit(self) -> float:
        """The usable concurrency limit (inf: no limiter)."""
        return math.inf if self.limiter is None else self.limiter.usable

    def effective(self) -> float:
        """min(capacity, usable limit): how many attempts may run at once."""
        return min(self.capacity, self.usable)

    def reset(self) -> None:
        """Back to the initial state (between independent runs)."""
        for part in (self.limiter, self.codel, self.throttle, self.scaler):
            if part is not None:
                part.reset()
        self.capacity = self.base_capacity if self.scaler is None else self.scaler.capacity
        self.waiting = 0
        self.usable = self.limit()
