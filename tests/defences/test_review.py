"""Hold for review end to end, on a real `tally serve`: the risk scorer holds votes, which are
recorded (202 with a receipt) but not counted; reviewers list them grouped by reason and subnet
and release or void them over the API and `tally review`; results and snapshots show
`under_review` beside the counts all along.

Every poll here holds every vote: its risk rules score any token at `hold_at` (tokens issued in
the last hour as "fresh-token", older ones as "old-token"). Client addresses come through
X-Forwarded-For (127.0.0.1 is a trusted proxy here), so votes arrive from two subnets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from conftest import RunningTally, serving
from tally.archive.logs import LedgerFiles
from tally.ledger import layout
from tally.ledger.certificate import ReviewTotals, certificate_origin, open_certificate
from tally.ledger.note import Verifier

SUBNET_A, SUBNET_B = "198.51.100.0/24", "203.0.113.0/24"
FRESH = {
    "signal": "token_age_s",
    "comparison": "below",
    "value": 3600,
    "score": 100,
    "reason": "fresh-token",
}
OLD = {
    "signal": "token_age_s",
    "comparison": "above",
    "value": 3600,
    "score": 100,
    "reason": "old-token",
}


def holding(*rules: dict[str, Any]) -> dict[str, Any]:
    """Defences whose risk scorer holds every vote one of `rules` matches."""
    return {"risk": {"rules": list(rules), "challenge_at": 50, "hold_at": 100}}


HOLD_ALL = holding(FRESH, OLD)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    env = {"TALLY_TRUSTED_PROXIES": "127.0.0.1/32", "TALLY_CHECKPOINT_INTERVAL_MS": "200"}
    with serving(tmp_path_factory.mktemp("review"), env) as running:
        yield running


@pytest.fixture
def http(server: RunningTally) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def reviewer(server: RunningTally) -> dict[str, str]:
    return bearer(server.issuer.mint("rita-reviewer", roles=["reviewer"]))


def held_poll(server: RunningTally, http: httpx.Client, defences: dict[str, Any] = HOLD_ALL) -> str:
    admin = bearer(server.admin_token())
    body = {"title": "review", "options": ["Red", "Green"], "lanes": 2, "defences": defences}
    created = http.post("/v1/polls", json=body, headers=admin)
    assert created.status_code == 201, created.text
    poll_id: str = created.json()["id"]
    assert http.post(f"/v1/polls/{poll_id}/open", headers=admin).status_code == 200
    return poll_id


def vote(
    server: RunningTally,
    http: httpx.Client,
    poll_id: str,
    voter: str,
    option: str,
    address: str,
    *,
    old_token: bool = False,
) -> httpx.Response:
    now = time.time() - 7200 if old_token else None
    token = server.issuer.mint(voter, ttl_s=10_800, now=now)
    return http.post(
        f"/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={**bearer(token), "X-Forwarded-For": address},
    )


def new_voter() -> str:
    return f"voter-{uuid.uuid4().hex[:10]}"


def voters(n: int) -> list[str]:
    return [new_voter() for _ in range(n)]


def results_when(
    http: httpx.Client, poll_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """GET /results until `done` holds (the aggregator publishes within a tick or two)."""
    deadline = time.monotonic() + 10
    while True:
        results: dict[str, Any] = http.get(f"/v1/polls/{poll_id}/results").json()
        if done(results) or time.monotonic() > deadline:
            return results
        time.sleep(0.05)


def settled(http: httpx.Client, poll_id: str) -> dict[str, Any]:
    """GET /results once two reads more than two aggregator ticks apart agree."""
    previous: dict[str, Any] = http.get(f"/v1/polls/{poll_id}/results").json()
    for _ in range(20):
        time.sleep(0.6)
        current: dict[str, Any] = http.get(f"/v1/polls/{poll_id}/results").json()
        if current == previous:
            return current
        previous = current
    return previous


def decision_metrics(http: httpx.Client) -> dict[str, int]:
    """tally_review_decisions_total by outcome, from /metrics."""
    prefix = 'tally_review_decisions_total{outcome="'
    return {
        line[len(prefix) :].split('"', 1)[0]: int(line.rsplit(" ", 1)[1])
        for line in http.get("/metrics").text.splitlines()
        if line.startswith(prefix)
    }


def decide(
    server: RunningTally, http: httpx.Client, poll_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    answer = http.post(f"/v1/polls/{poll_id}/held/decisions", json=body, headers=reviewer(server))
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def entries(*votes: httpx.Response) -> list[dict[str, int]]:
    """The {lane, entry_id} of each vote's receipt."""
    return [
        {"lane": v.json()["receipt"]["lane"], "entry_id": v.json()["receipt"]["entry_id"]}
        for v in votes
    ]


def test_a_held_vote_is_recorded_with_a_receipt_and_shows_under_review(
    server: RunningTally, http: httpx.Client
) -> None:
    """202 with a receipt (status held) and the reason; the counts stay at zero while
    under_review counts it; the voter's repeat gets the original receipt back."""
    poll_id = held_poll(server, http)
    [voter] = voters(1)
    answer = vote(server, http, poll_id, voter, "red", "198.51.100.7")
    assert answer.status_code == 202, answer.text
    document = answer.json()
    assert document["held"] == {"reason": "fresh-token"}
    receipt = document["receipt"]
    assert (receipt["status"], receipt["option"], receipt["poll_id"]) == ("held", "red", poll_id)
    results = results_when(http, poll_id, lambda r: r["under_review"] == 1)
    assert (results["total"], results["counts"], results["under_review"]) == (
        0, {"red": 0, "green": 0}, 1,
    )  # fmt: skip
    repeat = vote(server, http, poll_id, voter, "green", "198.51.100.7")
    assert repeat.status_code == 409
    assert repeat.json()["receipt"] == receipt


def test_a_held_vote_over_the_websocket_gets_its_receipt_in_the_vote_result(
    server: RunningTally, http: httpx.Client
) -> None:
    """The live WebSocket answers a held vote as HTTP does: status 202, receipt, held; and the
    snapshots it pushes carry under_review."""
    poll_id = held_poll(server, http)
    url = f"ws://{server.host}:{server.port}/v1/polls/{poll_id}/live"
    headers = {"X-Forwarded-For": "198.51.100.40"}
    with connect(url, open_timeout=10.0, proxy=None, additional_headers=headers) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.issuer.mint(new_voter())}).decode())
        ws.send(orjson.dumps({"type": "vote", "request_id": "r1", "option": "green"}).decode())
        while (frame := orjson.loads(ws.recv(timeout=10.0)))["type"] != "vote_result":
            pass
        assert (frame["status"], frame["held"], frame["receipt"]["status"]) == (
            202, {"reason": "fresh-token"}, "held",
        )  # fmt: skip
        while (snapshot := orjson.loads(ws.recv(timeout=10.0)))["type"] != "snapshot" or not (
            snapshot["under_review"]
        ):
            pass
    assert (snapshot["under_review"], snapshot["total"]) == (1, 0)


def test_reviewers_list_held_votes_grouped_by_reason_and_subnet(
    server: RunningTally, http: httpx.Client
) -> None:
    """Groups of (reason, subnet), biggest first, with each held vote's lane, entry, option,
    reason, subnet and time; under_review is their sum."""
    poll_id = held_poll(server, http)
    a1, a2, a3, b1, b2 = voters(5)
    for voter in (a1, a2, a3):
        vote(server, http, poll_id, voter, "red", "198.51.100.9")
    for voter in (b1, b2):
        vote(server, http, poll_id, voter, "green", "203.0.113.200")
    old = vote(server, http, poll_id, new_voter(), "green", "198.51.100.10", old_token=True)
    assert old.json()["held"] == {"reason": "old-token"}
    listing = http.get(f"/v1/polls/{poll_id}/held", headers=reviewer(server))
    assert listing.status_code == 200, listing.text
    document = listing.json()
    assert (document["poll_id"], document["under_review"]) == (poll_id, 6)
    groups = [(g["reason"], g["subnet"], g["count"]) for g in document["groups"]]
    assert groups == [
        ("fresh-token", SUBNET_A, 3), ("fresh-token", SUBNET_B, 2), ("old-token", SUBNET_A, 1),
    ]  # fmt: skip
    [old_entry] = document["groups"][2]["entries"]
    assert old_entry == {
        **entries(old)[0],
        "option": "green",
        "reason": "old-token",
        "subnet": SUBNET_A,
        "held_at": old.json()["receipt"]["accepted_at"],
        # Stored sealed (tests/security/test_evidence_at_rest.py), opened for the reviewer.
        "evidence": "kept",
        "address": "198.51.100.10",
        "user_agent": f"python-httpx/{httpx.__version__}",
    }
    assert not any(g["truncated"] for g in document["groups"])


def test_release_some_void_others_and_the_counts_follow(
    server: RunningTally, http: httpx.Client
) -> None:
    """Releasing a group counts its votes; voiding listed entries never will; under_review
    drops to zero; a retry changes nothing; the other decision on a decided vote is refused.
    /metrics counts each entry's outcome."""
    poll_id = held_poll(server, http)
    before = decision_metrics(http)
    subnet_a = [vote(server, http, poll_id, v, "red", "198.51.100.1") for v in voters(3)]
    assert {v.status_code for v in subnet_a} == {202}
    subnet_b = [vote(server, http, poll_id, v, "green", "203.0.113.1") for v in voters(2)]
    results_when(http, poll_id, lambda r: r["under_review"] == 5)

    released = decide(server, http, poll_id, {"decision": "release", "group": {"subnet": SUBNET_A}})
    assert (released["released"], released["voided"], released["refused"]) == (3, 0, 0)
    voided = decide(server, http, poll_id, {"decision": "void", "entries": entries(*subnet_b)})
    assert (voided["voided"], voided["already_decided"]) == (2, 0)
    assert {e["outcome"] for e in voided["entries"]} == {"voided"}
    results = results_when(http, poll_id, lambda r: r["under_review"] == 0)
    assert (results["counts"], results["total"], results["under_review"]) == (
        {"red": 3, "green": 0}, 3, 0,
    )  # fmt: skip

    again = decide(server, http, poll_id, {"decision": "void", "entries": entries(*subnet_b)})
    assert (again["voided"], again["already_decided"], again["refused"]) == (0, 2, 0)
    flip = decide(server, http, poll_id, {"decision": "release", "entries": entries(subnet_b[0])})
    assert (flip["released"], flip["refused"], flip["entries"][0]["outcome"]) == (
        0, 1, "conflict",
    )  # fmt: skip
    assert settled(http, poll_id)["counts"] == {"red": 3, "green": 0}
    after = decision_metrics(http)
    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: n for k, n in counted.items() if n} == {
        "released": 3, "voided": 2, "already-decided": 2, "conflict": 1,
    }  # fmt: skip
    assert http.get(f"/v1/polls/{poll_id}/held", headers=reviewer(server)).json()["groups"] == []


def test_a_repeat_vote_shows_the_decision_in_its_receipt(
    server: RunningTally, http: httpx.Client
) -> None:
    """A voter whose held vote was released, or voided, gets the original receipt with that
    status; the leaf hash (the held record's) never changes."""
    poll_id = held_poll(server, http)
    kept, dropped = voters(2)
    first = vote(server, http, poll_id, kept, "red", "198.51.100.2").json()["receipt"]
    other = vote(server, http, poll_id, dropped, "red", "198.51.100.3").json()["receipt"]
    ref = {"lane": first["lane"], "entry_id": first["entry_id"]}
    decide(server, http, poll_id, {"decision": "release", "entries": [ref]})
    ref = {"lane": other["lane"], "entry_id": other["entry_id"]}
    decide(server, http, poll_id, {"decision": "void", "entries": [ref]})
    again = vote(server, http, poll_id, kept, "red", "198.51.100.2").json()["receipt"]
    assert again == {**first, "status": "released"}
    again = vote(server, http, poll_id, dropped, "red", "198.51.100.3").json()["receipt"]
    assert again == {**other, "status": "voided"}


def test_entries_that_are_not_held_are_refused_and_nothing_changes(
    server: RunningTally, http: httpx.Client
) -> None:
    """An entry that holds no vote, or an accepted vote, is reported not-held: no count moves,
    nothing leaves the held votes."""
    poll_id = held_poll(server, http)
    held = vote(server, http, poll_id, new_voter(), "green", "198.51.100.4")
    results_when(http, poll_id, lambda r: r["under_review"] == 1)
    report = decide(
        server, http, poll_id,
        {"decision": "release", "entries": [{"lane": 0, "entry_id": 999}, {"lane": 1, "entry_id": 7}]},
    )  # fmt: skip
    assert (report["released"], report["refused"]) == (0, 2)
    assert {e["outcome"] for e in report["entries"]} == {"not-held"}
    assert (
        decide(server, http, poll_id, {"decision": "void", "group": {"reason": "nope"}})["entries"]
        == []
    )
    results = settled(http, poll_id)
    assert (results["total"], results["under_review"]) == (0, 1)
    listing = http.get(f"/v1/polls/{poll_id}/held", headers=reviewer(server)).json()
    assert [e["entry_id"] for e in listing["groups"][0]["entries"]] == [
        held.json()["receipt"]["entry_id"]
    ]


def from_snapshot(http: httpx.Client, poll_id: str, state: str) -> dict[str, Any]:
    """GET /results once it is served from a published snapshot (ETag "<poll>.<seq>") in
    `state`, not summed from the lanes (as before the aggregator picks a new poll up)."""
    deadline = time.monotonic() + 10
    while True:
        answer = http.get(f"/v1/polls/{poll_id}/results")
        results: dict[str, Any] = answer.json()
        published = answer.headers["etag"].startswith(f'"{poll_id}.')
        if (published and results["state"] == state) or time.monotonic() > deadline:
            return results
        time.sleep(0.05)


def test_reviewers_decide_after_the_close(server: RunningTally, http: httpx.Client) -> None:
    """A closed poll's held votes can still be released: the aggregator keeps the closed poll
    while votes are under review, so the published results count them."""
    poll_id = held_poll(server, http)
    vote(server, http, poll_id, new_voter(), "green", "203.0.113.5", old_token=True)
    from_snapshot(http, poll_id, "open")
    admin = bearer(server.admin_token())
    assert http.post(f"/v1/polls/{poll_id}/close", headers=admin).status_code == 200
    closed = from_snapshot(http, poll_id, "closed")
    assert (closed["state"], closed["total"], closed["under_review"]) == ("closed", 0, 1)
    report = decide(
        server, http, poll_id, {"decision": "release", "group": {"reason": "old-token"}}
    )
    assert report["released"] == 1
    final = results_when(http, poll_id, lambda r: r["total"] == 1)
    assert (final["state"], final["counts"], final["under_review"]) == (
        "closed", {"red": 0, "green": 1}, 0,
    )  # fmt: skip


def test_only_reviewers_and_admins_may_review(server: RunningTally, http: httpx.Client) -> None:
    """A voter's token is 403 forbidden, no token 401; an admin may act as a reviewer."""
    poll_id = held_poll(server, http)
    voter = bearer(server.voter_token("just-a-voter"))
    body = {"decision": "release", "group": {"reason": "fresh-token"}}
    for headers, status in ((voter, 403), ({}, 401)):
        listing = http.get(f"/v1/polls/{poll_id}/held", headers=headers)
        decision = http.post(f"/v1/polls/{poll_id}/held/decisions", json=body, headers=headers)
        for answer in (listing, decision):
            assert answer.status_code == status
            assert answer.headers["content-type"] == "application/problem+json"
    admin = bearer(server.admin_token())
    assert http.get(f"/v1/polls/{poll_id}/held", headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "approve", "group": {"reason": "x"}}, "decision"),
        ({"decision": "release"}, "entries"),
        ({"decision": "release", "group": {}}, "group"),
        ({"decision": "release", "group": {"reason": "x"}, "entries": [{"lane": 0, "entry_id": 1}]},
         "entries"),
        ({"decision": "release", "entries": []}, "entries"),
        ({"decision": "release", "entries": [{"lane": 2, "entry_id": 1}]}, "entries[0].lane"),
        ({"decision": "release", "entries": [{"lane": 0, "entry_id": 0}]}, "entries[0].entry_id"),
        ({"decision": "release", "entries": [{"lane": -1, "entry_id": 1}]}, "lane"),
        ({"decision": "release", "group": {"reason": "x", "colour": "red"}}, "colour"),
        ({"decision": "void", "group": {"reason": "x" * 65}}, "reason"),
    ],
)  # fmt: skip
def test_a_bad_decision_body_is_a_422_and_changes_nothing(
    server: RunningTally, http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    poll_id = held_poll(server, http)
    vote(server, http, poll_id, new_voter(), "red", "198.51.100.8")
    answer = http.post(f"/v1/polls/{poll_id}/held/decisions", json=body, headers=reviewer(server))
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert (problem["code"], answer.headers["content-type"]) == (
        "validation-failed", "application/problem+json",
    )  # fmt: skip
    assert field in problem["detail"]
    listing = http.get(f"/v1/polls/{poll_id}/held", headers=reviewer(server)).json()
    assert listing["under_review"] == 1


def test_malformed_requests_and_unknown_polls_are_problems(
    server: RunningTally, http: httpx.Client
) -> None:
    """Not JSON: 400; not application/json: 415; a poll that does not exist: 404; an id that
    cannot be one: 400."""
    poll_id = held_poll(server, http)
    path = f"/v1/polls/{poll_id}/held/decisions"
    headers = reviewer(server)
    not_json = http.post(
        path, content=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert (not_json.status_code, not_json.json()["code"]) == (400, "malformed-json")
    as_text = http.post(path, content=b"{}", headers={**headers, "Content-Type": "text/plain"})
    assert (as_text.status_code, as_text.json()["code"]) == (415, "unsupported-media-type")
    body = {"decision": "void", "group": {"reason": "x"}}
    unknown = "a" * 16
    for answer in (
        http.get(f"/v1/polls/{unknown}/held", headers=headers),
        http.post(f"/v1/polls/{unknown}/held/decisions", json=body, headers=headers),
    ):
        assert (answer.status_code, answer.json()["code"]) == (404, "poll-not-found")
    bad = http.get("/v1/polls/NOT_AN_ID!/held", headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid-poll-id")


def tally_cli(
    server: RunningTally, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    token = token or server.issuer.mint("rita-reviewer", roles=["reviewer"])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    return subprocess.run(
        [sys.executable, "-m", "tally", *args, "--url", server.url, "--token", token],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_tally_review_lists_and_decides(server: RunningTally, http: httpx.Client) -> None:
    """`tally review list` prints the groups; `release --reason` and `void --entry LANE:ID`
    decide; a refused entry makes the command fail (exit 1)."""
    poll_id = held_poll(server, http)
    fresh = vote(server, http, poll_id, new_voter(), "red", "198.51.100.20")
    old = vote(server, http, poll_id, new_voter(), "green", "203.0.113.20", old_token=True)
    listed = tally_cli(server, "review", "list", poll_id)
    assert listed.returncode == 0, listed.stderr
    assert f"{poll_id}: 2 under review" in listed.stdout
    assert f"fresh-token  {SUBNET_A}  1 held" in listed.stdout
    released = tally_cli(server, "review", "release", poll_id, "--reason", "fresh-token", "--json")
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout)["released"] == 1
    [ref] = entries(old)
    entry = f"{ref['lane']}:{ref['entry_id']}"
    voided = tally_cli(server, "review", "void", poll_id, "--entry", entry)
    assert (voided.returncode, voided.stdout.splitlines()[0]) == (
        0, "released 0, voided 1, already decided 0, refused 0",
    )  # fmt: skip
    [ref] = entries(fresh)
    refused = tally_cli(
        server, "review", "void", poll_id, "--entry", f"{ref['lane']}:{ref['entry_id']}"
    )
    assert refused.returncode == 1
    assert "refused: conflict" in refused.stdout
    results = results_when(http, poll_id, lambda r: r["under_review"] == 0)
    assert (results["counts"], results["under_review"]) == ({"red": 1, "green": 0}, 0)


def test_results_snapshots_certificate_and_the_audit_agree(
    server: RunningTally, http: httpx.Client, tmp_path: Path
) -> None:
    """Accepted votes and held ones; reviewers release one subnet's and void the other's, the
    voids after the close. The final published results, the certificate (counts and review
    totals) and `tally audit verify` of the published ledger all agree: accepted + released;
    `tally audit receipt` accepts a released and a voided voter's receipt as they say."""
    poll_id = held_poll(server, http, holding(FRESH))
    accepted = [
        vote(server, http, poll_id, new_voter(), option, "192.0.2.1", old_token=True)
        for option in ("red", "green")
    ]
    assert [a.status_code for a in accepted] == [201, 201]
    voters_a = voters(3)
    held_a = [
        vote(server, http, poll_id, voter, o, "198.51.100.30")
        for voter, o in zip(voters_a, ("red", "red", "green"), strict=True)
    ]
    voters_b = voters(2)
    held_b = [vote(server, http, poll_id, v, "green", "203.0.113.30") for v in voters_b]
    assert {h.status_code for h in held_a + held_b} == {202}
    released = decide(server, http, poll_id, {"decision": "release", "group": {"subnet": SUBNET_A}})
    assert released["released"] == 3
    admin = bearer(server.admin_token())
    assert http.post(f"/v1/polls/{poll_id}/close", headers=admin).status_code == 200
    from_snapshot(http, poll_id, "closed")
    files = LedgerFiles(server.data_dir / "ledger")
    time.sleep(1)  # several archiver cycles: no certificate while votes are held
    assert files.read(poll_id, layout.CERTIFICATE) is None
    voided = decide(server, http, poll_id, {"decision": "void", "entries": entries(*held_b)})
    assert voided["voided"] == 2

    final = results_when(http, poll_id, lambda r: r["under_review"] == 0 and r["total"] == 5)
    assert (final["state"], final["counts"], final["total"], final["under_review"]) == (
        "closed", {"red": 3, "green": 2}, 5, 0,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while files.read(poll_id, layout.CERTIFICATE) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    key = Verifier.parse((server.data_dir / "ledger" / "keys").read_text().strip())
    origin = certificate_origin(key.name, poll_id)
    signed = files.read(poll_id, layout.CERTIFICATE)
    assert signed is not None, "no certificate within 30 s of the last decision"
    certificate = open_certificate(signed, [key.renamed(origin)], origin=origin)
    assert dict(certificate.counts) == final["counts"]
    assert certificate.review == ReviewTotals(held=5, released=3, voided=2)
    audit = subprocess.run(
        [sys.executable, "-m", "tally", "audit", "verify", str(files.poll_dir(poll_id)),
         "--key", str(key), "--poll", poll_id],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr

    for voter, status in ((voters_a[0], "released"), (voters_b[0], "voided")):
        repeat = vote(server, http, poll_id, voter, "red", "192.0.2.9")
        receipt = repeat.json()["receipt"]
        assert (repeat.status_code, receipt["status"]) == (409, status)
        receipt_file = tmp_path / f"{status}.json"
        receipt_file.write_text(json.dumps(receipt))
        checked = subprocess.run(
            [sys.executable, "-m", "tally", "audit", "receipt", str(receipt_file),
             str(files.poll_dir(poll_id)), "--key", str(key)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_tally_vote_and_results_say_held_and_under_review(
    server: RunningTally, http: httpx.Client
) -> None:
    """`tally vote` tells a held vote from an accepted one; `tally results` shows the votes
    under review beside the total."""
    poll_id = held_poll(server, http)
    voted = tally_cli(server, "vote", poll_id, "green", token=server.voter_token(new_voter()))
    assert voted.returncode == 0, voted.stderr
    assert voted.stdout.startswith("held for review (fresh-token): green in lane ")
    results_when(http, poll_id, lambda r: r["under_review"] == 1)
    shown = tally_cli(server, "results", poll_id)
    assert f"{poll_id}  [open]  total 0, 1 under review" in shown.stdout
