"""What users write and how it is read: the safe YAML/JSON reader (``parse``), plans
and their DAG as text (``plan``), agent models and their fitting from traces
(``models``, ``fitting``), resilience and overload policies (``policies``), workloads
(``workload``), deployment bundles (``deployment``), and the front door every entry point
passes its input through once (``inputs``).

Rule 1: every check of a user's plan, models, policies, workload or dotted path lives here;
nothing above re-checks what came through ``inputs``.
Rule 2: imports only ``_base``. No clock, no event loop, no simulation.
"""
