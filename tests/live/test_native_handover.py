"""uvicorn's `ws=` hand-over, against the uvicorn installed: a /live upgrade must end up on the
native socket, which runs no task per connection, while the ASGI route runs one per socket.

The hand-over relies on uvicorn internals (docs/components/live.md, "The uvicorn hand-over";
pyproject.toml pins the tested range). If a uvicorn release stopped handing the upgrade to our
class, the other live suites would still pass on uvicorn's own ASGI protocol; this one would not.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from live_clients import TIMEOUT_S
from live_server import live_server
from websockets.sync.client import connect


async def tasks_added_by_one_watcher(tmp_path: Path, *, native: bool) -> int:
    """Server tasks while one watcher is joined, minus before. The client runs in a thread, so
    none of its work is a task on this loop."""
    async with live_server(tmp_path, native=native) as server:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1, {"red": 1})
        before = len(asyncio.all_tasks())
        joined, leave = threading.Event(), threading.Event()

        def watch() -> None:
            with connect(server.ws_url(poll_id), open_timeout=TIMEOUT_S) as ws:
                ws.recv(timeout=TIMEOUT_S)  # the snapshot: the watcher has joined
                joined.set()
                leave.wait(TIMEOUT_S)

        watcher = asyncio.get_running_loop().run_in_executor(None, watch)
        try:
            assert await asyncio.to_thread(joined.wait, TIMEOUT_S), "the watcher never joined"
            await asyncio.sleep(0.1)  # let the join's own short-lived work finish
            during = len(asyncio.all_tasks())
        finally:
            leave.set()
            await watcher
        return during - before


async def test_a_live_socket_is_served_by_the_native_protocol(tmp_path: Path) -> None:
    """With the hook set, a watcher costs no server task: the native socket took the upgrade."""
    assert await tasks_added_by_one_watcher(tmp_path, native=True) == 0


async def test_without_the_hook_the_same_watcher_costs_tasks(tmp_path: Path) -> None:
    """The control: on uvicorn's ASGI protocol the app runs in tasks per socket, so a count of
    0 above does tell the two routes apart."""
    assert await tasks_added_by_one_watcher(tmp_path, native=False) > 0
