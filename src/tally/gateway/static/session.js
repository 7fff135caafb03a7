// The signed-in voter's Tally session in this browser (contract 1 of issue 12).
//
// After signing in (/auth/login: the organiser's OpenID Connect provider, or the demo sign-in),
// /static/signin.js stores the session document in localStorage `tally.session`:
//   {"token": "tsv1....", "subject": ..., "name": ..., "roles": [...], "expires_at": <unix s>}
// Pages send `token` as `Authorization: Bearer <token>`, exactly like a bearer JWT (a JWT stored
// in the same shape works the same). A token never travels in a URL.

export const SESSION_KEY = "tally.session";

let memory = null; // where localStorage is disabled (private windows of some browsers)

/** The stored session document, or null when there is none, it is unreadable, or it expired. */
export function currentSession() {
  let stored;
  try {
    stored = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
  } catch {
    stored = memory;
  }
  if (!stored || typeof stored.token !== "string" || !stored.token) return null;
  const expiresAt = typeof stored.expires_at === "number" ? stored.expires_at : null;
  if (expiresAt !== null && expiresAt * 1000 <= Date.now()) return null;
  return {
    token: stored.token,
    subject: typeof stored.subject === "string" ? stored.subject : "",
    name: typeof stored.name === "string" ? stored.name : "",
    roles: Array.isArray(stored.roles) ? stored.roles.filter((r) => typeof r === "string") : [],
    expiresAt,
  };
}

/** Headers that authenticate a request as the signed-in voter, or {} when signed out. */
export function authHeaders() {
  const session = currentSession();
  return session ? { Authorization: `Bearer ${session.token}` } : {};
}

/** Keep a session document (signin.js calls this with the one the server handed over). */
export function storeSession(document) {
  memory = document;
  try {
    localStorage.setItem(SESSION_KEY, JSON.stringify(document));
  } catch {
    // storage disabled: `memory` holds it for this page
  }
}

/** Go through the sign-in flow and come back to `nextPath` (a path on this site). `role`
 *  ("admin" or "voter") preselects the role on the demo sign-in; a provider decides on its own. */
export function signIn(nextPath = location.pathname + location.search, role = undefined) {
  const query = new URLSearchParams({ next: nextPath });
  if (role) query.set("role", role);
  location.assign(`/auth/login?${query}`);
}

/** Forget the session in this browser (sessions are stateless: it expires on its own). */
export function signOut() {
  memory = null;
  try {
    localStorage.removeItem(SESSION_KEY);
  } catch {
    // storage disabled: nothing was stored
  }
}

/** Which sign-in this server offers: Promise of {oidc: bool, demo: bool}. */
export async function signInMethods() {
  try {
    const response = await fetch("/auth/config", { headers: { Accept: "application/json" } });
    if (!response.ok) return { oidc: false, demo: false };
    const body = await response.json();
    return { oidc: body.oidc === true, demo: body.demo === true };
  } catch {
    return { oidc: false, demo: false };
  }
}
