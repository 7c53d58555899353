// AI Quant — Live Desk: polls /api/snapshot and renders banners, pills, charts (vendored uPlot)
// and tables. Data is only ever placed with textContent (never parsed as HTML), so a symbol or
// reason string cannot inject markup. Every time shown is UTC and says so.
"use strict";
const POLL_MS = 1200;
let mode = new URLSearchParams(location.search).get("mode") || "paper";
let timer = null;
let last = null;
const charts = {};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
const missing = (v) => v === null || v === undefined || Number.isNaN(v);
// Money: two decimals with separators. Prices and sizes: significant digits, so a sub-cent perp
// (0.00001234) stays readable instead of collapsing to 0.0000.
function money(v) {
  return missing(v) ? "—" : Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
function sig(v, digits = 6) {
  if (missing(v)) return "—";
  const n = Number(v);
  if (n === 0) return "0";
  if (Math.abs(n) >= 1e6) return n.toLocaleString("en-US", { maximumFractionDigits: 0 });
  return n.toLocaleString("en-US", { maximumSignificantDigits: digits, useGrouping: Math.abs(n) >= 1000 });
}
function pct(v) { return missing(v) ? "—" : Number(v).toFixed(2) + "%"; }
function signClass(v) { return missing(v) ? "" : (v > 0 ? "good" : v < 0 ? "bad" : ""); }
function utc(ms) {
  if (missing(ms)) return "—";
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC";
}
function utcIso(iso) {
  if (!iso) return "—";
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? String(iso) : utc(ms);
}
function ago(seconds) {
  if (missing(seconds)) return "—";
  if (seconds < 120) return seconds.toFixed(0) + "s";
  if (seconds < 7200) return (seconds / 60).toFixed(0) + "m";
  return (seconds / 3600).toFixed(1) + "h";
}

function table(target, columns, rows, emptyText = "none") {
  const box = document.getElementById(target);
  box.replaceChildren();
  if (!rows.length) { box.appendChild(el("div", emptyText, "empty")); return; }
  const t = el("table"), head = el("tr");
  columns.forEach(c => head.appendChild(el("th", c[0])));
  t.appendChild(head);
  rows.forEach(r => {
    const tr = el("tr");
    columns.forEach(c => { const v = c[1](r); tr.appendChild(el("td", v.text, v.cls)); });
    t.appendChild(tr);
  });
  box.appendChild(t);
}
const txt = (f) => (r) => ({ text: f(r) ?? "—", cls: "text" });
const cash = (f) => (r) => ({ text: money(f(r)), cls: signClass(f(r)) });
const num = (f, d = 6) => (r) => ({ text: sig(f(r), d) });

function pill(label, value, cls) {
  const p = el("span", null, "pill");
  p.appendChild(el("b", label));
  p.appendChild(el("span", value, cls));
  return p;
}

// Green only for a known "off": an unknown kill state (level null) is never shown as safe.
function killClass(kill) {
  if (kill.mode === "off" && kill.level === 0) return "good";
  return kill.level === 2 ? "bad" : "warn";
}
const ENGINE_CLASS = { "up": "good", "stale": "bad", "stopped": "bad", "no heartbeat": "warn" };

function renderBanners(s) {
  const box = document.getElementById("banners");
  box.replaceChildren(...(s.banners || []).map(b => el("div", b.text, "banner " + b.level)));
}

function renderPills(s) {
  const hb = s.heartbeat, kill = s.kill, pnl = s.pnl_today || {};
  const status = s.engine_status || (s.engine_up ? "up" : "no heartbeat");
  document.getElementById("pills").replaceChildren(
    pill("db", s.db.status, s.db.status === "ok" ? "good" : "bad"),
    pill("engine", status, ENGINE_CLASS[status] || "warn"),
    pill("heartbeat", missing(hb.age_s) ? "—" : ago(hb.age_s) + " ago", s.engine_up ? "" : "warn"),
    pill("kill", kill.mode + (kill.reason ? " (" + kill.reason + ")" : ""), killClass(kill)),
    pill("balance", money(s.balance)),
    pill("equity", money(s.equity)),
    pill("unrealised", money(s.unrealised_pnl), signClass(s.unrealised_pnl)),
    pill("pnl today (UTC)", money(pnl.net), signClass(pnl.net)),
    pill("fees today", money(pnl.fees)),
    pill("dd", pct(s.drawdown_pct), s.drawdown_pct > 0 ? "warn" : ""),
    pill("max dd", pct(s.max_drawdown_pct)),
    pill("open", String(s.open_positions.length)),
    pill("strategy", hb.fields.strategy_mode || "—"),
    pill("cfg", hb.fields.config_id || "—"),
  );
  const lag = document.getElementById("lag");
  lag.replaceChildren(...(s.data_lag || []).map(d => {
    const cls = d.lag_s > 7200 ? "bad" : d.lag_s > 3900 ? "warn" : "good";
    const p = pill(d.symbol, ago(d.lag_s), cls);
    p.title = "newest bar closed " + utc(d.last_bar_ms) + " (" + d.source + ")";
    p.dataset.symbol = d.symbol;
    return p;
  }));
  if (s.data_lag && s.data_lag.length) lag.prepend(el("span", "data lag:", "warn"));
}

function chartWidth(id) {
  return Math.max(240, document.getElementById(id).clientWidth - 12);
}
const AXIS = { stroke: "#8a96a6", grid: { stroke: "#2a313c", width: 1 }, ticks: { stroke: "#2a313c" } };
function baseOpts(id, series) {
  return {
    width: chartWidth(id), height: 220, series,
    scales: { x: { time: true } },
    tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: [{ ...AXIS, label: "UTC", space: 70,
             values: (u, splits) => splits.map(t => { const s = utc(t * 1000); return s.slice(5, 10) + "\n" + s.slice(11, 16); }) },
           { ...AXIS, size: 70 }],
    legend: { live: true },
  };
}

// One chart per element: created on first data, updated in place after (no flicker, no leak).
function drawChart(id, opts, data, emptyText) {
  const box = document.getElementById(id);
  if (!data[0].length) {
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    box.replaceChildren(el("div", emptyText, "empty"));
    return;
  }
  if (!charts[id]) {
    box.replaceChildren();
    charts[id] = new uPlot(opts, data, box);
  } else {
    charts[id].setData(data);
  }
}

function renderCharts(s) {
  const series = s.balance_series || { t_ms: [], balance: [] };
  drawChart("equity-chart", baseOpts("equity-chart", [
    {}, { label: "balance", stroke: "#58a6ff", width: 1.5, value: (u, v) => money(v) },
  ]), [series.t_ms.map(t => t / 1000), series.balance], "no fills yet");
  const days = s.daily_pnl || [];
  const x = days.map(d => Date.parse(d.day + "T00:00:00Z") / 1000);
  const bars = uPlot.paths.bars({ size: [0.7, 40] });
  drawChart("daily-chart", baseOpts("daily-chart", [
    {}, { label: "gain", stroke: "#3fb950", fill: "#3fb95099", paths: bars, points: { show: false }, value: (u, v) => money(v) },
    { label: "loss", stroke: "#f85149", fill: "#f8514999", paths: bars, points: { show: false }, value: (u, v) => money(v) },
  ]), [x, days.map(d => d.net >= 0 ? d.net : null), days.map(d => d.net < 0 ? d.net : null)], "no fills yet");
}

function renderTables(s) {
  table("positions", [
    ["symbol", txt(r => r.symbol)], ["side", txt(r => r.side)], ["size", num(r => r.size)],
    ["entry", num(r => r.entry_price)], ["mark", num(r => r.mark_price)], ["unrealised", cash(r => r.unrealised_pnl)],
    ["stop", num(r => r.stop)],
    ["to stop", (r) => ({ text: pct(r.stop_distance_pct), cls: r.stop_distance_pct !== null && r.stop_distance_pct < 1 ? "bad" : "" })],
    ["funding", cash(r => missing(r.funding_paid) ? null : -r.funding_paid)],
    ["protective", (r) => r.protection === null || r.protection === undefined ? { text: "—", cls: "" }
      : r.unprotected ? { text: "NONE", cls: "bad" }
      : { text: r.protection.map(o => `${o.role} ${o.trigger_px} #${o.oid}`).join(", "), cls: "" }],
    ["notional", cash(r => r.notional)], ["adds", txt(r => r.adds_count)], ["lev", num(r => r.leverage, 3)],
    ["opened", txt(r => utc(r.open_time_ms))],
  ], s.open_positions, "no open positions");
  renderRoundTrips(s);
  table("trades", [
    ["time", txt(r => utcIso(r.timestamp))], ["symbol", txt(r => r.symbol)], ["action", txt(r => r.action)],
    ["side", txt(r => r.type)], ["price", num(r => r.price)], ["size", num(r => r.size)],
    ["pnl", cash(r => r.pnl)], ["fee", num(r => r.fee_usd, 4)], ["reason", txt(r => r.reason)],
  ], s.recent_trades, "no fills yet");
  table("audit", [
    ["time", txt(r => utcIso(r.timestamp))], ["event", txt(r => r.event)], ["symbol", txt(r => r.symbol)],
    ["level", txt(r => r.level)], ["data", txt(r => JSON.stringify(r.data))],
  ], s.recent_audit, "no audit events");
}

function renderRoundTrips(s) {
  const select = document.getElementById("rt-filter");
  const chosen = select.value;
  const symbols = [...new Set((s.round_trips || []).map(r => r.symbol))].sort();
  const have = [...select.options].slice(1).map(o => o.value);
  if (have.join() !== symbols.join()) {
    select.replaceChildren(el("option", "all symbols"), ...symbols.map(sym => el("option", sym)));
    select.options[0].value = "";
    symbols.forEach((sym, i) => { select.options[i + 1].value = sym; });
    select.value = symbols.includes(chosen) ? chosen : "";
  }
  const rows = (s.round_trips || []).filter(r => !select.value || r.symbol === select.value);
  table("roundtrips", [
    ["closed", txt(r => utc(r.close_time_ms))], ["symbol", txt(r => r.symbol)], ["side", txt(r => r.side)],
    ["entry", num(r => r.entry_price)], ["exit", num(r => r.exit_price)], ["size", num(r => r.size)],
    ["net", cash(r => r.net)], ["fees", num(r => r.fees, 4)], ["exit reason", txt(r => r.exit_reason)],
    ["held", txt(r => missing(r.open_time_ms) ? "—" : ago((r.close_time_ms - r.open_time_ms) / 1000))],
  ], rows, "no closed round trips");
}

function render(s) {
  last = s;
  renderBanners(s);
  renderPills(s);
  document.getElementById("warnings").replaceChildren(...s.warnings.map(x => el("div", "⚠ " + x)));
  renderCharts(s);
  renderTables(s);
}

async function poll() {
  const headers = {};
  const token = sessionStorage.getItem("aiq_monitor_token");
  if (token) headers["Authorization"] = "Bearer " + token;
  const stamp = document.getElementById("updated");
  try {
    const res = await fetch("/api/snapshot?mode=" + encodeURIComponent(mode), { headers, cache: "no-store" });
    if (res.status === 401) {
      const entered = prompt("Monitor token (kept in this tab only):");
      if (entered) sessionStorage.setItem("aiq_monitor_token", entered.trim());
    } else if (!res.ok) {
      stamp.textContent = "HTTP " + res.status; stamp.className = "pill bad";
    } else {
      render(await res.json());
      stamp.textContent = "updated " + utc(Date.now()).slice(11); stamp.className = "pill good";
    }
  } catch (e) {
    stamp.textContent = "disconnected"; stamp.className = "pill bad";
  }
  timer = setTimeout(poll, POLL_MS);
}

function selectMode(m) {
  mode = m;
  document.querySelectorAll("#tabs button").forEach(b => b.classList.toggle("on", b.dataset.mode === m));
  history.replaceState(null, "", "?mode=" + encodeURIComponent(m));
  Object.keys(charts).forEach(id => { charts[id].destroy(); delete charts[id]; });
  clearTimeout(timer);
  poll();
}

function tickClock() { document.getElementById("clock").textContent = utc(Date.now()); }
document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => selectMode(b.dataset.mode)));
document.getElementById("rt-filter").addEventListener("change", () => { if (last) renderRoundTrips(last); });
window.addEventListener("resize", () => {
  Object.entries(charts).forEach(([id, c]) => c.setSize({ width: chartWidth(id), height: 220 }));
});
tickClock();
setInterval(tickClock, 1000);
selectMode(mode);
