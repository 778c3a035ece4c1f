// broadcast-hub console: plain browser JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const LOG_LIMIT = 1000; // entries kept: a busy topic must not grow the page without bound
const WINDOW = 300; // stats samples kept, one a second: the charts show up to the last five minutes
const REOPEN_MS = 500; // a stream that ended or failed is reopened after this, doubling while it fails
const REOPEN_MAX_MS = 10000;
const TOPICS_MS = 2000; // the topics panel's refresh while the page is visible
const TOPICS_LIMIT = 50; // selectors listed, and members of a topic: the ones with the most streams
const PREVIEW_BYTES = 32; // of a binary event, shown in hex: only these are decoded, whatever its size

const $ = (selector) => document.querySelector(selector);
const logList = $("#log");
const subscriptionList = $("#subscriptions");
const state = { paused: false, held: [], count: 0, nextSub: 1 };

function words(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

function clock(date) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

// A binary event's data as the hub sends it (base64): its size, and its first bytes. Only the start is
// decoded, so that a large event costs no more to show than a small one.
function binaryPreview(base64) {
  const padding = base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0;
  const size = Math.max(0, Math.floor(base64.length / 4) * 3 - padding);
  let head;
  try {
    // Whole 4-character groups: PREVIEW_BYTES rounded up to 3-byte groups, then cut back.
    const text = atob(base64.slice(0, Math.ceil(PREVIEW_BYTES / 3) * 4));
    head = Uint8Array.from(text.slice(0, PREVIEW_BYTES), (c) => c.charCodeAt(0));
  } catch {
    return { size, hex: "not valid base64", ascii: "", more: false };
  }
  const hex = Array.from(head, (b) => b.toString(16).padStart(2, "0")).join(" ");
  // Printable ASCII as is, anything else as a dot, as hexdump -C shows it.
  const ascii = Array.from(head, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
  return { size, hex, ascii, more: size > head.length };
}

function plural(n, word) {
  return `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;
}

// The data cell of a binary event: its size, then its first bytes in hex and as text.
function binaryCell(el, { size, hex, ascii, more }) {
  const parts = [
    ["span", "size", `binary \u00b7 ${plural(size, "byte")}`],
    ["span", "hex", size ? hex + (more ? " \u2026" : "") : ""],
    ["span", "ascii", ascii + (more ? "\u2026" : "")],
  ];
  for (const [tag, cls, text] of parts) {
    if (!text) continue;
    const part = document.createElement(tag);
    part.className = cls;
    part.textContent = text;
    el.append(el.childElementCount ? "\n" : "", part);
  }
}

// One log line. `kind` is "event" for delivered events, else what happened to the stream. `binary`: a
// binary event's preview (binaryPreview), shown in place of `data`.
function entry(kind, type, { id = "", data = "", sub = "", topic = "", binary = null } = {}) {
  const li = document.createElement("li");
  li.dataset.kind = kind;
  li.dataset.event = type;
  li.dataset.id = id;
  li.dataset.sub = sub;
  li.dataset.topic = topic;
  if (binary) {
    li.dataset.encoding = "base64";
    li.dataset.size = String(binary.size);
  }
  const cells = [
    ["span", "time", clock(new Date())],
    ["span", "type", type],
    ["span", "topic", topic],
    ["span", "id", id],
    ["pre", "data", data],
  ];
  for (const [tag, cls, text] of cells) {
    const el = document.createElement(tag);
    el.className = cls;
    if (cls === "data" && binary) binaryCell(el, binary);
    else el.textContent = text;
    li.append(el);
  }
  if (state.paused && kind === "event") {
    state.held.push(li);
    updateCount();
    return;
  }
  show(li);
}

function show(li) {
  const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 40;
  logList.append(li);
  state.count += 1;
  while (logList.childElementCount > LOG_LIMIT) logList.firstElementChild.remove();
  if (atBottom) logList.scrollTop = logList.scrollHeight;
  updateCount();
}

function updateCount() {
  const held = state.held.length ? ` (+${state.held.length} held)` : "";
  $("#log-count").textContent = `${state.count}${held}`;
}

function token() {
  return $("#token-form").elements.token.value.trim();
}

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

// A refusal as the hub words it ("403 control_required: …"), or the status when it is not the hub's JSON
// (a proxy's page).
async function refusal(response) {
  try {
    const answer = await response.json();
    return `${response.status} ${answer.error.code}: ${answer.error.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// --- subscriptions -------------------------------------------------------------------------------
// A stream is read as NDJSON with fetch rather than EventSource: every event comes whatever its type
// (EventSource hands named events only to listeners of their name), with its topic, and a refusal comes
// with the hub's JSON error to show, where EventSource reports a bare failure and retries forever.

function subscribe(topics, lastEventId, name) {
  const sub = { n: state.nextSub++, topics, name, lastId: lastEventId || "", failures: 0, conn: "" };
  sub.label = `#${sub.n} ${topics.join(" ")}`;
  const li = document.createElement("li");
  li.dataset.sub = String(sub.n);
  const code = document.createElement("code");
  code.textContent = sub.label;
  const status = document.createElement("span");
  status.className = "status";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  close.addEventListener("click", () => {
    sub.closed = true;
    sub.controller?.abort();
    clearTimeout(sub.timer);
    li.remove();
    entry("closed", "closed", { sub: sub.label, data: "closed from the console" });
    pollTopics();
  });
  li.append(code, status, close);
  subscriptionList.append(li);
  sub.status = status;
  open(sub);
  return sub;
}

async function open(sub) {
  const params = new URLSearchParams();
  for (const topic of sub.topics) params.append("topic", topic);
  params.set("format", "ndjson");
  if (sub.name) params.set("name", sub.name);
  if (token()) params.set("token", token());
  const headers = { Accept: "application/x-ndjson" };
  if (sub.lastId) headers["Last-Event-ID"] = sub.lastId;
  sub.controller = new AbortController();
  setStatus(sub.status, "connecting", sub.opened ? "reconnecting" : "connecting");
  let response;
  try {
    response = await fetch(`/events?${params}`, { headers, cache: "no-store", signal: sub.controller.signal });
  } catch (error) {
    if (!sub.closed) retry(sub, `the hub cannot be reached (${error.message})`);
    return;
  }
  if (!response.ok) {
    const reason = await refusal(response);
    if (response.status >= 500 || response.status === 429) {
      retry(sub, reason);
    } else {
      // Refused for what it asks (a selector, a token): asking again would be refused again.
      setStatus(sub.status, "error", "refused");
      entry("error", "refused", { sub: sub.label, data: reason });
    }
    return;
  }
  // Presence lists the stream under this id: the topics panel marks it as the console's own.
  sub.conn = response.headers.get("Hub-Connection-Id") || "";
  setStatus(sub.status, "open", "open");
  entry("open", sub.opened ? "reconnected" : "open", { sub: sub.label, id: sub.lastId, data: sub.label });
  sub.opened = true;
  sub.failures = 0;
  pollTopics();
  try {
    await readLines(response, (line) => onLine(sub, line));
  } catch {
    // the connection broke: resumed below, as after the stream's end
  }
  if (!sub.closed) retry(sub, "the stream ended; resuming after the last event");
}

async function readLines(response, onLine) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.trim()) onLine(line); // an empty line is a heartbeat
    }
  }
}

function onLine(sub, line) {
  let doc;
  try {
    doc = JSON.parse(line);
  } catch {
    return;
  }
  if (doc.event === "heartbeat") return;
  if (doc.id) sub.lastId = doc.id;
  const type = doc.event || "message";
  const kind = type === "reset" ? "reset" : type === "auth-expiring" ? "notice" : "event";
  const shown = { id: doc.id || "", sub: sub.label, topic: doc.topic || "" };
  if (doc.encoding === "base64" && typeof doc.data === "string") {
    // Bytes (published as application/octet-stream): their size and first bytes, not their base64.
    entry(kind, type, { ...shown, binary: binaryPreview(doc.data) });
    return;
  }
  // Strings exactly as published; any other JSON value laid out.
  const data = typeof doc.data === "string" ? doc.data : JSON.stringify(doc.data, null, 2);
  entry(kind, type, { ...shown, data });
}

function retry(sub, why) {
  sub.failures += 1;
  const delay = Math.min(REOPEN_MS * 2 ** (sub.failures - 1), REOPEN_MAX_MS);
  setStatus(sub.status, "connecting", "reconnecting");
  entry("error", "reconnecting", { sub: sub.label, id: sub.lastId, data: `${why}; again in ${delay / 1000} s` });
  sub.timer = setTimeout(() => open(sub), delay);
}

function setStatus(el, stateName, text) {
  el.dataset.state = stateName;
  el.textContent = text;
}

const subs = [];

$("#subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target.elements;
  const topics = words(form.topics.value);
  if (!topics.length) return;
  subs.push(subscribe(topics, form.lastEventId.value.trim(), form.presenceName.value.trim()));
  const publishTopic = $("#publish-form").elements.topic;
  if (!publishTopic.value && !topics[0].includes("*")) publishTopic.value = topics[0];
});

// --- publish -------------------------------------------------------------------------------------

// A file chosen is published as it is, one binary event (application/octet-stream, the topic and event in
// the query), in place of the data typed.
function publishRequest(form) {
  const topic = form.topic.value.trim();
  const name = form.event.value.trim();
  const file = form.file.files[0];
  const headers = authHeaders();
  if (file) {
    const params = new URLSearchParams({ topic });
    if (name) params.set("event", name);
    headers["Content-Type"] = "application/octet-stream";
    return { url: `/publish?${params}`, init: { method: "POST", headers, body: file } };
  }
  const body = { topic };
  if (name) body.event = name;
  const text = form.data.value;
  try {
    body.data = JSON.parse(text);
  } catch {
    body.data = text; // plain text is a valid event too
  }
  headers["Content-Type"] = "application/json";
  return { url: "/publish", init: { method: "POST", headers, body: JSON.stringify(body) } };
}

function onFileChosen() {
  const form = $("#publish-form").elements;
  const file = form.file.files[0];
  form.data.disabled = Boolean(file);
  $("#file-clear").hidden = !file;
}

$("#publish-form").elements.file.addEventListener("change", onFileChosen);
$("#file-clear").addEventListener("click", () => {
  $("#publish-form").elements.file.value = "";
  onFileChosen();
});

$("#publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = $("#publish-result");
  const { url, init } = publishRequest(event.target.elements);
  result.className = "";
  result.textContent = "publishing…";
  try {
    const response = await fetch(url, init);
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error?.message || answer.message || response.statusText);
    result.textContent = `published ${answer.id}`;
  } catch (error) {
    result.className = "error";
    result.textContent = `not published: ${error.message}`;
  }
});

// --- pause and clear -----------------------------------------------------------------------------

$("#pause").addEventListener("click", (event) => {
  state.paused = !state.paused;
  event.target.setAttribute("aria-pressed", String(state.paused));
  event.target.textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) {
    for (const li of state.held.splice(0)) show(li);
  }
});

$("#clear").addEventListener("click", () => {
  logList.replaceChildren();
  state.held = [];
  state.count = 0;
  updateCount();
});

// --- topics and presence -------------------------------------------------------------------------
// Every selector with its streams, from /subscriptions (every hub process; with auth on it needs a token
// with hub.control), and who holds the streams of the topic picked. Polled only while the page is
// visible: a tab in the background costs the hub nothing. A refusal is shown, in place of the list.

const topicList = $("#topics");
const memberList = $("#members");
const topics = { timer: null, debounce: null, round: 0, selected: null };

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  } catch (error) {
    throw new Error(`the hub cannot be reached (${error.message})`);
  }
  if (!response.ok) throw Object.assign(new Error(await refusal(response)), { status: response.status });
  return response.json();
}

// Each call starts a round and ends the one under way: an answer of an older round is dropped, so that a
// slow answer cannot overwrite a newer one, nor two rounds keep polling side by side.
async function pollTopics() {
  clearTimeout(topics.timer);
  const round = ++topics.round;
  if (document.visibilityState !== "visible") return; // polled again once visible
  await Promise.all([refreshTopics(round), refreshPresence(round)]);
  if (round === topics.round) topics.timer = setTimeout(pollTopics, TOPICS_MS);
}

async function refreshTopics(round) {
  const status = $("#topics-status");
  let listing;
  try {
    listing = await getJSON(`/subscriptions?limit=${TOPICS_LIMIT}`);
  } catch (error) {
    if (round !== topics.round) return;
    $("#streams-now").textContent = "\u2013";
    // In place of the list, in the hub's words: what token it needs, or that it is unreachable.
    const row = document.createElement("li");
    row.className = "error";
    row.textContent = error.message;
    topicList.replaceChildren(row);
    setStatus(status, "error", error.status >= 400 && error.status < 500 ? "refused" : "retrying");
    return;
  }
  if (round !== topics.round) return;
  $("#streams-now").textContent = String(listing.streams);
  setStatus(status, "open", listing.truncated ? `live: the ${TOPICS_LIMIT} selectors with the most` : "live");
  renderTopics(listing.selectors);
}

// Rows are kept by selector and only moved when the order changes: a focused button keeps its focus.
function renderTopics(selectors) {
  const existing = new Map();
  for (const li of topicList.children) if (li.dataset.selector !== undefined) existing.set(li.dataset.selector, li);
  const rows = selectors.map(({ selector, subscribers }) => {
    const li = existing.get(selector) || topicRow(selector);
    li.dataset.subscribers = String(subscribers);
    li.querySelector(".count").textContent = String(subscribers);
    li.querySelector("button")?.setAttribute("aria-pressed", String(selector === topics.selected));
    return li;
  });
  if (!rows.length) rows.push(hintRow("no streams open"));
  const current = [...topicList.children];
  if (rows.length !== current.length || rows.some((li, i) => current[i] !== li)) topicList.replaceChildren(...rows);
}

function topicRow(selector) {
  const li = document.createElement("li");
  li.dataset.selector = selector;
  const code = document.createElement("code");
  code.textContent = selector;
  let label = code;
  if (selector.includes("*")) {
    // A pattern has no presence of its own: its streams show under each topic it matches.
    code.title = "a pattern: pick one of its topics to see its streams";
  } else {
    label = document.createElement("button");
    label.type = "button";
    label.className = "selector";
    label.title = "who is subscribed";
    label.append(code);
    label.addEventListener("click", () => pickTopic(selector));
  }
  const count = document.createElement("b");
  count.className = "count";
  li.append(label, count);
  return li;
}

function hintRow(text) {
  const li = document.createElement("li");
  li.className = "hint";
  li.textContent = text;
  return li;
}

// Picking the topic shown again hides its presence.
function pickTopic(topic) {
  topics.selected = topics.selected === topic ? null : topic;
  for (const button of topicList.querySelectorAll("button.selector")) {
    button.setAttribute("aria-pressed", String(button.closest("li").dataset.selector === topics.selected));
  }
  memberList.replaceChildren();
  $("#presence-count").textContent = "\u2013";
  $("#presence-status").textContent = "";
  pollTopics();
}

function topicPath(topic) {
  return topic.split("/").map(encodeURIComponent).join("/");
}

async function refreshPresence(round) {
  const topic = topics.selected;
  $("#presence").hidden = topic === null;
  if (topic === null) return;
  $("#presence-topic").textContent = topic;
  const status = $("#presence-status");
  let answer;
  try {
    answer = await getJSON(`/topics/${topicPath(topic)}/presence?limit=${TOPICS_LIMIT}`);
  } catch (error) {
    if (round !== topics.round || topic !== topics.selected) return;
    memberList.replaceChildren();
    $("#presence-count").textContent = "\u2013";
    status.className = "error";
    status.textContent = error.message;
    return;
  }
  if (round !== topics.round || topic !== topics.selected) return;
  $("#presence-count").textContent = String(answer.subscribers);
  // The console's own streams, by the Hub-Connection-Id each was answered with.
  const own = new Map(subs.filter((sub) => !sub.closed && sub.conn).map((sub) => [sub.conn, sub]));
  memberList.replaceChildren(...answer.members.map((member) => memberRow(member, own.get(member.conn))));
  status.className = "hint";
  if (!answer.members.length) status.textContent = "nobody is subscribed now";
  else if (answer.truncated) status.textContent = `the first ${answer.members.length} of ${answer.subscribers}`;
  else status.textContent = "";
}

function memberRow(member, sub) {
  const li = document.createElement("li");
  li.dataset.conn = member.conn;
  li.dataset.name = member.name ?? "";
  li.dataset.sub = member.sub ?? "";
  li.dataset.selector = member.selector;
  li.dataset.since = String(member.since);
  const who = document.createElement("span");
  who.className = "who";
  // A name or a sub is a value; a stream that has neither gets a hint, not a made-up name.
  const shown = member.name ?? member.sub;
  const value = document.createElement(shown === null ? "i" : "span");
  value.className = shown === null ? "hint" : "value";
  value.textContent = shown ?? "anonymous";
  who.append(value);
  if (member.name !== null && member.sub !== null) who.append(` (${member.sub})`);
  if (sub) {
    li.dataset.you = "true";
    const you = document.createElement("mark");
    you.className = "you";
    you.textContent = "you";
    you.title = `this console's stream ${sub.label}`;
    who.append(you);
  }
  const since = new Date(member.since);
  const cells = [
    ["code", "conn", member.conn, "Hub-Connection-Id"],
    ["code", "selector", member.selector, "the selector it receives the topic through"],
    ["time", "since", sinceText(since), `subscribed ${since.toString()}`],
  ];
  li.append(who);
  for (const [tag, cls, text, title] of cells) {
    const el = document.createElement(tag);
    el.className = cls;
    el.textContent = text;
    el.title = title;
    li.append(el);
  }
  li.querySelector("time").dateTime = since.toISOString();
  return li;
}

// A time of today as hh:mm:ss; an older one with its date.
function sinceText(date) {
  const time = clock(date).slice(0, 8);
  if (date.toDateString() === new Date().toDateString()) return time;
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

document.addEventListener("visibilitychange", pollTopics);
// A new token may list what the last one could not: asked again once typing pauses.
$("#token-form").elements.token.addEventListener("input", () => {
  clearTimeout(topics.debounce);
  topics.debounce = setTimeout(pollTopics, 300);
});

// --- stats charts --------------------------------------------------------------------------------

const samples = []; // {t, connections, published, delivered}: rates per second between two stats
let previous = null;

function onStats(event) {
  const stats = JSON.parse(event.data);
  const now = Date.now();
  const sample = { t: now, connections: stats.connections, published: null, delivered: null };
  // A restarted hub (another instance) starts its counters at zero: no rate across it.
  if (previous && previous.instance === stats.instance && now > previous.t) {
    const seconds = (now - previous.t) / 1000;
    sample.published = Math.max(0, stats.events_published - previous.events_published) / seconds;
    sample.delivered = Math.max(0, stats.deliveries - previous.deliveries) / seconds;
  }
  previous = { ...stats, t: now };
  samples.push(sample);
  if (samples.length > WINDOW) samples.shift();
  $("#connections-now").textContent = String(stats.connections);
  $("#rate-now").textContent = sample.published === null ? "–" : sample.published.toFixed(1);
  draw();
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function chart(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const values = series.flatMap((s) => samples.map(s.value).filter((v) => v !== null));
  const top = niceMax(Math.max(1, ...values));
  const left = 36;
  const plotW = width - left - 4;
  const plotH = height - 18;
  ctx.font = `11px ${getComputedStyle(document.body).fontFamily}`;
  ctx.fillStyle = cssVar("--muted");
  ctx.strokeStyle = cssVar("--line");
  ctx.lineWidth = 1;
  for (const fraction of [0, 0.5, 1]) {
    const y = 4 + plotH * (1 - fraction);
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y) + 0.5);
    ctx.lineTo(width - 4, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(formatNumber(top * fraction), 2, y + 4);
  }
  // The span grows with the data, from one minute to WINDOW seconds: a fresh page shows a shape at once.
  const span = Math.min(WINDOW, Math.max(60, samples.length));
  ctx.fillText(span >= 120 ? `−${Math.round(span / 60)} min` : `−${span} s`, left, height - 2);
  ctx.fillText("now", width - 26, height - 2);
  const x = (i) => left + plotW * ((span - samples.length + i) / (span - 1));
  const y = (v) => 4 + plotH * (1 - v / top);
  for (const s of series) {
    ctx.strokeStyle = cssVar(s.color);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = s.width || 1.75;
    if (samples.length < 20) {
      // Few points: mark each, a lone one would otherwise not show.
      samples.forEach((sample, i) => {
        const v = s.value(sample);
        if (v !== null) ctx.fillRect(x(i) - 2, y(v) - 2, 4, 4);
      });
    }
    ctx.beginPath();
    let drawing = false;
    samples.forEach((sample, i) => {
      const v = s.value(sample);
      if (v === null) {
        drawing = false;
        return;
      }
      if (drawing) ctx.lineTo(x(i), y(v));
      else ctx.moveTo(x(i), y(v));
      drawing = true;
    });
    ctx.stroke();
  }
}

function niceMax(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return value;
}

function formatNumber(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return String(+n.toFixed(1));
}

function draw() {
  chart($("#connections-chart"), [{ value: (s) => s.connections, color: "--accent" }]);
  // Delivered under published, wider: with one subscriber per event the two lines coincide.
  chart($("#rate-chart"), [
    { value: (s) => s.delivered, color: "--accent2", width: 4 },
    { value: (s) => s.published, color: "--accent" },
  ]);
}

const stats = { source: null, timer: null };

// With auth on, the stats need a token with hub.admin: the one in the token field, sent as ?token=
// (EventSource cannot set headers). A new token reopens the stream.
function watchStats() {
  const status = $("#hub-status");
  clearTimeout(stats.timer);
  if (stats.source) stats.source.close();
  const params = new URLSearchParams();
  if (token()) params.set("token", token());
  const source = new EventSource(`/stats/stream?${params}`);
  stats.source = source;
  source.addEventListener("open", () => setStatus(status, "open", "hub: connected"));
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) {
      setStatus(status, "error", "hub: unreachable, retrying");
      return;
    }
    // Refused: ask /stats why (a token is needed, or a stream limit), and say so.
    fetch("/stats", { headers: authHeaders() })
      .then(async (response) => {
        if (response.ok) return "hub: reconnecting";
        const answer = await response.json();
        return `hub stats: ${answer.error?.message || response.statusText}`;
      })
      .catch(() => "hub: unreachable, retrying")
      .then((text) => {
        if (stats.source === source) setStatus(status, "error", text);
      });
    if (stats.source === source) stats.timer = setTimeout(watchStats, REOPEN_MS);
  });
  source.addEventListener("stats", onStats);
}

// Reopened once typing pauses, not on every key: each opening is a stream the hub counts.
$("#token-form").elements.token.addEventListener("input", () => {
  clearTimeout(stats.timer);
  stats.timer = setTimeout(watchStats, 300);
});
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watchStats();
});

window.addEventListener("resize", draw);
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", draw);

// --- start: ?topic=a&topic=b&lastEventId=…&token=… subscribes at once -----------------------------

const query = new URLSearchParams(location.search);
if (query.get("token")) $("#token-form").elements.token.value = query.get("token");
const initialTopics = query.getAll("topic").flatMap(words);
if (initialTopics.length) {
  const form = $("#subscribe-form").elements;
  form.topics.value = initialTopics.join(" ");
  form.lastEventId.value = query.get("lastEventId") || "";
  form.presenceName.value = query.get("name") || "";
  $("#subscribe-form").requestSubmit();
}
watchStats();
pollTopics();
draw();
