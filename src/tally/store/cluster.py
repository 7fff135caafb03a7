"""Valkey Cluster behind the same StoreClient port: one pipelined connection per primary
(`resp.Valkey`, so per-tick batching and the WAITAOF that confirms a batch stay per node), every
command routed by the hash slot of its key.

Why our own router rather than redis-py's `RedisCluster` or valkey-glide: routing is a dict
lookup in front of the client the vote path already uses, so a node's votes of one tick still
leave in one write followed by one `WAITAOF` on that node's connection (BENCHMARKS.md, "Choosing
the cluster client", has the figures for both).

Guarantees (on top of StoreClient's):
- A command touches one slot. Tally's keys carry one hash tag per lane or per poll, so a vote, a
  lane move or a snapshot publish never spans two slots; the router does not check it, the
  server does (CROSSSLOT).
- `MOVED` updates the slot's owner and retries there; `ASK` retries once on the target after
  `ASKING`; both are bounded (MAX_REDIRECTS). Every Tally write is idempotent, so a retry after
  a redirect never counts a vote twice.
- A node that cannot be reached, or that answers CLUSTERDOWN/READONLY/TRYAGAIN, fails only the
  commands routed to it (StoreUnavailable or the error reply) and schedules a topology refresh
  (`CLUSTER SHARDS` from any node that answers within twice the connect timeout), so after a
  failover the promoted replica is found and used; its connection loads Tally's functions when
  it connects (`on_connect`). Refreshes run one at a time and at most one every
  _MIN_REFRESH_INTERVAL_S: a request made sooner is deferred, never dropped, and one made while a
  refresh is under way runs another after it. A topology that leaves slots without an online
  primary (mid-failover) is not applied: routing stays as it was until the promotion is seen.
- Commands without a key (FUNCTION LOAD, CONFIG, PING...) go to every primary or to one, per
  `_EVERY_PRIMARY`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tally.domain.errors import StoreUnavailable
from tally.ports import Arg, ReplyError
from tally.store.resp import Endpoint, TlsFiles, Valkey, WaitAof

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterSeeds",
    "ClusterTopologyError",
    "Shard",
    "ValkeyCluster",
    "is_cluster_url",
    "key_slot",
]

log = logging.getLogger("tally.cluster")

SLOTS = 16384
MAX_REDIRECTS = 5
CLUSTER_SCHEMES = ("valkey+cluster", "redis+cluster", "valkeys+cluster", "rediss+cluster")
_MIN_REFRESH_INTERVAL_S = 0.1
_SLOT_CACHE_LIMIT = 100_000

# Commands with no key: run on every primary (state every node must share), else on any one.
_EVERY_PRIMARY = {b"FUNCTION", b"FLUSHALL", b"FLUSHDB", b"SCRIPT", b"CONFIG"}
_READ_ONLY_SUBCOMMANDS = {b"LIST", b"GET", b"DUMP", b"STATS", b"EXISTS", b"HELP"}
_KEYLESS = _EVERY_PRIMARY | {b"PING", b"INFO", b"TIME", b"CLUSTER", b"DBSIZE", b"CLIENT", b"ECHO"}
_SCRIPTS = {b"FCALL", b"FCALL_RO", b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO"}
# Error replies that mean "this node cannot serve the slot now": refresh the topology.
_TOPOLOGY_ERRORS = ("CLUSTERDOWN", "READONLY", "TRYAGAIN", "MASTERDOWN", "LOADING")


class ClusterTopologyError(StoreUnavailable):
    """The configured endpoint is not a usable cluster (not a cluster, unreachable, slots not
    all served): a configuration problem to report at start, naming the setting."""


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: bytes) -> int:
    """The cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag, if it has a non-empty
    `{...}`, else of the whole key, modulo 16384 (the cluster specification)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    for byte in key:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


@dataclass(frozen=True, slots=True)
class ClusterSeeds:
    """`valkey+cluster://[user:password@]host:port[,host:port...]`: the nodes to ask for the
    topology, and the credentials every node shares."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_files: TlsFiles = field(default_factory=TlsFiles)  # CA, client certificate (valkeys+)

    @classmethod
    def from_url(cls, url: str) -> ClusterSeeds:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in CLUSTER_SCHEMES:
            raise ValueError(f"not a cluster URL (want {CLUSTER_SCHEMES[0]}://host:port,...)")
        # Credentials first: a password may hold '/' (and then no part of it may be quoted
        # back in an error about the hosts).
        credentials, at, hosts = rest.rpartition("@")
        hosts = hosts.split("/", 1)[0]
        username = password = None
        if at:
            user, colon, secret = credentials.partition(":")
            username = unquote(user) or None
            password = (unquote(secret) or None) if colon else None
        nodes = []
        for part in hosts.split(","):
            host, colon, port = part.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"seed node {part!r} is not host:port")
            nodes.append((host.strip("[]"), int(port)))
        return cls(tuple(nodes), username, password, scheme.startswith(("valkeys", "rediss")))

    def endpoint(self, host: str, port: int) -> Endpoint:
        return Endpoint(host, port, self.password, self.username, 0, self.tls, self.tls_files)


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True)
class Shard:
    """One primary, the slot ranges it serves, and its replicas' addresses."""

    primary: tuple[str, int]
    ranges: tuple[tuple[int, int], ...]
    replicas: tuple[tuple[str, int], ...] = field(default=())


def parse_shards(reply: Any) -> list[Shard]:
    """CLUSTER SHARDS (RESP2: flat key/value lists) as shards with a healthy primary; a shard
    whose primary is not online is left out (its slots then count as uncovered)."""
    shards = []
    for raw in reply:
        shard = _pairs(raw)
        slots = shard.get(b"slots") or []
        ranges = tuple((int(slots[i]), int(slots[i + 1])) for i in range(0, len(slots), 2))
        primary = None
        replicas = []
        for node_raw in shard.get(b"nodes") or []:
            node = _pairs(node_raw)
            host = (node.get(b"ip") or node.get(b"endpoint") or b"127.0.0.1").decode()
            address = (host, int(node.get(b"port") or node.get(b"tls-port") or 0))
            if node.get(b"role") == b"master" and node.get(b"health") == b"online":
                primary = address
            elif node.get(b"role") == b"replica":
                replicas.append(address)
        if primary is not None and ranges:
            shards.append(Shard(primary, ranges, tuple(replicas)))
    return shards


def _layout(shards: list[Shard]) -> set[tuple[tuple[str, int], tuple[tuple[int, int], ...]]]:
    return {(shard.primary, tuple(sorted(shard.ranges))) for shard in shards}


def _pairs(flat: Any) -> dict[bytes, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


class ValkeyCluster:
    """StoreClient over a Valkey Cluster (module docstring)."""

    def __init__(
        self,
        seeds: ClusterSeeds,
        *,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 5.0,
        on_connect: Callable[[Valkey], Awaitable[None]] | None = None,
        durability: WaitAof | None = None,
    ) -> None:
        self.seeds = seeds
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._on_connect = on_connect
        self._durability = durability
        self._nodes: dict[tuple[str, int], Valkey] = {}
        self._owner: list[Valkey | None] = [None] * SLOTS
        self._shards: list[Shard] = []
        self._slot_of: dict[bytes, int] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._retiring: set[asyncio.Task[None]] = set()  # connections of former primaries
        self._refreshed_at = -1.0
        # Set when a refresh finds a slot served by another primary than before.
        self.topology_changed: asyncio.Event | None = None
        self._on_flush: Callable[[int], None] | None = None

    # --- what the roles configure -------------------------------------------------------

    @property
    def durability(self) -> WaitAof | None:
        return self._durability

    @durability.setter
    def durability(self, policy: WaitAof | None) -> None:
        """The same durability policy for every node's connection (each confirms its batch)."""
        self._durability = policy
        for node in self._nodes.values():
            node.durability = policy

    @property
    def on_flush(self) -> Callable[[int], None] | None:
        return self._on_flush

    @on_flush.setter
    def on_flush(self, observe: Callable[[int], None] | None) -> None:
        self._on_flush = observe
        for node in self._nodes.values():
            node.on_flush = observe

    @property
    def shards(self) -> list[Shard]:
        """The topology as last read."""
        return list(self._shards)

    def primary_of(self, key: bytes | str) -> tuple[str, int] | None:
        """The address of the primary serving `key`'s slot, as last known."""
        endpoint = self.endpoint_of(key)
        return None if endpoint is None else (endpoint.host, endpoint.port)

    def endpoint_of(self, key: bytes | str) -> Endpoint | None:
        node = self._owner[self._slot(key if isinstance(key, bytes) else key.encode())]
        return None if node is None else node.endpoint

    # --- StoreClient ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._shards) and all(self._owner_of_shard(s).connected for s in self._shards)

    async def connect(self) -> None:
        """Read the topology and connect to every primary. ClusterTopologyError when the seeds
        do not describe a cluster that serves every slot; StoreUnavailable when a primary
        cannot be reached."""
        if not self._shards:
            await self.refresh(force=True)
        await asyncio.gather(*(self._owner_of_shard(s).connect() for s in self._shards))

    async def close(self) -> None:
        task, self._refreshing = self._refreshing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        nodes = list(self._nodes.values())
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def execute(self, *args: Arg) -> Any:
        reply = await self._routed(args, durable=False)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def call(self, *args: Arg) -> Any:
        try:
            return await self.execute(*args)
        except ReplyError as exc:
            raise StoreUnavailable(f"Valkey error: {exc}") from exc

    def submit(self, args: Sequence[Arg]) -> Awaitable[Any]:
        return asyncio.ensure_future(self._routed(args, durable=False))

    def durable(self, args: Sequence[Arg]) -> Awaitable[Any]:
        return self._routed(args, durable=True)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Commands grouped by node: one pipelined write per node, all nodes at once; replies in
        the order of `commands`. A redirected reply is retried on its own."""
        if not self._shards:
            await self.connect()
        groups: dict[int, tuple[Valkey, list[int]]] = {}
        replies: list[Any] = [None] * len(commands)
        keyless = []
        for i, args in enumerate(commands):
            key = _routing_key(args)
            if key is None:
                keyless.append(i)
                continue
            node = self._node(key)
            groups.setdefault(id(node), (node, []))[1].append(i)

        async def run(node: Valkey, indexes: list[int]) -> None:
            try:
                if not node.connected:
                    await node.connect()
                got = await node.pipeline([commands[i] for i in indexes])
            except StoreUnavailable:
                self._schedule_refresh()
                raise
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply

        await asyncio.gather(*(run(node, idx) for node, idx in groups.values()))
        # Keyless commands (their reply still None) go through the router on their own.
        retry = [i for i, r in enumerate(replies) if _redirected(r)] + keyless
        if retry:
            redone = await asyncio.gather(
                *(self._routed(commands[i], durable=False) for i in retry)
            )
            for i, reply in zip(retry, redone, strict=True):
                replies[i] = reply
        return replies

    # --- topology ---------------------------------------------------------------------------

    async def refresh(
        self, *, force: bool = False, ask_first: tuple[str, int] | None = None
    ) -> None:
        """Read CLUSTER SHARDS from the first node that answers (`ask_first`, e.g. a node that
        just said a slot moved away from it, then known primaries, their replicas, then the
        seeds) and route by it. One refresh at a time; at most one every _MIN_REFRESH_INTERVAL_S
        unless forced (a forced one also runs after one already under way, which may have read
        the topology before the change the caller saw)."""
        loop = asyncio.get_running_loop()
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
            if not force:
                return
        if not force and loop.time() - self._refreshed_at < _MIN_REFRESH_INTERVAL_S:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = loop.create_task(self._refresh(ask_first))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, ask_first: tuple[str, int] | None = None) -> None:
        self._refreshed_at = asyncio.get_running_loop().time()
        candidates: list[tuple[str, int]] = [] if ask_first is None else [ask_first]
        for shard in self._shards:
            candidates += [a for a in (shard.primary, *shard.replicas) if a not in candidates]
        candidates += [n for n in self.seeds.nodes if n not in candidates]
        errors = []
        for address in candidates:
            try:
                reply = await self._ask_topology(address)
            except (StoreUnavailable, OSError, TimeoutError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc or 'no answer in time'}")
                continue
            except ReplyError as exc:
                if "cluster support disabled" in str(exc).lower():
                    raise ClusterTopologyError(
                        f"{address[0]}:{address[1]} is not a cluster node ({exc})"
                    ) from exc
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            self._apply(parse_shards(reply))
            return
        raise ClusterTopologyError("no cluster node answered: " + "; ".join(errors))

    async def _ask_topology(self, address: tuple[str, int]) -> Any:
        """CLUSTER SHARDS from one node; TimeoutError if it does not answer within twice the
        connect timeout (a hung node must not hold the refresh for the command timeout)."""
        async with asyncio.timeout(2 * self._connect_timeout_s):
            node = self._nodes.get(address)
            if node is not None and node.connected:
                return await node.execute("CLUSTER", "SHARDS")
            probe = Valkey(
                self.seeds.endpoint(*address),
                connect_timeout_s=self._connect_timeout_s,
                command_timeout_s=self._command_timeout_s,
            )
            try:
                await probe.connect()
                return await probe.execute("CLUSTER", "SHARDS")
            finally:
                await probe.close()

    def _apply(self, shards: list[Shard]) -> None:
        owner: list[Valkey | None] = [None] * SLOTS
        for shard in shards:
            node = self._node_at(shard.primary)
            for start, end in shard.ranges:
                owner[start : end + 1] = [node] * (end - start + 1)
        uncovered = owner.count(None)
        if uncovered:
            raise ClusterTopologyError(
                f"{uncovered} of {SLOTS} hash slots are not served by an online primary"
            )
        primaries = {shard.primary for shard in shards}
        for address in [a for a in self._nodes if a not in primaries]:
            stale = self._nodes.pop(address)  # a failed or demoted primary
            closing = asyncio.get_running_loop().create_task(stale.close())
            self._retiring.add(closing)
            closing.add_done_callback(self._retiring.discard)
        # Any slot served by another primary than before (CLUSTER SHARDS lists shards, and may
        # list ranges, in no fixed order).
        changed = _layout(shards) != _layout(self._shards)
        self._owner = owner
        self._shards = shards
        if changed:
            log.info(
                "cluster topology: %s",
                ", ".join(f"{h}:{p}" for h, p in sorted(primaries)),
            )
            if self.topology_changed is not None:
                self.topology_changed.set()

    def _schedule_refresh(self) -> None:
        """Refresh in the background: now, or once _MIN_REFRESH_INTERVAL_S has passed since the
        last one (a request is deferred, never dropped); a request made while a refresh is under
        way runs another after it, since that one may have read the topology before the change."""
        self._refresh_wanted = True
        if self._refreshing is not None and not self._refreshing.done():
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_when_due())
        self._refreshing.add_done_callback(_log_refresh_failure)

    async def _refresh_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        while self._refresh_wanted:
            self._refresh_wanted = False
            delay = self._refreshed_at + _MIN_REFRESH_INTERVAL_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._refresh()

    def _node_at(self, address: tuple[str, int]) -> Valkey:
        node = self._nodes.get(address)
        if node is None:
            node = Valkey(
                self.seeds.endpoint(*address),
                connect_timeout_s=self._connect_timeout_s,
                command_timeout_s=self._command_timeout_s,
                on_connect=self._on_connect,
                durability=self._durability,
            )
            node.on_flush = self._on_flush
            self._nodes[address] = node
        return node

    def _owner_of_shard(self, shard: Shard) -> Valkey:
        return self._node_at(shard.primary)

    # --- routing ----------------------------------------------------------------------------

    def _slot(self, key: bytes) -> int:
        slot = self._slot_of.get(key)
        if slot is None:
            if len(self._slot_of) >= _SLOT_CACHE_LIMIT:
                self._slot_of.clear()
            slot = self._slot_of[key] = key_slot(key)
        return slot

    def _node(self, key: bytes) -> Valkey:
        node = self._owner[self._slot(key)]
        if node is None:
            raise StoreUnavailable("the cluster topology is not known yet")
        return node

    async def _routed(self, args: Sequence[Arg], *, durable: bool) -> Any:
        if not self._shards:
            await self.connect()
        key = _routing_key(args)
        if key is None:
            return await self._keyless(args)
        node = self._node(key)
        asking = False
        for _ in range(MAX_REDIRECTS):
            try:
                if not node.connected:
                    await node.connect()
                if asking:  # its reply only matters through the command's
                    node.submit((b"ASKING",)).add_done_callback(_ignore_outcome)
                reply = await (node.durable(args) if durable else node.submit(args))
            except StoreUnavailable:
                self._schedule_refresh()
                raise
            if not isinstance(reply, ReplyError):
                return reply
            message = str(reply)
            if message.startswith("MOVED "):
                slot, address = _redirect(message)
                moved_to = self._node_at(address)
                self._owner[slot] = moved_to
                self._schedule_refresh()
                node, asking = moved_to, False
                continue
            if message.startswith("ASK "):
                _, address = _redirect(message)
                node, asking = self._node_at(address), True
                continue
            if message.startswith(_TOPOLOGY_ERRORS):
                self._schedule_refresh()
            return reply
        raise StoreUnavailable(f"more than {MAX_REDIRECTS} cluster redirects for {args[0]!r}")

    async def _keyless(self, args: Sequence[Arg]) -> Any:
        name = _upper(args[0])
        every = name in _EVERY_PRIMARY and not (
            len(args) > 1 and _upper(args[1]) in _READ_ONLY_SUBCOMMANDS
        )
        nodes = [self._owner_of_shard(s) for s in self._shards]
        if not every:
            nodes = nodes[:1]

        async def one(node: Valkey) -> Any:
            try:
                if not node.connected:
                    await node.connect()
                return await node.submit(args)
            except StoreUnavailable:
                self._schedule_refresh()
                raise

        replies = await asyncio.gather(*(one(n) for n in nodes))
        errors = [r for r in replies if isinstance(r, ReplyError)]
        return errors[0] if errors else replies[0]


def _routing_key(args: Sequence[Arg]) -> bytes | None:
    """The key whose slot decides the node, or None for a command without one."""
    name = _upper(args[0])
    if name in _SCRIPTS:
        if len(args) > 3 and int(args[2]) > 0:
            return _bytes(args[3])
        return None
    if name == b"PUBSUB":  # PUBSUB SHARDNUMSUB <channel>: where the shard channel lives
        if len(args) > 2 and _upper(args[1]) == b"SHARDNUMSUB":
            return _bytes(args[2])
        return None
    if name in _KEYLESS or len(args) < 2:
        return None
    return _bytes(args[1])


def _upper(arg: Arg) -> bytes:
    return _bytes(arg).upper()


def _bytes(arg: Arg) -> bytes:
    return arg if isinstance(arg, bytes) else str(arg).encode()


def _redirected(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith(("MOVED ", "ASK "))


def _redirect(message: str) -> tuple[int, tuple[str, int]]:
    """`MOVED 3999 127.0.0.1:6381` -> (3999, ("127.0.0.1", 6381))."""
    _, slot, address = message.split()[:3]
    host, _, port = address.rpartition(":")
    return int(slot), (host.strip("[]"), int(port))


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Mark the outcome read (a lost connection fails the command that follows it too)."""
    if not future.cancelled():
        future.exception()


def _log_refresh_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("cluster topology refresh failed: %s", task.exception())
