"""The issue's acceptance under load: one vote per voter however hard a voter retries, and counts
that equal the accepted votes. Raw HTTP over hundreds of concurrent keep-alive connections."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from api_http import JSON

from conftest import RunningTally
from tally.bench.loadgen import LoadResult, Reply, build_request, run_requests

OPTIONS = ("red", "green", "blue")


def vote_request(tally: RunningTally, poll_id: str, token: str, option: str) -> bytes:
    return build_request(
        "POST",
        f"/v1/polls/{poll_id}/votes",
        host=f"{tally.host}:{tally.port}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": JSON},
        body=json.dumps({"option": option}).encode(),
    )


def every_reply(result: LoadResult) -> list[Reply]:
    """All replies, after checking that no request failed at the transport level."""
    assert result.transport_errors == {}
    replies = result.completed()
    assert len(replies) == len(result.replies)
    return replies


def receipt_of(reply: Reply) -> dict[str, Any]:
    receipt: dict[str, Any] = json.loads(reply.body)["receipt"]
    return receipt


async def test_1000_concurrent_votes_by_one_voter_count_once(tally: RunningTally) -> None:
    """1,000 simultaneous requests by one voter: one 201, 999 409s, all with the same receipt."""
    poll_id = str(tally.open_poll()["id"])
    request = vote_request(tally, poll_id, tally.voter_token("eager"), "red")
    result = await run_requests(tally.host, tally.port, [request] * 1000, concurrency=1000)
    replies = every_reply(result)
    assert result.by_status() == {201: 1, 409: 999}
    accepted = next(reply for reply in replies if reply.status == 201)
    receipt = receipt_of(accepted)
    for reply in replies:
        if reply.status == 409:
            assert json.loads(reply.body)["code"] == "already-voted"
            assert receipt_of(reply) == receipt
    results = tally.results(poll_id, total=1)
    assert results["counts"] == {"red": 1, "green": 0, "blue": 0}
    assert results["total"] == 1


async def test_10000_distinct_voters_are_all_counted(tally: RunningTally) -> None:
    """10,000 voters over 200 connections: all 201, counts equal the 201s, lane ledgers gapless."""
    poll_id = str(tally.open_poll(lanes=16)["id"])
    tokens = tally.issuer.mint_many(f"crowd-{i}" for i in range(10_000))
    chosen = [OPTIONS[i % len(OPTIONS)] for i in range(10_000)]
    requests = [
        vote_request(tally, poll_id, token, option)
        for token, option in zip(tokens, chosen, strict=True)
    ]
    result = await run_requests(tally.host, tally.port, requests, concurrency=200)
    replies = every_reply(result)
    assert result.by_status() == {201: 10_000}
    receipts = [receipt_of(reply) for reply in replies]
    assert [r["option"] for r in receipts] == chosen
    results = tally.results(poll_id, total=10_000)
    assert results["counts"] == dict(Counter(chosen))
    assert results["total"] == sum(results["counts"].values()) == 10_000
    entries: defaultdict[int, list[int]] = defaultdict(list)
    for receipt in receipts:
        entries[receipt["lane"]].append(receipt["entry_id"])
    assert set(entries) <= set(range(16))
    for lane_entries in entries.values():
        assert sorted(lane_entries) == list(range(1, len(lane_entries) + 1))
