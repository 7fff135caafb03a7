// The organiser console, /admin: create a poll, open and close it, watch its turnout live, and
// see its published ledger (last checkpoint of each log, the certificate once closed).
//
// Everything here needs the admin role: the credential comes from the browser's Tally session
// (session.js, or the `tally.session` localStorage entry it keeps) and goes out as a bearer
// header, never in a URL. The server is the only judge of a poll definition: the form sends what
// was typed and shows each problem+json error next to the field it names.
// Everything from the server is written with textContent, never parsed as HTML.

import { follow } from "/static/live.js";

const SESSION_KEY = "tally.session";
const RATE_WINDOW_MS = 5000; // votes/s over the last five seconds: steady, yet quick to follow
const TICK_MS = 1000;
const LIST_REFRESH_MS = 15000;
const LEDGER_REFRESH_MS = 5000;
const LIMIT_SCOPES = [
  ["voter", "one voter"],
  ["address", "one address"],
  ["subnet", "one subnet"],
  ["poll", "the whole poll"],
];
const MODE_TEXT = {
  websocket: "Live · WebSocket",
  sse: "Live · SSE",
  polling: "Live · polling",
  reconnecting: "Reconnecting…",
  offline: "Offline · retrying",
  idle: "–",
};
const HIDDEN_TEXT = {
  "until-vote": "The counts are hidden from this feed until one has voted",
  "until-close": "The counts are hidden from this feed until the poll closes",
};
const VISIBILITY_TEXT = {
  live: "results live",
  "after-vote": "results after voting",
  "after-close": "results after close",
};

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // {token, subject, name, roles}
  sessionApi: null, // the session.js module, where it is served
  canSendVisibility: false,
  polls: [],
  poll: null, // the selected poll's document
  rows: new Map(), // option id -> {fill, figures}
  feed: null,
  lastSeq: -1,
  countsHidden: false, // the last document held the counts back
  total: 0,
  samples: [], // [{t, total}] for votes/s
  underReview: 0,
  heldAsked: -1,
  ledgerTimer: 0,
  certified: false,
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// ---- session -------------------------------------------------------------------------------

async function loadSessionApi() {
  try {
    state.sessionApi = await import("/static/session.js");
  } catch {
    state.sessionApi = null; // not served (yet): read the stored session directly
  }
}

function storedSession() {
  try {
    const doc = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (!doc || typeof doc.token !== "string" || !doc.token) return null;
    if (typeof doc.expires_at === "number" && doc.expires_at * 1000 <= Date.now()) return null;
    return {
      token: doc.token,
      subject: doc.subject || "",
      name: doc.name || doc.subject || "",
      roles: Array.isArray(doc.roles) ? doc.roles : [],
    };
  } catch {
    return null;
  }
}

function currentSession() {
  const api = state.sessionApi;
  if (api && typeof api.currentSession === "function") {
    const session = api.currentSession();
    return session && session.token ? session : null;
  }
  return storedSession();
}

function authHeaders() {
  return state.session ? { Authorization: `Bearer ${state.session.token}` } : {};
}

function showGate(text, { signOut = false } = {}) {
  stopFollowing();
  $("console").hidden = true;
  $("gate").hidden = false;
  $("gate-text").textContent = text;
  $("sign-in").textContent = signOut ? "Sign in as an organiser" : "Sign in";
  $("who").hidden = !state.session;
  if (state.session) $("who-name").textContent = state.session.name || state.session.subject;
}

function refused(response) {
  if (response.status === 401) {
    state.session = null;
    showGate("Your sign-in has expired or is not valid here: sign in again.");
    return true;
  }
  if (response.status === 403) {
    showGate("This needs the organiser role: the account you signed in with does not have it.", {
      signOut: true,
    });
    return true;
  }
  return false;
}

// ---- API -----------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let doc = null;
  try {
    doc = await response.json();
  } catch {
    doc = null;
  }
  return { response, doc };
}

async function detectVisibility() {
  // The create body takes `visibility` only where the server knows it: ask its own schema.
  try {
    const response = await fetch("/openapi.json", { cache: "no-store" });
    const spec = await response.json();
    const field = spec?.components?.schemas?.CreatePollBody?.properties?.visibility;
    state.canSendVisibility = Boolean(field);
  } catch {
    state.canSendVisibility = false;
  }
  $("visibility-field").hidden = !state.canSendVisibility;
}

// ---- poll list -----------------------------------------------------------------------------

async function loadPolls() {
  let answer;
  try {
    answer = await api("GET", "/v1/polls?include=drafts");
  } catch {
    return; // offline for a moment: the next refresh asks again
  }
  const { response, doc } = answer;
  if (refused(response) || !response.ok || !doc) return;
  state.polls = doc.polls.slice().sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  renderPollList();
}

function renderPollList() {
  $("polls-empty").hidden = state.polls.length > 0;
  $("poll-list").replaceChildren(
    ...state.polls.map((poll) => {
      const link = el("a", { href: `/admin?poll=${encodeURIComponent(poll.id)}` });
      link.dataset.poll = poll.id;
      link.append(
        el("span", { className: "poll-name" }, poll.title),
        el("span", { className: `state ${poll.state}` }, poll.state),
      );
      if (poll.id === state.poll?.id) link.setAttribute("aria-current", "page");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        history.pushState(null, "", link.href);
        route();
      });
      return el("li", {}, link);
    }),
  );
}

// ---- create --------------------------------------------------------------------------------

function showCreate() {
  stopFollowing();
  state.poll = null;
  renderPollList();
  $("poll-card").hidden = true;
  $("create-card").hidden = false;
  $("f-title").focus();
}

function buildLimitRows() {
  $("limits").replaceChildren(
    ...LIMIT_SCOPES.map(([scope, label]) => {
      const cell = (part) => {
        const id = `f-limit-${scope}-${part}`;
        const field = el("div", { className: "field" });
        field.dataset.field = `defences.limits.${scope}.${part}`;
        const input = el("input", { id, inputMode: "decimal", autocomplete: "off" });
        input.placeholder = "default";
        input.setAttribute("aria-label", `${part === "per_s" ? "per second" : "burst"}, ${label}`);
        field.append(input, el("p", { className: "field-error", role: "alert" }));
        return el("td", {}, field);
      };
      const row = el("tr", {}, el("th", { scope: "row" }, label), cell("per_s"), cell("burst"));
      row.dataset.field = `defences.limits.${scope}`;
      return row;
    }),
  );
}

// A typed number goes as a number; anything else goes as typed, for the server to refuse by name.
function numberOrText(text) {
  const trimmed = text.trim();
  return trimmed !== "" && Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
}

function optional(target, key, text) {
  if (text.trim() !== "") target[key] = numberOrText(text);
}

function pollBody() {
  const body = {
    title: $("f-title").value,
    options: $("f-options")
      .value.split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== ""),
  };
  if ($("f-lanes").value) body.lanes = Number($("f-lanes").value);
  const deadline = $("f-closes-at").value;
  if (deadline) {
    const moment = new Date(deadline); // datetime-local is the browser's own time zone
    body.closes_at = Number.isNaN(moment.getTime()) ? deadline : moment.toISOString();
  }
  optional(body, "expected_voters", $("f-expected").value);
  if (state.canSendVisibility) body.visibility = $("f-visibility").value;
  const pow = {};
  optional(pow, "difficulty", $("f-pow").value);
  optional(pow, "max_difficulty", $("f-pow-max").value);
  const risk = {};
  optional(risk, "challenge_at", $("f-challenge-at").value);
  optional(risk, "hold_at", $("f-hold-at").value);
  const limits = {};
  for (const [scope] of LIMIT_SCOPES) {
    const rate = {};
    optional(rate, "per_s", $(`f-limit-${scope}-per_s`).value);
    optional(rate, "burst", $(`f-limit-${scope}-burst`).value);
    if (Object.keys(rate).length) limits[scope] = rate;
  }
  const defences = {};
  if (Object.keys(pow).length) defences.pow = pow;
  if (Object.keys(risk).length) defences.risk = risk;
  if (Object.keys(limits).length) defences.limits = limits;
  if (Object.keys(defences).length) body.defences = defences;
  return body;
}

function clearErrors() {
  for (const node of document.querySelectorAll("#create-form .field-error")) node.textContent = "";
  for (const node of document.querySelectorAll("#create-form [aria-invalid]")) {
    node.removeAttribute("aria-invalid");
  }
  $("form-error").hidden = true;
}

// The problem's field errors: `errors: [{field, message}]`, or msgspec's "... - at `$.field`".
function fieldErrors(problem) {
  if (Array.isArray(problem?.errors) && problem.errors.length) return problem.errors;
  const detail = String(problem?.detail || problem?.title || "");
  const at = /^(.*?)\s*-\s*at `\$\.?([^`]*)`$/.exec(detail);
  if (at) return [{ field: at[2], message: at[1] }];
  const named = /^([a-z_][\w.[\]]*):\s+(.+)$/.exec(detail);
  if (named) return [{ field: named[1], message: named[2] }];
  return [{ field: "", message: detail || "The server refused the poll" }];
}

// The form field an error names: the deepest data-field that is the error's field or a prefix
// of it ("options[2].label" -> "options"), or one under it ("defences.limits.voter" -> its
// per_s cell).
function fieldFor(name) {
  const normalized = name.replace(/\[(\d+)\]/g, ".$1");
  const fields = [...document.querySelectorAll("#create-form .field[data-field]")];
  let best = null;
  for (const field of fields) {
    const key = field.dataset.field;
    if (
      (normalized === key || normalized.startsWith(`${key}.`)) &&
      (!best || key.length > best.dataset.field.length)
    ) {
      best = field;
    }
  }
  return best || fields.find((field) => field.dataset.field.startsWith(`${normalized}.`)) || null;
}

function describe(name, message) {
  const option = /^options\[(\d+)\]/.exec(name);
  if (option) {
    const index = Number(option[1]);
    const label = pollBody().options[index];
    return `Option ${index + 1}${label ? ` (“${label}”)` : ""}: ${message}`;
  }
  return message;
}

function showErrors(problem) {
  let first = null;
  for (const { field, message } of fieldErrors(problem)) {
    const target = field ? fieldFor(field) : null;
    if (!target) {
      $("form-error").textContent = field ? `${field}: ${message}` : message;
      $("form-error").hidden = false;
      continue;
    }
    const shown = target.querySelector(".field-error");
    shown.textContent = describe(field, message);
    const input = target.querySelector("input, textarea, select");
    input?.setAttribute("aria-invalid", "true");
    if (target.closest("details")) target.closest("details").open = true;
    first ??= input;
  }
  first?.focus();
}

async function createPoll(event) {
  event.preventDefault();
  clearErrors();
  const button = $("create");
  button.disabled = true;
  try {
    const { response, doc } = await api("POST", "/v1/polls", pollBody());
    if (refused(response)) return;
    if (response.status !== 201) {
      showErrors(doc);
      return;
    }
    $("create-form").reset();
    state.polls.unshift(doc);
    history.pushState(null, "", `/admin?poll=${encodeURIComponent(doc.id)}`);
    showPoll(doc);
  } catch {
    $("form-error").textContent = "The server could not be reached: nothing was created.";
    $("form-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

// ---- one poll ------------------------------------------------------------------------------

async function selectPoll(pollId) {
  let answer;
  try {
    answer = await api("GET", `/v1/polls/${encodeURIComponent(pollId)}`);
  } catch {
    answer = { response: { ok: false, status: 0 }, doc: null };
  }
  const { response, doc } = answer;
  if (refused(response)) return;
  if (!response.ok || !doc) {
    showCreate();
    $("form-error").textContent = `There is no poll ${pollId}.`;
    $("form-error").hidden = false;
    return;
  }
  showPoll(doc);
}

function showPoll(poll) {
  stopFollowing();
  state.poll = poll;
  state.lastSeq = -1;
  state.countsHidden = false;
  state.total = 0;
  state.samples = [];
  state.underReview = 0;
  state.heldAsked = -1;
  state.certified = false;
  $("create-card").hidden = true;
  $("poll-card").hidden = false;
  $("poll-title").textContent = poll.title;
  renderOptions(poll);
  renderPoll();
  renderPollList();
  renderTurnout({ total: 0, counts: {}, under_review: 0 }, { sampled: false });
  renderLedger(null);
  state.feed = follow(poll.id, onDoc, onMode, () => state.session?.token ?? null);
  refreshLedger();
}

function stopFollowing() {
  state.feed?.stop();
  state.feed = null;
  clearTimeout(state.ledgerTimer);
  onMode("idle");
}

function renderPoll() {
  const poll = state.poll;
  $("poll-state").textContent = poll.state;
  $("poll-state").className = `state ${poll.state}`;
  const facts = [`id ${poll.id}`, `${poll.lanes} lane${poll.lanes === 1 ? "" : "s"}`];
  if (poll.visibility) facts.push(VISIBILITY_TEXT[poll.visibility] || poll.visibility);
  if (poll.closes_at) facts.push(`closes ${new Date(poll.closes_at).toLocaleString()}`);
  $("poll-facts").textContent = facts.join(" · ");
  $("open-poll").hidden = poll.state !== "draft";
  $("close-poll").hidden = poll.state === "closed";
  $("close-confirm").hidden = true;
  $("exports").hidden = poll.state === "draft";
  const links = [];
  if (poll.join_code) {
    links.push(el("span", {}, "Join code ", el("strong", { className: "code" }, poll.join_code)));
    links.push(el("a", { href: `/j/${encodeURIComponent(poll.join_code)}` }, "join link"));
  }
  // The presenter screen shows a draft to an organiser ("voting opens soon"), so the big screen
  // can be set up before the poll opens; the voting page shows it to no one.
  links.push(el("a", { href: `/present/${encodeURIComponent(poll.id)}` }, "Presenter screen"));
  if (poll.state !== "draft") {
    links.push(el("a", { href: `/?poll=${encodeURIComponent(poll.id)}` }, "Voting page"));
  }
  $("links").replaceChildren(...links.flatMap((node, i) => (i ? [" · ", node] : [node])));
  $("links").hidden = links.length === 0;
}

function renderOptions(poll) {
  state.rows.clear();
  $("options").replaceChildren(
    ...poll.options.map((option) => {
      const fill = el("span", { className: "fill" });
      const figures = el("span", { className: "figures" }, "0");
      const row = el(
        "li",
        {},
        el("span", { className: "label" }, option.label),
        figures,
        el("span", { className: "bar" }, fill),
      );
      row.dataset.option = option.id;
      state.rows.set(option.id, { fill, figures });
      return row;
    }),
  );
}

async function move(action) {
  const poll = state.poll;
  $("action-error").hidden = true;
  for (const id of ["open-poll", "close-poll", "close-now"]) $(id).disabled = true;
  try {
    const { response, doc } = await api("POST", `/v1/polls/${encodeURIComponent(poll.id)}/${action}`);
    if (refused(response)) return;
    if (!response.ok) {
      $("action-error").textContent = doc?.detail || doc?.title || `The ${action} failed`;
      $("action-error").hidden = false;
      return;
    }
    if (state.poll?.id !== doc.id) return;
    state.poll = { ...state.poll, ...doc };
    const listed = state.polls.findIndex((p) => p.id === doc.id);
    if (listed >= 0) state.polls[listed] = { ...state.polls[listed], ...doc };
    renderPoll();
    renderPollList();
    state.feed?.refresh();
    refreshLedger();
  } catch {
    $("action-error").textContent = "The server could not be reached; nothing changed.";
    $("action-error").hidden = false;
  } finally {
    for (const id of ["open-poll", "close-poll", "close-now"]) $(id).disabled = false;
  }
}

// The CSV exports need the organiser's credential (turnout before the close, counts a poll
// hides), so they are fetched with it and handed to the browser as a download.
async function download(kind) {
  const poll = state.poll;
  $("action-error").hidden = true;
  try {
    const response = await fetch(`/v1/polls/${encodeURIComponent(poll.id)}/${kind}.csv`, {
      headers: authHeaders(),
      cache: "no-store",
    });
    if (refused(response)) return;
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      $("action-error").textContent = problem?.detail || problem?.title || `No ${kind} export`;
      $("action-error").hidden = false;
      return;
    }
    const disposition = response.headers.get("Content-Disposition") || "";
    const named = /filename="?([^";]+)"?/.exec(disposition);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: named ? named[1] : `tally-${kind}-${poll.id}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch {
    $("action-error").textContent = "The server could not be reached for the export.";
    $("action-error").hidden = false;
  }
}

// ---- live turnout --------------------------------------------------------------------------

function onMode(mode) {
  $("live").dataset.mode = mode;
  $("live-text").textContent = MODE_TEXT[mode] || mode;
}

function onDoc(doc) {
  if (!state.poll || doc.poll_id !== state.poll.id) return;
  if (doc.type === "snapshot" && typeof doc.seq === "number") {
    // An older snapshot is dropped; the same one is taken again only where it now shows the
    // counts it held back (the server resends it in full once the auth frame is checked).
    const revealed = doc.seq === state.lastSeq && state.countsHidden && doc.counts !== null;
    if (doc.seq < state.lastSeq || (doc.seq === state.lastSeq && !revealed)) return;
    state.lastSeq = doc.seq;
  }
  if (doc.state && doc.state !== state.poll.state) {
    // The deadline closed it, or another organiser moved it: follow what the feed says.
    state.poll = { ...state.poll, state: doc.state };
    const listed = state.polls.find((p) => p.id === state.poll.id);
    if (listed) listed.state = doc.state;
    renderPoll();
    renderPollList();
    refreshLedger();
  }
  renderTurnout(doc);
}

// `sampled`: false for the blank shown before the first document, which must not count as a
// baseline of 0 (the poll may already hold votes).
function renderTurnout(doc, { sampled = true } = {}) {
  const total = Number(doc.total) || 0;
  state.total = total;
  if (sampled) sample(total);
  else $("t-rate").textContent = "0.0";
  $("t-total").textContent = total.toLocaleString("en");
  const held = Number(doc.under_review) || 0;
  $("t-held").textContent = held.toLocaleString("en");
  if (held !== state.heldAsked) loadHeld(held);
  const counts = doc.counts;
  state.countsHidden = counts === null;
  $("counts-hidden").hidden = counts !== null;
  if (counts === null) {
    $("counts-hidden").textContent = HIDDEN_TEXT[doc.hidden] || "The counts are hidden from this feed";
  }
  const values = counts ? Object.values(counts) : [];
  const sum = values.reduce((a, b) => a + b, 0);
  for (const [id, row] of state.rows) {
    const votes = counts ? counts[id] || 0 : null;
    const share = votes === null || sum === 0 ? 0 : (100 * votes) / sum;
    row.figures.textContent =
      votes === null ? "hidden" : `${votes.toLocaleString("en")} · ${share.toFixed(1)}%`;
    row.fill.style.width = `${share}%`;
  }
}

function sample(total) {
  const now = performance.now();
  state.samples.push({ t: now, total });
  // Keep one sample at or before the window's start as its baseline.
  while (state.samples.length > 2 && state.samples[1].t <= now - RATE_WINDOW_MS) {
    state.samples.shift();
  }
  const first = state.samples[0];
  const seconds = (now - first.t) / 1000;
  const rate = seconds > 0 ? Math.max(0, total - first.total) / Math.max(seconds, 1) : 0;
  $("t-rate").textContent = rate.toFixed(1);
}

async function loadHeld(count) {
  state.heldAsked = count;
  const detail = $("held-detail");
  if (count === 0 || !state.poll) {
    detail.hidden = true;
    return;
  }
  const pollId = state.poll.id;
  try {
    const { response, doc } = await api("GET", `/v1/polls/${encodeURIComponent(pollId)}/held`);
    if (!response.ok || !doc || state.poll?.id !== pollId) return;
    const reasons = new Map();
    for (const group of doc.groups) {
      reasons.set(group.reason, (reasons.get(group.reason) || 0) + group.count);
    }
    const parts = [...reasons].map(([reason, n]) => `${reason} ${n}`);
    detail.textContent = `Held for review: ${parts.join(", ")}. Decide them with tally review.`;
    detail.hidden = false;
  } catch {
    // shown again at the next change of the count
  }
}

// ---- ledger --------------------------------------------------------------------------------

function parseCheckpoint(text) {
  const lines = text.split("\n");
  return { size: Number(lines[1]), root: lines[2] || "" };
}

async function refreshLedger() {
  clearTimeout(state.ledgerTimer);
  const poll = state.poll;
  if (!poll) return;
  const logs = ["admin", ...Array.from({ length: poll.lanes }, (_, lane) => String(lane))];
  const id = encodeURIComponent(poll.id);
  const rows = await Promise.all(
    logs.map(async (log) => {
      try {
        const response = await fetch(`/ledger/${id}/${log}/checkpoint`, { cache: "no-store" });
        return response.ok ? { log, ...parseCheckpoint(await response.text()) } : null;
      } catch {
        return null;
      }
    }),
  );
  if (state.poll?.id !== poll.id) return;
  renderLedger(rows.filter(Boolean));
  if (state.poll.state === "closed" && !state.certified) await fetchCertificate(poll.id);
  if (state.poll?.id === poll.id && !state.certified) {
    state.ledgerTimer = setTimeout(refreshLedger, LEDGER_REFRESH_MS);
  }
}

function renderLedger(rows) {
  if (rows === null) {
    $("ledger-note").textContent = "Checking the published ledger…";
    $("checkpoints").hidden = true;
    $("certificate").dataset.state = "none";
    $("certificate-state").textContent =
      state.poll?.state === "closed" ? "waiting for the archiver" : "the poll is not closed";
    $("fingerprint-line").hidden = true;
    $("certificate-text-box").hidden = true;
    return;
  }
  const entries = rows.reduce((sum, row) => sum + row.size, 0);
  $("ledger-note").textContent = rows.length
    ? `${rows.length} log${rows.length === 1 ? "" : "s"} published, ${entries.toLocaleString("en")} entries in their last checkpoints.`
    : "Nothing published yet: the archiver writes the first checkpoint shortly after the poll is created.";
  $("checkpoints").hidden = rows.length === 0;
  $("checkpoint-rows").replaceChildren(
    ...rows.map((row) => {
      const tr = el(
        "tr",
        {},
        el("th", { scope: "row" }, row.log === "admin" ? "admin" : `lane ${row.log}`),
        el("td", {}, row.size.toLocaleString("en")),
        el("td", {}, el("code", {}, row.root)),
      );
      tr.dataset.log = row.log;
      return tr;
    }),
  );
  if (!state.certified) {
    $("certificate-state").textContent =
      state.poll?.state === "closed"
        ? "waiting for the archiver to certify the counts"
        : "issued when the poll closes";
  }
}

async function fetchCertificate(pollId) {
  try {
    const response = await fetch(`/ledger/${encodeURIComponent(pollId)}/certificate`, {
      cache: "no-store",
    });
    if (!response.ok || state.poll?.id !== pollId) return;
    const bytes = await response.arrayBuffer();
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0"));
    const groups = [];
    for (let i = 0; i < hex.length; i += 2) groups.push(hex[i] + hex[i + 1]);
    state.certified = true;
    $("certificate").dataset.state = "certified";
    $("certificate-state").textContent = "signed";
    $("fingerprint").textContent = groups.join(" ");
    $("fingerprint-line").hidden = false;
    $("certificate-text").textContent = new TextDecoder().decode(bytes);
    $("certificate-text-box").hidden = false;
  } catch {
    // asked again at the next refresh
  }
}

// ---- routing and start -----------------------------------------------------------------------

function route() {
  const pollId = new URLSearchParams(location.search).get("poll");
  if (pollId) selectPoll(pollId);
  else showCreate();
}

function tick() {
  if (state.poll && state.samples.length) sample(state.total);
}

async function start() {
  buildLimitRows();
  $("create-form").addEventListener("submit", createPoll);
  $("new-poll").addEventListener("click", () => {
    history.pushState(null, "", "/admin");
    showCreate();
  });
  $("open-poll").addEventListener("click", () => move("open"));
  $("close-poll").addEventListener("click", () => {
    $("close-confirm").hidden = false;
    $("close-now").focus();
  });
  $("close-cancel").addEventListener("click", () => {
    $("close-confirm").hidden = true;
  });
  $("close-now").addEventListener("click", () => move("close"));
  $("export-results").addEventListener("click", () => download("results"));
  $("export-turnout").addEventListener("click", () => download("turnout"));
  $("sign-in").addEventListener("click", () => {
    if (state.sessionApi && typeof state.sessionApi.signIn === "function") {
      state.sessionApi.signIn("/admin", "admin");
    } else {
      $("gate-note").textContent =
        "Sign-in is not set up on this server: an organiser's session is needed.";
      $("gate-note").hidden = false;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    if (state.sessionApi && typeof state.sessionApi.signOut === "function") {
      await state.sessionApi.signOut();
    } else {
      localStorage.removeItem(SESSION_KEY);
    }
    state.session = null;
    showGate("You are signed out. Sign in as an organiser to create and run polls.");
  });
  addEventListener("popstate", route);

  await loadSessionApi();
  state.session = currentSession();
  if (!state.session) {
    showGate("Sign in as an organiser to create and run polls.");
    return;
  }
  $("who").hidden = false;
  $("who-name").textContent = state.session.name || state.session.subject;
  if (!(state.session.roles || []).includes("admin")) {
    showGate("This needs the organiser role: the account you signed in with does not have it.", {
      signOut: true,
    });
    return;
  }
  $("gate").hidden = true;
  $("console").hidden = false;
  await detectVisibility();
  await loadPolls();
  if ($("console").hidden) return; // the server refused the credential
  route();
  setInterval(tick, TICK_MS);
  setInterval(() => {
    if (!$("console").hidden) loadPolls();
  }, LIST_REFRESH_MS);
}

start();
