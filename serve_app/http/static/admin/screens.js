// The models, usage, jobs and audit screens.
"use strict";

// -- models: GET /api/v1/models, POST /api/v1/models/load|unload; tok/s from the metrics counters --
const TOKS_WINDOW_MS = 5 * 60 * 1000;
const tokenSamples = [];  // [{at, totals: {model: completion tokens so far}}], the last 5 minutes

async function sampleTokens() {
  let text;
  try { text = await api("GET", "/api/v1/metrics"); } catch { return; }  // a key without the metrics view
  const totals = {};
  for (const match of String(text).matchAll(/^aicore_completion_tokens_total\{[^}]*model="([^"]*)"[^}]*\} (\S+)$/gm)) {
    totals[match[1]] = (totals[match[1]] || 0) + Number(match[2]);
  }
  const now = Date.now();
  tokenSamples.push({ at: now, totals });
  while (tokenSamples.length > 2 && tokenSamples[0].at < now - TOKS_WINDOW_MS) tokenSamples.shift();
}

function tokensPerSecond(model) {
  if (tokenSamples.length < 2) return "";
  const first = tokenSamples[0], last = tokenSamples[tokenSamples.length - 1];
  const seconds = (last.at - first.at) / 1000;
  return seconds > 0 ? (((last.totals[model] || 0) - (first.totals[model] || 0)) / seconds).toFixed(1) : "";
}

async function showModels() {
  const [listing] = await Promise.all([api("GET", "/api/v1/models"), sampleTokens()]);
  fill($("models-table").tBodies[0], listing.models.map((m) => el("tr", { data: { model: m.name } },
    el("td", {}, m.name, m.name === listing.default_model ? el("span", { class: "muted" }, " (default)") : null),
    el("td", { class: "state state-" + m.state }, m.state + (m.disabled ? " (disabled)" : ""),
      m.state_reason ? el("div", { class: "muted" }, m.state_reason) : null),
    el("td", {}, m.replicas ?? ""), el("td", {}, m.node_id ? m.node_id.slice(0, 12) : ""),
    el("td", {}, bytes(m.resident_memory_bytes)), el("td", {}, m.in_flight ?? ""), el("td", {}, m.queued ?? ""),
    el("td", {}, tokensPerSecond(m.name)),
    el("td", {},
      button("Load", () => modelAction("load", { model: m.name, wait: false }), { className: "change load" }),
      button("Unload", () => modelAction("unload", { model: m.name }), { className: "change unload" }),
      button("Disable", () => modelAction("unload", { model: m.name, disable: true }),
        { className: "change disable" })))));
}
screens.models = showModels;

async function modelAction(verb, body) {
  notice(`${verb} ${body.model}...`, true);
  const reply = await attempt(() => api("POST", "/api/v1/models/" + verb, body), null);
  if (reply) notice(`${reply.model}: ${reply.state}`, true);
  await attempt(showModels);
}
$("models-refresh").addEventListener("click", () => attempt(showModels));
setInterval(() => { if (current === "models" && !document.hidden) attempt(showModels); }, 15000);

// -- usage: GET /api/v1/usage (per key and model, bucketed) -----------------------------
const RANGES = { hour: [3600, "minute"], day: [86400, "hour"], month: [30 * 86400, "day"] };

async function showUsage() {
  const [span, step] = RANGES[$("usage-range").value];
  const end = Math.floor(Date.now() / 1000) + 1;  // end is exclusive: this second's requests included
  const usage = await api("GET", "/api/v1/usage" + query({
    start: end - span, end, step, key_id: $("usage-key").value.trim(), model: $("usage-model").value.trim(),
  }));
  const body = $("usage-body");
  const buckets = new Map(), byKey = new Map();
  for (const row of usage.data) {
    const tokens = row.prompt_tokens + row.completion_tokens;
    const bucket = buckets.get(row.time) || { tokens: 0, errors: 0, requests: 0 };
    bucket.tokens += tokens; bucket.requests += row.requests; bucket.errors += row.errors;
    buckets.set(row.time, bucket);
    const key = byKey.get(row.key_id) || { requests: 0, errors: 0, prompt: 0, completion: 0, tokens: 0 };
    key.requests += row.requests; key.errors += row.errors; key.prompt += row.prompt_tokens;
    key.completion += row.completion_tokens; key.tokens += tokens;
    byKey.set(row.key_id, key);
  }
  const top = [...byKey.entries()].sort((a, b) => b[1].tokens - a[1].tokens).slice(0, 10);
  const cell = (name, value) => el("td", { class: name }, num(value));
  body.replaceChildren(
    el("h3", {}, "Tokens per " + step), barChart(buckets, "tokens", usage.start, usage.end),
    el("h3", {}, "Requests per " + step + " (errors in red)"), barChart(buckets, "requests", usage.start, usage.end),
    el("h3", {}, "Top keys"),
    top.length ? el("table", { id: "usage-keys" },
      el("thead", {}, el("tr", {}, ["Key", "Requests", "Errors", "Prompt tokens", "Completion tokens", "Tokens"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, top.map(([id, k]) => el("tr", { data: { key: id } }, el("td", { class: "key" }, id),
        cell("requests", k.requests), cell("errors", k.errors), cell("prompt", k.prompt),
        cell("completion", k.completion), cell("tokens", k.tokens)))))
      : el("p", { class: "muted usage-none" }, "no requests in this range"));
}
screens.usage = showUsage;
$("usage-form").addEventListener("submit", (event) => { event.preventDefault(); attempt(showUsage); });

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Plain SVG bars, one per non-empty bucket, placed by time between start and end.
function barChart(buckets, field, start, end) {
  const width = 720, height = 160, pad = 24;
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const max = Math.max(1, ...[...buckets.values()].map((b) => b[field]));
  const span = Math.max(1, end - start), barWidth = Math.max(2, (width - 2 * pad) / 60);
  for (const [at, bucket] of buckets) {
    const x = pad + ((at - start) / span) * (width - 2 * pad);
    const h = (bucket[field] / max) * (height - 2 * pad);
    chart.append(svg("rect", { x, y: height - pad - h, width: barWidth, height: h }, undefined));
    if (field === "requests" && bucket.errors) {
      const e = (bucket.errors / max) * (height - 2 * pad);
      chart.append(svg("rect", { class: "errors", x, y: height - pad - e, width: barWidth, height: e }));
    }
  }
  chart.append(svg("text", { x: pad, y: 14 }, `max ${num(max)}`), svg("text", { x: pad, y: height - 6 }, time(start)),
    svg("text", { x: width - pad - 110, y: height - 6 }, time(end)));
  return chart;
}

// -- jobs: GET /api/v1/generate/batch/jobs (an admin sees every key's), cancel -------------
let jobsAfter = null;

async function showJobs(more) {
  const page = await api("GET", "/api/v1/generate/batch/jobs" + query({
    limit: 100, owner: $("jobs-owner").value.trim(), status: $("jobs-status").value, after: more ? jobsAfter : "",
  }));
  jobsAfter = page.last_id;
  $("jobs-more").disabled = !page.has_more;
  const rows = page.data.map((job) => el("tr", { data: { job: job.id } },
    el("td", {}, job.id), el("td", {}, job.owner || ""), el("td", { class: "status" }, job.status),
    el("td", {}, job.counts.items), el("td", {}, job.counts.succeeded), el("td", {}, job.counts.failed),
    el("td", {}, num(job.tokens_used)), el("td", {}, time(job.created_at)),
    el("td", {}, ["queued", "running"].includes(job.status) ? button("Cancel", async () => {
      if (await attempt(() => api("POST", `/api/v1/generate/batch/jobs/${job.id}/cancel`), `job ${job.id} cancelled`)) {
        await attempt(() => showJobs(false));
      }
    }, { className: "change cancel" }) : null)));
  const tbody = $("jobs-table").tBodies[0];
  if (more) tbody.append(...rows); else fill(tbody, rows);
}
screens.jobs = () => showJobs(false);
$("jobs-form").addEventListener("submit", (event) => { event.preventDefault(); attempt(() => showJobs(false)); });
$("jobs-more").addEventListener("click", () => attempt(() => showJobs(true)));

// -- audit: GET /api/v1/audit, filterable, older pages by next_before -----------------------
let auditBefore = null;
const unix = (input) => (input.value ? Math.floor(new Date(input.value).getTime() / 1000) : "");

async function showAudit(older) {
  const log = await api("GET", "/api/v1/audit" + query({
    actor_id: $("audit-actor").value.trim(), action: $("audit-action").value.trim(),
    target: $("audit-target").value.trim(), since: unix($("audit-since")), until: unix($("audit-until")),
    limit: 100, before: older ? auditBefore : "",
  }));
  const body = $("audit-body");
  auditBefore = log.next_before;
  $("audit-more").disabled = !log.next_before;
  const rows = log.data.map((entry) => el("tr", { data: { entry: entry.id, action: entry.action, target: entry.target ?? "" } },
    el("td", { class: "time" }, time(entry.time)),
    el("td", { class: "actor" }, entry.actor_name || "", el("div", { class: "muted" }, entry.actor_id || "")),
    el("td", { class: "address" }, entry.client_ip || ""), el("td", { class: "action" }, entry.action),
    el("td", { class: "target" }, entry.target || ""),
    el("td", { class: "outcome outcome-" + (entry.outcome || "") }, `${entry.outcome || ""} ${entry.status ?? ""}`.trim(),
      entry.route ? el("div", { class: "muted" }, entry.route) : null,
      entry.reason ? el("div", { class: "muted" }, entry.reason) : null),
    el("td", { class: "changes" }, Object.entries(entry.changes || {}).map(([field, c]) =>
      el("div", {}, `${field}: ${JSON.stringify(c.before)} → ${JSON.stringify(c.after)}`)))));
  const table = older && body.querySelector("tbody");
  if (table) { table.append(...rows); return; }
  if (!rows.length) { body.replaceChildren(el("p", { class: "muted audit-none" }, "no entries")); return; }
  body.replaceChildren(el("table", { id: "audit-table" }, el("thead", {}, el("tr", {}, ["Time", "Actor", "Address", "Action", "Target",
    "Outcome", "Changes"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
}
screens.audit = () => showAudit(false);
$("audit-form").addEventListener("submit", (event) => { event.preventDefault(); attempt(() => showAudit(false)); });
$("audit-more").addEventListener("click", () => attempt(() => showAudit(true)));
