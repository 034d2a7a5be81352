"""Optional dependencies: which extra provides which module, and one check that says so.

Modules that need an optional library import it lazily; ``require`` turns its absence into
a ``MissingDependencyError`` whose one-line message names the extra to install.
"""

from __future__ import annotations

import importlib.util

from .errors import MissingDependencyError

EXTRAS = {  # top-level module -> the extra of pyproject.toml that installs it
    "sklearn": "agents",
    "openai": "agents",
    "tensorflow": "speech",
    "ipywidgets": "notebook",
    "kaleido": "notebook",
    "dask": "distributed",
    "distributed": "distributed",
    "ray": "distributed",
    "pyarrow": "parquet",
    "optuna": "tune",
    "scipy": "tune",
    "fastapi": "server",
    "uvicorn": "server",
    "socketio": "server",
    "prometheus_client": "server",
    "bullmq": "queue",
    "redis": "queue",
}


def missing(module: str, what: str) -> MissingDependencyError:
    """The error for ``what`` needing the absent ``module`` (top-level name)."""
    extra = EXTRAS.get(module.split(".")[0])
    fix = f"pip install 'orchkit[{extra}]'" if extra else f"pip install {module}"
    return MissingDependencyError(f"{what} needs {module}, which is not installed: {fix}")


def require(module: str, what: str) -> None:
    """Raise ``MissingDependencyError`` naming the extra if ``module`` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise missing(module, what)
