"""Result visibility on REST (issue 12): each mode, for an anonymous caller, a voter before and
after voting, an admin, and everyone after the close, against a real server; and its caching
headers, so that no cache hands one viewer's counts to another."""

from __future__ import annotations

import time
from typing import Any

import pytest
from api_http import Answer, assert_problem, send, send_json

from conftest import RunningTally

OPTIONS = ["Red", "Green", "Blue"]


def create(tally: RunningTally, visibility: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "visibility", "options": OPTIONS, "lanes": 2}
    if visibility is not None:
        body["visibility"] = visibility
    answer = send_json(tally, "POST", "/v1/polls", body, token=tally.admin_token())
    assert answer.status == 201, answer.body
    poll: dict[str, Any] = answer.json()
    assert (
        send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=tally.admin_token()).status == 200
    )
    return poll


def results(tally: RunningTally, poll_id: str, token: str | None = None, **headers: str) -> Answer:
    return send(tally, "GET", f"/v1/polls/{poll_id}/results", token=token, headers=headers)


def vote(tally: RunningTally, poll_id: str, option: str, token: str) -> None:
    answer = send_json(tally, "POST", f"/v1/polls/{poll_id}/votes", {"option": option}, token=token)
    assert answer.status == 201, answer.body


def settled(tally: RunningTally, poll_id: str, total: int, state: str = "open") -> None:
    """Wait (as an admin, who sees everything) until the published results show `total`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = results(tally, poll_id, tally.admin_token()).json()
        if doc["total"] == total and doc["state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"results of {poll_id} never reached total {total}, {state}")


def close(tally: RunningTally, poll_id: str) -> None:
    assert (
        send(tally, "POST", f"/v1/polls/{poll_id}/close", token=tally.admin_token()).status == 200
    )


def shown(answer: Answer) -> dict[str, int]:
    assert answer.status == 200, answer.body
    doc = answer.json()
    assert "hidden" not in doc
    counts: dict[str, int] = doc["counts"]
    return counts


def hidden(answer: Answer, reason: str, total: int) -> None:
    assert answer.status == 200, answer.body
    doc = answer.json()
    assert doc["counts"] is None
    assert doc["hidden"] == reason
    assert doc["total"] == total  # turnout stays public
    assert set(doc) >= {"poll_id", "state", "total", "under_review", "updated_at"}


@pytest.mark.parametrize("visibility", [None, "live", "after-vote", "after-close"])
def test_the_poll_document_carries_its_visibility(
    tally: RunningTally, visibility: str | None
) -> None:
    poll = create(tally, visibility)
    assert poll["visibility"] == (visibility or "live")
    fetched = send(tally, "GET", f"/v1/polls/{poll['id']}", token=tally.admin_token()).json()
    assert fetched["visibility"] == (visibility or "live")


def test_an_unknown_visibility_is_refused_and_creates_nothing(tally: RunningTally) -> None:
    before = send(tally, "GET", "/v1/polls?include=drafts", token=tally.admin_token()).json()
    body = {"title": "bad", "options": OPTIONS, "visibility": "never"}
    answer = send_json(tally, "POST", "/v1/polls", body, token=tally.admin_token())
    assert_problem(answer, 422, "validation-failed")
    assert "visibility" in answer.json()["detail"]
    after = send(tally, "GET", "/v1/polls?include=drafts", token=tally.admin_token()).json()
    assert [p["id"] for p in after["polls"]] == [p["id"] for p in before["polls"]]


def test_live_shows_everyone_the_counts(tally: RunningTally) -> None:
    poll_id = create(tally, "live")["id"]
    vote(tally, poll_id, "red", tally.voter_token("live-1"))
    settled(tally, poll_id, 1)
    assert shown(results(tally, poll_id)) == {"red": 1, "green": 0, "blue": 0}
    assert shown(results(tally, poll_id, tally.voter_token("live-2")))["red"] == 1


def test_after_vote_hides_the_counts_until_the_viewer_voted(tally: RunningTally) -> None:
    poll_id = create(tally, "after-vote")["id"]
    early, late = tally.voter_token("av-early"), tally.voter_token("av-late")
    vote(tally, poll_id, "green", early)
    settled(tally, poll_id, 1)
    hidden(results(tally, poll_id), "until-vote", 1)  # anonymous
    hidden(results(tally, poll_id, late), "until-vote", 1)  # a voter who has not voted
    assert shown(results(tally, poll_id, early)) == {"red": 0, "green": 1, "blue": 0}
    assert shown(results(tally, poll_id, tally.admin_token()))["green"] == 1
    vote(tally, poll_id, "blue", late)
    settled(tally, poll_id, 2)
    assert shown(results(tally, poll_id, late)) == {"red": 0, "green": 1, "blue": 1}
    hidden(results(tally, poll_id), "until-vote", 2)
    close(tally, poll_id)
    settled(tally, poll_id, 2, "closed")
    assert shown(results(tally, poll_id)) == {"red": 0, "green": 1, "blue": 1}
    assert shown(results(tally, poll_id, tally.voter_token("av-never")))["blue"] == 1


def test_after_close_hides_the_counts_from_voters_too(tally: RunningTally) -> None:
    poll_id = create(tally, "after-close")["id"]
    voter = tally.voter_token("ac-1")
    vote(tally, poll_id, "red", voter)
    settled(tally, poll_id, 1)
    hidden(results(tally, poll_id), "until-close", 1)
    hidden(results(tally, poll_id, voter), "until-close", 1)
    assert shown(results(tally, poll_id, tally.admin_token())) == {"red": 1, "green": 0, "blue": 0}
    close(tally, poll_id)
    settled(tally, poll_id, 1, "closed")
    assert shown(results(tally, poll_id)) == {"red": 1, "green": 0, "blue": 0}
    assert shown(results(tally, poll_id, voter))["red"] == 1


def test_caching_never_mixes_viewers(tally: RunningTally) -> None:
    poll_id = create(tally, "after-vote")["id"]
    voter = tally.voter_token("cache-1")
    vote(tally, poll_id, "red", voter)
    settled(tally, poll_id, 1)
    anonymous = results(tally, poll_id)
    personal = results(tally, poll_id, voter)
    for answer in (anonymous, personal):
        assert "authorization" in answer.headers["vary"].lower()
    assert anonymous.headers["cache-control"].startswith("public")
    assert personal.headers["cache-control"].startswith("private")
    # The same snapshot, two representations: two names, so a revalidation cannot swap them.
    assert anonymous.headers["etag"] != personal.headers["etag"]
    again = results(tally, poll_id, voter, **{"If-None-Match": anonymous.headers["etag"]})
    assert shown(again) == {"red": 1, "green": 0, "blue": 0}
    same = results(tally, poll_id, voter, **{"If-None-Match": personal.headers["etag"]})
    assert same.status == 304
    # Where no viewer's answer differs (a live poll, a closed one), a shared cache may keep it.
    live = create(tally, "live")["id"]
    assert results(tally, live).headers["cache-control"].startswith("public")
    assert results(tally, live, voter).headers["cache-control"].startswith("public")
    close(tally, poll_id)
    settled(tally, poll_id, 1, "closed")
    assert results(tally, poll_id, voter).headers["cache-control"].startswith("public")


def test_a_bad_credential_on_results_is_a_401_not_a_silent_anonymous_view(
    tally: RunningTally,
) -> None:
    poll_id = create(tally, "after-vote")["id"]
    answer = results(tally, poll_id, "not-a-jwt")
    assert answer.status == 401
    assert answer.headers["content-type"].startswith("application/problem+json")
