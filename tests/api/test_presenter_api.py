"""Join codes and the presenter's QR code through a real `tally serve`, over raw HTTP: every
poll document carries its join code, `/j/<code>` leads to the voting page whatever the case,
an unknown code is a 404 a person can read (or a problem for a JSON client), and the QR code
scans (zxing-cpp, tests/qr_reader.py) to the join URL."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from api_http import JSON, assert_problem, get_json, send, send_json

from conftest import RunningTally, StartTally
from qr_reader import decode_svg
from tally.domain.join_codes import ALPHABET, LENGTH


def create(tally: RunningTally, title: str = "join codes") -> dict[str, Any]:
    answer = send_json(
        tally,
        "POST",
        "/v1/polls",
        {"title": title, "options": ["Yes", "No"], "lanes": 1},
        token=tally.admin_token(),
    )
    assert answer.status == 201, answer.body
    poll: dict[str, Any] = answer.json()
    return poll


def test_a_new_poll_has_a_join_code_shown_on_every_poll_document(tally: RunningTally) -> None:
    poll = create(tally)
    code = poll["join_code"]
    assert len(code) == LENGTH
    assert set(code) <= set(ALPHABET)
    admin = tally.admin_token()
    assert get_json(tally, f"/v1/polls/{poll['id']}", token=admin)["join_code"] == code
    opened = send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=admin).json()
    assert opened["join_code"] == code
    assert get_json(tally, f"/v1/polls/{poll['id']}")["join_code"] == code
    listed = {p["id"]: p for p in get_json(tally, "/v1/polls")["polls"]}
    assert listed[poll["id"]]["join_code"] == code
    closed = send(tally, "POST", f"/v1/polls/{poll['id']}/close", token=admin).json()
    assert closed["join_code"] == code


def test_the_poll_document_carries_the_servers_clock(tally: RunningTally) -> None:
    """The presenter's countdown runs on the server's clock, not the hall laptop's: the poll
    document is the one answer with a Date header (RFC 9110, whole seconds)."""
    poll = create(tally)
    before = time.time()
    answer = send(tally, "GET", f"/v1/polls/{poll['id']}", token=tally.admin_token())
    after = time.time()
    assert answer.status == 200
    stated = parsedate_to_datetime(answer.headers["date"]).timestamp()
    assert int(before) <= stated <= after


def test_each_poll_has_its_own_code(tally: RunningTally) -> None:
    codes = [create(tally, f"unique {i}")["join_code"] for i in range(5)]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("spelling", [str.upper, str.lower, lambda c: f"{c[:3]}-{c[3:]}"])
def test_the_join_link_leads_to_the_voting_page_in_any_case(
    tally: RunningTally, spelling: Any
) -> None:
    poll = create(tally)
    send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=tally.admin_token())
    answer = send(tally, "GET", f"/j/{spelling(poll['join_code'])}")
    assert answer.status == 303
    assert answer.headers["location"] == f"/?poll={poll['id']}"


def test_an_unknown_code_is_a_404_page_for_people_and_a_problem_for_json_clients(
    tally: RunningTally,
) -> None:
    page = send(tally, "GET", "/j/zzzz22")
    assert (page.status, page.media_type) == (404, "text/html")
    assert b"No such join code" in page.body
    assert b"ZZZZ22" not in page.body  # shown as typed, not as a code it might be
    assert "default-src 'none'" in page.headers["content-security-policy"]
    hostile = send(tally, "GET", "/j/%3Cimg%20src=x%3E")
    assert (hostile.status, hostile.media_type) == (404, "text/html")
    assert b"<img" not in hostile.body  # the typed text is escaped, never markup
    assert b"&lt;img src=x&gt;" in hostile.body
    problem = send(tally, "GET", "/j/ZZZZ22", headers={"Accept": JSON})
    assert_problem(problem, 404, "join-code-not-found")


def test_the_qr_code_scans_to_the_join_url_of_the_requests_origin(tally: RunningTally) -> None:
    poll = create(tally)
    admin = tally.admin_token()
    draft_qr = send(tally, "GET", f"/v1/polls/{poll['id']}/qr.svg")
    assert_problem(draft_qr, 404, "poll-not-found")  # a draft is an unknown poll to the public
    organisers = send(tally, "GET", f"/v1/polls/{poll['id']}/qr.svg", token=admin)
    assert organisers.status == 200
    assert organisers.headers["cache-control"] == "private, no-store"  # never in a shared cache
    send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=admin)

    answer = send(tally, "GET", f"/v1/polls/{poll['id']}/qr.svg")
    assert (answer.status, answer.media_type) == (200, "image/svg+xml")
    assert answer.headers["cache-control"] == "public, max-age=86400"
    assert decode_svg(answer.body) == f"http://{tally.host}:{tally.port}/j/{poll['join_code']}"
    # Cacheable: the same ETag revalidates with a 304.
    again = send(
        tally,
        "GET",
        f"/v1/polls/{poll['id']}/qr.svg",
        headers={"If-None-Match": answer.headers["etag"]},
    )
    assert (again.status, again.body) == (304, b"")
    # Another Host (a name the presenter's browser used) is another URL, hence the Vary.
    other = send(
        tally, "GET", f"/v1/polls/{poll['id']}/qr.svg", headers={"Host": "hall.example:8000"}
    )
    assert decode_svg(other.body) == f"http://hall.example:8000/j/{poll['join_code']}"
    assert answer.headers["vary"] == "Host"


def test_the_qr_code_of_an_unknown_poll_is_a_404(tally: RunningTally) -> None:
    assert_problem(send(tally, "GET", "/v1/polls/nosuchpoll/qr.svg"), 404, "poll-not-found")
    assert_problem(send(tally, "GET", "/v1/polls/BAD!/qr.svg"), 400, "invalid-poll-id")


def test_tally_public_url_names_the_origin_in_the_qr_code(start_tally: StartTally) -> None:
    tally = start_tally(env={"TALLY_PUBLIC_URL": "https://vote.example.org/"})
    poll = create(tally)
    send(tally, "POST", f"/v1/polls/{poll['id']}/open", token=tally.admin_token())
    answer = send(tally, "GET", f"/v1/polls/{poll['id']}/qr.svg")
    assert decode_svg(answer.body) == f"https://vote.example.org/j/{poll['join_code']}"


def test_the_presenter_page_is_served_under_the_page_policy(tally: RunningTally) -> None:
    poll = create(tally)
    answer = send(tally, "GET", f"/present/{poll['id']}")
    assert (answer.status, answer.media_type) == (200, "text/html")
    assert b'src="/static/present.js"' in answer.body
    assert "script-src 'self'" in answer.headers["content-security-policy"]
