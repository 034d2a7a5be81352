/* /ui/runs/{runId}: the run's Gantt (one bar per attempt, coloured as ok.gantt), its plan's
 * DAG with each step's state, and every attempt with its full error text.
 * A finished run is drawn from its record's spans. A running one is drawn from its events
 * (Socket.IO `subscribe {runId}`: the events so far, then each new one) and grows live;
 * when it ends (`run:finished`) the record's spans replace what the events built. */
"use strict";
OK.start(async () => {
  const runId = OK.cfg.runId;
  const C = OK.cfg.outcomeColors;
  const RUNNING = OK.cfg.runColors.running;
  const TERMINAL = new Set(["succeeded", "failed", "skipped", "cancelled"]);
  const ganttEl = document.getElementById("gantt");
  const dagEl = document.getElementById("dag");
  const tableBody = document.querySelector("#attempts-table tbody");
  document.getElementById("run-id").textContent = runId;
  document.getElementById("run-title").textContent = "Run " + runId;

  let rec = await (OK.prefetch || OK.api("/api/runs/" + encodeURIComponent(runId)));
  const chain = [];
  for (let p = rec.plan; p; p = p.fallbackPlan) chain.push(p);
  const several = chain.length > 1;
  const steps = new Map(); // plan\u0000step -> step
  for (const p of chain) for (const s of p.steps) steps.set(p.id + "\u0000" + s.id, s);

  // -- what the page shows, rebuilt from spans (done) or events (live) -------------------
  let bars = []; // {key, planId, stepId, agentId, action, attempt, queued, start, end, outcome, error, hedge}
  let byJob = new Map();
  let states = new Map(); // plan\u0000step -> state
  let tried = new Set(); // plans that started
  let lastSeq = 0, lastT = null, lastWall = 0, done = false;

  function reset() {
    bars = []; byJob = new Map(); states = new Map(); tried = new Set();
    lastSeq = 0; lastT = null;
  }

  function guess(error) {
    const e = String(error || "");
    if (/^circuit open/.test(e)) return "rejected";
    if (/^(shed|throttled): /.test(e)) return "shed";
    if (/^cancelled/.test(e)) return "cancelled";
    if (/timed out after/.test(e)) return "timeout";
    return "error";
  }

  function barOf(ev) {
    let b = byJob.get(ev.jobId);
    if (!b) {
      const s = steps.get(ev.planId + "\u0000" + ev.stepId) || {};
      const n = Number(String(ev.jobId || "").split(":").pop()) || ev.attempt || 1;
      b = { key: ev.jobId, planId: ev.planId, stepId: ev.stepId, agentId: ev.agentId,
        action: s.action || "", attempt: n, queued: ev.timeMs, start: null, end: null,
        outcome: null, error: null, hedge: false };
      byJob.set(ev.jobId, b);
      bars.push(b);
    }
    return b;
  }

  function apply(ev, statesOnly) {
    dirty = true;
    if (ev.seq != null) {
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
    }
    if (typeof ev.timeMs === "number") { lastT = Math.max(lastT ?? 0, ev.timeMs); lastWall = performance.now(); }
    const k = ev.planId + "\u0000" + ev.stepId;
    switch (ev.event) {
      case "plan:started": tried.add(ev.planId); break;
      case "step:started": {
        tried.add(ev.planId);
        states.set(k, "running");
        if (statesOnly) break;
        const open = bars.some((o) => o.planId === ev.planId && o.stepId === ev.stepId && o.end == null);
        const b = barOf(ev);
        b.attempt = ev.attempt ?? b.attempt;
        b.queued = ev.queuedMs ?? ev.timeMs;
        b.start = ev.timeMs;
        b.hedge = open; // an attempt that starts while another of its step runs is a hedge
        break;
      }
      case "step:completed":
        states.set(k, "succeeded");
        if (!statesOnly) Object.assign(barOf(ev), { end: ev.timeMs, outcome: "succeeded" });
        break;
      case "queue:failed":
        if (!statesOnly) Object.assign(barOf(ev), { end: ev.timeMs, error: ev.error, outcome: guess(ev.error) });
        break;
      case "step:failed":
        states.set(k, "failed");
        if (!statesOnly && byJob.has(ev.jobId) && ev.outcome) byJob.get(ev.jobId).outcome = ev.outcome;
        break;
      case "step:retrying": states.set(k, "backing_off"); break;
      case "step:skipped": states.set(k, "skipped"); break;
      default: break;
    }
  }

  function fromRecord(r) {
    reset();
    dirty = true;
    rec = r;
    for (const ev of r.events || []) apply(ev, true);
    bars = (r.spans || []).map((s, i) => ({
      key: i, planId: s.plan_id, stepId: s.step_id, agentId: s.agent_id, action: s.action,
      attempt: s.attempt, queued: s.queued_ms, start: s.start_ms, end: s.end_ms,
      outcome: s.outcome, error: s.error, hedge: !!s.hedge,
    }));
    for (const b of bars) tried.add(b.planId);
    const res = r.result;
    if (res && res.stepStates) {
      for (const [sid, st] of Object.entries(res.stepStates)) states.set(res.planId + "\u0000" + sid, st);
      for (const c of res.fallbackChain || []) tried.add(c.plan_id || c.planId);
    }
    for (const p of chain) {
      if (!tried.has(p.id)) continue;
      for (const s of p.steps) {
        const k = p.id + "\u0000" + s.id;
        if (!TERMINAL.has(states.get(k))) states.set(k, "cancelled"); // the plan ended under it
      }
    }
  }

  // -- the header ---------------------------------------------------------------------------
  function header() {
    const st = document.getElementById("run-status");
    st.outerHTML = `<span id="run-status" data-status="${OK.esc(rec.status)}">` +
      OK.badge(rec.status, OK.cfg.runColors[rec.status]) + "</span>";
    const elapsed = rec.status === "running" ? Date.now() - rec.createdMs : rec.durationMs;
    const chainText = rec.result && rec.result.fallbackChain && rec.result.fallbackChain.length > 1
      ? rec.result.fallbackChain.map((c) => `${c.plan_id || c.planId}: ${c.status}`).join(" → ") : "";
    const facts = [
      ["Plan", rec.planId], ["Kind", rec.kind], ["Learner", rec.learnerId || "—"],
      ["Created (UTC)", OK.stamp(rec.createdAt)], ["Duration", OK.ms(elapsed)],
      ["Attempts", String(bars.length)], ["Steps", String(steps.size)],
      ["Plans tried", chainText || (several ? [...tried].join(", ") : rec.planId)],
    ];
    document.getElementById("run-facts").innerHTML =
      facts.map(([k, v]) => `<dt>${OK.esc(k)}</dt><dd>${OK.esc(v)}</dd>`).join("");
    const err = document.getElementById("run-error");
    err.hidden = !rec.error;
    err.textContent = rec.error || "";
  }

  // -- the Gantt ------------------------------------------------------------------------------
  const label = (b) => (several ? b.planId + "/" + b.stepId : b.stepId);
  const MAX_LABELS = 300; // bars labelled "#attempt" (hover always says it)
  let firstDraw = null;

  function now() {
    if (lastT == null) return Math.max(0, Date.now() - rec.createdMs);
    return lastT + (performance.now() - lastWall);
  }

  function gantt() {
    const t = done ? 0 : now();
    const first = new Map();
    for (const b of bars) {
      const q = b.queued ?? b.start ?? b.end ?? 0;
      const l = label(b);
      if (!first.has(l) || q < first.get(l)) first.set(l, q);
    }
    const rows = [...first.keys()].sort((a, b) => first.get(a) - first.get(b) || (a < b ? -1 : 1));
    let span = 1;
    for (const b of bars) span = Math.max(span, b.end ?? t, b.start ?? 0);
    const minW = span * 0.003;
    const labels = bars.length <= MAX_LABELS; // past that, labels cost more than they show
    const groups = new Map();
    const waits = { y: [], base: [], x: [], customdata: [] };
    bars.forEach((b, i) => {
      const outcome = b.end == null && !done ? "running" : (b.outcome || "cancelled");
      const s = b.start ?? b.queued ?? b.end ?? 0;
      const e = b.end ?? (done ? s : t);
      if (!groups.has(outcome)) groups.set(outcome, { y: [], base: [], x: [], text: [], customdata: [], shape: [] });
      const g = groups.get(outcome);
      g.y.push(label(b)); g.base.push(s); g.x.push(Math.max(e - s, minW));
      g.text.push("#" + b.attempt + (b.hedge ? " h" : ""));
      g.shape.push(b.hedge ? "/" : "");
      const err = b.error ? String(b.error).slice(0, 300).replace(/</g, "&lt;") : ""; // no markup
      g.customdata.push([i, `${b.agentId}.${b.action}`, err]);
      if (b.start != null && b.queued != null && b.start > b.queued) {
        waits.y.push(label(b)); waits.base.push(b.queued); waits.x.push(b.start - b.queued);
        waits.customdata.push([i]);
      }
    });
    const traces = [];
    if (waits.y.length) {
      traces.push({ type: "bar", orientation: "h", name: "queued", meta: "wait", ...waits,
        marker: { color: C.queued },
        hovertemplate: "%{y}: waited %{x:.1f} ms from %{base:.1f} ms<extra>queued</extra>" });
    }
    const order = ["succeeded", "error", "timeout", "rejected", "shed", "cancelled", "running"];
    const names = [...groups.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b));
    for (const name of names) {
      const g = groups.get(name);
      traces.push({
        type: "bar", orientation: "h", name, meta: "attempt", y: g.y, base: g.base, x: g.x,
        text: g.text, textposition: labels ? "inside" : "none", insidetextanchor: "middle", textangle: 0,
        customdata: g.customdata,
        marker: { color: name === "running" ? RUNNING : (C[name] || "#7f7f7f"),
          pattern: { shape: g.shape, fgcolor: "rgba(255,255,255,0.75)", size: 6 } },
        hovertemplate: "%{y}, attempt %{text}: %{base:.1f} ms + %{x:.1f} ms<br>%{customdata[1]}" +
          "<br>%{customdata[2]}<extra>" + name + "</extra>",
      });
    }
    const rowPx = rows.length <= 12 ? 32 : rows.length <= 40 ? 22 : 15;
    const layout = {
      barmode: "overlay", bargap: 0.25, showlegend: true,
      height: Math.max(260, 130 + rows.length * rowPx),
      margin: { l: 10, r: 20, t: 10, b: 50 },
      xaxis: { title: { text: "time from the run's start (ms)" }, rangemode: "tozero", zeroline: false },
      yaxis: { title: { text: several ? "plan/step" : "step", standoff: 12 }, automargin: true,
        categoryorder: "array", categoryarray: rows.slice().reverse(), type: "category" },
      legend: { title: { text: "outcome" }, orientation: "v" },
      uniformtext: { minsize: 9, mode: "hide" },
    };
    Plotly.react(ganttEl, traces, layout, { displaylogo: false, responsive: true });
    ganttEl.dataset.attempts = String(bars.length);
    ganttEl.dataset.done = String(done);
    if (firstDraw == null && bars.length) {
      firstDraw = performance.now();
      ganttEl.dataset.firstDrawMs = firstDraw.toFixed(1);
    }
  }

  // -- the DAG ----------------------------------------------------------------------------------
  const SC = OK.cfg.stateColors;
  const W = 168, H = 30, GX = 46, GY = 10, PER_COL = 12;

  function dag() {
    let html = "";
    chain.forEach((p, pi) => {
      const ids = p.steps.map((s) => s.id);
      const depth = new Map();
      const depthOf = (id, seen) => {
        if (depth.has(id)) return depth.get(id);
        const s = p.steps.find((x) => x.id === id);
        let d = 0;
        for (const dep of (s && s.dependencies) || []) {
          if (ids.includes(dep) && !seen.has(dep)) d = Math.max(d, depthOf(dep, new Set([...seen, dep])) + 1);
        }
        depth.set(id, d);
        return d;
      };
      ids.forEach((id) => depthOf(id, new Set([id])));
      const layers = [];
      for (const id of ids) (layers[depth.get(id)] ||= []).push(id);
      const pos = new Map();
      let col = 0, maxRows = 1;
      for (const layer of layers.filter(Boolean)) {
        layer.forEach((id, i) => pos.set(id, [col + Math.floor(i / PER_COL), i % PER_COL]));
        col += Math.ceil(layer.length / PER_COL);
        maxRows = Math.max(maxRows, Math.min(layer.length, PER_COL));
      }
      const width = col * (W + GX) - GX + 20, height = maxRows * (H + GY) - GY + 10;
      const xy = (id) => [10 + pos.get(id)[0] * (W + GX), 5 + pos.get(id)[1] * (H + GY)];
      let edges = "", nodes = "";
      for (const s of p.steps) {
        for (const dep of s.dependencies || []) {
          if (!pos.has(dep)) continue;
          const [x1, y1] = xy(dep), [x2, y2] = xy(s.id);
          const a = x1 + W, b = y1 + H / 2, c = x2, d = y2 + H / 2, m = (a + c) / 2;
          edges += `<path d="M${a},${b} C${m},${b} ${m},${d} ${c - 4},${d}" fill="none" stroke="#8a94a6" marker-end="url(#arrow)"/>`;
        }
        const [x, y] = xy(s.id);
        const name = s.id.length > 22 ? s.id.slice(0, 21) + "…" : s.id;
        nodes += `<g class="node" data-plan-id="${OK.esc(p.id)}" data-step-id="${OK.esc(s.id)}" data-state="pending" transform="translate(${x},${y})">` +
          `<title>${OK.esc(`${s.id}: ${s.agentId}.${s.action}`)}</title>` +
          `<rect width="${W}" height="${H}" rx="5" fill="#fff" stroke="#5b6475"/>` +
          `<text x="${W / 2}" y="${H / 2 + 4}" text-anchor="middle">${OK.esc(name)}</text></g>`;
      }
      const role = pi === 0 ? "plan" : "fallback plan";
      html += `<div class="dag-plan" data-plan-id="${OK.esc(p.id)}"><p><b>${role} ${OK.esc(p.id)}</b>` +
        ` <span class="muted" data-role="tried"></span></p>` +
        `<svg width="${width}" height="${height}" role="img" aria-label="plan ${OK.esc(p.id)}">` +
        `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">` +
        `<path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs>${edges}${nodes}</svg></div>`;
    });
    html += '<p class="legend">' + OK.cfg.stepStates.map((s) =>
      `<span><i style="background:${SC[s]}"></i>${s}</span>`).join("") + "</p>";
    dagEl.innerHTML = html;
  }

  function paintDag() {
    for (const g of dagEl.querySelectorAll("g.node")) {
      const st = states.get(g.dataset.planId + "\u0000" + g.dataset.stepId) || "pending";
      if (g.dataset.state === st) continue;
      g.dataset.state = st;
      g.querySelector("rect").setAttribute("fill", SC[st]);
      g.querySelector("text").setAttribute("fill", OK.light(SC[st]) ? "#1d2330" : "#fff");
      g.querySelector("title").textContent = g.querySelector("title").textContent.replace(/ \(.*\)$/, "") + ` (${st})`;
    }
    for (const d of dagEl.querySelectorAll(".dag-plan")) {
      d.querySelector("[data-role=tried]").textContent = tried.has(d.dataset.planId) ? "" : "(not run)";
    }
  }

  // -- the attempts table -------------------------------------------------------------------
  function table() {
    const idx = bars.map((b, i) => i);
    idx.sort((i, j) => ((bars[i].start ?? bars[i].queued ?? 0) - (bars[j].start ?? bars[j].queued ?? 0)) || i - j);
    const tries = new Map(), retry = new Map();
    for (const i of bars.map((b, k) => k).sort((i, j) => bars[i].attempt - bars[j].attempt || i - j)) {
      const b = bars[i], k = b.planId + "\u0000" + b.stepId;
      if (!b.hedge) tries.set(k, (tries.get(k) ?? -1) + 1);
      retry.set(i, Math.max(0, tries.get(k) ?? 0));
    }
    const f = (v) => (v == null ? "" : OK.num(v, 1));
    tableBody.innerHTML = idx.map((i) => {
      const b = bars[i];
      const outcome = b.end == null && !done ? "running" : (b.outcome || "cancelled");
      const color = outcome === "running" ? RUNNING : C[outcome];
      const took = b.start != null && b.end != null ? b.end - b.start : null;
      return `<tr data-testid="attempt-row" data-idx="${i}" data-outcome="${outcome}" data-step-id="${OK.esc(b.stepId)}">` +
        `<td>${OK.esc(b.planId)}</td><td>${OK.esc(b.stepId)}</td><td>${OK.esc(b.agentId)}</td>` +
        `<td>${OK.esc(b.action)}</td><td class=num>${b.attempt}</td><td class=num>${retry.get(i)}</td>` +
        `<td>${b.hedge ? "hedge" : ""}</td><td class=num>${f(b.queued)}</td><td class=num>${f(b.start)}</td>` +
        `<td class=num>${f(b.end)}</td><td class=num>${f(took)}</td>` +
        `<td>${OK.badge(outcome, color)}</td><td class="err">${OK.esc(b.error || "")}</td></tr>`;
    }).join("");
  }

  function wireClicks() {
    ganttEl.on("plotly_click", (ev) => {
      const pt = ev.points && ev.points[0];
      if (!pt || !pt.customdata) return;
      const row = tableBody.querySelector(`tr[data-idx="${pt.customdata[0]}"]`);
      if (!row) return;
      for (const r of tableBody.querySelectorAll("tr.hl")) r.classList.remove("hl");
      row.classList.add("hl");
      row.scrollIntoView({ block: "center" });
    });
  }

  // -- drawing, throttled -----------------------------------------------------------------------
  let pending = null;
  let dirty = true; // something besides the clock changed since the last draw
  function draw() {
    pending = null;
    gantt();
    if (dirty) { paintDag(); table(); }
    header();
    dirty = false;
  }
  function soon() { if (!pending) pending = setTimeout(draw, 150); }

  async function finish() {
    done = true;
    fromRecord(await OK.api("/api/runs/" + encodeURIComponent(runId)));
    clearTimeout(pending);
    draw();
    OK.live(true, "finished");
  }

  dag();
  if (rec.status !== "running") {
    done = true;
    fromRecord(rec);
    draw();
    wireClicks();
    OK.live(true, "finished");
    return;
  }
  for (const ev of rec.events || []) apply(ev, false);
  draw();
  wireClicks();
  follow();

  function follow() {
    const sock = io({ auth: { learnerId: "dashboard-" + Math.random().toString(36).slice(2, 10),
      token: OK.key() || undefined } });
    let resyncing = false;
    async function resync() { // a gap in seq: start again from the record
      if (resyncing) return;
      resyncing = true;
      try {
        const r = await OK.api("/api/runs/" + encodeURIComponent(runId));
        if (r.status !== "running") { sock.close(); await finish(); return; }
        reset();
        rec = r;
        for (const ev of r.events || []) apply(ev, false);
        soon();
      } finally { resyncing = false; }
    }
    sock.on("connect", () => {
      OK.live(true, "live");
      sock.emit("subscribe", { runId }, (ack) => {
        if (!ack || !ack.success) { OK.showError("subscribe: " + (ack && ack.error)); return; }
        if (ack.status !== "running") { sock.close(); finish().catch(OK.showError); return; }
        for (const ev of ack.events || []) apply(ev, false);
        soon();
      });
    });
    sock.on("connect_error", (e) => OK.live(false, "socket: " + e.message));
    sock.on("disconnect", () => { if (!done) OK.live(false, "reconnecting…"); });
    sock.onAny((name, ev) => {
      if (!ev || ev.runId !== runId) return;
      if (name === "run:finished") { sock.close(); finish().catch(OK.showError); return; }
      if (ev.seq != null && ev.seq > lastSeq + 1) { resync().catch(OK.showError); return; }
      apply({ ...ev, event: ev.event || name }, false);
      soon();
    });
    const tick = setInterval(() => { if (done) clearInterval(tick); else soon(); }, 500); // running bars grow
  }
});
