"""Every clock: the Agent contract (``agent``), the event bus (``bus``), the live asyncio
driver (``live``), the SimPy driver with the workload loop (``sim``: the one place with a
simulated clock) and the vectorised fast path with its eligibility (``fast``).

Rule 1: drivers stay thin: they carry out the core's actions and report facts; a rule
(retries, breakers, hedging) never lives here. The fast path matches the core exactly or
declines, saying why.
Rule 2: imports only ``_engine``, ``_spec`` and ``_base``.
"""
