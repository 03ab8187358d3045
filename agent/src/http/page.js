// The millwright status page: fetches api/status every refresh interval and redraws. Every value
// from the agent goes into the page as text (never as markup): device and alert names are
// configuration, reasons may quote what a device sent.
"use strict";

const settings = { refresh_ms: 2000, can_acknowledge: false, user: null };
let lastGood = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
const num = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const tone = (health) => (health >= 0.7 ? "good" : health >= 0.4 ? "warn" : "bad");

function age(iso, now) {
  const seconds = Math.max(0, (now - Date.parse(iso)) / 1000);
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function table(head, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map(([name, cls]) => el("th", { class: cls }, name)))),
    el("tbody", {}, rows));
}

function replace(id, ...content) {
  document.getElementById(id).replaceChildren(...content);
}

function none(text) {
  return el("p", { class: "none" }, text);
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const response = await fetch("api/alerts/ack", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ alert_id: id }),
    });
    if (!response.ok) button.textContent = "refused: " + (await response.text()).trim();
    else refresh();
  } catch (error) {
    button.textContent = "failed";
  }
}

function alerts(status, now) {
  if (status.alerts.length === 0) return none("No alerts.");
  const severity = { critical: "bad", high: "bad", medium: "warn", low: "good" };
  return table(
    [["Alert"], ["Severity"], ["State"], ["Age", "num"], ["Reason", "wide"], [""]],
    status.alerts.map((a) => el("tr", { "data-alert": a.alert_id },
      el("td", {}, a.alert_id),
      el("td", {}, el("span", { class: "pill bg-" + (severity[a.severity] || "warn") }, a.severity)),
      el("td", {}, a.state.replaceAll("_", " "), a.acknowledged_by ? " by " + a.acknowledged_by : ""),
      el("td", { class: "num" }, age(a.raised, now)),
      el("td", { class: "wide" }, a.reason),
      el("td", {}, settings.can_acknowledge && a.state.endsWith("unacknowledged")
        ? el("button", { onclick: (e) => acknowledge(a.alert_id, e.target) }, "Acknowledge")
        : null))));
}

function assets(status) {
  if (status.assets.length === 0) return none("No assessment yet.");
  return el("div", { class: "grid" }, status.assets.map((a) => el("div", { class: "card", "data-asset": a.asset },
    el("h3", {}, a.asset, " ", el("span", { class: "none" }, a.asset_type)),
    el("div", {}, "Health ", el("strong", { class: tone(a.health) }, pct(a.health))),
    el("div", { class: "bar" }, el("span", { class: "bg-" + tone(a.health), style: "width:" + (100 * a.health).toFixed(0) + "%" })),
    el("div", {}, "Failure probability ", el("strong", {}, pct(a.failure_probability)),
      " · ", a.action.replaceAll("_", " "), " (", a.priority, ")"),
    a.remaining_life_hours !== null ? el("div", {}, "Remaining life ≈ ", num(a.remaining_life_hours, 0), " h") : null,
    a.reasons.length ? el("ul", { class: "reasons" }, a.reasons.map((r) => el("li", {}, r))) : null)));
}

function devices(status) {
  if (status.devices.length === 0) return none("No devices.");
  return table(
    [["Device"], ["State"], ["Requests", "num"], ["Errors", "num"], ["Timeouts", "num wide"],
      ["Exceptions", "num wide"], ["Reconnects", "num wide"], ["Latency", "num"]],
    status.devices.map((d) => el("tr", { "data-device": d.device },
      el("td", {}, d.device),
      el("td", { class: d.online ? "good" : "bad" }, d.online ? "online" : "offline"),
      el("td", { class: "num" }, d.requests),
      el("td", { class: "num" + (d.errors ? " bad" : "") }, d.errors),
      el("td", { class: "num wide" }, d.errors_by_kind.timeout),
      el("td", { class: "num wide" }, d.errors_by_kind.exception),
      el("td", { class: "num wide" }, d.reconnects),
      el("td", { class: "num" }, d.latency_mean_ms === null ? "–" : num(d.latency_mean_ms, 1) + " ms"))));
}

function lines(status) {
  if (status.lines.length === 0) return none("No production line reports yet.");
  return el("div", { class: "grid" }, status.lines.map((l) => el("div", { class: "card", "data-line": l.line },
    el("h3", {}, l.line, " ", el("span", { class: "none" }, (l.state || "unknown") + " · shift " + l.shift)),
    el("div", {}, "OEE ", el("strong", { class: l.oee === null ? "" : tone(l.oee / 0.85) }, pct(l.oee))),
    el("div", {}, "Availability ", pct(l.availability), " · performance ", pct(l.performance), " · quality ", pct(l.quality)),
    el("div", {}, num(l.good, 0), " good, ", num(l.reject, 0), " rejects"),
    el("div", {}, "Top loss: ", l.top_loss || "none yet"))));
}

function quality(status) {
  if (status.quality.length === 0) return none("No quality stations.");
  const decision = { pass: "good", review: "warn", reject: "bad" };
  return el("div", { class: "grid" }, status.quality.map((q) => el("div", { class: "card", "data-station": q.station },
    el("h3", {}, q.station),
    el("div", {}, q.parts, " parts: ", q.pass, " pass, ", q.review, " review, ", q.reject, " reject"),
    q.capability.map((c) => el("div", {}, c.characteristic, ": Cpk ", num(c.cpk), " (n = ", c.n, ")")),
    q.latest.length ? el("div", {}, "Latest: ", q.latest.slice(0, 5).map((p) =>
      el("span", { class: decision[p.decision] }, (p.part_id || "?") + " " + p.decision + " ")))
      : null)));
}

function uplink(status, now) {
  const rows = [];
  if (status.uplink) {
    const u = status.uplink;
    rows.push(el("p", {}, "MQTT ", el("strong", { class: u.connected ? "good" : "bad" }, u.connected ? "connected" : "disconnected"),
      " · ", u.acknowledged, " delivered, ", Math.max(0, u.published - u.acknowledged), " in flight, ",
      u.connection_losses, " connection losses", u.last_error && !u.connected ? " · " + u.last_error : ""));
  } else {
    rows.push(none("No uplink configured."));
  }
  if (status.outbox) {
    const o = status.outbox;
    const depth = o.alert.depth + o.event.depth + o.summary.depth;
    rows.push(el("p", {}, "Outbox: ", depth, " records waiting (", num(o.bytes / 1048576, 1), " of ",
      num(o.max_bytes / 1048576, 0), " MiB)", o.oldest ? ", oldest " + age(o.oldest, now) : "",
      o.alert.dropped + o.event.dropped + o.summary.dropped ? ", " + (o.alert.dropped + o.event.dropped + o.summary.dropped) + " dropped" : ""));
  }
  if (status.process) {
    rows.push(el("p", { class: "none" }, "Memory ", num(status.process.rss_bytes / 1048576, 1), " MiB · ",
      status.samples.good, " good samples, ", status.samples.bad, " bad"));
  }
  return rows;
}

function uptime(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min";
}

function draw(status) {
  const now = Date.parse(status.time) || Date.now();
  document.title = status.agent + " · millwright";
  replace("agent", status.agent);
  replace("meta", "millwright " + status.version + " · up " + uptime(status.uptime_s) + " · " +
    status.time.replace("T", " ").slice(0, 19) + " UTC" + (settings.user ? " · signed in as " + settings.user : ""));
  replace("alerts", alerts(status, now));
  replace("assets", assets(status));
  replace("devices", devices(status));
  replace("lines", lines(status));
  replace("quality", quality(status));
  replace("uplink", ...uplink(status, now));
}

function lost(yes) {
  document.getElementById("lost").hidden = !yes;
  document.body.classList.toggle("stale", yes);
  if (yes) replace("lost-since", lastGood ? new Date(lastGood).toLocaleTimeString() : "never");
}

async function refresh() {
  try {
    const response = await fetch("api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status);
    draw(await response.json());
    lastGood = Date.now();
    lost(false);
  } catch (error) {
    lost(true);
  }
}

async function start() {
  try {
    Object.assign(settings, await (await fetch("api/page", { cache: "no-store" })).json());
  } catch (error) {
    lost(true);
  }
  await refresh();
  setInterval(refresh, settings.refresh_ms);
}

start();
