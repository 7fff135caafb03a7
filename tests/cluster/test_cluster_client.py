"""ValkeyCluster, the StoreClient over a Valkey Cluster, against a real 3x1 LocalCluster: hash slots
as the spec computes them, routing to the owning primary, pipelines across every node, keyless
commands on every primary, Tally's own stores and functions, MOVED and ASK, durable writes
confirmed by WAIT + WAITAOF, and a primary's failover."""

from __future__ import annotations

import asyncio
import secrets
import signal
import statistics
from collections.abc import Iterator

import pytest
from cluster_support import (
    COMMAND_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    FAILOVER_S,
    cluster_client,
    eventually,
    failed_over,
    key_on,
    local_cluster,
    primaries,
    promoted,
)

from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec, Poll, PollState, new_poll
from tally.domain.pseudonyms import lane_of
from tally.ports import AlreadyRecorded, Recorded, ReplyError
from tally.service import system_clock_ms
from tally.store import keys
from tally.store.cluster import SLOTS, ClusterSeeds, ClusterTopologyError, ValkeyCluster, key_slot
from tally.store.embedded import free_port
from tally.store.library import LIBRARY_NAME
from tally.store.local_cluster import LocalCluster
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey, WaitAof
from tally.store.votes import ValkeyBallotBox

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("client-cluster")) as started:
        yield started


# --- hash slots (the cluster specification's rules) -------------------------------------------


def test_key_slot_matches_the_specification_vectors() -> None:
    assert key_slot(b"123456789") == 12739  # CRC16/XMODEM check value 0x31C3, mod 16384
    assert key_slot(b"") == 0
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")  # empty tag: the whole key hashes
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")
    assert key_slot(b"foo{bar") != key_slot(b"bar")  # no closing brace: the whole key
    assert key_slot(b"}{x}") == key_slot(b"x")
    # Tally's keys: a lane's keys share its tag, the poll's keys and live channel share the poll's.
    assert len({key_slot(keys.lane_state("p", 3).encode()), key_slot(b"p.3")}) == 1
    assert key_slot(keys.live_channel("p").encode()) == key_slot(keys.poll_meta("p").encode())


async def test_key_slot_agrees_with_the_server(cluster: LocalCluster) -> None:
    """CLUSTER KEYSLOT on a real node, for random keys with and without braces."""
    alphabet = b"ab{}.:x"
    samples = [b"123456789", b"foo{}{bar}", b"foo{{bar}}zap", b"foo{bar}{zap}", b"{}", b"{"]
    samples += [
        bytes(secrets.choice(alphabet) for _ in range(secrets.randbelow(12))) for _ in range(400)
    ]
    node = Valkey(cluster.endpoint(primaries(cluster)[0]))
    try:
        server = await node.pipeline([("CLUSTER", "KEYSLOT", key) for key in samples])
    finally:
        await node.close()
    assert [key_slot(key) for key in samples] == server


# --- routing ---------------------------------------------------------------------------------


async def test_every_key_lands_on_the_primary_that_owns_its_slot(cluster: LocalCluster) -> None:
    async with cluster_client(cluster) as client:
        assert sorted(s.primary for s in client.shards) == sorted(
            (HOST, port) for port in primaries(cluster)
        )
        assert sum(end - start + 1 for s in client.shards for start, end in s.ranges) == SLOTS
        for port in primaries(cluster):
            key = key_on(cluster, port)
            assert client.primary_of(key) == (HOST, port)
            assert await client.execute("SET", key, f"on {port}") == b"OK"
            assert await client.call("GET", key) == f"on {port}".encode()
            assert cluster.call(port, "GET", key) == f"on {port}"  # really there
        assert client.connected


async def test_shard_channel_subscriber_counts_come_from_the_channels_node(
    cluster: LocalCluster,
) -> None:
    """PUBSUB SHARDNUMSUB is routed by its channel: a subscriber on the owning node is counted."""
    channel = keys.live_channel("shardnumsub-probe")
    owner = cluster.primary_of_key(channel)
    async with cluster_client(cluster) as client:
        assert (await client.execute("PUBSUB", "SHARDNUMSUB", channel))[1] == 0
        subscriber = Valkey(cluster.endpoint(owner))
        await subscriber.connect()
        try:
            assert (await subscriber.execute("SSUBSCRIBE", channel))[0] == b"ssubscribe"
            assert (await client.execute("PUBSUB", "SHARDNUMSUB", channel))[1] == 1
        finally:
            await subscriber.close()


async def test_a_pipeline_across_every_primary_answers_in_order(cluster: LocalCluster) -> None:
    async with cluster_client(cluster) as client:
        counters = [f"n:{secrets.token_hex(4)}:{i}" for i in range(60)]
        assert len({client.primary_of(k) for k in counters}) == 3
        commands: list[tuple[str | int, ...]] = []
        expected: list[object] = []
        for round_ in range(1, 4):
            for i, key in enumerate(counters):
                commands.append(("INCRBY", key, i))
                expected.append(i * round_)
        commands.insert(90, ("PING",))  # a keyless command in the middle
        expected.insert(90, b"PONG")
        commands.append(("GET", counters[7]))
        expected.append(b"21")
        commands.append(("HGET", counters[0], "x"))  # wrong type: an error reply, in its place
        replies = await client.pipeline(commands)
        assert replies[:-1] == expected
        assert isinstance(replies[-1], ReplyError)
        assert "WRONGTYPE" in str(replies[-1])


async def test_function_load_reaches_every_primary(cluster: LocalCluster) -> None:
    """Keyless writes (FUNCTION LOAD/DELETE) go to every primary; FUNCTION LIST to one."""
    async with cluster_client(cluster) as client:
        for port in primaries(cluster):  # loaded on connect, on every primary
            assert cluster.call(port, "FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)
        name = f"probe_{secrets.token_hex(4)}"
        source = f"#!lua name={name}\nserver.register_function('{name}', function() return 7 end)"
        assert await client.execute("FUNCTION", "LOAD", source) == name.encode()
        for port in primaries(cluster):
            assert cluster.call(port, "FUNCTION", "LIST", "LIBRARYNAME", name)
            assert cluster.call(port, "FCALL", name, 0) == 7
        assert await client.execute("FUNCTION", "LIST", "LIBRARYNAME", name)
        assert await client.execute("FUNCTION", "DELETE", name) == b"OK"
        for port in primaries(cluster):
            assert cluster.call(port, "FUNCTION", "LIST", "LIBRARYNAME", name) == []


# --- Tally's stores on a cluster ---------------------------------------------------------------


def _poll_over_every_primary(cluster: LocalCluster, lanes: int = 16) -> Poll:
    """A draft poll whose lanes land on every primary."""
    wanted = set(primaries(cluster))
    for _ in range(100):
        poll = new_poll(
            poll_id=f"c{secrets.token_hex(5)}",
            title="cluster",
            options=[OptionSpec("Red", "red"), OptionSpec("Green", "green")],
            now_ms=system_clock_ms(),
            lanes=lanes,
        )
        lane_owners = {cluster.primary_of_key(keys.lane_state(poll.id, n)) for n in range(lanes)}
        if lane_owners == wanted:
            return poll
    raise AssertionError("no poll id spreads its lanes over every primary")


async def _open(polls: ValkeyPolls, poll: Poll) -> Poll:
    await polls.create(poll, actor="tester")
    await polls.move(poll, PollState.OPEN, actor="tester")
    return poll.moved_to(PollState.OPEN, system_clock_ms())


def _voters_by_lane(poll: Poll, per_lane: int) -> dict[int, list[bytes]]:
    voters: dict[int, list[bytes]] = {lane: [] for lane in range(poll.lanes)}
    while any(len(v) < per_lane for v in voters.values()):
        voter = secrets.token_bytes(16)
        lane = lane_of(voter, poll.lanes)
        if len(voters[lane]) < per_lane:
            voters[lane].append(voter)
    return voters


async def test_votes_through_the_real_stores_land_on_each_lanes_node(
    cluster: LocalCluster,
) -> None:
    """ValkeyPolls and ValkeyBallotBox over the cluster: a 16-lane poll created, opened, voted
    on; each lane's keys live on the primary that owns its hash tag, and nowhere else."""
    async with cluster_client(cluster) as client:
        polls = ValkeyPolls(client)
        box = ValkeyBallotBox(client)
        poll = await _open(polls, _poll_over_every_primary(cluster))
        assert await polls.get(poll.id) == poll
        assert poll.id in [p.id for p in await polls.recent(50)]
        assert await polls.lane_states(poll) == [PollState.OPEN] * 16

        voters = _voters_by_lane(poll, per_lane=3)
        everyone = [v for lane in sorted(voters) for v in voters[lane]]
        outcomes = await asyncio.gather(*(box.cast(poll, v, "red") for v in everyone))
        assert all(isinstance(o, Recorded) for o in outcomes)
        assert sorted((o.lane, o.seq) for o in outcomes if isinstance(o, Recorded)) == [
            (lane, seq) for lane in range(16) for seq in (1, 2, 3)
        ]
        again = await box.cast(poll, everyone[0], "green")
        assert isinstance(again, AlreadyRecorded)
        assert (again.lane, again.seq, again.option) == (0, 1, "red")

        lanes, _ = await polls.tallies(poll)
        assert [t.counts for t in lanes] == [{"red": 3, "green": 0}] * 16

        ports = primaries(cluster)
        for lane in range(poll.lanes):
            owner = cluster.primary_of_key(keys.lane_state(poll.id, lane))
            assert client.primary_of(keys.lane_state(poll.id, lane)) == (HOST, owner)
            lane_keys = [
                keys.lane_state(poll.id, lane),
                keys.lane_counts(poll.id, lane),
                keys.lane_ledger(poll.id, lane),
            ]
            assert cluster.call(owner, "EXISTS", *lane_keys) == 3
            assert cluster.call(owner, "XLEN", keys.lane_ledger(poll.id, lane)) == 3
            slot = key_slot(lane_keys[0].encode())
            for port in ports:
                held = cluster.call(port, "CLUSTER", "COUNTKEYSINSLOT", slot)
                # the lane's 3 keys and its voters' index buckets, on the owner alone
                assert (held >= 4) if port == owner else (held == 0)
        meta_owner = cluster.primary_of_key(keys.poll_meta(poll.id))
        assert cluster.call(meta_owner, "HGET", keys.poll_meta(poll.id), "state") == "open"


# --- redirections --------------------------------------------------------------------------------


def _wrong_port(cluster: LocalCluster, key: str) -> int:
    right = cluster.primary_of_key(key)
    return next(p for p in primaries(cluster) if p != right)


async def test_moved_is_followed_and_corrects_the_slot_map(cluster: LocalCluster) -> None:
    """A slot map that sends a key to the wrong primary: the command still succeeds (MOVED is
    followed), the slot is corrected at once, and the scheduled refresh corrects the rest."""
    async with cluster_client(cluster) as client:
        key = key_on(cluster, primaries(cluster)[0])
        right = cluster.primary_of_key(key)
        wrong = client._node_at((HOST, _wrong_port(cluster, key)))
        slot = key_slot(key.encode())
        # Every slot of the key's primary points at the wrong node.
        stale = [s for s in range(SLOTS) if client._owner[s] is client._owner[slot]]
        for s in stale:
            client._owner[s] = wrong

        assert await client.execute("SET", key, "moved") == b"OK"
        assert client.primary_of(key) == (HOST, right)
        assert cluster.call(right, "GET", key) == "moved"

        # The refresh MOVED scheduled puts every other slot back too.
        async def all_fixed() -> None:
            assert all(client._owner[s] is not wrong for s in stale)

        await eventually(all_fixed, timeout_s=2.0)

        # In a pipeline and for a durable write too.
        client._owner[slot] = wrong
        replies = await client.pipeline([("GET", key), ("INCR", f"{key}:n"), ("GET", key)])
        assert replies[0] == replies[2] == b"moved"
        client._owner[slot] = wrong
        client.durability = WaitAof(1, 1000)
        assert await client.durable(("SET", key, "durably")) == b"OK"
        assert client.primary_of(key) == (HOST, right)


async def test_ask_is_followed_during_a_slot_migration(cluster: LocalCluster) -> None:
    """A slot MIGRATING from its primary to another: a key not (or no longer) on the source is
    served by the target after ASKING, and the slot map is left alone (the slot still belongs
    to the source until the migration ends)."""
    async with cluster_client(cluster) as client:
        source = primaries(cluster)[0]
        target = next(p for p in primaries(cluster) if p != source)
        ids = {n.port: n.node_id for n in cluster.topology()}
        key = key_on(cluster, source, prefix="ask")
        slot = key_slot(key.encode())
        cluster.call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        cluster.call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        try:
            assert await client.execute("SET", key, "asked") == b"OK"
            assert await client.execute("GET", key) == b"asked"
            assert client.primary_of(key) == (HOST, source)
            assert cluster.call(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            with cluster.connect(target) as conn:
                conn.call("ASKING")
                assert conn.call("GET", key) == "asked"
            assert await client.execute("DEL", key) == 1
        finally:
            cluster.call(source, "CLUSTER", "SETSLOT", slot, "STABLE")
            cluster.call(target, "CLUSTER", "SETSLOT", slot, "STABLE")
        assert await client.execute("GET", key) is None


# --- durability ----------------------------------------------------------------------------------


async def test_durable_writes_are_confirmed_by_the_replica_quickly(cluster: LocalCluster) -> None:
    """WAIT then WAITAOF in the same write: each confirmation takes about a millisecond, not the
    ~1 s a lone WAITAOF 1 1 took (a correctness-of-design check, not a benchmark)."""
    async with cluster_client(cluster) as client:
        client.durability = WaitAof(1, 1000)
        polls = ValkeyPolls(client)
        box = ValkeyBallotBox(client)
        poll = await _open(polls, _poll_over_every_primary(cluster))
        loop = asyncio.get_running_loop()
        took = []
        for _ in range(20):
            started = loop.time()
            outcome = await box.cast(poll, secrets.token_bytes(16), "green")
            took.append(loop.time() - started)
            assert isinstance(outcome, Recorded)
        assert statistics.median(took) < 0.2, took
        # A concurrent batch: every primary confirms its own share.
        started = loop.time()
        batch = await asyncio.gather(
            *(box.cast(poll, secrets.token_bytes(16), "red") for _ in range(300))
        )
        assert all(isinstance(o, Recorded) for o in batch)
        assert loop.time() - started < 1.0
        for port in primaries(cluster):
            (replica,) = cluster.replicas_of(port)
            replication = cluster.call(replica, "INFO", "replication")
            assert "master_link_status:up" in replication


async def test_durable_writes_fail_closed_while_the_replica_is_stopped(
    cluster: LocalCluster,
) -> None:
    """SIGSTOP one primary's replica: durable writes to that primary raise StoreUnavailable
    within the WAITAOF timeout; the other primaries' writes are still confirmed."""
    async with cluster_client(cluster) as client:
        client.durability = WaitAof(1, 1000)
        stopped_shard, other_shard = primaries(cluster)[:2]
        (replica,) = cluster.replicas_of(stopped_shard)
        key = key_on(cluster, stopped_shard)
        other = key_on(cluster, other_shard)
        assert await client.durable(("SET", key, "before")) == b"OK"
        loop = asyncio.get_running_loop()
        cluster.kill(replica, signal.SIGSTOP)
        try:
            started = loop.time()
            with pytest.raises(StoreUnavailable, match="durability not confirmed"):
                await client.durable(("SET", key, "unconfirmed"))
            assert 0.9 < loop.time() - started < 2.0
            started = loop.time()
            assert await client.durable(("SET", other, "confirmed")) == b"OK"
            assert loop.time() - started < 0.5
        finally:
            cluster.kill(replica, signal.SIGCONT)
        cluster.wait_healthy(timeout_s=FAILOVER_S, replicas_in_sync=True)
        assert await client.durable(("SET", key, "after")) == b"OK"
        assert cluster.call(stopped_shard, "GET", key) == "after"


# --- failover --------------------------------------------------------------------------------


async def test_a_killed_primary_fails_its_slots_until_the_replica_takes_over(
    cluster: LocalCluster,
) -> None:
    """SIGKILL a primary: votes on its lanes fail fast with StoreUnavailable (never hanging past
    the client's timeouts) while the other primaries keep taking votes; once its replica is
    promoted, votes succeed there (the client loads Tally's functions on the promoted node, which
    had none), and a vote confirmed before the kill is found again."""
    async with cluster_client(cluster) as client:
        client.durability = WaitAof(1, 1000)
        polls = ValkeyPolls(client)
        box = ValkeyBallotBox(client)
        poll = await _open(polls, _poll_over_every_primary(cluster))
        victim = cluster.primary_of_key(keys.lane_state(poll.id, 0))
        victim_lanes = [
            n
            for n in range(poll.lanes)
            if cluster.primary_of_key(keys.lane_state(poll.id, n)) == victim
        ]
        voters = _voters_by_lane(poll, per_lane=6)
        on_victim = [v for n in victim_lanes for v in voters[n]]
        elsewhere = [v for n in range(poll.lanes) if n not in victim_lanes for v in voters[n]]
        first_voter = on_victim.pop()
        confirmed = await box.cast(poll, first_voter, "red")
        assert isinstance(confirmed, Recorded)

        # The promoted replica must get Tally's functions from the client, not by replication.
        cluster.call(victim, "FUNCTION", "DELETE", LIBRARY_NAME)
        assert cluster.call(victim, "WAIT", 1, 2000) == 1
        client.durability = None  # no replica to confirm until the killed node rejoins
        loop = asyncio.get_running_loop()
        with failed_over(cluster, victim) as heir:
            assert cluster.call(heir, "FUNCTION", "LIST") == []
            failures: list[str] = []
            served_elsewhere = 0
            deadline = loop.time() + FAILOVER_S
            while True:
                assert loop.time() < deadline, failures[-3:]
                started = loop.time()
                try:
                    outcome = await box.cast(poll, on_victim[-1], "green")
                except StoreUnavailable as exc:
                    failures.append(str(exc))
                    assert loop.time() - started < CONNECT_TIMEOUT_S + COMMAND_TIMEOUT_S
                    if served_elsewhere < len(elsewhere):
                        other = await box.cast(poll, elsewhere[served_elsewhere], "red")
                        assert isinstance(other, Recorded)
                        served_elsewhere += 1
                    await asyncio.sleep(0.05)
                    continue
                break
            assert isinstance(outcome, Recorded)
            assert failures  # the kill was seen
            assert served_elsewhere > 0  # and only the victim's slots failed
            assert promoted(cluster, heir)
            for lane in victim_lanes:
                assert client.primary_of(keys.lane_state(poll.id, lane)) == (HOST, heir)
            assert cluster.call(heir, "FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)
            assert (HOST, victim) not in [s.primary for s in client.shards]

            again = await box.cast(poll, first_voter, "red")
            assert isinstance(again, AlreadyRecorded)
            assert (again.lane, again.seq) == (confirmed.lane, confirmed.seq)
            for voter in on_victim[:-1]:
                assert isinstance(await box.cast(poll, voter, "red"), Recorded)

        # The killed node is back as the heir's replica: votes are confirmed there again.
        client.durability = WaitAof(1, 1000)
        assert isinstance(await box.cast(poll, on_victim[-1], "green"), AlreadyRecorded)
        late = _voters_by_lane(poll, 1)[victim_lanes[0]][0]
        assert isinstance(await box.cast(poll, late, "green"), Recorded)
        lanes, _ = await polls.tallies(poll)
        assert sum(sum(t.counts.values()) for t in lanes) == len(on_victim) + served_elsewhere + 2


async def test_connect_fails_with_unavailable_when_nothing_answers() -> None:
    """Seeds that do not answer: ClusterTopologyError (a StoreUnavailable) within the timeouts."""
    client = ValkeyCluster(
        ClusterSeeds.from_url(f"valkey+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"),
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ClusterTopologyError, match="no cluster node answered"):
            await client.connect()
        with pytest.raises(StoreUnavailable):
            await client.execute("GET", "x")
    finally:
        await client.close()
    assert loop.time() - started < 2 * CONNECT_TIMEOUT_S
