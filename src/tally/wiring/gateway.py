"""The gateway role: the voting service, authentication, metrics, the HTTP app (REST API, votes,
/ledger, pages) and the live side (WebSocket and SSE fan-out), served by one uvicorn.

`tally gateway` runs this alone against TALLY_VALKEY_URL; `tally serve` runs it next to the
aggregator and the archiver. Any number of gateways may share one Valkey if they share
TALLY_PSEUDONYM_SECRET and the token keys (TALLY_JWKS, or one data dir's dev issuer keys), and
read the ledger the archiver writes (the same data dir's `ledger/`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp

from tally.archive.logs import LedgerDirectory, LedgerFiles
from tally.config import ConfigError, Settings
from tally.domain.polls import DEFAULT_LANES, lanes_for
from tally.gateway.app import create_app
from tally.gateway.auth import Authenticator
from tally.gateway.challenges import ChallengeRoutes
from tally.gateway.client_address import ClientAddresses
from tally.gateway.demo_token import demo_token_routes
from tally.gateway.edge import Edge, EdgeLimits, Refusal
from tally.gateway.export import ExportRoutes
from tally.gateway.ledger import LedgerRoutes
from tally.gateway.live.endpoints import LiveEndpoints
from tally.gateway.live.fanout import LiveHub
from tally.gateway.live.gateway import LiveGateway
from tally.gateway.live.limits import ConnectionLimits
from tally.gateway.live.votes import LiveVoting
from tally.gateway.metrics import Metrics
from tally.gateway.ops import OpsRoutes
from tally.gateway.present import PresentRoutes
from tally.gateway.review import ReviewRoutes
from tally.gateway.routes import Handlers
from tally.gateway.server import GatewayServer, server_config, use_tls
from tally.gateway.tls import HSTS, hsts_value, server_context
from tally.gateway.viewer import Viewers
from tally.gateway.votes import VoteEndpoint
from tally.gateway.voting import Voting
from tally.security.dev_issuer import DevIssuer
from tally.security.evidence import EvidenceKeys
from tally.security.pow import Challenges
from tally.security.tokens import TokenVerifier
from tally.service import VotingService
from tally.service.admission import default_checks
from tally.service.challenges import ChallengeCheck, ChallengeDesk
from tally.service.evidence import EvidenceVault
from tally.service.join_codes import JoinCodes
from tally.service.ratelimits import RateLimitCheck
from tally.service.review import ReviewService
from tally.service.risk import RiskCheck, Traffic
from tally.service.voting import system_clock_ms
from tally.store.challenges import ValkeySpentChallenges
from tally.store.cluster import ValkeyCluster
from tally.store.evidence import ValkeyHeldEvidence
from tally.store.integrity import ValkeyIntegrity
from tally.store.join_codes import ValkeyJoinCodes
from tally.store.polls import ValkeyPolls
from tally.store.ratelimits import ValkeyRateLimits
from tally.store.review import ValkeyReviews
from tally.store.snapshots import ValkeySnapshots
from tally.store.turnout import ValkeyTurnout
from tally.store.votes import ValkeyBallotBox
from tally.wiring.admission import gateway_signer, published_admission_keys
from tally.wiring.identity import pseudonym_secret, sessions, signin, token_verifier
from tally.wiring.store import Store, StoreConnection, functions_ready
from tally.wiring.supervisor import Duty

log = logging.getLogger("tally")


@dataclass
class Gateway:
    """One process's gateway role, assembled and connected, not yet serving."""

    settings: Settings
    client: StoreConnection
    service: VotingService
    verifier: TokenVerifier
    issuer: DevIssuer | None
    metrics: Metrics
    live: LiveGateway
    app: ASGIApp
    edge: Edge
    tls: ssl.SSLContext | None = None  # HTTPS and WSS (TALLY_TLS_CERT / TALLY_TLS_KEY)

    def http_server(
        self, *, after_startup: Callable[[], Awaitable[None]] | None = None
    ) -> GatewayServer:
        """uvicorn for the app, /live on the native WebSocket protocol; its shutdown closes the
        live connections first (1012, end of SSE), then finishes requests in flight."""
        settings = self.settings
        config = server_config(
            self.app, settings.host, settings.port, graceful_timeout_s=settings.shutdown_timeout_s
        )
        config.ws = self.live.websocket_protocol  # /live natively (~6 KB a socket); others ASGI
        config.http = self.edge.protocol  # uvicorn's httptools, with the edge's limits
        if self.tls is not None:
            use_tls(config, self.tls, settings.hsts_max_age_s)

        async def close_live() -> None:
            await self.live.shutdown(settings.shutdown_timeout_s)

        return GatewayServer(
            config,
            before_shutdown=close_live,
            after_startup=after_startup,
            handshake_timeout_s=settings.head_timeout_s,
        )

    def http_duty(self, server: GatewayServer) -> Duty:
        """Serve uvicorn. Not restarted: a gateway that cannot listen, or whose server dies,
        stops the process (exit 1) for the orchestrator to restart it whole."""

        async def serve() -> None:
            try:
                await server.serve()
            finally:
                if not server.started:  # uvicorn never listened, so it shuts nothing down
                    await self.live.shutdown(self.settings.shutdown_timeout_s)

        return Duty("http", serve)

    def live_duty(self) -> Duty:
        """The live side's upstream subscription and keepalive sweep (LiveGateway.run). Not
        restarted: live connections without pings or snapshots are a broken gateway; the
        subscription itself reconnects on its own. It ends when the HTTP step closes the live
        side."""
        return Duty("live", self.live.run)


async def build_gateway(
    settings: Settings, store: Store, *, demo: bool = False, register_admission_key: bool = False
) -> Gateway:
    """Connect to the store, check durability, finish interrupted poll moves, assemble the app.
    The admission key must be registered (`register_admission_key`: `tally serve` does it)."""
    secret = pseudonym_secret(settings)  # first: without it nothing else is worth starting
    tls = tls_context(settings)  # a certificate or key that cannot be used stops the start here
    metrics = Metrics()
    client = store.client("gateway")
    client.on_flush = metrics.batch_size.observe
    await client.connect()
    client.durability = await store.durability(client, settings)
    verifier, issuer = token_verifier(settings)
    signer = await gateway_signer(
        settings,
        client,
        system_clock_ms,
        registrar=store.client("admin") if register_admission_key else None,
    )
    ledger_files = LedgerFiles(settings.ledger_dir)
    # Shared by every gateway on the store; refusals counted by scope in /metrics. On one node
    # a request's limits are one call; a cluster takes one per slot, pipelined.
    limiter = ValkeyRateLimits(client, one_call=not isinstance(client, ValkeyCluster))
    rate_limits = RateLimitCheck(limiter, secret, metrics.rate_limited.inc)
    evidence_keys = EvidenceKeys(settings.data_dir, settings.evidence_keys)
    evidence_keys.ring()  # made (or checked) now: a bad key file stops the start, not a vote
    traffic = Traffic(system_clock_ms)  # this process's last minute of vote answers, for the scorer
    challenges = Challenges(secret)  # one key, derived from the pseudonym secret
    proof_of_work = ChallengeCheck(
        challenges,
        ValkeySpentChallenges(client),
        secret,
        issued=metrics.challenges_issued.inc,
        answered=metrics.challenge_answers.inc,
    )
    risk = RiskCheck(
        traffic, challenges, secret, metrics.risk_verdicts.inc, metrics.challenges_issued.inc
    )
    service = VotingService(
        ValkeyPolls(client),
        # A held vote's network evidence is kept only sealed under the evidence key ring.
        ValkeyBallotBox(client, EvidenceVault(evidence_keys, ValkeyHeldEvidence(client))),
        pseudonym_secret=secret,
        snapshots=ValkeySnapshots(client),
        ledger=LedgerDirectory(ledger_files),  # receipts of votes already trimmed from Valkey
        checks=[*default_checks(verifier.leeway_s), rate_limits, proof_of_work, risk],
        default_lanes=lanes_for(len(client.shards))
        if isinstance(client, ValkeyCluster)
        else DEFAULT_LANES,
        default_defences=settings.defences,
        signer=signer,  # every admitted vote signed (wiring.admission)
    )
    repaired = await service.recover()
    if repaired:
        log.warning("finished interrupted open/close of polls %s", ", ".join(repaired))
    reviews = ReviewService(ValkeyPolls(client), ValkeyReviews(client), evidence_keys)
    reviewed = await reviews.recover()
    if reviewed:
        log.warning("finished interrupted review decisions of polls %s", ", ".join(reviewed))

    voting_sessions = sessions(settings)  # signed-in voters' credentials (security/sessions.py)
    auth = Authenticator(verifier, voting_sessions)
    join_codes = JoinCodes(ValkeyJoinCodes(client))  # /j/<code>, shown on each poll
    handlers = Handlers(
        service,
        auth,
        max_body_bytes=settings.max_body_bytes,
        integrity=ValkeyIntegrity(client),  # alarms the archiver raised, shown on poll + results
        join_codes=join_codes,
    )
    ops = OpsRoutes(metrics, [lambda: functions_ready(client)])
    voting = Voting(service, auth, metrics, traffic)  # one vote path for HTTP and WebSocket
    addresses = ClientAddresses(settings.trusted_proxies)  # who the client is, for every defence
    edge = Edge(
        edge_limits(settings),
        addresses,
        metrics.edge_refusals.inc,
        extra_headers=[(HSTS, hsts_value(settings.hsts_max_age_s))] if tls is not None else [],
    )
    live = LiveGateway(
        LiveHub(store.live_feed(client), ValkeySnapshots(client), service),
        LiveVoting(voting, Viewers(auth, service)),  # and who sees hidden counts
        ConnectionLimits(settings.max_connections, settings.max_connections_per_ip),
        slow_client_s=settings.slow_client_s,
        ping_interval_s=settings.ping_interval_s,
        sse_keepalive_s=settings.sse_keepalive_s,
        addresses=addresses,
    )
    live_endpoints = LiveEndpoints.bound_to(live)
    live.use_websocket_protocol(live_endpoints.websocket_protocol)
    ledger = LedgerRoutes(
        LedgerDirectory(ledger_files),
        service,
        retry_after_s=max(1, -(-settings.checkpoint_interval_ms // 1000)),
        admission_keys=lambda: published_admission_keys(client),
    )
    app = create_app(
        handlers,
        VoteEndpoint(voting, addresses),
        ops,
        demo_token_routes(issuer, enabled=demo and settings.embedded),
        live=live_endpoints,
        ledger=ledger.routes(),
        review=ReviewRoutes(
            reviews,
            auth,
            max_body_bytes=settings.max_body_bytes,
            count=metrics.review_decisions.inc,
        ).routes(),
        signin=signin(settings, voting_sessions, demo=demo).routes(),  # /auth/*
        exports=ExportRoutes(service, auth, ValkeyTurnout(client)).routes(),  # results/turnout CSV
        present=PresentRoutes(service, join_codes, auth, settings.public_url).routes(),
        challenges=ChallengeRoutes(
            ChallengeDesk(service.intake.definition, proof_of_work, system_clock_ms), auth, service
        ).routes(),
    )
    observe_live(metrics, live)
    observe_edge(metrics, edge)
    return Gateway(settings, client, service, verifier, issuer, metrics, live, app, edge, tls)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The gateway's TLS context (gateway.tls), or None for plain HTTP; ConfigError if the
    certificate or key cannot be used. The ops ports of the aggregator and the archiver stay
    plain HTTP on loopback (TALLY_OPS_HOST)."""
    cert, key = settings.tls_cert, settings.tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "TALLY_TLS_CERT (--tls-cert) and TALLY_TLS_KEY (--tls-key) go together: set both "
            "for HTTPS, or neither for plain HTTP"
        )
    return server_context(cert, key)


def scheme(settings: Settings) -> str:
    """How clients reach the gateway: https with TALLY_TLS_CERT, else http."""
    return "http" if settings.tls_cert is None else "https"


def edge_limits(settings: Settings) -> EdgeLimits:
    return EdgeLimits(
        max_head_bytes=settings.max_request_head_bytes,
        head_timeout_s=settings.head_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections_per_ip=settings.max_http_connections_per_ip,
        rate=settings.edge_rate,
        burst=settings.edge_burst,
    )


def observe_edge(metrics: Metrics, edge: Edge) -> None:
    """Every refusal reason from the first scrape on (at 0), and the open HTTP connections."""
    for reason in Refusal:
        metrics.edge_refusals.values[reason.value] += 0
    metrics.sample(
        "tally_edge_http_connections",
        "Open HTTP connections counted against the per-address cap.",
        "gauge",
        lambda: edge.open_connections,
    )


def observe_live(metrics: Metrics, live: LiveGateway) -> None:
    """What /metrics reads from the live side at each scrape."""
    metrics.sample(
        "tally_live_connections",
        "Open live connections (WebSocket and SSE).",
        "gauge",
        lambda: live.connection_count,
    )
