"""A Valkey that stops answering fails commands with StoreUnavailable instead of hanging them."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tally.domain.errors import StoreUnavailable
from tally.store.embedded import EmbeddedValkey
from tally.store.resp import Valkey


@pytest.mark.single_node(
    "freezes the one valkey-server with SIGSTOP (a frozen cluster node is failed over: the "
    "cluster's failover tests)"
)
async def test_a_stopped_server_fails_waiting_commands_after_the_timeout(tmp_path: Path) -> None:
    """SIGSTOP the server: a command owed a reply fails within ~the command timeout, then works again after SIGCONT."""
    server = EmbeddedValkey(tmp_path)
    await server.start()
    client = Valkey(server.endpoint, command_timeout_s=0.5)
    try:
        await client.execute("PING")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable):
                await client.execute("SET", "k", "v")
            assert asyncio.get_running_loop().time() - started < 2.0
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.close()
        await server.stop()
