// Solves one proof-of-work challenge (tally.security.pow) off the page's main thread.
//
// In:  {challenge, difficulty}
// Out: {type: "progress", hashes} now and then, then {type: "solved", nonce, hashes, ms}
//
// The answer is the first decimal nonce n such that SHA-256(challenge ":" n) starts with
// `difficulty` zero bits. WebCrypto's digest is asynchronous, so hashes are started in batches
// and awaited together: one promise per hash would leave the worker idle between them.

const BATCH = 512;
const PROGRESS_EVERY_MS = 100;

function leadingZeroBits(bytes, wanted) {
  let bits = 0;
  for (const byte of bytes) {
    if (byte === 0) {
      bits += 8;
      if (bits >= wanted) return true;
      continue;
    }
    return bits + Math.clz32(byte) - 24 >= wanted;
  }
  return true;
}

async function solve(challenge, difficulty) {
  const encoder = new TextEncoder();
  const prefix = `${challenge}:`;
  const started = performance.now();
  let reported = started;
  for (let first = 0; ; first += BATCH) {
    const digests = [];
    for (let nonce = first; nonce < first + BATCH; nonce += 1) {
      digests.push(crypto.subtle.digest("SHA-256", encoder.encode(prefix + nonce)));
    }
    const done = await Promise.all(digests);
    for (let i = 0; i < done.length; i += 1) {
      if (leadingZeroBits(new Uint8Array(done[i]), difficulty)) {
        const hashes = first + i + 1;
        return { nonce: String(first + i), hashes, ms: performance.now() - started };
      }
    }
    const now = performance.now();
    if (now - reported >= PROGRESS_EVERY_MS) {
      reported = now;
      postMessage({ type: "progress", hashes: first + BATCH });
    }
  }
}

onmessage = async (event) => {
  const { challenge, difficulty } = event.data;
  postMessage({ type: "solved", ...(await solve(challenge, difficulty)) });
};
