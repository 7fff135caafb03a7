"""`rediss://` to Valkey for real: the bundled valkey-server is built without TLS, so a TLS
terminator (tests/tls_terminator.py: stdlib ssl, client certificates required, the test CA of
tests/tls_certs.py) stands in front of it. Votes go through it from the store client, the live
feed and split role processes, each as its role's ACL user; a server whose certificate the
configured CA did not sign, and a client without a certificate, are refused with a clear error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from role_processes import role_env, running_role, wait_for
from tally.client import TallyClient
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import OptionSpec
from tally.domain.votes import Accepted
from tally.security.dev_issuer import DevIssuer
from tally.service import NewPoll, Voter, VotingService
from tally.store import acl
from tally.store.embedded import EmbeddedValkey
from tally.store.library import ensure_functions
from tally.store.polls import ValkeyPolls
from tally.store.pubsub import ValkeyLiveFeed
from tally.store.resp import Endpoint, TlsFiles, Valkey
from tally.store.votes import ValkeyBallotBox
from tls_certs import Pki, make_ca, make_pki
from tls_terminator import TlsTerminator, terminating

pytestmark = pytest.mark.single_node(reason="a TLS terminator in front of one valkey-server")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("tls-valkey"))
    asyncio.run(valkey.start())
    yield valkey
    asyncio.run(valkey.stop())


@pytest.fixture(scope="module")
def terminator(pki: Pki, server: EmbeddedValkey) -> Iterator[TlsTerminator]:
    with terminating(pki, ("127.0.0.1", server.port)) as running:
        yield running


def over_tls(
    server: EmbeddedValkey, terminator: TlsTerminator, role: str, files: TlsFiles
) -> Endpoint:
    """The role's endpoint, through the terminator, by the name its certificate carries."""
    return replace(server.endpoint_for(role), port=terminator.port, tls=True, tls_files=files)


def client_files(pki: Pki) -> TlsFiles:
    return TlsFiles(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))


async def test_votes_and_live_snapshots_travel_over_tls(
    server: EmbeddedValkey, terminator: TlsTerminator, pki: Pki
) -> None:
    endpoint = over_tls(server, terminator, acl.GATEWAY, client_files(pki))
    assert endpoint.url.startswith("rediss://tally-gateway:")
    client = Valkey(endpoint, on_connect=ensure_functions)
    service = VotingService(
        ValkeyPolls(client), ValkeyBallotBox(client), pseudonym_secret=b"s" * 32
    )
    try:
        options = [OptionSpec("A", "a"), OptionSpec("B", "b")]
        poll = await service.create_poll(NewPoll("TLS", options, lanes=2), actor="alice")
        poll = await service.open_poll(poll.id, actor="alice")
        outcomes = await asyncio.gather(
            *(service.vote(poll.id, Voter("idp", f"v{i}"), "ab"[i % 2]) for i in range(20))
        )
        assert [o for o in outcomes if not isinstance(o, Accepted)] == []
        lanes, _ = await ValkeyPolls(client).tallies(poll)
        assert sum(sum(lane.counts.values()) for lane in lanes) == 20
        # The live side's own connection (sharded pub/sub) over TLS too.
        feed = ValkeyLiveFeed(endpoint)
        feed.start(lambda _poll, _doc: None, lambda _polls: None)
        try:
            await feed.subscribe(poll.id)
            assert feed.connected
        finally:
            await feed.close()
    finally:
        await client.close()


async def test_a_server_the_ca_did_not_sign_is_refused_clearly(
    server: EmbeddedValkey, terminator: TlsTerminator, pki: Pki, tmp_path: Path
) -> None:
    other_ca, _, _ = make_ca(tmp_path, "Another CA")
    files = replace(client_files(pki), ca=str(other_ca))
    client = Valkey(over_tls(server, terminator, acl.GATEWAY, files))
    with pytest.raises(
        StoreUnavailable, match=r"TLS certificate is not trusted .*TALLY_VALKEY_TLS_CA"
    ):
        await client.connect()
    # The system's CAs (no TALLY_VALKEY_TLS_CA) do not trust a private CA either.
    client = Valkey(over_tls(server, terminator, acl.GATEWAY, TlsFiles()))
    with pytest.raises(StoreUnavailable, match="not trusted"):
        await client.connect()


async def test_a_client_without_a_certificate_gets_no_session(
    server: EmbeddedValkey, terminator: TlsTerminator, pki: Pki
) -> None:
    """The server requires a client certificate: without one nothing is answered."""
    client = Valkey(over_tls(server, terminator, acl.GATEWAY, TlsFiles(ca=str(pki.ca))))
    with pytest.raises(StoreUnavailable):
        await client.execute("PING")
    await client.close()


def test_tally_serve_votes_over_rediss(
    server: EmbeddedValkey, terminator: TlsTerminator, pki: Pki, tmp_path: Path
) -> None:
    """`tally serve` against TALLY_VALKEY_URL=rediss://... with the TLS settings: its gateway,
    aggregator and archiver all reach Valkey through TLS; votes are counted, published and
    archived. (One URL for the three roles: a split deployment gives each process its own
    user's URL, as the role tests do.)"""
    url = over_tls(server, terminator, acl.ADMIN, client_files(pki)).url
    env = role_env(
        server,
        tmp_path / "data",
        TALLY_VALKEY_TLS_CA=str(pki.ca),
        TALLY_VALKEY_TLS_CERT=str(pki.client_cert),
        TALLY_VALKEY_TLS_KEY=str(pki.client_key),
        TALLY_CHECKPOINT_INTERVAL_MS="200",
        TALLY_PSEUDONYM_SECRET="5e" * 32,
    )
    env["TALLY_VALKEY_URL"] = url
    with running_role("serve", env, tmp_path) as serve:
        issuer = DevIssuer.load_or_create(tmp_path / "data" / "keys")
        admin = TallyClient(serve.url, issuer.mint("admin", roles=["admin"]))
        poll = admin.post("/v1/polls", {"title": "tls", "options": ["Red", "Blue"]})
        admin.post(f"/v1/polls/{poll['id']}/open")
        for i in range(6):
            TallyClient(serve.url, issuer.mint(f"voter-{i}")).post(
                f"/v1/polls/{poll['id']}/votes", {"option": ("red", "blue")[i % 2]}
            )
        viewer = TallyClient(serve.url)
        wait_for(
            lambda: viewer.get(f"/v1/polls/{poll['id']}/results")["total"] == 6,
            "results over the aggregator's TLS connection",
        )
        ledger = tmp_path / "data" / "ledger"
        wait_for(
            lambda: any(ledger.rglob("checkpoint")), "a checkpoint from the archiver's TLS link"
        )
