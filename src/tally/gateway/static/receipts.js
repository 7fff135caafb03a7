// The voter's receipts, kept in this browser so that the page can show, after a reload, which
// option this browser voted for, and the verify page (/verify?poll=<id>) can check the vote.
// localStorage `tally.receipts` = JSON object poll id -> the receipt document exactly as the
// vote's answer gave it (its `receipt` member). A download holds the same document: the verify
// page and `tally audit receipt` read it bare or as a vote reply's {"receipt": {...}}.

const RECEIPTS_KEY = "tally.receipts";
const memory = {}; // where localStorage is disabled: kept for this page only

function readAll() {
  try {
    const stored = JSON.parse(localStorage.getItem(RECEIPTS_KEY) ?? "{}");
    return stored && typeof stored === "object" && !Array.isArray(stored) ? stored : {};
  } catch {
    return memory;
  }
}

/** The receipt this browser holds for `pollId`, or null. */
export function storedReceipt(pollId) {
  const receipt = readAll()[pollId];
  return receipt && typeof receipt === "object" && receipt.poll_id === pollId ? receipt : null;
}

/** Keep `receipt` as this browser's receipt for its poll (a repeat vote's answer is the same). */
export function storeReceipt(receipt) {
  const all = readAll();
  all[receipt.poll_id] = receipt;
  memory[receipt.poll_id] = receipt;
  try {
    localStorage.setItem(RECEIPTS_KEY, JSON.stringify(all));
  } catch {
    // storage disabled or full: `memory` holds it until the page goes
  }
}

/** The file name a saved receipt gets. */
export function receiptFileName(pollId) {
  return `tally-receipt-${pollId}.json`;
}

/** A blob: URL of the receipt as a JSON file; revoke it when the link it serves goes. */
export function receiptFileUrl(receipt) {
  const file = new Blob([JSON.stringify(receipt, null, 2) + "\n"], { type: "application/json" });
  return URL.createObjectURL(file);
}

/** Where the verify page checks this poll's receipt. */
export function verifyHref(pollId) {
  return `/verify?poll=${encodeURIComponent(pollId)}`;
}
