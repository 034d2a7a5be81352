/* /ui/learning: the cohort report (GET /api/analytics/cohort), polled every 5 seconds. */
"use strict";
OK.start(async () => {
  const body = document.querySelector("#outcomes-table tbody");
  const empty = document.getElementById("empty");
  const note = document.getElementById("cohort-note");
  const ORDER = OK.cfg.outcomes || [];
  const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + " %");
  const dec = (v, d = 3) => (v == null ? "–" : Number(v).toFixed(d));
  let shown = "";

  function set(id, text, value) {
    const el = document.getElementById(id);
    el.textContent = text;
    if (value !== undefined) el.dataset.value = value == null ? "" : String(value);
  }

  function vsOk(g) {
    const d = g.gainVsOk;
    if (!d || d[0] == null) return "";
    return `${d[0] >= 0 ? "+" : ""}${dec(d[0])}` +
      (d[1] == null ? "" : ` <span class="muted">[${dec(d[1])}, ${dec(d[2])}]</span>`);
  }

  function row(name, g) {
    const ci = (k) => {
      const c = g[k + "Ci"];
      return c && c[0] != null ? ` <span class="muted">[${dec(c[0])}, ${dec(c[1])}]</span>` : "";
    };
    return `<tr data-testid="outcome-row" data-outcome="${OK.esc(name)}">` +
      `<td>${OK.esc(name)}</td><td class=num>${g.interactions}</td><td class=num>${g.learners}</td>` +
      `<td class=num>${dec(g.gain)}${ci("gain")}</td>` +
      `<td class=num>${dec(g.normGain)}${ci("normGain")}</td>` +
      `<td class=num>${pct(g.nextCorrect)}</td><td class=num>${vsOk(g)}</td></tr>`;
  }

  async function load() {
    const c = await OK.api("/api/analytics/cohort");
    set("cohort-learners", String(c.learners));
    set("cohort-responses", String(c.responses));
    set("cohort-mastery-rate", pct(c.masteryRate), c.masteryRate);
    set("cohort-median-opportunities", dec(c.medianOpportunitiesToMastery, 1),
      c.medianOpportunitiesToMastery);
    set("cohort-wheel-spin-rate", pct(c.wheelSpinRate), c.wheelSpinRate);
    set("cohort-tutor-p95", c.tutorLatencyP95Ms == null ? "–" : OK.ms(c.tutorLatencyP95Ms),
      c.tutorLatencyP95Ms);
    note.textContent = `Mastered: P(mastered) ≥ ${c.masteryThreshold}; wheel-spinning: ` +
      `${c.wheelSpinOpportunities} opportunities without mastery. ` +
      `${c.servedResponses} of the answers were served by a run with a tutor attempt; ` +
      "gains: 95 % bootstrap intervals over learners.";
    const names = Object.keys(c.byOutcome || {}).sort(
      (a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99));
    const html = names.map((n) => row(n, c.byOutcome[n])).join("");
    if (html !== shown) { body.innerHTML = html; shown = html; }
    empty.hidden = c.responses > 0;
  }

  await load();
  OK.live(true, "live");
  OK.every(5000, load);
});
