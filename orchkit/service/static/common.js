/* orchkit dashboard: what every page shares. Plain JS, no build step.
 * OK.cfg: the server's settings for the page; OK.api(path): GET JSON with the API key;
 * OK.start(init): ask for the key first when the server needs one (SPEC §15.2). */
"use strict";
const OK = (() => {
  const cfg = JSON.parse(document.getElementById("orchkit-config").textContent);
  const KEY = "orchkit.apiKey";
  const main = document.getElementById("main");
  const gate = document.getElementById("key-gate");
  const forget = document.getElementById("forget-key");

  function key() {
    try { return localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  class Unauthorized extends Error {}

  function askKey(message) {
    main.hidden = true;
    if (!gate) {
      document.body.insertAdjacentHTML("beforeend",
        '<p class="error" style="padding:20px">The server refused the request (401).</p>');
      return;
    }
    gate.hidden = false;
    document.getElementById("key-error").textContent = message || "";
    const input = document.getElementById("api-key");
    input.focus();
    gate.onsubmit = (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      try { localStorage.setItem(KEY, value); } catch (e) { /* private mode: this page only */ }
      location.reload();
    };
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const k = key();
    if (k) headers.Authorization = "Bearer " + k;
    const res = await fetch(path, { headers, cache: "no-store" });
    if (res.status === 401) {
      askKey(k ? "The server refused this key." : "");
      throw new Unauthorized("401");
    }
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(`${res.status}: ${detail}`);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  function start(init) {
    if (cfg.keyRequired && key() && forget) {
      forget.hidden = false;
      forget.onclick = (ev) => {
        ev.preventDefault();
        localStorage.removeItem(KEY);
        location.reload();
      };
    }
    if (cfg.keyRequired && !key()) { askKey(""); return; }
    main.hidden = false;
    Promise.resolve(init()).catch((e) => { if (!(e instanceof Unauthorized)) showError(e); });
  }

  function showError(e) {
    console.error(e);
    let box = document.getElementById("page-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "page-error";
      box.className = "error";
      main.prepend(box);
    }
    box.textContent = String(e && e.message ? e.message : e);
  }

  function live(on, text) {
    const el = document.getElementById("live");
    el.className = "live " + (on ? "on" : "off");
    el.textContent = text;
  }

  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  function ms(v) {
    if (v == null || Number.isNaN(v)) return "";
    if (Math.abs(v) < 1000) return v.toFixed(v < 10 ? 2 : 1) + " ms";
    if (Math.abs(v) < 60000) return (v / 1000).toFixed(2) + " s";
    return (v / 60000).toFixed(1) + " min";
  }
  const num = (v, d = 1) => (v == null || Number.isNaN(v) ? "" : Number(v).toFixed(d));
  const stamp = (iso) => (iso ? iso.replace("T", " ").replace("Z", "") : "");

  function ago(epochMs) {
    if (epochMs == null) return "";
    const s = Math.max(0, (Date.now() - epochMs) / 1000);
    return s < 2 ? "now" : s < 120 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
  }

  /** Is `color` (#rrggbb) light enough for dark text on it? (WCAG relative luminance) */
  function light(color) {
    const m = /^#([0-9a-f]{6})$/i.exec(color || "");
    if (!m) return false;
    const [r, g, b] = [0, 2, 4].map((i) => {
      const c = parseInt(m[1].slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.4;
  }

  function badge(text, color) {
    return `<span class="badge${light(color) ? " light" : ""}" style="background:${esc(color || "#7f7f7f")}">` +
      `${esc(text)}</span>`;
  }

  /** Call fn every `period` ms (never two at once), e.g. to poll a list. */
  function every(period, fn) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try { await fn(); live(true, "live"); } catch (e) {
        if (e instanceof Unauthorized) { clearInterval(timer); return; }
        live(false, "reconnecting…");
      } finally { busy = false; }
    };
    const timer = setInterval(tick, period);
    return timer;
  }

  // the run page's record, asked for while plotly.js (4.8 MB) is still being compiled
  const prefetch = cfg.runId && (!cfg.keyRequired || key())
    ? api("/api/runs/" + encodeURIComponent(cfg.runId)) : null;
  if (prefetch) prefetch.catch(() => {}); // run.js awaits it and reports its failure

  return { cfg, key, api, start, prefetch, showError, live, esc, ms, num, stamp, ago, light, badge, every, Unauthorized };
})();
