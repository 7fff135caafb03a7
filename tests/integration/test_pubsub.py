"""ValkeyLiveFeed against a real valkey-server: one SSUBSCRIBE connection for every poll, confirmed
subscriptions, ordered messages, and reconnection that reports what may have been missed."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from live_subscriber import subscribers, until_unsubscribed

from feed_recorder import Recorder
from tally.domain.errors import StoreUnavailable
from tally.store import keys
from tally.store.embedded import EmbeddedValkey, free_port
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, Valkey

WAIT_S = 5.0
# The feed under test is the one-node feed; a cluster's gateway runs one per primary
# (ClusterLiveFeed, which test_pubsub_hub drives in cluster mode).
ONE_NODE_FEED = pytest.mark.single_node(
    "ValkeyLiveFeed carries every poll's channel on one SSUBSCRIBE connection to one node; a "
    "cluster node refuses the channels of other nodes' slots"
)


def poll_ids(n: int) -> list[str]:
    return [f"feed-{secrets.token_hex(6)}" for _ in range(n)]


@pytest.fixture
async def feed(valkey_server: EmbeddedValkey) -> AsyncIterator[tuple[ValkeyLiveFeed, Recorder]]:
    recorder = Recorder(WAIT_S)
    live_feed = ValkeyLiveFeed(valkey_server.endpoint, connect_timeout_s=2.0)
    live_feed.start(recorder.on_message, recorder.on_resubscribed)
    yield live_feed, recorder
    await live_feed.close()


@ONE_NODE_FEED
async def test_a_confirmed_subscription_gets_every_later_message_in_order(
    feed: tuple[ValkeyLiveFeed, Recorder], valkey: Valkey
) -> None:
    """Once subscribe() returns, every message published on the poll's channel arrives, in order."""
    live_feed, recorder = feed
    (poll_id,) = poll_ids(1)
    await live_feed.subscribe(poll_id)
    for n in range(50):
        await valkey.execute("SPUBLISH", keys.live_channel(poll_id), b"m%d" % n)
    await recorder.until(lambda: len(recorder.messages.get(poll_id, [])) == 50)
    assert recorder.messages[poll_id] == [b"m%d" % n for n in range(50)]


@ONE_NODE_FEED
async def test_one_connection_carries_every_poll(
    feed: tuple[ValkeyLiveFeed, Recorder], valkey: Valkey
) -> None:
    """Three polls, one SSUBSCRIBE-mode connection; each message reaches its own poll."""
    live_feed, recorder = feed
    polls = poll_ids(3)
    for poll_id in polls:
        await live_feed.subscribe(poll_id)
    for poll_id in polls:
        await valkey.execute("SPUBLISH", keys.live_channel(poll_id), poll_id.encode())
    await recorder.until(lambda: len(recorder.messages) == 3)
    assert recorder.messages == {poll_id: [poll_id.encode()] for poll_id in polls}
    clients = (await valkey.execute("CLIENT", "LIST", "TYPE", "pubsub")).decode()
    assert sum("name=tally-live " in line for line in clients.splitlines()) == 1


@ONE_NODE_FEED
async def test_unsubscribe_releases_the_channel(
    feed: tuple[ValkeyLiveFeed, Recorder], valkey: Valkey
) -> None:
    """After unsubscribe, Valkey counts no subscriber and nothing more is delivered."""
    live_feed, recorder = feed
    (poll_id,) = poll_ids(1)
    await live_feed.subscribe(poll_id)
    assert await subscribers(valkey, poll_id) == 1
    live_feed.unsubscribe(poll_id)
    await until_unsubscribed(valkey, poll_id)
    await valkey.execute("SPUBLISH", keys.live_channel(poll_id), b"late")
    await asyncio.sleep(0.1)
    assert poll_id not in recorder.messages


@ONE_NODE_FEED
async def test_a_killed_connection_is_reestablished_resubscribed_and_reported(
    feed: tuple[ValkeyLiveFeed, Recorder], valkey: Valkey
) -> None:
    """CLIENT KILL the subscriber: it reconnects, subscribes every poll again, names them in
    on_resubscribed (messages meanwhile were lost), and messages flow again."""
    live_feed, recorder = feed
    polls = poll_ids(2)
    for poll_id in polls:
        await live_feed.subscribe(poll_id)
    await valkey.execute("CLIENT", "KILL", "TYPE", "pubsub")
    await recorder.until(lambda: recorder.resubscribed)
    assert recorder.resubscribed == [sorted(polls)]
    await valkey.execute("SPUBLISH", keys.live_channel(polls[0]), b"after")
    await recorder.until(lambda: recorder.messages.get(polls[0]) == [b"after"])


async def test_subscribe_fails_fast_when_valkey_is_unreachable() -> None:
    """Nothing listening: subscribe() raises StoreUnavailable within the connect timeout."""
    live_feed = ValkeyLiveFeed(Endpoint("127.0.0.1", free_port()), connect_timeout_s=0.3)
    live_feed.start(Recorder(WAIT_S).on_message, Recorder(WAIT_S).on_resubscribed)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailable):
            await live_feed.subscribe("nowhere")
        assert asyncio.get_running_loop().time() - started < 2.0
    finally:
        await live_feed.close()


@pytest.mark.single_node("freezes the one valkey-server with SIGSTOP")
async def test_a_silent_server_is_dropped_and_the_feed_recovers_when_it_answers(
    tmp_path: Path,
) -> None:
    """SIGSTOP Valkey: unanswered PINGs drop the connection; after SIGCONT the feed resubscribes."""
    server = EmbeddedValkey(tmp_path)
    await server.start()
    recorder = Recorder(WAIT_S)
    live_feed = ValkeyLiveFeed(server.endpoint, connect_timeout_s=0.5, ping_interval_s=0.2)
    live_feed.start(recorder.on_message, recorder.on_resubscribed)
    try:
        await live_feed.subscribe("sleepy")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(WAIT_S):
                while live_feed.connected:  # noqa: ASYNC110  # the feed exposes only a flag
                    await asyncio.sleep(0.02)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        await recorder.until(lambda: recorder.resubscribed)
        assert recorder.resubscribed[-1] == ["sleepy"]
    finally:
        await live_feed.close()
        await server.stop()
