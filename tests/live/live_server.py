"""A real gateway in the test's own event loop, for the live tests: Tally's gateway role as the
composition root builds it (`tally.wiring.gateway`, on an embedded valkey-server from
`tally.wiring.store`), and uvicorn on a free port serving /live natively (or, with
`native=False`, through the plain ASGI route). No aggregator runs: tests publish snapshots.

It assembles the parts the way `tally serve` does; a test uses it as
`async with live_server(tmp_path) as server:` and so stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from conftest import CLUSTERS, ON_CLUSTER, channel_subscribers, pseudonym_secret_for
from defences_off import NO_DEFENCES
from tally.bench.processes import free_port
from tally.config import Settings
from tally.domain.defences import from_document
from tally.domain.polls import OptionSpec
from tally.domain.results import sum_lanes
from tally.gateway.live.gateway import LiveGateway
from tally.gateway.render import iso_ms
from tally.gateway.server import GatewayServer, server_config
from tally.security.dev_issuer import DevIssuer
from tally.service import NewPoll
from tally.store import keys
from tally.store.polls import ValkeyPolls
from tally.wiring.gateway import Gateway, build_gateway
from tally.wiring.store import StoreConnection, open_store

HOST = "127.0.0.1"
AGGREGATOR = "test-aggregator"


@dataclass
class LiveServer:
    runtime: Gateway
    live: LiveGateway
    port: int
    aggregator: StoreConnection  # the aggregator role's own connection (its ACL user)
    admin: StoreConnection  # the operator's, for what no role may ask (PUBSUB counts)

    host: str = HOST

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ws_url(self, poll_id: str, query: str = "") -> str:
        return f"ws://{HOST}:{self.port}/v1/polls/{poll_id}/live{query}"

    def events_url(self, poll_id: str) -> str:
        return f"{self.url}/v1/polls/{poll_id}/events"

    @property
    def issuer(self) -> DevIssuer:
        assert self.runtime.issuer is not None
        return self.runtime.issuer

    def token(self, subject: str) -> str:
        return self.issuer.mint(subject)

    async def open_poll(self, *options: str, lanes: int = 4) -> str:
        """Create and open a poll (options red/green/blue by default); returns its id."""
        labels = options or ("Red", "Green", "Blue")
        spec = NewPoll("live test", [OptionSpec(label=label) for label in labels], lanes=lanes)
        poll = await self.runtime.service.create_poll(spec)
        await self.runtime.service.open_poll(poll.id)
        return poll.id

    async def publish(
        self,
        poll_id: str,
        seq: int,
        counts: Mapping[str, int] | None = None,
        *,
        state: str = "open",
        padding: int = 0,
    ) -> str:
        """Store and publish snapshot `seq` as the aggregator would (FCALL tally_snapshot);
        returns the function's status ('published', or 'stale' for a seq not moving forward)."""
        client = self.aggregator
        counts = dict(counts or {})
        doc = {
            "type": "snapshot",
            "poll_id": poll_id,
            "seq": seq,
            "state": state,
            "counts": counts,
            "total": sum(counts.values()),
            "ts": iso_ms(time.time_ns() // 1_000_000),
        }
        if padding:
            doc["padding"] = "x" * padding
        lease = keys.poll_lease(poll_id)
        await client.execute("FCALL", "tally_lease", 1, lease, AGGREGATOR, 60_000)
        status, _ = await client.execute(
            "FCALL", "tally_snapshot", 2, keys.poll_snapshot(poll_id), lease,
            AGGREGATOR, seq, orjson.dumps(doc), keys.live_channel(poll_id),
        )  # fmt: skip
        return str(status.decode())

    async def publish_results(self, poll_id: str, seq: int) -> dict[str, int]:
        """Publish the poll's lane counters, summed, as snapshot `seq` (the aggregator's job)."""
        poll = await self.runtime.service.get_poll(poll_id)
        lanes, changed_at = await ValkeyPolls(self.runtime.client).tallies(poll)
        results = sum_lanes(poll, poll.state, lanes, changed_at)
        await self.publish(poll_id, seq, results.counts, state=results.state.value)
        return dict(results.counts)

    async def subscriptions(self, poll_id: str) -> int:
        """How many connections Valkey has subscribed to the poll's live channel."""
        return await channel_subscribers(self.admin, poll_id)


@contextlib.asynccontextmanager
async def live_server(
    data_dir: Path,
    *,
    native: bool = True,
    slow_client_s: float = 10.0,
    max_connections: int = 5_000,
    max_connections_per_ip: int = 5_000,
    ping_interval_s: float = 20.0,
    sse_keepalive_s: float = 15.0,
) -> AsyncIterator[LiveServer]:
    """Start a gateway with the live routes; stop it (live shutdown first) on exit."""
    settings = Settings(
        data_dir=data_dir,
        slow_client_s=slow_client_s,
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        ping_interval_s=ping_interval_s,
        sse_keepalive_s=sse_keepalive_s,
        log_level="warning",
        defences=from_document(NO_DEFENCES),
    )
    if ON_CLUSTER:  # TALLY_TEST_STORE=cluster: the store-level tests' cluster, an external store
        settings = replace(
            settings,
            valkey_url=CLUSTERS.shared().url,
            pseudonym_secret=bytes.fromhex(pseudonym_secret_for(data_dir)),
        )
    store = await open_store(settings, "serve", may_embed=True)
    try:
        runtime = await build_gateway(settings, store, register_admission_key=True)
    except BaseException:
        await store.close(5)
        raise
    live = runtime.live
    app = runtime.app
    port = free_port()
    config = server_config(app, HOST, port, graceful_timeout_s=5)
    if native:
        config.ws = live.websocket_protocol
    server = GatewayServer(config)
    live.start()
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        while not server.started:  # uvicorn offers only a flag
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield LiveServer(runtime, live, port, store.client("aggregator"), store.client("admin"))
    finally:
        await live.shutdown(5)
        server.should_exit = True
        await task
        await store.close(5)
