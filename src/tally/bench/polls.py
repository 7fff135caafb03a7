"""What every benchmark asks of the server's polls API: the vote requests of its load, and after
it the poll's final count."""

from __future__ import annotations

import time

from tally.bench.loadgen import build_request
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer

HOST = "127.0.0.1"  # every bench server listens on loopback: the requests' Host header


def vote_requests(
    issuer: DevIssuer,
    poll_id: str,
    option_ids: list[str],
    voters: int,
    alg: str,
    prefix: str,
    *,
    first: int = 0,
) -> list[bytes]:
    """One raw vote request per voter (`<prefix><first>` on), options in turn, with fresh
    tokens (a later block of the same poll starts at a later `first`: new voters)."""
    path = f"/v1/polls/{poll_id}/votes"
    names = (f"{prefix}{i}" for i in range(first, first + voters))
    tokens = issuer.mint_many(names, alg=alg, ttl_s=3600)
    return [
        build_request(
            "POST",
            path,
            host=HOST,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=b'{"option":"%b"}' % option_ids[i % len(option_ids)].encode(),
        )
        for i, token in enumerate(tokens)
    ]


def final_total(admin: TallyClient, poll_id: str, timeout_s: float = 10.0) -> int:
    """Close the poll and read its final snapshot: a snapshot read at once may trail the last
    votes by a tick, while the closed one holds every vote."""
    admin.post(f"/v1/polls/{poll_id}/close")
    deadline = time.monotonic() + timeout_s
    while True:
        results = admin.get(f"/v1/polls/{poll_id}/results")
        if results["state"] == "closed" or time.monotonic() > deadline:
            return int(results["total"])
        time.sleep(0.05)
