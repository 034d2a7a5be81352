/* /ui/twin: the digital twin's predictions (GET /api/twin/predictions) as a p95 band per
 * prediction against what happened, the calibration so far (GET /api/twin/calibration), and
 * a form that asks a what-if (POST /api/twin/what-if). Polled every 5 seconds. */
"use strict";
OK.start(async () => {
  const chart = document.getElementById("twin-chart");
  const body = document.querySelector("#twin-table tbody");
  const empty = document.getElementById("empty");
  const cal = document.getElementById("twin-calibration");
  const result = document.getElementById("twin-result");
  const form = document.getElementById("twin-form");
  const COVERED = "#2ca02c", MISSED = "#d62728", BAND = "#1f77b4";
  const NAMES = { makespan_p95_ms: "p95", makespan_p50_ms: "p50", success_rate: "success rate" };
  let shown = null;

  function whatIf(req) {
    const bits = [];
    if (req.load != null && req.load !== 1) bits.push(`load ×${req.load}`);
    for (const [k, v] of Object.entries(req.latency || {})) bits.push(`${k} latency ×${v}`);
    for (const [k, v] of Object.entries(req.capacity || {})) bits.push(`${k} capacity ${v}`);
    return bits.length ? bits.join(", ") : "as observed";
  }

  function row(p) {
    const b = p.p95 || {};
    const band = b.ciLow == null ? "" : `[${OK.ms(b.ciLow)}, ${b.ciHigh == null ? "∞" : OK.ms(b.ciHigh)}]`;
    const covered = b.covered == null ? "" : OK.badge(b.covered ? "covered" : "missed", b.covered ? COVERED : MISSED);
    return `<tr data-testid="twin-row" data-id="${OK.esc(p.id)}" data-status="${OK.esc(p.status)}"` +
      ` data-covered="${b.covered == null ? "" : b.covered}">` +
      `<td>${OK.esc(OK.stamp(p.createdAt))}</td><td>${OK.esc(whatIf(p.request || {}))}</td>` +
      `<td>${OK.esc(p.status)}</td><td class=num>${p.observedRuns == null ? "" : p.observedRuns}</td>` +
      `<td class=num>${p.unstable && b.value == null ? "unstable (∞)" : OK.ms(b.value)}</td>` +
      `<td class=num>${band}</td><td class=num>${OK.ms(b.observed)}</td><td>${covered}</td></tr>`;
  }

  function draw(preds) {
    const shownPreds = preds.filter((p) => p.p95 && p.p95.value != null).reverse(); // oldest first
    const x = shownPreds.map((p) => new Date(p.horizonEndMs));
    const v = shownPreds.map((p) => p.p95.value);
    const lo = shownPreds.map((p) => p.p95.ciLow);
    const hi = shownPreds.map((p) => p.p95.ciHigh);
    const seen = shownPreds.filter((p) => p.p95.observed != null);
    const level = shownPreds.length ? Math.round(100 * shownPreds[0].level) : 90;
    const traces = [
      {
        name: `predicted p95 (${level} % interval)`, type: "scatter", mode: "markers", x, y: v,
        marker: { color: BAND, size: 9, symbol: "line-ew-open", line: { width: 3, color: BAND } },
        error_y: {
          type: "data", symmetric: false, thickness: 14, width: 0, color: "rgba(31,119,180,0.35)",
          array: hi.map((h, i) => (h == null ? 0 : h - v[i])),
          arrayminus: lo.map((l, i) => (l == null ? 0 : v[i] - l)),
        },
        customdata: shownPreds.map((p) => [p.id, lo[shownPreds.indexOf(p)], hi[shownPreds.indexOf(p)]]),
        hovertemplate: "%{customdata[0]}<br>predicted p95 %{y:.1f} ms<br>" +
          "interval [%{customdata[1]:.1f}, %{customdata[2]:.1f}] ms<extra></extra>",
      },
      {
        name: "observed p95", type: "scatter", mode: "markers",
        x: seen.map((p) => new Date(p.horizonEndMs)), y: seen.map((p) => p.p95.observed),
        marker: { symbol: "diamond", size: 11, color: seen.map((p) => (p.p95.covered ? COVERED : MISSED)),
          line: { width: 1, color: "#333" } },
        hovertemplate: "observed p95 %{y:.1f} ms<extra></extra>",
      },
    ];
    const ys = [...lo, ...hi, ...v, ...seen.map((p) => p.p95.observed)].filter((y) => y != null);
    const top = ys.length ? Math.max(...ys) : 1, bottom = ys.length ? Math.min(...ys) : 0;
    const pad = Math.max(1, 0.1 * (top - bottom));
    const xs = [...x];
    const left = xs.length ? Math.min(...xs) : Date.now(), right = xs.length ? Math.max(...xs) : Date.now();
    const xpad = Math.max(5000, 0.06 * (right - left));
    const layout = {
      title: { text: "Predicted p95 makespan (ms) against what happened, per prediction" },
      xaxis: { title: { text: "end of the prediction's horizon (UTC)" }, type: "date",
        range: [new Date(left - xpad), new Date(right + xpad)] },
      yaxis: { title: { text: "p95 makespan (ms)" }, range: [Math.max(0, bottom - pad), top + pad],
        rangemode: "tozero", zeroline: false },
      legend: { orientation: "h", y: -0.25 },
      margin: { l: 70, r: 20, t: 50, b: 90 },
      height: 380,
      hovermode: "closest",
    };
    Plotly.react(chart, traces, layout, { displaylogo: false, responsive: true });
    chart.dataset.predictions = String(shownPreds.length);
    chart.dataset.observed = String(seen.length);
  }

  function calibration(c) {
    cal.dataset.checked = String(c.checked);
    const parts = Object.entries(c.metrics || {})
      .filter(([m]) => NAMES[m])
      .map(([m, r]) => `${NAMES[m]} ${r.covered}/${r.checked} (${(100 * r.coverage).toFixed(0)} %)`);
    cal.textContent = `${c.predictions} prediction(s): ${c.pending} pending, ${c.checked} checked` +
      (c.noRuns ? `, ${c.noRuns} with no runs to check` : "") +
      (parts.length ? `. Intervals that covered what happened so far: ${parts.join(", ")}.` : ".");
  }

  async function load() {
    const [list, c] = await Promise.all([
      OK.api("/api/twin/predictions?limit=200"), OK.api("/api/twin/calibration")]);
    const preds = list.predictions;
    const html = preds.map(row).join("");
    if (html !== shown) { body.innerHTML = html; shown = html; draw(preds); }
    empty.hidden = preds.length > 0;
    calibration(c);
  }

  async function post(path, payload) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const k = OK.key();
    if (k) headers.Authorization = "Bearer " + k;
    const res = await fetch(path, { method: "POST", headers, body: JSON.stringify(payload) });
    const out = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${res.status}: ${out.detail || res.statusText}`);
    return out;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const n = (name) => (f.get(name) === "" || f.get(name) == null ? null : Number(f.get(name)));
    const payload = { load: n("load") ?? 1, level: n("level") ?? 0.9, seed: n("seed") ?? 0 };
    for (const k of ["windowMs", "horizonMs"]) if (n(k) != null) payload[k] = n(k);
    if (f.get("latencyPattern") && n("latencyFactor") != null) {
      payload.latency = { [f.get("latencyPattern")]: n("latencyFactor") };
    }
    if (f.get("capacityPattern") && n("capacity") != null) {
      payload.capacity = { [f.get("capacityPattern")]: n("capacity") };
    }
    result.className = "muted";
    result.textContent = "Fitting the twin and simulating (a few seconds)…";
    try {
      const p = await post("/api/twin/what-if", payload);
      const m = p.metrics.find((r) => r.metric === "makespan_p95_ms") || {};
      result.textContent = p.unstable
        ? `${p.id}: unstable (an agent's offered load ≥ 1): no finite p95.`
        : `${p.id}: p95 ${OK.ms(m.value)} [${OK.ms(m.ciLow)}, ${OK.ms(m.ciHigh)}], ` +
          `checked after ${OK.stamp(new Date(p.dueMs).toISOString())} UTC.`;
      result.dataset.id = p.id;
      await load();
    } catch (e) {
      result.className = "error";
      result.textContent = String(e.message || e);
    }
  });

  await load();
  OK.live(true, "live");
  OK.every(5000, load);
});
