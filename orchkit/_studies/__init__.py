"""Many runs and what they mean: Monte-Carlo and capacity studies and sweeps
(``montecarlo``), their results and summaries with honest intervals (``summary``), the
smallest capacities for an SLO (``capacity``) and critical paths (``critical``), tuning
(``tune``), observed-vs-predicted comparison (``compare``), learning analytics
(``analytics``: knowledge tracing by EM, answers joined with the runs that served them), the
digital twin (``twin``: refit from a window of spans, predict, check), and studies on
executors beyond one process (``parallel``: SPEC §20).

Rule 1: a study normalises its input at the front door (``_spec.inputs``), compiles it once
(``_engine.prepared``) and hands it to a driver; tune trials and sweep cells reuse it.
Rule 2: imports only ``_runtimes``, ``_engine``, ``_spec`` and ``_base``.
"""
