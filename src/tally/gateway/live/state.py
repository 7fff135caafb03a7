"""The lifecycle of one live watcher (a WebSocket or an SSE stream), as a transition table.

    CONNECTING -> JOINING -> OPEN -> CLOSING -> CLOSED
         \\____________\\_______\\_________________/^   (any state may end in CLOSED)

CONNECTING: the WebSocket opening handshake has not been answered yet.
JOINING:    accepted; the hub is looking the poll up, subscribing and reading the latest snapshot.
            Snapshots that arrive meanwhile wait in the watcher's one-snapshot slot.
OPEN:       receives every newer snapshot (latest-only when it cannot keep up).
CLOSING:    a close frame was sent (or the stream is ending); nothing more is sent.
CLOSED:     the connection is gone and the watcher has left the hub.
"""

from __future__ import annotations

import enum


class WatcherState(enum.Enum):
    CONNECTING = "connecting"
    JOINING = "joining"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_S = WatcherState
TRANSITIONS: dict[WatcherState, frozenset[WatcherState]] = {
    _S.CONNECTING: frozenset({_S.JOINING, _S.CLOSING, _S.CLOSED}),
    _S.JOINING: frozenset({_S.OPEN, _S.CLOSING, _S.CLOSED}),
    _S.OPEN: frozenset({_S.CLOSING, _S.CLOSED}),
    _S.CLOSING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


class IllegalWatcherTransition(RuntimeError):
    """A watcher was asked to make a move the table forbids (a bug, never a client's doing)."""

    def __init__(self, current: WatcherState, target: WatcherState) -> None:
        super().__init__(f"a live watcher cannot go from {current.value} to {target.value}")
        self.current = current
        self.target = target


def moved(current: WatcherState, target: WatcherState) -> WatcherState:
    """`target`, if the table allows the move from `current`; else IllegalWatcherTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalWatcherTransition(current, target)
    return target
