"""Cheap attacks on a gateway's HTTP edge, run as their own process so that their CPU never
slows the test's measuring client:

    python edge_attacker.py big-header HOST PORT SOURCE REPORT        # one 64 MiB header
    python edge_attacker.py half-sent HOST PORT SOURCE REPORT COUNT   # heads or bodies cut short
    python edge_attacker.py slowloris HOST PORT SOURCE REPORT COUNT   # a line every 100 ms

SOURCE is the local address to connect from (a loopback address such as 127.0.0.2, so the
attack has an address of its own). It prints "ready" once every connection is open and has sent
its first bytes, and writes to the file REPORT a JSON list: per connection, the seconds from the
start of its connect to the server's close (`closed_s`, null if the server had not closed it
when the attacker gave up), the bytes it sent, and the status of any response it read. The
server's clock for a connection starts after its connect began, so a close is never early by
this measure.

Plain blocking sockets and one selector: connecting and sending first take microseconds each,
so the attack is in place at once and the timings are the server's, not the attacker's.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import Any

GIVE_UP_S = 20.0
BIG_HEADER_BYTES = 64 * 1024 * 1024
CHUNK = b"a" * 65536
POLL_VOTES = b"POST /v1/polls/edge-flood/votes HTTP/1.1\r\nHost: tally\r\n"
HALF_HEAD = POLL_VOTES + b"Content-Length: 64\r\n"
HALF_BODY = HALF_HEAD + b"\r\n0123456789"
TRICKLE_S = 0.1


class Connection:
    def __init__(self, address: tuple[str, int], source: str, first: bytes) -> None:
        self.started = time.monotonic()
        self.sock = socket.create_connection(address, timeout=5, source_address=(source, 0))
        self.sock.sendall(first)
        self.sock.setblocking(False)
        self.sent = len(first)
        self.received = b""
        self.closed_s: float | None = None

    def read(self) -> None:
        """Take what the server sent; note the time when it closed (EOF or reset)."""
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionError:
            chunk = b""
        if chunk:
            self.received += chunk
        else:
            self.closed_s = time.monotonic() - self.started

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, ConnectionError):  # full, or closed: next time
            self.sent += self.sock.send(data)

    def report(self) -> dict[str, Any]:
        parts = self.received.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 2 and parts[0].startswith(b"HTTP/1.") else None
        return {"closed_s": self.closed_s, "sent": self.sent, "status": status}


def wait_for_closes(connections: list[Connection], trickle: bytes | None = None) -> None:
    """Read until the server has closed every connection (or GIVE_UP_S); with `trickle`, send it
    on every open connection each TRICKLE_S meanwhile."""
    selector = selectors.DefaultSelector()
    for c in connections:
        selector.register(c.sock, selectors.EVENT_READ, c)
    give_up = time.monotonic() + GIVE_UP_S
    next_trickle = time.monotonic() + TRICKLE_S
    open_count = len(connections)
    while open_count and time.monotonic() < give_up:
        for key, _ in selector.select(timeout=max(0.0, next_trickle - time.monotonic())):
            connection: Connection = key.data
            connection.read()
            if connection.closed_s is not None:
                selector.unregister(connection.sock)
                open_count -= 1
        if trickle is not None and time.monotonic() >= next_trickle:
            next_trickle += TRICKLE_S
            for c in connections:
                if c.closed_s is None:
                    c.send(trickle)
    selector.close()
    for c in connections:
        c.sock.close()


def big_header(address: tuple[str, int], source: str) -> list[Connection]:
    connection = Connection(address, source, POLL_VOTES + b"X-Big: ")
    print("ready", flush=True)
    connection.sock.setblocking(True)
    connection.sock.settimeout(GIVE_UP_S)
    try:
        while connection.sent < BIG_HEADER_BYTES:
            connection.sent += connection.sock.send(CHUNK)
    except (ConnectionError, TimeoutError):
        pass  # the server closed it: what the kernel had not sent yet is lost
    connection.sock.setblocking(False)
    wait_for_closes([connection])
    return [connection]


def half_sent(address: tuple[str, int], source: str, count: int) -> list[Connection]:
    """Even connections send half a head, odd ones a whole head and 10 of 64 body bytes."""
    connections = [
        Connection(address, source, HALF_BODY if i % 2 else HALF_HEAD) for i in range(count)
    ]
    print("ready", flush=True)
    wait_for_closes(connections)
    return connections


def slowloris(address: tuple[str, int], source: str, count: int) -> list[Connection]:
    connections = [Connection(address, source, POLL_VOTES) for _ in range(count)]
    print("ready", flush=True)
    wait_for_closes(connections, trickle=b"X-Slow: still here\r\n")
    return connections


def attack(argv: list[str]) -> list[Connection]:
    kind, address, source = argv[0], (argv[1], int(argv[2])), argv[3]
    if kind == "big-header":
        return big_header(address, source)
    if kind == "half-sent":
        return half_sent(address, source, int(argv[5]))
    if kind == "slowloris":
        return slowloris(address, source, int(argv[5]))
    raise SystemExit(f"unknown attack {kind!r}")


if __name__ == "__main__":
    report = [c.report() for c in attack(sys.argv[1:])]
    Path(sys.argv[5]).write_text(json.dumps(report))
