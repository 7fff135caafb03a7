"""Every Valkey key name Tally uses, and nothing else builds one.

Poll-wide keys hash on the poll id; lane keys carry one hash tag per lane, `{<poll>.<lane>}`, so
that in a Valkey Cluster each lane lives on one node, a hot poll spreads over the cluster, and no
vote-path command ever touches two lanes' keys.

| key                                  | type   | holds                                             |
|--------------------------------------|--------|---------------------------------------------------|
| tally:polls                          | zset   | poll id -> created_at ms (listing order)          |
| tally:admission:keys                 | hash   | `<key name>|<public key hex>` -> JSON admission key (the registry) |
| tally:poll:{<poll>}                  | hash   | `def` (JSON definition), `state`, `updated_at`, `admin_seq` |
| tally:poll:{<poll>}:admin            | stream | the admin log's queue: created/open/closed/reviewed, id `<seq>-0` |
| tally:poll:{<poll>}:reviewed         | hash   | `<lane>:<seq>` -> released/voided: each held vote decided once |
| tally:poll:{<poll>}:admission        | hash   | `<key name>|<public key hex>` -> `<not before>|<not after>` already in the admin log |
| tally:poll:{<poll>}:archiver         | string | id of the archiver holding the poll's lease (PX ttl) |
| tally:poll:{<poll>}:integrity        | hash   | `<kind>:<lane or admin>` -> integrity alarm JSON, first seen kept |
| tally:poll:{<poll>}:snapshot        | hash   | `seq`, `doc` (the latest published snapshot JSON)  |
| tally:poll:{<poll>}:aggregator      | string | id of the aggregator holding the lease (PX ttl)   |
| tally:live:{<poll>}  (SPUBLISH)      | channel| every published snapshot document (sharded pub/sub) |
| tally:{<poll>.<lane>}:lane           | hash   | `state`, `closes_at` (ms or ""), `seq`, `at`, `held` |
| tally:{<poll>.<lane>}:counts         | hash   | option id -> accepted votes (every option present) |
| tally:{<poll>.<lane>}:ledger         | stream | one entry per vote or review decision, id `<seq>-0` |
| tally:{<poll>.<lane>}:held           | hash   | seq -> option, reason, subnet, ms (joined by a bar) of each vote still held |
| tally:{<poll>.<lane>}:decided        | hash   | seq -> released/voided of each held vote decided   |
| tally:{<poll>.<lane>}:v:<bucket hex> | hash   | pseudonym[2:] -> seq (the voter index)             |
| tally:poll:{<poll>}:join            | string | the poll's join code (set once)                     |
| tally:join:{<CODE>}                  | string | poll id a join code leads to (set once, NX)         |
| tally:pow:{<salt>}                   | string | a spent proof-of-work challenge (PX: until it expires) |
| tally:{<poll>.<lane>}:rl             | string | the poll's rate-limit bucket share on this lane (GCRA TAT, PX) |
| tally:rl:{s:<subnet id>}             | string | a subnet's rate-limit bucket (GCRA TAT in µs; PX: until full) |
| tally:rl:{s:<subnet id>}:a:<address id> | string | an address's bucket, in its subnet's slot (one call takes both) |
| tally:rl:{v:<voter id>}              | string | a voter's bucket, across polls (GCRA TAT in µs; PX)  |
"""

from __future__ import annotations

POLL_INDEX = "tally:polls"
# The registry of gateway admission keys (tally.store.admission_keys), copied into admin logs.
ADMISSION_KEYS = "tally:admission:keys"


def poll_meta(poll_id: str) -> str:
    return f"tally:poll:{{{poll_id}}}"


def poll_snapshot(poll_id: str) -> str:
    return f"tally:poll:{{{poll_id}}}:snapshot"


def poll_lease(poll_id: str) -> str:
    """Shares the poll record's hash tag, so lease and snapshot change in one atomic call."""
    return f"tally:poll:{{{poll_id}}}:aggregator"


def poll_admin(poll_id: str) -> str:
    """The admin actions not yet archived; shares the poll record's hash tag, so an action and
    the state change it records are one atomic call."""
    return f"tally:poll:{{{poll_id}}}:admin"


def poll_admission(poll_id: str) -> str:
    """Which admission keys (with which validity) the poll's admin log holds already; shares the
    poll record's hash tag, so the check and the admin entry are one atomic call."""
    return f"tally:poll:{{{poll_id}}}:admission"


def poll_reviewed(poll_id: str) -> str:
    """Which held votes have a decision in the admin log; shares the poll record's hash tag, so
    the check and the admin entry are one atomic call."""
    return f"tally:poll:{{{poll_id}}}:reviewed"


def poll_archiver_lease(poll_id: str) -> str:
    return f"tally:poll:{{{poll_id}}}:archiver"


def poll_integrity(poll_id: str) -> str:
    """The poll's integrity alarms (domain.integrity), written by its archiver, read by gateways."""
    return f"tally:poll:{{{poll_id}}}:integrity"


def poll_turnout(poll_id: str) -> str:
    """Ballots per minute (domain.turnout): minute start ms -> count, written by its archiver
    from the ledger, read by gateways for turnout.csv."""
    return f"tally:poll:{{{poll_id}}}:turnout"


def live_channel(poll_id: str) -> str:
    return f"tally:live:{{{poll_id}}}"


def lane_prefix(poll_id: str, lane: int) -> str:
    return f"tally:{{{poll_id}.{lane}}}:"


def lane_state(poll_id: str, lane: int) -> str:
    return lane_prefix(poll_id, lane) + "lane"


def lane_counts(poll_id: str, lane: int) -> str:
    return lane_prefix(poll_id, lane) + "counts"


def lane_ledger(poll_id: str, lane: int) -> str:
    return lane_prefix(poll_id, lane) + "ledger"


def lane_held(poll_id: str, lane: int) -> str:
    """The lane's votes held for review: reviewers' evidence (reason, subnet), never ledgered."""
    return lane_prefix(poll_id, lane) + "held"


def lane_decided(poll_id: str, lane: int) -> str:
    return lane_prefix(poll_id, lane) + "decided"


def lane_voters(poll_id: str, lane: int, bucket: int) -> str:
    return f"{lane_prefix(poll_id, lane)}v:{bucket:x}"


def lane_voters_pattern(poll_id: str, lane: int) -> str:
    """SCAN pattern for every voter-index bucket of a lane (used by maintenance, never per vote)."""
    return lane_prefix(poll_id, lane).replace("{", "\\{").replace("}", "\\}") + "v:*"


def spent_challenge(spend_id: str) -> str:
    """A spent proof-of-work challenge, by its random salt: every claim in its own slot, so the
    claims spread over a cluster and none is hot."""
    return f"tally:pow:{{{spend_id}}}"


# Rate limits (tally.store.ratelimits). The ids are keyed hashes (hex) made by the gateway, so no
# address or identity reaches Valkey. An address's bucket carries its subnet's hash tag: one
# atomic call takes both. Each subnet and each voter is a slot of its own, so the buckets spread
# over a cluster; the poll's limit is shared out over its lanes, each share in its lane's slot.


def rate_subnet(subnet_id: str) -> str:
    return f"tally:rl:{{s:{subnet_id}}}"


def rate_address(subnet_id: str, address_id: str) -> str:
    return f"tally:rl:{{s:{subnet_id}}}:a:{address_id}"


def rate_voter(voter_id: str) -> str:
    return f"tally:rl:{{v:{voter_id}}}"


def lane_rate(poll_id: str, lane: int) -> str:
    return lane_prefix(poll_id, lane) + "rl"


# Join codes (tally.store.join_codes): a code's key is a slot of its own (codes spread over a
# cluster); the poll's code shares the poll record's hash tag.


def poll_join_code(poll_id: str) -> str:
    return f"tally:poll:{{{poll_id}}}:join"


def join_code(code: str) -> str:
    return f"tally:join:{{{code}}}"
