"""The proof-of-work challenge end to end against `tally serve`: a vote that needs an answer and
lacks one gets 428 with the challenge; a solved one is counted; replayed, expired, wrong-poll,
wrong-voter and forged answers are refused with `challenge-invalid` and change nothing; the same
over the live WebSocket; `tally vote` solves by itself. Plus the single-use claim on a real Valkey.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from websockets.sync.client import connect

from conftest import RunningTally
from tally.domain.admission import Admit, Challenge, Evidence, Transport, Voter, VoteRequest
from tally.domain.defences import Defences, ProofOfWork
from tally.domain.polls import Option, Poll, PollState
from tally.ports import StoreClient
from tally.security.pow import Challenges, difficulty_of, solve
from tally.service.challenges import ChallengeCheck
from tally.store.challenges import ValkeySpentChallenges

PROBLEM = "application/problem+json"


def call(
    tally: RunningTally, method: str, path: str, body: object = None, token: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON document, lower-cased headers) of one request on a fresh connection."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection = http.client.HTTPConnection(tally.host, tally.port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        received = {k.lower(): v for k, v in response.getheaders()}
        return response.status, json.loads(raw) if raw else {}, received
    finally:
        connection.close()


def new_poll(
    tally: RunningTally, difficulty: int = 8, ttl_s: int = 300, *, open_: bool = True
) -> str:
    """A poll that asks for `difficulty` bits (every other defence off, as the suite's default)."""
    admin = tally.admin()
    poll = admin.post(
        "/v1/polls",
        {
            "title": "pow",
            "options": ["Red", "Green"],
            "lanes": 2,
            "defences": {"pow": {"difficulty": difficulty, "ttl_s": ttl_s}},
        },
    )
    if open_:
        admin.post(f"/v1/polls/{poll['id']}/open")
    return str(poll["id"])


def vote(
    tally: RunningTally, poll_id: str, token: str, proof: str | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"option": "red"}
    if proof is not None:
        body["proof"] = proof
    status, document, headers = call(tally, "POST", f"/v1/polls/{poll_id}/votes", body, token)
    if status >= 400:
        assert headers["content-type"] == PROBLEM
    return status, document


def challenge_of(tally: RunningTally, poll_id: str, token: str) -> dict[str, Any]:
    status, document, headers = call(tally, "GET", f"/v1/polls/{poll_id}/challenge", token=token)
    assert status == 200, document
    assert headers["cache-control"] == "no-store"
    return document


def answer_to(document: dict[str, Any]) -> str:
    challenge = document["challenge"]
    return f"{challenge}:{solve(challenge)}"


def voter(tally: RunningTally) -> str:
    return tally.voter_token(f"v-{uuid.uuid4().hex[:10]}")


def total(tally: RunningTally, poll_id: str, expected: int) -> int:
    return int(tally.results(poll_id, total=expected)["total"])


def assert_refused(status: int, document: dict[str, Any], reason: str) -> None:
    assert status == 403, document
    assert document["code"] == "challenge-invalid"
    assert document["type"] == "urn:tally:problem:challenge-invalid"
    assert document["reason"] == reason


def test_a_vote_without_an_answer_gets_428_with_a_challenge_to_solve(tally: RunningTally) -> None:
    """428 challenge-required carries the challenge, its algorithm, difficulty and expiry; its
    answer sent with the vote is counted (201)."""
    poll_id = new_poll(tally, difficulty=10)
    token = voter(tally)
    status, problem = vote(tally, poll_id, token)
    assert status == 428
    assert problem["code"] == "challenge-required"
    assert (problem["algorithm"], problem["difficulty"]) == ("SHA-256", 10)
    assert problem["expires_at"].endswith("Z")
    status, accepted = vote(tally, poll_id, token, answer_to(problem))
    assert status == 201, accepted
    assert accepted["receipt"]["option"] == "red"
    assert total(tally, poll_id, 1) == 1


def test_the_challenge_endpoint_issues_one_for_the_voter(tally: RunningTally) -> None:
    """GET .../challenge answers at the poll's difficulty; 401 without a token, 404 for no such
    poll, 400 for a malformed id; a poll asking for none still answers with difficulty 0."""
    poll_id = new_poll(tally, difficulty=9)
    token = voter(tally)
    document = challenge_of(tally, poll_id, token)
    assert (document["algorithm"], document["difficulty"]) == ("SHA-256", 9)
    assert set(document) == {"challenge", "algorithm", "difficulty", "expires_at"}
    assert vote(tally, poll_id, token, answer_to(document))[0] == 201
    status, problem, _ = call(tally, "GET", f"/v1/polls/{poll_id}/challenge")
    assert (status, problem["code"]) == (401, "unauthorized")
    status, problem, _ = call(tally, "GET", "/v1/polls/nope/challenge", token=token)
    assert (status, problem["code"]) == (404, "poll-not-found")
    status, problem, _ = call(tally, "GET", "/v1/polls/NOPE!/challenge", token=token)
    assert (status, problem["code"]) == (400, "invalid-poll-id")
    free = new_poll(tally, difficulty=0)
    assert challenge_of(tally, free, token)["difficulty"] == 0
    assert vote(tally, free, token)[0] == 201  # no answer needed


def test_a_replayed_answer_is_refused_and_changes_nothing(tally: RunningTally) -> None:
    """An answer is spent by the first vote that passes the challenge, even when that vote is
    then refused (here: the poll was still a draft, voted on by an organiser, since to anyone
    else a draft is an unknown poll); sent again once the poll is open it is refused as
    replayed, no vote is recorded, and a fresh answer then votes for the first time."""
    poll_id = new_poll(tally, open_=False)
    token = tally.admin_token()
    answer = answer_to(challenge_of(tally, poll_id, token))
    status, problem = vote(tally, poll_id, token, answer)
    assert (status, problem["code"]) == (409, "poll-not-open")
    tally.admin().post(f"/v1/polls/{poll_id}/open")
    assert_refused(*vote(tally, poll_id, token, answer), "replayed")
    assert total(tally, poll_id, 0) == 0
    status, accepted = vote(tally, poll_id, token, answer_to(challenge_of(tally, poll_id, token)))
    assert status == 201, accepted  # not 409 already-voted: the replay recorded nothing
    assert_refused(*vote(tally, poll_id, token, answer), "replayed")
    assert total(tally, poll_id, 1) == 1


def test_expired_wrong_poll_wrong_voter_and_forged_answers_are_refused(
    tally: RunningTally,
) -> None:
    """Each refusal names its reason and records nothing: the same voter votes afterwards."""
    short = new_poll(tally, difficulty=4, ttl_s=1)
    other = new_poll(tally, difficulty=4)
    token, someone_else = voter(tally), voter(tally)
    expired = answer_to(challenge_of(tally, short, token))
    wrong_poll = answer_to(challenge_of(tally, other, token))
    wrong_voter = answer_to(challenge_of(tally, short, someone_else))
    genuine = challenge_of(tally, short, token)["challenge"]
    forged_difficulty = genuine.replace(".4.", ".0.", 1) + ":0"
    foreign_key = Challenges(b"not the server's secret" * 2).issue(
        short, bytes(16), 0, int(time.time() * 1000), 60
    )
    time.sleep(1.05)
    assert_refused(*vote(tally, short, token, expired), "expired")
    assert_refused(*vote(tally, short, token, wrong_poll), "wrong-poll")
    assert_refused(*vote(tally, short, token, wrong_voter), "wrong-voter")
    assert_refused(*vote(tally, short, token, forged_difficulty), "forged")
    assert_refused(*vote(tally, short, token, foreign_key + ":0"), "forged")
    assert_refused(*vote(tally, short, token, "not an answer"), "malformed")
    assert total(tally, short, 0) == 0
    assert vote(tally, short, token, answer_to(challenge_of(tally, short, token)))[0] == 201
    assert total(tally, short, 1) == 1


def test_an_answer_that_is_not_a_string_or_too_long_is_a_422(tally: RunningTally) -> None:
    poll_id = new_poll(tally)
    token = voter(tally)
    for proof in (42, "x" * 401):
        status, problem, _ = call(
            tally, "POST", f"/v1/polls/{poll_id}/votes", {"option": "red", "proof": proof}, token
        )
        assert (status, problem["code"]) == (422, "validation-failed")


def test_answers_are_counted_in_metrics(tally: RunningTally) -> None:
    """/metrics counts challenges issued (by how) and answers (by result)."""
    poll_id = new_poll(tally, difficulty=4)
    token = voter(tally)
    problem = vote(tally, poll_id, token)[1]
    answer = answer_to(problem)
    assert vote(tally, poll_id, token, answer)[0] == 201
    assert vote(tally, poll_id, token, answer)[0] == 403
    challenge_of(tally, poll_id, token)
    connection = http.client.HTTPConnection(tally.host, tally.port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    for line in (
        'tally_challenges_issued_total{via="vote"}',
        'tally_challenges_issued_total{via="endpoint"}',
        'tally_challenge_answers_total{result="solved"}',
        'tally_challenge_answers_total{result="replayed"}',
    ):
        assert any(
            row.startswith(line + " ") and int(row.split()[-1]) >= 1 for row in text.splitlines()
        ), line


def test_a_websocket_vote_carries_its_answer(tally: RunningTally) -> None:
    """Over the live WebSocket: 428 with the challenge, then the answer in the vote frame: 201;
    a replay of it: 403 challenge-invalid, as over HTTP."""
    poll_id = new_poll(tally, difficulty=8)
    token = voter(tally)
    url = f"ws://{tally.host}:{tally.port}/v1/polls/{poll_id}/live"
    with connect(url, open_timeout=10) as ws:

        def frame(message: dict[str, Any], wanted: str) -> dict[str, Any]:
            ws.send(json.dumps(message))
            while True:
                received: dict[str, Any] = json.loads(ws.recv(timeout=10))
                if received["type"] == wanted:
                    return received

        assert frame({"type": "auth", "token": token}, "auth_result")["status"] == 200
        asked = frame({"type": "vote", "request_id": "a", "option": "red"}, "vote_result")
        assert asked["status"] == 428
        assert asked["error"]["difficulty"] == 8
        answer = answer_to(asked["error"])
        voted = frame(
            {"type": "vote", "request_id": "b", "option": "red", "proof": answer}, "vote_result"
        )
        assert voted["status"] == 201, voted
        again = frame(
            {"type": "vote", "request_id": "c", "option": "red", "proof": answer}, "vote_result"
        )
        assert again["status"] == 403
        assert again["error"]["reason"] == "replayed"
    assert total(tally, poll_id, 1) == 1


def test_tally_vote_solves_the_challenge(tally: RunningTally) -> None:
    """The CLI meets the 428, solves the challenge and votes: exit 0, the vote is counted."""
    poll_id = new_poll(tally, difficulty=12)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tally", "vote", poll_id, "green", "--json"),
            *("--url", tally.url, "--token", voter(tally)),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # --json prints only the data: the solving progress shows on a terminal, never here.
    assert done.stderr == b""
    assert json.loads(done.stdout)["receipt"]["option"] == "green"
    assert tally.results(poll_id, total=1)["counts"]["green"] == 1


POLL = Poll(
    id="pow-poll",
    title="t",
    options=(Option("red", "Red"),),
    state=PollState.OPEN,
    lanes=1,
    closes_at_ms=None,
    created_at_ms=0,
    bucket_bits=4,
    defences=Defences(pow=ProofOfWork(difficulty=16)),
)


async def test_a_challenge_is_spent_once_across_concurrent_gateways(valkey: StoreClient) -> None:
    """Of many concurrent claims of one answer (two clients, as two gateways), exactly one wins;
    an in-process caller needs no answer at all."""
    spent = ValkeySpentChallenges(valkey)
    spend_id = uuid.uuid4().hex
    claims = await asyncio.gather(*(spent.spend(spend_id, 5_000) for _ in range(20)))
    assert claims.count(True) == 1
    assert not await spent.spend(spend_id, 5_000)
    check = ChallengeCheck(Challenges(b"k" * 32), spent, b"k" * 32)
    internal = VoteRequest(POLL.id, Voter("iss", "sub"), "red", Evidence(Transport.INTERNAL))
    assert isinstance(await check.check(internal, POLL, 1), Admit)
    over_http = internal._replace(evidence=Evidence(Transport.HTTP, "127.0.0.1"))
    asked = await check.check(over_http, POLL, 1)
    assert isinstance(asked, Challenge)
    assert difficulty_of(asked.challenge) == 16


async def test_a_spent_challenge_is_forgotten_when_it_expires(valkey: StoreClient) -> None:
    """The claim lives only as long as the challenge: the store does not fill up."""
    spent = ValkeySpentChallenges(valkey)
    spend_id = uuid.uuid4().hex
    assert await spent.spend(spend_id, 100)
    assert 0 < int(await valkey.call("PTTL", f"tally:pow:{{{spend_id}}}")) <= 100
    await asyncio.sleep(0.15)
    assert await spent.spend(spend_id, 100)
