// Searches nonces for a proof-of-work challenge (tally.security.pow) off the main thread.
// In: {challenge, difficulty, first, step}: tries first, first + step, ...
// Out: {type: "progress", hashes}, then {type: "solved", nonce, hashes} or {type: "failed"}.
// Solved: SHA-256(challenge ":" nonce) starts with `difficulty` zero bits. WebCrypto's digest
// is asynchronous, so a batch of hashes is started and awaited together.

const BATCH = 512;
const PROGRESS_MS = 100;

function solves(bytes, wanted) {
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
  let reported = performance.now();
  let hashes = 0;
  for (let nonce = first; ; ) {
    const tried = [];
    const digests = [];
    for (let i = 0; i < BATCH; i += 1, nonce += step) {
      tried.push(nonce);
      digests.push(crypto.subtle.digest("SHA-256", encoder.encode(`${challenge}:${nonce}`)));
    }
    const done = await Promise.all(digests);
    hashes += BATCH;
    const found = done.findIndex((digest) => solves(new Uint8Array(digest), difficulty));
    if (found >= 0) return { nonce: String(tried[found]), hashes };
    if (performance.now() - reported >= PROGRESS_MS) {
      reported = performance.now();
      postMessage({ type: "progress", hashes });
    }
  }
}

onmessage = async ({ data }) => {
  if (!globalThis.crypto?.subtle) {
    // WebCrypto exists only in secure contexts: HTTPS, or localhost.
    postMessage({ type: "failed", message: "WebCrypto needs a secure context (HTTPS)" });
    return;
  }
  const { challenge, difficulty, first, step } = data;
  postMessage({ type: "solved", ...(await search(challenge, difficulty, first, step)) });
};
