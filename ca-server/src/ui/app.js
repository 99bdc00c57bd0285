"use strict";
/* The fleet page: fetches /data.json from its own origin and writes text (never markup). */

const SVG = "http://www.w3.org/2000/svg";
const STATE_NAMES = {
  mtls: "on mTLS", plain: "still plain", failed: "failed switch", unhealthy: "unhealthy",
  stale: "stale", unreported: "unreported", expired: "expired", expiring: "expiring within 7 days",
};
let latest = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function when(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "Z");
}

function ago(iso, now) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function span(seconds) {
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return Math.round(seconds / 3600) + " h";
}

function summary(fleet) {
  const box = document.getElementById("summary");
  box.replaceChildren();
  const s = fleet.summary;
  const chips = [["", s.nodes, "nodes"], ["mtls", s.mtls], ["plain", s.plain], ["failed", s.failed],
    ["unhealthy", s.unhealthy], ["stale", s.stale], ["unreported", s.unreported],
    ["expired", s.expired], ["expiring", s.expiring]];
  for (const [state, n, label] of chips) {
    const b = el("button", null, "chip");
    b.type = "button";
    b.dataset.state = state;
    b.append(el("b", n), document.createTextNode(label || STATE_NAMES[state]));
    b.addEventListener("click", () => {
      document.getElementById("state-filter").value = state;
      table();
    });
    box.append(b);
  }
}

function table() {
  if (!latest) return;
  const state = document.getElementById("state-filter").value;
  const name = document.getElementById("name-filter").value.trim().toLowerCase();
  const now = Date.parse(latest.fleet.generated_at);
  const body = document.querySelector("#nodes tbody");
  const rows = latest.fleet.nodes.filter((n) =>
    (!state || n.state === state || (state === "expiring" && n.expiring)) &&
    (!name || n.name.toLowerCase().includes(name)));
  const shown = rows.slice(0, 2000);
  const frag = document.createDocumentFragment();
  for (const n of shown) {
    const tr = el("tr");
    tr.dataset.name = n.name;
    tr.dataset.state = n.state;
    tr.append(el("td", n.name), el("td", n.engine || "—"));
    const st = el("td");
    st.append(el("span", n.state, "state state-" + n.state));
    tr.append(st, el("td", n.mode || "—"));
    const exp = el("td", when(n.expires_at));
    if (n.expiring) exp.append(el("span", " (within 7 d)", "flag"));
    tr.append(exp);
    const rep = el("td", ago(n.last_report_at, now));
    if (n.stale) rep.append(el("span", " (stale)", "flag"));
    tr.append(rep, el("td", n.last_error || "", "error-text"));
    frag.append(tr);
  }
  body.replaceChildren(frag);
  document.getElementById("shown").textContent = rows.length === shown.length
    ? rows.length + " shown" : shown.length + " of " + rows.length + " shown (narrow the filter)";
}

function timeline(data) {
  const chart = document.getElementById("timeline");
  chart.replaceChildren();
  const W = 800, H = 180, L = 30, R = 10, T = 10, B = 30;
  chart.setAttribute("viewBox", "0 0 " + W + " " + H);
  chart.setAttribute("preserveAspectRatio", "none");
  const now = Date.parse(data.fleet.generated_at);
  // Expired certificates are in the table (state "expired"), not on the timeline ahead.
  const times = data.fleet.nodes.map((n) => Date.parse(n.expires_at)).filter((t) => !isNaN(t) && t > now);
  const day = 86400000;
  const end = Math.max(now + 14 * day, ...(times.length ? [Math.max(...times)] : []));
  const span = end - now;
  const x = (t) => L + ((t - now) / span) * (W - L - R);
  const soonEnd = Math.min(end, now + 7 * day);
  chart.append(svg("rect", { class: "soon", x: L, y: T, width: Math.max(0, x(soonEnd) - L), height: H - T - B }));
  const bins = 60;
  const counts = new Array(bins).fill(0);
  for (const t of times) {
    const i = Math.min(bins - 1, Math.max(0, Math.floor(((t - now) / span) * bins)));
    counts[i] += 1;
  }
  const top = Math.max(1, ...counts);
  const bw = (W - L - R) / bins;
  counts.forEach((c, i) => {
    if (!c) return;
    const h = (c / top) * (H - T - B);
    const start = now + (i * span) / bins;
    const r = svg("rect", {
      class: "bar" + (start < now + 7 * day ? " soon-bar" : ""),
      x: L + i * bw + 1, y: H - B - h, width: Math.max(1, bw - 2), height: h,
    });
    r.dataset.count = c;
    r.append(svg("title", {}, c + " node(s) expiring from " + new Date(start).toISOString().slice(0, 16).replace("T", " ")));
    chart.append(r);
  });
  chart.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  for (let k = 0; k <= 4; k++) {
    const t = now + (k * span) / 4;
    chart.append(svg("text", { class: "tick", x: x(t), y: H - B + 14, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle" },
      new Date(t).toISOString().slice(0, 10)));
  }
  chart.append(svg("text", { class: "tick", x: 2, y: T + 10 }, String(top)));
  for (const i of (data.ca.intermediates || [])) {
    const t = i.not_after_unix * 1000;
    if (t > now && t <= end) {
      chart.append(svg("line", { class: "ca-mark", x1: x(t), y1: T, x2: x(t), y2: H - B }));
      chart.append(svg("text", { class: "ca-label", x: x(t) - 2, y: T + 10, "text-anchor": "end" }, "intermediate " + i.state + " ends"));
    }
  }
}

function kv(dl, k, v) {
  dl.append(el("dt", k), el("dd", v));
}

function lifecycle(ca) {
  const box = document.getElementById("ca");
  box.replaceChildren();
  const roots = el("table");
  roots.append(el("caption", "Roots"));
  const rh = el("tr");
  ["State", "Subject", "Digest", "Expires"].forEach((h) => rh.append(el("th", h)));
  roots.append(rh);
  for (const r of ca.roots) {
    const tr = el("tr");
    [r.state, r.subject, r.digest, r.not_after].forEach((v) => tr.append(el("td", v)));
    roots.append(tr);
  }
  const ints = el("table");
  ints.append(el("caption", "Intermediates"));
  const ih = el("tr");
  ["State", "Subject", "From", "Switch", "Expires"].forEach((h) => ih.append(el("th", h)));
  ints.append(ih);
  for (const i of ca.intermediates) {
    const tr = el("tr");
    [i.state, i.subject, i.start, i.switch, i.not_after].forEach((v) => tr.append(el("td", v)));
    ints.append(tr);
  }
  const wrapRoots = el("div", null, "scroll");
  wrapRoots.append(roots);
  const wrapInts = el("div", null, "scroll");
  wrapInts.append(ints);
  box.append(wrapRoots, wrapInts);
  const dl = el("dl");
  kv(dl, "Next intermediate switch", ca.next_switch_unix ? new Date(ca.next_switch_unix * 1000).toISOString().replace(".000", "") : "none prepared yet");
  box.append(dl);
  for (const w of ca.warnings || []) box.append(el("p", "Warning: " + w, "error"));
  const r = ca.rotation;
  const rot = el("div");
  rot.id = "rotation";
  if (r) {
    const total = r.members.length;
    const done = total - r.lagging;
    rot.append(el("p", "Root rotation since " + r.started + ": " + done + " of " + total + " certificates chain to the new root and trust it; " + r.lagging + " lagging."));
    const bar = el("div", null, "progress");
    const fill = el("div");
    fill.style.width = (total ? Math.round((100 * done) / total) : 100) + "%";
    bar.append(fill);
    rot.append(bar);
  } else {
    rot.append(el("p", "No root rotation under way.", "muted"));
  }
  box.append(rot);
}

function audit(events) {
  const body = document.querySelector("#audit tbody");
  body.replaceChildren();
  for (const e of events) {
    const tr = el("tr");
    [when(e.at), e.kind, e.actor, e.subject, e.detail].forEach((v) => tr.append(el("td", v)));
    body.append(tr);
  }
}

async function load() {
  const err = document.getElementById("error");
  try {
    const r = await fetch("data.json", { cache: "no-store" });
    if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
    latest = await r.json();
    err.hidden = true;
  } catch (e) {
    err.textContent = "Cannot load the data: " + e.message;
    err.hidden = false;
    return;
  }
  document.getElementById("cluster").textContent = "· " + latest.cluster;
  document.getElementById("generated").textContent = "as of " + when(latest.fleet.generated_at) +
    "; agents silent for " + span(latest.fleet.stale_after_seconds) + " are stale";
  summary(latest.fleet);
  table();
  timeline(latest);
  lifecycle(latest.ca);
  audit(latest.audit);
  document.body.dataset.loaded = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("state-filter").addEventListener("change", table);
  document.getElementById("name-filter").addEventListener("input", table);
  const wanted = new URLSearchParams(location.search).get("state");
  if (wanted) document.getElementById("state-filter").value = wanted;
  load();
  setInterval(load, 30000);
});
