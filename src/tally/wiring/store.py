"""Where a process's Valkey is: the configured endpoint (one node, or a Valkey Cluster named by
`valkey+cluster://host:port,...`), or (for `tally serve` without TALLY_VALKEY_URL) an embedded
valkey-server in the data dir; the connections each role opens to it; and the durability check
the vote path needs."""

from __future__ import annotations

from tally.config import Settings
from tally.store.cluster import ClusterSeeds, ClusterTopologyError, ValkeyCluster
from tally.store.cluster_pubsub import ClusterLiveFeed
from tally.store.embedded import EmbeddedValkey
from tally.store.library import functions_loaded, load_functions
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, ReplyError, Valkey, WaitAof

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

    def client(self) -> StoreConnection:
        """A new connection (connected lazily) that loads Tally's functions when it connects
        (on a cluster: a connection per primary, each loading them, a promoted replica's too).
        Each role gets its own, so one role's large batches never queue up another's."""
        client: StoreConnection
        if isinstance(self.endpoint, ClusterSeeds):
            client = ValkeyCluster(self.endpoint, on_connect=load_functions)
        else:
            client = Valkey(self.endpoint, on_connect=load_functions)
        self._clients.append(client)
        return client

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


async def open_store(settings: Settings, command: str, *, may_embed: bool = False) -> Store:
    """The configured Valkey; with `may_embed` and no URL, a valkey-server started here.

    A cluster's topology is checked here, so that a URL naming no cluster, seed nodes that do
    not answer, or slots no primary serves stop the start with a message naming the setting."""
    if may_embed and settings.embedded:
        embedded = EmbeddedValkey(settings.data_dir)
        await embedded.start()
        return Store(embedded.endpoint, embedded)
    url = external_url(settings, command)
    if not settings.cluster:
        return Store(Endpoint.from_url(url))
    return Store(await check_cluster(settings))


async def check_cluster(settings: Settings) -> ClusterSeeds:
    """The seeds of the cluster TALLY_VALKEY_URL names, once its topology has been read and
    serves every slot; SystemExit naming the setting otherwise."""
    seeds = ClusterSeeds.from_url(external_url(settings, "gateway"))
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
        except ReplyError:  # managed services often disable CONFIG: confirm per batch instead
            reply = []
        if reply[1:2] == [b"always"]:
            return None
    return WaitAof(replicas, settings.waitaof_timeout_ms)


async def functions_ready(client: StoreConnection) -> str | None:
    """Readiness: None when the store answers and holds Tally's functions (raises
    StoreUnavailable when it does not answer)."""
    if await functions_loaded(client):
        return None
    return "Valkey is up but Tally's functions are not loaded"
