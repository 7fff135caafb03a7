// Live results for one poll, over the best transport that answers:
//   1. WebSocket   /v1/polls/{id}/live     snapshot docs, pushed
//   2. SSE         /v1/polls/{id}/events   the same docs, pushed
//   3. polling     /v1/polls/{id}/results  every second, with If-None-Match
// A transport that fails before delivering anything hands over to the next one. One that worked
// and then dropped starts the chain over from WebSocket after a growing pause. Ordering (seq)
// is the caller's business: this module only delivers documents.
//
// Who watches matters where a poll hides its counts until one has voted: the WebSocket sends
// the voter's credential in an auth frame and polling sends it as a header, so the server can
// show that voter the counts. EventSource cannot send a header: SSE shows what anyone sees.

const POLL_INTERVAL_MS = 1000;
const MAX_BACKOFF_MS = 10000;

/**
 * Follow `pollId`. `onDoc(doc)` gets every snapshot doc ({type: "snapshot", seq, ...}) or polled
 * results doc ({type: "results", ...}); `onMode(mode)` gets "websocket" | "sse" | "polling" |
 * "reconnecting" | "offline". `token()` gives the viewer's credential now, or null (read at each
 * use, so a sign-in or sign-out between two requests is followed). Returns {stop(), refresh()};
 * refresh() sends the credential again over a WebSocket (the server looks again whether this
 * viewer has voted) and asks polling to fetch now.
 */
export function follow(pollId, onDoc, onMode, token = () => null) {
  const path = `/v1/polls/${encodeURIComponent(pollId)}`;
  const transports = [viaWebSocket, viaEventSource, viaPolling];
  let stopped = false;
  let current = null;
  let drops = 0;
  let timer = 0;

  function run(index) {
    if (stopped) return;
    let delivered = false;
    current = transports[index](path, {
      token,
      doc(doc) {
        if (stopped) return;
        delivered = true;
        drops = 0;
        onDoc(doc);
      },
      mode(mode) {
        if (!stopped) onMode(mode);
      },
      ended() {
        current = null;
        if (stopped) return;
        if (!delivered) {
          run(index + 1);
          return;
        }
        onMode("reconnecting");
        drops += 1;
        timer = setTimeout(() => run(0), Math.min(500 * 2 ** drops, MAX_BACKOFF_MS));
      },
    });
  }

  run(0);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      current?.close();
    },
    refresh() {
      current?.refresh?.();
    },
  };
}

function parse(text) {
  try {
    const doc = JSON.parse(text);
    return doc && doc.type === "snapshot" ? doc : null;
  } catch {
    return null;
  }
}

function viaWebSocket(path, sink) {
  const url = new URL(`${path}/live`, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let socket;
  try {
    socket = new WebSocket(url);
  } catch {
    setTimeout(sink.ended);
    return { close() {} };
  }
  let closed = false;
  const authenticate = () => {
    const credential = sink.token();
    if (credential && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "auth", token: credential }));
    }
  };
  socket.addEventListener("open", () => {
    authenticate();
    sink.mode("websocket");
  });
  socket.addEventListener("message", (event) => {
    const doc = typeof event.data === "string" ? parse(event.data) : null;
    if (doc) sink.doc(doc);
  });
  // An error is always followed by close, so close alone decides.
  socket.addEventListener("close", () => {
    if (!closed) {
      closed = true;
      sink.ended();
    }
  });
  return {
    close() {
      closed = true;
      socket.close(1000);
    },
    refresh: authenticate,
  };
}

function viaEventSource(path, sink) {
  if (typeof EventSource !== "function") {
    setTimeout(sink.ended);
    return { close() {} };
  }
  const source = new EventSource(`${path}/events`);
  let closed = false;
  let delivered = false;
  const deliver = (event) => {
    const doc = parse(event.data);
    if (doc) {
      delivered = true;
      sink.doc(doc);
    }
  };
  source.addEventListener("open", () => sink.mode("sse"));
  source.addEventListener("message", deliver);
  source.addEventListener("snapshot", deliver);
  source.addEventListener("error", () => {
    if (closed) return;
    if (delivered && source.readyState !== EventSource.CLOSED) {
      sink.mode("reconnecting"); // the browser retries by itself, with Last-Event-ID
      return;
    }
    // Closed, or failing before its first document (a network or proxy that refuses the
    // stream would have the browser retry it for ever): hand over to the next transport.
    closed = true;
    source.close();
    sink.ended();
  });
  return {
    close() {
      closed = true;
      source.close();
    },
  };
}

function viaPolling(path, sink) {
  const controller = new AbortController();
  let etag = null;
  let asked = null; // the credential the validator was answered for
  let timer = 0;
  let stopped = false;
  let busy = false;
  let again = false; // refresh() asked while a request was in flight

  async function tick() {
    clearTimeout(timer);
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      // no-store: we send our own If-None-Match and want to see the 304 ourselves.
      const credential = sink.token();
      if (credential !== asked) etag = null; // another viewer: the validator was not theirs
      asked = credential;
      const headers = etag ? { "If-None-Match": etag } : {};
      if (credential) headers.Authorization = `Bearer ${credential}`;
      const response = await fetch(`${path}/results`, {
        headers,
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 200) {
        const doc = await response.json();
        etag = response.headers.get("ETag");
        sink.mode("polling");
        sink.doc({ ...doc, type: "results" });
      } else if (response.status === 304) {
        sink.mode("polling");
      } else {
        sink.mode("offline");
      }
    } catch {
      if (!stopped) sink.mode("offline");
    } finally {
      busy = false;
    }
    if (stopped) return;
    if (again) {
      again = false;
      tick();
    } else {
      timer = setTimeout(tick, POLL_INTERVAL_MS);
    }
  }

  tick();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      controller.abort();
    },
    refresh() {
      // Whether this viewer may see the counts can change (a vote, a sign-in) while the
      // results do not: ask without a validator, so a 304 cannot keep a hidden document.
      etag = null;
      if (!stopped) tick();
    },
  };
}
