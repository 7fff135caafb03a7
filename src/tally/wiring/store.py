"""Where a process's Valkey is: the configured endpoint (one node, or a Valkey Cluster named by
`valkey+cluster://host:port,...`; `rediss://` with TALLY_VALKEY_TLS_*), or (for `tally serve`
without TALLY_VALKEY_URL) an embedded valkey-server in the data dir; the connections each role
opens to it, each as the role's own ACL user on the embedded server (store/acl.py; with
TALLY_VALKEY_URL, as the user that URL names: give each role process its own); and the
durability check the vote path needs."""

from __future__ import annotations

from dataclasses import replace

from tally.config import Settings
from tally.store.cluster import ClusterSeeds, ClusterTopologyError, ValkeyCluster
from tally.store.cluster_pubsub import ClusterLiveFeed
from tally.store.embedded import EmbeddedValkey
from tally.store.library import ensure_functions, functions_problem
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, ReplyError, TlsFiles, Valkey, WaitAof

# What a role talks to: one node's connection, or the cluster router (both ports.StoreClient,
# both with a settable `durability` and `on_flush`).
StoreConnection = Valkey | ValkeyCluster


class Store:
    """The Valkey of one process, and every connection the process opened to it."""

    def __init__(
        self, endpoint: Endpoint | ClusterSeeds, embedded: EmbeddedValkey | None = None
    ) -> None:
        self.endpoint = endpoint
        self.embedded = embedded  # started here, so stopped here too
        self._clients: list[StoreConnection] = []

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.endpoint, ClusterSeeds)

    def client(self, role: str) -> StoreConnection:
        """A new connection for `role` (store.acl: gateway, aggregator, archiver), connected
        lazily, that checks Tally's functions when it connects and loads them if its user may
        (store.library.ensure_functions; on a cluster: a connection per primary, a promoted
        replica's too). On the embedded server it is the role's own ACL user. Each role gets its
        own, so one role's large batches never queue up another's."""
        client: StoreConnection
        if isinstance(self.endpoint, ClusterSeeds):
            client = ValkeyCluster(self.endpoint, on_connect=ensure_functions)
        else:
            endpoint = self.endpoint if self.embedded is None else self.embedded.endpoint_for(role)
            client = Valkey(endpoint, on_connect=ensure_functions)
        self._clients.append(client)
        return client

    async def durability(self, client: StoreConnection, settings: Settings) -> WaitAof | None:
        """`durability()` below; the embedded server is known to fsync before each reply (its
        roles may not read CONFIG)."""
        if self.embedded is not None and settings.replicas_to_confirm == 0:
            return None
        return await durability(client, settings)

    def live_feed(self, client: StoreConnection) -> ValkeyLiveFeed | ClusterLiveFeed:
        """Where the live side hears snapshots: one SSUBSCRIBE connection, or one per primary
        on a cluster (re-homed when `client` sees the topology change)."""
        if isinstance(client, ValkeyCluster):
            return ClusterLiveFeed(client)
        return ValkeyLiveFeed(client.endpoint)

    async def close_clients(self) -> None:
        for client in self._clients:
            await client.close()

    async def stop_embedded(self, timeout_s: float) -> None:
        """SIGTERM the embedded valkey-server (it fsyncs and exits), SIGKILL after `timeout_s`."""
        if self.embedded is not None:
            await self.embedded.stop(timeout_s)

    async def close(self, timeout_s: float) -> None:
        await self.close_clients()
        await self.stop_embedded(timeout_s)


def external_url(settings: Settings, command: str) -> str:
    """TALLY_VALKEY_URL, which every role but `tally serve` needs (it alone embeds a Valkey)."""
    if settings.valkey_url is None:
        raise SystemExit(f"tally {command} needs TALLY_VALKEY_URL (tally serve runs its own)")
    return settings.valkey_url


def operator_url(settings: Settings, command: str) -> str:
    """Where an operator's command (admission keys, evidence keys, functions) reaches the store:
    TALLY_VALKEY_URL (the admin user's), else the embedded server of a `tally serve` running on
    this data dir (its admin URL file, 0600)."""
    if settings.valkey_url is not None:
        return settings.valkey_url
    path = EmbeddedValkey.admin_url_file(settings.data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SystemExit(
            f"tally {command} needs TALLY_VALKEY_URL with the store's admin user, or a running "
            f"`tally serve` on this data dir (looked for {path})"
        ) from None


async def open_store(
    settings: Settings, command: str, *, may_embed: bool = False, operator: bool = False
) -> Store:
    """The configured Valkey; with `may_embed` and no URL, a valkey-server started here; for an
    `operator` command with no URL, the embedded server of a running `tally serve`.

    A cluster's topology is checked here, so that a URL naming no cluster, seed nodes that do
    not answer, or slots no primary serves stop the start with a message naming the setting."""
    if may_embed and settings.embedded:
        embedded = EmbeddedValkey(settings.data_dir)
        await embedded.start()
        return Store(embedded.endpoint, embedded)
    url = operator_url(settings, command) if operator else external_url(settings, command)
    if not settings.cluster:
        return Store(replace(Endpoint.from_url(url), tls_files=tls_files(settings)))
    return Store(await check_cluster(settings))


def tls_files(settings: Settings) -> TlsFiles:
    """The CA and client certificate a `rediss://` (or `valkeys+cluster://`) URL connects with;
    SystemExit for a key without its certificate."""
    if settings.valkey_tls_key is not None and settings.valkey_tls_cert is None:
        raise SystemExit("TALLY_VALKEY_TLS_KEY is the key of TALLY_VALKEY_TLS_CERT: set both")
    return TlsFiles(
        ca=settings.valkey_tls_ca, cert=settings.valkey_tls_cert, key=settings.valkey_tls_key
    )


async def check_cluster(settings: Settings) -> ClusterSeeds:
    """The seeds of the cluster TALLY_VALKEY_URL names, once its topology has been read and
    serves every slot; SystemExit naming the setting otherwise."""
    seeds = replace(
        ClusterSeeds.from_url(external_url(settings, "gateway")), tls_files=tls_files(settings)
    )
    probe = ValkeyCluster(seeds)
    try:
        await probe.refresh(force=True)
    except ClusterTopologyError as exc:
        raise SystemExit(f"TALLY_VALKEY_URL does not name a usable Valkey Cluster: {exc}") from None
    finally:
        await probe.close()
    return seeds


async def durability(client: StoreConnection, settings: Settings) -> WaitAof | None:
    """None when each reply already implies an fsync (appendfsync always, no replicas needed);
    otherwise the WAITAOF every batch of durable writes (votes) on `client` must pass before any
    of them is acknowledged (the client's `durability`; on a cluster, each primary's connection
    confirms its own batch)."""
    replicas = settings.replicas_to_confirm
    if replicas == 0:
        try:
            reply = await client.execute("CONFIG", "GET", "appendfsync")
        except ReplyError:  # managed services, and role users (store.acl), may not read CONFIG:
            reply = []  # confirm per batch instead (WAITAOF answers at once after an fsync)
        if reply[1:2] == [b"always"]:
            return None
    return WaitAof(replicas, settings.waitaof_timeout_ms)


async def functions_ready(client: StoreConnection) -> str | None:
    """Readiness: None when the store answers and holds Tally's functions (raises
    StoreUnavailable when it does not answer)."""
    return await functions_problem(client)
