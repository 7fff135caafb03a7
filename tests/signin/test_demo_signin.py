"""The demo sign-in (`tally serve --demo`, loopback only) over real HTTP: a name and a role give a
session exactly like a provider sign-in; other sites, other hosts and servers without --demo get
nothing."""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import RunningTally

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from demo_server import DemoTally, demo_tally


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTally]:
    with demo_tally(tmp_path_factory.mktemp("signin-demo-api")) as server:
        yield server


def post_form(server: DemoTally, form: dict[str, str], **headers: str) -> httpx.Response:
    origin = {"Origin": server.url}
    return httpx.post(f"{server.url}/auth/demo", data=form, headers={**origin, **headers})


def session_in(page: httpx.Response) -> dict[str, Any]:
    assert page.status_code == 200, page.text
    found = re.search(r'data-session="([^"]+)"', page.text)
    assert found is not None
    document: dict[str, Any] = orjson.loads(html.unescape(found.group(1)))
    return document


def test_config_and_login_lead_to_the_demo_page(demo: DemoTally) -> None:
    assert httpx.get(f"{demo.url}/auth/config").json() == {"oidc": False, "demo": True}
    login = httpx.get(f"{demo.url}/auth/login", params={"next": "/admin", "role": "admin"})
    assert login.status_code == 303
    assert login.headers["location"] == "/auth/demo?next=%2Fadmin&role=admin"
    page = httpx.get(f"{demo.url}{login.headers['location']}")
    assert page.status_code == 200
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert 'action="/auth/demo"' in page.text


def test_a_demo_session_votes_and_an_organiser_session_is_admin(demo: DemoTally) -> None:
    voter = session_in(post_form(demo, {"name": "  Dana   Q ", "role": "voter", "next": "/"}))
    assert voter["name"] == "Dana Q"
    assert voter["roles"] == ["voter"]
    poll_id = demo.demo_poll["id"]
    option = demo.demo_poll["options"][0]["id"]
    voted = httpx.post(
        f"{demo.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {voter['token']}"},
    )
    assert voted.status_code == 201, voted.text
    organiser = session_in(post_form(demo, {"name": "Olga", "role": "admin"}))
    assert organiser["roles"] == ["admin", "voter"]
    created = httpx.post(
        f"{demo.url}/v1/polls",
        json={"title": "By the organiser", "options": ["a", "b"]},
        headers={"Authorization": f"Bearer {organiser['token']}"},
    )
    assert created.status_code == 201
    # Two people choosing one name are two voters.
    again = session_in(post_form(demo, {"name": "Dana Q", "role": "voter"}))
    assert again["subject"] != voter["subject"]


@pytest.mark.parametrize(
    ("form", "headers", "status", "code"),
    [
        ({"name": "Eve"}, {"Origin": "https://evil.example"}, 403, "forbidden"),
        ({"name": "Eve"}, {"Sec-Fetch-Site": "cross-site"}, 403, "forbidden"),
        ({"name": ""}, {}, 422, "validation-failed"),
        ({"name": "x" * 41}, {}, 422, "validation-failed"),
        ({"name": "Eve\u0007"}, {}, 422, "validation-failed"),
        ({"name": "Eve", "role": "root"}, {}, 422, "validation-failed"),
        ({"name": "Eve", "next": "https://evil.example"}, {}, 400, "invalid-next"),
    ],
)
def test_bad_demo_forms_are_refused(
    demo: DemoTally, form: dict[str, str], headers: dict[str, str], status: int, code: str
) -> None:
    answer = post_form(demo, form, Accept="application/json", **headers)
    assert answer.status_code == status
    assert answer.json()["code"] == code
    assert "tsv1." not in answer.text


def test_the_demo_sign_in_is_loopback_only(demo: DemoTally) -> None:
    """A page on another site pointing its DNS name at 127.0.0.1 (DNS rebinding) finds nothing."""
    for method in ("GET", "POST"):
        answer = httpx.request(
            method, f"{demo.url}/auth/demo", headers={"Host": "tally.evil.example"}
        )
        assert answer.status_code == 404
    config = httpx.get(f"{demo.url}/auth/config", headers={"Host": "tally.evil.example"})
    assert config.json() == {"oidc": False, "demo": False}


def test_without_demo_or_provider_there_is_no_sign_in(tally: RunningTally) -> None:
    assert httpx.get(f"{tally.url}/auth/config").json() == {"oidc": False, "demo": False}
    for path in ("/auth/login", "/auth/demo", "/auth/callback?code=x&state=y"):
        answer = httpx.get(f"{tally.url}{path}")
        assert answer.status_code == 404, path
        assert answer.json()["code"] == "not-found"
