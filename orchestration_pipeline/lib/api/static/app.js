// The activity page: the newest events, then every new one as it is ingested (EventSource),
// with the execution summary and history beside them. No framework, no build step.
"use strict";

const MAX_ITEMS = 500;
const feed = document.getElementById("feed");
const feedNote = document.getElementById("feed-note");
const connection = document.getElementById("connection");
const filters = document.getElementById("filters");
const tokenForm = document.getElementById("token-form");

let source = null;        // the EventSource
let lastId = "";          // the id of the last message received: where a new stream resumes
let reconnectTimer = null;
let seen = new Set();     // event ids shown (a page and the stream that follows it may overlap)

class Unauthorized extends Error {}

function setConnection(state, text) {
  connection.dataset.state = state;
  connection.textContent = text;
}

function filterParams() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(filters)) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  return params;
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `${response.status} from ${path}`);
  return body;
}

function relative(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function summary(event) {
  const p = event.payload || {};
  return p.message || p.rationale || p.task_description || p.title || p.command || p.name || p.path || "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function render(event, fresh) {
  const item = element("li", `sev-${event.severity_meaning || event.severity || "none"}${fresh ? " fresh" : ""}`);
  item.dataset.eventId = event.event_id;
  item.dataset.occurredAt = event.occurred_at;
  const when = element("span", "when", relative(event.occurred_at));
  when.title = event.occurred_at;
  const p = event.payload || {};
  const agent = p.agent_name || p.agent_type || event.source || "";
  const what = element("span", "what");
  what.append(element("span", "who", [agent, event.task_id].filter(Boolean).join(" · ")), summary(event));
  item.append(when, element("span", "type", event.event_type), what,
              element("span", "status", event.status_meaning || event.status || event.severity || ""));
  return item;
}

function add(event, fresh) {
  if (seen.has(event.event_id)) return;
  seen.add(event.event_id);
  const item = render(event, fresh);
  // newest first by occurred_at: a late-ingested old event goes where it belongs
  let next = feed.firstElementChild;
  while (next && next.dataset.occurredAt > event.occurred_at) next = next.nextElementSibling;
  feed.insertBefore(item, next);
  while (feed.children.length > MAX_ITEMS) {
    seen.delete(feed.lastElementChild.dataset.eventId);
    feed.lastElementChild.remove();
  }
  feedNote.textContent = "";
}

function connect(after) {
  clearTimeout(reconnectTimer);
  if (source) source.close();
  const params = filterParams();
  if (after) params.set("after", after);
  source = new EventSource(`/api/activity/stream?${params}`);
  source.onopen = () => setConnection("live", "live");
  source.onmessage = (message) => {
    lastId = message.lastEventId;
    add(JSON.parse(message.data), true);
  };
  source.onerror = () => {
    setConnection("reconnecting", "reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      // the server answered with an error (e.g. 503 while it starts): open a new stream
      // from the last message received, so nothing is missed
      reconnectTimer = setTimeout(() => connect(lastId || after), 2000);
    }
    // otherwise the browser reconnects by itself, sending Last-Event-ID
  };
}

async function load() {
  if (source) source.close();
  feed.replaceChildren();
  seen = new Set();
  lastId = "";
  try {
    const page = await api(`/api/activity?limit=100&${filterParams()}`);
    page.rows.forEach((event) => add(event, false));
    if (!page.rows.length) feedNote.textContent = "No activity yet for these filters; new events appear here.";
    connect(page.position);
  } catch (error) {
    if (error instanceof Unauthorized) return askForToken();
    feedNote.textContent = error.message;
    setConnection("offline", "offline");
    reconnectTimer = setTimeout(load, 3000);
  }
}

async function loadExecutions() {
  const note = document.getElementById("executions-note");
  try {
    const [cards, history] = await Promise.all([
      api("/api/decisions/summary"),
      api("/api/decisions/executions?limit=20"),
    ]);
    for (const value of document.querySelectorAll("#cards .value")) {
      const raw = cards[value.dataset.key];
      value.textContent = value.dataset.key === "last_execution_at" ? (raw ? relative(raw) : "never") : raw;
    }
    const rows = history.rows.map((run) => {
      const row = element("tr");
      row.append(element("td", "", relative(run.executed_at || run.claimed_at)), element("td", "", run.policy_id),
                 element("td", "", run.mode), element("td", run.state, run.state),
                 element("td", "error-text", run.error_text || ""));
      return row;
    });
    document.querySelector("#executions tbody").replaceChildren(...rows);
    note.textContent = rows.length ? "" : "No executions yet.";
  } catch (error) {
    if (!(error instanceof Unauthorized)) note.textContent = error.message;
  }
}

function askForToken() {
  setConnection("offline", "token needed");
  tokenForm.hidden = false;
}

tokenForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const token = new FormData(tokenForm).get("token");
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `orch_api_token=${encodeURIComponent(token)}; path=/; SameSite=Strict${secure}`;
  tokenForm.hidden = true;
  load();
  loadExecutions();
});

filters.addEventListener("change", load);
filters.addEventListener("submit", (submitted) => { submitted.preventDefault(); load(); });
setInterval(() => {
  for (const when of feed.querySelectorAll(".when")) when.textContent = relative(when.title);
}, 5000);
setInterval(loadExecutions, 30000);
load();
loadExecutions();
