// The sign-in pages' script: stores the session the server handed over and returns to `next`,
// or fills the demo sign-in form's return address.
import { storeSession } from "/static/session.js";

const done = document.getElementById("signin-done");
if (done) {
  storeSession(JSON.parse(done.dataset.session));
  const next = done.dataset.next ?? "/";
  // The server only hands over same-origin paths; checked again so this page never leaves.
  location.replace(next.startsWith("/") && !next.startsWith("//") ? next : "/");
}

const form = document.getElementById("demo-form");
if (form) {
  const query = new URLSearchParams(location.search);
  form.elements.next.value = query.get("next") ?? "/";
  if (query.get("role") === "admin") form.elements.role.value = "admin";
  form.elements.name.focus();
}
