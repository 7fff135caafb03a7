"""What result visibility costs the live fan-out: `LiveSocket.deliver` of one snapshot to N open
sockets, before the change (the websocket.py and snapshot.py of a git commit) and after it, and
the cost of encoding one snapshot (plain, or with its redacted twin).

    .venv/bin/python benchmarks/visibility_fanout.py [--sockets 10000] [--before 1bc9d05]

Each socket is a real LiveSocket in the OPEN state whose transport only counts its writes, so the
figure is the fan-out's own Python work per socket (a real uvloop transport adds its write). The
variants run interleaved and each reports its best time, so a busy machine skews them alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from tally.domain.polls import Visibility
from tally.gateway.live import websocket
from tally.gateway.live.snapshot import live_snapshot
from tally.gateway.live.state import WatcherState

ROUNDS = 10
REPEATS = 40


class CountingTransport:
    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1


def old_module(commit: str, path: str, name: str, directory: Path) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], capture_output=True, check=True, text=True
    ).stdout
    file = directory / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def open_sockets(cls: Any, n: int, sees: bool | None) -> list[Any]:
    sockets = []
    for _ in range(n):
        socket = cls.__new__(cls)  # only what deliver() reads: no handshake, no loop
        socket._state = WatcherState.OPEN
        socket._paused = False
        socket._sent_seq = 0
        socket._pending = None
        socket._transport = CountingTransport()
        if sees is not None:
            socket._sees = sees
        sockets.append(socket)
    return sockets


def document(seq: int) -> bytes:
    counts = {f"option-{i}": 1000 * i for i in range(8)}
    return orjson.dumps(
        {"type": "snapshot", "poll_id": "p", "seq": seq, "state": "open", "counts": counts,
         "total": sum(counts.values()), "under_review": 0, "ts": "2026-01-01T00:00:00.000Z"}
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000, help="open sockets per variant")
    parser.add_argument("--before", default="1bc9d05", help="the commit to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_ws = old_module(args.before, "src/tally/gateway/live/websocket.py", "old_ws", Path(tmp))
        old_snap = old_module(
            args.before, "src/tally/gateway/live/snapshot.py", "old_snapshot", Path(tmp)
        )
    n = args.sockets
    variants: dict[str, tuple[list[Any], Callable[[int], Any]]] = {
        "before, live poll": (
            open_sockets(old_ws.LiveSocket, n, None),
            lambda q: old_snap.live_snapshot("p", document(q)),
        ),
        "after, live poll": (
            open_sockets(websocket.LiveSocket, n, False),
            lambda q: live_snapshot("p", document(q), Visibility.LIVE),
        ),
        "after, after-vote, redacted socket": (
            open_sockets(websocket.LiveSocket, n, False),
            lambda q: live_snapshot("p", document(q), Visibility.AFTER_VOTE),
        ),
        "after, after-vote, socket sees counts": (
            open_sockets(websocket.LiveSocket, n, True),
            lambda q: live_snapshot("p", document(q), Visibility.AFTER_VOTE),
        ),
    }
    best = dict.fromkeys(variants, float("inf"))
    seq = 0
    for _ in range(REPEATS):
        for name, (sockets, make) in variants.items():
            for snapshot in [make(seq + i + 1) for i in range(ROUNDS)]:
                started = time.perf_counter()
                for socket in sockets:
                    socket.deliver(snapshot)
                best[name] = min(best[name], time.perf_counter() - started)
        seq += ROUNDS
    print(f"deliver one snapshot to {n} sockets, best of {REPEATS * ROUNDS}:")
    for name, seconds in best.items():
        print(f"  {name:40s} {seconds * 1e3:7.3f} ms  ({seconds / n * 1e9:5.0f} ns a socket)")

    def encoding(make: Callable[[int], Any]) -> float:
        fastest = float("inf")
        for q in range(1, 3001):
            started = time.perf_counter()
            make(q)
            fastest = min(fastest, time.perf_counter() - started)
        return fastest * 1e6

    print("encode one snapshot (8 options), best of 3000:")
    print(
        f"  before, live poll                        {encoding(variants['before, live poll'][1]):7.1f} us"
    )
    print(
        f"  after, live poll                         {encoding(variants['after, live poll'][1]):7.1f} us"
    )
    hidden = encoding(variants["after, after-vote, redacted socket"][1])
    print(f"  after, after-vote (full + redacted)      {hidden:7.1f} us")


if __name__ == "__main__":
    main()
