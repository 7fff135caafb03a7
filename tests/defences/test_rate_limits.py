"""The distributed rate limits end to end: two `tally gateway` processes share one Valkey, and
one address, one subnet, one voter and one poll are each driven past their limit over real HTTP
(and the live WebSocket), alternating between the gateways. Each refusal is a 429 rate-limited
problem naming the scope, with a Retry-After after which the same request is admitted again.

Client addresses come through X-Forwarded-For from the test (127.0.0.1 is a trusted proxy here),
or from the socket itself when the client binds another loopback address."""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from conftest import StoreUnderTest
from role_processes import Role, running_role
from tally.security.dev_issuer import DevIssuer

OFF = {"address": None, "subnet": None, "voter": None, "poll": None}
INTERVAL_S = 2.0  # every limit under test admits one request per 2 s once its burst is spent
SLOW = {"per_s": 1 / INTERVAL_S, "burst": 3}


class Deployment:
    """Two gateways on one store, and the dev issuer whose tokens both accept."""

    def __init__(self, gateways: tuple[Role, Role], issuer: DevIssuer) -> None:
        self.gateways = gateways
        self.issuer = issuer
        self._turn = 0

    def next_gateway(self) -> Role:
        """The gateways in turn, so that consecutive requests hit different processes."""
        self._turn += 1
        return self.gateways[self._turn % 2]

    def open_poll(self, limits: dict[str, Any], lanes: int = 1) -> str:
        """A new open poll with these rate limits (only these: the other defences stay off)."""
        admin = {"Authorization": f"Bearer {self.issuer.mint('admin', roles=['admin'])}"}
        url = self.gateways[0].url
        created = httpx.post(
            f"{url}/v1/polls",
            json={
                "title": "rate limits",
                "options": ["Red", "Blue"],
                "lanes": lanes,
                "defences": {"limits": {**OFF, **limits}},
            },
            headers=admin,
            timeout=10.0,
        )
        assert created.status_code == 201, created.text
        poll_id: str = created.json()["id"]
        opened = httpx.post(f"{url}/v1/polls/{poll_id}/open", headers=admin, timeout=10.0)
        assert opened.status_code == 200, opened.text
        return poll_id

    def vote(
        self,
        poll_id: str,
        voter: str,
        client: str | None = None,
        *,
        http: httpx.Client | None = None,
    ) -> httpx.Response:
        """Vote as `voter` on the next gateway, from `client` (through the trusted proxy
        header) or, without one, from the socket's own address."""
        headers = {"Authorization": f"Bearer {self.issuer.mint(voter)}"}
        if client is not None:
            headers["X-Forwarded-For"] = client
        url = f"{self.next_gateway().url}/v1/polls/{poll_id}/votes"
        if http is not None:
            return http.post(url, json={"option": "red"}, headers=headers)
        return httpx.post(url, json={"option": "red"}, headers=headers, timeout=10.0)

    def statuses(self, poll_id: str, voters: Sequence[str], clients: Sequence[str]) -> list[int]:
        """Each voter votes once, from the client address beside it."""
        return [
            self.vote(poll_id, v, ip).status_code for v, ip in zip(voters, clients, strict=True)
        ]

    def refused(self) -> dict[str, float]:
        """tally_rate_limited_total by scope, summed over both gateways."""
        total: dict[str, float] = {}
        for gateway in self.gateways:
            for line in gateway.get("/metrics").text.splitlines():
                if line.startswith("tally_rate_limited_total{"):
                    scope = line.split('"')[1]
                    total[scope] = total.get(scope, 0.0) + float(line.split()[-1])
        return total


@pytest.fixture(scope="module")
def deployment(
    store_server: StoreUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Two gateways sharing the test store. A pseudonym secret of their own makes every bucket
    id new, so earlier tests on the shared store count for nothing here."""
    data_dir = tmp_path_factory.mktemp("rate-limits")
    env = store_server.role_env(
        data_dir,
        TALLY_PSEUDONYM_SECRET=secrets.token_hex(32),
        TALLY_TRUSTED_PROXIES="127.0.0.1/32",
    )
    with (
        running_role("gateway", env, data_dir, name="gateway-a") as first,
        running_role("gateway", env, data_dir, name="gateway-b") as second,
    ):
        yield Deployment((first, second), DevIssuer.load_or_create(data_dir / "keys"))


def voters(n: int) -> list[str]:
    return [f"voter-{uuid.uuid4().hex[:10]}" for _ in range(n)]


def assert_limited(answer: httpx.Response, scope: str, started: float) -> int:
    """A 429 rate-limited problem for `scope`; its Retry-After, checked against what the store
    can have computed: one interval less the time gone since `started` (the first request of
    the burst), rounded up."""
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert (body["code"], body["scope"], body["status"]) == ("rate-limited", scope, 429)
    retry_after = int(answer.headers["retry-after"])
    elapsed = time.monotonic() - started
    assert math.ceil(INTERVAL_S - elapsed) <= retry_after <= math.ceil(INTERVAL_S)
    return retry_after


def test_one_address_past_its_limit(deployment: Deployment) -> None:
    """Three voters from one address are admitted, a fourth is refused in scope `address` with
    a correct Retry-After, whichever gateway it reaches; a neighbour in the same /24 is not
    limited; after Retry-After the address votes again. /metrics counts the refusals."""
    poll_id = deployment.open_poll({"address": SLOW})
    before = deployment.refused().get("address", 0.0)
    a, b, c, d, e = voters(5)
    started = time.monotonic()
    assert deployment.statuses(poll_id, (a, b, c), ["203.0.113.7"] * 3) == [201] * 3
    retry_after = assert_limited(deployment.vote(poll_id, d, "203.0.113.7"), "address", started)
    assert_limited(deployment.vote(poll_id, d, "203.0.113.7"), "address", started)  # other gw
    assert deployment.vote(poll_id, e, "203.0.113.8").status_code == 201
    assert deployment.refused()["address"] - before == 2
    time.sleep(retry_after)
    assert deployment.vote(poll_id, d, "203.0.113.7").status_code == 201


def test_an_ipv6_address_counts_by_its_slash_64(deployment: Deployment) -> None:
    """Addresses of one IPv6 /64 are one address to the limit; the next /64 is another."""
    poll_id = deployment.open_poll({"address": SLOW})
    started = time.monotonic()
    same_64 = ["2001:db8:7:1::1", "2001:db8:7:1::2", "2001:db8:7:1:ffff::9"]
    a, b, c, d, e = voters(5)
    assert deployment.statuses(poll_id, (a, b, c), same_64) == [201] * 3
    assert_limited(deployment.vote(poll_id, d, "2001:db8:7:1::abcd"), "address", started)
    assert deployment.vote(poll_id, e, "2001:db8:7:2::1").status_code == 201


@pytest.mark.parametrize(
    ("inside", "outside"),
    [
        (["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.250"], "198.51.101.1"),
        (["2001:db8:9:1::1", "2001:db8:9:2::1", "2001:db8:9:3::1", "2001:db8:9:ff::1"], "2001:db8:a::1"),
    ],
    ids=["ipv4-24", "ipv6-48"],
)  # fmt: skip
def test_one_subnet_past_its_limit(deployment: Deployment, inside: list[str], outside: str) -> None:
    """Three addresses of one subnet (IPv4 /24, IPv6 /48) are admitted, a fourth is refused in
    scope `subnet`; the next subnet is not; after Retry-After the subnet votes again."""
    poll_id = deployment.open_poll({"address": {"per_s": 1, "burst": 10}, "subnet": SLOW})
    a, b, c, d, e = voters(5)
    started = time.monotonic()
    assert deployment.statuses(poll_id, (a, b, c), inside[:3]) == [201] * 3
    retry_after = assert_limited(deployment.vote(poll_id, d, inside[3]), "subnet", started)
    assert deployment.vote(poll_id, e, outside).status_code == 201
    time.sleep(retry_after)
    assert deployment.vote(poll_id, d, inside[3]).status_code == 201


def test_one_voter_past_its_limit_across_polls(deployment: Deployment) -> None:
    """A voter's limit holds across polls and addresses: after three vote requests in two polls
    the fourth is refused in scope `voter`; after Retry-After it is answered again (409: it had
    voted in that poll)."""
    first = deployment.open_poll({"voter": SLOW})
    second = deployment.open_poll({"voter": SLOW})
    (voter,) = voters(1)
    started = time.monotonic()
    assert deployment.vote(first, voter, "192.0.2.1").status_code == 201
    assert deployment.vote(second, voter, "192.0.2.2").status_code == 201
    assert deployment.vote(first, voter, "192.0.2.3").status_code == 409  # counted all the same
    retry_after = assert_limited(deployment.vote(second, voter, "192.0.2.4"), "voter", started)
    (other,) = voters(1)
    assert deployment.vote(second, other, "192.0.2.4").status_code == 201
    time.sleep(retry_after)
    assert deployment.vote(second, voter, "192.0.2.5").status_code == 409


def test_one_poll_past_its_limit(deployment: Deployment) -> None:
    """The poll-wide limit counts every voter and address together: the fourth voter is
    refused in scope `poll`; another poll is not limited by it."""
    poll_id = deployment.open_poll({"poll": SLOW})
    other_poll = deployment.open_poll({"poll": SLOW})
    a, b, c, d = voters(4)
    started = time.monotonic()
    addresses = ["192.0.2.10", "198.51.100.10", "203.0.113.10"]
    assert deployment.statuses(poll_id, (a, b, c), addresses) == [201] * 3
    assert_limited(deployment.vote(poll_id, d, "192.0.2.11"), "poll", started)
    assert deployment.vote(other_poll, d, "192.0.2.11").status_code == 201


def test_the_socket_address_counts_without_a_trusted_proxy(deployment: Deployment) -> None:
    """A client that is not a trusted proxy is limited by its own address (127.0.0.2 here),
    whatever X-Forwarded-For it sends; another loopback address is not limited by it."""
    poll_id = deployment.open_poll({"address": SLOW})
    a, b, c, d, e = voters(5)
    started = time.monotonic()
    local = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=local, timeout=10.0) as http:
        answers = [
            deployment.vote(poll_id, v, f"192.0.2.{i}", http=http) for i, v in enumerate((a, b, c))
        ]
        assert [answer.status_code for answer in answers] == [201] * 3
        assert_limited(deployment.vote(poll_id, d, "192.0.2.99", http=http), "address", started)
    other = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(transport=other, timeout=10.0) as http:
        assert deployment.vote(poll_id, e, http=http).status_code == 201


def test_a_limited_websocket_vote_gets_the_same_problem_and_its_retry_after(
    deployment: Deployment,
) -> None:
    """Over the live WebSocket a refused vote is a vote_result frame with status 429, the HTTP
    problem (scope included) and `retry_after`, the seconds of HTTP's Retry-After header."""
    poll_id = deployment.open_poll({"voter": {"per_s": 1 / INTERVAL_S, "burst": 1}})
    (voter,) = voters(1)
    ws_url = deployment.gateways[1].url.replace("http://", "ws://") + f"/v1/polls/{poll_id}/live"
    started = time.monotonic()
    with connect(ws_url, open_timeout=10.0, proxy=None) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": deployment.issuer.mint(voter)}).decode())
        results = []
        for request_id in ("first", "second"):
            ws.send(
                orjson.dumps({"type": "vote", "request_id": request_id, "option": "red"}).decode()
            )
            while (frame := orjson.loads(ws.recv(timeout=10.0)))["type"] != "vote_result":
                pass
            results.append(frame)
    assert [r["status"] for r in results] == [201, 429]
    refused = results[1]
    assert (refused["error"]["code"], refused["error"]["scope"]) == ("rate-limited", "voter")
    assert refused["error"]["instance"] == f"/v1/polls/{poll_id}/votes"
    elapsed = time.monotonic() - started
    assert math.ceil(INTERVAL_S - elapsed) <= refused["retry_after"] <= math.ceil(INTERVAL_S)
    http = deployment.vote(poll_id, voter)  # the same refusal over HTTP, on the other gateway
    assert http.status_code == 429
    assert {**http.json(), "instance": None} == {**refused["error"], "instance": None}
