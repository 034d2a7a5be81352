"""The pure rules and what a run leaves behind: the scheduling core (``core``: every rule
of SPEC §3, §10 and §17, given the time and the facts, answering with actions; the state of
its overload rules in ``overload``), a study's
inputs compiled once for the drivers (``prepared``), and the run, span and breaker tables'
schemas with ``RunResult`` (``result``), written once for every driver.

Rule 1: no I/O, no clock, no event loop: ``core`` never imports asyncio, SimPy or time.
Rule 2: imports only ``_spec`` and ``_base``.
"""
