/* /ui/agents: every registered agent's health (GET /api/agents/health), polled every second. */
"use strict";
OK.start(async () => {
  const body = document.querySelector("#agents-table tbody");
  const empty = document.getElementById("empty");
  const BREAKER = { closed: "#2ca02c", open: "#d62728", half_open: "#ff7f0e" };
  let shown = "";

  function workers(list) {
    return (list || []).map((w) => {
      const bits = [w.concurrency != null ? `concurrency ${w.concurrency}` : "",
        w.lastSeenMs != null ? `seen ${OK.ago(w.lastSeenMs)}` : ""].filter(Boolean).join(", ");
      return `<div>${OK.esc(w.id)}${bits ? ` <span class="muted">(${OK.esc(bits)})</span>` : ""}</div>`;
    }).join("");
  }

  function row(a) {
    const breaker = a.breaker || "";
    const rate = a.p95Ms5m == null ? "" : (100 * a.errorRate5m).toFixed(1) + " %";
    return `<tr data-testid="agent-row" data-agent-id="${OK.esc(a.agentId)}" data-breaker="${OK.esc(breaker)}">` +
      `<td>${OK.esc(a.agentId)}</td><td>${OK.esc(a.kind)}</td><td>${OK.esc(a.type)}</td>` +
      `<td class=num>${a.capacity == null ? "unlimited" : a.capacity}</td>` +
      `<td class=num>${a.inFlight}</td><td class=num>${a.waiting}</td>` +
      `<td>${breaker ? OK.badge(breaker, BREAKER[breaker]) : '<span class="muted">none</span>'}</td>` +
      `<td class=num>${OK.ms(a.p95Ms5m)}</td><td class=num>${rate}</td>` +
      `<td class="workers">${workers(a.workers)}</td>` +
      `<td class=num data-testid="capacity-now">${a.capacityNow == null ? "unlimited" : a.capacityNow}</td>` +
      `<td class=num data-testid="admission-limit">${a.admissionLimit == null ? '<span class="muted">none</span>' : a.admissionLimit}</td></tr>`;
  }

  async function load() {
    const agents = await OK.api("/api/agents/health");
    const html = agents.map(row).join("");
    if (html !== shown) { body.innerHTML = html; shown = html; }
    empty.hidden = agents.length > 0;
  }

  await load();
  OK.live(true, "live");
  OK.every(1000, load);
});
