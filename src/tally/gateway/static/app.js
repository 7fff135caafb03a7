// The Tally page: the poll list, one poll's live results, and voting with a bearer token.
// Everything from the server is written with textContent, never parsed as HTML.

import { follow } from "./live.js";
import { fetchChallenge, solve } from "./pow.js";

const TOKEN_KEY = "tally.token";
const POLL_LIST_REFRESH_MS = 30000;
const MODE_TEXT = {
  connecting: "Connecting…",
  websocket: "Live · WebSocket",
  sse: "Live · Server-Sent Events",
  polling: "Live · polling every second",
  reconnecting: "Reconnecting…",
  offline: "Offline · retrying",
  idle: "No poll to follow",
};

const $ = (id) => document.getElementById(id);
const view = {
  live: $("live"),
  liveText: $("live-text"),
  pollList: $("poll-list"),
  pollsEmpty: $("polls-empty"),
  title: $("poll-title"),
  state: $("poll-state"),
  total: $("poll-total"),
  totalWord: $("poll-total-word"),
  review: $("poll-review"),
  options: $("options"),
  outcome: $("outcome"),
  tokenForm: $("token-form"),
  token: $("token"),
  voter: $("voter"),
  demoToken: $("demo-token"),
};

const current = {
  polls: [],
  poll: null,
  rows: new Map(), // option id -> {row, figures, fill, button}
  state: null,
  lastSeq: -1,
  feed: null,
  mode: null,
  memoryToken: "",
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

// ---- polls ---------------------------------------------------------------------------------

async function loadPolls() {
  try {
    const response = await fetch("/v1/polls", { cache: "no-store" });
    if (!response.ok) return false;
    const { polls } = await response.json();
    current.polls = polls.slice().sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  } catch {
    return false;
  }
  renderPollList();
  return true;
}

function renderPollList() {
  view.pollsEmpty.hidden = current.polls.length > 0;
  view.pollList.replaceChildren(
    ...current.polls.map((poll) => {
      const link = el("a", { href: `?poll=${encodeURIComponent(poll.id)}` }, poll.title);
      link.append(el("small", {}, poll.state));
      if (poll.id === current.poll?.id) link.setAttribute("aria-current", "page");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        history.pushState(null, "", link.href);
        select(poll.id);
        $("poll").focus();
      });
      return el("li", {}, link);
    }),
  );
}

function wantedPollId() {
  const asked = new URLSearchParams(location.search).get("poll");
  if (asked) return asked;
  const open = current.polls.find((poll) => poll.state === "open");
  return (open ?? current.polls[0])?.id ?? null;
}

function select(pollId) {
  current.feed?.stop();
  current.feed = null;
  current.poll = current.polls.find((poll) => poll.id === pollId) ?? null;
  current.lastSeq = -1;
  view.outcome.replaceChildren();
  renderPollList();
  if (!current.poll) {
    view.title.textContent = pollId ? `No poll “${pollId}”` : "No polls yet";
    document.title = "Tally";
    view.options.replaceChildren();
    setState(null, 0);
    setMode("idle");
    return;
  }
  view.title.textContent = current.poll.title;
  document.title = `${current.poll.title} · Tally`;
  renderOptions(current.poll);
  setState(current.poll.state, 0);
  setMode("connecting");
  current.feed = follow(current.poll.id, apply, setMode);
}

// ---- results -------------------------------------------------------------------------------

function renderOptions(poll) {
  current.rows.clear();
  view.options.replaceChildren(
    ...poll.options.map((option) => {
      const labelId = `option-${option.id}`;
      const figures = el("span", { className: "figures" }, "0 votes · 0%");
      const fill = el("span", { className: "fill" });
      const button = el(
        "button",
        { type: "button", className: "vote" },
        "Vote",
        el("span", { className: "sr-only" }, ` for ${option.label}`),
      );
      button.addEventListener("click", () => vote(option));
      const bar = el("span", { className: "bar" }, fill);
      bar.setAttribute("aria-hidden", "true");
      const head = el(
        "span",
        { className: "head" },
        el("span", { className: "label", id: labelId }, option.label),
        figures,
      );
      const row = el("li", { className: "option" }, head, bar, button);
      row.dataset.option = option.id;
      current.rows.set(option.id, { row, figures, fill, button });
      return row;
    }),
  );
}

/** A snapshot (pushed, ordered by seq) or a polled results doc. */
function apply(doc) {
  if (!current.poll || doc.poll_id !== current.poll.id) return;
  if (typeof doc.seq === "number") {
    if (doc.seq <= current.lastSeq) return;
    current.lastSeq = doc.seq;
  }
  const counts = doc.counts ?? {};
  const total = doc.total ?? 0;
  const leader = Math.max(0, ...Object.values(counts));
  for (const [id, parts] of current.rows) {
    const count = counts[id] ?? 0;
    const percent = total > 0 ? Math.round((count * 1000) / total) / 10 : 0;
    parts.figures.textContent =
      `${count.toLocaleString()} ${count === 1 ? "vote" : "votes"} · ${percent}%`;
    parts.fill.style.width = `${percent}%`; // CSSOM, which the CSP allows (style attributes it does not)
    parts.row.classList.toggle("leading", leader > 0 && count === leader);
  }
  setState(doc.state, total);
  // Held votes are not in the counts until a reviewer releases them: say how many wait.
  const held = doc.under_review ?? 0;
  view.review.hidden = held === 0;
  view.review.textContent = `${held.toLocaleString()} under review`;
}

function setState(state, total) {
  current.state = state;
  view.state.textContent = state ?? "";
  view.state.dataset.state = state ?? "";
  view.total.textContent = total.toLocaleString();
  view.totalWord.textContent = total === 1 ? "vote" : "votes";
  for (const { button } of current.rows.values()) button.disabled = state !== "open";
}

function setMode(mode) {
  if (mode === current.mode) return; // the status region announces changes only
  current.mode = mode;
  view.live.dataset.mode = mode;
  view.liveText.textContent = MODE_TEXT[mode] ?? mode;
}

// ---- voting --------------------------------------------------------------------------------

async function vote(option) {
  const poll = current.poll;
  const token = readToken();
  if (!token) {
    const demo = view.demoToken.hidden ? "" : ", or get a demo voter token";
    showProblem("A voter token is needed", `Enter the token from your identity provider${demo}.`);
    view.token.focus();
    return;
  }
  let response;
  let doc = null;
  setVoting(true);
  try {
    // A poll that asks for a proof of work: solve a challenge before sending the vote.
    let proof = null;
    if ((poll.defences?.pow?.difficulty ?? 0) > 0) {
      const challenge = await fetchChallenge(poll.id, token);
      if (challenge) proof = await solveShown(challenge);
    }
    ({ response, doc } = await sendVote(poll.id, option.id, token, proof));
    // Asked for one (or a harder one, when the risk scorer is wary): solve it and retry once.
    if (response.status === 428 && doc?.challenge) {
      proof = await solveShown(doc);
      ({ response, doc } = await sendVote(poll.id, option.id, token, proof));
    }
  } catch {
    showProblem(
      "No answer from Tally",
      "The vote may or may not have counted. Voting again is safe: a repeat returns your original receipt.",
    );
    return;
  } finally {
    setVoting(false);
  }
  if (response.status === 201 && doc?.receipt) {
    showReceipt("accepted", "Vote accepted. Your receipt:", doc.receipt);
  } else if (response.status === 202 && doc?.receipt) {
    showReceipt("held", "Your vote is recorded and held for review: it counts once a reviewer releases it. Your receipt:", doc.receipt);
  } else if (response.status === 409 && doc?.code === "already-voted" && doc.receipt) {
    showReceipt("already-voted", "You have already voted in this poll. Your original receipt:", doc.receipt);
  } else {
    showProblem(doc?.title ?? `HTTP ${response.status}`, doc?.detail ?? "");
  }
  current.feed?.refresh();
}

async function sendVote(pollId, optionId, token, proof) {
  const body = proof ? { option: optionId, proof } : { option: optionId };
  const response = await fetch(`/v1/polls/${encodeURIComponent(pollId)}/votes`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { response, doc: await response.json().catch(() => null) };
}

/** Solve a challenge in a worker, showing that something is happening while it runs. */
function solveShown(challenge) {
  // The running count is hidden from screen readers: the live region announces the state once.
  const count = el("span", {}, "");
  count.setAttribute("aria-hidden", "true");
  view.outcome.dataset.kind = "solving";
  view.outcome.replaceChildren(el("p", {}, "Checking you’re human…", count));
  return solve(challenge, (hashes) => {
    count.textContent = ` ${hashes.toLocaleString()} hashes`;
  });
}

function setVoting(busy) {
  for (const { button } of current.rows.values()) {
    button.disabled = busy || current.state !== "open";
  }
}

function showReceipt(kind, message, receipt) {
  const label = current.poll?.options.find((o) => o.id === receipt.option)?.label ?? receipt.option;
  const accepted = new Date(receipt.accepted_at);
  const fields = [
    ["option", "Option", label],
    ["lane", "Lane", String(receipt.lane)],
    ["entry_id", "Entry", String(receipt.entry_id)],
    ["accepted_at", "Accepted at", `${receipt.accepted_at} (${accepted.toLocaleTimeString()})`],
    ["leaf_hash", "Leaf hash", receipt.leaf_hash],
  ];
  const list = el("dl");
  for (const [field, name, value] of fields) {
    const dd = el("dd", {}, value);
    dd.dataset.field = field;
    if (field === "accepted_at") dd.dataset.value = receipt.accepted_at;
    list.append(el("dt", {}, name), dd);
  }
  // Keep the receipt: `tally audit receipt receipt.json <ledger> --key <key>` checks, once its
  // lane's next checkpoint is out, that the published log holds this very vote.
  const saved = new Blob([JSON.stringify({ receipt }, null, 2)], { type: "application/json" });
  const keep = el("p", {},
    el("a", { href: URL.createObjectURL(saved), download: `tally-receipt-${receipt.poll_id}.json` }, "Save this receipt"),
    " · ",
    el("a", { href: `/v1/polls/${encodeURIComponent(receipt.poll_id)}/receipts/${receipt.lane}/${receipt.entry_id}/proof` },
      "Inclusion proof"),
  );
  keep.className = "receipt-links";
  view.outcome.dataset.kind = kind;
  view.outcome.replaceChildren(el("p", {}, el("strong", {}, message)), list, keep);
}

function showProblem(title, detail) {
  view.outcome.dataset.kind = "problem";
  view.outcome.replaceChildren(el("p", {}, el("strong", {}, title)));
  if (detail) view.outcome.append(el("p", {}, detail));
}

// ---- the voter token -----------------------------------------------------------------------

function readToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return current.memoryToken; // storage disabled: keep it for this page only
  }
}

function saveToken(token) {
  current.memoryToken = token;
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: memoryToken holds it
  }
  view.token.value = token;
  showVoter(token);
}

function showVoter(token) {
  const subject = tokenSubject(token);
  view.voter.textContent = token ? `Voting as ${subject ?? "the token's voter"}.` : "";
}

function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub ?? null;
  } catch {
    return null;
  }
}

async function offerDemoTokens() {
  try {
    const response = await fetch("/v1/demo/token", { cache: "no-store" });
    view.demoToken.hidden = response.status !== 204;
  } catch {
    view.demoToken.hidden = true;
  }
}

async function getDemoToken() {
  try {
    const response = await fetch("/v1/demo/token", { method: "POST" });
    const doc = await response.json();
    if (response.status !== 201) {
      showProblem(doc.title ?? "No demo token", doc.detail ?? "");
      return;
    }
    saveToken(doc.token);
    view.outcome.dataset.kind = "";
    view.outcome.replaceChildren(
      el("p", {}, `New demo voter ${doc.subject} is ready: pick an option above.`),
    );
  } catch {
    showProblem("No answer from Tally", "Could not get a demo voter token.");
  }
}

// ---- start ---------------------------------------------------------------------------------

function start() {
  view.token.value = readToken();
  showVoter(view.token.value);
  view.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(view.token.value.trim());
  });
  view.demoToken.addEventListener("click", getDemoToken);
  window.addEventListener("popstate", () => select(wantedPollId()));
  offerDemoTokens();
  showPolls();
}

async function showPolls() {
  if (!(await loadPolls())) {
    view.title.textContent = "Tally is unreachable";
    setMode("offline");
    setTimeout(showPolls, 2000);
    return;
  }
  select(wantedPollId());
  setInterval(loadPolls, POLL_LIST_REFRESH_MS);
}

start();
