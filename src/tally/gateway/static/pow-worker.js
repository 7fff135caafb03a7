// Searches for the answer to one proof-of-work challenge (tally.security.pow) off the page's
// main thread. Several of these may share one challenge, each trying its own nonces.
//
// In:  {challenge, difficulty, first, step}   tries first, first + step, first + 2 step, ...
// Out: {type: "progress", hashes} now and then, then {type: "solved", nonce, hashes}
//      or {type: "failed", message}
//
// The answer is a decimal nonce n such that SHA-256(challenge ":" n) starts with `difficulty`
// zero bits. WebCrypto's digest is asynchronous, so hashes are started in batches and awaited
// together: one await per hash would leave the worker idle between them.

const BATCH = 512;
const PROGRESS_EVERY_MS = 100;

function hasLeadingZeroBits(bytes, wanted) {
  let bits = 0;
  for (const byte of bytes) {
    if (byte !== 0) return bits + Math.clz32(byte) - 24 >= wanted;
    bits += 8;
    if (bits >= wanted) return true;
  }
  return true;
}

async function search(challenge, difficulty, first, step) {
  const encoder = new TextEncoder();
  const prefix = `${challenge}:`;
  let reported = performance.now();
  let hashes = 0;
  for (let nonce = first; ; ) {
    const tried = [];
    const digests = [];
    for (let i = 0; i < BATCH; i += 1, nonce += step) {
      tried.push(nonce);
      digests.push(crypto.subtle.digest("SHA-256", encoder.encode(prefix + nonce)));
    }
    const done = await Promise.all(digests);
    hashes += BATCH;
    for (let i = 0; i < done.length; i += 1) {
      if (hasLeadingZeroBits(new Uint8Array(done[i]), difficulty)) {
        return { nonce: String(tried[i]), hashes };
      }
    }
    const now = performance.now();
    if (now - reported >= PROGRESS_EVERY_MS) {
      reported = now;
      postMessage({ type: "progress", hashes });
    }
  }
}

onmessage = async (event) => {
  const { challenge, difficulty, first, step } = event.data;
  if (!globalThis.crypto?.subtle) {
    // WebCrypto exists only in secure contexts: the page must be served over HTTPS (or localhost).
    postMessage({ type: "failed", message: "WebCrypto needs a secure context (HTTPS)" });
    return;
  }
  postMessage({ type: "solved", ...(await search(challenge, difficulty, first, step)) });
};
