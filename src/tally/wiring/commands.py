"""The long-running commands: which roles each process runs, its supervised duties, and its
numbered shutdown. Each returns the process's exit status (0 after SIGINT/SIGTERM, 1 after a
crash the supervisor would not restart).

    command           roles                                    serves on
    tally serve       gateway, aggregator, archiver, Valkey    TALLY_HOST:TALLY_PORT (8000)
    tally gateway     gateway                                  TALLY_HOST:TALLY_PORT (8000)
    tally aggregator  aggregator and deadline sweep            TALLY_OPS_HOST:TALLY_AGGREGATOR_PORT (8001)
    tally archiver    archiver                                 TALLY_OPS_HOST:TALLY_ARCHIVER_PORT (8002)

`tally serve` starts an embedded valkey-server unless TALLY_VALKEY_URL is set; the others need
TALLY_VALKEY_URL. The gateway's port serves the API and /healthz, /readyz, /metrics; the
aggregator's and the archiver's serve only those three (gateway.ops).

What the supervisor does when a duty crashes (supervisor.py):

    duty               in                           on a crash
    http               serve, gateway               exit 1: a gateway that cannot serve is no use
    ops http           aggregator, archiver         exit 1: unprobed, the role would look dead
    valkey supervisor  serve (embedded)             exit 1: nothing else would restart Valkey
    aggregator         serve, aggregator            restart (3 a minute at most), then exit 1
    deadline sweep     serve, aggregator            restart (3 a minute at most), then exit 1
    archiver           serve (unless off), archiver restart (3 a minute at most), then exit 1

The live side's own tasks (the pub/sub link, the ping sweep, each connection's work) belong to
the LiveGateway (gateway.live), not to this supervisor: the HTTP duty starts them, and its
shutdown step ends them.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tally.config import Settings
from tally.demo import announce_demo
from tally.gateway.metrics import Metrics
from tally.gateway.ops import ReadinessCheck, ops_app
from tally.gateway.server import GatewayServer, server_config
from tally.service.join_codes import JoinCodes
from tally.store.join_codes import ValkeyJoinCodes
from tally.wiring.aggregator import build_aggregator, observe_aggregator
from tally.wiring.archiver import build_archiver, observe_archiver
from tally.wiring.gateway import Gateway, build_gateway, scheme
from tally.wiring.store import Store, StoreConnection, functions_ready, open_store
from tally.wiring.supervisor import Duty, Step, Supervisor

if TYPE_CHECKING:
    from tally.wiring.workers import GatewayWorker

log = logging.getLogger("tally")

# Extra time for a step whose parts have their own timeouts (uvicorn, the live side, SIGKILL).
MARGIN_S = 5.0


async def serve(settings: Settings, *, demo: bool = False) -> int:
    """`tally serve`: every role in one process, on an embedded Valkey unless one is configured."""
    store = await open_store(settings, "serve", may_embed=True)
    try:
        gateway = await build_gateway(settings, store, demo=demo, register_admission_key=True)
        aggregator = build_aggregator(store.client("aggregator"), settings, gateway.service)
        # With TALLY_ARCHIVER=off another process writes the ledger: none is built here (nor
        # its key made), and /metrics has no archiver samples.
        archiver = build_archiver(store.client("archiver"), settings) if settings.archiver else None
    except BaseException:
        await store.close(settings.shutdown_timeout_s)
        raise
    observe_aggregator(gateway.metrics, aggregator.aggregator)
    if archiver is not None:
        observe_archiver(gateway.metrics, archiver.archiver)

    async def started() -> None:
        log.info("Tally listening on %s://%s:%d", scheme(settings), settings.host, settings.port)
        if demo:
            join_codes = JoinCodes(ValkeyJoinCodes(gateway.client))  # as the gateway's
            await announce_demo(gateway.service, settings, gateway.issuer, join_codes)

    server = gateway.http_server(after_startup=started)
    t = settings.shutdown_timeout_s
    duties = [gateway.live_duty(), gateway.http_duty(server), *aggregator.duties()]
    releases = [aggregator.release_step(t)]
    if archiver is not None:
        duties += archiver.duties()
        releases.insert(0, archiver.release_step(t))  # the archiver hands its leases over first
    if store.embedded is not None:
        duties.append(Duty("valkey supervisor", store.embedded.supervise))
    shutdown = [
        # 1. Live connections first (1012, end of SSE), then uvicorn stops accepting and
        #    finishes requests in flight, each within TALLY_SHUTDOWN_TIMEOUT_S.
        stop_http(server, 2 * t + MARGIN_S, also=("live",)),
        # 2. The loops stop: aggregator, deadline sweep, archiver, Valkey supervisor.
        Step("stop the background loops", t, ends=tuple(d.name for d in duties[2:])),
        # 3, 4. The archiver (after its file work), then the aggregator, release their leases,
        #    so that another process takes their polls over at once rather than after the TTL.
        *releases,
        # 5. Every Valkey connection closes.
        Step("close the Valkey connections", t, then=store.close_clients),
    ]
    if store.embedded is not None:
        # 6. The embedded valkey-server fsyncs and exits (SIGKILL after the timeout).
        shutdown.append(
            Step(
                "stop the embedded valkey-server", t + MARGIN_S, then=lambda: store.stop_embedded(t)
            )
        )
    return await supervise(duties, shutdown, server)


async def gateway(settings: Settings, worker: GatewayWorker | None = None) -> int:
    """`tally gateway`: HTTP and live only, against TALLY_VALKEY_URL; no aggregator, archiver or
    deadline sweep (run `tally aggregator` and `tally archiver` for those).

    With `worker`, the process is one of `tally gateway --workers N` (wiring.workers): it serves
    the socket its parent bound, and its /metrics sums every worker's."""
    store = await open_store(settings, "gateway")
    try:
        role: Gateway = await build_gateway(settings, store)
    except BaseException:
        await store.close_clients()
        raise
    if worker is not None:
        role.metrics.combine = worker.scrape  # /metrics: the sum over every worker

    async def started() -> None:
        log.info(
            "Tally gateway listening on %s://%s:%d", scheme(settings), settings.host, settings.port
        )

    server = role.http_server(after_startup=started)
    t = settings.shutdown_timeout_s
    shutdown = [
        # 1. Live connections, then requests in flight (as in `tally serve`).
        stop_http(server, 2 * t + MARGIN_S, also=("live",)),
        # 2. Its Valkey connections close.
        Step("close the Valkey connections", t, then=store.close_clients),
    ]
    duties = [role.live_duty(), role.http_duty(server)]
    if worker is not None:
        duties = [
            role.live_duty(),
            worker.http_duty(role, server),
            worker.metrics_duty(role.metrics),
        ]
        # 2. (then 3. the Valkey connections) It stops answering its siblings' scrapes.
        shutdown.insert(1, worker.metrics_step(t))
    return await supervise(duties, shutdown, server, report=worker is None)


async def aggregator(settings: Settings) -> int:
    """`tally aggregator`: the aggregator and the deadline sweep, against TALLY_VALKEY_URL, with
    /healthz, /readyz and /metrics on TALLY_OPS_HOST:TALLY_AGGREGATOR_PORT."""
    store = await open_store(settings, "aggregator")
    metrics = Metrics(vote_path=False)
    role = build_aggregator(_client(store, "aggregator", metrics), settings)
    observe_aggregator(metrics, role.aggregator)
    ready = functions_checker(store, "aggregator")
    server = ops_server(settings, settings.aggregator_port, metrics, [ready])
    log.info(
        "aggregator %s running (tick %d ms, lease %d ms), ops on http://%s:%d",
        role.aggregator.owner, settings.tick_ms, settings.lease_ttl_ms,
        settings.ops_host, settings.aggregator_port,
    )  # fmt: skip
    t = settings.shutdown_timeout_s
    shutdown = [
        # 1. The ops server stops answering probes and scrapes.
        stop_http(server, t + MARGIN_S, "ops http"),
        # 2. The aggregator loop and the deadline sweep stop.
        Step(
            "stop the aggregator and the deadline sweep", t, ends=("aggregator", "deadline sweep")
        ),
        # 3. It hands its leases over at once.
        role.release_step(t),
        # 4. Its Valkey connections close.
        Step("close the Valkey connections", t, then=store.close_clients),
    ]
    duties = [ops_duty(server), *role.duties()]
    return await supervise(duties, shutdown, server)


async def archiver(settings: Settings) -> int:
    """`tally archiver`: the archiver, against TALLY_VALKEY_URL, writing TALLY_DATA_DIR/ledger,
    with /healthz, /readyz and /metrics on TALLY_OPS_HOST:TALLY_ARCHIVER_PORT."""
    store = await open_store(settings, "archiver")
    metrics = Metrics(vote_path=False)
    role = build_archiver(_client(store, "archiver", metrics), settings)
    observe_archiver(metrics, role.archiver)
    checks = [functions_checker(store, "archiver"), role.ledger_writable]
    server = ops_server(settings, settings.archiver_port, metrics, checks)
    log.info(
        "archiver %s running (checkpoints every %d ms, ledger in %s), ops on http://%s:%d",
        role.archiver.owner, settings.checkpoint_interval_ms, role.directory,
        settings.ops_host, settings.archiver_port,
    )  # fmt: skip
    t = settings.shutdown_timeout_s
    shutdown = [
        # 1. The ops server stops answering probes and scrapes.
        stop_http(server, t + MARGIN_S, "ops http"),
        # 2. The archiver loop stops (file work already in its thread goes on).
        Step("stop the archiver loop", t, ends=("archiver",)),
        # 3. That file work finishes, then it releases its leases.
        role.release_step(t),
        # 4. Its Valkey connections close.
        Step("close the Valkey connections", t, then=store.close_clients),
    ]
    duties = [ops_duty(server), *role.duties()]
    return await supervise(duties, shutdown, server)


async def supervise(
    duties: Sequence[Duty], shutdown: Sequence[Step], server: GatewayServer, *, report: bool = True
) -> int:
    """Run the role's duties until it stops; the exit status.

    Everything built until now (modules, the app, caches) lives as long as the process, so
    `gc.freeze()` moves it out of the collector's reach: full collections no longer traverse
    it, which took ~19k instructions off every vote (BENCHMARKS.md, the seams refactor)."""
    gc.freeze()
    # `report`: what was stopped goes to stderr, unless a parent (tally gateway --workers) reports
    out = sys.stderr if report else None
    return await Supervisor(duties, shutdown, force=[lambda: force_exit(server)], report=out).run()


def ops_duty(server: GatewayServer) -> Duty:
    """The ops server's duty: not restarted, so a role whose probes cannot be answered stops
    (exit 1) rather than look dead to its orchestrator while it runs."""
    return Duty("ops http", server.serve)


def stop_http(
    server: GatewayServer, timeout_s: float, name: str = "http", also: tuple[str, ...] = ()
) -> Step:
    """End the server's duty: its `before_shutdown` (a gateway's live side, which ends the
    duties named in `also`) runs first, then uvicorn stops accepting and finishes requests in
    flight."""

    def ask() -> None:
        server.should_exit = True

    what = "close live connections, stop HTTP" if name == "http" else f"stop {name}"
    return Step(f"{what}, finish requests in flight", timeout_s, (name, *also), ask)


def force_exit(server: GatewayServer) -> None:
    """A second signal: stop waiting for requests in flight."""
    server.force_exit = True


def ops_server(
    settings: Settings, port: int, metrics: Metrics, checks: Sequence[ReadinessCheck]
) -> GatewayServer:
    """/healthz, /readyz and /metrics for a role without the API (loopback by default)."""
    config = server_config(
        ops_app(metrics, checks),
        settings.ops_host,
        port,
        graceful_timeout_s=settings.shutdown_timeout_s,
    )
    return GatewayServer(config)


def functions_checker(store: Store, role: str) -> ReadinessCheck:
    """Readiness of the store, on a connection of its own: a probe never waits behind a tick's
    batch or a backlog read, and a busy role still tells the truth about its store."""
    client = store.client(role)

    async def check() -> str | None:
        return await functions_ready(client)

    return check


def _client(store: Store, role: str, metrics: Metrics) -> StoreConnection:
    client = store.client(role)
    client.on_flush = metrics.batch_size.observe
    return client
