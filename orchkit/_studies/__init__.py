"""Many runs and what they mean: Monte-Carlo and capacity studies and sweeps
(``montecarlo``), their results and summaries with honest intervals (``summary``), tuning
(``tune``), observed-vs-predicted comparison (``compare``) and learning analytics
(``analytics``: knowledge tracing by EM, answers joined with the runs that served them);
studies on executors beyond one process (``parallel``: SPEC §20).

Rule 1: a study normalises its input at the front door (``_spec.inputs``), compiles it once
(``_engine.prepared``) and hands it to a driver; tune trials and sweep cells reuse it.
Rule 2: imports only ``_runtimes``, ``_engine``, ``_spec`` and ``_base``.
"""
