// AI Core chat page: one WebSocket to /api/v1/ws, the conversation kept in localStorage, the key
// only in sessionStorage (gone when the tab closes; never written where other tabs or later
// visitors of this browser profile could read it).
// Nothing is ever parsed as HTML: the user's text and errors are set with textContent, the model's
// answers are rendered by markdown.js, which builds DOM nodes (raw HTML in an answer stays text).
"use strict";

const $ = (id) => document.getElementById(id);
const store = {
  get: (k, d) => { try { return JSON.parse(localStorage.getItem("aicore." + k)) ?? d; } catch { return d; } },
  set: (k, v) => localStorage.setItem("aicore." + k, JSON.stringify(v)),
};
const secret = {
  get: () => sessionStorage.getItem("aicore.key") || "",
  set: (v) => sessionStorage.setItem("aicore.key", v),
};
localStorage.removeItem("aicore.key"); // earlier versions of this page kept the key there
// A public page links here with a web token minted for it (POST /api/v1/keys/web-tokens) in the
// fragment, /#token=aic-...: browsers never send a fragment to a server, and the token moves at
// once to sessionStorage and out of the address bar (and so out of bookmarks and shared links).
const linked = new URLSearchParams(location.hash.slice(1)).get("token");
if (linked) {
  secret.set(linked.trim());
  window.history.replaceState(null, "", location.pathname + location.search);
}

let socket = null;
let ready = null;          // a promise resolved with the socket once authenticated
let history = store.get("history", []);
const pending = new Map(); // request id -> {div, text}
let counter = 0;

function status(text) { $("status").textContent = text; }

// An answer is shown as its Markdown rendered; anything else (the user's text, errors) as text.
function show(div, text) {
  if (div.classList.contains("assistant") && !div.classList.contains("error")) {
    div.replaceChildren(AICoreMarkdown.render(text));
  } else {
    div.textContent = text;
  }
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  show(div, text);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function render() {
  $("log").replaceChildren();
  for (const m of history) bubble(m.role, m.content);
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return scheme + "//" + location.host + "/api/v1/ws";
}

function connect() {
  if (ready) return ready;
  ready = new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl());
    socket = ws;
    status("connecting…");
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", api_key: $("api-key").value.trim() }));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "ready") { fillModels(msg); status("connected"); resolve(ws); }
      else onMessage(msg);
    };
    ws.onclose = () => {
      if (!$("status").textContent.startsWith("error")) status("disconnected");
      ready = null;
      socket = null;
      reject(new Error("connection closed"));
      for (const [id, p] of pending) finish(id, p, "error", p.text || "connection closed");
    };
  });
  ready.catch(() => {});
  return ready;
}

function fillModels(msg) {
  const select = $("model");
  const chosen = store.get("model", "");
  select.replaceChildren();
  for (const name of msg.models) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name + (name === msg.default_model ? " (default)" : "");
    select.appendChild(option);
  }
  select.value = msg.models.includes(chosen) ? chosen : msg.default_model;
}

function onMessage(msg) {
  if (msg.type === "error" && !msg.id) { status("error: " + msg.error.message); return; }
  const p = pending.get(msg.id);
  if (!p) return;
  if (msg.type === "token") {
    p.text += msg.text;
    show(p.div, p.text);  // the whole answer so far, re-rendered: Markdown may change earlier lines
    p.div.dataset.chunks = String(Number(p.div.dataset.chunks || 0) + 1);
    p.div.scrollIntoView({ block: "end" });
  } else if (msg.type === "done") {
    history.push({ role: "assistant", content: msg.response });
    store.set("history", history);
    finish(msg.id, p, "done", msg.response);
    status(`connected · ${msg.model} · ${msg.usage.total_tokens} tokens · ${msg.processing_time}s`);
  } else if (msg.type === "error") {
    finish(msg.id, p, "error", "Error: " + msg.error.message);
  }
}

function finish(id, p, state, text) {
  pending.delete(id);
  if (state === "error") p.div.classList.add("error");
  show(p.div, text);
  p.div.dataset.state = state;
  $("send").disabled = false;
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || pending.size) return;
  let ws;
  try { ws = await connect(); } catch { return; }
  $("message").value = "";
  history.push({ role: "user", content: text });
  store.set("history", history);
  bubble("user", text);
  const id = "m" + (++counter);
  const div = bubble("assistant", "");
  div.dataset.state = "streaming";
  pending.set(id, { div, text: "" });
  $("send").disabled = true;
  const request = { type: "chat", id, messages: history, temperature: Number($("temperature").value),
                    max_tokens: Number($("max-tokens").value) };
  if ($("model").value) request.model = $("model").value;
  ws.send(JSON.stringify(request));
}

$("composer").addEventListener("submit", send);
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("api-key").value = secret.get();
$("api-key").addEventListener("change", () => {
  secret.set($("api-key").value.trim());
  if (socket) socket.close();
});
$("model").addEventListener("change", () => store.set("model", $("model").value));
$("reset").addEventListener("click", () => { history = []; store.set("history", history); render(); });
render();
if ($("api-key").value) connect();
