// AI Quant — Live Desk: polls /api/snapshot and renders tables. Data is only ever placed with
// textContent (never parsed as HTML), so a symbol or reason string cannot inject markup.
"use strict";
const POLL_MS = 1200;
let mode = new URLSearchParams(location.search).get("mode") || "paper";
let timer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function num(v, digits = 2) {
  return v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined,
    { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function signed(v, digits = 2) { return v === null || v === undefined ? "" : (v > 0 ? "good" : v < 0 ? "bad" : ""); }
function time(iso) { return iso ? String(iso).replace("T", " ").slice(0, 19) : "—"; }

function table(target, columns, rows) {
  const box = document.getElementById(target);
  box.replaceChildren();
  if (!rows.length) { box.appendChild(el("div", "none", "empty")); return; }
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
const money = (f, d = 2) => (r) => ({ text: num(f(r), d), cls: signed(f(r)) });
const plain = (f, d = 4) => (r) => ({ text: num(f(r), d) });

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

function render(s) {
  const hb = s.heartbeat, kill = s.kill, pnl = s.pnl_today || {};
  const pills = document.getElementById("pills");
  pills.replaceChildren(
    pill("db", s.db.status, s.db.status === "ok" ? "good" : "bad"),
    pill("engine", s.engine_up ? "up" : (hb.status === "none" ? "no heartbeat" : "stale"), s.engine_up ? "good" : "bad"),
    pill("heartbeat", hb.age_s === null ? "—" : hb.age_s.toFixed(0) + "s ago", s.engine_up ? "" : "warn"),
    pill("kill", kill.mode + (kill.reason ? " (" + kill.reason + ")" : ""), killClass(kill)),
    pill("balance", num(s.balance)),
    pill("pnl today", num(pnl.net), signed(pnl.net)),
    pill("fees today", num(pnl.fees)),
    pill("dd", s.drawdown_pct === null ? "—" : num(s.drawdown_pct) + "%", s.drawdown_pct > 0 ? "warn" : ""),
    pill("max dd", s.max_drawdown_pct === null ? "—" : num(s.max_drawdown_pct) + "%"),
    pill("open", String(s.open_positions.length)),
    pill("strategy", hb.fields.strategy_mode || "—"),
    pill("cfg", hb.fields.config_id || "—"),
  );
  const w = document.getElementById("warnings");
  w.replaceChildren(...s.warnings.map(x => el("div", "⚠ " + x)));
  table("positions", [
    ["symbol", txt(r => r.symbol)], ["side", txt(r => r.side)], ["size", plain(r => r.size, 6)],
    ["entry", plain(r => r.entry_price)], ["notional", plain(r => r.notional, 2)], ["adds", txt(r => r.adds_count)],
    ["trail sl", plain(r => r.trailing_sl)], ["lev", plain(r => r.leverage, 1)], ["opened", txt(r => r.open_time_ms ? new Date(r.open_time_ms).toISOString().slice(0, 19).replace("T", " ") : null)],
  ], s.open_positions);
  table("trades", [
    ["time", txt(r => time(r.timestamp))], ["symbol", txt(r => r.symbol)], ["action", txt(r => r.action)],
    ["side", txt(r => r.type)], ["price", plain(r => r.price)], ["size", plain(r => r.size, 6)],
    ["pnl", money(r => r.pnl)], ["fee", plain(r => r.fee_usd, 4)], ["reason", txt(r => r.reason)],
  ], s.recent_trades);
  table("audit", [
    ["time", txt(r => time(r.timestamp))], ["event", txt(r => r.event)], ["symbol", txt(r => r.symbol)],
    ["level", txt(r => r.level)], ["data", txt(r => JSON.stringify(r.data))],
  ], s.recent_audit);
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
      stamp.textContent = "updated " + new Date().toLocaleTimeString(); stamp.className = "pill good";
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
  clearTimeout(timer);
  poll();
}
document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => selectMode(b.dataset.mode)));
selectMode(mode);
