"""The ground every wing stands on: the exception hierarchy (``errors``), checks for
optional dependencies (``deps``), paths of the package's data (``resources``), the interval
statistics (``stats``) and the version.

Rule: nothing here imports any other part of orchkit.
"""
