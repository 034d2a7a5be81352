"""Executors for studies beyond one machine (SPEC §20): ``executor=`` of every study kind
(``ok.monte_carlo``, ``ok.sweep``, ``ok.capacity_for``, ``ok.tune``) takes any
``concurrent.futures.Executor``, a Dask ``distributed.Client``, or one of these.

- ``ray(address=None, **init_kwargs)``: an Executor on Ray tasks (Ray has none of its own):
  ``submit`` runs the function as a Ray task and returns its ``ObjectRef.future()``.
- ``dask(address=None, **cluster_kwargs)``: a Dask ``Client`` of a cluster's scheduler
  (``"tcp://scheduler:8786"``), or of a local process cluster started here.

Every chunk of a study is seeded from the study seed and the chunk's index only: the frames
are identical on either, with any number of workers, to a single-process run.

From a script, a process cluster (and a process pool) needs the
``if __name__ == "__main__":`` guard: ``dask()`` says so when its workers cannot start.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from ._base.deps import require
from ._studies.parallel import GUARD_FIX, GuardError, check_not_bootstrapping, main_is_script

__all__ = ["RayExecutor", "dask", "ray"]


class RayExecutor(Executor):
    """A ``concurrent.futures.Executor`` on Ray: each ``submit`` is one Ray task (options
    ``task_options``, e.g. ``{"num_cpus": 2}``), its future the task's
    ``ObjectRef.future()``. ``shutdown()`` disconnects from Ray if this executor connected
    (``ray.init``): a local Ray it started stops, a cluster it joined goes on; a Ray
    session that was already running is left alone."""

    def __init__(
        self,
        address: str | None = None,
        *,
        task_options: dict[str, Any] | None = None,
        **init_kwargs: Any,
    ):
        require("ray", "orchkit.executors.ray()")
        import ray as _ray

        self._ray = _ray
        self._owner = not _ray.is_initialized()
        if self._owner:
            init_kwargs.setdefault("include_dashboard", False)
            init_kwargs.setdefault("log_to_driver", False)
            _ray.init(address=address, **init_kwargs)
        self._options = dict(task_options or {})
        self._remote: dict[Callable, Any] = {}
        self._closed = False
        cpus = float(_ray.cluster_resources().get("CPU", 1.0))
        #: How many tasks run at once: the cluster's CPUs over each task's ``num_cpus``.
        self._max_workers = max(1, int(cpus // float(self._options.get("num_cpus", 1))))

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._ray.remote(fn)
            if self._options:
                remote = remote.options(**self._options)
            self._remote[fn] = remote
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()
        self._owner = False

    def __repr__(self) -> str:
        return f"RayExecutor(workers={self._max_workers}, task_options={self._options})"


def ray(
    address: str | None = None,
    *,
    task_options: dict[str, Any] | None = None,
    **init_kwargs: Any,
) -> RayExecutor:
    """An Executor on Ray for ``executor=``: joins the cluster at ``address`` (``"auto"``,
    ``"ray://head:10001"``) or starts a local Ray (``ray.init(**init_kwargs)``, e.g.
    ``num_cpus=4``) unless one is running. ``task_options`` go to every task
    (``{"num_cpus": 2}``). Use it in a ``with`` block, or call ``shutdown()``. Needs
    ``pip install 'orchkit[distributed]' ray``."""
    return RayExecutor(address, task_options=task_options, **init_kwargs)


def dask(address: str | None = None, **cluster_kwargs: Any) -> Any:
    """A Dask ``distributed.Client`` for ``executor=``: of the scheduler at ``address``
    (``"tcp://scheduler:8786"``: a cluster of several machines), or, without one, of a
    local process cluster started here (``LocalCluster(processes=True,
    dashboard_address=None, **cluster_kwargs)``, e.g. ``n_workers=4``), closed with the
    client. Use it in a ``with`` block, or call ``close()``. From a script, a local
    cluster needs the ``if __name__ == "__main__":`` guard; without it, an ``OrchkitError``
    says so (and names the fix)."""
    require("distributed", "orchkit.executors.dask()")
    import distributed

    if address is not None:
        return distributed.Client(address, **cluster_kwargs)
    check_not_bootstrapping("a Dask process cluster")
    cluster_kwargs.setdefault("processes", True)
    cluster_kwargs.setdefault("dashboard_address", None)
    try:
        return distributed.Client(**cluster_kwargs)
    except RuntimeError as exc:
        if "Nanny failed to start" in str(exc) and main_is_script():
            raise GuardError(f"the Dask cluster's workers failed to start: {GUARD_FIX}") from exc
        raise
