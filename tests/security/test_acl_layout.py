"""The role users' selectors are laid out for speed (tally.store.acl.role_rules: the hot path's
selectors first, split by command, like ones merged), and that layout must grant exactly what the
plain one-selector-per-function-and-family form grants, no more and no less. Proved on a real
valkey-server with ACL DRYRUN (ACL's verdict, nothing run): for each role, a user with the plain
rules beside the role's own, asked about every command the table names and the usual forbidden
ones, on a key of every family and foreign keys, FCALL of every function on its own keys and with
each key swapped for any other, multi-key commands on every pair of keys, and channels."""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tally.ports import ReplyError
from tally.store import acl, keys
from tally.store.embedded import EmbeddedValkey
from tally.store.resp import Valkey

pytestmark = pytest.mark.single_node(reason="its own valkey-server with users of its own")

P = "p1"
# A key of every family (store/keys.py's names), and keys of no family.
KEYS = sorted(
    {
        keys.POLL_INDEX,
        "tally:admission:keys",
        keys.poll_meta(P),
        keys.poll_admin(P),
        keys.poll_reviewed(P),
        keys.poll_integrity(P),
        keys.poll_turnout(P),
        keys.poll_admission(P),
        keys.poll_archiver_lease(P),
        keys.poll_snapshot(P),
        keys.poll_lease(P),
        keys.lane_state(P, 3),
        keys.lane_counts(P, 3),
        keys.lane_ledger(P, 3),
        keys.lane_held(P, 3),
        keys.lane_decided(P, 3),
        keys.lane_voters(P, 3, 31),
        keys.lane_rate(P, 3),
        keys.spent_challenge("s"),
        keys.rate_subnet("s"),
        keys.rate_address("s", "a"),
        keys.rate_voter("v"),
        "tally:poll:{p1}:other",
        "tally:{p1.3}:other",
        "tally:elsewhere",
        "other",
    }
)
CHANNELS = (keys.live_channel(P), "tally:live", "other")

# One key's commands, with valid arguments: every command the table grants, and others.
ONE_KEY: dict[str, Callable[[str], tuple[Any, ...]]] = {
    "GET": lambda k: ("GET", k),
    "SET": lambda k: ("SET", k, "v", "NX", "PX", 1000),
    "GETDEL": lambda k: ("GETDEL", k),
    "HGET": lambda k: ("HGET", k, "f"),
    "HMGET": lambda k: ("HMGET", k, "f", "g"),
    "HGETALL": lambda k: ("HGETALL", k),
    "HEXISTS": lambda k: ("HEXISTS", k, "f"),
    "HKEYS": lambda k: ("HKEYS", k),
    "HSET": lambda k: ("HSET", k, "f", "v"),
    "HSETNX": lambda k: ("HSETNX", k, "f", "v"),
    "HINCRBY": lambda k: ("HINCRBY", k, "f", 1),
    "HINCRBYFLOAT": lambda k: ("HINCRBYFLOAT", k, "f", 1),
    "HDEL": lambda k: ("HDEL", k, "f"),
    "XADD": lambda k: ("XADD", k, "*", "f", "v"),
    "XRANGE": lambda k: ("XRANGE", k, "-", "+"),
    "XTRIM": lambda k: ("XTRIM", k, "MINID", "9-0"),
    "XDEL": lambda k: ("XDEL", k, "1-0"),
    "XLEN": lambda k: ("XLEN", k),
    "ZADD": lambda k: ("ZADD", k, 1, "m"),
    "ZRANGE": lambda k: ("ZRANGE", k, 0, -1),
    "ZREM": lambda k: ("ZREM", k, "m"),
    "EXPIRE": lambda k: ("EXPIRE", k, 1),
    "DUMP": lambda k: ("DUMP", k),
    "TYPE": lambda k: ("TYPE", k),
}
# Several keys' commands, asked on every pair.
MANY_KEYS: dict[str, Callable[[str, str], tuple[Any, ...]]] = {
    "EXISTS": lambda a, b: ("EXISTS", a, b),
    "DEL": lambda a, b: ("DEL", a, b),
    "UNLINK": lambda a, b: ("UNLINK", a, b),
    "RENAME": lambda a, b: ("RENAME", a, b),
    "XREAD": lambda a, b: ("XREAD", "STREAMS", a, b, "0", "0"),
}
KEYLESS: list[tuple[Any, ...]] = [
    ("PING",),
    ("TIME",),
    ("WAIT", 0, 0),
    ("WAITAOF", 0, 0, 0),
    ("CLIENT", "SETNAME", "x"),
    ("CLIENT", "LIST"),
    ("FUNCTION", "LIST"),
    ("FUNCTION", "DELETE", "tally"),
    ("CLUSTER", "SHARDS"),
    ("ASKING",),
    ("FLUSHALL",),
    ("CONFIG", "GET", "appendfsync"),
    ("ACL", "WHOAMI"),
    ("INFO",),
    ("KEYS", "*"),
    ("EVAL", "return 1", 0),
]


def fcalls(name: str, declared: Sequence[str]) -> list[tuple[Any, ...]]:
    """FCALL `name` on keys of its own families, on each prefix of them (trailing keys are
    optional), and with each key swapped for every other key; and with no key."""
    own = [next(k for k in KEYS if acl_match(pattern, k)) for pattern in declared]
    tried = [own[:n] for n in range(len(own) + 1)]
    tried += [[*own[:i], k, *own[i + 1 :]] for i in range(len(own)) for k in KEYS]
    tried += [[k] for k in KEYS]  # the lease functions: any one key
    return [("FCALL", name, len(ks), *ks, "a", "b") for ks in tried]


def acl_match(pattern: str, key: str) -> bool:
    """Valkey's glob as the table's patterns use it (`*` only; `{` and `}` are literal)."""
    return fnmatch.fnmatchcase(key, pattern)


def questions() -> list[tuple[Any, ...]]:
    asked: list[tuple[Any, ...]] = list(KEYLESS)
    asked += [make(k) for make in ONE_KEY.values() for k in KEYS]
    asked += [make(a, b) for make in MANY_KEYS.values() for a, b in itertools.product(KEYS, KEYS)]
    for function in acl.FUNCTIONS.values():
        asked += fcalls(function.name, function.keys)
    for channel in CHANNELS:
        asked += [
            ("SSUBSCRIBE", channel),
            ("SUNSUBSCRIBE", channel),
            ("SPUBLISH", channel, "m"),
            ("PUBLISH", channel, "m"),
            ("SUBSCRIBE", channel),
        ]
    return asked


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("acl-layout"))
    asyncio.run(valkey.start())
    yield valkey
    asyncio.run(valkey.stop())


@pytest.mark.parametrize("role", [acl.GATEWAY, acl.AGGREGATOR, acl.ARCHIVER])
async def test_the_laid_out_rules_grant_exactly_the_plain_ones(
    server: EmbeddedValkey, role: str
) -> None:
    laid_out, plain = (
        acl.role_rules(acl.ROLES[role]),
        acl.role_rules(acl.ROLES[role], hot_first=False),
    )
    if acl.ROLES[role].hot:  # else the layout may be the plain one
        assert laid_out != plain
    admin = Valkey(server.endpoint_for(acl.ADMIN))
    await admin.connect()
    user = f"tally-plain-{role}"
    try:
        await admin.execute("ACL", "SETUSER", user, "reset", "on", "nopass", *plain)
        asked = questions()
        own, reference = await asyncio.gather(
            asyncio.gather(
                *(admin.submit(("ACL", "DRYRUN", acl.username(role), *q)) for q in asked)
            ),
            asyncio.gather(*(admin.submit(("ACL", "DRYRUN", user, *q)) for q in asked)),
        )
        # Every question is one ACL can answer (no arity or unknown-command error) ...
        for verdicts in (own, reference):
            errors = [
                (q, r) for q, r in zip(asked, verdicts, strict=True) if isinstance(r, ReplyError)
            ]
            assert errors == []
        # ... the same verdict from both ...
        differ = [
            (q, a, b)
            for q, a, b in zip(asked, own, reference, strict=True)
            if (a == b"OK") != (b == b"OK")
        ]
        assert differ == []
        # ... and the grid reaches what the role may do: each command its table grants was
        # allowed somewhere, and each function it calls.
        allowed = {str(q[0]).upper() for q, a in zip(asked, own, strict=True) if a == b"OK"}
        called = {
            str(q[1]) for q, a in zip(asked, own, strict=True) if a == b"OK" and q[0] == "FCALL"
        }
        granted = {c for used in acl.ROLES[role].commands.values() for c in used}
        assert granted <= allowed
        assert set(acl.ROLES[role].functions) <= called
    finally:
        await admin.execute("ACL", "DELUSER", user)
        await admin.close()
