"""Prometheus metrics of one service (its own registry, so several apps can live in a process).

- ``orchkit_runs_total{status}``: runs ended, by status (session-initialisation runs included)
- ``orchkit_runs_in_flight``: runs running now
- ``orchkit_step_latency_ms{agent,outcome}``: histogram of agent attempt times in ms, by
  agent kind (``learning``, ``tutor``, ``speech``; other agents by id) — plan attempts and
  direct agent calls alike
- ``orchkit_agent_calls_in_flight``: direct agent calls (REST / socket) running now
- ``orchkit_queue_depth``: attempts waiting for agent capacity
- ``orchkit_sessions_active``, ``orchkit_agents_registered``
- ``orchkit_mastery_rate{skill}``: share of the learners with a response on the skill whose
  P(mastered) (BKT) is at least 0.95; recomputed from the store on a scrape, at most every
  10 s, when responses were added (learning analytics, ``_analytics``)
- ``orchkit_admission_limit{agent}``: the usable admission limit of each agent with one
  (SPEC §17, ``admission.<pattern>.limit``), and ``orchkit_agent_capacity{agent}``: the
  capacity in effect of each agent with overload rules (an autoscaler's; +Inf: unlimited),
  both read from the scheduling core at each scrape, for the agents called so far
- ``orchkit_twin_predicted_p95_ms{bound}``, ``orchkit_twin_observed_p95_ms``,
  ``orchkit_twin_coverage{metric}``, ``orchkit_twin_predictions{status}``: the digital
  twin's latest prediction, its last check and the coverage so far (registered by ``_twin``)
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000)


class Metrics:
    """The service's collectors; ``render()`` gives the Prometheus text and its content type."""

    def __init__(self, service: Any):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.runs = Counter("orchkit_runs", "Runs ended, by status", ["status"], registry=r)
        self.step_latency = Histogram(
            "orchkit_step_latency_ms",
            "Agent attempt time in ms, by agent kind",
            ["agent", "outcome"],
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.agent_calls_in_flight = Gauge(
            "orchkit_agent_calls_in_flight", "Direct agent calls running now", registry=r
        )
        Gauge("orchkit_runs_in_flight", "Runs running now", registry=r).set_function(
            service.runs_in_flight
        )
        Gauge(
            "orchkit_queue_depth", "Attempts waiting for agent capacity", registry=r
        ).set_function(service.queue_depth)
        Gauge("orchkit_sessions_active", "Learner sessions open now", registry=r).set_function(
            service.sessions_active
        )
        Gauge(
            "orchkit_agents_registered", "Agents registered with the orchestrator", registry=r
        ).set_function(lambda: len(service.orch.all_agents()))
        self.mastery_rate = Gauge(
            "orchkit_mastery_rate",
            "Share of learners with a response on the skill whose P(mastered) >= 0.95 (BKT)",
            ["skill"],
            registry=r,
        )
        r.register(_OverloadCollector(service))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _OverloadCollector:
    """``orchkit_admission_limit{agent}`` and ``orchkit_agent_capacity{agent}``, read from
    the orchestrator's core when scraped (what its limit and capacity events changed)."""

    def __init__(self, service: Any):
        self.service = service

    def describe(self) -> list:
        return []  # collected on scrape only

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        orch = self.service.orch
        limit = GaugeMetricFamily(
            "orchkit_admission_limit",
            "Usable admission limit per agent (SPEC §17)",
            labels=["agent"],
        )
        for agent_id, value in sorted(orch.admission_limits().items()):
            limit.add_metric([agent_id], value)
        capacity = GaugeMetricFamily(
            "orchkit_agent_capacity",
            "Capacity in effect per agent with overload rules (autoscaled)",
            labels=["agent"],
        )
        for agent_id, value in sorted(orch.capacities().items()):
            capacity.add_metric([agent_id], value)
        yield limit
        yield capacity
