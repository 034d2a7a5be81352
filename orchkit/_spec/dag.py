"""A plan's DAG as text: dependency depths (the layout of ``ok.draw``) and Mermaid.

Pure functions of a validated ``Plan``; the order of everything follows plan order, so the
same plan always gives the same text (notebook outputs stay stable).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Plan, Step


def depths(plan: Plan) -> dict[str, int]:
    """Step id -> its dependency depth: 0 for a step with no dependencies, else one more
    than its deepest dependency (the column it is drawn in)."""
    by_id = {s.id: s for s in plan.steps}
    out: dict[str, int] = {}

    def depth(step_id: str) -> int:  # validated plans have no cycles
        if step_id not in out:
            deps = by_id[step_id].dependencies
            out[step_id] = 1 + max(depth(d) for d in deps) if deps else 0
        return out[step_id]

    for s in plan.steps:
        depth(s.id)
    return {s.id: out[s.id] for s in plan.steps}


def describe_plan(plan: Plan) -> str:
    """'sequential, timeout 5,000 ms' — how the plan schedules its steps, in a few words."""
    parts = ["parallel" if plan.parallel else "sequential"]
    if plan.max_concurrency is not None:
        parts.append(f"at most {plan.max_concurrency} at once")
    if plan.fail_fast:
        parts.append("fail fast")
    if plan.timeout_ms is not None:
        parts.append(f"timeout {plan.timeout_ms:,.0f} ms")
    return ", ".join(parts)


def describe_step(step: Step) -> str:
    """'timeout 3,000 ms, 2 retries (linear, 500 ms)' or '' — the step's limits."""
    parts = []
    if step.timeout_ms is not None:
        parts.append(f"timeout {step.timeout_ms:,.0f} ms")
    rp = step.retry_policy
    if rp is not None and rp.max_retries:
        plural = "retry" if rp.max_retries == 1 else "retries"
        parts.append(f"{rp.max_retries} {plural} ({rp.strategy}, {rp.backoff_ms:,.0f} ms)")
    return ", ".join(parts)


def _text(text: str) -> str:
    """User text inside a quoted Mermaid label: quotes and angle brackets as entities, line
    breaks and other control characters as spaces (a label is one line)."""
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", text)
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(plan: Plan) -> str:
    """Mermaid ``flowchart LR`` text: one subgraph per plan of the fallback chain, one node
    per step (id, agent.action, limits), dependency arrows, a dotted ``fallback`` edge.
    Node ids are positional (``p0_s1``), so any step id is safe; labels carry the names."""
    lines = ["flowchart LR"]
    chain = plan.chain()
    for k, p in enumerate(chain):
        lines.append(f'  subgraph p{k}["{_text(f"plan {p.id}: {describe_plan(p)}")}"]')
        lines.append("    direction LR")
        index = {s.id: i for i, s in enumerate(p.steps)}
        for i, s in enumerate(p.steps):
            label = f"<b>{_text(s.id)}</b><br/>{_text(s.agent_id)}.{_text(s.action)}"
            if describe_step(s):
                label += f"<br/><i>{_text(describe_step(s))}</i>"
            lines.append(f'    p{k}_s{i}["{label}"]')
        for i, s in enumerate(p.steps):
            for d in s.dependencies:
                lines.append(f"    p{k}_s{index[d]} --> p{k}_s{i}")
        lines.append("  end")
    for k in range(len(chain) - 1):
        lines.append(f"  p{k} -. fallback .-> p{k + 1}")
    return "\n".join(lines) + "\n"
