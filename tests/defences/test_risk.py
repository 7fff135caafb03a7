"""Fraud scoring (tally.security.risk, tally.service.risk): the scorer, its windowed counters, the
RiskCheck at the end of the admission chain, and the same over real HTTP against `tally serve`,
with each poll's rules taken from its own `defences`."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import connect

from conftest import RunningTally, StartTally
from tally.domain.admission import (
    Admit,
    Challenge,
    Evidence,
    Hold,
    Transport,
    Voter,
    VoteRequest,
)
from tally.domain.defences import Comparison, Defences, Risk, RiskRule, Signal
from tally.domain.polls import Option, Poll, PollState
from tally.domain.pseudonyms import pseudonym
from tally.gateway.metrics import LabelledCounter
from tally.security.pow import Challenges, difficulty_of, solve
from tally.security.risk import NO_REASON, RiskVerdict, WindowCounter, assess
from tally.service.risk import RiskCheck, Traffic

NOW_MS = 1_800_000_000_000
SECRET = b"s" * 32


def rule(signal: Signal, comparison: str, value: float, score: int, reason: str) -> RiskRule:
    return RiskRule(signal, Comparison(comparison), value, score, reason)


RULES = Risk(
    rules=(
        rule(Signal.SUBNET_VELOCITY, "above", 100, 40, "subnet-velocity"),
        rule(Signal.TOKEN_AGE_S, "below", 10, 20, "fresh-token"),
        rule(Signal.SOLVE_MS, "below", 5, 50, "instant-solve"),
    ),
    challenge_at=40,
    hold_at=80,
    harder_by=6,
)


# --- the scorer --------------------------------------------------------------------------------


def test_the_score_adds_the_rules_that_match_and_names_them_in_rule_order() -> None:
    """Every matching rule adds its score; its reason is listed; the heaviest names the verdict."""
    assessment = assess(
        RULES,
        {Signal.SUBNET_VELOCITY: 101, Signal.TOKEN_AGE_S: 3, Signal.SOLVE_MS: 900},
    )
    assert assessment.score == 60
    assert assessment.reasons == ("subnet-velocity", "fresh-token")
    assert assessment.reason == "subnet-velocity"
    assert assessment.verdict is RiskVerdict.CHALLENGE


@pytest.mark.parametrize(
    ("signals", "verdict"),
    [
        ({}, RiskVerdict.ADMIT),
        ({Signal.TOKEN_AGE_S: 1}, RiskVerdict.ADMIT),  # 20 < challenge_at
        ({Signal.SUBNET_VELOCITY: 101}, RiskVerdict.CHALLENGE),  # exactly challenge_at
        ({Signal.SUBNET_VELOCITY: 100}, RiskVerdict.ADMIT),  # "above" is strict
        ({Signal.SUBNET_VELOCITY: 500, Signal.SOLVE_MS: 1}, RiskVerdict.HOLD),  # 90 >= hold_at
        ({Signal.TOKEN_AGE_S: 0, Signal.SOLVE_MS: 0.5, Signal.FAILURES: 99}, RiskVerdict.CHALLENGE),
    ],
)
def test_the_thresholds_decide_the_verdict(
    signals: dict[Signal, float], verdict: RiskVerdict
) -> None:
    """challenge_at and hold_at are inclusive; a signal no rule names adds nothing."""
    assert assess(RULES, signals).verdict is verdict


def test_a_signal_that_was_not_measured_matches_no_rule() -> None:
    """A "below" rule must not count a request that simply lacks the signal (no answer, no iat)."""
    assessment = assess(RULES, {Signal.SUBNET_VELOCITY: 3})
    assert assessment.score == 0
    assert assessment.reasons == ()
    assert assessment.reason == NO_REASON


def test_negative_scores_lower_the_total() -> None:
    """A rule may vouch for a request (an old token, a slow human solve)."""
    risk = replace(
        RULES, rules=(*RULES.rules, rule(Signal.TOKEN_AGE_S, "above", 86400, -40, "old-account"))
    )
    assessment = assess(risk, {Signal.SUBNET_VELOCITY: 101, Signal.TOKEN_AGE_S: 90000})
    assert assessment.score == 0
    assert assessment.verdict is RiskVerdict.ADMIT


# --- the windowed counters ---------------------------------------------------------------------


def test_a_window_counter_counts_per_key_within_the_window() -> None:
    counter = WindowCounter(window_ms=1000)
    for _ in range(3):
        counter.add("a", 10_000)
    counter.add("b", 10_500)
    assert counter.count("a", 10_900) == 3
    assert counter.count("b", 10_900) == 1
    assert counter.count("c", 10_900) == 0


def test_the_previous_window_fades_out_as_the_window_slides() -> None:
    """Halfway through the next window, half of the previous window's events still count."""
    counter = WindowCounter(window_ms=1000)
    for _ in range(10):
        counter.add("a", 10_100)
    counter.add("a", 11_200)
    assert counter.count("a", 11_500) == pytest.approx(10 * 0.5 + 1)
    assert counter.count("a", 12_000) == pytest.approx(1.0)  # the 10 are a whole window old
    assert counter.count("a", 13_000) == 0  # and two windows later nothing is left


def test_a_window_counter_holds_at_most_its_bound_of_keys() -> None:
    """A flood of distinct keys cannot grow memory: past the bound new keys go unrecorded."""
    counter = WindowCounter(window_ms=1000, max_keys=100)
    for i in range(1000):
        counter.add(i, 10_000)
    assert len(counter) == 100
    assert counter.count(999, 10_001) == 0
    counter.add(999, 11_000)  # the next window starts empty
    assert counter.count(999, 11_001) == 1


def test_traffic_counts_refusals_but_not_the_first_challenge() -> None:
    """A 428 to a request without an answer is the normal challenge flow; other 4xx fail."""
    now = [NOW_MS]
    traffic = Traffic(lambda: now[0])
    ask = Evidence(Transport.HTTP, "203.0.113.7", "ua")
    traffic.answered(ask, 428)
    traffic.answered(ask, 201)
    assert traffic.failures.count("203.0.113.7", NOW_MS) == 0
    traffic.answered(ask._replace(challenge="1.x:1"), 428)  # a wrong answer is a failure
    traffic.answered(ask, 401)
    traffic.answered(ask, 503)  # ours, not the client's
    assert traffic.failures.count("203.0.113.7", NOW_MS) == 2
    assert traffic.subnets.count("203.0.113.0/24", NOW_MS) == 5


# --- RiskCheck, in process -----------------------------------------------------------------------


def poll_with(risk: Risk, difficulty: int = 10, max_difficulty: int = 22) -> Poll:
    defences = Defences()
    defences = replace(
        defences,
        pow=replace(defences.pow, difficulty=difficulty, max_difficulty=max_difficulty),
        risk=risk,
    )
    return Poll(
        id="p-risk",
        title="t",
        options=(Option("red", "Red"),),
        state=PollState.OPEN,
        lanes=4,
        closes_at_ms=None,
        created_at_ms=0,
        bucket_bits=8,
        defences=defences,
    )


VOTER = Voter("iss", "alice", issued_at=NOW_MS // 1000 - 5)
FRESH_ONLY = Risk(
    rules=(rule(Signal.TOKEN_AGE_S, "below", 10, 40, "fresh-token"),),
    challenge_at=40,
    hold_at=80,
    harder_by=6,
)


def risk_check() -> tuple[RiskCheck, Challenges, list[tuple[str, str]]]:
    counted: list[tuple[str, str]] = []
    challenges = Challenges(SECRET)
    check = RiskCheck(
        Traffic(lambda: NOW_MS), challenges, SECRET, lambda v, r: counted.append((v, r))
    )
    return check, challenges, counted


async def test_a_risky_vote_is_challenged_harder_capped_at_the_polls_maximum() -> None:
    """difficulty + harder_by, but never beyond max_difficulty; the 428's reason names the rules."""
    check, _, counted = risk_check()
    request = VoteRequest("p-risk", VOTER, "red", Evidence(Transport.HTTP))
    verdict = await check.check(request, poll_with(FRESH_ONLY, 10), NOW_MS)
    assert isinstance(verdict, Challenge)
    assert difficulty_of(verdict.challenge) == 16
    assert verdict.reason == "risk: fresh-token"
    capped = await check.check(request, poll_with(FRESH_ONLY, 10, max_difficulty=12), NOW_MS)
    assert isinstance(capped, Challenge)
    assert difficulty_of(capped.challenge) == 12
    assert counted == [("challenge", "fresh-token")] * 2


async def test_an_answer_solved_hard_enough_pays_for_the_score() -> None:
    """The harder challenge, solved, is admitted; a forged one claiming the same difficulty or
    one issued to another voter is challenged again."""
    check, challenges, counted = risk_check()
    poll = poll_with(FRESH_ONLY, 2, max_difficulty=8)
    mine = pseudonym(SECRET, poll.id, VOTER.issuer, VOTER.subject)
    challenge = challenges.issue(poll.id, mine, 8, NOW_MS - 1000, ttl_s=60)
    answer = f"{challenge}:{solve(challenge)}"
    solved = VoteRequest(poll.id, VOTER, "red", Evidence(Transport.HTTP, challenge=answer))
    assert isinstance(await check.check(solved, poll, NOW_MS), Admit)

    forged = Challenges(b"f" * 32).issue(poll.id, mine, 8, NOW_MS - 1000, ttl_s=60)
    other = challenges.issue(poll.id, b"x" * 16, 8, NOW_MS - 1000, ttl_s=60)
    for bad in (forged, other):
        bad_answer = f"{bad}:{solve(bad)}"
        request = solved._replace(evidence=Evidence(Transport.HTTP, challenge=bad_answer))
        assert isinstance(await check.check(request, poll, NOW_MS), Challenge)
    assert counted == [
        ("admit", "fresh-token"),
        ("challenge", "fresh-token"),
        ("challenge", "fresh-token"),
    ]


async def test_the_solve_time_comes_from_the_answers_issue_time() -> None:
    """An answer issued 3 ms before the vote is an instant solve; one issued a second before is
    not."""
    check, challenges, counted = risk_check()
    risk = Risk(
        rules=(rule(Signal.SOLVE_MS, "below", 5, 80, "instant-solve"),),
        challenge_at=40,
        hold_at=80,
    )
    poll = poll_with(risk, 0)
    mine = pseudonym(SECRET, poll.id, VOTER.issuer, VOTER.subject)
    for issued_ago, expected in ((3, Hold), (1000, Admit)):
        challenge = challenges.issue(poll.id, mine, 0, NOW_MS - issued_ago, ttl_s=60)
        evidence = Evidence(Transport.HTTP, challenge=f"{challenge}:0")
        verdict = await check.check(VoteRequest(poll.id, VOTER, "red", evidence), poll, NOW_MS)
        assert isinstance(verdict, expected)
    assert counted == [("hold", "instant-solve"), ("admit", NO_REASON)]


async def test_a_poll_without_rules_and_in_process_callers_are_not_scored() -> None:
    """No rules, nothing to score; an in-process caller (no network, no way to solve) neither."""
    check, _, counted = risk_check()
    request = VoteRequest("p-risk", VOTER, "red", Evidence(Transport.HTTP))
    assert isinstance(await check.check(request, poll_with(Risk(rules=())), NOW_MS), Admit)
    internal = request._replace(evidence=Evidence(Transport.INTERNAL))
    assert isinstance(await check.check(internal, poll_with(FRESH_ONLY), NOW_MS), Admit)
    assert counted == []


# --- over HTTP ---------------------------------------------------------------------------------


def defences(rules: list[dict[str, Any]], **thresholds: int) -> dict[str, Any]:
    """A poll's defences: no rate limits (they answer first and are tested elsewhere), no
    challenge by default, and these risk rules."""
    return {
        "limits": {"address": None, "subnet": None, "voter": None, "poll": None},
        "pow": {"difficulty": 0, "max_difficulty": 22},
        "risk": {"rules": rules, "challenge_at": 40, "hold_at": 80, "harder_by": 4, **thresholds},
    }


def vote(
    server: RunningTally,
    poll_id: str,
    token: str,
    option: str = "red",
    *,
    user_agent: str = "test-agent/1",
    proof: str | None = None,
) -> tuple[int, dict[str, Any]]:
    body: dict[str, str] = {"option": option}
    if proof is not None:
        body["proof"] = proof
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request(
            "POST",
            f"/v1/polls/{poll_id}/votes",
            body=json.dumps(body),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": user_agent,
            },
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def fetch_challenge(server: RunningTally, poll_id: str, token: str) -> str:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request(
            "GET", f"/v1/polls/{poll_id}/challenge", headers={"Authorization": f"Bearer {token}"}
        )
        response = connection.getresponse()
        assert response.status == 200
        challenge: str = json.loads(response.read())["challenge"]
        return challenge
    finally:
        connection.close()


def answer(challenge: str) -> str:
    return f"{challenge}:{solve(challenge)}"


def metrics_text(server: RunningTally) -> str:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def verdict_metrics(server: RunningTally) -> dict[tuple[str, str], int]:
    """tally_risk_verdicts_total's samples from /metrics, by (verdict, reason)."""
    found = {}
    for line in metrics_text(server).splitlines():
        if line.startswith("tally_risk_verdicts_total{"):
            labels, value = line.removeprefix("tally_risk_verdicts_total{").split("} ")
            pairs = dict(part.split("=") for part in labels.split(","))
            found[pairs["verdict"].strip('"'), pairs["reason"].strip('"')] = int(value)
    return found


def test_a_burst_from_one_subnet_is_challenged_harder_then_held(start_tally: StartTally) -> None:
    """Velocity rules from the poll: past 5 requests a minute from 127.0.0.0/24 a vote needs a
    challenge 4 bits harder (428 with it; solved, it is admitted), past 12 it is held (202);
    every verdict is counted by reason in /metrics and only admitted votes are counted."""
    server = start_tally()
    rules = [
        {"signal": "subnet_velocity", "comparison": "above", "value": 5, "score": 40,
         "reason": "subnet-velocity"},
        {"signal": "subnet_velocity", "comparison": "above", "value": 12, "score": 50,
         "reason": "subnet-flood"},
    ]  # fmt: skip
    poll_id = str(server.open_poll(defences=defences(rules))["id"])
    tokens = [server.voter_token(f"v{i}") for i in range(15)]
    # The counters' windows are whole minutes: past a minute's end the previous one's count
    # fades, so on a slow machine the exact thresholds below could slip: start with 15 s left.
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60)
    statuses = [vote(server, poll_id, token)[0] for token in tokens[:5]]
    assert statuses == [201] * 5
    status, challenged = vote(server, poll_id, tokens[5])
    assert status == 428
    assert challenged["code"] == "challenge-required"
    assert challenged["detail"] == "risk: subnet-velocity"
    assert challenged["difficulty"] == 4  # the poll's 0 + harder_by
    status, _ = vote(server, poll_id, tokens[5], proof=answer(challenged["challenge"]))
    assert status == 201  # the 7th request, solved hard enough
    statuses = [vote(server, poll_id, token)[0] for token in tokens[6:]]
    assert statuses == [428] * 5 + [202] * 4  # requests 8-12, then 13-16
    status, held = vote(server, poll_id, server.voter_token("late"))
    assert status == 202
    assert held["held"]["reason"] == "subnet-flood"
    assert verdict_metrics(server) == {
        ("admit", "none"): 5,
        ("admit", "subnet-velocity"): 1,
        ("challenge", "subnet-velocity"): 6,
        ("hold", "subnet-flood"): 5,
    }
    assert 'tally_challenges_issued_total{via="risk"} 6' in metrics_text(server)
    results = server.results(poll_id, total=6)
    assert results["total"] == 6  # neither the challenged nor the held votes are counted


def test_instant_solves_score_and_slow_ones_do_not(start_tally: StartTally) -> None:
    """solve_ms is the vote's time minus the challenge's issue time: a challenge fetched, solved
    and sent at once is held; one sent half a second after it was issued is admitted."""
    server = start_tally()
    rules = [
        {"signal": "solve_ms", "comparison": "below", "value": 300, "score": 80,
         "reason": "instant-solve"},
    ]  # fmt: skip
    poll = defences(rules)
    poll["pow"]["difficulty"] = 4
    poll_id = str(server.open_poll(defences=poll)["id"])
    bot, human = server.voter_token("bot"), server.voter_token("human")
    status, body = vote(server, poll_id, bot, proof=answer(fetch_challenge(server, poll_id, bot)))
    assert status == 202
    assert body["held"]["reason"] == "instant-solve"
    challenge = fetch_challenge(server, poll_id, human)
    time.sleep(0.5)
    assert vote(server, poll_id, human, proof=answer(challenge))[0] == 201


def test_fresh_tokens_score_and_old_ones_do_not(start_tally: StartTally) -> None:
    """token_age_s from the token's iat: a token issued just now is held, one issued two minutes
    ago is admitted."""
    server = start_tally()
    rules = [
        {"signal": "token_age_s", "comparison": "below", "value": 30, "score": 80,
         "reason": "fresh-token"},
    ]  # fmt: skip
    poll_id = str(server.open_poll(defences=defences(rules))["id"])
    fresh = server.issuer.mint("fresh")
    old = server.issuer.mint("old", now=time.time() - 120)
    assert vote(server, poll_id, fresh)[0] == 202
    assert vote(server, poll_id, old)[0] == 201
    assert verdict_metrics(server) == {("hold", "fresh-token"): 1, ("admit", "none"): 1}


def test_repeated_failures_from_an_address_are_held(start_tally: StartTally) -> None:
    """Refused attempts (unknown options, bad tokens) from 127.0.0.1 feed the failures signal."""
    server = start_tally()
    rules = [
        {"signal": "failures", "comparison": "above", "value": 3, "score": 80,
         "reason": "repeated-failures"},
    ]  # fmt: skip
    poll_id = str(server.open_poll(defences=defences(rules))["id"])
    assert vote(server, poll_id, server.voter_token("a"))[0] == 201
    for i in range(3):
        assert vote(server, poll_id, server.voter_token(f"typo{i}"), option="mauve")[0] == 422
    assert vote(server, poll_id, "not-a-token")[0] == 401
    status, body = vote(server, poll_id, server.voter_token("b"))
    assert status == 202
    assert body["held"]["reason"] == "repeated-failures"


def test_rules_are_per_poll(start_tally: StartTally) -> None:
    """The same requests score under one poll's rules and not under another's: agent velocity
    above 2 holds on the strict poll while the lenient poll admits every vote."""
    server = start_tally()
    strict = [
        {"signal": "agent_velocity", "comparison": "above", "value": 2, "score": 90,
         "reason": "agent-velocity"},
    ]  # fmt: skip
    strict_id = str(server.open_poll(defences=defences(strict))["id"])
    lenient_id = str(server.open_poll(defences=defences([]))["id"])
    for i in range(4):
        assert vote(server, lenient_id, server.voter_token(f"l{i}"), user_agent="farm/1")[0] == 201
    assert vote(server, strict_id, server.voter_token("s1"), user_agent="farm/1")[0] == 202
    assert vote(server, strict_id, server.voter_token("s2"), user_agent="human/1")[0] == 201


def test_verdict_metrics_stay_bounded_whatever_the_rules_are_named() -> None:
    """Reasons come from poll data: past the cap a new label set is counted as reason "other"."""
    counter = LabelledCounter("tally_risk_verdicts_total", "verdicts", ("verdict", "reason"), 3)
    for i in range(10):
        counter.inc("hold", f"rule-{i}")
    counter.inc("hold", "rule-0")
    assert counter.render()[2:] == [
        'tally_risk_verdicts_total{verdict="hold",reason="other"} 7',
        'tally_risk_verdicts_total{verdict="hold",reason="rule-0"} 2',
        'tally_risk_verdicts_total{verdict="hold",reason="rule-1"} 1',
        'tally_risk_verdicts_total{verdict="hold",reason="rule-2"} 1',
    ]


async def ws_vote(server: RunningTally, poll_id: str, subject: str, agent: str) -> dict[str, Any]:
    """One vote over the live WebSocket: its vote_result frame."""
    url = f"ws://{server.host}:{server.port}/v1/polls/{poll_id}/live"
    async with connect(url, open_timeout=5, user_agent_header=agent, proxy=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": server.voter_token(subject)}))
        await ws.send(json.dumps({"type": "vote", "request_id": "r1", "option": "red"}))
        async with asyncio.timeout(5):
            while True:
                message: dict[str, Any] = json.loads(await ws.recv())
                if message["type"] == "vote_result":
                    return message


async def test_websocket_votes_are_counted_and_scored_like_http_votes(
    start_tally: StartTally,
) -> None:
    """The live WebSocket's votes feed the same counters and get the same verdicts: the third
    vote with one user agent is held (a 202 vote_result), as over HTTP."""
    server = start_tally()
    rules = [
        {"signal": "agent_velocity", "comparison": "above", "value": 2, "score": 90,
         "reason": "agent-velocity"},
    ]  # fmt: skip
    poll_id = str(server.open_poll(defences=defences(rules))["id"])
    answers = [await ws_vote(server, poll_id, f"ws{i}", "farm/2") for i in range(3)]
    assert [a["status"] for a in answers] == [201, 201, 202]
    assert answers[2]["held"]["reason"] == "agent-velocity"
    assert verdict_metrics(server)[("hold", "agent-velocity")] == 1
