// The presenter screen, /present/{poll_id}: a poll's live results for a hall's big screen.
// Bars follow every snapshot (live.js: WebSocket, else SSE, else polling); beside them the QR
// code and join code that get a phone to the voting page, a countdown to the deadline, and at
// close the winner (ties said as ties) with the SHA-256 fingerprint of the poll's certificate,
// which anyone can recompute from /ledger/{poll}/certificate.
//
// The screen shows what its viewer may see (contract: result visibility): signed in as an
// organiser (session.js) it sends that credential and sees counts at all times; otherwise a
// poll hiding its counts shows turnout only until they are revealed.

import { follow } from "/static/live.js";

const RATE_WINDOW_MS = 5000; // votes/s over the last five seconds: steady, yet quick to follow
const CERTIFICATE_RETRY_MS = 2000; // the archiver certifies a closed poll within a few seconds
const HIDDEN_TEXT = {
  "until-close": "Results revealed at close",
  "until-vote": "Results are shown to each voter once they have voted",
};
const BANNER = { draft: "Voting opens soon", open: "Voting is open", closed: "Voting has closed" };

const $ = (id) => document.getElementById(id);
const pollId = decodeURIComponent(location.pathname.split("/")[2] ?? "");
const session = await import("/static/session.js").catch(() => null); // absent: no sign-in
const authHeaders = () => session?.authHeaders?.() ?? {};
const token = () => session?.currentSession?.()?.token ?? null;

let poll = null;
let lastSeq = -1;
let latest = null; // the newest results or snapshot document
let clockSkewMs = 0; // server clock minus ours, from the Date header
let certificateAsked = false;
const samples = []; // [arrival ms, total], for votes/s

start();

async function start() {
  if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(pollId)) {
    showMissing();
    return;
  }
  let response;
  try {
    response = await fetch(`/v1/polls/${pollId}`, { headers: authHeaders(), cache: "no-store" });
  } catch {
    $("banner").textContent = "Cannot reach Tally; reload to try again";
    return;
  }
  if (response.status === 404 || response.status === 400) {
    showMissing();
    return;
  }
  poll = await response.json();
  const serverDate = Date.parse(response.headers.get("Date") ?? "");
  if (!Number.isNaN(serverDate)) clockSkewMs = serverDate - Date.now();
  document.title = `${poll.title} · Tally`;
  $("title").textContent = poll.title;
  buildBars(poll.options);
  setState(poll.state);
  showJoin();
  follow(pollId, onDoc, onMode, token);
  setInterval(tick, 250);
}

function showMissing() {
  document.title = "No such poll · Tally";
  $("stage").dataset.state = "missing";
  $("missing").hidden = false;
}

function buildBars(options) {
  const list = $("bars");
  list.replaceChildren();
  list.style.setProperty("--rows", String(Math.max(3, options.length)));
  for (const option of options) {
    const item = document.createElement("li");
    item.dataset.option = option.id;
    item.dataset.count = "0";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = option.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    track.append(fill);
    const figures = document.createElement("span");
    figures.className = "figures";
    figures.textContent = "0";
    item.append(label, track, figures);
    list.append(item);
  }
}

async function showJoin() {
  const code = poll.join_code ?? "";
  $("join-code").textContent = code;
  let url = `${location.origin}/j/${code}`;
  try {
    const response = await fetch(`/v1/polls/${pollId}/qr.svg`, { headers: authHeaders() });
    if (response.ok) {
      const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
      const root = svg.documentElement;
      // The QR code's title is the very URL it encodes (TALLY_PUBLIC_URL's origin, if set).
      url = root.querySelector("title")?.textContent || url;
      root.querySelector("title")?.remove(); // the container names it; no hover tooltip
      $("qr").replaceChildren(document.importNode(root, true));
    }
  } catch {
    // No QR code: the join URL and code below still get people there.
  }
  const link = $("join-url");
  link.href = url;
  link.textContent = url.replace(/^https?:\/\//, "");
}

function onMode(mode) {
  $("live").dataset.mode = mode;
  $("live-text").textContent = mode === "reconnecting" || mode === "offline" ? mode : "live";
}

function onDoc(doc) {
  if (doc.type === "snapshot") {
    if (doc.seq <= lastSeq) return; // an older snapshot after a reconnect
    lastSeq = doc.seq;
  }
  latest = doc;
  samples.push([Date.now(), doc.total]);
  render(doc);
}

function render(doc) {
  setState(doc.state);
  $("total").textContent = doc.total.toLocaleString("en");
  $("total-word").textContent = doc.total === 1 ? "vote" : "votes";
  const review = $("review");
  review.hidden = !doc.under_review;
  review.textContent = `${doc.under_review} held for review`;
  const counts = doc.counts;
  $("bars").dataset.hidden = counts === null ? "true" : "false";
  const note = $("hidden-note");
  note.hidden = counts !== null;
  note.textContent = counts === null ? (HIDDEN_TEXT[doc.hidden] ?? "Results are hidden") : "";
  if (counts !== null) drawBars(counts, doc.total);
  reveal(doc);
}

function drawBars(counts, total) {
  const top = Math.max(1, ...Object.values(counts));
  for (const item of $("bars").children) {
    const count = counts[item.dataset.option] ?? 0;
    item.dataset.count = String(count);
    // The leader's bar spans the track; the others in proportion (percent is of all votes).
    item.querySelector(".fill").style.width = `${(100 * count) / top}%`;
    const percent = total ? Math.round((100 * count) / total) : 0;
    item.querySelector(".figures").textContent = `${count.toLocaleString("en")} · ${percent}%`;
  }
}

function setState(state) {
  $("stage").dataset.state = state;
  $("banner").textContent = BANNER[state] ?? state;
  $("banner").dataset.state = state;
}

function reveal(doc) {
  const section = $("reveal");
  if (doc.state !== "closed") {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  $("join").hidden = true; // nothing left to join: the result takes its place
  const counts = doc.counts;
  for (const item of $("bars").children) delete item.dataset.winner;
  if (counts === null) {
    $("reveal-word").textContent = "Results";
    $("winner").textContent = "hidden";
    $("winner-figures").textContent = "";
  } else if (doc.total === 0) {
    $("reveal-word").textContent = "Result";
    $("winner").textContent = "No votes";
    $("winner-figures").textContent = "";
  } else {
    const top = Math.max(...Object.values(counts));
    const winners = poll.options.filter((option) => (counts[option.id] ?? 0) === top);
    for (const item of $("bars").children) {
      if ((counts[item.dataset.option] ?? 0) === top) item.dataset.winner = "true";
    }
    const percent = Math.round((100 * top) / doc.total);
    const votes = `${top.toLocaleString("en")} ${top === 1 ? "vote" : "votes"}`;
    if (winners.length === 1) {
      $("reveal-word").textContent = "Winner";
      $("winner").textContent = winners[0].label;
      $("winner-figures").textContent = `${votes} · ${percent}%`;
    } else {
      $("reveal-word").textContent = `${winners.length}-way tie`;
      $("winner").textContent = listed(winners.map((option) => option.label));
      $("winner-figures").textContent = `${votes} each · ${percent}% each`;
    }
  }
  if (!certificateAsked) {
    certificateAsked = true;
    fetchCertificate();
  }
}

function listed(labels) {
  return labels.length <= 2
    ? labels.join(" and ")
    : `${labels.slice(0, -1).join(", ")} and ${labels.at(-1)}`;
}

// The certificate exists once the archiver has ledgered the close and signed the counts; until
// then it is a 404, asked again every few seconds.
async function fetchCertificate() {
  try {
    const response = await fetch(`/ledger/${pollId}/certificate`, { cache: "no-store" });
    if (response.ok) {
      const digest = await crypto.subtle.digest("SHA-256", await response.arrayBuffer());
      const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0"));
      const groups = [];
      for (let i = 0; i < hex.length; i += 2) groups.push(hex[i] + hex[i + 1]);
      // Four lines of four groups: read out, and compared, a line at a time.
      const lines = [0, 4, 8, 12].map((i) => groups.slice(i, i + 4).join(" "));
      $("fingerprint").textContent = lines.join("\n");
      $("certificate").dataset.state = "certified";
      return;
    }
  } catch {
    // offline for a moment: ask again
  }
  setTimeout(fetchCertificate, CERTIFICATE_RETRY_MS);
}

function tick() {
  showRate();
  showCountdown();
}

function showRate() {
  const now = Date.now();
  if (!latest || samples.length === 0) return;
  // The total as it was RATE_WINDOW_MS ago (the last sample at or before then), or the first.
  while (samples.length > 1 && samples[1][0] <= now - RATE_WINDOW_MS) samples.shift();
  const [since, before] = samples[0];
  const elapsed = Math.max(now - since, 1000);
  const rate = Math.max(0, latest.total - before) / (elapsed / 1000);
  $("rate").textContent = rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString("en");
}

function showCountdown() {
  const box = $("countdown");
  const state = latest?.state ?? poll.state;
  if (!poll.closes_at || state !== "open") {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const left = Date.parse(poll.closes_at) - (Date.now() + clockSkewMs);
  const time = $("countdown-time");
  time.dateTime = poll.closes_at;
  if (left <= 0) {
    time.textContent = "0:00";
    box.dataset.ending = "true";
    return;
  }
  const seconds = Math.ceil(left / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  time.textContent = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  box.dataset.ending = seconds <= 10 ? "true" : "false";
}
