// peerd dashboard: read-only, plain ES2020, no build step, no dependencies.
// Reads the node's REST API (/v1/...; protobuf JSON mapping, lowerCamelCase, defaults omitted).
// Pages (hash routes): #/ cluster and tasks, #/tasks/<id> one task, #/live runs as they happen.
// Every value from the API reaches the page through textContent or an attribute, never as HTML.
"use strict";

const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const LIVE_ROWS = 200;
const TOKEN_KEY = "peerd.token";

// ---- helpers ------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "line", "polyline", "circle", "text", "title", "rect"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function seconds(duration) { // protobuf JSON Duration "1.5s" -> 1.5; unset -> null
  return duration === undefined ? null : parseFloat(duration);
}

function fmtSeconds(s) {
  if (s === null || Number.isNaN(s)) return "";
  const a = Math.abs(s);
  if (a < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (a < 120) return `${s.toFixed(2)} s`;
  if (a < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmtTime(ts) { // RFC 3339 -> "2026-11-30 14:55:03Z"
  if (!ts) return "";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtRelative(ts) {
  if (!ts) return "";
  const s = (new Date(ts).getTime() - Date.now()) / 1000;
  return s >= 0 ? `in ${fmtSeconds(s)}` : `${fmtSeconds(-s)} ago`;
}

function badge(text, cls) { return h("span", { class: `badge ${cls || text}` }, text); }

function labels(map) {
  return Object.entries(map || {}).map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`));
}

function scheduleText(s) {
  if (!s) return "";
  const zone = s.timeZone && s.timeZone !== "UTC" ? ` (${s.timeZone})` : "";
  if (s.cron) return `cron ${s.cron}${zone}`;
  if (s.every) return `every ${fmtSeconds(seconds(s.every))}`;
  if (s.at) return `at ${fmtTime(s.at)}`;
  return "";
}

function targetText(t) {
  if (t.http) return `${t.http.method || "POST"} ${t.http.url}`;
  if (t.shell) return (t.shell.argv || []).join(" ");
  if (t.python) return `python ${t.python.name}`;
  return "";
}

function setStatus(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = isError ? "error" : "muted";
}

// ---- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== undefined) q.set(k, v);
  const url = q.toString() ? `${path}?${q}` : path;
  const resp = await fetch(url, { headers: { Accept: "application/json", ...authHeaders() } });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    if (resp.status === 401) askToken();
    throw new ApiError(resp.status, body);
  }
  return body || {};
}

// Server-sent events over fetch (EventSource cannot send an Authorization header).
async function watchEvents(path, params, signal, onEvent) {
  const q = new URLSearchParams(params);
  const resp = await fetch(`${path}?${q}`, {
    headers: { Accept: "text/event-stream", ...authHeaders() }, signal,
  });
  if (!resp.ok) {
    if (resp.status === 401) askToken();
    throw new ApiError(resp.status, await resp.json().catch(() => null));
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

// ---- token dialog -------------------------------------------------------------------------

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
}

function setupToken() {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-button").addEventListener("click", askToken);
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    dialog.close();
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-input").value = "";
    dialog.close();
    route();
  });
}

// ---- pages --------------------------------------------------------------------------------

let cleanups = [];
const seenMembers = new Map(); // node id -> last Member seen (a member gone from etcd is dead)

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try { await fn(); setStatus(`updated ${new Date().toLocaleTimeString()}`); }
    catch (err) { setStatus(err.message, true); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
}

function memberState(m, present) {
  if (!present) return ["dead", "dead: lease expired, no longer a member"];
  if (m.suspectedDead) return ["dead", "dead: confirmed unreachable by the failure detector"];
  if (m.draining) return ["draining", "draining: handing its tasks over"];
  if (m.notClaiming) return ["not-claiming", "not claiming: cut off from etcd"];
  if ((m.backlog || 0) > 0) return ["saturated", "alive, saturated: due tasks wait for room"];
  return ["alive", "alive"];
}

function renderCluster(section, c) {
  document.getElementById("cluster-name").textContent =
    `cluster ${c.cluster || ""} · answered by ${c.nodeId || ""}`;
  const current = new Set();
  for (const m of c.members || []) { current.add(m.nodeId); seenMembers.set(m.nodeId, m); }
  const ids = [...seenMembers.keys()].sort();
  const rows = ids.map((id) => {
    const m = seenMembers.get(id);
    const [state, why] = memberState(m, current.has(id));
    const shown = current.has(id) ? m : {};
    return h("tr", { "data-node": id },
      h("td", {}, h("strong", {}, id)),
      h("td", { class: "state", title: why }, badge(state.replace("-", " "), state)),
      h("td", { class: "mono" }, m.address || ""),
      h("td", {}, labels(m.labels)),
      h("td", { class: "num owned" }, shown.ownedTasks || (current.has(id) ? "0" : "")),
      h("td", { class: "num" }, current.has(id) ? `${m.activeRuns || 0} / ${m.runCapacity || 0}` : ""),
      h("td", { class: "num" }, shown.backlog || (current.has(id) ? "0" : "")),
      h("td", {}, m.version || ""),
      h("td", {}, fmtTime(m.startedAt)));
  });
  const alarms = (c.etcdAlarms || []).map((a) => badge(a.alarm, "dead"));
  section.replaceChildren(
    h("h2", {}, "Cluster"),
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "tasks"), h("dd", { id: "task-count" }, c.taskCount || "0")),
      h("div", {}, h("dt", {}, "members"), h("dd", {}, String(current.size))),
      h("div", {}, h("dt", {}, "unschedulable"), h("dd", {}, c.unschedulableCount || "0")),
      h("div", {}, h("dt", {}, "tzdata"), h("dd", {}, c.tzdataVersion || "none")),
      h("div", {}, h("dt", {}, "etcd"), h("dd", {},
        alarms.length ? alarms : `${((c.etcdDbSizeBytes || 0) / 1048576).toFixed(1)} MiB, no alarm`))),
    h("table", { id: "members" },
      h("thead", {}, h("tr", {}, ["node", "state", "address", "labels", "owned tasks",
        "runs / capacity", "backlog", "version", "started"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
}

function taskFilters() {
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  return { idContains: p.get("q") || "", labelSelector: p.get("labels") || "",
    paused: p.get("paused") || "", pageToken: p.get("page") || "" };
}

function setTaskFilters(f, pageToken) {
  const p = new URLSearchParams();
  if (f.idContains) p.set("q", f.idContains);
  if (f.labelSelector) p.set("labels", f.labelSelector);
  if (f.paused) p.set("paused", f.paused);
  if (pageToken) p.set("page", pageToken);
  location.hash = `#/?${p}`;
}

const pageHistory = []; // tokens of the pages before the current one

function renderTasks(section, resp, f) {
  const statuses = new Map((resp.statuses || []).map((s) => [s.taskId, s]));
  const rows = (resp.tasks || []).map((t) => {
    const s = statuses.get(t.id) || {};
    const last = s.lastRun;
    return h("tr", { "data-task": t.id },
      h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(t.id)}` }, t.id)),
      h("td", {}, scheduleText(t.schedule)),
      h("td", { class: "mono" }, targetText(t)),
      h("td", { class: "next", title: fmtTime(s.nextFireAt) },
        t.paused ? badge("paused") : fmtRelative(s.nextFireAt)),
      h("td", { class: "last" }, last ? badge(last.status) : h("span", { class: "muted" }, "no run yet")),
      h("td", { title: last ? fmtTime(last.scheduledAt) : "" }, last ? fmtRelative(last.scheduledAt) : ""),
      h("td", { class: "num" }, last ? fmtSeconds(seconds(last.lateness)) : ""),
      h("td", {}, last ? last.nodeId || "" : ""),
      h("td", {}, labels(t.labels)));
  });
  const input = (name, key, placeholder) => h("label", {}, name,
    h("input", { name: key, value: f[key], placeholder, size: 24 }));
  const paused = h("select", { name: "paused" },
    [["", "all"], ["PAUSED_FILTER_ACTIVE", "active"], ["PAUSED_FILTER_PAUSED", "paused"]]
      .map(([v, t]) => h("option", { value: v, selected: v === f.paused }, t)));
  const form = h("form", { class: "filters", id: "task-filters", onsubmit: (ev) => {
    ev.preventDefault();
    const data = new FormData(ev.target);
    pageHistory.length = 0;
    setTaskFilters({ idContains: data.get("idContains"), labelSelector: data.get("labelSelector"),
      paused: data.get("paused") }, "");
  } },
  input("task id contains", "idContains", "e.g. backup"),
  input("label selector", "labelSelector", "team=payments,env!=dev"),
  h("label", {}, "state", paused),
  h("button", { type: "submit" }, "Filter"));
  const prev = h("button", { type: "button", disabled: !f.pageToken, onclick: () => {
    setTaskFilters(f, pageHistory.pop() || "");
  } }, "← Previous");
  const next = h("button", { type: "button", disabled: !resp.nextPageToken, onclick: () => {
    pageHistory.push(f.pageToken);
    setTaskFilters(f, resp.nextPageToken);
  } }, "Next →");
  section.replaceChildren(
    h("h2", {}, "Tasks"), form,
    h("table", { id: "tasks" },
      h("thead", {}, h("tr", {}, ["task", "schedule", "target", "next fire", "last run", "slot",
        "lateness", "node", "labels"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "muted" },
        "no task matches")))),
    h("div", { class: "pager" }, prev, next,
      h("span", { class: "muted" }, `${rows.length} tasks on this page`)));
}

function clusterPage(main) {
  const cluster = h("section", { id: "cluster" }, h("h2", {}, "Cluster"), "loading…");
  const tasks = h("section", { id: "task-list" }, h("h2", {}, "Tasks"), "loading…");
  main.replaceChildren(cluster, tasks);
  const f = taskFilters();
  every(REFRESH_MS, async () => {
    const [c, t] = await Promise.all([
      api("/v1/cluster"),
      api("/v1/tasks", { pageSize: PAGE_SIZE, includeStatus: "true", idContains: f.idContains,
        labelSelector: f.labelSelector, paused: f.paused, pageToken: f.pageToken }),
    ]);
    renderCluster(cluster, c);
    // Keep the filter form while the user types in it: refresh the table and pager only.
    const form = tasks.querySelector("form");
    if (form && form.contains(document.activeElement)) {
      const fresh = h("section");
      renderTasks(fresh, t, f);
      tasks.querySelector("table").replaceWith(fresh.querySelector("table"));
      tasks.querySelector(".pager").replaceWith(fresh.querySelector(".pager"));
    } else {
      renderTasks(tasks, t, f);
    }
  });
}

function latenessChart(runs) {
  const points = runs.filter((r) => r.lateness !== undefined && r.scheduledAt)
    .map((r) => ({ t: new Date(r.scheduledAt).getTime(), y: seconds(r.lateness), r }))
    .sort((a, b) => a.t - b.t);
  const W = 1000, H = 220, L = 60, R = 10, T = 10, B = 30;
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, id: "lateness-chart",
    preserveAspectRatio: "xMinYMid meet", role: "img",
    "aria-label": "lateness of each run over time" });
  if (!points.length) {
    svg.append(h("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no run started yet"));
    return svg;
  }
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1000);
  const ymax = Math.max(0.001, ...points.map((p) => p.y)) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (Math.max(0, v) / ymax) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.append(h("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      h("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtSeconds(v)));
  }
  svg.append(h("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }),
    h("text", { x: L, y: H - 8 }, fmtTime(new Date(t0).toISOString())),
    h("text", { x: W - R, y: H - 8, "text-anchor": "end" }, fmtTime(new Date(t1).toISOString())),
    h("polyline", { class: "line", points: points.map((p) => `${x(p.t)},${y(p.y)}`).join(" ") }));
  for (const p of points) {
    const cls = ["SUCCEEDED", "FAILED", "LOST"].includes(p.r.status) ? p.r.status : "other";
    svg.append(h("circle", { cx: x(p.t), cy: y(p.y), r: 3.5, class: cls },
      h("title", {}, `${fmtTime(p.r.scheduledAt)}: ${fmtSeconds(p.y)} late, ${p.r.status}`)));
  }
  return svg;
}

function runRow(r) {
  const started = r.startedAt ? new Date(r.startedAt).getTime() : null;
  const finished = r.finishedAt ? new Date(r.finishedAt).getTime() : null;
  const duration = started && finished ? fmtSeconds((finished - started) / 1000) : "";
  const result = r.httpStatus ? `HTTP ${r.httpStatus}` : r.exitCode !== undefined ? `exit ${r.exitCode}` : "";
  const detail = [];
  if (r.error) detail.push(h("div", { class: "error" }, r.error));
  if (r.skipReason) detail.push(h("div", { class: "muted" }, r.skipReason));
  if (r.outputTail) detail.push(h("details", {}, h("summary", {}, "output tail"),
    h("pre", { class: "tail" }, r.outputTail)));
  return h("tr", { "data-key": r.idempotencyKey || "" },
    h("td", { title: r.idempotencyKey || "" }, fmtTime(r.scheduledAt), r.manual ? " (manual)" : ""),
    h("td", { class: "status" }, badge(r.status || "RUN_STATUS_UNSPECIFIED")),
    h("td", {}, r.nodeId || ""),
    h("td", { class: "num" }, r.attempt || ""),
    h("td", { class: "num" }, fmtSeconds(seconds(r.lateness))),
    h("td", { class: "num" }, duration),
    h("td", {}, result),
    h("td", {}, detail));
}

function runTable(id, runs, withTask) {
  const heads = ["slot", "status", "node", "attempt", "lateness", "duration", "result",
    "error / output"];
  const rows = runs.map((r) => {
    const row = runRow(r);
    if (withTask) row.prepend(h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(r.taskId)}` }, r.taskId)));
    return row;
  });
  return h("table", { id },
    h("thead", {}, h("tr", {}, (withTask ? ["task", ...heads] : heads).map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

function taskPage(main, id) {
  const spec = h("section", { id: "task" }, h("h2", {}, `Task ${id}`), "loading…");
  const chart = h("section", {}, h("h2", {}, "Lateness over time"));
  const runs = h("section", { id: "run-history" }, h("h2", {}, "Run history"));
  main.replaceChildren(spec, chart, runs);
  let older = []; // pages loaded with "Load older", kept across refreshes
  let olderToken = null;
  every(REFRESH_MS, async () => {
    const [t, page] = await Promise.all([
      api(`/v1/tasks/${encodeURIComponent(id)}`),
      api(`/v1/tasks/${encodeURIComponent(id)}/runs`, { pageSize: 100 }),
    ]);
    if (olderToken === null) olderToken = page.nextPageToken || "";
    const all = [...(page.runs || []), ...older];
    spec.replaceChildren(h("h2", {}, `Task ${t.id}`), h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "schedule"), h("dd", {}, scheduleText(t.schedule))),
      h("div", {}, h("dt", {}, "target"), h("dd", { class: "mono" }, targetText(t))),
      h("div", {}, h("dt", {}, "state"), h("dd", {}, t.paused ? badge("paused") : "active",
        t.pauseNote ? ` — ${t.pauseNote}` : "")),
      h("div", {}, h("dt", {}, "overlap"), h("dd", {}, t.overlap || "OVERLAP_ALLOW")),
      h("div", {}, h("dt", {}, "labels"), h("dd", {}, labels(t.labels))),
      h("div", {}, h("dt", {}, "node selector"), h("dd", {}, t.nodeSelector || "any node")),
      h("div", {}, h("dt", {}, "created"), h("dd", {}, fmtTime(t.createdAt)))),
    t.description ? h("p", {}, t.description) : "");
    chart.replaceChildren(h("h2", {}, "Lateness over time"), latenessChart(all),
      h("p", { class: "muted" }, "start of the first attempt minus the fire time (slot + jitter),",
        ` for the ${all.length} newest runs`));
    const more = h("button", { type: "button", disabled: !olderToken, onclick: async () => {
      const p = await api(`/v1/tasks/${encodeURIComponent(id)}/runs`, { pageSize: 100, pageToken: olderToken });
      older = older.concat(p.runs || []);
      olderToken = p.nextPageToken || "";
    } }, "Load older runs");
    runs.replaceChildren(h("h2", {}, "Run history"), runTable("runs", all, false),
      h("div", { class: "pager" }, more));
  });
}

function livePage(main) {
  const p = new URLSearchParams(location.hash.split("?")[1] || "");
  const taskId = p.get("task") || "";
  const tbody = h("tbody");
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const v = new FormData(ev.target).get("task");
    location.hash = v ? `#/live?task=${encodeURIComponent(v)}` : "#/live";
  } }, h("label", {}, "task id (empty: all tasks)", h("input", { name: "task", value: taskId })),
  h("button", { type: "submit" }, "Watch"));
  const state = h("p", { class: "muted", id: "live-state" }, "connecting…");
  main.replaceChildren(h("section", { id: "live" }, h("h2", {}, "Live runs"), form, state,
    h("table", { id: "live-runs" }, runTable("x", [], true).querySelector("thead"), tbody)));
  const rows = new Map(); // idempotency key -> row
  const control = new AbortController();
  cleanups.push(() => control.abort());
  const onRun = (data) => {
    const r = JSON.parse(data);
    const row = runRow(r);
    row.prepend(h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(r.taskId)}` }, r.taskId)));
    row.classList.add("fresh");
    const key = r.idempotencyKey || `${r.taskId}/${r.scheduledAt}`;
    const old = rows.get(key);
    if (old) old.replaceWith(row); else tbody.prepend(row);
    rows.set(key, row);
    while (tbody.children.length > LIVE_ROWS) {
      const last = tbody.lastElementChild;
      rows.delete(last.getAttribute("data-key"));
      last.remove();
    }
  };
  const connect = async () => {
    while (!control.signal.aborted) {
      try {
        state.textContent = "watching: every claim, start and finish appears as it happens";
        await watchEvents("/v1/runs:watch", { taskId, replay: 20 }, control.signal,
          (event, data) => { if (event === "run") onRun(data); });
      } catch (err) {
        if (control.signal.aborted) return;
        state.textContent = `disconnected (${err.message}); retrying`;
      }
      await new Promise((ok) => setTimeout(ok, 2000));
    }
  };
  connect();
}

// ---- router -------------------------------------------------------------------------------

function route() {
  for (const fn of cleanups) fn();
  cleanups = [];
  const main = document.getElementById("main");
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const task = path.match(/^\/tasks\/(.+)$/);
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === (path === "/live" ? "live" : task ? "" : "cluster"));
  }
  if (task) taskPage(main, decodeURIComponent(task[1]));
  else if (path === "/live") livePage(main);
  else clusterPage(main);
}

setupToken();
window.addEventListener("hashchange", route);
route();
