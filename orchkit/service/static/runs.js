/* /ui/runs: one page of runs, newest first, filtered; polled every second so new runs and
 * status changes show live. Filters and the page live in the URL (linkable). */
"use strict";
OK.start(async () => {
  const form = document.getElementById("filters");
  const table = document.getElementById("runs-table");
  const body = table.querySelector("tbody");
  const info = document.getElementById("page-info");
  const empty = document.getElementById("empty");
  const next = document.getElementById("next-page");
  const prev = document.getElementById("prev-page");
  const first = document.getElementById("first-page");
  const SINCE = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };

  const url = new URL(location.href);
  for (const el of form.elements) {
    const v = url.searchParams.get(el.name);
    if (v != null && el.name) el.value = v;
  }
  if (!form.elements.limit.value) form.elements.limit.value = String(OK.cfg.defaultPage);
  let cursor = url.searchParams.get("cursor") || null;
  // the cursors of the pages before this one ("-": the first page)
  let back = (url.searchParams.get("back") || "").split(",").filter(Boolean);
  let nextCursor = null;
  let shown = "";

  function query() {
    const q = new URLSearchParams();
    const f = form.elements;
    if (f.status.value) q.set("status", f.status.value);
    if (f.planId.value.trim()) q.set("planId", f.planId.value.trim());
    if (f.learnerId.value.trim()) q.set("learnerId", f.learnerId.value.trim());
    if (f.since.value && SINCE[f.since.value]) {
      q.set("since", String(Math.floor(Date.now() - SINCE[f.since.value])));
    }
    q.set("limit", f.limit.value || String(OK.cfg.defaultPage));
    if (cursor) q.set("cursor", cursor);
    return q;
  }

  function remember() {
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    if (cursor) q.set("cursor", cursor);
    if (back.length) q.set("back", back.join(","));
    history.replaceState(null, "", "/ui/runs" + (q.toString() ? "?" + q : ""));
  }

  function row(r) {
    const color = OK.cfg.runColors[r.status];
    const link = "/ui/runs/" + encodeURIComponent(r.runId);
    return `<tr data-testid="run-row" data-run-id="${OK.esc(r.runId)}" data-status="${OK.esc(r.status)}">` +
      `<td><a href="${link}">${OK.esc(r.runId)}</a></td><td>${OK.esc(r.planId)}</td>` +
      `<td>${OK.badge(r.status, color)}</td><td>${OK.esc(r.kind)}</td>` +
      `<td>${OK.esc(r.learnerId || "")}</td><td>${OK.esc(OK.stamp(r.createdAt))}</td>` +
      `<td class=num>${r.status === "running" ? "…" : OK.ms(r.durationMs)}</td>` +
      `<td class="err">${OK.esc(r.error || "")}</td></tr>`;
  }

  async function load() {
    const page = await OK.api("/api/runs?" + query());
    nextCursor = page.nextCursor;
    const html = page.runs.map(row).join("");
    if (html !== shown) { body.innerHTML = html; shown = html; }
    if (page.runs.length && !table.dataset.firstRowMs) { // from navigation: for tests, users
      table.dataset.firstRowMs = performance.now().toFixed(1);
    }
    empty.hidden = page.runs.length > 0;
    next.disabled = !nextCursor;
    prev.disabled = first.disabled = !cursor;
    info.textContent = `${page.runs.length} run${page.runs.length === 1 ? "" : "s"} ` +
      `on page ${back.length + 1}${nextCursor ? "" : " (the last)"}`;
  }

  async function go(newCursor, newBack) {
    cursor = newCursor;
    back = newBack;
    remember();
    await load();
  }

  let typing = null;
  form.addEventListener("input", (ev) => {
    clearTimeout(typing);
    const delay = ev.target.tagName === "INPUT" ? 300 : 0;
    typing = setTimeout(() => go(null, []).catch(OK.showError), delay);
  });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  next.onclick = () => nextCursor && go(nextCursor, [...back, cursor || "-"]).catch(OK.showError);
  prev.onclick = () => {
    const c = back[back.length - 1];
    go(c && c !== "-" ? c : null, back.slice(0, -1)).catch(OK.showError);
  };
  first.onclick = () => go(null, []).catch(OK.showError);

  await load();
  OK.live(true, "live");
  OK.every(1000, load);
});
