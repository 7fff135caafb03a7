"""How evenly a poll's default lanes land on the primaries of a cluster whose slots are split
evenly: for random poll ids, each lane's slot (tally.store.cluster.key_slot of its hash tag), the
busiest primary's share of the poll's lanes, and how many polls leave some primary without a lane.

Arithmetic on the real key names and slot function, no server: run it for any cluster size.

    .venv/bin/python benchmarks/lane_placement.py --primaries 3 6 16 20 24 32 --polls 1000
"""

from __future__ import annotations

import argparse
import base64
import secrets

from tally.domain.polls import lanes_for
from tally.store import keys
from tally.store.cluster import SLOTS, key_slot


def placement(primaries: int, polls: int) -> dict[str, float]:
    lanes = lanes_for(primaries)
    shares: list[float] = []
    empty = 0
    for _ in range(polls):
        poll_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        counts = [0] * primaries
        for lane in range(lanes):
            slot = key_slot(keys.lane_state(poll_id, lane).encode())
            counts[slot * primaries // SLOTS] += 1
        empty += min(counts) == 0
        shares.append(max(counts) / lanes)
    shares.sort()
    return {
        "primaries": primaries,
        "lanes": lanes,
        "mean_share": 1 / primaries,
        "busiest_share_p50": shares[len(shares) // 2],
        "busiest_share_p99": shares[int(len(shares) * 0.99) - 1],
        "polls_with_an_empty_primary": empty / polls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--primaries", type=int, nargs="+", default=[3, 6, 16, 20, 24, 32])
    parser.add_argument("--polls", type=int, default=1000)
    args = parser.parse_args()
    print(
        "| primaries | lanes | mean share | busiest share p50 | p99 | polls leaving a primary empty |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for p in args.primaries:
        r = placement(p, args.polls)
        print(
            f"| {p} | {r['lanes']:.0f} | {r['mean_share']:.1%} | {r['busiest_share_p50']:.1%} | "
            f"{r['busiest_share_p99']:.1%} | {r['polls_with_an_empty_primary']:.1%} |"
        )


if __name__ == "__main__":
    main()
