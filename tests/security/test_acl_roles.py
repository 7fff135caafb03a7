"""Each role's Valkey ACL user (tally.store.acl) on a real valkey-server: the role's own work
passes, and every command outside its table is refused by ACL: raw writes on keys the role does
not write, deletes and trims it never needs, FUNCTION, CONFIG, ACL, FLUSHALL, scripts, and the
functions of other roles. A store of the test's own (an EmbeddedValkey, which starts exactly as
`tally serve`'s): a command wrongly allowed could wipe it.

The acceptance "votes stuffed through the vote function with the gateway's ACL user are refused
by ACL", as strong as Valkey's ACL allows it (docs/valkey-acl.md): no role but the gateway (and
the admin) may call tally_vote; the gateway may, since voting is its job, and ACL cannot tell a
stuffed call from a real one (an audit refuses it: no admission signature). What ACL does refuse
the gateway: deleting or trimming any ledger or admin entry, writing any key outside its
functions' keys, calling another role's function.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archive_rig import archiver_of, make_signer, service_of
from tally.aggregator import Aggregator
from tally.archive.logs import LedgerFiles
from tally.domain.polls import OptionSpec, PollState
from tally.domain.votes import Accepted
from tally.ports import ReplyError
from tally.service import NewPoll, Voter
from tally.store import acl, keys
from tally.store.challenges import ValkeySpentChallenges
from tally.store.embedded import EmbeddedValkey
from tally.store.library import ensure_functions, functions_problem
from tally.store.polls import ValkeyPolls
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.ratelimits import ValkeyRateLimits
from tally.store.resp import Valkey
from tally.store.snapshots import ValkeySnapshots

pytestmark = pytest.mark.single_node(
    reason="its own valkey-server, where a wrongly allowed FLUSHALL harms no other test"
)

P = "p1"  # a poll id: every key below is one of that poll's (or lane 0's)
LANE, COUNTS, LEDGER = keys.lane_state(P, 0), keys.lane_counts(P, 0), keys.lane_ledger(P, 0)
HELD, DECIDED, VOTERS = keys.lane_held(P, 0), keys.lane_decided(P, 0), keys.lane_voters(P, 0, 1)
META, ADMIN_LOG = keys.poll_meta(P), keys.poll_admin(P)
SNAPSHOT, AGG_LEASE = keys.poll_snapshot(P), keys.poll_lease(P)
ARCH_LEASE, REVIEWED = keys.poll_archiver_lease(P), keys.poll_reviewed(P)
INTEGRITY = "tally:poll:{p1}:integrity"

# Refused to every role but the admin: the store's administration and every way to destroy data.
EVERY_ROLE = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("FUNCTION", "DELETE", "tally"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "LOAD", "REPLACE", "#!lua name=tally\n"),
    ("FUNCTION", "DUMP"),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "appendfsync", "no"),
    ("CONFIG", "REWRITE"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "tally-gateway", "+@all"),
    ("ACL", "WHOAMI"),
    ("SCRIPT", "FLUSH"),
    ("EVAL", "return redis.call('FLUSHALL')", 0),
    ("EVAL_RO", "return 1", 0),
    ("DEBUG", "SLEEP", 0),
    ("SHUTDOWN", "NOSAVE"),
    ("BGREWRITEAOF",),
    ("SAVE",),
    ("REPLICAOF", "127.0.0.1", 1),
    ("MONITOR",),
    ("KEYS", "*"),
    ("SCAN", 0),
    ("DEL", LEDGER),
    ("UNLINK", COUNTS),
    ("XDEL", LEDGER, "1-0"),
    ("XDEL", ADMIN_LOG, "1-0"),
    ("RENAME", LEDGER, "tally:x"),
    ("EXPIRE", LANE, 1),
    ("RESTORE", "tally:x", 0, b"\x00"),
    ("MIGRATE", "127.0.0.1", 1, LEDGER, 0, 100),
    ("DUMP", LEDGER),
    ("HDEL", COUNTS, "A"),
    ("SET", "tally:anything", "x"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("CLIENT", "LIST"),
    ("PUBLISH", "x", "y"),
    ("SUBSCRIBE", "x"),
    ("INFO",),
    ("FCALL", "tally_lease", 1, "tally:poll:{p1}:other", "x", 1000),
]

FORBIDDEN: dict[str, list[tuple[Any, ...]]] = {
    acl.GATEWAY: [
        # The aggregator's and the archiver's functions and keys.
        ("FCALL", "tally_snapshot", 2, SNAPSHOT, AGG_LEASE, "me", 1, "{}", "tally:live:{p1}"),
        ("FCALL", "tally_lease", 1, AGG_LEASE, "me", 1000),
        ("FCALL", "tally_lease", 1, ARCH_LEASE, "me", 1000),
        ("FCALL", "tally_release", 1, AGG_LEASE, "me"),
        ("FCALL", "tally_lane_counters", 2, LANE, COUNTS),
        ("SET", AGG_LEASE, "me"),
        ("SET", ARCH_LEASE, "me"),
        ("HSET", SNAPSHOT, "seq", 99),
        ("HSETNX", INTEGRITY, "x", "{}"),
        ("SPUBLISH", keys.live_channel(P), "{}"),
        # Trims and deletes: an entry once admitted stays until archived.
        ("XTRIM", LEDGER, "MINID", "99-0"),
        ("XTRIM", ADMIN_LOG, "MAXLEN", 0),
        # Reads of queues it never reads.
        ("XRANGE", ADMIN_LOG, "-", "+"),
        ("XREAD", "STREAMS", LEDGER, "0"),
        # Writes through other commands than its functions': the right key, the wrong command.
        ("HINCRBY", HELD, "1", 1),
        ("HINCRBY", VOTERS, "x", 1),
        ("XADD", COUNTS, "*", "o", "A"),
        ("HSET", SNAPSHOT, "doc", "{}"),
        ("ZREM", keys.POLL_INDEX, P),
        ("DEL", keys.rate_voter("v")),
        ("GETDEL", keys.spent_challenge("s")),
        ("SETRANGE", LANE, 0, "x"),
        ("HSET", "tally:elsewhere", "a", "b"),
    ],
    acl.AGGREGATOR: [
        # No vote, poll creation, review or rate-limit function: none are its work.
        ("FCALL", "tally_vote", 4, LANE, COUNTS, LEDGER, VOTERS, b"p" * 16, "f", "A"),
        ("FCALL", "tally_lane_create", 2, LANE, COUNTS, "", "A"),
        ("FCALL", "tally_poll_create", 2, META, ADMIN_LOG, "{}", "draft", 1, ""),
        ("FCALL", "tally_review", 5, LANE, COUNTS, LEDGER, HELD, DECIDED, "released", 1),
        ("FCALL", "tally_poll_review", 3, META, ADMIN_LOG, REVIEWED, "a", "released", 0, 1),
        ("FCALL", "tally_gcra", 1, keys.rate_voter("v"), "1000 1 1"),
        ("FCALL", "tally_lane_counters", 2, LANE, COUNTS),
        ("FCALL", "tally_lease", 1, ARCH_LEASE, "me", 1000),
        # No raw write on counters, ledger, voters, held votes, polls index, challenges.
        ("HINCRBY", COUNTS, "A", 1),
        ("HSET", COUNTS, "A", 99),
        ("XADD", LEDGER, "*", "o", "A"),
        ("XTRIM", LEDGER, "MINID", "99-0"),
        ("HSET", VOTERS, "x", 1),
        ("ZADD", keys.POLL_INDEX, 1, "forged"),
        ("SET", keys.spent_challenge("s"), 1),
        ("SET", ARCH_LEASE, "me"),
        ("HSETNX", INTEGRITY, "x", "{}"),
        # Nor reads of what it never reads: votes, voters.
        ("XRANGE", LEDGER, "-", "+"),
        ("HGET", VOTERS, "x"),
        ("SSUBSCRIBE", keys.live_channel(P)),
    ],
    acl.ARCHIVER: [
        # No vote, poll, review, snapshot or lane-state function.
        ("FCALL", "tally_vote", 4, LANE, COUNTS, LEDGER, VOTERS, b"p" * 16, "f", "A"),
        ("FCALL", "tally_poll_create", 2, META, ADMIN_LOG, "{}", "draft", 1, ""),
        ("FCALL", "tally_move", 1, LANE, "closed", "open"),
        ("FCALL", "tally_poll_move", 2, META, ADMIN_LOG, "closed", "", "open"),
        ("FCALL", "tally_review", 5, LANE, COUNTS, LEDGER, HELD, DECIDED, "released", 1),
        ("FCALL", "tally_snapshot", 2, SNAPSHOT, AGG_LEASE, "me", 1, "{}", "tally:live:{p1}"),
        ("FCALL", "tally_gcra", 1, keys.rate_voter("v"), "1000 1 1"),
        ("FCALL", "tally_lease", 1, AGG_LEASE, "me", 1000),
        # No write on the counters, the lanes, the poll, the streams (but trimming them).
        ("HINCRBY", COUNTS, "A", 1),
        ("HSET", LANE, "state", "closed"),
        ("HSET", META, "state", "closed"),
        ("XADD", LEDGER, "*", "o", "A"),
        ("XADD", ADMIN_LOG, "*", "a", "closed"),
        ("XDEL", LEDGER, "1-0"),
        ("HSET", VOTERS, "x", 1),
        ("HSET", SNAPSHOT, "seq", 99),
        ("SET", AGG_LEASE, "me"),
        ("ZADD", keys.POLL_INDEX, 1, "forged"),
        ("HGETALL", HELD),
        ("HGET", VOTERS, "x"),
        ("SPUBLISH", keys.live_channel(P), "{}"),
    ],
}


def refused(reply: Any) -> bool:
    """An ACL refusal: of the command or a key (NOPERM), or of a command a function ran."""
    text = str(reply)
    return isinstance(reply, ReplyError) and (
        text.startswith("NOPERM") or "ACL failure in script" in text
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("acl"))
    asyncio.run(valkey.start())
    yield valkey
    asyncio.run(valkey.stop())


async def connected(server: EmbeddedValkey, role: str) -> Valkey:
    client = Valkey(server.endpoint_for(role), on_connect=ensure_functions)
    await client.connect()
    return client


@pytest.mark.parametrize("role", [acl.GATEWAY, acl.AGGREGATOR, acl.ARCHIVER])
async def test_every_forbidden_command_is_refused_by_acl(server: EmbeddedValkey, role: str) -> None:
    """The role's user is refused each command of its list and of EVERY_ROLE, by ACL (not by a
    wrong argument), and the store is unchanged afterwards."""
    admin = await connected(server, acl.ADMIN)
    client = await connected(server, role)
    try:
        await admin.execute("HSET", COUNTS, "A", 5)
        await admin.execute("XADD", LEDGER, "1-0", "o", "A")
        before = await admin.execute("DBSIZE")
        commands = FORBIDDEN[role] + EVERY_ROLE
        # ACL's own verdict on each (ACL DRYRUN runs nothing) ...
        verdicts = await asyncio.gather(
            *(admin.submit(("ACL", "DRYRUN", acl.username(role), *c)) for c in commands)
        )
        assert [(c, v) for c, v in zip(commands, verdicts, strict=True) if v == b"OK"] == []
        # ... and each sent for real: refused by ACL (DEBUG is refused before ACL is asked).
        replies = await asyncio.gather(*(client.submit(c) for c in commands))
        allowed = [
            (c, r)
            for c, r in zip(commands, replies, strict=True)
            if not refused(r) and not str(r).startswith("ERR DEBUG command not allowed")
        ]
        assert allowed == []
        assert await admin.execute("DBSIZE") == before
        assert await admin.execute("HGET", COUNTS, "A") == b"5"
        assert await admin.execute("XLEN", LEDGER) == 1
        assert await functions_problem(admin) is None  # FUNCTION DELETE/FLUSH were refused
    finally:
        await client.close()
        await admin.execute("DEL", COUNTS, LEDGER)
        await admin.close()


async def test_only_the_gateway_and_the_admin_may_call_the_vote_function(
    server: EmbeddedValkey,
) -> None:
    """Every role but the gateway is refused FCALL tally_vote with a made-up pseudonym before
    the function runs; the gateway's is counted (voting is its job: the audit's admission
    signature check is what refuses a stuffed one)."""
    admin = await connected(server, acl.ADMIN)
    await admin.execute("FCALL", "tally_lane_create", 2, LANE, COUNTS, "", "A")
    await admin.execute("FCALL", "tally_move", 1, LANE, "open", "draft")
    stuffing = ("FCALL", "tally_vote", 4, LANE, COUNTS, LEDGER, VOTERS, b"s" * 16, "f", "A")
    try:
        for role in (acl.AGGREGATOR, acl.ARCHIVER):
            client = await connected(server, role)
            try:
                assert refused(await client.submit(stuffing)), role
            finally:
                await client.close()
        assert await admin.execute("HGET", COUNTS, "A") == b"0"
        gateway = await connected(server, acl.GATEWAY)
        try:
            assert (await gateway.execute(*stuffing))[0] == b"accepted"
            # ... and it can neither take it back nor hide it: no XDEL, XTRIM, DEL, HDEL.
            for undo in (
                ("XDEL", LEDGER, "1-0"),
                ("XTRIM", LEDGER, "MAXLEN", 0),
                ("DEL", LEDGER),
                ("HDEL", VOTERS, "f"),
            ):
                assert refused(await gateway.submit(undo)), undo
        finally:
            await gateway.close()
        assert await admin.execute("XLEN", LEDGER) == 1
    finally:
        await admin.execute("DEL", LANE, COUNTS, LEDGER, VOTERS)
        await admin.close()


async def test_the_default_user_is_off(server: EmbeddedValkey) -> None:
    """No password alone opens the store: AUTH <password> (the default user) is refused, even
    with the admin's password, and an unauthenticated command too."""
    client = Valkey(server.endpoint_for(acl.ADMIN))
    await client.connect()
    try:
        reply = await client.submit(("AUTH", server.passwords[acl.ADMIN]))
        assert isinstance(reply, ReplyError)
    finally:
        await client.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"PING\r\n")
        assert (await reader.readline()).startswith(b"-NOAUTH")
    finally:
        writer.close()


@pytest.fixture
async def roles(server: EmbeddedValkey) -> AsyncIterator[dict[str, Valkey]]:
    clients = {role: await connected(server, role) for role in acl.ROLES}
    yield clients
    for client in clients.values():
        await client.close()


async def test_each_role_does_its_work_as_its_own_user(
    roles: dict[str, Valkey], server: EmbeddedValkey, tmp_path: Path
) -> None:
    """The gateway creates, opens, votes, spends a challenge, takes rate limits and hears the
    live channel; the aggregator publishes snapshots under its lease and closes the poll; the
    archiver checkpoints the ledger, trims it and releases its lease: each as its own user."""
    gateway, aggregator, archiver = roles[acl.GATEWAY], roles[acl.AGGREGATOR], roles[acl.ARCHIVER]
    files = LedgerFiles(tmp_path / "ledger")
    service = service_of(gateway, files)
    options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
    poll = await service.create_poll(NewPoll("ACL", options, lanes=2), actor="alice")
    poll = await service.open_poll(poll.id, actor="alice")
    outcomes = await asyncio.gather(
        *(service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 2]) for i in range(10))
    )
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert await ValkeySpentChallenges(gateway).spend("acl-salt", 60_000)
    assert not await ValkeySpentChallenges(gateway).spend("acl-salt", 60_000)
    assert await ValkeyRateLimits(gateway, one_call=True).take(poll, "v", "a", "s") is None
    assert await functions_problem(gateway) is None

    heard: list[bytes] = []
    feed = ValkeyLiveFeed(server.endpoint_for(acl.GATEWAY))
    feed.start(lambda _poll, doc: heard.append(doc), lambda _polls: None)
    await feed.subscribe(poll.id)
    aggregator_loop = Aggregator(
        ValkeyPolls(aggregator), ValkeySnapshots(aggregator), owner="agg", tick_ms=50,
        lease_ttl_ms=1000,
    )  # fmt: skip
    await aggregator_loop.tick()
    await aggregator_loop.tick()
    snapshot = await ValkeySnapshots(gateway).latest(poll.id)
    assert snapshot is not None
    assert snapshot.total == 10
    await aggregator_loop.stop()
    closed = await ValkeyPolls(aggregator).move(poll, PollState.CLOSED, actor="deadline")
    assert closed is PollState.OPEN

    archiving = archiver_of(archiver, files, make_signer(), owner="arch")
    await archiving.cycle()
    await archiving.cycle()
    await archiving.stop()
    assert await roles[acl.ADMIN].execute("XLEN", keys.lane_ledger(poll.id, 0)) == 0  # trimmed
    assert heard  # the gateway's user heard the snapshots the aggregator's published
    await feed.close()
