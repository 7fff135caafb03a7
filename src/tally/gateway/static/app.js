// The voting page: the poll list, one poll's live results, signing in and voting, the receipt.
// Everything from the server is written with textContent, never parsed as HTML.

import { follow } from "./live.js";
import { fetchChallenge, solve } from "./pow.js";
import {
  receiptFileName,
  receiptFileUrl,
  storedReceipt,
  storeReceipt,
  verifyHref,
} from "./receipts.js";
import {
  currentSession,
  signIn as goSignIn,
  signInMethods,
  signOut as forgetSession,
  storeSession,
} from "./session.js";

const POLL_LIST_REFRESH_MS = 30000;
const RETRY_MS = 2000;
const MODE_TEXT = {
  connecting: "Connecting…",
  websocket: "Live · WebSocket",
  sse: "Live · Server-Sent Events",
  polling: "Live · polling every second",
  reconnecting: "Reconnecting…",
  offline: "Offline · retrying",
  idle: "No poll to follow",
};
const HIDDEN_TEXT = {
  "until-vote": "Results are hidden until you vote.",
  "until-close": "Results are hidden until the poll closes.",
};

const $ = (id) => document.getElementById(id);
const view = {
  live: $("live"),
  liveText: $("live-text"),
  pollList: $("poll-list"),
  pollsEmpty: $("polls-empty"),
  missing: $("missing"),
  pollCard: $("poll-card"),
  voteCard: $("vote-card"),
  title: $("poll-title"),
  state: $("poll-state"),
  total: $("poll-total"),
  totalWord: $("poll-total-word"),
  review: $("poll-review"),
  resultsHidden: $("results-hidden"),
  options: $("options"),
  outcome: $("outcome"),
  signedOut: $("signed-out"),
  signedIn: $("signed-in"),
  signIn: $("sign-in"),
  signInNote: $("sign-in-note"),
  signOut: $("sign-out"),
  voterName: $("voter-name"),
  advanced: $("advanced"),
  tokenForm: $("token-form"),
  token: $("token"),
};

const current = {
  polls: [],
  poll: null,
  rows: new Map(), // option id -> {row, figures, fill, button}
  state: null,
  lastSeq: -1,
  hidden: false, // the last document applied had its counts withheld
  asking: false, // askAsVoter's request is in flight
  feed: null,
  mode: null,
  selecting: 0, // the newest select()'s number: an older one's late answer is dropped
  receiptUrl: null,
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

function askedPollId() {
  return new URLSearchParams(location.search).get("poll");
}

function defaultPollId() {
  const open = current.polls.find((poll) => poll.state === "open");
  return (open ?? current.polls[0])?.id ?? null;
}

/** The poll `pollId`: from the list, else asked for (a join code's link may name a poll opened
 * after the list was read). null: no such poll; undefined: Tally did not answer. */
async function findPoll(pollId) {
  const listed = current.polls.find((poll) => poll.id === pollId);
  if (listed) return listed;
  try {
    const response = await fetch(`/v1/polls/${encodeURIComponent(pollId)}`, { cache: "no-store" });
    if (response.ok) return await response.json();
    // 404, or an id the server refuses to look up at all: either way there is no such poll.
    return response.status >= 400 && response.status < 500 ? null : undefined;
  } catch {
    return undefined;
  }
}

async function select(asked) {
  const number = ++current.selecting;
  current.feed?.stop();
  current.feed = null;
  current.poll = null;
  current.lastSeq = -1;
  current.hidden = false;
  const pollId = asked ?? defaultPollId();
  const poll = pollId === null ? null : await findPoll(pollId);
  if (number !== current.selecting) return;
  if (poll === undefined) {
    showUnreachable(() => select(asked));
    return;
  }
  current.poll = poll;
  renderPollList();
  showOutcome(null);
  if (!poll) {
    showMissing(pollId !== null);
    return;
  }
  view.missing.hidden = true;
  view.pollCard.hidden = false;
  view.voteCard.hidden = false;
  view.title.textContent = poll.title;
  document.title = `${poll.title} · Tally`;
  renderOptions(poll);
  setState(poll.state, 0);
  const receipt = storedReceipt(poll.id);
  if (receipt) showReceipt("stored", receipt);
  setMode("connecting");
  current.feed = follow(poll.id, apply, setMode, () => currentSession()?.token ?? null);
}

/** Nothing to show: an unknown poll shows only that (no title, options or vote form of another
 * poll); with no poll at all, the page says there are none yet. */
function showMissing(unknown) {
  view.options.replaceChildren();
  current.rows.clear();
  setState(null, 0);
  setMode("idle");
  view.missing.hidden = !unknown;
  view.pollCard.hidden = unknown;
  view.voteCard.hidden = true;
  view.resultsHidden.hidden = true;
  view.title.textContent = "No polls yet";
  document.title = unknown ? "No such poll · Tally" : "Tally";
}

function showUnreachable(retry) {
  view.missing.hidden = true;
  view.pollCard.hidden = false;
  view.voteCard.hidden = true;
  view.options.replaceChildren();
  current.rows.clear();
  view.title.textContent = "Tally is unreachable";
  setMode("offline");
  setTimeout(retry, RETRY_MS);
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
      const mine = el("span", { className: "mine" }, "✓ Your vote");
      const label = el("span", { className: "label", id: labelId }, option.label);
      const head = el("span", { className: "head" }, el("span", {}, label, " ", mine), figures);
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
  const hidden = doc.counts === null;
  if (typeof doc.seq === "number") {
    // Once a voter may see the counts, the server sends the snapshot it sent redacted again,
    // in full, with the same seq: that one is news too.
    const revealed = doc.seq === current.lastSeq && current.hidden && !hidden;
    if (doc.seq <= current.lastSeq && !revealed) return;
    current.lastSeq = doc.seq;
  }
  current.hidden = hidden;
  const total = doc.total ?? 0;
  // Counts withheld from this viewer (the poll's visibility): the turnout and a sentence, no bars.
  view.options.classList.toggle("counts-hidden", hidden);
  view.resultsHidden.hidden = !hidden;
  view.resultsHidden.textContent = hidden
    ? (HIDDEN_TEXT[doc.hidden] ?? "Results are hidden for now.")
    : "";
  const counts = doc.counts ?? {};
  const leader = Math.max(0, ...Object.values(counts));
  for (const [id, parts] of current.rows) {
    const count = counts[id] ?? 0;
    const percent = total > 0 && !hidden ? Math.round((count * 1000) / total) / 10 : 0;
    parts.figures.textContent = hidden
      ? ""
      : `${count.toLocaleString()} ${count === 1 ? "vote" : "votes"} · ${percent}%`;
    parts.fill.style.width = `${percent}%`; // CSSOM, which the CSP allows (style attributes it does not)
    parts.row.classList.toggle("leading", leader > 0 && count === leader);
  }
  setState(doc.state, total);
  if (hidden && doc.hidden === "until-vote" && current.mode === "sse") askAsVoter(doc.poll_id);
  // Held votes are not in the counts until a reviewer releases them: say how many wait.
  const held = doc.under_review ?? 0;
  view.review.hidden = held === 0;
  view.review.textContent = `${held.toLocaleString()} under review`;
}

/** EventSource cannot send the voter's credential, so over SSE a voter who voted from this
 * browser asks /results as themselves for the counts the stream keeps hidden from everyone. */
async function askAsVoter(pollId) {
  const token = currentSession()?.token;
  if (!token || !storedReceipt(pollId) || current.asking) return;
  current.asking = true;
  try {
    const response = await fetch(`/v1/polls/${encodeURIComponent(pollId)}/results`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    const doc = response.ok ? await response.json() : null;
    if (doc?.counts) apply({ ...doc, type: "results" });
  } catch {
    // the next snapshot asks again
  } finally {
    current.asking = false;
  }
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

/** Highlight the option this browser voted for (null: none). */
function markChosen(optionId) {
  for (const [id, { row }] of current.rows) row.classList.toggle("chosen", id === optionId);
}

// ---- voting --------------------------------------------------------------------------------

async function vote(option) {
  const poll = current.poll;
  const token = currentSession()?.token;
  if (!token) {
    showProblem("Sign in to vote", "Sign in first, then pick your option: it takes a moment.");
    view.signIn.focus();
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
  if (current.poll !== poll) return; // another poll was chosen meanwhile
  const kind =
    response.status === 201 ? "accepted"
    : response.status === 202 ? "held"
    : response.status === 409 && doc?.code === "already-voted" ? "already-voted"
    : null;
  if (kind && doc?.receipt) {
    storeReceipt(doc.receipt);
    showReceipt(kind, doc.receipt);
  } else {
    showProblem(doc?.title ?? `HTTP ${response.status}`, doc?.detail ?? "");
    if (response.status === 401) renderVoter(); // an expired session shows as signed out
  }
  // Having voted may let this voter see counts hidden until now: ask again, as this voter.
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
  showOutcome("solving", el("p", {}, "Checking you’re human…", count));
  return solve(challenge, (hashes) => {
    count.textContent = ` ${hashes.toLocaleString()} hashes`;
  });
}

function setVoting(busy) {
  for (const { button } of current.rows.values()) {
    button.disabled = busy || current.state !== "open";
  }
}

// ---- the receipt ---------------------------------------------------------------------------

const RECEIPT_HEADLINE = {
  accepted: (label) => `Your vote for ${label} is recorded.`,
  held: (label) =>
    `Your vote for ${label} is recorded and held for review: it counts once a reviewer releases it.`,
  "already-voted": (label) => `You have already voted in this poll, for ${label}.`,
  stored: (label) => `You voted for ${label} from this browser.`,
};

/** The receipt in words, its fields, and what to do with it: save it, verify it. */
function showReceipt(kind, receipt) {
  markChosen(receipt.option);
  const label = current.poll?.options.find((o) => o.id === receipt.option)?.label ?? receipt.option;
  const accepted = new Date(receipt.accepted_at);
  const when = Number.isNaN(accepted.getTime()) ? receipt.accepted_at : accepted.toLocaleString();
  const words =
    `It is entry ${receipt.entry_id} of lane ${receipt.lane} in this poll's public ledger, ` +
    `accepted at ${when}. Keep the receipt: with it you can check that the published ledger ` +
    "holds your vote, once the lane's next checkpoint is out.";
  const fields = [
    ["option", "Option", label],
    ["lane", "Lane", String(receipt.lane)],
    ["entry_id", "Entry", String(receipt.entry_id)],
    ["accepted_at", "Accepted at", receipt.accepted_at],
    ["leaf_hash", "Leaf hash", receipt.leaf_hash],
  ];
  const list = el("dl");
  for (const [field, name, value] of fields) {
    const dd = el("dd", {}, value);
    dd.dataset.field = field;
    list.append(el("dt", {}, name), dd);
  }
  if (current.receiptUrl) URL.revokeObjectURL(current.receiptUrl);
  current.receiptUrl = receiptFileUrl(receipt);
  const save = el("a", { href: current.receiptUrl, download: receiptFileName(receipt.poll_id) });
  save.append("Save receipt");
  const actions = el(
    "p",
    { className: "receipt-links" },
    save,
    el("a", { href: verifyHref(receipt.poll_id) }, "Verify my vote"),
  );
  const details = el("details", {}, el("summary", {}, "Receipt details"), list);
  showOutcome(
    kind,
    el("p", {}, el("strong", {}, RECEIPT_HEADLINE[kind](label))),
    el("p", {}, words),
    actions,
    details,
  );
}

function showProblem(title, detail) {
  showOutcome("problem", el("p", {}, el("strong", {}, title)));
  if (detail) view.outcome.append(el("p", {}, detail));
}

function showOutcome(kind, ...content) {
  view.outcome.dataset.kind = kind ?? "";
  view.outcome.replaceChildren(...content);
  if (kind === null) markChosen(null);
}

// ---- the voter: signing in -----------------------------------------------------------------
// /static/session.js (contract 1) signs in and out and reads the session. A bearer token pasted
// in the advanced form is kept as a session of the same shape: it is sent the same way.

/** Keep a bearer token (a JWT) as this browser's session, named by its claims. */
function useBearer(token) {
  const claims = jwtClaims(token);
  const subject = typeof claims?.sub === "string" ? claims.sub : "the token's voter";
  storeSession({
    token,
    subject,
    name: typeof claims?.name === "string" ? claims.name : subject,
    roles: Array.isArray(claims?.roles) ? claims.roles : [],
    expires_at: typeof claims?.exp === "number" ? claims.exp : null,
  });
  renderVoter();
  current.feed?.refresh();
}

function jwtClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return null;
  }
}

function renderVoter() {
  const session = currentSession();
  view.signedOut.hidden = session !== null;
  view.signedIn.hidden = session === null;
  view.voterName.textContent = session ? session.name || session.subject : "";
}

async function signIn() {
  const { oidc, demo } = await signInMethods();
  if (oidc || demo) {
    goSignIn(location.pathname + location.search); // and back here, signed in
    return;
  }
  // No sign-in on this server: the token path is all there is.
  view.signInNote.hidden = false;
  view.signInNote.textContent =
    "This Tally has no sign-in set up: use a token from your identity provider below.";
  view.advanced.open = true;
  view.token.focus();
}

function signOut() {
  forgetSession();
  renderVoter();
  current.feed?.refresh();
}

// ---- start ---------------------------------------------------------------------------------

function start() {
  view.signIn.addEventListener("click", signIn);
  view.signOut.addEventListener("click", signOut);
  view.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = view.token.value.trim();
    view.token.value = "";
    if (token) useBearer(token);
  });
  window.addEventListener("popstate", () => select(askedPollId()));
  renderVoter();
  showPolls();
}

async function showPolls() {
  if (!(await loadPolls())) {
    showUnreachable(showPolls);
    return;
  }
  select(askedPollId());
  setInterval(loadPolls, POLL_LIST_REFRESH_MS);
}

start();
