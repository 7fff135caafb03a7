"""Shared by the cluster client and live-feed tests: a real 3x1 LocalCluster per test module, a
connected ValkeyCluster per test, keys and poll ids placed on chosen primaries, and a failover
that puts the cluster back (the killed node rejoins as a replica) whatever the test did.

(A helper module rather than a conftest.py: tests/ has one already, and two `conftest` modules
without packages are one module name too many for mypy.)"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from tally.store import keys
from tally.store.cluster import ClusterSeeds, ValkeyCluster, key_slot
from tally.store.library import load_functions
from tally.store.local_cluster import LocalCluster

T = TypeVar("T")

# Short client timeouts: a test that waits on a dead node must not wait long.
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0
FAILOVER_S = 30.0  # node timeout 1 s: a failover takes 2-3 s here; this is the give-up bound


@contextlib.contextmanager
def local_cluster(directory: Path) -> Iterator[LocalCluster]:
    """A 3-primary, 1-replica-each cluster, stopped on exit."""
    cluster = LocalCluster(directory, primaries=3, replicas=1, node_timeout_ms=1000)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.stop()


def primaries(cluster: LocalCluster) -> list[int]:
    """The ports of the primaries now (failovers change them)."""
    return [n.port for n in cluster.topology() if n.role == "primary"]


def owner_by_slot(cluster: LocalCluster) -> dict[int, int]:
    """Every slot's primary port, as a live node sees it now."""
    owner: dict[int, int] = {}
    for start, end, primary, *_ in cluster.call(primaries(cluster)[0], "CLUSTER", "SLOTS"):
        for slot in range(start, end + 1):
            owner[slot] = int(primary[1])
    return owner


def key_on(cluster: LocalCluster, port: int, prefix: str = "k") -> str:
    """A fresh key whose slot the primary on `port` serves."""
    owner = owner_by_slot(cluster)
    for _ in range(10_000):
        key = f"{prefix}:{secrets.token_hex(6)}"
        if owner[key_slot(key.encode())] == port:
            return key
    raise AssertionError(f"no key found for port {port}")


def poll_on(cluster: LocalCluster, port: int) -> str:
    """A fresh poll id whose live channel (and poll record) the primary on `port` serves."""
    owner = owner_by_slot(cluster)
    for _ in range(10_000):
        poll_id = f"p{secrets.token_hex(5)}"
        if owner[key_slot(keys.live_channel(poll_id).encode())] == port:
            return poll_id
    raise AssertionError(f"no poll id found for port {port}")


def seeds(cluster: LocalCluster) -> ClusterSeeds:
    return ClusterSeeds.from_url(cluster.url)


@contextlib.asynccontextmanager
async def cluster_client(
    cluster: LocalCluster, *, functions: bool = True
) -> AsyncIterator[ValkeyCluster]:
    """A connected ValkeyCluster (loading Tally's functions on each primary), closed on exit."""
    client = ValkeyCluster(
        seeds(cluster),
        connect_timeout_s=CONNECT_TIMEOUT_S,
        command_timeout_s=COMMAND_TIMEOUT_S,
        on_connect=load_functions if functions else None,
    )
    try:
        await client.connect()
        yield client
    finally:
        await client.close()


@contextlib.contextmanager
def failed_over(cluster: LocalCluster, port: int) -> Iterator[int]:
    """SIGKILL the primary on `port`; yield its replica's port (promoted once the cluster has
    failed over: wait for it with `wait_promoted`). On exit the killed node is started again,
    rejoins as a replica, and the cluster is healthy with every replica in sync."""
    (heir,) = cluster.replicas_of(port)
    cluster.kill(port, signal.SIGKILL)
    try:
        yield heir
    finally:
        deadline = time.monotonic() + FAILOVER_S
        while cluster.is_alive(port) and time.monotonic() < deadline:
            time.sleep(0.02)  # SIGKILL is not instant
        cluster.wait_healthy(timeout_s=FAILOVER_S)
        cluster.restart(port)
        cluster.wait_healthy(timeout_s=FAILOVER_S, replicas_in_sync=True)


def promoted(cluster: LocalCluster, heir: int) -> bool:
    """Whether `heir` is a primary now, as the cluster itself (a live node) sees it."""
    return any(n.port == heir and n.role == "primary" for n in cluster.topology())


async def eventually(
    attempt: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = 0.05
) -> T:
    """attempt() until it returns without raising (its last error after timeout_s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for n in itertools.count():
        try:
            return await attempt()
        except Exception:
            if loop.time() >= deadline:
                raise
        await asyncio.sleep(min(interval_s * (n + 1), 0.25))
    raise AssertionError("unreachable")
