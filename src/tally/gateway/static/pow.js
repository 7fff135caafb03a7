// Proof-of-work for votes (README, "Proof-of-work"): fetch a challenge, solve it in Web Workers
// (pow-worker.js), and return the vote's `proof`, "challenge:nonce".

// One worker per core, up to 4, each on its own nonces (the page only awaits the answer).
const MAX_WORKERS = 4;

/** {challenge, algorithm, difficulty, expires_at} for this voter, or null (the vote then says
 * why, or asks with a 428). */
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

/** The answer to `doc`; `onProgress(hashes)` hears the hashes tried so far. */
export function solve(doc, onProgress) {
  const { challenge, difficulty } = doc;
  if (difficulty === 0) return Promise.resolve(`${challenge}:0`); // any nonce will do
  const step = Math.max(1, Math.min(MAX_WORKERS, navigator.hardwareConcurrency || 1));
  const tried = new Array(step).fill(0);
  const total = () => tried.reduce((sum, n) => sum + n, 0);
  const workers = [];
  return new Promise((resolve, reject) => {
    const stop = () => workers.forEach((worker) => worker.terminate());
    for (let first = 0; first < step; first += 1) {
      const worker = new Worker("/static/pow-worker.js");
      worker.onmessage = ({ data }) => {
        tried[first] = data.hashes ?? tried[first];
        if (data.type !== "progress") stop();
        if (data.type === "failed") reject(new Error(data.message));
        else onProgress(total());
        if (data.type === "solved") resolve(`${challenge}:${data.nonce}`);
      };
      worker.onerror = (event) => {
        stop();
        reject(new Error(event.message || "the proof-of-work worker failed"));
      };
      worker.postMessage({ challenge, difficulty, first, step });
      workers.push(worker);
    }
  });
}
