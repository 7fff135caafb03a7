"""Shared fixtures: real Tally servers (subprocesses with their own embedded valkey-server) and a
real Valkey for store-level tests. Everything binds to 127.0.0.1 and is stopped by the fixture.

TALLY_TEST_STORE picks the store the suite runs against:
- `single` (the default): each `tally serve` embeds its own valkey-server; store-level tests share
  one valkey-server for the session.
- `cluster`: a local 3-primary/3-replica Valkey Cluster (tally.store.local_cluster) instead.
  Each data dir a `tally serve` runs on gets a cluster of its own (stopped with the server and
  started again, data kept, when a server restarts on that data dir), so one server's
  aggregator and archiver never see another's polls; the store-level tests (`valkey`,
  `store_server`, `own_store`, the live gateway of tests/live) share one more cluster, which
  `fresh_store` and `own_store` empty (FLUSHALL on every primary) before a test that needs it
  to itself. Tests marked `single_node` (they kill, signal or read the files of one
  valkey-server) are skipped, with the marker's reason.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest

from defences_off import DEFENCES_OFF
from tally.bench.loadgen import build_request
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer
from tally.store import keys
from tally.store.cluster import ClusterSeeds, ValkeyCluster
from tally.store.cluster_pubsub import ClusterLiveFeed
from tally.store.embedded import EmbeddedValkey
from tally.store.library import load_functions
from tally.store.local_cluster import LocalCluster
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, Valkey

HOST = "127.0.0.1"

STORE_MODES = ("single", "cluster")
STORE_MODE = os.environ.get("TALLY_TEST_STORE") or "single"
os.environ.update(DEFENCES_OFF)  # every server a test starts inherits them (tests/defences_off.py)
ON_CLUSTER = STORE_MODE == "cluster"
CLUSTER_PRIMARIES = 3
CLUSTER_REPLICAS = 1

# Tests in files this suite's cluster mode may not edit (another change owns them) that cannot
# apply on a cluster: node id prefix -> why (the same wording a `single_node` marker would give).
SINGLE_NODE_ELSEWHERE = {
    "tests/integration/test_waitaof.py::test_an_unconfirmed_batch_fails_closed": (
        "needs a store without replicas (WAITAOF 1 1 that can never be confirmed); on the "
        "cluster every primary has an in-sync replica that confirms it"
    ),
    "tests/integration/test_waitaof.py::test_unconfirmed_batches_do_not_queue_up": (
        "needs a store without replicas (WAITAOF 1 1 that can never be confirmed); on the "
        "cluster every primary has an in-sync replica that confirms it"
    ),
    "tests/roles/test_gateway_workers.py": (
        "the role processes get a one-node redis:// URL from the session valkey-server "
        "(roles.role_processes.role_env takes an EmbeddedValkey)"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    if STORE_MODE not in STORE_MODES:
        raise pytest.UsageError(
            f"TALLY_TEST_STORE={STORE_MODE!r}: must be one of {', '.join(STORE_MODES)}"
        )
    if ON_CLUSTER:
        # `timeout` (CI) sends SIGTERM: unwind like Ctrl-C, so fixtures stop every cluster
        # (their nodes run detached and would outlive the run).
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_report_header(config: pytest.Config) -> str | None:
    if ON_CLUSTER:
        return (
            f"store: a local Valkey Cluster of {CLUSTER_PRIMARIES} primaries with "
            f"{CLUSTER_REPLICAS} replica each (TALLY_TEST_STORE=cluster)"
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In cluster mode, skip what applies to one valkey-server only, saying why."""
    if not ON_CLUSTER:
        return
    for item in items:
        marker = item.get_closest_marker("single_node")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: single_node needs a reason")
        else:
            prefixes = (p for p in SINGLE_NODE_ELSEWHERE if item.nodeid.startswith(p))
            prefix = next(prefixes, None)
            if prefix is None:
                continue
            reason = SINGLE_NODE_ELSEWHERE[prefix]
        item.add_marker(pytest.mark.skip(reason=f"single node only: {reason}"))


# --- cluster mode: the clusters of the session ------------------------------------------------


def pseudonym_secret_for(directory: Path) -> str:
    """TALLY_PSEUDONYM_SECRET for a server on an external store (which requires one): derived
    from the data dir, so a restart on the same data dir keeps its voters' pseudonyms."""
    return hashlib.sha256(b"tally-test-pseudonym:" + str(directory.resolve()).encode()).hexdigest()


class Clusters:
    """Every LocalCluster of the session (cluster mode): one per `tally serve` data dir, and
    the one the store-level tests share. Each lives under `base`; all are stopped at the end."""

    def __init__(self) -> None:
        self.base: Path | None = None
        self._names = itertools.count()
        self._shared: LocalCluster | None = None
        self._by_data_dir: dict[Path, LocalCluster] = {}
        self._users: dict[Path, int] = {}  # blocks running on each data dir's cluster
        self._running: list[LocalCluster] = []

    def _new(self, name: str) -> LocalCluster:
        if self.base is None:  # outside a pytest session (a helper used on its own)
            self.base = Path(tempfile.mkdtemp(prefix="tally-test-clusters-"))
        cluster = LocalCluster(
            self.base / f"{name}-{next(self._names)}",
            primaries=CLUSTER_PRIMARIES,
            replicas=CLUSTER_REPLICAS,
        )
        self._running.append(cluster)
        try:
            cluster.up()
        except BaseException:
            self._running.remove(cluster)
            raise
        return cluster

    def shared(self) -> LocalCluster:
        """The store-level tests' cluster, started on first use."""
        if self._shared is None:
            self._shared = self._new("store")
        return self._shared

    @contextlib.contextmanager
    def of_data_dir(self, directory: Path) -> Iterator[LocalCluster]:
        """The data dir's own cluster while the block runs (and while any other block on that
        data dir runs): new the first time, its nodes started again (same ports, node ids and
        data) for a later server on that data dir."""
        key = directory.resolve()
        cluster = self._by_data_dir.get(key)
        if cluster is None:
            cluster = self._by_data_dir[key] = self._new("data")
        elif cluster not in self._running:
            self._running.append(cluster)
            nodes = sorted(cluster.nodes, key=lambda n: n.role != "primary")  # primaries first
            for node in nodes:
                cluster.restart(node.port)
            cluster.wait_healthy(60, replicas_in_sync=True)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            yield cluster
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                self._stop(cluster)

    def _stop(self, cluster: LocalCluster) -> None:
        if cluster in self._running:
            self._running.remove(cluster)
            cluster.stop()

    def stop_all(self) -> None:
        for cluster in reversed(list(self._running)):
            with contextlib.suppress(Exception):
                self._stop(cluster)


CLUSTERS = Clusters()
atexit.register(CLUSTERS.stop_all)  # the session fixture's teardown normally did it already


@pytest.fixture(scope="session", autouse=True)
def _session_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Cluster mode: clusters live in the session's temp dir and stop when the session ends."""
    if not ON_CLUSTER:
        yield
        return
    CLUSTERS.base = tmp_path_factory.mktemp("clusters")
    try:
        yield
    finally:
        CLUSTERS.stop_all()


@contextlib.contextmanager
def store_env(directory: Path) -> Iterator[dict[str, str]]:
    """What a `tally serve` on `directory` adds to its environment for the store under test:
    nothing on one node (it embeds its own); in cluster mode the data dir's cluster
    (TALLY_VALKEY_URL) and the pseudonym secret an external store requires, for the block."""
    if not ON_CLUSTER:
        yield {}
        return
    with CLUSTERS.of_data_dir(directory) as cluster:
        yield {
            "TALLY_VALKEY_URL": cluster.url,
            "TALLY_PSEUDONYM_SECRET": pseudonym_secret_for(directory),
        }


StoreConnection = Valkey | ValkeyCluster


@dataclass(frozen=True)
class StoreUnderTest:
    """The Valkey a store-level test talks to: one valkey-server, or (cluster mode) a cluster."""

    url: str  # as TALLY_VALKEY_URL
    server: EmbeddedValkey | None = None
    cluster: LocalCluster | None = None

    @classmethod
    def of_server(cls, server: EmbeddedValkey) -> StoreUnderTest:
        return cls(server.endpoint.url, server=server)  # the admin's ACL user

    @classmethod
    def of_cluster(cls, cluster: LocalCluster) -> StoreUnderTest:
        return cls(cluster.url, cluster=cluster)

    def client(self, *, functions: bool = True, **options: Any) -> StoreConnection:
        """A new client (not connected yet), loading Tally's functions when it connects."""
        on_connect = load_functions if functions else None
        if self.cluster is None:
            assert self.server is not None
            return Valkey(self.server.endpoint, on_connect=on_connect, **options)
        return ValkeyCluster(ClusterSeeds.from_url(self.url), on_connect=on_connect, **options)

    def endpoint_for(self, key: str) -> Endpoint:
        """The node that serves `key` (a live channel is SSUBSCRIBEd there)."""
        if self.cluster is None:
            assert self.server is not None
            return self.server.endpoint
        return self.cluster.endpoint(self.cluster.primary_of_key(key))

    def live_endpoint(self, poll_id: str) -> Endpoint:
        """The node where the poll's live channel is SSUBSCRIBEd (and SPUBLISHed)."""
        return self.endpoint_for(keys.live_channel(poll_id))

    def primaries(self) -> list[Endpoint]:
        """Every primary (the one node itself on a single valkey-server)."""
        if self.cluster is None:
            assert self.server is not None
            return [self.server.endpoint]
        return [
            self.cluster.endpoint(n.port) for n in self.cluster.topology() if n.role == "primary"
        ]

    async def on_every_primary(self, *args: str) -> list[Any]:
        """Run a command without a key on every primary (CLIENT KILL, CLIENT LIST...)."""
        replies = []
        for endpoint in self.primaries():
            client = Valkey(endpoint)
            try:
                replies.append(await client.execute(*args))
            finally:
                await client.close()
        return replies

    def live_feed(self, client: StoreConnection) -> ValkeyLiveFeed | ClusterLiveFeed:
        """The snapshot feed a gateway on this store uses (as tally.wiring.store builds it)."""
        if isinstance(client, ValkeyCluster):
            return ClusterLiveFeed(client)
        return ValkeyLiveFeed(client.endpoint)

    def role_env(self, data_dir: Path, **extra: str) -> dict[str, str]:
        """The environment the role processes (`tally gateway|aggregator|archiver`) of one
        deployment share (role_processes.role_env): the admin's URL, and each role's own user's,
        which role_processes.running_role hands to that role's process."""
        from role_processes import role_env

        store = self.server if self.server is not None else self.cluster
        assert store is not None
        return role_env(store, data_dir, **extra)

    def flush(self) -> None:
        """Empty a cluster (FLUSHALL on every primary; Tally's functions stay loaded)."""
        assert self.cluster is not None, "the one-node store is shared: never flushed"
        for node in self.cluster.topology():
            if node.role == "primary":
                self.cluster.call(node.port, "FLUSHALL", "SYNC")


async def channel_subscribers(client: StoreConnection, poll_id: str) -> int:
    """How many connections Valkey counts on the poll's live channel (on a cluster: the
    primary that owns the channel's slot, where it is SSUBSCRIBEd)."""
    channel = keys.live_channel(poll_id)
    if isinstance(client, Valkey):
        return int((await client.execute("PUBSUB", "SHARDNUMSUB", channel))[1])
    if not client.shards:
        await client.connect()
    endpoint = client.endpoint_of(channel)
    assert endpoint is not None
    node = Valkey(endpoint)  # PUBSUB has no key the cluster client could route by
    try:
        return int((await node.execute("PUBSUB", "SHARDNUMSUB", channel))[1])
    finally:
        await node.close()


@contextlib.asynccontextmanager
async def own_store(directory: Path) -> AsyncIterator[StoreUnderTest]:
    """A store for one test alone (for code that watches every poll there is): its own
    valkey-server in `directory`, or in cluster mode the shared cluster, emptied first."""
    if ON_CLUSTER:
        store = StoreUnderTest.of_cluster(CLUSTERS.shared())
        store.flush()
        yield store
        return
    server = EmbeddedValkey(directory)
    await server.start()
    try:
        yield StoreUnderTest.of_server(server)
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def own_client(directory: Path) -> AsyncIterator[StoreConnection]:
    """A connected client of a store for one test alone (own_store)."""
    async with own_store(directory) as store:
        valkey = store.client()
        await valkey.connect()
        try:
            yield valkey
        finally:
            await valkey.close()


@dataclass
class RunningTally:
    """A `tally serve` process on a free port with its own data dir and embedded Valkey."""

    url: str
    host: str
    port: int
    data_dir: Path
    issuer: DevIssuer
    process: subprocess.Popen[bytes]

    def admin_token(self) -> str:
        return self.issuer.mint("test-admin", roles=["admin"])

    def voter_token(self, subject: str, *, alg: str = "EdDSA") -> str:
        return self.issuer.mint(subject, alg=alg)

    def client(self, token: str | None = None) -> TallyClient:
        return TallyClient(self.url, token)

    def admin(self) -> TallyClient:
        return TallyClient(self.url, self.admin_token())

    def open_poll(self, *options: str, lanes: int = 4, **extra: object) -> dict[str, object]:
        """Create and open a poll (default options red/green/blue); returns the poll document."""
        admin = self.admin()
        poll = admin.post(
            "/v1/polls",
            {
                "title": "test poll",
                "options": list(options or ("Red", "Green", "Blue")),
                "lanes": lanes,
                **extra,
            },
        )
        return admin.post(f"/v1/polls/{poll['id']}/open")

    def results(
        self, poll_id: str, *, total: int | None = None, state: str | None = None
    ) -> dict[str, Any]:
        """GET /results once the aggregator has caught up (snapshots trail writes by up to a
        tick): until `total`/`state` match when given, else until two reads a tick apart agree."""
        return settled_results(self.client(), poll_id, total=total, state=state)

    def valkey_pid(self) -> int:
        return int((self.data_dir / "valkey" / "valkey.pid").read_text().strip())


StartTally = Callable[..., RunningTally]
OPTIONS = ("red", "green", "blue")


def vote_requests(t: RunningTally, poll_id: str, tokens: list[str], shift: int) -> list[bytes]:
    """Raw HTTP vote requests for the load generator: voter i votes OPTIONS[(i + shift) % 3], so
    a repeat with another shift picks another option."""
    return [
        build_request(
            "POST",
            f"/v1/polls/{poll_id}/votes",
            host=f"{t.host}:{t.port}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=orjson.dumps({"option": OPTIONS[(i + shift) % len(OPTIONS)]}),
        )
        for i, token in enumerate(tokens)
    ]


SETTLE_S = 0.6  # more than two aggregator ticks at the default TALLY_TICK_MS of 250


def settled_results(
    client: TallyClient,
    poll_id: str,
    *,
    total: int | None = None,
    state: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Results as the aggregator publishes them, once they reflect the writes the caller made."""
    path = f"/v1/polls/{poll_id}/results"
    deadline = time.monotonic() + timeout_s
    previous = client.get(path)
    while time.monotonic() < deadline:
        if total is not None or state is not None:
            if (total is None or previous["total"] == total) and (
                state is None or previous["state"] == state
            ):
                return previous
            time.sleep(0.05)
            previous = client.get(path)
            continue
        time.sleep(SETTLE_S)
        current = client.get(path)
        if current == previous:
            return current
        previous = current
    return previous


@contextlib.contextmanager
def serving(directory: Path, env: dict[str, str] | None = None) -> Iterator[RunningTally]:
    """`tally serve` on a free port with `directory` as its data dir; stopped on exit."""
    port = free_port()
    environment = dict(
        os.environ, TALLY_DATA_DIR=str(directory), TALLY_LOG_LEVEL="warning", **(env or {})
    )
    environment.pop("TALLY_VALKEY_URL", None)
    argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
    with store_env(directory) as store:
        if store:  # cluster mode: the data dir's cluster, unless `env` names another store
            environment = {**environment, **store, **(env or {})}
        with running(argv, host=HOST, port=port, env=environment, timeout_s=60) as process:
            issuer = DevIssuer.load_or_create(directory / "keys")
            yield RunningTally(f"http://{HOST}:{port}", HOST, port, directory, issuer, process)


@pytest.fixture
def start_tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartTally]:
    """A factory: `start_tally(data_dir=None)` starts a server (reusing a data dir restarts on it)."""
    stack = contextlib.ExitStack()

    def start(data_dir: Path | None = None, env: dict[str, str] | None = None) -> RunningTally:
        return stack.enter_context(serving(data_dir or tmp_path_factory.mktemp("tally-data"), env))

    with stack:
        yield start


@pytest.fixture(scope="session")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    """One server shared by the tests that only create their own polls."""
    with serving(tmp_path_factory.mktemp("tally-shared")) as server:
        yield server


def is_running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """A real valkey-server (the bundled binary) for store-level tests."""
    import asyncio

    if ON_CLUSTER:
        pytest.fail(
            "valkey_server is the one-node server: use store_server, or mark the test "
            "single_node with the reason it cannot run on a cluster"
        )
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture(scope="session")
def store_server(request: pytest.FixtureRequest) -> StoreUnderTest:
    """The store-level tests' Valkey: the session's valkey-server, or the shared cluster."""
    if ON_CLUSTER:
        return StoreUnderTest.of_cluster(CLUSTERS.shared())
    server: EmbeddedValkey = request.getfixturevalue("valkey_server")
    return StoreUnderTest.of_server(server)


@pytest.fixture
def fresh_store(store_server: StoreUnderTest) -> StoreUnderTest:
    """`store_server`, emptied first in cluster mode (one node is shared as it always was: its
    tests create their own polls)."""
    if store_server.cluster is not None:
        store_server.flush()
    return store_server


@pytest.fixture
async def valkey(fresh_store: StoreUnderTest) -> AsyncIterator[StoreConnection]:
    """A connected client with Tally's functions loaded (one per test, on the test's loop)."""
    client = fresh_store.client()
    await client.connect()
    yield client
    await client.close()
