"""The event bus (SPEC §3.10): named events to listeners, for every driver. The live driver
and the SimPy driver emit the same events on it (simulated times in the latter)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from .._engine.core import CORE_EVENTS
from .agent import describe

log = logging.getLogger("orchkit")
Listener = Callable[..., Any]
FATAL = (KeyboardInterrupt, SystemExit)  # never swallowed, by agents or listeners


class EventBus:
    """Named events to listeners (SPEC §3.10).

    ``on(event, cb)`` calls ``cb(payload)`` for every ``event``; ``on("*", cb)`` calls
    ``cb(event, payload)`` for every event. Coroutine listeners are scheduled as tasks. A
    listener that raises anything (``CancelledError`` and other ``BaseException`` subclasses too,
    but ``KeyboardInterrupt``/``SystemExit``) is logged and reported as ``listener:error``
    {event, listener, error}; it never breaks the run.

    ``wanted`` is the set of event names someone listens to (every core event while a
    ``"*"`` listener is on), kept current in place as listeners come and go; a driver passes
    it to the core (``Scheduler(events=bus.wanted)``), which then builds only the events
    someone hears. A listener added while a fact's events are being delivered hears the
    events of the next facts on.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Listener, bool]]] = {}
        self._tasks: set[asyncio.Future] = set()  # async listeners still running
        self.wanted: set[str] = set()

    def _sync(self) -> None:
        names = {event for event, entries in self._listeners.items() if entries}
        if "*" in names:
            names |= CORE_EVENTS
        self.wanted.intersection_update(names)  # in place: the core holds this set
        self.wanted.update(names)

    def on(self, event: str, listener: Listener) -> Listener:
        """Call ``listener`` on every ``event``.

        Args:
            event: An event name (``"step:completed"``, ...) or ``"*"`` for every event.
            listener: Called as ``listener(payload)`` (``listener(event, payload)`` for
                ``"*"``); a coroutine function is scheduled as a task.

        Returns:
            ``listener``, so ``on`` works as a decorator too.
        """
        self._listeners.setdefault(event, []).append((listener, False))
        self._sync()
        return listener

    def once(self, event: str, listener: Listener) -> Listener:
        """Call ``listener`` on the next ``event`` only (as ``on``, then removed).

        Returns:
            ``listener``.
        """
        self._listeners.setdefault(event, []).append((listener, True))
        self._sync()
        return listener

    def off(self, event: str, listener: Listener | None = None) -> None:
        """Remove ``listener`` from ``event`` (all of the event's listeners if None)."""
        if listener is None:
            self._listeners.pop(event, None)
        else:
            entries = self._listeners.get(event, [])
            self._listeners[event] = [e for e in entries if e[0] != listener]  # ==: bound methods
        self._sync()

    def clear(self) -> None:
        """Remove every listener."""
        self._listeners.clear()
        self._sync()

    async def close(self, timeout_ms: float) -> None:
        """Remove every listener; cancel the async listeners still running and wait up to
        ``timeout_ms`` for them to end (those that do not are logged)."""
        self.clear()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        left = await wait_tasks(tasks, timeout_ms)
        if left:
            log.warning(
                "%d async listener(s) ignored cancellation and are still running", len(left)
            )

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Call the listeners of ``event`` (then the ``"*"`` listeners) with ``payload``."""
        for key in (event, "*"):
            entries = self._listeners.get(key)
            if not entries:
                continue
            if any(once for _, once in entries):
                self._listeners[key] = [e for e in entries if not e[1]]
                self._sync()
            for listener, _ in entries:
                try:
                    out = listener(payload) if key != "*" else listener(event, payload)
                    if inspect.isawaitable(out):
                        task = asyncio.ensure_future(out)
                        self._tasks.add(task)
                        task.add_done_callback(lambda t, cb=listener: self._check(t, event, cb))
                except FATAL:
                    raise
                except BaseException as exc:  # noqa: BLE001 - a listener never breaks a run
                    self._failed(event, listener, exc)

    def _check(self, task: asyncio.Future, event: str, listener: Listener) -> None:
        if task not in self._tasks:
            return  # cancelled by close()
        self._tasks.discard(task)
        if task.cancelled():  # it raised CancelledError itself, or someone cancelled it
            self._failed(event, listener, asyncio.CancelledError())
        elif task.exception() is not None:
            self._failed(event, listener, task.exception())

    def _failed(self, event: str, listener: Listener, exc: BaseException) -> None:
        who, what = describe(listener, repr), describe(exc)
        log.warning("listener %s of %s raised %s", who, event, what)
        if event != "listener:error":
            self.emit("listener:error", {"event": event, "listener": who, "error": what})


async def wait_tasks(tasks: set, timeout_ms: float) -> set:
    """Wait up to ``timeout_ms`` for ``tasks``; returns those still pending."""
    if not tasks:
        return set()
    _done, pending = await asyncio.wait(tasks, timeout=timeout_ms / 1000.0)
    return pending
