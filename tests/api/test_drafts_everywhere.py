"""A draft is the organiser's only on every public surface (issue 12): to anyone but an admin, its
CSV exports, QR code, join code, event stream and votes answer exactly as an unknown poll's do
(same status, same problem code, the same document but for the id); an admin's requests are
answered as before. Through a real server, over raw HTTP. (The poll and its results:
test_drafts.py; the WebSocket and SSE in depth: tests/live/test_drafts_live.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from api_http import Answer, send, send_json

from conftest import RunningTally

UNKNOWN = "nosuchpoll12"
UNKNOWN_CODE = "ZZZZ22"


def create_draft(tally: RunningTally) -> dict[str, Any]:
    answer = send_json(
        tally,
        "POST",
        "/v1/polls",
        {"title": "Secret draft", "options": ["Yes", "No"], "lanes": 1},
        token=tally.admin_token(),
    )
    assert answer.status == 201, answer.body
    poll: dict[str, Any] = answer.json()
    assert poll["state"] == "draft"
    return poll


def same_answer(draft: Answer, unknown: Answer, draft_id: str) -> None:
    """`draft` is `unknown`'s answer: status, media type and body, the ids put aside."""
    assert (draft.status, draft.media_type) == (unknown.status, unknown.media_type)
    assert draft.body.replace(draft_id.encode(), b"ID") == unknown.body.replace(
        UNKNOWN.encode(), b"ID"
    )
    assert b"Secret draft" not in draft.body


def credentials(tally: RunningTally) -> dict[str, str | None]:
    return {"nobody": None, "voter": tally.voter_token("draft-peeker"), "bad": "not.a.jwt"}


@pytest.mark.parametrize(
    "path", ["results.csv", "turnout.csv", "qr.svg", "events", "challenge", "results", ""]
)
def test_a_drafts_reads_are_an_unknown_polls_but_for_an_admin(
    tally: RunningTally, path: str
) -> None:
    draft = create_draft(tally)
    suffix = f"/{path}" if path else ""
    for who, token in credentials(tally).items():
        unknown = send(tally, "GET", f"/v1/polls/{UNKNOWN}{suffix}", token=token)
        answer = send(tally, "GET", f"/v1/polls/{draft['id']}{suffix}", token=token)
        assert answer.status in (401, 404), (who, answer.status)
        same_answer(answer, unknown, draft["id"])
    if path == "events":
        return  # an admin's stream never ends: tests/live/test_drafts_live.py reads it
    admin = send(tally, "GET", f"/v1/polls/{draft['id']}{suffix}", token=tally.admin_token())
    assert admin.status == 200, admin.body


def test_an_admin_gets_a_drafts_csv_exports_and_qr_code(tally: RunningTally) -> None:
    draft = create_draft(tally)
    admin = tally.admin_token()
    results = send(tally, "GET", f"/v1/polls/{draft['id']}/results.csv", token=admin)
    assert (results.status, results.media_type) == (200, "text/csv")
    assert results.body.splitlines()[0] == b"option_id,label,votes,share"
    turnout = send(tally, "GET", f"/v1/polls/{draft['id']}/turnout.csv", token=admin)
    assert (turnout.status, turnout.body) == (200, b"minute,votes,cumulative\r\n")
    qr = send(tally, "GET", f"/v1/polls/{draft['id']}/qr.svg", token=admin)
    assert (qr.status, qr.media_type) == (200, "image/svg+xml")


def test_a_drafts_join_code_is_an_unknown_code_but_for_an_admin(tally: RunningTally) -> None:
    """A person's 404 page and a client's problem, as for a code no poll has; an admin's request
    is sent on to the voting page; once open, everyone's is."""
    draft = create_draft(tally)
    code = draft["join_code"]
    for accept in ("text/html", "application/json"):
        for token in credentials(tally).values():
            headers = {"Accept": accept}
            unknown = send(tally, "GET", f"/j/{UNKNOWN_CODE}", token=token, headers=headers)
            answer = send(tally, "GET", f"/j/{code}", token=token, headers=headers)
            assert answer.status == 404
            assert (answer.media_type, answer.body.replace(code.encode(), b"CODE")) == (
                unknown.media_type,
                unknown.body.replace(UNKNOWN_CODE.encode(), b"CODE"),
            )
    admin = send(tally, "GET", f"/j/{code}", token=tally.admin_token())
    assert (admin.status, admin.headers["location"]) == (303, f"/?poll={draft['id']}")
    send(tally, "POST", f"/v1/polls/{draft['id']}/open", token=tally.admin_token())
    assert send(tally, "GET", f"/j/{code}").status == 303


@pytest.mark.parametrize("option", ["yes", "no-such-option"])
def test_a_vote_on_a_draft_is_an_unknown_polls_but_for_an_admin(
    tally: RunningTally, option: str
) -> None:
    """Neither its state (409 poll-not-open) nor its options (422 unknown-option) tell a voter
    that the draft exists; an admin is told as before."""
    draft = create_draft(tally)
    assert option == "no-such-option" or option in [o["id"] for o in draft["options"]]
    voter = tally.voter_token("draft-voter")
    body = {"option": option}
    unknown = send_json(tally, "POST", f"/v1/polls/{UNKNOWN}/votes", body, token=voter)
    answer = send_json(tally, "POST", f"/v1/polls/{draft['id']}/votes", body, token=voter)
    assert answer.status == 404
    same_answer(answer, unknown, draft["id"])
    admin = send_json(
        tally, "POST", f"/v1/polls/{draft['id']}/votes", body, token=tally.admin_token()
    )
    expected = (409, "poll-not-open") if option == "yes" else (422, "unknown-option")
    assert (admin.status, admin.json()["code"]) == expected
    send(tally, "POST", f"/v1/polls/{draft['id']}/open", token=tally.admin_token())
    opened = send_json(tally, "POST", f"/v1/polls/{draft['id']}/votes", body, token=voter)
    assert opened.status == (201 if option == "yes" else 422), opened.body
