// Proof-of-work for votes: fetch a challenge, solve it in Web Workers (pow-worker.js, SHA-256
// with WebCrypto), and hand back the answer the vote carries as `proof` ("challenge:nonce").
// See README, "Proof-of-work".

// One worker per core, up to 4: each tries its own nonces, so a 4-core phone waits about a
// quarter as long as with one (the page itself is idle meanwhile: it only awaits the answer).
const MAX_WORKERS = 4;

/** A challenge document ({challenge, algorithm, difficulty, expires_at}) for this voter, or null
 * when the server gives none (the vote itself then says why, or asks with a 428). */
export async function fetchChallenge(pollId, token) {
  try {
    const response = await fetch(`/v1/polls/${encodeURIComponent(pollId)}/challenge`, {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** The answer to `doc` ("challenge:nonce"); `onProgress(hashes)` hears the hashes tried so far. */
export function solve(doc, onProgress) {
  if (doc.difficulty === 0) return Promise.resolve(`${doc.challenge}:0`); // any nonce will do
  const count = Math.max(1, Math.min(MAX_WORKERS, navigator.hardwareConcurrency || 1));
  const workers = [];
  const tried = new Array(count).fill(0);
  const total = () => tried.reduce((sum, n) => sum + n, 0);
  return new Promise((resolve, reject) => {
    const stop = () => workers.forEach((worker) => worker.terminate());
    for (let index = 0; index < count; index += 1) {
      const worker = new Worker("/static/pow-worker.js");
      worker.onmessage = ({ data }) => {
        tried[index] = data.hashes ?? tried[index];
        if (data.type === "progress") {
          onProgress(total());
        } else if (data.type === "solved") {
          stop();
          onProgress(total());
          resolve(`${doc.challenge}:${data.nonce}`);
        } else {
          stop();
          reject(new Error(data.message));
        }
      };
      worker.onerror = (event) => {
        stop();
        reject(new Error(event.message || "the proof-of-work worker failed"));
      };
      const { challenge, difficulty } = doc;
      worker.postMessage({ challenge, difficulty, first: index, step: count });
      workers.push(worker);
    }
  });
}
