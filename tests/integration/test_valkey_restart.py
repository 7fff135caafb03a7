"""The Valkey client across a `kill -9` and supervised restart of its valkey-server: every
failure on the way is a retryable StoreUnavailable, and commands work again afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tally.domain.errors import StoreUnavailable
from tally.store.embedded import EmbeddedValkey
from tally.store.library import load_functions
from tally.store.resp import Valkey

# Enough data that the restarted server spends a while loading it (answering -LOADING).
KEYS = 200_000
BATCH = 10_000


@pytest.mark.single_node(
    "kill -9 and restart of the one valkey-server while it loads its AOF (a killed cluster "
    "primary is failed over instead: the cluster's failover tests)"
)
async def test_a_client_reconnecting_while_the_server_loads_its_data_sees_store_unavailable(
    tmp_path: Path,
) -> None:
    """Until a restarted valkey-server has loaded its data, commands fail with StoreUnavailable."""
    server = EmbeddedValkey(tmp_path)
    await server.start()
    supervisor = asyncio.create_task(server.supervise())
    client = Valkey(server.endpoint, on_connect=load_functions)
    try:
        for first in range(0, KEYS, BATCH):
            await client.pipeline([("SET", f"k{n}", "x" * 64) for n in range(first, first + BATCH)])
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)

        failures: Counter[str] = Counter()
        async with asyncio.timeout(30):
            while True:
                try:
                    assert await client.execute("DBSIZE") == KEYS
                    break
                except StoreUnavailable:
                    failures["StoreUnavailable"] += 1
                except Exception as other:  # what the client must not let through
                    failures[f"{type(other).__name__}: {other}"] += 1
                await asyncio.sleep(0.005)
        assert failures
        assert set(failures) == {"StoreUnavailable"}, failures
    finally:
        await client.close()
        await server.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
