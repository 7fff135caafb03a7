// Proof-of-work for votes: fetch a challenge, solve it in a Web Worker (pow-worker.js), and hand
// back the answer the vote carries as `proof` ("challenge:nonce"). See README, "Proof-of-work".

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

/** The answer to `doc` ("challenge:nonce"); `onProgress(hashes)` is called as the worker goes. */
export function solve(doc, onProgress) {
  if (doc.difficulty === 0) return Promise.resolve(`${doc.challenge}:0`); // any nonce will do
  return new Promise((resolve, reject) => {
    const worker = new Worker("/static/pow-worker.js");
    worker.onmessage = (event) => {
      const message = event.data;
      if (message.type === "progress") {
        onProgress(message.hashes);
        return;
      }
      worker.terminate();
      onProgress(message.hashes);
      resolve(`${doc.challenge}:${message.nonce}`);
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(event.message || "the proof-of-work worker failed"));
    };
    worker.postMessage({ challenge: doc.challenge, difficulty: doc.difficulty });
  });
}
