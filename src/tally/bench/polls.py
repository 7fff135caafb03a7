"""What every benchmark asks of the server's polls API after its load: the poll's final count."""

from __future__ import annotations

import time

from tally.client import TallyClient


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
