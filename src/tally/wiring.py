"""The composition root: the only module that knows which concrete classes make up Tally.

`serve()` runs every role of a single-machine Tally in one process, and shuts down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import uvicorn
from starlette.types import ASGIApp

from tally.aggregator import Aggregator, new_owner_id
from tally.archive.logs import LedgerFiles
from tally.archiver import Archiver, ledger_dir
from tally.config import Settings, generate_secret
from tally.demo import announce_demo
from tally.domain.errors import StoreUnavailable
from tally.gateway.app import create_app
from tally.gateway.auth import Authenticator
from tally.gateway.demo_token import demo_token_routes
from tally.gateway.ledger import LedgerRoutes
from tally.gateway.live.endpoints import LiveEndpoints
from tally.gateway.live.fanout import LiveHub
from tally.gateway.live.gateway import LiveGateway
from tally.gateway.live.limits import ConnectionLimits
from tally.gateway.live_votes import LiveVoting
from tally.gateway.metrics import Metrics
from tally.gateway.routes import Handlers
from tally.gateway.server import server_config
from tally.gateway.votes import VoteEndpoint
from tally.ledger import note
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import KeySet, TokenVerifier
from tally.service import VotingService
from tally.store.embedded import EmbeddedValkey
from tally.store.ledger_queue import ValkeyLedgerQueue
from tally.store.library import functions_loaded, load_functions
from tally.store.polls import ValkeyPolls
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, ReplyError, Valkey
from tally.store.snapshots import ValkeySnapshots
from tally.store.votes import ValkeyBallotBox, WaitAof

log = logging.getLogger("tally")

DEADLINE_SWEEP_S = 1.0
DEFAULT_LEDGER_ORIGIN = "tally.localhost/ledger"


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def dev_issuer(settings: Settings) -> DevIssuer:
    return DevIssuer.load_or_create(
        keys_dir(settings.data_dir), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


def pseudonym_secret(settings: Settings) -> bytes:
    """The configured secret, or (embedded only) one generated once and kept in the data dir."""
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret
    if not settings.embedded:
        raise SystemExit(
            "TALLY_PSEUDONYM_SECRET is required with TALLY_VALKEY_URL: every gateway must share it, "
            "or one voter could vote once per gateway"
        )
    path = settings.data_dir / "secrets" / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(generate_secret())
                f.flush()
                os.fsync(f.fileno())
    return path.read_bytes()


def ledger_signer(settings: Settings) -> note.Signer:
    """The ledger's Ed25519 key, made once and kept in the data dir (mode 0600).

    Its name is the origin prefix of every log: changing TALLY_LEDGER_ORIGIN afterwards would
    rename logs auditors already follow, so it is refused."""
    path = keys_dir(settings.data_dir) / "ledger.key"
    if not path.exists():
        signer_key, _ = note.generate_key(settings.ledger_origin or DEFAULT_LEDGER_ORIGIN)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(signer_key + "\n")
                f.flush()
                os.fsync(f.fileno())
    signer = note.Signer.parse(path.read_text().strip())
    if settings.ledger_origin is not None and settings.ledger_origin != signer.name:
        raise SystemExit(
            f"TALLY_LEDGER_ORIGIN={settings.ledger_origin} but the ledger key in {path} is for "
            f"{signer.name}: logs cannot be renamed once published"
        )
    return signer


def new_archiver(client: Valkey, settings: Settings) -> Archiver:
    return Archiver(
        ValkeyPolls(client),
        ValkeyLedgerQueue(client),
        LedgerFiles(ledger_dir(settings.data_dir)),
        ledger_signer(settings),
        owner=new_owner_id(),
        interval_ms=settings.checkpoint_interval_ms,
    )


@dataclass
class Runtime:
    """Everything a running Tally process holds."""

    settings: Settings
    client: Valkey
    service: VotingService
    verifier: TokenVerifier
    issuer: DevIssuer | None
    metrics: Metrics
    embedded: EmbeddedValkey | None
    app: ASGIApp
    aggregator: Aggregator
    aggregator_client: Valkey
    archiver: Archiver
    archiver_client: Valkey
    live: LiveGateway


async def durability(client: Valkey, settings: Settings) -> WaitAof | None:
    """None when each reply already implies an fsync (appendfsync always, no replicas needed);
    otherwise the WAITAOF every batch of votes must pass before it is acknowledged."""
    if settings.waitaof_replicas == 0:
        try:
            reply = await client.execute("CONFIG", "GET", "appendfsync")
        except ReplyError:  # managed services often disable CONFIG: confirm per batch instead
            reply = []
        if reply[1:2] == [b"always"]:
            return None
    return WaitAof(settings.waitaof_replicas, settings.waitaof_timeout_ms)


async def start(settings: Settings, *, demo: bool = False) -> Runtime:
    """Bring up the store (starting the embedded Valkey if configured) and assemble the gateway."""
    embedded: EmbeddedValkey | None = None
    if settings.embedded:
        embedded = EmbeddedValkey(settings.data_dir)
        await embedded.start()
        endpoint = embedded.endpoint
    else:
        assert settings.valkey_url is not None
        endpoint = Endpoint.from_url(settings.valkey_url)
    metrics = Metrics()
    client = Valkey(endpoint, on_connect=load_functions)
    client.on_flush = metrics.batch_size.observe
    # The aggregator's per-tick batch gets its own connection so votes never queue behind it.
    aggregator_client = Valkey(endpoint, on_connect=load_functions)
    archiver_client = Valkey(endpoint, on_connect=load_functions)
    try:
        await client.connect()
        issuer = dev_issuer(settings) if settings.jwks is None else None
        keys = issuer.key_set() if issuer is not None else KeySet.load(settings.jwks or "")
        verifier = TokenVerifier(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        ledger_files = LedgerFiles(ledger_dir(settings.data_dir))
        service = VotingService(
            ValkeyPolls(client),
            ValkeyBallotBox(
                client, waitaof=await durability(client, settings), archive=ledger_files
            ),
            pseudonym_secret=pseudonym_secret(settings),
            snapshots=ValkeySnapshots(client),
        )
        aggregator = new_aggregator(aggregator_client, settings)
        # Its own connection too: a backlog read is megabytes, which must not delay a tick.
        archiver = new_archiver(archiver_client, settings)
        repaired = await service.recover()
        if repaired:
            log.warning("finished interrupted open/close of polls %s", ", ".join(repaired))
    except BaseException:
        await client.close()
        await aggregator_client.close()
        await archiver_client.close()
        if embedded is not None:
            await embedded.stop()
        raise

    async def ready() -> bool:
        return await functions_loaded(client)

    auth = Authenticator(verifier)
    handlers = Handlers(service, auth, metrics, ready=ready, max_body_bytes=settings.max_body_bytes)
    demo_routes = demo_token_routes(issuer, enabled=demo and settings.embedded)
    live = LiveGateway(
        LiveHub(ValkeyLiveFeed(endpoint), ValkeySnapshots(client), service),
        LiveVoting(service, auth, metrics),
        ConnectionLimits(settings.max_connections, settings.max_connections_per_ip),
        slow_client_s=settings.slow_client_s,
        ping_interval_s=settings.ping_interval_s,
        sse_keepalive_s=settings.sse_keepalive_s,
    )
    live_endpoints = LiveEndpoints.bound_to(live)
    live.use_websocket_protocol(live_endpoints.websocket_protocol)
    ledger = LedgerRoutes(
        ledger_files, service, retry_after_s=max(1, -(-settings.checkpoint_interval_ms // 1000))
    )
    app = create_app(
        handlers,
        VoteEndpoint(service, auth, metrics),
        demo_routes,
        live=live_endpoints,
        ledger=ledger.routes(),
    )
    observe(metrics, live, aggregator, archiver)
    return Runtime(
        settings,
        client,
        service,
        verifier,
        issuer,
        metrics,
        embedded,
        app,
        aggregator,
        aggregator_client,
        archiver,
        archiver_client,
        live,
    )


def observe(
    metrics: Metrics, live: LiveGateway, aggregator: Aggregator, archiver: Archiver
) -> None:
    """What /metrics reads from the live side, the aggregator and the archiver at each scrape."""
    metrics.sample(
        "tally_live_connections",
        "Open live connections (WebSocket and SSE).",
        "gauge",
        lambda: live.connection_count,
    )
    metrics.sample(
        "tally_aggregator_leading_polls",
        "Polls whose lease this process's aggregator holds.",
        "gauge",
        lambda: len(aggregator.leading),
    )
    metrics.sample(
        "tally_aggregator_ticks_total",
        "Aggregator ticks run.",
        "counter",
        lambda: aggregator.stats.ticks,
    )
    metrics.sample(
        "tally_aggregator_snapshots_total",
        "Snapshots this aggregator published.",
        "counter",
        lambda: aggregator.stats.published,
    )
    metrics.sample(
        "tally_aggregator_store_errors_total",
        "Aggregator steps that failed on the store.",
        "counter",
        lambda: aggregator.stats.store_errors,
    )
    for name, help_text, read in (
        (
            "cycles",
            "Archiver cycles run (flat: the archiver is not running).",
            lambda: archiver.stats.cycles,
        ),
        ("leaves", "Ledger leaves this archiver appended.", lambda: archiver.stats.leaves),
        ("checkpoints", "Signed checkpoints published.", lambda: archiver.stats.checkpoints),
        ("certificates", "Result certificates signed.", lambda: archiver.stats.certificates),
        (
            "store_errors",
            "Archiver steps that failed on the store.",
            lambda: archiver.stats.store_errors,
        ),
        (
            "failed_polls",
            "Polls whose archiving stopped on an error (see the log).",
            lambda: archiver.stats.failed_polls,
        ),
    ):
        metrics.sample(f"tally_archiver_{name}_total", help_text, "counter", read)


def new_aggregator(client: Valkey, settings: Settings) -> Aggregator:
    return Aggregator(
        ValkeyPolls(client),
        ValkeySnapshots(client),
        owner=new_owner_id(),
        tick_ms=settings.tick_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )


async def stop(runtime: Runtime) -> None:
    await runtime.archiver.stop()
    await runtime.archiver_client.close()
    await runtime.aggregator.stop()  # hands its leases over at once instead of letting them expire
    await runtime.aggregator_client.close()
    await runtime.client.close()
    if runtime.embedded is not None:
        await runtime.embedded.stop(runtime.settings.shutdown_timeout_s)


class GatewayServer(uvicorn.Server):
    """uvicorn, minus its own signal capture: Tally installs its handlers and owns the shutdown
    order (uvicorn's capture re-raises SIGINT afterwards, which would skip stopping Valkey).
    Live connections are closed first: uvicorn does not know the native WebSockets and would
    otherwise wait out its whole graceful timeout on open SSE streams."""

    def __init__(
        self, config: uvicorn.Config, live: LiveGateway | None = None, live_timeout_s: float = 10.0
    ) -> None:
        super().__init__(config)
        self._live = live
        self._live_timeout_s = live_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._live is not None:
            await self._live.shutdown(self._live_timeout_s)
        await super().shutdown(sockets)


async def sweep_deadlines(service: VotingService) -> None:
    """Formally close polls whose deadline passed (the vote function already refuses their votes)."""
    while True:
        await asyncio.sleep(DEADLINE_SWEEP_S)
        try:
            for poll_id in await service.close_expired():
                log.info("poll %s closed at its deadline", poll_id)
        except StoreUnavailable as exc:
            log.warning("deadline sweep skipped: %s", exc)


async def serve(settings: Settings, *, demo: bool = False) -> None:
    """Run until SIGINT/SIGTERM, then shut down in order:
    1. close live connections (1012, end SSE) and the pub/sub link; stop accepting connections
       and finish requests in flight (uvicorn, up to the timeout);
    2. stop the background roles (aggregator, Valkey supervisor, deadline sweep);
    3. release the aggregator's leases and close the Valkey connections;
    4. stop the embedded valkey-server (it fsyncs and exits; SIGKILL after the timeout)."""
    runtime = await start(settings, demo=demo)
    config = server_config(
        runtime.app, settings.host, settings.port, graceful_timeout_s=settings.shutdown_timeout_s
    )
    config.ws = runtime.live.websocket_protocol  # /live natively (~6 KB a socket); other paths ASGI
    server = GatewayServer(config, runtime.live, settings.shutdown_timeout_s)
    runtime.live.start()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if server.should_exit:  # a second Ctrl-C: stop waiting for requests in flight
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    background = [
        loop.create_task(sweep_deadlines(runtime.service)),
        loop.create_task(runtime.aggregator.run()),
    ]
    if settings.archiver:
        background.append(loop.create_task(runtime.archiver.run()))
    if runtime.embedded is not None:
        background.append(loop.create_task(runtime.embedded.supervise()))
    try:
        server_task = loop.create_task(server.serve())
        while not server.started and not server_task.done():  # noqa: ASYNC110  # uvicorn offers only a flag
            await asyncio.sleep(0.02)
        if server.started:
            log.info("Tally listening on http://%s:%d", settings.host, settings.port)
            if demo:
                await announce_demo(runtime.service, settings, runtime.issuer)
        await server_task
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await stop(runtime)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class Role(Protocol):
    """A background role that can run alone: the aggregator, the archiver."""

    @property
    def owner(self) -> str: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


async def run_alone(
    settings: Settings, command: str, make: Callable[[Valkey], Role], what: str
) -> None:
    """`tally <command>`: one role only, against the configured Valkey, until SIGINT/SIGTERM."""
    if settings.valkey_url is None:
        raise SystemExit(f"tally {command} needs TALLY_VALKEY_URL (tally serve runs its own)")
    client = Valkey(Endpoint.from_url(settings.valkey_url), on_connect=load_functions)
    role = make(client)
    loop = asyncio.get_running_loop()
    task = loop.create_task(role.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    log.info("%s %s running (%s)", command, role.owner, what)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await role.stop()
        await client.close()


async def run_aggregator(settings: Settings) -> None:
    what = f"tick {settings.tick_ms} ms, lease {settings.lease_ttl_ms} ms"
    await run_alone(settings, "aggregator", lambda c: new_aggregator(c, settings), what)


async def run_archiver(settings: Settings) -> None:
    """Its data dir must be the ledger store the gateways serve /ledger from."""
    what = (
        f"checkpoints every {settings.checkpoint_interval_ms} ms, "
        f"ledger in {ledger_dir(settings.data_dir)}"
    )
    await run_alone(settings, "archiver", lambda c: new_archiver(c, settings), what)
