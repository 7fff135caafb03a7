"""Sign-in with a real OpenID Connect provider (tests/oidc: oidc-provider on node) against a real
`tally serve`: the code flow with PKCE ends in a voting session that votes over HTTP and the
WebSocket, and every way the flow can be abused is refused with its stable code."""

from __future__ import annotations

import asyncio
import base64
import html
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from conftest import RunningTally, StartTally, serving
from oidc.provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    CONFIDENTIAL_CLIENT_ID,
    ORGANISER,
    OidcProvider,
    node_or_skip,
    query_of,
    running_provider,
    sign_in_at_provider,
)
from tally.bench.processes import free_port
from tally.security.jwks import KeySet
from tally.security.oidc import (
    LoginState,
    OidcError,
    Provider,
    check_id_token,
    roles_of,
    verified_claims,
)
from tally.security.sessions import SessionKeys, Sessions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def oidc_port() -> int:
    node_or_skip()
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, oidc_port: int) -> Iterator[RunningTally]:
    """A gateway whose sign-in is the test provider (found lazily: it starts after us)."""

    env = {
        "TALLY_OIDC_DISCOVERY_URL": f"http://127.0.0.1:{oidc_port}",
        "TALLY_OIDC_CLIENT_ID": CLIENT_ID,
    }
    with serving(tmp_path_factory.mktemp("signin-oidc"), env) as server:
        yield server


@pytest.fixture(scope="module")
def provider(gateway: RunningTally, oidc_port: int) -> Iterator[OidcProvider]:
    with running_provider([f"{gateway.url}/auth/callback"], port=oidc_port) as running:
        yield running


def begin(gateway: RunningTally, next_path: str = "/?poll=x") -> tuple[str, str]:
    """GET /auth/login: the provider URL it redirects to, and the sealed sign-in cookie."""
    answer = httpx.get(f"{gateway.url}/auth/login", params={"next": next_path})
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies["tally_signin"]
    set_cookie = answer.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=lax", "path=/auth", "max-age=600"):
        assert attribute in set_cookie
    return answer.headers["location"], cookie


def finish(gateway: RunningTally, callback_url: str, cookie: str | None) -> httpx.Response:
    cookies = {"tally_signin": cookie} if cookie else {}
    return httpx.get(callback_url, cookies=cookies, headers={"Accept": "application/json"})


def session_of(page: httpx.Response) -> tuple[dict[str, Any], str]:
    assert page.status_code == 200, page.text
    found = re.search(r'data-session="([^"]+)" data-next="([^"]+)"', page.text)
    assert found is not None
    return orjson.loads(html.unescape(found.group(1))), html.unescape(found.group(2))


def sign_in(gateway: RunningTally, login: str, next_path: str = "/?poll=x") -> dict[str, Any]:
    authorize, cookie = begin(gateway, next_path)
    callback = sign_in_at_provider(authorize, login, f"{gateway.url}/auth/callback")
    document, returned_to = session_of(finish(gateway, callback, cookie))
    assert returned_to == next_path
    return document


def open_poll(gateway: RunningTally, admin_token: str) -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    created = httpx.post(
        f"{gateway.url}/v1/polls",
        json={"title": "Sign-in", "options": ["red", "green"]},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    poll_id: str = created.json()["id"]
    assert httpx.post(f"{gateway.url}/v1/polls/{poll_id}/open", headers=headers).is_success
    return poll_id


def vote(gateway: RunningTally, poll_id: str, token: str, option: str = "red") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/polls/{poll_id}/votes",
        json={"option": option},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_config_says_oidc(gateway: RunningTally) -> None:
    assert httpx.get(f"{gateway.url}/auth/config").json() == {"oidc": True, "demo": False}


def test_the_code_flow_ends_in_a_session_that_votes(
    gateway: RunningTally, provider: OidcProvider
) -> None:
    authorize, cookie = begin(gateway)
    query = query_of(authorize)
    assert authorize.startswith(f"{provider.issuer}/auth?")
    assert query["code_challenge_method"] == "S256"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == f"{gateway.url}/auth/callback"
    assert len(query["state"]) >= 32
    assert len(query["nonce"]) >= 32
    callback = sign_in_at_provider(authorize, "alice", f"{gateway.url}/auth/callback")
    assert "code" in query_of(callback)
    page = finish(gateway, callback, cookie)
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "tally_signin=" in page.headers["set-cookie"]  # deleted: the sign-in is over
    document, returned_to = session_of(page)
    assert returned_to == "/?poll=x"
    assert document["token"].startswith("tsv1.")
    assert document["token"] not in callback
    assert (document["subject"], document["name"], document["roles"]) == (
        "alice",
        "Alice",
        ["voter"],
    )
    assert document["expires_at"] > time.time() + 11 * 3600  # TALLY_SESSION_TTL_S: 12 h

    poll_id = open_poll(gateway, gateway.issuer.mint("organiser", roles=["admin"]))
    accepted = vote(gateway, poll_id, document["token"])
    assert accepted.status_code == 201, accepted.text
    again = vote(gateway, poll_id, document["token"], "green")
    assert again.status_code == 409  # one vote per signed-in voter
    # A bearer JWT (the dev issuer's) still votes beside sessions.
    assert vote(gateway, poll_id, gateway.issuer.mint("jwt-voter")).status_code == 201


def test_a_session_votes_over_the_websocket(gateway: RunningTally, provider: OidcProvider) -> None:
    document = sign_in(gateway, "bob")
    poll_id = open_poll(gateway, gateway.issuer.mint("organiser", roles=["admin"]))

    async def over_websocket() -> list[dict[str, Any]]:
        url = f"ws://{gateway.host}:{gateway.port}/v1/polls/{poll_id}/live"
        async with websockets.connect(url) as socket:
            await socket.send(orjson.dumps({"type": "auth", "token": document["token"]}).decode())
            await socket.send(
                orjson.dumps({"type": "vote", "request_id": "r1", "option": "green"}).decode()
            )
            frames: list[dict[str, Any]] = []
            while len([f for f in frames if f["type"] in ("auth_result", "vote_result")]) < 2:
                frames.append(orjson.loads(await asyncio.wait_for(socket.recv(), 10)))
            return [f for f in frames if f["type"] in ("auth_result", "vote_result")]

    auth_result, vote_result = asyncio.run(over_websocket())
    assert auth_result["status"] == 200
    assert vote_result["status"] == 201, vote_result


def test_the_organiser_signs_in_as_admin(gateway: RunningTally, provider: OidcProvider) -> None:
    document = sign_in(gateway, ORGANISER, "/admin")
    assert document["roles"] == ["admin", "voter"]
    open_poll(gateway, document["token"])  # the admin API takes the session
    voter = sign_in(gateway, "carol")
    refused = httpx.post(
        f"{gateway.url}/v1/polls",
        json={"title": "x", "options": ["a", "b"]},
        headers={"Authorization": f"Bearer {voter['token']}"},
    )
    assert refused.status_code == 403


def test_a_replayed_code_is_refused(gateway: RunningTally, provider: OidcProvider) -> None:
    authorize, cookie = begin(gateway)
    callback = sign_in_at_provider(authorize, "dave", f"{gateway.url}/auth/callback")
    session_of(finish(gateway, callback, cookie))
    replayed = finish(gateway, callback, cookie)  # the same code, cookie and state again
    assert replayed.status_code == 400
    assert replayed.json()["code"] == "signin-refused"


@pytest.mark.parametrize("tamper", ["state", "cookie", "forged-cookie", "no-state"])
def test_a_callback_not_of_this_browser_is_refused(
    gateway: RunningTally, provider: OidcProvider, tamper: str
) -> None:
    authorize, cookie = begin(gateway)
    callback = sign_in_at_provider(authorize, "erin", f"{gateway.url}/auth/callback")
    if tamper == "state":
        callback = callback.replace("state=", "state=x")
    elif tamper == "no-state":
        callback = re.sub(r"state=[^&]*&?", "", callback)
    sent: str | None = cookie
    if tamper == "cookie":
        sent = None
    elif tamper == "forged-cookie":
        payload, _, mac = cookie.partition(".")
        sent = f"{payload}.{'A' * len(mac)}"
    answer = finish(gateway, callback, sent)
    assert answer.status_code == 400
    assert answer.json()["code"] == "signin-state"
    assert "tsv1." not in answer.text


def test_a_browser_gets_a_readable_error_page(
    gateway: RunningTally, provider: OidcProvider
) -> None:
    answer = httpx.get(
        f"{gateway.url}/auth/callback?code=x&state=y", headers={"Accept": "text/html"}
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert 'data-code="signin-state"' in answer.text
    assert "Sign-in failed" in answer.text


def test_a_provider_error_is_refused(gateway: RunningTally, provider: OidcProvider) -> None:
    authorize, cookie = begin(gateway)
    state = query_of(authorize)["state"]
    answer = finish(
        gateway, f"{gateway.url}/auth/callback?error=access_denied&state={state}", cookie
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "signin-refused"


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "evil",
        "/ok\r\nSet-Cookie: x=1",
        "javascript:alert(1)",
        "//[",
        "\x7f/x",
    ],
)
def test_open_redirects_are_refused(gateway: RunningTally, next_path: str) -> None:
    answer = httpx.get(f"{gateway.url}/auth/login", params={"next": next_path})
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid-next"
    assert "set-cookie" not in answer.headers


def test_bad_session_credentials_get_401(gateway: RunningTally, provider: OidcProvider) -> None:
    poll_id = open_poll(gateway, gateway.issuer.mint("organiser", roles=["admin"]))
    document = sign_in(gateway, "fay")
    token = document["token"]
    key = SessionKeys.load_or_create(gateway.data_dir)  # the gateway's own key file
    expired = Sessions(key, ttl_s=60, clock=lambda: time.time() - 3600).mint(
        provider.issuer, "fay", ()
    )[0]
    stranger = Sessions(SessionKeys({"k1": b"s" * 32})).mint(provider.issuer, "fay", ())[0]
    raised = token.split(".")
    raised[2] = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(raised[2] + "==").replace(b"voter", b"admin")
        )
        .decode()
        .rstrip("=")
    )
    for bad, reason in [
        (expired, "token-expired"),
        (stranger, "token-unknown-key"),
        (".".join(raised), "token-signature"),
        (token + "x", "token-malformed"),
        (token[:-1] + ("B" if token.endswith("A") else "A"), "token-signature"),
        ("tsv1.garbage", "token-malformed"),
    ]:
        answer = vote(gateway, poll_id, bad)
        assert answer.status_code == 401, (bad, answer.text)
        assert answer.json()["reason"] == reason
        assert answer.headers["content-type"] == "application/problem+json"
    assert vote(gateway, poll_id, token).status_code == 201  # the real one still votes


# ---- the OIDC checks in-process, on ID tokens the real provider issued ------------------------


async def provider_id_token(
    gateway: RunningTally, client: Provider, login: str
) -> tuple[str, LoginState]:
    """Runs the flow with our own LoginState (as the gateway would) and exchanges the code."""
    state = LoginState.new("/", time.time())
    metadata = await client.metadata()
    redirect = f"{gateway.url}/auth/callback"
    authorize = client.authorization_url(metadata, state, redirect)
    callback = await asyncio.to_thread(sign_in_at_provider, authorize, login, redirect)
    assert query_of(callback)["state"] == state.state
    return await client.exchange(query_of(callback)["code"], state, redirect), state


async def test_id_token_checks_on_a_real_token(
    gateway: RunningTally, provider: OidcProvider
) -> None:
    client = Provider(provider.issuer, CLIENT_ID, None)
    id_token, login = await provider_id_token(gateway, client, "gus")
    claims = await verified_claims(client, id_token, login)
    assert claims["sub"] == "gus"
    assert roles_of(claims, "roles", ()) == {"voter"}
    assert roles_of(claims, "roles", ("gus",)) == {"voter", "admin"}
    other_nonce = LoginState("s", "another-nonce", login.verifier, "/", login.issued_at)
    header = orjson.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    key_set = KeySet([await client.key(header["kid"])])
    now = time.time()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"nonce": "another-nonce"}, "nonce"),
        ({"issuer": "http://127.0.0.1:1"}, "issuer"),
        ({"client_id": "someone-else"}, "not for client"),
        ({"now": now + 7200}, "expired"),
    ]
    for change, message in cases:
        arguments: dict[str, Any] = {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "nonce": login.nonce,
            "now": now,
        } | change
        with pytest.raises(OidcError, match=message) as refused:
            check_id_token(id_token, key_set, **arguments)
        assert refused.value.code == "signin-token"
    with pytest.raises(OidcError, match="nonce"):
        await verified_claims(client, id_token, other_nonce)
    head, body, signature = id_token.split(".")
    forged_body = (
        base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "==").replace(b'"gus"', b'"ann"'))
        .decode()
        .rstrip("=")
    )
    with pytest.raises(OidcError, match="signature"):
        check_id_token(
            f"{head}.{forged_body}.{signature}",
            key_set,
            issuer=provider.issuer,
            client_id=CLIENT_ID,
            nonce=login.nonce,
            now=now,
        )
    await client.close()


async def test_a_confidential_client_signs_in_with_its_secret(
    gateway: RunningTally, provider: OidcProvider
) -> None:
    client = Provider(provider.issuer, CONFIDENTIAL_CLIENT_ID, CLIENT_SECRET)
    id_token, login = await provider_id_token(gateway, client, "hal")
    assert (await verified_claims(client, id_token, login))["sub"] == "hal"
    wrong = Provider(provider.issuer, CONFIDENTIAL_CLIENT_ID, "not-the-secret")
    with pytest.raises(OidcError) as refused:
        await provider_id_token(gateway, wrong, "hal")
    assert refused.value.code == "signin-refused"
    await client.close()
    await wrong.close()


async def test_an_issuer_not_allowed_is_refused(provider: OidcProvider) -> None:
    client = Provider(provider.issuer, CLIENT_ID, None, ("https://id.example",))
    with pytest.raises(OidcError, match="TALLY_OIDC_ALLOWED_ISSUERS") as refused:
        await client.metadata()
    assert refused.value.code == "signin-provider"
    allowed = Provider(provider.issuer, CLIENT_ID, None, (provider.issuer,))
    assert (await allowed.metadata()).issuer == provider.issuer
    await client.close()
    await allowed.close()


def test_an_unreachable_provider_is_a_502(start_tally: StartTally) -> None:
    port = free_port()  # nothing listens there
    server = start_tally(
        env={
            "TALLY_OIDC_DISCOVERY_URL": f"http://127.0.0.1:{port}",
            "TALLY_OIDC_CLIENT_ID": CLIENT_ID,
        }
    )
    answer = httpx.get(f"{server.url}/auth/login")
    assert answer.status_code == 502
    assert answer.json()["code"] == "signin-provider"


def first_snapshot(gateway: RunningTally, poll_id: str, headers: dict[str, str]) -> Any:
    """The first snapshot the SSE stream sends (`data:` of its first event)."""
    url = f"{gateway.url}/v1/polls/{poll_id}/events"
    with httpx.stream("GET", url, headers=headers, timeout=10) as stream:
        if stream.status_code != 200:
            stream.read()
            return stream
        for line in stream.iter_lines():
            if line.startswith("data:"):
                return orjson.loads(line[5:])
    raise AssertionError("the stream ended without a snapshot")


def test_sse_reads_the_session_like_a_bearer_jwt(
    gateway: RunningTally, provider: OidcProvider
) -> None:
    """Counts of an after-vote poll: hidden from a session that has not voted, shown once it has;
    a forged session is a 401 on the stream, as on every route."""
    admin = {"Authorization": f"Bearer {gateway.issuer.mint('organiser', roles=['admin'])}"}
    body = {"title": "After vote", "options": ["red", "green"], "visibility": "after-vote"}
    poll_id = httpx.post(f"{gateway.url}/v1/polls", json=body, headers=admin).json()["id"]
    assert httpx.post(f"{gateway.url}/v1/polls/{poll_id}/open", headers=admin).is_success
    document = sign_in(gateway, "ivy")
    session = {"Authorization": f"Bearer {document['token']}"}
    assert first_snapshot(gateway, poll_id, session)["counts"] is None
    assert vote(gateway, poll_id, document["token"]).status_code == 201
    assert first_snapshot(gateway, poll_id, session)["counts"] is not None
    token = document["token"]
    tampered = token[:-1] + ("B" if token.endswith("A") else "A")
    forged = first_snapshot(gateway, poll_id, {"Authorization": f"Bearer {tampered}"})
    assert forged.status_code == 401
    assert forged.json()["reason"] == "token-signature"
