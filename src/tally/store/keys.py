"""Every Valkey key name Tally uses, and nothing else builds one.

Poll-wide keys hash on the poll id; lane keys carry one hash tag per lane, `{<poll>.<lane>}`, so
that in a Valkey Cluster each lane lives on one node, a hot poll spreads over the cluster, and no
vote-path command ever touches two lanes' keys.

| key                                  | type   | holds                                             |
|--------------------------------------|--------|---------------------------------------------------|
| tally:polls                          | zset   | poll id -> created_at ms (listing order)          |
| tally:poll:{<poll>}                  | hash   | `def` (JSON definition), `state`, `updated_at`, `admin_seq` |
| tally:poll:{<poll>}:admin            | stream | the admin log's queue: created/open/closed, id `<seq>-0` |
| tally:poll:{<poll>}:archiver         | string | id of the archiver holding the poll's lease (PX ttl) |
| tally:poll:{<poll>}:snapshot        | hash   | `seq`, `doc` (the latest published snapshot JSON)  |
| tally:poll:{<poll>}:aggregator      | string | id of the aggregator holding the lease (PX ttl)   |
| tally:live:{<poll>}  (SPUBLISH)      | channel| every published snapshot document (sharded pub/sub) |
| tally:{<poll>.<lane>}:lane           | hash   | `state`, `closes_at` (ms or ""), `seq`, `at`       |
| tally:{<poll>.<lane>}:counts         | hash   | option id -> accepted votes (every option present) |
| tally:{<poll>.<lane>}:ledger         | stream | one entry per accepted vote, id `<seq>-0`          |
| tally:{<poll>.<lane>}:v:<bucket hex> | hash   | pseudonym[2:] -> seq (the voter index)             |
"""

from __future__ import annotations

POLL_INDEX = "tally:polls"


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


def poll_archiver_lease(poll_id: str) -> str:
    return f"tally:poll:{{{poll_id}}}:archiver"


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


def lane_voters(poll_id: str, lane: int, bucket: int) -> str:
    return f"{lane_prefix(poll_id, lane)}v:{bucket:x}"


def lane_voters_pattern(poll_id: str, lane: int) -> str:
    """SCAN pattern for every voter-index bucket of a lane (used by maintenance, never per vote)."""
    return lane_prefix(poll_id, lane).replace("{", "\\{").replace("}", "\\}") + "v:*"
