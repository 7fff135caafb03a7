"""The HTTP edge of a real `tally serve` (gateway/edge.py): floods that cost the attacker little
are closed at their limits while a concurrent voter keeps getting quick answers, and the
per-address limits count the client that TALLY_TRUSTED_PROXIES vouches for.

The attacks run in their own process (edge_attacker.py) from 127.0.0.2, so they have an address
of their own and never share the measuring client's CPU; the client votes from 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import OPTIONS, RunningTally, serving

HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
HEAD_LIMIT = 16384
ATTACKER = "127.0.0.2"
# Closes are timed by the attacker from the start of each connect, so they include the time the
# server takes to accept the connection: on a 2-core machine shared with other work, accepting a
# burst of 2,000 connections takes the server a few seconds of wall time by itself.
SLACK_S = 1.5
BURST_SLACK_S = 3.0
P99_LIMIT_S = 0.050
# The event loop's timers have millisecond resolution and may fire that much early.
TIMER_SLACK_S = 0.005
EDGE_ONLY = pytest.mark.single_node(
    "the voter's p99 budget is the edge's; on a cluster every vote also waits for a replica's "
    "fsync (WAIT + WAITAOF), the store's latency, not the edge's"
)
ATTACKER_SCRIPT = Path(__file__).with_name("edge_attacker.py")

FLOOD_ENV = {
    "TALLY_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
    "TALLY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "TALLY_MAX_REQUEST_HEAD_BYTES": str(HEAD_LIMIT),
    "TALLY_MAX_HTTP_CONNECTIONS_PER_IP": "2500",  # let 2,000 half-sent requests in
    "TALLY_EDGE_RATE": "0",
}
LIMITS_ENV = {
    "TALLY_TRUSTED_PROXIES": "127.0.0.1/32",
    "TALLY_EDGE_RATE": "5",
    "TALLY_EDGE_BURST": "5",
    "TALLY_MAX_HTTP_CONNECTIONS_PER_IP": "4",
    "TALLY_MAX_CONNECTIONS_PER_IP": "2",  # live (SSE, WebSocket) connections
}


@pytest.fixture(scope="module")
def flood_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    with serving(tmp_path_factory.mktemp("edge-flood"), FLOOD_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    with serving(tmp_path_factory.mktemp("edge-limits"), LIMITS_ENV) as server:
        yield server


class Voter:
    """One keep-alive connection from 127.0.0.1 casting votes one after another, timing each."""

    def __init__(self, t: RunningTally) -> None:
        self._t = t
        self._poll = str(t.open_poll()["id"])
        self._http = http.client.HTTPConnection(t.host, t.port, timeout=10)
        self.latencies: list[float] = []

    def vote(self) -> None:
        token = self._t.voter_token(f"edge-voter-{len(self.latencies)}")
        body = orjson.dumps({"option": OPTIONS[len(self.latencies) % 3]})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        started = time.perf_counter()
        self._http.request("POST", f"/v1/polls/{self._poll}/votes", body, headers)
        response = self._http.getresponse()
        response.read()
        self.latencies.append(time.perf_counter() - started)
        assert response.status == 201

    def votes_while(self, attack: Attack, at_least: int) -> None:
        """Vote at up to ~200 a second until the attack is over, and at least `at_least` times."""
        while attack.process.poll() is None or len(self.latencies) < at_least:
            self.vote()
            time.sleep(0.005)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def close(self) -> None:
        self._http.close()


class Attack:
    """edge_attacker.py against a server from ATTACKER, in its own process."""

    def __init__(self, t: RunningTally, report: Path, *args: str) -> None:
        argv = [sys.executable, str(ATTACKER_SCRIPT), args[0], t.host, str(t.port), ATTACKER]
        self._report = report
        self.process = subprocess.Popen(
            [*argv, str(report), *args[1:]], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"  # its connections are open

    def report(self) -> list[dict[str, Any]]:
        self.process.communicate(timeout=60)
        assert self.process.returncode == 0
        report: list[dict[str, Any]] = json.loads(self._report.read_text())
        return report

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def under_attack(t: RunningTally, report: Path, *args: str) -> tuple[list[dict[str, Any]], Voter]:
    """Run an attack while a voter votes from 127.0.0.1: the attack's report, and the voter."""
    voter = Voter(t)
    attack: Attack | None = None
    try:
        for _ in range(20):
            voter.vote()  # warm: the poll cached, the connection made
        attack = Attack(t, report, *args)
        voter.votes_while(attack, at_least=200)
        return attack.report(), voter
    finally:
        if attack is not None:
            attack.stop()
        voter.close()


def edge_refusals(t: RunningTally) -> dict[str, float]:
    with socket.create_connection((t.host, t.port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = _read_until_closed(s).decode()
    prefix = 'tally_edge_refusals_total{reason="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


@EDGE_ONLY
def test_a_64_mib_header_is_refused_at_the_head_limit_and_a_voter_is_not_slowed(
    flood_target: RunningTally, tmp_path: Path
) -> None:
    """A 64 MiB header is cut off at the head limit (431, connection closed) after a small part
    of it was read; a voter on another connection keeps a p99 under 50 ms meanwhile."""
    before = edge_refusals(flood_target)
    (big,), voter = under_attack(flood_target, tmp_path / "report.json", "big-header")
    assert big["closed_s"] is not None
    assert big["closed_s"] < 5
    assert big["sent"] < 16 * 1024 * 1024  # the rest never left the client: nobody read it
    assert big["status"] in (431, None)  # the 431 may be lost to the reset of unread bytes
    assert voter.p99() < P99_LIMIT_S, f"p99 {voter.p99() * 1000:.1f} ms"
    after = edge_refusals(flood_target)
    assert after["head-too-large"] == before["head-too-large"] + 1


def test_a_head_over_the_limit_gets_431_problem_json(flood_target: RunningTally) -> None:
    """A head just over the limit, sent whole, is answered 431 headers-too-large, closed."""
    with socket.create_connection((flood_target.host, flood_target.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEAD_LIMIT + b"\r\n\r\n")
        received = _read_until_closed(s)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["code"] == "headers-too-large"


def test_a_request_that_is_not_http_gets_400_problem_json_and_is_counted(
    flood_target: RunningTally,
) -> None:
    """Bytes that are not an HTTP/1.1 request get 400 invalid-request, the connection is closed,
    and /metrics counts a malformed request (no log line per request)."""
    before = edge_refusals(flood_target)
    with socket.create_connection((flood_target.host, flood_target.port), timeout=5) as s:
        s.sendall(b"HELLO THERE\r\n\r\n")
        received = _read_until_closed(s)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["code"] == "invalid-request"
    assert edge_refusals(flood_target)["malformed"] == before["malformed"] + 1


@EDGE_ONLY
def test_2000_half_sent_requests_from_one_address_are_closed_at_their_deadlines(
    flood_target: RunningTally, tmp_path: Path
) -> None:
    """1,000 connections with half a head and 1,000 with a head and a tenth of the body, all
    from one address: each is closed at its deadline (408 for the heads), the voter's p99
    stays under 50 ms, and /metrics counts them as head and body timeouts."""
    before = edge_refusals(flood_target)
    report, voter = under_attack(flood_target, tmp_path / "report.json", "half-sent", "2000")
    assert len(report) == 2000
    heads, bodies = report[0::2], report[1::2]
    for connection in report:
        assert connection["closed_s"] is not None
        assert connection["closed_s"] < HEAD_TIMEOUT_S + BURST_SLACK_S
    assert all(c["status"] == 408 for c in heads)
    assert min(c["closed_s"] for c in heads) >= HEAD_TIMEOUT_S - TIMER_SLACK_S
    assert min(c["closed_s"] for c in bodies) >= BODY_TIMEOUT_S - TIMER_SLACK_S
    assert voter.p99() < P99_LIMIT_S, f"p99 {voter.p99() * 1000:.1f} ms"
    after = edge_refusals(flood_target)
    assert after["head-timeout"] - before["head-timeout"] == 1000
    assert after["body-timeout"] - before["body-timeout"] == 1000


@EDGE_ONLY
def test_50_slowloris_connections_are_closed_at_the_head_deadline(
    flood_target: RunningTally, tmp_path: Path
) -> None:
    """Connections that send a header line every 100 ms never finish their head: each is
    closed (408) once the head deadline passes, however busy it keeps the server."""
    report, voter = under_attack(flood_target, tmp_path / "report.json", "slowloris", "50")
    assert len(report) == 50
    for connection in report:
        assert connection["closed_s"] is not None
        assert HEAD_TIMEOUT_S - TIMER_SLACK_S <= connection["closed_s"] < HEAD_TIMEOUT_S + SLACK_S
        assert connection["status"] == 408
        assert connection["sent"] > 0
    assert voter.p99() < P99_LIMIT_S, f"p99 {voter.p99() * 1000:.1f} ms"


# Per-address limits, and whose address they count


def get(t: RunningTally, path: str, *, source: str = "127.0.0.1", **headers: str) -> Answer:
    """One request on a fresh connection from `source`."""
    with socket.create_connection((t.host, t.port), timeout=5, source_address=(source, 0)) as s:
        lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n".encode())
        return Answer(_read_until_closed(s))


class Answer:
    def __init__(self, received: bytes) -> None:
        head, _, self.body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def json(self) -> Any:
        return json.loads(self.body)


def test_the_token_bucket_answers_429_with_retry_after_before_the_app(
    limited: RunningTally,
) -> None:
    """An address past its burst gets 429 rate-limited problem+json with Retry-After; once a
    token has refilled (5 a second here) it is served again."""
    source = "127.0.0.5"
    answers = [get(limited, "/healthz", source=source) for _ in range(5)]
    assert [a.status for a in answers] == [200] * 5
    refused = get(limited, "/healthz", source=source)
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "rate-limited"
    time.sleep(1.0)
    assert get(limited, "/healthz", source=source).status == 200
    while get(limited, "/healthz", source=source).status == 200:
        pass  # empty the bucket again
    with socket.create_connection((limited.host, limited.port), 5, (source, 0)) as ws:
        ws.sendall(UPGRADE.format(path="/v1/polls/anything/live", extra="").encode())
        upgrade = Answer(_read_until_closed(ws))  # no handshake: the 429 instead
    assert upgrade.status == 429
    assert upgrade.headers["retry-after"] == "1"


def test_behind_a_trusted_proxy_the_bucket_counts_the_forwarded_client(
    limited: RunningTally,
) -> None:
    """From the trusted proxy (127.0.0.1) each X-Forwarded-For client has its own bucket, and
    IPv6 clients share one per /64; from an untrusted peer the header changes nothing."""
    for client in ("198.51.100.1", "2001:db8:1:2::1"):
        assert get(limited, "/healthz", X_Forwarded_For=client).status == 200
    same_64 = [f"2001:db8:1:2::{i}" for i in range(2, 6)]
    assert [get(limited, "/healthz", X_Forwarded_For=c).status for c in same_64] == [200] * 4
    assert get(limited, "/healthz", X_Forwarded_For="2001:db8:1:2:ffff::9").status == 429
    assert get(limited, "/healthz", X_Forwarded_For="2001:db8:1:3::1").status == 200
    assert get(limited, "/healthz", X_Forwarded_For="203.0.113.9, 198.51.100.2").status == 200
    untrusted = [
        get(limited, "/healthz", source="127.0.0.6", X_Forwarded_For=f"198.51.100.{10 + i}")
        for i in range(6)
    ]
    assert [a.status for a in untrusted] == [200] * 5 + [429]


def test_open_http_connections_are_capped_per_address(limited: RunningTally) -> None:
    """A fifth open connection from one address (cap 4) is answered 429 too-many-connections
    and closed; another address is not affected, and a freed slot can be used again."""
    source = "127.0.0.7"
    held = [
        socket.create_connection((limited.host, limited.port), 5, (source, 0)) for _ in range(4)
    ]
    try:
        with socket.create_connection((limited.host, limited.port), 5, (source, 0)) as fifth:
            refused = Answer(_read_until_closed(fifth))
        assert refused.status == 429
        assert refused.json()["code"] == "too-many-connections"
        assert get(limited, "/healthz", source="127.0.0.8").status == 200
        held.pop().close()
        time.sleep(0.2)  # the server sees the close
        assert get(limited, "/healthz", source=source).status == 200
    finally:
        for s in held:
            s.close()


def test_live_connection_limits_count_the_forwarded_client(limited: RunningTally) -> None:
    """The live limit (2 per address here) counts each X-Forwarded-For client of the trusted
    proxy on its own, for SSE and the WebSocket handshake; an untrusted peer's header does not
    buy it more connections."""
    poll = str(limited.open_poll()["id"])
    events = f"/v1/polls/{poll}/events"
    streams: list[socket.socket] = []
    try:
        for client in ("203.0.113.1", "203.0.113.1", "203.0.113.2"):
            stream, status = _open(limited, events, "127.0.0.1", client)
            streams.append(stream)
            assert status == 200
        refused, status = _open(limited, events, "127.0.0.1", "203.0.113.1")
        refused.close()
        assert status == 429
        upgrade = UPGRADE.format(
            path=f"/v1/polls/{poll}/live", extra="X-Forwarded-For: 203.0.113.1\r\n"
        )
        with socket.create_connection((limited.host, limited.port), 5) as ws:
            ws.sendall(upgrade.encode())
            assert ws.recv(4096).startswith(b"HTTP/1.1 429 ")
        for i in range(2):
            stream, status = _open(limited, events, "127.0.0.9", f"203.0.113.{20 + i}")
            streams.append(stream)
            assert status == 200
        refused, status = _open(limited, events, "127.0.0.9", "203.0.113.30")
        refused.close()
        assert status == 429
    finally:
        for s in streams:
            s.close()


UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def _open(t: RunningTally, path: str, source: str, forwarded: str) -> tuple[socket.socket, int]:
    """A request left open (an event stream): the socket and the status of its answer."""
    s = socket.create_connection((t.host, t.port), timeout=5, source_address=(source, 0))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded}\r\n\r\n".encode())
    received = b""
    while b"\r\n" not in received:
        chunk = s.recv(4096)
        assert chunk, "closed before answering"
        received += chunk
    return s, int(received.split(b" ", 2)[1])


def _read_until_closed(s: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := s.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received
