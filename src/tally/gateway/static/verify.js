// The "verify my vote" page: takes a receipt (this browser's `tally.receipts` for ?poll=, a file or
// a paste), runs verify.ledger.js's checks step by step, and says in words what they proved and
// what they did not. The checks are verify.ledger.js's; this module only shows them.

import {
  CheckFailed,
  NotYet,
  STEPS,
  Unsupported,
  hexId,
  parseReceipt,
  verifyReceipt,
} from "/static/verify.ledger.js";

const RECEIPTS_KEY = "tally.receipts"; // poll id -> receipt, written by the voting page
const $ = (id) => document.getElementById(id);

let current = null; // the receipt being checked (parsed), for "Check again"

function storedReceipt(pollId) {
  try {
    const all = JSON.parse(localStorage.getItem(RECEIPTS_KEY) ?? "{}");
    return all && typeof all === "object" ? (all[pollId] ?? null) : null;
  } catch {
    return null;
  }
}

function setStep(step, state, text = "") {
  const item = document.querySelector(`#steps li[data-step="${step}"]`);
  item.dataset.state = state;
  item.querySelector(".result").textContent = text;
}

function setVerdict(verdict, text) {
  const element = $("verdict");
  element.dataset.verdict = verdict;
  element.textContent = text;
}

function showReceipt(receipt) {
  const rows = [
    ["Poll", receipt.pollId],
    ["Option", receipt.option],
    ["Lane, entry", `lane ${receipt.lane}, entry ${receipt.entryId}`],
    ["Accepted", receipt.acceptedAt],
    ["Status", receipt.status ?? "accepted"],
  ];
  const list = $("receipt-summary");
  list.replaceChildren(
    ...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      return [dt, dd];
    }),
  );
  list.hidden = false;
  $("back").href = `/?poll=${encodeURIComponent(receipt.pollId)}`;
}

async function pollInfo(pollId) {
  // Only for the words: the title and the option's label. The proof does not depend on them.
  try {
    const answer = await fetch(`/v1/polls/${encodeURIComponent(pollId)}`);
    return answer.ok ? await answer.json() : null;
  } catch {
    return null;
  }
}

function item(text) {
  const li = document.createElement("li");
  li.textContent = text;
  return li;
}

/** What a held vote's status means, once step 3 found (and proved) the reviewer's decision. */
function heldMeaning(receipt, decision) {
  if (decision === null) {
    return (
      "Your vote was held for review when it was cast: it is in the ledger, but it counts only if " +
      "a reviewer releases it, and the signed log holds no decision on it yet. Check again later."
    );
  }
  const what = decision.decision === "released" ? "released it: it counts" : "voided it: it is not counted";
  return (
    `Your vote was held for review when it was cast, and a reviewer ${what}. The decision, made at ` +
    `${new Date(decision.decidedMs).toISOString()}, is entry ${decision.seq} of lane ${receipt.lane}, ` +
    "proved in the same signed log."
  );
}

function explain(facts, poll) {
  const { receipt, checkpoint, laneKey, admittedBy } = facts;
  const option = poll?.options?.find((o) => o.id === receipt.option);
  const choice = option ? `“${option.label}”` : `“${receipt.option}”`;
  if (option) $("receipt-summary").querySelector("dd:nth-of-type(2)").textContent = `${option.label} (${option.id})`;
  const pollName = poll?.title ? `“${poll.title}” (${receipt.pollId})` : receipt.pollId;
  let proved =
    `Your vote for ${choice} is in the public ledger of poll ${pollName}, at entry ${receipt.entryId} ` +
    `of lane ${receipt.lane}, in the tree of ${checkpoint.size} entr${checkpoint.size === 1 ? "y" : "ies"} ` +
    `signed by ${laneKey.name} (key ID ${hexId(laneKey.keyId)}), as checked at ${new Date().toISOString()}.`;
  if (admittedBy) {
    proved +=
      ` The gateway's signature (${admittedBy.name}, key ID ${hexId(admittedBy.keyId)}) shows it ` +
      `admitted this vote at ${receipt.admission.admittedAt}.`;
  } else {
    proved += " The vote carries no gateway admission signature.";
  }
  if (facts.certificate) {
    proved +=
      ` The poll's signed result certificate closes lane ${receipt.lane} at that same tree: your vote is ` +
      "among the records its counts are made from.";
  }
  $("proved").textContent = proved;
  const held = facts.record.status === "held" ? heldMeaning(receipt, facts.decision) : null;
  $("status-meaning").textContent = held ?? "";
  $("status-meaning").hidden = held === null;
  $("not-proved").replaceChildren(
    item(
      "It does not prove the final count. That is the auditor's recount of every vote against the " +
        "signed result certificate: tally audit verify (docs/ledger-format.md §5).",
    ),
    item("It does not show that the other votes in the ledger are genuine, or that nobody voted twice."),
    item(
      `The keys came from this server. Compare the ledger key ID ${hexId(facts.keys.ledger.keyId)}` +
        (admittedBy ? ` and the gateway key ID ${hexId(admittedBy.keyId)}` : "") +
        " with the ones the organiser publishes elsewhere: a server that rewrote its ledger could serve a new key.",
    ),
    item("It does not reveal or prove who you are: the ledger holds only a pseudonym."),
  );
  $("meaning").hidden = false;
}

async function check(receipt) {
  current = receipt;
  $("retry").hidden = true;
  $("meaning").hidden = true;
  for (const step of STEPS) setStep(step, "idle");
  setVerdict("running", "Checking…");
  showReceipt(receipt);
  let running = STEPS[0];
  setStep(running, "running");
  const report = (step, state, text) => {
    setStep(step, state, text);
    const next = STEPS[STEPS.indexOf(step) + 1];
    if ((state === "ok" || state === "none") && next) {
      running = next;
      setStep(next, "running");
    }
  };
  const info = pollInfo(receipt.pollId);
  try {
    const facts = await verifyReceipt(receipt, { report });
    explain(facts, await info);
    setVerdict("ok", "Verified: your vote is in the signed public ledger, as your receipt says.");
  } catch (error) {
    for (const step of STEPS.slice(STEPS.indexOf(running) + 1)) setStep(step, "skipped");
    if (error instanceof NotYet) {
      setVerdict("waiting", `Not verified yet: ${error.message}`);
      $("retry").hidden = false;
    } else if (error instanceof Unsupported) {
      setVerdict("unsupported", `Cannot verify in this browser: ${error.message}`);
    } else if (error instanceof CheckFailed) {
      const number = STEPS.indexOf(error.step) + 1;
      setVerdict("failed", `Verification FAILED at step ${number} (${error.code}): ${error.message}`);
    } else {
      setStep(running, "failed", String(error?.message ?? error));
      setVerdict("failed", `Verification FAILED at step ${STEPS.indexOf(running) + 1}: ${error?.message ?? error}`);
    }
  }
}

function start(doc, where) {
  let receipt;
  try {
    receipt = parseReceipt(doc);
  } catch (error) {
    setVerdict("invalid", `This is not a receipt: ${error.message}`);
    return;
  }
  $("source").textContent = where;
  check(receipt);
}

$("retry").addEventListener("click", () => current && check(current));

$("receipt-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("receipt-file").files[0];
  const pasted = $("receipt-text").value.trim();
  if (pasted) start(pasted, "Checking the receipt you pasted.");
  else if (file) start(await file.text(), `Checking the receipt file ${file.name}.`);
  else setVerdict("invalid", "Choose your receipt file or paste your receipt first.");
});

$("receipt-file").addEventListener("change", async () => {
  const file = $("receipt-file").files[0];
  if (file) start(await file.text(), `Checking the receipt file ${file.name}.`);
});

const pollId = new URLSearchParams(location.search).get("poll");
if (pollId) {
  const stored = storedReceipt(pollId);
  if (stored) start(stored, `Checking the receipt this browser kept for poll ${pollId}.`);
  else {
    $("source").textContent =
      `This browser holds no receipt for poll ${pollId}. Choose your receipt file or paste it below.`;
  }
} else {
  $("source").textContent = "Choose your receipt file or paste it below.";
}
