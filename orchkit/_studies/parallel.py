"""Studies beyond one process (SPEC §20): what ``executor=`` accepts, how many workers it
has, and the one clear error of a process pool or cluster started from a script without the
``if __name__ == "__main__":`` guard it needs.

Every study kind is cut into chunks (blocks of independent runs, workload replications,
sweep cells, tune trials, capacity candidates) whose seeds come from the study seed and the
chunk's index only, and the chunks' results are gathered in chunk order: the frames are the
same on any executor, with any number of workers, as in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from .._base.errors import OrchkitError

GUARD_FIX = (
    "put the code that starts the study (and the pool or cluster) under `if __name__ == "
    '"__main__":` in your script: a process pool or a Dask process cluster starts each worker '
    "by importing the main script again, and without the guard every worker starts the "
    "study, and the cluster, anew (a notebook needs nothing)"
)

#: What ``executor=`` accepts, for error messages.
ACCEPTED = (
    "a concurrent.futures.Executor (e.g. ProcessPoolExecutor), 'processes' (a process pool, "
    "one worker per core), a Dask distributed.Client, or orchkit.executors.ray()"
)


class GuardError(OrchkitError, RuntimeError):
    """A process pool or cluster was started from a script without the ``__main__`` guard."""


def bootstrapping() -> bool:
    """True in a worker process that is still importing the main script (spawn or
    forkserver start): code running now sits at the top level of an unguarded script."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def check_not_bootstrapping(what: str) -> None:
    """Refuse to start ``what`` in a worker that is importing an unguarded main script."""
    if bootstrapping():
        raise GuardError(
            f"{what} was started while a worker process imported the main script: " + GUARD_FIX
        )


def main_is_script() -> bool:
    """The program is a Python file run as a script (not a notebook, a REPL or ``-c``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return bool(path) and str(path).endswith(".py") and os.path.exists(str(path))


@contextmanager
def open_executor(executor: Any, workers: int | None = None) -> Iterator[Executor | None]:
    """``executor=`` as a ``concurrent.futures.Executor`` (None stays None: this process).
    'processes' is a process pool of ``workers`` (default: one per core), shut down on
    exit; a Dask ``Client`` gives its ``get_executor()``; any Executor is used as it is."""
    if executor is None:
        yield None
        return
    check_not_bootstrapping("a study on an executor")
    if isinstance(executor, str):
        if executor != "processes":
            raise ValueError(f"executor must be {ACCEPTED}; got {executor!r}")
        with ProcessPoolExecutor(workers) as pool:
            yield pool
        return
    if isinstance(executor, Executor):
        yield executor
        return
    get_executor = getattr(executor, "get_executor", None)
    if callable(get_executor) and hasattr(executor, "scheduler_info"):  # distributed.Client
        yield get_executor(pure=False)  # every chunk computed: no result reused by its key
        return
    raise TypeError(f"executor must be {ACCEPTED}; got {type(executor).__name__}")


def worker_count(executor: Executor | None) -> int:
    """How many chunks ``executor`` runs at once (1 for None)."""
    if executor is None:
        return 1
    client = getattr(executor, "_client", None)  # Dask's ClientExecutor
    if client is not None and hasattr(client, "nthreads"):
        chosen = getattr(executor, "_kwargs", {}).get("workers")
        threads = client.nthreads()
        if chosen:
            chosen = [chosen] if isinstance(chosen, str) else list(chosen)
            return max(1, sum(n for w, n in threads.items() if w in chosen))
        return max(1, sum(threads.values()))
    n = getattr(executor, "_max_workers", None)
    return int(n) if isinstance(n, int) and n > 0 else max(1, os.cpu_count() or 1)


def result(future: Future, executor: Executor | None = None) -> Any:
    """``future.result()``, a broken process pool explained (the ``__main__`` guard when
    its workers import the main script: spawn or forkserver start)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        ctx = getattr(executor, "_mp_context", None)
        method = ctx.get_start_method() if ctx is not None else multiprocessing.get_start_method()
        if method != "fork" and main_is_script():
            raise GuardError(
                f"a worker process of the pool ended before its chunk ran ({exc}); {GUARD_FIX}"
            ) from exc
        raise


def caught(fn: Any, *args: Any) -> tuple[Any, list[Warning]]:
    """``fn(*args)`` and the warnings it raised (picklable: a chunk for any executor), to
    be raised again where the study was called (``rewarn``): a worker's own stderr is
    nobody's screen."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        value = fn(*args)
    return value, [w.message for w in seen if isinstance(w.message, Warning)]


def rewarn(found: list[Warning], stacklevel: int = 3) -> None:
    """Raise again the warnings a chunk raised on a worker."""
    for w in found:
        warnings.warn(w, stacklevel=stacklevel)
