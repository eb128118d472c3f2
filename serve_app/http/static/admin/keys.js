// The keys screen: a paged, searchable list (GET /api/v1/keys?limit=&after=&search=), create and
// edit with every field, enable/disable, rotate, revoke, usage with quota bars, web tokens.
"use strict";

const PAGE = 50;
const keyPages = { afters: [""], index: 0, hasMore: false, lastId: null };
let editing = null;  // the key being edited, or null: the form creates

async function showKeys() {
  const page = await api("GET", "/api/v1/keys" + query({
    limit: PAGE, after: keyPages.afters[keyPages.index], search: $("keys-query").value.trim(),
  }));
  keyPages.hasMore = page.has_more;
  keyPages.lastId = page.last_id;
  $("keys-prev").disabled = keyPages.index === 0;
  $("keys-next").disabled = !page.has_more;
  $("keys-page").textContent = `page ${keyPages.index + 1}` + (page.data.length ? "" : " (no keys)");
  const usages = await Promise.all(page.data.map((k) => api("GET", `/api/v1/keys/${k.id}/usage`).catch(() => null)));
  fill($("keys-table").tBodies[0], page.data.map((key, i) => keyRow(key, usages[i])));
}
screens.keys = showKeys;

function keyState(key) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && key.expires_at * 1000 < Date.now()) return "expired";
  return key.enabled ? "enabled" : "disabled";
}

function keyRow(key, usage) {
  const live = !key.revoked_at;
  const limits = `${key.rate_limit_per_minute ?? "default"} / ${key.tokens_per_minute ?? "default"}`;
  return el("tr", { data: { id: key.id } },
    el("td", { class: "name" }, key.name, key.web_token ? el("span", { class: "muted" }, " (web token)") : null),
    el("td", {}, key.owner || ""), el("td", { class: "id" }, key.id), el("td", {}, key.key_prefix),
    el("td", {}, key.scopes.join(", ")), el("td", {}, key.models ? key.models.join(", ") : "all"),
    el("td", {}, limits), el("td", { class: "state" }, keyState(key)),
    el("td", { class: "requests" }, usage ? num(usage.requests) : ""),
    el("td", { class: "tokens" }, usage ? num(usage.total_tokens) : ""),
    el("td", {},
      el("button", { type: "button", class: "usage", on: { click: () => attempt(() => showKeyUsage(key)) } }, "Usage"),
      live ? button("Edit", () => editKey(key), { className: "change edit" }) : null,
      live ? button(key.enabled ? "Disable" : "Enable", () => keyAction(key, "PATCH", "", { enabled: !key.enabled },
        key.enabled ? "disabled" : "enabled"), { className: "change toggle" }) : null,
      live ? button("Rotate", () => rotateKey(key), { className: "change rotate" }) : null,
      live ? button("Revoke", () => keyAction(key, "DELETE", "", undefined, "revoked"),
        { className: "change revoke" }) : null));
}

async function keyAction(key, method, suffix, body, done) {
  if (method === "DELETE" && !confirmAction(`Revoke key "${key.name}" (${key.id})? It stops working at once.`)) return;
  const ok = await attempt(() => api(method, `/api/v1/keys/${key.id}${suffix}`, body), `key ${key.id} ${done}`);
  if (ok) await attempt(showKeys);
}

// window.confirm, unless a test or script set window.__aicoreConfirm to answer for it.
function confirmAction(text) { return window.__aicoreConfirm !== undefined ? window.__aicoreConfirm : confirm(text); }

async function rotateKey(key) {
  if (!confirmAction(`Rotate key "${key.name}"? The old secret stops working at once.`)) return;
  const created = await attempt(() => api("POST", `/api/v1/keys/${key.id}/rotate`), `key ${key.id} rotated`);
  if (created) { showSecret(created.key); await attempt(showKeys); }
}

// A new secret, shown once: it is in no list and no later answer.
function showSecret(value) {
  $("new-key-value").textContent = value;
  $("new-key").hidden = false;
}
$("new-key-copy").addEventListener("click", () => navigator.clipboard.writeText($("new-key-value").textContent)
  .then(() => notice("copied", true), () => notice("copy refused by the browser: select the key and copy it")));
$("new-key-close").addEventListener("click", () => {
  $("new-key-value").textContent = "";
  $("new-key").hidden = true;
});

async function showKeyUsage(key) {
  const usage = await api("GET", `/api/v1/keys/${key.id}/usage`);
  const box = $("key-usage");
  const lines = [el("h3", {}, `Usage of ${key.name} (${key.id})`),
    el("p", {}, `${num(usage.requests)} requests, ${num(usage.errors)} errors, ${num(usage.prompt_tokens)} prompt + `
      + `${num(usage.completion_tokens)} completion tokens; last used ${time(usage.last_used_at) || "never"}`)];
  for (const quota of usage.quotas) lines.push(quotaBar(quota));
  if (!usage.quotas.length) lines.push(el("p", { class: "muted quotas-none" }, "no quotas"));
  box.replaceChildren(...lines);
  box.dataset.id = key.id;
  box.hidden = false;
}

// One quota (GET /api/v1/keys/{id}/usage: name, limit, used, resets_at) as a bar: full (and red)
// once used reaches the limit, when the API refuses the key's next request (quota_exceeded).
function quotaBar(quota) {
  const share = quota.limit > 0 ? Math.min(1, quota.used / quota.limit) : 0;
  const full = quota.limit > 0 && quota.used >= quota.limit;
  const fill = el("div", { class: "fill" + (full ? " full" : share > 0.9 ? " high" : "") });
  fill.style.width = (share * 100).toFixed(1) + "%";  // CSSOM, not a style attribute: allowed by the CSP
  const track = el("div", { class: "track" }, fill);
  track.setAttribute("role", "progressbar");
  track.setAttribute("aria-valuemin", "0");
  track.setAttribute("aria-valuemax", String(quota.limit));
  track.setAttribute("aria-valuenow", String(Math.min(quota.used, quota.limit)));
  return el("div", { class: "quota" + (full ? " full" : ""), data: { quota: quota.name } },
    el("span", { class: "quota-text" }, `${quota.name}: ${num(quota.used)} of ${num(quota.limit)} used`
      + (full ? " (reached: requests refused)" : "") + (quota.resets_at ? `, resets ${time(quota.resets_at)}` : "")),
    track);
}

// -- the create / edit form -------------------------------------------------------------
const LIST_FIELDS = ["models", "ip_allowlist"];
const NUMBER_FIELDS = ["rate_limit_per_minute", "tokens_per_minute", "expires_in_s", "expires_at",
  "daily_token_quota", "monthly_token_quota", "daily_request_quota", "monthly_request_quota"];
const TEXT_FIELDS = ["name", "owner", "default_model", "priority"];

function formValues(form) {
  const values = {};
  for (const name of TEXT_FIELDS) values[name] = form.elements[name].value.trim() || null;
  for (const name of LIST_FIELDS) {
    const text = form.elements[name].value.trim();
    values[name] = text ? text.split(",").map((s) => s.trim()).filter(Boolean) : null;
  }
  for (const name of NUMBER_FIELDS) {
    const text = form.elements[name].value.trim();
    values[name] = text === "" ? null : Number(text);
  }
  values.scopes = [...form.querySelectorAll("input[name=scope]:checked")].map((box) => box.value);
  values.enabled = form.elements.enabled.checked;
  return values;
}

// What to send: on create, the fields given; on edit, every field (null clears it: no quota).
function keyBody(values, key) {
  const body = {};
  for (const [name, value] of Object.entries(values)) {
    if (name === "expires_in_s" && key) continue;
    if (key) {
      if (name === "ip_allowlist" && value === null) body[name] = [];
      else body[name] = value;
    } else if (value !== null) body[name] = value;
  }
  return body;
}

function editKey(key) {
  editing = key;
  const form = $("key-form");
  form.reset();
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) if (name in form.elements) form.elements[name].value = key[name] ?? "";
  for (const name of LIST_FIELDS) form.elements[name].value = (key[name] || []).join(", ");
  for (const box of form.querySelectorAll("input[name=scope]")) box.checked = key.scopes.includes(box.value);
  form.elements.enabled.checked = key.enabled;
  $("key-form-title").textContent = `Edit ${key.name} (${key.id})`;
  $("key-submit").textContent = "Save";
  $("key-form-box").open = true;
}

function resetKeyForm() {
  editing = null;
  $("key-form").reset();
  $("key-form-title").textContent = "Create a key";
  $("key-submit").textContent = "Create";
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = editing;
  const body = keyBody(formValues(event.target), key);
  const result = await attempt(() => (key ? api("PATCH", `/api/v1/keys/${key.id}`, body) : api("POST", "/api/v1/keys", body)),
    key ? `key ${key.id} saved` : "key created");
  if (!result) return;
  if (result.key) showSecret(result.key);
  resetKeyForm();
  $("key-form-box").open = false;
  await attempt(showKeys);
});
$("key-cancel").addEventListener("click", () => { resetKeyForm(); $("key-form-box").open = false; });

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { name: form.elements.name.value.trim() || "web-token",
    models: form.elements.models.value.split(",").map((s) => s.trim()).filter(Boolean) };
  for (const name of ["rate_limit_per_minute", "tokens_per_minute", "expires_in_s"]) {
    if (form.elements[name].value !== "") body[name] = Number(form.elements[name].value);
  }
  const created = await attempt(() => api("POST", "/api/v1/keys/web-tokens", body), "web token minted");
  if (created) { showSecret(created.key); await attempt(showKeys); }
});

$("keys-search").addEventListener("submit", (event) => {
  event.preventDefault();
  keyPages.afters = [""];
  keyPages.index = 0;
  attempt(showKeys);
});
$("keys-next").addEventListener("click", () => {
  keyPages.afters[keyPages.index + 1] = keyPages.lastId;
  keyPages.index += 1;
  attempt(showKeys);
});
$("keys-prev").addEventListener("click", () => {
  keyPages.index = Math.max(0, keyPages.index - 1);
  attempt(showKeys);
});
