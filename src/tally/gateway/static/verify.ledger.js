// "Verify my vote", the checks themselves: pure (no DOM), so the page and the tests run the same
// code. It does in the browser what `tally audit receipt` does (src/tally/audit/receipt*.py), with
// WebCrypto only (Ed25519 and SHA-256), against the files the server publishes
// (docs/ledger-format.md §4, §5.5, §10, §14). Nothing here trusts the server's JSON for what a
// signature covers: sizes and roots come from the signed checkpoint, the record from its hash.

const EM_DASH_PREFIX = "\u2014 ";
const ED25519 = 0x01; // signed-note signature type of an Ed25519 key (§4.4)
const MAX_SIGNATURES = 100;
const HASH_SIZE = 32;
const PSEUDONYM_SIZE = 16;
const ADMISSION_CONTEXT = "tally-admission/v1\n";
// accepted - admitted must lie in [-MAX_CLOCK_SKEW_MS, MAX_ADMISSION_AGE_MS] (§14.3).
const MAX_ADMISSION_AGE_MS = 300000;
const MAX_CLOCK_SKEW_MS = 5000;
const ADMISSION_SEGMENT = "/admission/";
const STATUSES = ["accepted", "held", "released", "voided"];
const STATUS_BYTE = { 1: "accepted", 2: "held", 3: "voided" };

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** A check that failed: `step` names the page's step, `code` is `tally audit receipt`'s finding
 * code for the same failure (receipt.py RECEIPT_CODES), so both verifiers can be compared. */
export class CheckFailed extends Error {
  constructor(step, code, message) {
    super(message);
    this.step = step;
    this.code = code;
  }
}

/** The receipt is not in the ledger's published checkpoint yet: not a failure, ask again later. */
export class NotYet extends Error {
  constructor(step, message) {
    super(message);
    this.step = step;
  }
}

/** The browser cannot do a check (no Ed25519 in its WebCrypto): said plainly, never skipped. */
export class Unsupported extends Error {}

// ---- bytes -----------------------------------------------------------------------------------

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function u16(value) {
  return new Uint8Array([(value >> 8) & 0xff, value & 0xff]);
}

function u32(value) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

function u64(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

/** Standard base64 with padding, canonical only (zero padding bits), as notes require (§4.3);
 * null for anything else. */
export function fromBase64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    return null;
  }
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return toBase64(bytes) === text ? bytes : null;
}

export function toBase64(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

// ---- hashing (RFC 6962 / RFC 9162 §2.1) --------------------------------------------------------

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function leafHash(record) {
  return sha256(concat(new Uint8Array([0x00]), record));
}

function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([0x01]), left, right));
}

/** RFC 9162 §2.1.3.2, as docs/ledger-format.md §5 step 5 writes it: the root `proof` leads to
 * from leaf `index` of a tree of `size` leaves, or null when the proof's length is wrong. */
export async function rootFromInclusion(leaf, index, size, proof) {
  if (index >= size) return null;
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) return null;
    if (fn % 2n === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2n === 0n) {
        while (fn % 2n === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

// ---- keys and signed notes (C2SP signed-note, §4.3-4.4) ------------------------------------------

export async function keyId(name, publicKey, type = ED25519) {
  const digest = await sha256(concat(encoder.encode(name), new Uint8Array([0x0a, type]), publicKey));
  return new DataView(digest.buffer).getUint32(0);
}

function validName(name) {
  return name.length > 0 && !/[\s+\u0000-\u001f\u007f]/u.test(name);
}

/** A verifier key string `<name>+<key ID hex>+<base64(0x01 || public key)>`, its key ID checked. */
export async function parseVerifierKey(text) {
  // name+id+key: the name has no "+", base64 may (sumdb/note splits at the first two).
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  const parts = second < 0 ? [] : [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
  if (parts.length !== 3 || !validName(parts[0]) || !/^[0-9a-f]{8}$/.test(parts[1])) {
    throw new Error(`not a verifier key: ${text}`);
  }
  const material = fromBase64(parts[2]);
  if (material === null || material.length !== 33 || material[0] !== ED25519) {
    throw new Error(`not an Ed25519 verifier key: ${text}`);
  }
  const publicKey = material.slice(1);
  const id = await keyId(parts[0], publicKey);
  if (id !== parseInt(parts[1], 16)) throw new Error(`the key ID of ${text} does not match its key`);
  return { name: parts[0], keyId: id, publicKey, text };
}

/** The verifier key of `key` under another name (same public key, so another key ID, §4.2). */
export async function renamed(key, name) {
  const id = await keyId(name, key.publicKey);
  const text = `${name}+${id.toString(16).padStart(8, "0")}+${toBase64(concat(new Uint8Array([ED25519]), key.publicKey))}`;
  return { name, keyId: id, publicKey: key.publicKey, text };
}

/** `GET /ledger/keys`: the ledger key's line, then `<verifier key> <not before ms> <not after ms>`
 * per gateway admission key (§7.3, §14.2). */
export async function parseKeys(text) {
  const lines = text.split("\n").filter((line) => line !== "");
  if (lines.length === 0) throw new Error("the key list is empty");
  const ledger = await parseVerifierKey(lines[0].split(" ")[0]);
  const admission = [];
  for (const line of lines.slice(1)) {
    const words = line.split(" ");
    if (!words[0].split("+")[0].includes(ADMISSION_SEGMENT)) continue;
    const key = await parseVerifierKey(words[0]);
    const [notBefore, notAfter] = [words[1] ?? "0", words[2] ?? "0"].map(Number);
    if (!Number.isSafeInteger(notBefore) || !Number.isSafeInteger(notAfter)) {
      throw new Error(`an admission key's validity is not two integers: ${line}`);
    }
    admission.push({ ...key, notBefore, notAfter });
  }
  return { ledger, admission };
}

async function ed25519Key(publicKey) {
  try {
    return await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (error) {
    if (error && error.name === "NotSupportedError") {
      throw new Unsupported(
        "this browser's WebCrypto has no Ed25519, so it cannot check the ledger's signatures " +
          "(use a current Chromium, Firefox or Safari, or `tally audit receipt`)",
      );
    }
    throw error;
  }
}

/** Whether `signature` is `key`'s Ed25519 signature of `message`. */
export async function ed25519Verify(publicKey, signature, message) {
  const key = await ed25519Key(publicKey);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

/** Open a signed note with one verifier key, as tally.ledger.note.open does: signatures by other
 * keys (name and key ID) are ignored, the key's own must verify, and one of them must be there.
 * Returns the note's text (the signed body); throws Error with the reason. */
export async function openNote(note, key) {
  if (/[\u0000-\u0009\u000b-\u001f]/.test(note)) throw new Error("the note holds a control character");
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new Error("the note has no signature block");
  const body = note.slice(0, split + 1);
  const lines = note.slice(split + 2, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw new Error("the note has too many signatures");
  let verified = 0;
  for (const line of lines) {
    if (!line.startsWith(EM_DASH_PREFIX)) throw new Error(`not a signature line: ${line}`);
    const [name, encoded, ...rest] = line.slice(EM_DASH_PREFIX.length).split(" ");
    const signature = fromBase64(encoded);
    if (rest.length || !validName(name) || signature === null || signature.length < 5) {
      throw new Error(`a malformed signature line: ${line}`);
    }
    const id = new DataView(signature.buffer).getUint32(0);
    if (name !== key.name || id !== key.keyId) continue; // another key's (a witness...)
    if (signature.length !== 68) throw new Error(`${key.name}'s signature is not 64 bytes`);
    if (!(await ed25519Verify(key.publicKey, signature.slice(4), encoder.encode(body)))) {
      throw new Error(`the signature by ${key.name} (key ID ${hexId(key.keyId)}) does not verify`);
    }
    verified++;
  }
  if (verified === 0) {
    throw new Error(`no signature by ${key.name} (key ID ${hexId(key.keyId)}) in the note`);
  }
  return body;
}

export function hexId(id) {
  return id.toString(16).padStart(8, "0");
}

/** A checkpoint body (C2SP tlog-checkpoint, §4.1), parsed strictly; its origin must be `origin`. */
export function parseCheckpoint(body, origin) {
  const lines = body.split("\n");
  if (lines.length < 4) throw new Error("a checkpoint has an origin, a size and a root");
  if (lines[0] !== origin) throw new Error(`the checkpoint is of ${lines[0]}, not of ${origin}`);
  if (!/^(0|[1-9][0-9]{0,19})$/.test(lines[1]) || BigInt(lines[1]) >= 2n ** 64n) {
    throw new Error(`the tree size ${JSON.stringify(lines[1])} is not a decimal number`);
  }
  const root = fromBase64(lines[2]);
  if (root === null || root.length !== HASH_SIZE) throw new Error("the root is not 32 bytes of base64");
  return { origin, size: Number(lines[1]), root };
}

// ---- records (§2.1, §14.1) and receipts (§10.1, §14.4) --------------------------------------------

/** Parse a receipt (bare, or a vote answer's `{"receipt": {...}}`) as receipt_parse.py does;
 * throws Error saying what is wrong. */
export function parseReceipt(doc) {
  if (typeof doc === "string") {
    try {
      doc = JSON.parse(doc);
    } catch (error) {
      throw new Error(`not JSON: ${error.message}`);
    }
  }
  if (doc && typeof doc === "object" && doc.receipt && typeof doc.receipt === "object") {
    doc = doc.receipt;
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("a receipt is a JSON object");
  const fields = ["poll_id", "lane", "entry_id", "option", "accepted_at", "leaf_hash"];
  const missing = fields.filter((name) => !(name in doc));
  if (missing.length) throw new Error(`the receipt lacks ${missing.join(", ")}`);
  const { poll_id: pollId, lane, entry_id: entryId, option, leaf_hash: leafHex } = doc;
  if (typeof pollId !== "string" || !pollId || pollId.includes("/")) throw new Error("poll_id must be a poll id");
  if (!Number.isInteger(lane) || lane < 0 || lane > 0xffff) throw new Error("lane must be an integer from 0 to 65535");
  if (!Number.isSafeInteger(entryId) || entryId < 1) throw new Error("entry_id must be an integer from 1");
  if (typeof option !== "string" || !option) throw new Error("option must be an option id");
  if (typeof leafHex !== "string" || !/^[0-9a-f]{64}$/.test(leafHex)) {
    throw new Error("leaf_hash must be 64 lowercase hex digits");
  }
  const status = doc.status ?? null;
  if (status !== null && !STATUSES.includes(status)) {
    throw new Error(`status must be one of ${STATUSES.join(", ")}`);
  }
  const pseudonym = doc.pseudonym ?? null;
  if (pseudonym !== null && (typeof pseudonym !== "string" || !/^[0-9a-f]{32}$/.test(pseudonym))) {
    throw new Error("pseudonym must be 32 lowercase hex digits");
  }
  const admission = parseAdmission(doc.admission ?? null);
  if (admission !== null && pseudonym === null) {
    throw new Error("a receipt with an admission must carry its pseudonym");
  }
  const pollBytes = encoder.encode(pollId);
  const optionBytes = encoder.encode(option);
  if (pollBytes.length > 255 || optionBytes.length > 255) {
    throw new Error("poll and option ids must be 1 to 255 bytes of UTF-8");
  }
  return {
    pollId,
    lane,
    entryId,
    index: entryId - 1,
    option,
    acceptedAt: doc.accepted_at,
    acceptedMs: isoMs(doc.accepted_at, "accepted_at"),
    leafHash: fromHex(leafHex),
    status,
    pseudonym: pseudonym === null ? null : fromHex(pseudonym),
    admission,
  };
}

function parseAdmission(value) {
  if (value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) throw new Error("admission must be an object");
  const missing = ["key_id", "admitted_at", "signature"].filter((name) => !(name in value));
  if (missing.length) throw new Error(`the admission lacks ${missing.join(", ")}`);
  if (typeof value.key_id !== "string" || !/^[0-9a-f]{8}$/.test(value.key_id)) {
    throw new Error("admission.key_id must be 8 lowercase hex digits");
  }
  if (typeof value.signature !== "string" || !/^[0-9a-f]{128}$/.test(value.signature)) {
    throw new Error("admission.signature must be 128 lowercase hex digits");
  }
  return {
    keyId: parseInt(value.key_id, 16),
    admittedAt: value.admitted_at,
    admittedMs: isoMs(value.admitted_at, "admission.admitted_at"),
    signature: fromHex(value.signature),
  };
}

function isoMs(text, name) {
  if (typeof text !== "string") throw new Error(`${name} must be an ISO 8601 time`);
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$/.test(text)) {
    throw new Error(`${name} is not an ISO 8601 time with its time zone: ${JSON.stringify(text)}`);
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`${name} is not a valid time: ${JSON.stringify(text)}`);
  return ms;
}

export function isoOf(ms) {
  return new Date(ms).toISOString();
}

/** The status byte a receipt's record carries: a vote cast held stays held (released, voided). */
function recordStatus(receipt) {
  return receipt.status === null || receipt.status === "accepted" ? 0x01 : 0x02;
}

/** The vote record the receipt describes (version 0x02 with its admission, else 0x01), or null
 * for an older receipt without the pseudonym (the voter cannot rebuild it then). */
export function receiptRecord(receipt) {
  if (receipt.pseudonym === null) return null;
  const poll = encoder.encode(receipt.pollId);
  const option = encoder.encode(receipt.option);
  const admission = receipt.admission;
  return concat(
    new Uint8Array([admission ? 0x02 : 0x01, 0x01, poll.length]),
    poll,
    u16(receipt.lane),
    u64(receipt.entryId),
    receipt.pseudonym,
    new Uint8Array([option.length]),
    option,
    u64(receipt.acceptedMs),
    new Uint8Array([recordStatus(receipt)]),
    admission ? concat(u64(admission.admittedMs), u32(admission.keyId), admission.signature) : new Uint8Array(),
  );
}

/** Decode a vote record (§2.1, §14.1) strictly; throws Error for anything else. */
export function decodeVoteRecord(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const take = (n) => {
    if (at + n > bytes.length) throw new Error("the record is cut short");
    const out = bytes.slice(at, at + n);
    at += n;
    return out;
  };
  const [version, type] = take(2);
  if (type === 0x03) throw new Error("the entry is a review record, not a vote");
  if (type !== 0x01 || (version !== 0x01 && version !== 0x02)) {
    throw new Error(`not a vote record (version ${version}, type ${type})`);
  }
  const pollId = strictUtf8.decode(take(take(1)[0]));
  const laneAt = at;
  take(2 + 8);
  const lane = view.getUint16(laneAt);
  const seq = Number(view.getBigUint64(laneAt + 2));
  const pseudonym = take(PSEUDONYM_SIZE);
  const option = strictUtf8.decode(take(take(1)[0]));
  const acceptedMs = Number(view.getBigUint64(at));
  take(8);
  const statusByte = take(1)[0];
  let admission = null;
  if (version === 0x02) {
    const admittedMs = Number(view.getBigUint64(at));
    take(8);
    const keyIdValue = view.getUint32(at);
    take(4);
    admission = { admittedMs, keyId: keyIdValue, signature: take(64) };
  }
  if (at !== bytes.length) throw new Error("the record has bytes left over");
  if (!(statusByte in STATUS_BYTE)) throw new Error(`status ${statusByte} is not a vote status`);
  return { version, pollId, lane, seq, pseudonym, option, acceptedMs, status: STATUS_BYTE[statusByte], admission };
}

/** The bytes an admission signature covers (§14.1). */
export function admissionMessage(receipt) {
  const poll = encoder.encode(receipt.pollId);
  const option = encoder.encode(receipt.option);
  const admission = receipt.admission;
  return concat(
    encoder.encode(ADMISSION_CONTEXT),
    new Uint8Array([poll.length]),
    poll,
    receipt.pseudonym,
    new Uint8Array([option.length]),
    option,
    new Uint8Array([recordStatus(receipt)]),
    u64(admission.admittedMs),
    u32(admission.keyId),
  );
}

// ---- the whole check --------------------------------------------------------------------------

export const STEPS = ["keys", "checkpoint", "inclusion", "admission", "certificate"];

/** Check `receipt` (parsed) against the ledger served at `base` (the page's origin). `report(step,
 * state, text)` hears each step as it ends: state "ok", "failed", "waiting", "none" (nothing to
 * check) or "unsupported". Returns the facts for the summary; throws CheckFailed, NotYet or
 * Unsupported at the first step that cannot pass (the step has been reported). */
export async function verifyReceipt(receipt, { base = "", fetcher: fetchOnce = fetch, report = () => {} } = {}) {
  const facts = { receipt };
  // A request that gets no answer at all (offline, server restarting) proves nothing either way:
  // the step waits, and "Check again" asks again.
  const fetcher = async (url) => {
    try {
      return await fetchOnce(url);
    } catch (error) {
      throw new NotYet(null, `no answer from the server (${error.message}): check your connection and try again`);
    }
  };
  const guard = async (step, work) => {
    try {
      return await work();
    } catch (error) {
      if (error instanceof NotYet) {
        error.step ??= step;
        report(step, "waiting", error.message);
      }
      else if (error instanceof Unsupported) report(step, "unsupported", error.message);
      else if (error instanceof CheckFailed) report(step, "failed", error.message);
      else {
        report(step, "failed", error.message);
        throw new CheckFailed(step, "error", error.message);
      }
      throw error;
    }
  };

  // 1. The published keys.
  const keys = await guard("keys", async () => {
    const answer = await fetcher(`${base}/ledger/keys`);
    if (answer.status === 404) throw new NotYet("keys", "the server has published no ledger key yet");
    if (!answer.ok) throw new CheckFailed("keys", "missing-file", `GET /ledger/keys answered ${answer.status}`);
    try {
      return await parseKeys(await answer.text());
    } catch (error) {
      throw new CheckFailed("keys", "bad-key", `the published keys do not parse: ${error.message}`);
    }
  });
  facts.keys = keys;
  const gateways = keys.admission.map((k) => `${k.name} (key ID ${hexId(k.keyId)})`);
  report(
    "keys",
    "ok",
    `Ledger key ${keys.ledger.name} (key ID ${hexId(keys.ledger.keyId)})` +
      (gateways.length ? `; gateway admission key${gateways.length > 1 ? "s" : ""} ${gateways.join(", ")}` : "; no gateway admission key") +
      ".",
  );

  // 2. The lane's latest checkpoint, signed by the ledger key under the lane's name.
  const origin = `${keys.ledger.name}/${receipt.pollId}/${receipt.lane}`;
  const laneKey = await renamed(keys.ledger, origin);
  facts.laneKey = laneKey;
  const checkpointPath = `/ledger/${encodeURIComponent(receipt.pollId)}/${receipt.lane}/checkpoint`;
  const latest = await guard("checkpoint", async () => {
    const answer = await fetcher(base + checkpointPath);
    if (answer.status === 404) {
      throw new NotYet("checkpoint", `lane ${receipt.lane} of poll ${receipt.pollId} has no signed checkpoint yet`);
    }
    if (!answer.ok) throw new CheckFailed("checkpoint", "missing-file", `GET ${checkpointPath} answered ${answer.status}`);
    const note = await answer.text();
    const checkpoint = await openCheckpoint(note, laneKey, origin, "checkpoint");
    if (receipt.index >= checkpoint.size) {
      const final = await certifiedLane(keys.ledger, receipt, base, fetcher);
      if (final !== null && receipt.index >= final.size) {
        throw new CheckFailed(
          "checkpoint",
          "missing-from-final-log",
          `MISSING FROM THE FINAL LOG: the poll is closed and certified, and lane ${receipt.lane}'s final log ` +
            `(${final.size} leaves) does not hold your vote (entry ${receipt.entryId}). No later checkpoint can add it. ` +
            "If your receipt carries the gateway's admission signature, it is evidence that an admitted vote was " +
            "lost: keep it, and check it with tally audit receipt.",
        );
      }
      throw new NotYet(
        "checkpoint",
        `Not yet in a checkpoint: lane ${receipt.lane}'s latest signed checkpoint has ${checkpoint.size} ` +
          `entr${checkpoint.size === 1 ? "y" : "ies"}, and your vote is entry ${receipt.entryId}. ` +
          "The ledger is signed every few seconds: try again shortly.",
      );
    }
    return { ...checkpoint, note };
  });
  report(
    "checkpoint",
    "ok",
    `Lane ${receipt.lane}'s latest checkpoint (${latest.size} leaves, root ${hex(latest.root).slice(0, 16)}…) ` +
      `is validly signed by ${laneKey.name} (key ID ${hexId(laneKey.keyId)}).`,
  );

  // 3. The vote's leaf, and its inclusion proof up to the signed root.
  const included = await guard("inclusion", async () => {
    const rebuilt = receiptRecord(receipt);
    if (rebuilt !== null) {
      const rebuiltHash = await leafHash(rebuilt);
      if (!equal(rebuiltHash, receipt.leafHash)) {
        throw new CheckFailed(
          "inclusion",
          "receipt-inconsistent",
          `The receipt was altered: the vote record rebuilt from its fields hashes to ${hex(rebuiltHash)}, ` +
            `not to its leaf hash ${hex(receipt.leafHash)}.`,
        );
      }
    }
    const path = `/v1/polls/${encodeURIComponent(receipt.pollId)}/receipts/${receipt.lane}/${receipt.entryId}/proof`;
    const answer = await fetcher(base + path);
    if (answer.status === 404) {
      const problem = await answer.json().catch(() => ({}));
      if (problem.code === "not-archived") {
        throw new NotYet("inclusion", `entry ${receipt.entryId} of lane ${receipt.lane} is not in a published checkpoint yet`);
      }
      throw new CheckFailed("inclusion", "missing-file", `the server has no proof for this receipt: ${problem.detail ?? problem.title ?? 404}`);
    }
    if (!answer.ok) throw new CheckFailed("inclusion", "missing-file", `GET ${path} answered ${answer.status}`);
    let doc;
    try {
      doc = await answer.json();
    } catch {
      throw new CheckFailed("inclusion", "bad-proof", "the proof document is not JSON");
    }
    // The proof is against the lane's latest checkpoint when the server answered: the one of
    // step 2, or a newer one if the lane grew meanwhile, which must then verify as well.
    let checkpoint = latest;
    if (doc.checkpoint !== latest.note) {
      if (typeof doc.checkpoint !== "string") throw new CheckFailed("inclusion", "bad-proof", "the proof names no checkpoint");
      checkpoint = { ...(await openCheckpoint(doc.checkpoint, laneKey, origin, "inclusion")), note: doc.checkpoint };
      if (checkpoint.size < latest.size) {
        throw new CheckFailed("inclusion", "bad-proof", `the proof is against an older checkpoint (${checkpoint.size} leaves) than the latest (${latest.size})`);
      }
    }
    if (doc.index !== receipt.index) {
      throw new CheckFailed("inclusion", "receipt-mismatch", `the proof is of leaf ${doc.index}, the receipt names leaf ${receipt.index}`);
    }
    const leaf = fromBase64(doc.leaf);
    if (leaf === null) throw new CheckFailed("inclusion", "bad-proof", "the proof's leaf is not base64");
    const digest = await leafHash(leaf);
    if (!equal(digest, receipt.leafHash)) {
      throw new CheckFailed(
        "inclusion",
        "leaf-hash-mismatch",
        `Leaf ${receipt.index} of lane ${receipt.lane} hashes to ${hex(digest)}, the receipt says ${hex(receipt.leafHash)}.`,
      );
    }
    let record;
    try {
      record = decodeVoteRecord(leaf);
    } catch (error) {
      throw new CheckFailed("inclusion", "bad-record", `leaf ${receipt.index}: ${error.message}`);
    }
    compareRecord(receipt, record);
    const hashes = Array.isArray(doc.proof) ? doc.proof.map(fromBase64) : [null];
    if (hashes.some((h) => h === null || h.length !== HASH_SIZE)) {
      throw new CheckFailed("inclusion", "bad-proof", "a proof hash is not 32 bytes of base64");
    }
    const root = await rootFromInclusion(receipt.leafHash, receipt.index, checkpoint.size, hashes);
    if (root === null || !equal(root, checkpoint.root)) {
      throw new CheckFailed(
        "inclusion",
        "inclusion-failed",
        `The inclusion proof of leaf ${receipt.index} does not lead to the signed root: it gives ` +
          `${root === null ? "no root (wrong length)" : hex(root)}, the checkpoint signs ${hex(checkpoint.root)}.`,
      );
    }
    let decision = null;
    if (record.status === "held") {
      decision = await findDecision(receipt, checkpoint, { base, fetcher, laneKey, origin });
      const found = decision ? decision.decision : "held";
      if ((receipt.status === "released" || receipt.status === "voided") && receipt.status !== found) {
        throw new CheckFailed(
          "inclusion",
          "receipt-mismatch",
          `The receipt says ${receipt.status}, but lane ${receipt.lane}'s signed log up to ${checkpoint.size} leaves ` +
            (decision ? `holds ${found}` : "holds no decision on it") + ".",
        );
      }
    }
    return { checkpoint, record, decision, proofLength: hashes.length };
  });
  facts.decision = included.decision;
  facts.checkpoint = included.checkpoint;
  facts.record = included.record;
  report(
    "inclusion",
    "ok",
    `Your vote record hashes to the receipt's leaf hash ${hex(receipt.leafHash).slice(0, 16)}…, says what the receipt says, ` +
      `and its inclusion proof (${included.proofLength} hash${included.proofLength === 1 ? "" : "es"}) leads to the signed root of ` +
      `${included.checkpoint.size} leaves.` +
      (included.record.status !== "held"
        ? ""
        : included.decision
          ? ` It was held for review; the reviewer's decision (${included.decision.decision}, entry ${included.decision.seq}) is proved in the same log.`
          : " It was held for review, and the signed log holds no decision on it yet."),
  );

  // 4. The gateway's admission signature.
  const admission = receipt.admission;
  if (admission === null) {
    facts.admittedBy = null;
    report("admission", "none", "This vote carries no admission signature (a vote from before admission signatures): nothing to check.");
  } else {
    facts.admittedBy = await guard("admission", () => checkAdmission(receipt, keys.admission));
    report(
      "admission",
      "ok",
      `The admission signature verifies under ${facts.admittedBy.name} (key ID ${hexId(facts.admittedBy.keyId)}), ` +
        `valid when the vote was admitted at ${admission.admittedAt}.`,
    );
  }

  // 5. The result certificate, once the poll is closed and certified: its lane line must be the
  // very tree the vote was proved in (the final checkpoint), so the certified counts are made
  // from a log that holds this vote.
  facts.certificate = await guard("certificate", async () => {
    const final = await certifiedLane(keys.ledger, receipt, base, fetcher);
    if (final === null) return null;
    const proved = facts.checkpoint;
    if (final.size !== proved.size || !equal(final.root, proved.root)) {
      throw new CheckFailed(
        "certificate",
        "certificate-mismatch",
        `The result certificate closes lane ${receipt.lane} at ${final.size} leaves (root ${hex(final.root).slice(0, 16)}…), ` +
          `but the lane's latest signed checkpoint has ${proved.size} (root ${hex(proved.root).slice(0, 16)}…): ` +
          "a certified log must be its final checkpoint (tally audit verify reports which is wrong).",
      );
    }
    return final;
  });
  if (facts.certificate === null) {
    report("certificate", "none", "The poll has no result certificate yet (it is certified once closed): check again after the close to tie your vote to the result.");
  } else {
    const counts = facts.certificate.counts.map(([option, votes]) => `${option} ${votes}`).join(", ");
    report(
      "certificate",
      "ok",
      `The signed result certificate (${facts.certificate.version}) closes lane ${receipt.lane} at the very tree your vote ` +
        `was proved in (${facts.certificate.size} leaves); it certifies ${counts} (total ${facts.certificate.total}).`,
    );
  }
  return facts;
}

/** The lane's final head in the poll's signed result certificate (§9), with the certified counts,
 * or null when none is published or it does not verify (as tally audit receipt, which leaves a
 * bad certificate to tally audit verify). */
async function certifiedLane(ledgerKey, receipt, base, fetcher) {
  const answer = await fetcher(`${base}/ledger/${encodeURIComponent(receipt.pollId)}/certificate`);
  if (!answer.ok) return null;
  const origin = `${ledgerKey.name}/${receipt.pollId}/certificate`;
  let text;
  try {
    text = await openNote(await answer.text(), await renamed(ledgerKey, origin));
  } catch (error) {
    if (error instanceof Unsupported) throw error;
    return null;
  }
  const lines = text.split("\n");
  if (lines[0] !== origin || !/^tally-result\/v[123]$/.test(lines[1]) || lines[2] !== `poll ${receipt.pollId}`) return null;
  const head = lines.map((line) => line.split(" ")).find((w) => w[0] === "log" && w[1] === String(receipt.lane));
  const root = head && fromBase64(head[3]);
  if (!head || !/^(0|[1-9][0-9]*)$/.test(head[2]) || !root || root.length !== HASH_SIZE) return null;
  const counts = lines.filter((l) => l.startsWith("count ")).map((l) => l.split(" ").slice(1));
  const total = lines.find((l) => l.startsWith("total "))?.slice(6) ?? "?";
  return { version: lines[1], size: Number(head[2]), root, counts, total };
}

async function openCheckpoint(note, key, origin, step) {
  let body;
  try {
    body = await openNote(note, key);
  } catch (error) {
    if (error instanceof Unsupported) throw error;
    throw new CheckFailed(step, "bad-signature", `The checkpoint does not verify under ${key.text}: ${error.message}.`);
  }
  try {
    return parseCheckpoint(body, origin);
  } catch (error) {
    throw new CheckFailed(step, "malformed-checkpoint", `The checkpoint is malformed: ${error.message}.`);
  }
}

function compareRecord(receipt, record) {
  const expectedStatus = receipt.status === "released" || receipt.status === "voided" ? "held" : receipt.status ?? record.status;
  const pairs = [
    ["poll", receipt.pollId, record.pollId],
    ["lane", String(receipt.lane), String(record.lane)],
    ["entry seq", String(receipt.entryId), String(record.seq)],
    ["option", receipt.option, record.option],
    ["accepted time", isoOf(receipt.acceptedMs), isoOf(record.acceptedMs)],
    ["status", expectedStatus, record.status],
  ];
  for (const [name, expected, found] of pairs) {
    if (expected !== found) {
      throw new CheckFailed("inclusion", "receipt-mismatch", `Leaf ${receipt.index}: ${name} is ${found} in the log, ${expected} in the receipt.`);
    }
  }
  if (record.status === "voided") {
    throw new CheckFailed("inclusion", "bad-record", `leaf ${receipt.index}: status voided is reserved`);
  }
}

async function checkAdmission(receipt, keys) {
  const admission = receipt.admission;
  const key = keys.find((k) => k.keyId === admission.keyId);
  if (key === undefined) {
    throw new CheckFailed(
      "admission",
      "admission-unknown-key",
      `The receipt is signed under key ID ${hexId(admission.keyId)}, none of the admission keys the server publishes.`,
    );
  }
  const signer = `${key.name} (key ID ${hexId(key.keyId)})`;
  if (admission.admittedMs < key.notBefore || (key.notAfter && admission.admittedMs >= key.notAfter)) {
    throw new CheckFailed(
      "admission",
      "admission-key-not-valid",
      `The vote was admitted at ${admission.admittedAt}, outside the validity of ${signer}.`,
    );
  }
  if (!(await ed25519Verify(key.publicKey, admission.signature, admissionMessage(receipt)))) {
    throw new CheckFailed("admission", "admission-bad-signature", `The admission signature does not verify under ${signer}.`);
  }
  const lag = receipt.acceptedMs - admission.admittedMs;
  if (lag > MAX_ADMISSION_AGE_MS || lag < -MAX_CLOCK_SKEW_MS) {
    throw new CheckFailed(
      "admission",
      "admission-time",
      `The vote was admitted at ${admission.admittedAt} but accepted at ${receipt.acceptedAt}: too far apart for one request.`,
    );
  }
  return key;
}

// ---- what became of a held vote (§13) ---------------------------------------------------------

/** The tlog-tiles path of entry bundle `index` (§3.1): 3-digit groups, all but the last "x"-led. */
export function bundlePath(index, width) {
  const groups = [];
  let n = index;
  do {
    groups.unshift(String(n % 1000).padStart(3, "0"));
    n = Math.floor(n / 1000);
  } while (n > 0);
  const name = groups.map((g, i) => (i < groups.length - 1 ? `x${g}` : g)).join("/");
  return `tile/entries/${name}${width < 256 ? `.p/${width}` : ""}`;
}

function decodeBundle(bytes, width) {
  const entries = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 2 > bytes.length) throw new Error("an entry's length is cut short");
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (at + 2 + length > bytes.length) throw new Error("an entry is cut short");
    entries.push(bytes.slice(at + 2, at + 2 + length));
    at += 2 + length;
  }
  if (entries.length !== width) throw new Error(`the bundle has ${entries.length} entries, not ${width}`);
  return entries;
}

/** A review record (§2.4) strictly, or null for any other entry. */
export function decodeReview(bytes) {
  if (bytes.length < 3 || bytes[0] !== 0x01 || bytes[1] !== 0x03) return null;
  const length = bytes[2];
  if (length < 1 || bytes.length !== 30 + length) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = 3 + length;
  const decision = { 1: "released", 2: "voided" }[bytes[at + 18]];
  if (decision === undefined) return null;
  let pollId;
  try {
    pollId = strictUtf8.decode(bytes.slice(3, at));
  } catch {
    return null;
  }
  return {
    pollId,
    lane: view.getUint16(at),
    seq: Number(view.getBigUint64(at + 2)),
    heldSeq: Number(view.getBigUint64(at + 10)),
    decision,
    decidedMs: Number(view.getBigUint64(at + 19)),
  };
}

/** The reviewer's decision on the held vote of `receipt` among the lane's first
 * `checkpoint.size` leaves, or null if none is published. The review record is read from the
 * lane's entry bundles, then proved like the vote: its inclusion proof must lead to a root signed
 * by the ledger key, so a bundle changed on the way cannot invent a decision. */
async function findDecision(receipt, checkpoint, { base, fetcher, laneKey, origin }) {
  const lanePath = `${base}/ledger/${encodeURIComponent(receipt.pollId)}/${receipt.lane}`;
  const full = Math.floor(checkpoint.size / 256);
  const last = Math.floor((checkpoint.size - 1) / 256);
  for (let bundle = Math.floor(receipt.index / 256); bundle <= last; bundle++) {
    const width = bundle < full ? 256 : checkpoint.size % 256;
    const path = `${lanePath}/${bundlePath(bundle, width)}`;
    const answer = await fetcher(path);
    if (!answer.ok) {
      throw new CheckFailed("inclusion", "missing-file", `the lane's entry bundle ${bundlePath(bundle, width)} answered ${answer.status}`);
    }
    let entries;
    try {
      entries = decodeBundle(new Uint8Array(await answer.arrayBuffer()), width);
    } catch (error) {
      throw new CheckFailed("inclusion", "bad-bundle", `the entry bundle ${bundlePath(bundle, width)}: ${error.message}`);
    }
    for (const [i, entry] of entries.entries()) {
      const review = decodeReview(entry);
      const index = bundle * 256 + i;
      if (review === null || review.heldSeq !== receipt.entryId || index <= receipt.index) continue;
      if (review.pollId !== receipt.pollId || review.lane !== receipt.lane || review.seq !== index + 1) continue;
      await proveEntry(entry, index, receipt, checkpoint, { base, fetcher, laneKey, origin });
      return { ...review, index };
    }
  }
  return null;
}

async function proveEntry(entry, index, receipt, checkpoint, { base, fetcher, laneKey, origin }) {
  const path = `/v1/polls/${encodeURIComponent(receipt.pollId)}/receipts/${receipt.lane}/${index + 1}/proof`;
  const answer = await fetcher(base + path);
  if (!answer.ok) throw new CheckFailed("inclusion", "missing-file", `GET ${path} answered ${answer.status}`);
  const doc = await answer.json();
  const signed =
    doc.checkpoint === checkpoint.note ? checkpoint : await openCheckpoint(doc.checkpoint, laneKey, origin, "inclusion");
  const hashes = Array.isArray(doc.proof) ? doc.proof.map(fromBase64) : [null];
  const root =
    hashes.some((h) => h === null || h.length !== HASH_SIZE) || index >= signed.size
      ? null
      : await rootFromInclusion(await leafHash(entry), index, signed.size, hashes);
  if (root === null || !equal(root, signed.root)) {
    throw new CheckFailed(
      "inclusion",
      "inclusion-failed",
      `The reviewer's decision at leaf ${index} is not proved in the signed log: its inclusion proof does not lead to the signed root.`,
    );
  }
}
