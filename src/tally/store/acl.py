"""Valkey ACL users, one per role: the one table of what each role may send, and its rendering as
`ACL SETUSER` arguments, as `user` lines of a config or ACL file.

Why per role: whoever steals one process's Valkey password (root reads it from the process's
memory) gets that role's rights only. A role may run the functions it calls (FCALL with a
first-argument rule, `+fcall|tally_vote`), the raw commands its store code sends, on the key
families it touches, and nothing else: no DEL/UNLINK/XDEL/FLUSH*/FUNCTION/CONFIG/ACL/SCRIPT/EVAL/
DEBUG/SHUTDOWN/MIGRATE/RESTORE..., and no write on a key its code does not write.

What ACL cannot do: Valkey checks each command a function runs against the *caller's* ACL (Valkey
9.1), so a role that calls a function must also be granted that function's commands on its
keys, and may then send them raw. The gateway, for one, may HINCRBY a lane's counters and XADD to
its ledger stream because tally_vote does; wrapping a raw write in a function therefore shrinks
nothing. Those rights are what the other defences cover: the archiver's recount of the ledger
raises an integrity alarm on a forged counter, and an audit refuses a vote without a gateway's
admission signature. docs/valkey-acl.md lists, role by role, what remains possible.

How a rule is rendered (Valkey 7+ selectors): the user's root permissions hold only its keyless
commands (PING, FUNCTION LIST...); then one selector per function it calls,
`(~<each KEYS[i] pattern> +fcall|<name>)` (FCALL declares its keys read-write, and a selector
checks every key of a command), and one selector per key family with every command the role
sends there raw or through a function, `(~<pattern> +hget +hset ...)`, or `(%R~<pattern> ...)`
when none of them writes. A command is allowed when the root or any one selector allows it.

Why the selectors come in the order they do: Valkey checks the root, then each selector in turn,
for every command, the commands a function runs included, until one allows it; every selector on
the way that allows the command but not its key costs a glob match of the key against each of its
patterns (`tally:{*}:lane` against `tally:{<poll>.3}:v:1f` walks the whole key). With one
selector per function and per family, the gateway's tally_vote (an FCALL and eight commands)
went through ~155 selectors and 34 glob matches per vote: +36 % of valkey-server's instructions
per vote over the admin (benchmarks/acl_cost.py --callgrind). So `role_rules` lays the same
rights out for speed: the role's `hot` functions first, each FCALL selector followed by a
selector per family it touches holding just the commands it runs there, in the order of its
`uses` (its common path's first); then the other functions, leases, and what is left of each
family. Selectors that grant the same commands on different families are merged where that is
exact (the commands take one key each: a selector allows a command only when every key of it
matches one of its patterns), and FCALL selectors on the same patterns likewise. Splitting a
family's commands over two selectors and merging like ones neither adds nor removes a right;
`role_rules(role, hot_first=False)` renders the plain one-selector-each form, and
tests/security/test_acl_layout.py proves the two allow exactly the same commands on a real
valkey-server (ACL DRYRUN over every command and key family).

How to extend (other changes add keys and functions):
- a new function: add a `Function` to FUNCTIONS with its KEYS patterns in order and the commands
  it runs on each (`uses`), then name it in each role that calls it (`Role.functions`);
- a new key family: add its pattern below (beside store/keys.py's table), and the raw commands a
  role sends there to that role's `commands`;
- a new command a role sends without a key (PING-like): that role's `keyless`.
WRITE_COMMANDS must name every command that writes (it decides `~` against `%R~`). The tests in
tests/security/test_acl*.py connect as each user, prove each role's work passes and every
command outside the table is refused; tests/security/test_acl_table.py checks that every command
tally.lua runs is in some function's `uses`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "ADMIN",
    "AGGREGATOR",
    "ARCHIVER",
    "FUNCTIONS",
    "GATEWAY",
    "REPLICATION",
    "REPLICATION_RULES",
    "ROLES",
    "Function",
    "Role",
    "acl_file",
    "replication_line",
    "role_rules",
    "setuser_args",
    "user_line",
    "username",
]

# --- key families (ACL glob patterns of store/keys.py's names) -----------------------------------
POLL_INDEX = "tally:polls"
POLL = "tally:poll:{*}"
ADMIN_LOG = "tally:poll:{*}:admin"
REVIEWED = "tally:poll:{*}:reviewed"
INTEGRITY = "tally:poll:{*}:integrity"
TURNOUT = "tally:poll:{*}:turnout"  # ballots per minute (store.turnout)
POLL_ADMISSION = "tally:poll:{*}:admission"  # admission keys already in the poll's admin log
ADMISSION_KEYS = "tally:admission:keys"  # the registry of gateway admission keys
ARCHIVER_LEASE = "tally:poll:{*}:archiver"
SNAPSHOT = "tally:poll:{*}:snapshot"
AGGREGATOR_LEASE = "tally:poll:{*}:aggregator"
LANE = "tally:{*}:lane"
COUNTS = "tally:{*}:counts"
LEDGER = "tally:{*}:ledger"
HELD = "tally:{*}:held"
DECIDED = "tally:{*}:decided"
VOTERS = "tally:{*}:v:*"
LANE_RATE = "tally:{*}:rl"
SPENT_CHALLENGE = "tally:pow:{*}"
POLL_JOIN_CODE = "tally:poll:{*}:join"  # the poll's join code
JOIN_CODE = "tally:join:{*}"  # the poll a join code leads to
RATE = "tally:rl:{*}"  # a subnet's or a voter's bucket
RATE_ADDRESS = "tally:rl:{*}:a:*"
# Sharded pub/sub channel of each poll's snapshots.
LIVE_CHANNEL = "tally:live:{*}"

# Every command the table names that writes a key: a selector whose commands include one grants
# read-write on its pattern (`~`), else read only (`%R~`).
WRITE_COMMANDS = frozenset(
    {"HSET", "HSETNX", "HINCRBY", "HDEL", "XADD", "XTRIM", "SET", "DEL", "ZADD"}
)

# The commands the table names that take exactly one key: selectors granting the same set of them
# on different families may be merged into one (a command is allowed by a selector only when
# every one of its keys matches; with one key, `(~A ~B +c)` allows just what `(~A +c) (~B +c)`
# do). EXISTS and DEL take several, so selectors naming them stay apart.
SINGLE_KEY_COMMANDS = frozenset(
    {
        *("GET", "SET", "HGET", "HMGET", "HGETALL", "HEXISTS", "HSET", "HSETNX", "HINCRBY"),
        *("HDEL", "XADD", "XRANGE", "XTRIM", "ZADD", "ZRANGE"),
    }
)


@dataclass(frozen=True, slots=True)
class Function:
    """One function of tally.lua: its KEYS patterns in order (trailing optional ones too) and the
    commands it runs on each key family (`uses`), besides keyless ones (TIME) and channels. For a
    function on a role's hot path, `uses` lists its families in the order the role's selectors
    check them (role_rules): its common path's first."""

    name: str
    keys: tuple[str, ...]
    uses: Mapping[str, tuple[str, ...]]
    keyless: tuple[str, ...] = ()
    channels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "tally_vote",
            (LANE, COUNTS, LEDGER, VOTERS, HELD, DECIDED),
            # The gateway's hot path: a vote's HGET and HSET on its voter bucket find their
            # selector first, HEXISTS and HINCRBY on the counts next, the lane's HMGET and HSET
            # after (that HSET the one glob miss left, on the voters' pattern); the held mode's
            # families last.
            {
                VOTERS: ("HGET", "HSET"),
                COUNTS: ("HEXISTS", "HINCRBY"),
                LANE: ("HMGET", "HSET", "HINCRBY"),
                LEDGER: ("XRANGE", "XADD"),
                HELD: ("HEXISTS", "HSET"),
                DECIDED: ("HGET",),
            },
            keyless=("TIME",),
        ),
        Function(
            "tally_lane_create", (LANE, COUNTS), {LANE: ("EXISTS", "HSET"), COUNTS: ("HSET",)}
        ),
        Function("tally_move", (LANE,), {LANE: ("HGET", "HSET")}, keyless=("TIME",)),
        Function(
            "tally_poll_create",
            (POLL, ADMIN_LOG, POLL_ADMISSION),
            {
                POLL: ("EXISTS", "HSET", "HINCRBY"),
                ADMIN_LOG: ("XADD",),
                POLL_ADMISSION: ("HGET", "HSET"),
            },
        ),
        # Admission keys registered or retired while a poll is open (store/admission_keys.py).
        Function(
            "tally_poll_admission_keys",
            (POLL, ADMIN_LOG, POLL_ADMISSION),
            {
                POLL: ("HGET", "HINCRBY"),
                ADMIN_LOG: ("XADD",),
                POLL_ADMISSION: ("HGET", "HSET"),
            },
            keyless=("TIME",),
        ),
        Function(
            "tally_poll_move",
            (POLL, ADMIN_LOG),
            {POLL: ("HGET", "HSET", "HINCRBY"), ADMIN_LOG: ("XADD",)},
            keyless=("TIME",),
        ),
        Function(
            "tally_review",
            (LANE, COUNTS, LEDGER, HELD, DECIDED),
            {
                LANE: ("EXISTS", "HINCRBY", "HSET"),
                COUNTS: ("HINCRBY",),
                LEDGER: ("XADD",),
                HELD: ("HGET", "HDEL"),
                DECIDED: ("HGET", "HSET"),
            },
            keyless=("TIME",),
        ),
        Function(
            "tally_poll_review",
            (POLL, ADMIN_LOG, REVIEWED),
            {
                POLL: ("EXISTS", "HINCRBY"),
                ADMIN_LOG: ("XADD",),
                REVIEWED: ("HGET", "HSET"),
            },
            keyless=("TIME",),
        ),
        Function(
            "tally_gcra",
            (RATE, RATE_ADDRESS, LANE_RATE),  # any of them, in any order
            {RATE: ("GET", "SET"), RATE_ADDRESS: ("GET", "SET"), LANE_RATE: ("GET", "SET")},
            keyless=("TIME",),
        ),
        # The leases: tally_lease/tally_release run on the lease key of whoever calls them; a
        # role is granted them on its own lease's pattern only (Role.leases).
        Function("tally_lease", (), {}),
        Function("tally_release", (), {}),
        Function(
            "tally_snapshot",
            (SNAPSHOT, AGGREGATOR_LEASE),
            {SNAPSHOT: ("HGET", "HSET"), AGGREGATOR_LEASE: ("GET",)},
            channels={LIVE_CHANNEL: ("SPUBLISH",)},
        ),
        Function("tally_lane_counters", (LANE, COUNTS), {LANE: ("HMGET",), COUNTS: ("HGETALL",)}),
        # A held vote's sealed evidence: kept by the gateway, deleted by the aggregator's
        # retention sweep, re-sealed by the admin tool (store/evidence.py).
        Function("tally_held_evidence", (HELD,), {HELD: ("HGET", "HSET")}),
    )
}

# What tally_lease and tally_release run on the lease key they are given.
LEASE_COMMANDS = ("GET", "SET", "DEL")

# Keyless commands every role sends: liveness on the pub/sub link, the functions check
# (store.library), the cluster router's topology read and its ASK redirects.
BASE_KEYLESS = ("PING", "FUNCTION|LIST", "CLUSTER|SHARDS", "ASKING")


@dataclass(frozen=True, slots=True)
class Role:
    """One role's Valkey user: the functions it calls, the raw commands its store code sends on
    each key family, the lease keys it takes, its channels and keyless commands."""

    name: str
    summary: str
    functions: tuple[str, ...] = ()
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    leases: tuple[str, ...] = ()
    channels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keyless: tuple[str, ...] = ()
    everything: bool = False  # the admin: every command, key and channel
    # The functions it calls on every request, hottest first: their selectors lead (role_rules).
    hot: tuple[str, ...] = ()


GATEWAY = "gateway"
AGGREGATOR = "aggregator"
ARCHIVER = "archiver"
ADMIN = "admin"

ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            GATEWAY,
            "votes, the REST API (poll create/open/close, reviews), rate limits, proof-of-work "
            "spends, the live side's subscriptions",
            functions=(
                "tally_vote",
                "tally_gcra",
                "tally_lane_create",
                "tally_poll_create",
                "tally_poll_admission_keys",  # a poll created while a key was registered
                "tally_move",
                "tally_poll_move",
                "tally_review",
                "tally_poll_review",
                "tally_held_evidence",
            ),
            commands={
                POLL_INDEX: ("ZADD", "ZRANGE"),  # claim a new poll's id; list polls
                ADMISSION_KEYS: ("HGETALL",),  # its own key registered? keys for a new poll
                POLL: ("HMGET", "HGET"),
                REVIEWED: ("HGETALL",),
                INTEGRITY: ("HGETALL",),
                SNAPSHOT: ("HGET",),
                AGGREGATOR_LEASE: ("GET",),
                LANE: ("HGET", "HMGET"),
                COUNTS: ("HGETALL",),
                HELD: ("HGETALL", "HMGET"),
                DECIDED: ("HMGET",),
                VOTERS: ("HEXISTS",),  # has this viewer voted? (result visibility, after-vote)
                TURNOUT: ("HGETALL",),  # turnout.csv
                SPENT_CHALLENGE: ("SET",),  # SET NX PX: a proof-of-work answer spent once
                # Join codes: SET NX (GET) to give one, GET to follow one (store.join_codes).
                POLL_JOIN_CODE: ("SET", "GET"),
                JOIN_CODE: ("SET", "GET"),
            },
            channels={LIVE_CHANNEL: ("SSUBSCRIBE", "SUNSUBSCRIBE")},
            # A batch of votes confirmed durable (store.resp.WaitAof); the live link's name.
            keyless=("WAIT", "WAITAOF", "CLIENT|SETNAME"),
            hot=("tally_vote", "tally_gcra"),  # every vote; every rate-limited request
        ),
        Role(
            AGGREGATOR,
            "lane counters into published snapshots (one per poll, by lease); the deadline sweep "
            "closes polls whose deadline passed; the evidence retention sweep",
            functions=("tally_snapshot", "tally_move", "tally_poll_move", "tally_held_evidence"),
            commands={
                POLL_INDEX: ("ZRANGE",),
                POLL: ("HMGET", "HGET"),
                SNAPSHOT: ("HGET",),
                AGGREGATOR_LEASE: ("GET",),
                LANE: ("HGET", "HMGET"),
                COUNTS: ("HGETALL",),
                HELD: ("HGETALL",),  # the evidence retention sweep reads the held votes
            },
            leases=(AGGREGATOR_LEASE,),
        ),
        Role(
            ARCHIVER,
            "each poll's queues into the signed ledger files; trims what it archived; the "
            "integrity check of counters against the ledger",
            functions=("tally_lane_counters",),
            commands={
                POLL_INDEX: ("ZRANGE",),
                POLL: ("HMGET", "HGET"),
                LANE: ("HGET", "HMGET"),
                COUNTS: ("HGETALL",),
                LEDGER: ("XRANGE", "XTRIM"),
                ADMIN_LOG: ("XRANGE", "XTRIM"),
                INTEGRITY: ("HSETNX", "HGETALL"),
                TURNOUT: ("HSET",),  # ballots per minute, from the ledger
            },
            leases=(ARCHIVER_LEASE,),
        ),
        Role(
            ADMIN,
            "the operator's tool: loads the functions (FUNCTION LOAD), backups, repairs; never "
            "used by a serving process",
            everything=True,
        ),
    )
}


def username(role: str) -> str:
    """The Valkey user of a role (prefixed, so they never clash with a managed service's)."""
    return f"tally-{role}"


@dataclass(slots=True)
class _Selector:
    """One selector being laid out: its key patterns (each with its access, `~` or `%R~`) and
    its commands (ACL names, lower case: `hget`, `fcall|tally_vote`)."""

    patterns: dict[str, str]
    commands: dict[str, None]

    def rule(self) -> str:
        keys = [f"{access}{pattern}" for pattern, access in self.patterns.items()]
        return "(" + " ".join([*keys, *(f"+{c}" for c in self.commands)]) + ")"


def _function_selector(name: str) -> _Selector:
    patterns = dict.fromkeys(FUNCTIONS[name].keys, "~")
    return _Selector(patterns, {f"fcall|{name}": None})


def _family_selector(pattern: str, commands: Iterable[str]) -> _Selector:
    used = list(commands)
    access = "~" if WRITE_COMMANDS.intersection(used) else "%R~"
    return _Selector({pattern: access}, dict.fromkeys(c.lower() for c in used))


def _merged(selectors: Iterable[_Selector]) -> list[_Selector]:
    """Each selector merged into the first one before it that grants the same commands, where
    that is exact: FCALL selectors on the same patterns (every key must match either way), and
    family selectors whose commands all take one key. Order otherwise kept."""
    out: list[_Selector] = []
    for selector in selectors:
        functions = all(c.startswith("fcall|") for c in selector.commands)
        for earlier in out:
            if functions and all(c.startswith("fcall|") for c in earlier.commands):
                if earlier.patterns.keys() == selector.patterns.keys():
                    earlier.commands.update(selector.commands)
                    break
            elif (
                not functions
                and set(earlier.commands) == set(selector.commands)
                and {c.upper() for c in selector.commands} <= SINGLE_KEY_COMMANDS
            ):
                earlier.patterns.update(selector.patterns)
                break
        else:
            out.append(selector)
    return out


def role_rules(role: Role, *, hot_first: bool = True) -> list[str]:
    """The role's ACL rules, without user name, on/off or password (see the module docstring).
    `hot_first=False`: the same rights as one selector per function, lease and key family in
    the table's order, the plain form the laid-out one is checked against."""
    if role.everything:
        return ["~*", "&*", "+@all"]
    rules = ["resetkeys", "resetchannels", "-@all"]
    keyless = dict.fromkeys(BASE_KEYLESS + role.keyless)
    per_key: dict[str, dict[str, None]] = {}
    per_channel: dict[str, dict[str, None]] = {}

    def use(where: dict[str, dict[str, None]], pattern: str, commands: Iterable[str]) -> None:
        where.setdefault(pattern, {}).update(dict.fromkeys(commands))

    for pattern, commands in role.commands.items():
        use(per_key, pattern, commands)
    for pattern, commands in role.channels.items():
        use(per_channel, pattern, commands)
    for name in role.functions:
        function = FUNCTIONS[name]
        for pattern, commands in function.uses.items():
            use(per_key, pattern, commands)
        for pattern, commands in function.channels.items():
            use(per_channel, pattern, commands)
        keyless.update(dict.fromkeys(function.keyless))
    for pattern in role.leases:
        use(per_key, pattern, LEASE_COMMANDS)
    leases = [
        _Selector({pattern: "~"}, {"fcall|tally_lease": None, "fcall|tally_release": None})
        for pattern in role.leases
    ]
    selectors: list[_Selector] = []
    if not hot_first:
        selectors += [_function_selector(name) for name in role.functions]
        selectors += leases
        selectors += [_family_selector(p, used) for p, used in per_key.items()]
    else:
        left = {pattern: dict(used) for pattern, used in per_key.items()}
        for name in role.hot:
            hot = [_function_selector(name)]
            for pattern, commands in FUNCTIONS[name].uses.items():
                taken = [c for c in commands if c in left[pattern]]  # not an earlier hot one's
                for command in taken:
                    del left[pattern][command]
                if taken:
                    hot.append(_family_selector(pattern, taken))
            selectors += _merged(hot)
        rest = [_function_selector(name) for name in role.functions if name not in role.hot]
        selectors += _merged(rest) + leases
        selectors += _merged(_family_selector(p, used) for p, used in left.items() if used)
    rules += [f"+{command.lower()}" for command in keyless]
    rules += [selector.rule() for selector in selectors]
    for pattern, used in per_channel.items():
        allowed = " ".join(f"+{c.lower()}" for c in used)
        rules.append(f"(&{pattern} {allowed})")
    return rules


def password_hash(password: str) -> str:
    """`#<sha256 hex>`: how a rule names a password without holding it."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def setuser_args(role: Role, password: str) -> list[str]:
    """`ACL SETUSER <user> ...` arguments: the user reset, on, with this password only."""
    return [username(role.name), "reset", "on", password_hash(password), *role_rules(role)]


def user_line(role: Role, secret: str) -> str:
    """A `user` line of an ACL file or config; `secret` is a password hash (`#hex`) or a
    placeholder the operator replaces."""
    return " ".join(["user", username(role.name), "on", secret, *role_rules(role)])


# The user a replica authenticates to its primary as (`masteruser`/`masterauth`), on a cluster or
# any Valkey with replicas: the replication handshake and stream, nothing else (the replica's
# commands run on the primary as this user; the stream it then receives is not ACL-checked).
# PSYNC, and SYNC for dual-channel replication's RDB channel (Valkey 8+), REPLCONF, PING: what
# Valkey 9.1 asks of it, no key or channel. Not a role: no Tally process connects as it.
REPLICATION = "replication"
REPLICATION_RULES = ("resetkeys", "resetchannels", "-@all", "+psync", "+sync", "+replconf", "+ping")


def replication_line(secret: str) -> str:
    """The replication user's `user` line (`secret` as in user_line)."""
    return " ".join(["user", username(REPLICATION), "on", secret, *REPLICATION_RULES])


def acl_file(passwords: Mapping[str, str] | None = None) -> str:
    """An ACL file for every role, the default user off. Each role's password as its hash when
    `passwords` names it, else a placeholder (`#<ROLE>-PASSWORD-SHA256`) that Valkey refuses to
    load until it is replaced by `#` and the SHA-256 (hex) of the role's password."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    for role in ROLES.values():
        given = (passwords or {}).get(role.name)
        secret = password_hash(given) if given else f"#{role.name.upper()}-PASSWORD-SHA256"
        lines.append(user_line(role, secret))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m tally.store.acl: the ACL file with placeholders
    print(acl_file(), end="")
