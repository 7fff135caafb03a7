"""uvicorn's `ws=` hand-over, against the uvicorn installed: a /live upgrade must end up on the
native socket, which runs no task per connection, while the ASGI route runs one per socket.

The hand-over relies on uvicorn internals (docs/components/live.md, "The uvicorn hand-over";
pyproject.toml pins the tested range). If a uvicorn release stopped handing the upgrade to our
class, the other live suites would still pass on uvicorn's own ASGI protocol; this one would not.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from live_clients import TIMEOUT_S
from live_server import live_server
from websockets.sync.client import connect


async def tasks_added_by_one_watcher(tmp_path: Path, *, native: bool) -> int:
    """Server tasks while one watcher is joined, minus before. The client runs in a thread, so
    none of its work is a task on this loop. A first watcher comes and goes before counting: on
    a cluster it starts the feed of the primary that owns the poll's channel (one task per
    primary, shared by every poll there), which is not a cost per watcher."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1, {"red": 1})
        await one_watcher(server.ws_url(poll_id), lambda: None)
        await asyncio.sleep(0.2)  # and let the server finish with its socket
        before = len(asyncio.all_tasks())
        counted: list[int] = []
        await one_watcher(server.ws_url(poll_id), lambda: counted.append(len(asyncio.all_tasks())))
        return counted[0] - before


async def one_watcher(url: str, while_joined: Callable[[], None]) -> None:
    """A watcher joins (it has the snapshot), `while_joined()` runs, and the watcher leaves."""
    joined, leave = threading.Event(), threading.Event()

    def watch() -> None:
        with connect(url, open_timeout=TIMEOUT_S) as ws:
            ws.recv(timeout=TIMEOUT_S)  # the snapshot: the watcher has joined
            joined.set()
            leave.wait(TIMEOUT_S)

    watcher = asyncio.get_running_loop().run_in_executor(None, watch)
    try:
        assert await asyncio.to_thread(joined.wait, TIMEOUT_S), "the watcher never joined"
        await asyncio.sleep(0.1)  # let the join's own short-lived work finish
        while_joined()
    finally:
        leave.set()
        await watcher


async def test_a_live_socket_is_served_by_the_native_protocol(tmp_path: Path) -> None:
    """With the hook set, a watcher costs no server task: the native socket took the upgrade."""
    assert await tasks_added_by_one_watcher(tmp_path, native=True) == 0


async def test_without_the_hook_the_same_watcher_costs_tasks(tmp_path: Path) -> None:
    """The control: on uvicorn's ASGI protocol the app runs in tasks per socket, so a count of
    0 above does tell the two routes apart."""
    assert await tasks_added_by_one_watcher(tmp_path, native=False) > 0
