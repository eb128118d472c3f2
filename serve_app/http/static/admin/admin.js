// AI Core operator's console: a static page that calls the same admin API as keys_cli, with the
// key pasted once (or brought by a console link, /admin#token=...) and kept in sessionStorage only.
// Every value from the server is set with textContent: nothing it returns is parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const secret = {
  get: () => sessionStorage.getItem("aicore.admin_key") || "",
  set: (v) => sessionStorage.setItem("aicore.admin_key", v),
  clear: () => sessionStorage.removeItem("aicore.admin_key"),
};
// A console link (`keys_cli console-link`) carries its short-lived key in the fragment, which a
// browser never sends to a server: move it to sessionStorage and out of the address bar at once.
const linked = new URLSearchParams(location.hash.slice(1)).get("token");
if (linked) {
  secret.set(linked.trim());
  window.history.replaceState(null, "", location.pathname + location.search);
}

class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

// One call to this server's API with the console's key; JSON (or text) back, ApiError on a refusal.
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + secret.get() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                       cache: "no-store", credentials: "omit" });
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* the metrics are text */ }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 403 && method !== "GET") readOnly(true); // a key that may look, not change
    throw new ApiError(response.status, error.message || ("HTTP " + response.status), error.code);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

// An element with text children only: strings become text nodes, never markup.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "on") for (const [event, fn] of Object.entries(v)) node.addEventListener(event, fn);
    else if (k === "class") node.className = v;
    else if (k === "data") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function button(label, onClick, extra) {
  return el("button", { type: "button", class: "change", on: { click: onClick }, ...(extra || {}) }, label);
}

function notice(text, ok) {
  const box = $("notice");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

// Run an action, report its refusal as the API worded it (message, status and error code).
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) notice(done, true);
    return result;
  } catch (error) {
    notice(error instanceof ApiError ? `${error.message} (${error.status}${error.code ? " " + error.code : ""})`
      : String(error));
    return undefined;
  }
}

function readOnly(on) { document.body.classList.toggle("read-only", on); }

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

const time = (unix) => (unix ? new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
const bytes = (n) => (n === null || n === undefined ? "" : (n / 1048576).toFixed(0) + " MiB");
const num = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en"));

// -- screens ----------------------------------------------------------------------------
const screens = {};  // name -> function showing it (the other scripts add theirs)
let current = null;

function show(name) {
  current = name;
  for (const section of document.querySelectorAll(".screen")) section.hidden = section.id !== "screen-" + name;
  for (const tab of document.querySelectorAll("#tabs button")) tab.classList.toggle("active", tab.dataset.screen === name);
  notice("");
  return attempt(() => screens[name]());
}

for (const tab of document.querySelectorAll("#tabs button")) tab.addEventListener("click", () => show(tab.dataset.screen));

// -- login ------------------------------------------------------------------------------
async function login() {
  if (!secret.get()) return;
  $("who").textContent = "checking the key...";
  let me;
  try {
    me = await api("GET", "/api/v1/keys/self");  // any valid key: its own scopes, before anything is tried
  } catch (error) {
    $("who").textContent = "refused: " + error.message;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) secret.clear();
    return;
  }
  const scopes = me.scopes || [];
  if (!scopes.includes("admin") && !scopes.includes("admin_read")) {
    $("who").textContent = "refused: this key has neither the admin nor the admin_read scope";
    secret.clear();
    return;
  }
  // A read-only key never sees a change button; the API refuses its changes all the same.
  readOnly(!scopes.includes("admin"));
  $("who").textContent = `logged in as ${me.name || me.id}` + (scopes.includes("admin") ? "" : " (read only)");
  $("login").hidden = true;
  $("logout").hidden = false;
  $("tabs").hidden = false;
  await show(current || "models");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  secret.set($("admin-key").value.trim());
  $("admin-key").value = "";
  login();
});
$("logout").addEventListener("click", () => {
  secret.clear();
  location.reload();
});
window.addEventListener("DOMContentLoaded", login);
