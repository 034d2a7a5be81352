"""Files shipped inside the package (``orchkit/data``), found through importlib.resources,
so an installed wheel never needs the repository's checkout."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """The file ``orchkit/data/<parts...>`` of the installed package (a real path: the
    package is installed as files, as pip does)."""
    return Path(str(files("orchkit").joinpath("data", *parts)))
