"""The HTTP API's contract, outcome by outcome: polls, votes, tokens, deadlines, results and the
operational endpoints, each against a real server with its embedded Valkey."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from api_http import JSON, Answer, assert_problem, get_json, send, send_json

from conftest import RunningTally, StartTally
from tally.security.dev_issuer import DevIssuer

POLL_FIELDS = {
    "id", "title", "options", "state", "lanes", "closes_at", "created_at", "defences",
    "visibility",  # who sees the counts before the close (tests/api/test_visibility_api.py)
    "join_code",  # the short code /j/{code} and the QR code lead to (tests/api/test_presenter_api.py)
}  # fmt: skip
RECEIPT_FIELDS = {
    "poll_id", "lane", "entry_id", "option", "accepted_at", "leaf_hash",
    "pseudonym", "admission",  # the gateway's admission signature (tests/admission)
}  # fmt: skip
RFC3339_UTC_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def moment(text: str) -> datetime:
    assert RFC3339_UTC_MS.fullmatch(text), text
    return datetime.fromisoformat(text)


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def create_poll(tally: RunningTally, **body: Any) -> dict[str, Any]:
    """A new draft poll (red, green, blue unless `options` is given)."""
    answer = send_json(
        tally,
        "POST",
        "/v1/polls",
        {"title": "api poll", "options": ["Red", "Green", "Blue"], **body},
        token=tally.admin_token(),
    )
    assert answer.status == 201, answer.body
    poll: dict[str, Any] = answer.json()
    return poll


def move(tally: RunningTally, poll_id: str, action: str) -> Answer:
    return send(tally, "POST", f"/v1/polls/{poll_id}/{action}", token=tally.admin_token())


def cast(tally: RunningTally, poll_id: str, option: str, token: str) -> Answer:
    return send_json(tally, "POST", f"/v1/polls/{poll_id}/votes", {"option": option}, token=token)


def results(tally: RunningTally, poll_id: str) -> dict[str, Any]:
    return tally.results(poll_id)


@pytest.fixture
def open_poll(tally: RunningTally) -> str:
    """A fresh open poll with options red, green and blue on 4 lanes."""
    return str(tally.open_poll(lanes=4)["id"])


# Polls


def test_creating_a_poll_answers_201_with_the_draft_and_its_location(tally: RunningTally) -> None:
    """POST /v1/polls makes a draft with slugged option ids, default lanes and no deadline."""
    answer = send_json(
        tally,
        "POST",
        "/v1/polls",
        {"title": "  Song of the night ", "options": ["Ärger im Paradies", "Nothing Else"]},
        token=tally.admin_token(),
    )
    assert (answer.status, answer.media_type) == (201, JSON)
    poll = answer.json()
    assert set(poll) == POLL_FIELDS
    assert answer.headers["location"] == f"/v1/polls/{poll['id']}"
    assert poll["title"] == "Song of the night"
    assert poll["options"] == [
        {"id": "ärger-im-paradies", "label": "Ärger im Paradies"},
        {"id": "nothing-else", "label": "Nothing Else"},
    ]
    assert (poll["state"], poll["lanes"], poll["closes_at"]) == ("draft", 16, None)
    assert abs(moment(poll["created_at"]) - datetime.now(UTC)) < timedelta(seconds=30)


def test_options_given_as_id_and_label_keep_their_ids(tally: RunningTally) -> None:
    """Options may be {id, label} objects, mixed with plain labels."""
    poll = create_poll(tally, options=[{"id": "a1", "label": "First"}, "Second"])
    assert poll["options"] == [{"id": "a1", "label": "First"}, {"id": "second", "label": "Second"}]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"options": ["Yes", "No"]}, id="2 options"),
        pytest.param({"options": [f"Option {i}" for i in range(64)]}, id="64 options"),
        pytest.param({"lanes": 1}, id="1 lane"),
        pytest.param({"lanes": 1024}, id="1024 lanes"),
        pytest.param({"title": "é" * 200}, id="title of 200 characters"),
        pytest.param({"options": ["x" * 100, "y"]}, id="label of 100 characters"),
        pytest.param({"closes_at": "2099-12-31T20:00:00+02:00"}, id="closes_at with an offset"),
        pytest.param({"expected_voters": 1}, id="1 expected voter"),
    ],
)
def test_values_at_the_limits_are_accepted(tally: RunningTally, body: dict[str, Any]) -> None:
    """Every limit is inclusive: the extreme allowed values create a poll."""
    poll = create_poll(tally, **body)
    assert poll["state"] == "draft"


def test_closes_at_reads_back_in_utc(tally: RunningTally) -> None:
    """A deadline given with an offset is stored as that instant and shown in UTC."""
    poll = create_poll(tally, closes_at="2099-12-31T20:00:00+02:00")
    assert poll["closes_at"] == "2099-12-31T18:00:00.000Z"


def test_a_poll_reads_back_the_same_alone_and_in_the_list(tally: RunningTally) -> None:
    """GET /v1/polls/{id} and GET /v1/polls show the poll exactly as created (a draft: to an
    admin, with ?include=drafts; tests/api/test_drafts.py has the public side)."""
    poll = create_poll(tally)
    admin = tally.admin_token()
    assert get_json(tally, f"/v1/polls/{poll['id']}", token=admin) == poll
    listed = get_json(tally, "/v1/polls?include=drafts", token=admin)["polls"]
    assert all(set(p) == POLL_FIELDS for p in listed)
    assert poll in listed


def test_open_then_close_answers_200_with_the_moved_poll(tally: RunningTally) -> None:
    """A draft opens, an open poll closes; each answer is the poll in its new state."""
    poll = create_poll(tally)
    opened = move(tally, poll["id"], "open")
    assert (opened.status, opened.json()) == (200, {**poll, "state": "open"})
    closed = move(tally, poll["id"], "close")
    assert (closed.status, closed.json()) == (200, {**poll, "state": "closed"})
    assert get_json(tally, f"/v1/polls/{poll['id']}")["state"] == "closed"


def test_a_draft_can_be_cancelled(tally: RunningTally) -> None:
    """Closing a draft that never opened is a legal move."""
    poll = create_poll(tally)
    assert move(tally, poll["id"], "close").json()["state"] == "closed"


@pytest.mark.parametrize(
    ("moves", "illegal"),
    [
        pytest.param(["open"], "open", id="open an open poll"),
        pytest.param(["close"], "open", id="open a cancelled draft"),
        pytest.param(["open", "close"], "open", id="reopen a closed poll"),
        pytest.param(["open", "close"], "close", id="close a closed poll"),
    ],
)
def test_an_illegal_move_is_409_and_leaves_the_state(
    tally: RunningTally, moves: list[str], illegal: str
) -> None:
    """A move the lifecycle forbids is refused with invalid-transition; the state stays."""
    poll_id = create_poll(tally)["id"]
    for action in moves:
        assert move(tally, poll_id, action).status == 200
    before = get_json(tally, f"/v1/polls/{poll_id}")
    problem = assert_problem(move(tally, poll_id, illegal), 409, "invalid-transition")
    assert problem["state"] == before["state"]
    assert get_json(tally, f"/v1/polls/{poll_id}") == before


def test_opening_a_draft_past_its_deadline_does_not_report_it_open(tally: RunningTally) -> None:
    """A draft whose deadline has passed cannot become a poll that says "open" yet takes no votes."""
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    poll_id = create_poll(tally, closes_at=rfc3339(deadline))["id"]
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.1)
    answer = move(tally, poll_id, "open")
    assert answer.json()["state"] != "open"
    assert get_json(tally, f"/v1/polls/{poll_id}", token=tally.admin_token())["state"] != "open"


# Votes


def test_an_accepted_vote_answers_201_with_a_complete_receipt(
    tally: RunningTally, open_poll: str
) -> None:
    """The receipt names the poll, a lane of the poll, a 1-based ledger entry, the option, a time."""
    answer = cast(tally, open_poll, "green", tally.voter_token("receipt-voter"))
    assert (answer.status, answer.media_type) == (201, JSON)
    document = answer.json()
    assert set(document) == {"receipt"}
    receipt = document["receipt"]
    assert set(receipt) == RECEIPT_FIELDS
    assert receipt["poll_id"] == open_poll
    assert receipt["option"] == "green"
    assert type(receipt["lane"]) is int
    assert 0 <= receipt["lane"] < 4
    assert receipt["entry_id"] == 1  # the first vote in its lane
    # The leaf hash itself is checked against the published log in tests/api/test_ledger_api.py.
    assert re.fullmatch(r"[0-9a-f]{64}", receipt["leaf_hash"])
    assert abs(moment(receipt["accepted_at"]) - datetime.now(UTC)) < timedelta(seconds=30)
    assert results(tally, open_poll)["counts"] == {"red": 0, "green": 1, "blue": 0}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_tokens_of_every_algorithm_are_accepted(
    tally: RunningTally, open_poll: str, alg: str
) -> None:
    """EdDSA, ES256 and RS256 voter tokens all cast a vote."""
    assert cast(tally, open_poll, "red", tally.voter_token(f"voter-{alg}", alg=alg)).status == 201


def test_a_second_vote_is_409_already_voted_with_the_first_receipt(
    tally: RunningTally, open_poll: str
) -> None:
    """The same voter voting again, for any option, gets the original receipt and no new count."""
    token = tally.voter_token("twice")
    first = cast(tally, open_poll, "red", token).json()["receipt"]
    for option in ("red", "blue"):
        problem = assert_problem(cast(tally, open_poll, option, token), 409, "already-voted")
        assert problem["receipt"] == first
    assert results(tally, open_poll)["counts"] == {"red": 1, "green": 0, "blue": 0}


def test_one_subject_is_one_voter_whatever_the_token(tally: RunningTally, open_poll: str) -> None:
    """A fresh token (another algorithm, another jti) for the same subject cannot vote again."""
    first = cast(tally, open_poll, "red", tally.voter_token("one-person")).json()["receipt"]
    again = cast(tally, open_poll, "blue", tally.voter_token("one-person", alg="RS256"))
    assert assert_problem(again, 409, "already-voted")["receipt"] == first


def test_a_repeat_after_the_poll_closed_still_gets_the_receipt(
    tally: RunningTally, open_poll: str
) -> None:
    """A voter retrying after close learns their vote counted, rather than that the poll is shut."""
    token = tally.voter_token("early-bird")
    first = cast(tally, open_poll, "blue", token).json()["receipt"]
    assert move(tally, open_poll, "close").status == 200
    problem = assert_problem(cast(tally, open_poll, "blue", token), 409, "already-voted")
    assert problem["receipt"] == first


def test_a_vote_in_a_draft_is_409_poll_not_open_to_an_admin_and_404_to_a_voter(
    tally: RunningTally,
) -> None:
    """A poll that has not opened refuses votes: an organiser is told it is a draft; to a voter a
    draft is an unknown poll (tests/api/test_drafts_everywhere.py)."""
    poll_id = create_poll(tally)["id"]
    problem = assert_problem(cast(tally, poll_id, "red", tally.admin_token()), 409, "poll-not-open")
    assert problem["state"] == "draft"
    assert_problem(
        cast(tally, poll_id, "red", tally.voter_token("too-soon")), 404, "poll-not-found"
    )
    # A draft's results are the organiser's (tests/api/test_drafts.py).
    assert get_json(tally, f"/v1/polls/{poll_id}/results", token=tally.admin_token())["total"] == 0


def test_a_vote_in_a_closed_poll_is_409_poll_not_open(tally: RunningTally, open_poll: str) -> None:
    """A closed poll refuses new voters and says it is closed."""
    assert move(tally, open_poll, "close").status == 200
    problem = assert_problem(
        cast(tally, open_poll, "red", tally.voter_token("too-late")), 409, "poll-not-open"
    )
    assert problem["state"] == "closed"
    assert results(tally, open_poll)["total"] == 0


def test_an_unknown_option_is_422_and_does_not_use_up_the_vote(
    tally: RunningTally, open_poll: str
) -> None:
    """A vote for an option the poll lacks is refused, and the voter can still vote properly."""
    token = tally.voter_token("typo")
    problem = assert_problem(cast(tally, open_poll, "purple", token), 422, "unknown-option")
    assert problem["option"] == "purple"
    # The valid ones, to choose from (from the definition the gateway holds: no store read).
    assert problem["options"] == [
        {"id": "red", "label": "Red"},
        {"id": "green", "label": "Green"},
        {"id": "blue", "label": "Blue"},
    ]
    assert problem["detail"] == (
        "no option 'purple'; the options are: red (Red), green (Green), blue (Blue)"
    )
    assert cast(tally, open_poll, "red", token).status == 201


def test_a_vote_in_an_unknown_poll_is_404(tally: RunningTally) -> None:
    """A well-formed id that names no poll is poll-not-found."""
    answer = cast(tally, "nosuchpoll", "red", tally.voter_token("lost"))
    assert_problem(answer, 404, "poll-not-found")


def test_a_malformed_poll_id_is_400(tally: RunningTally) -> None:
    """An id outside [a-z0-9][a-z0-9_-]{0,63} is invalid-poll-id, before any lookup."""
    answer = cast(tally, "Not-A-Poll", "red", tally.voter_token("lost"))
    assert_problem(answer, 400, "invalid-poll-id")


@pytest.mark.parametrize(
    ("case", "body", "content_type", "status", "code"),
    [
        (
            "not JSON by content type",
            b'{"option": "red"}',
            "text/plain",
            415,
            "unsupported-media-type",
        ),
        ("over 1 KiB", b'{"option": "red"' + b" " * 1024 + b"}", JSON, 413, "body-too-large"),
        ("malformed JSON", b'{"option": ', JSON, 400, "malformed-json"),
        ("wrong type", b'{"option": 7}', JSON, 422, "validation-failed"),
        ("unknown field", b'{"option": "red", "x": 1}', JSON, 422, "validation-failed"),
        ("missing field", b"{}", JSON, 422, "validation-failed"),
    ],
)
def test_a_malformed_vote_request_gets_its_problem(
    tally: RunningTally,
    open_poll: str,
    case: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    """Each way a vote body can be wrong has its own status and code; no vote is counted."""
    answer = send(
        tally,
        "POST",
        f"/v1/polls/{open_poll}/votes",
        body=body,
        content_type=content_type,
        token=tally.voter_token(f"malformed-{case}"),
    )
    assert_problem(answer, status, code)
    assert results(tally, open_poll)["total"] == 0


def test_a_vote_body_of_exactly_1_kib_is_accepted(tally: RunningTally, open_poll: str) -> None:
    """The vote body limit is 1024 bytes inclusive."""
    body = b'{"option": "red"' + b" " * (1024 - 17) + b"}"
    assert len(body) == 1024
    answer = send(
        tally,
        "POST",
        f"/v1/polls/{open_poll}/votes",
        body=body,
        content_type="application/json; charset=utf-8",
        token=tally.voter_token("kilobyte"),
    )
    assert answer.status == 201


def test_other_bodies_may_be_16_kib_by_default(tally: RunningTally) -> None:
    """A 16384-byte poll definition is accepted: the general limit defaults to 16 KiB inclusive."""
    compact = json.dumps({"title": "big", "options": ["a", "b"]}).encode()
    body = compact[:-1] + b" " * (16 * 1024 - len(compact)) + b"}"
    answer = send(
        tally, "POST", "/v1/polls", body=body, content_type=JSON, token=tally.admin_token()
    )
    assert answer.status == 201


def test_tally_max_body_bytes_sets_the_limit_for_all_but_votes(start_tally: StartTally) -> None:
    """TALLY_MAX_BODY_BYTES caps poll definitions; votes keep their own 1 KiB cap."""
    small = start_tally(env={"TALLY_MAX_BODY_BYTES": "512"})
    definition = {"title": "t" * 600, "options": ["a", "b"]}
    refused = send_json(small, "POST", "/v1/polls", definition, token=small.admin_token())
    assert_problem(refused, 413, "body-too-large")
    assert get_json(small, "/v1/polls") == {"polls": []}
    poll_id = str(small.open_poll()["id"])
    vote = b'{"option": "red"' + b" " * (1024 - 17) + b"}"
    answer = send(
        small,
        "POST",
        f"/v1/polls/{poll_id}/votes",
        body=vote,
        content_type=JSON,
        token=small.voter_token("v"),
    )
    assert answer.status == 201


# Tokens and roles


def foreign_key(tally: RunningTally, tmp_path: Path) -> str:
    """A well-formed token signed by keys the server has never seen (same kid as its own)."""
    return DevIssuer.load_or_create(tmp_path / "stranger").mint("stranger")


def other_audience(tally: RunningTally, tmp_path: Path) -> str:
    keys = tally.data_dir / "keys"
    return DevIssuer.load_or_create(keys, audience="someone-else").mint("v")


def other_issuer(tally: RunningTally, tmp_path: Path) -> str:
    keys = tally.data_dir / "keys"
    return DevIssuer.load_or_create(keys, issuer="someone-else").mint("v")


def expired(tally: RunningTally, tmp_path: Path) -> str:
    return tally.issuer.mint("v", ttl_s=60, now=time.time() - 3600)


def not_yet_valid(tally: RunningTally, tmp_path: Path) -> str:
    return tally.issuer.mint("v", now=time.time() + 3600)


def tampered(tally: RunningTally, tmp_path: Path) -> str:
    """A valid token whose payload now claims another subject (the signature no longer fits)."""
    header, payload, signature = tally.voter_token("honest").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "mallory"}).encode())
    return f"{header}.{forged.rstrip(b'=').decode()}.{signature}"


def unsigned(tally: RunningTally, tmp_path: Path) -> str:
    """alg "none": a token with an empty signature."""
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = tally.voter_token("v").split(".")[1]
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(expired, "token-expired", id="expired"),
        pytest.param(not_yet_valid, "token-not-yet-valid", id="issued in the future"),
        pytest.param(other_audience, "token-audience", id="other audience"),
        pytest.param(other_issuer, "token-issuer", id="other issuer"),
        pytest.param(foreign_key, "token-signature", id="foreign key"),
        pytest.param(tampered, "token-signature", id="tampered payload"),
        pytest.param(unsigned, "token-algorithm", id="alg none"),
        pytest.param(lambda t, p: "garbage", "token-malformed", id="garbage"),
        pytest.param(lambda t, p: "a" * 9000, "token-malformed", id="9000 characters"),
    ],
)
def test_a_refused_token_is_401_with_www_authenticate(
    tally: RunningTally,
    open_poll: str,
    tmp_path: Path,
    make: Callable[[RunningTally, Path], str],
    reason: str,
) -> None:
    """A token that does not verify is unauthorized, says why, and asks for a Bearer token."""
    answer = cast(tally, open_poll, "red", make(tally, tmp_path))
    problem = assert_problem(answer, 401, "unauthorized")
    assert problem["reason"] == reason
    assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert results(tally, open_poll)["total"] == 0


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no header"),
        pytest.param("Bearer", id="scheme only"),
        pytest.param("Bearer    ", id="blank token"),
        pytest.param("Basic dm90ZXI6c2VjcmV0", id="basic auth"),
    ],
)
def test_a_missing_bearer_token_is_401(
    tally: RunningTally, open_poll: str, authorization: str | None
) -> None:
    """Without a bearer token a vote is unauthorized with WWW-Authenticate: Bearer."""
    answer = send(
        tally,
        "POST",
        f"/v1/polls/{open_poll}/votes",
        body=b'{"option": "red"}',
        content_type=JSON,
        headers={} if authorization is None else {"Authorization": authorization},
    )
    assert assert_problem(answer, 401, "unauthorized")["reason"] == "token-missing"
    assert answer.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/polls", b'{"title": "t", "options": ["a", "b"]}', id="create"),
        pytest.param("/v1/polls/{id}/open", None, id="open"),
        pytest.param("/v1/polls/{id}/close", None, id="close"),
    ],
)
def test_a_voter_token_on_an_admin_route_is_403(
    tally: RunningTally, path: str, body: bytes | None
) -> None:
    """Creating, opening and closing polls needs the admin role."""
    poll_id = create_poll(tally)["id"]
    answer = send(
        tally,
        "POST",
        path.format(id=poll_id),
        body=body,
        content_type=JSON if body else None,
        token=tally.voter_token("ambitious"),
    )
    assert_problem(answer, 403, "forbidden")
    assert get_json(tally, f"/v1/polls/{poll_id}", token=tally.admin_token())["state"] == "draft"


def test_an_admin_token_may_vote(tally: RunningTally, open_poll: str) -> None:
    """Admins are people too: an admin token casts a vote like any voter's."""
    assert cast(tally, open_poll, "red", tally.admin_token()).status == 201


# Deadlines


def test_a_poll_refuses_votes_once_its_deadline_passes(tally: RunningTally) -> None:
    """With closes_at 1.5 s ahead, votes count until then, are refused after, and GET says closed."""
    deadline = datetime.now(UTC) + timedelta(seconds=1.5)
    poll = create_poll(tally, closes_at=rfc3339(deadline))
    assert move(tally, poll["id"], "open").status == 200
    assert cast(tally, poll["id"], "red", tally.voter_token("in-time")).status == 201
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
    late = cast(tally, poll["id"], "red", tally.voter_token("late"))
    assert assert_problem(late, 409, "poll-not-open")["state"] == "closed"
    assert get_json(tally, f"/v1/polls/{poll['id']}")["state"] == "closed"
    final = results(tally, poll["id"])
    assert (final["state"], final["total"]) == ("closed", 1)


# Results


def test_results_count_every_option_even_at_zero(tally: RunningTally, open_poll: str) -> None:
    """Results list every option in poll order, the total, the state and when they last changed."""
    before = results(tally, open_poll)
    assert set(before) == {"poll_id", "state", "counts", "total", "under_review", "updated_at"}
    assert (before["poll_id"], before["state"], before["total"]) == (open_poll, "open", 0)
    assert list(before["counts"].items()) == [("red", 0), ("green", 0), ("blue", 0)]
    receipt = cast(tally, open_poll, "blue", tally.voter_token("counted")).json()["receipt"]
    after = results(tally, open_poll)
    assert after["counts"] == {"red": 0, "green": 0, "blue": 1}
    assert after["total"] == 1
    assert after["updated_at"] == receipt["accepted_at"]


def test_results_carry_an_etag_and_if_none_match_answers_304(
    tally: RunningTally, open_poll: str
) -> None:
    """A client holding the current ETag gets 304 with no body."""
    path = f"/v1/polls/{open_poll}/results"
    # A new poll's first snapshot may land between two reads (its ETag then names the snapshot
    # instead of the summed lanes): read until two reads a few ticks apart agree.
    etag = send(tally, "GET", path).headers["etag"]
    for _ in range(50):
        time.sleep(0.3)
        latest = send(tally, "GET", path).headers["etag"]
        if latest == etag:
            break
        etag = latest
    assert re.fullmatch(r'"[^"]+"', etag)
    for header in (etag, f"W/{etag}", f'"stale", {etag}'):
        again = send(tally, "GET", path, headers={"If-None-Match": header})
        assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)


def test_the_results_etag_changes_after_a_vote(tally: RunningTally, open_poll: str) -> None:
    """After a vote the old ETag no longer matches: the client gets 200 and the new counts."""
    path = f"/v1/polls/{open_poll}/results"
    old = send(tally, "GET", path).headers["etag"]
    assert cast(tally, open_poll, "red", tally.voter_token("etag-changer")).status == 201
    tally.results(open_poll, total=1)  # snapshots trail the vote by up to a tick
    fresh = send(tally, "GET", path, headers={"If-None-Match": old})
    assert fresh.status == 200
    assert fresh.headers["etag"] != old
    assert fresh.json()["total"] == 1


def test_results_of_an_unknown_poll_are_404(tally: RunningTally) -> None:
    """Results of a poll that does not exist are poll-not-found, not zeros."""
    assert_problem(send(tally, "GET", "/v1/polls/nosuchpoll/results"), 404, "poll-not-found")


# Operations


def test_healthz_says_ok(tally: RunningTally) -> None:
    """/healthz answers 200 while the process runs."""
    assert get_json(tally, "/healthz") == {"status": "ok"}


def test_readyz_says_ready(tally: RunningTally) -> None:
    """/readyz answers 200 once Valkey is reachable and Tally's functions are loaded."""
    assert get_json(tally, "/readyz") == {"status": "ready"}


def metric_samples(tally: RunningTally) -> dict[str, float]:
    """Every sample of /metrics by its name with labels, e.g. 'tally_votes_total{outcome="x"}'."""
    answer = send(tally, "GET", "/metrics")
    assert answer.status == 200
    assert answer.media_type == "text/plain"
    samples = {}
    for line in answer.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_votes_by_outcome(tally: RunningTally, open_poll: str) -> None:
    """Each vote adds one to tally_votes_total for its outcome and one duration observation."""
    before = metric_samples(tally)
    token = tally.voter_token("measured")
    cast(tally, open_poll, "red", token)
    cast(tally, open_poll, "red", token)
    cast(tally, open_poll, "purple", tally.voter_token("measured-2"))
    after = metric_samples(tally)

    def grew(sample: str) -> float:
        return after[sample] - before.get(sample, 0.0)

    for outcome in ("accepted", "already-voted", "unknown-option"):
        assert grew(f'tally_votes_total{{outcome="{outcome}"}}') == 1
    assert grew("tally_vote_duration_seconds_count") == 3
    assert grew('tally_vote_duration_seconds_bucket{le="+Inf"}') == 3


def test_metrics_expose_the_vote_and_batch_histograms(tally: RunningTally) -> None:
    """The vote duration and Valkey batch size are Prometheus histograms with cumulative buckets."""
    samples = metric_samples(tally)
    for histogram in ("tally_vote_duration_seconds", "tally_valkey_batch_commands"):
        buckets = [v for name, v in samples.items() if name.startswith(f"{histogram}_bucket{{")]
        assert buckets == sorted(buckets)
        assert buckets[-1] == samples[f"{histogram}_count"]
        assert f"{histogram}_sum" in samples


def test_openapi_describes_every_endpoint(tally: RunningTally) -> None:
    """/openapi.json is an OpenAPI 3.1 document listing every path with its methods."""
    spec = get_json(tally, "/openapi.json")
    assert spec["openapi"].startswith("3.1")
    operations = {
        path: {method for method in item if method != "parameters"}
        for path, item in spec["paths"].items()
    }
    assert operations == {
        "/v1/polls": {"get", "post"},
        "/v1/polls/{poll_id}": {"get"},
        "/v1/polls/{poll_id}/open": {"post"},
        "/v1/polls/{poll_id}/close": {"post"},
        "/v1/polls/{poll_id}/votes": {"post"},
        "/v1/polls/{poll_id}/results": {"get"},
        "/v1/polls/{poll_id}/results.csv": {"get"},  # tests/api/test_visibility_export.py
        "/v1/polls/{poll_id}/turnout.csv": {"get"},
        "/v1/polls/{poll_id}/challenge": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
        "/v1/polls/{poll_id}/live": {"get"},
        "/v1/polls/{poll_id}/events": {"get"},
        "/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof": {"get"},
        "/v1/polls/{poll_id}/held": {"get"},
        "/v1/polls/{poll_id}/held/decisions": {"post"},
        "/ledger/keys": {"get"},
        "/ledger/{poll_id}/checkpoints": {"get"},
        "/ledger/{poll_id}/certificate": {"get"},
        "/ledger/{poll_id}/{log}/checkpoint": {"get"},
        "/ledger/{poll_id}/{log}/checkpoints/{size}": {"get"},
        "/ledger/{poll_id}/{log}/tile/{path}": {"get"},
        "/v1/polls/{poll_id}/qr.svg": {"get"},  # the presenter's join link
        "/j/{code}": {"get"},
        "/auth/config": {"get"},  # voter sign-in
        "/auth/login": {"get"},
        "/auth/callback": {"get"},
        "/v1/demo/token": {"get", "post"},
        "/openapi.json": {"get"},
        "/docs": {"get"},  # tests/e2e/test_docs_page.py
    }


@pytest.mark.parametrize("path", ["/index.html", "/v1", "/v1/poll", "/v2/polls", "/v1/polls/x/y/z"])
def test_an_unknown_path_is_a_404_problem(tally: RunningTally, path: str) -> None:
    """Paths Tally does not serve answer not-found as problem+json."""
    assert_problem(send(tally, "GET", path), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param(method, path, allowed, id=f"{method} {path}")
        for method, path, allowed in [
            ("DELETE", "/v1/polls", {"GET", "POST"}),
            ("PUT", "/v1/polls/abc", {"GET"}),
            ("GET", "/v1/polls/abc/votes", {"POST"}),
            ("POST", "/v1/polls/abc/results", {"GET"}),
            ("GET", "/v1/polls/abc/open", {"POST"}),
            ("POST", "/healthz", {"GET"}),
        ]
    ],
)
def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    tally: RunningTally, method: str, path: str, allowed: set[str]
) -> None:
    """A known path with a method it does not take is method-not-allowed; Allow lists them all."""
    answer = send(tally, method, path)
    assert_problem(answer, 405, "method-not-allowed")
    offered = {m.strip() for m in answer.headers["allow"].split(",")}
    assert offered - {"HEAD"} == allowed
