"""Drafts are the organiser's work in progress: the public poll list and a poll's page show open
and closed polls only; an admin lists drafts with `GET /v1/polls?include=drafts` and reads one by
id. Through a real server, over raw HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from api_http import JSON, Answer, assert_problem, get_json, send, send_json

from conftest import RunningTally


def create_draft(tally: RunningTally, title: str) -> dict[str, Any]:
    answer = send_json(
        tally,
        "POST",
        "/v1/polls",
        {"title": title, "options": ["Yes", "No"], "lanes": 1},
        token=tally.admin_token(),
    )
    assert answer.status == 201, answer.body
    poll: dict[str, Any] = answer.json()
    assert poll["state"] == "draft"
    return poll


def listed_ids(answer: Answer) -> list[str]:
    assert (answer.status, answer.media_type) == (200, JSON), answer.body
    return [poll["id"] for poll in answer.json()["polls"]]


def test_the_public_list_shows_open_and_closed_polls_but_no_draft(tally: RunningTally) -> None:
    """A draft is left out of GET /v1/polls; the same poll is listed once it opens, and still
    once it closes."""
    poll = create_draft(tally, "public list draft")
    public = get_json(tally, "/v1/polls")["polls"]
    assert poll["id"] not in [p["id"] for p in public]
    assert all(p["state"] in ("open", "closed") for p in public)
    send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=tally.admin_token())
    assert poll["id"] in listed_ids(send(tally, "GET", "/v1/polls"))
    send(tally, "POST", f"/v1/polls/{poll['id']}/close", token=tally.admin_token())
    assert poll["id"] in listed_ids(send(tally, "GET", "/v1/polls"))


def test_newer_drafts_do_not_push_open_polls_out_of_the_public_list(
    tally: RunningTally,
) -> None:
    """The list shows the 100 newest polls the public may see: drafts are skipped before the
    limit, so an organiser preparing a hundred drafts does not empty it."""
    admin = tally.admin_token()
    opened = create_draft(tally, "open before the drafts")
    send(tally, "POST", f"/v1/polls/{opened['id']}/open", token=admin)
    drafts = [create_draft(tally, f"prepared {n}")["id"] for n in range(101)]
    public = listed_ids(send(tally, "GET", "/v1/polls"))
    assert opened["id"] in public
    assert not set(drafts) & set(public)
    own = listed_ids(send(tally, "GET", "/v1/polls?include=drafts", token=admin))
    assert len(own) == 100  # the organiser's list: the 100 newest, all of them drafts here
    assert set(own) <= set(drafts)


def test_an_admin_lists_drafts_with_include_drafts(tally: RunningTally) -> None:
    """?include=drafts with an admin credential lists the draft, exactly as it was created, next
    to the open polls."""
    draft = create_draft(tally, "console draft")
    opened = tally.open_poll()
    answer = send(tally, "GET", "/v1/polls?include=drafts", token=tally.admin_token())
    assert (answer.status, answer.media_type) == (200, JSON)
    polls = answer.json()["polls"]
    assert draft in polls
    assert opened["id"] in [p["id"] for p in polls]


def test_an_admin_with_no_drafts_flag_sees_the_public_list(tally: RunningTally) -> None:
    """An admin credential alone changes nothing: drafts are asked for, never implied."""
    draft = create_draft(tally, "implicit draft")
    assert draft["id"] not in listed_ids(send(tally, "GET", "/v1/polls", token=tally.admin_token()))


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [("nobody", 401, "unauthorized"), ("voter", 403, "forbidden"), ("forged", 401, "unauthorized")],
)
def test_include_drafts_needs_the_admin_role(
    tally: RunningTally, who: str, status: int, code: str
) -> None:
    """Without a credential 401, with a voter's 403, with a bad one 401: no list either way."""
    create_draft(tally, "guarded draft")
    token = {
        "nobody": None,
        "voter": tally.voter_token("draft-peeker"),
        "forged": tally.admin_token()[:-4] + "AAAA",
    }[who]
    answer = send(tally, "GET", "/v1/polls?include=drafts", token=token)
    assert_problem(answer, status, code)
    assert b"guarded draft" not in answer.body


@pytest.mark.parametrize("query", ["include=everything", "include=", "include=drafts&include=x"])
def test_an_unknown_include_value_is_a_422_naming_the_field(
    tally: RunningTally, query: str
) -> None:
    """A typo is refused (never silently the public list), with the field and its one value."""
    answer = send(tally, "GET", f"/v1/polls?{query}", token=tally.admin_token())
    problem = assert_problem(answer, 422, "validation-failed")
    assert problem["errors"] == [{"field": "include", "message": "the only value is 'drafts'"}]


def test_a_draft_by_id_is_a_404_like_an_unknown_poll_except_for_an_admin(
    tally: RunningTally,
) -> None:
    """GET /v1/polls/{id} of a draft: the unknown-poll 404 for anyone but an admin (no token, a
    voter's, a bad one); the admin gets the poll; once open, everyone does."""
    draft = create_draft(tally, "hidden by id")
    unknown = assert_problem(send(tally, "GET", "/v1/polls/nosuchpoll12"), 404, "poll-not-found")
    for token in (None, tally.voter_token("draft-by-id"), "not.a.jwt"):
        answer = send(tally, "GET", f"/v1/polls/{draft['id']}", token=token)
        problem = assert_problem(answer, 404, "poll-not-found")
        assert set(problem) == set(unknown)
        assert problem["detail"] == f"no poll {draft['id']!r}"
        assert b"hidden by id" not in answer.body
    admin = send(tally, "GET", f"/v1/polls/{draft['id']}", token=tally.admin_token())
    assert (admin.status, admin.json()) == (200, draft)
    send(tally, "POST", f"/v1/polls/{draft['id']}/open", token=tally.admin_token())
    assert get_json(tally, f"/v1/polls/{draft['id']}")["state"] == "open"


def test_a_drafts_results_are_a_404_except_for_an_admin(tally: RunningTally) -> None:
    """GET /v1/polls/{id}/results of a draft: the unknown-poll 404 to the public and to a voter,
    its (empty) results to an admin; once open, everyone's."""
    draft = create_draft(tally, "results of a draft")
    path = f"/v1/polls/{draft['id']}/results"
    for token in (None, tally.voter_token("draft-results")):
        problem = assert_problem(send(tally, "GET", path, token=token), 404, "poll-not-found")
        assert problem["detail"] == f"no poll {draft['id']!r}"
    admin = send(tally, "GET", path, token=tally.admin_token())
    assert admin.status == 200
    assert (admin.json()["state"], admin.json()["total"]) == ("draft", 0)
    send(tally, "POST", f"/v1/polls/{draft['id']}/open", token=tally.admin_token())
    assert get_json(tally, path)["state"] == "open"


def test_the_openapi_document_describes_include_drafts(tally: RunningTally) -> None:
    """The list operation documents its one query parameter and the refusals it brings."""
    listing = get_json(tally, "/openapi.json")["paths"]["/v1/polls"]["get"]
    (parameter,) = listing["parameters"]
    assert (parameter["name"], parameter["in"]) == ("include", "query")
    assert parameter["schema"]["enum"] == ["drafts"]
    assert {"200", "401", "403", "422"} <= set(listing["responses"])
