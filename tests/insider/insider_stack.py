"""What the insider tests (issue 11) build on: a deployment of role processes (`tally gateway`,
`tally archiver`: tests/role_processes.py) on a Valkey the test started, so that the test holds
the store's admin user as an insider with the admin password would; the operator's side over
HTTP (tokens from the deployment's dev issuer, polls, votes, the signed result certificate); the
store as one role's ACL user (store/acl.py); and the `tally` command line as a subprocess."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from conftest import StoreConnection, StoreUnderTest
from role_processes import Role, role_env, wait_for
from tally.ledger import layout
from tally.ledger.certificate import ResultCertificate
from tally.security.dev_issuer import DevIssuer
from tally.store import acl
from tally.store.cluster import ClusterSeeds, ValkeyCluster
from tally.store.resp import Valkey

CLI_TIMEOUT_S = 120


def deployment_env(valkey: StoreUnderTest, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the role processes of one deployment share, on the store under test
    (one valkey-server, or the cluster of TALLY_TEST_STORE=cluster); as its admin user."""
    if valkey.server is not None:
        return role_env(valkey.server, data_dir, **extra)
    return valkey.role_env(data_dir, **extra)


def tally_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`tally <args>` as a third party runs it: a process of its own, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "tally", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


class Operator:
    """The operator of one deployment, through a gateway's HTTP API with the dev issuer's
    tokens (the gateway made its keys in `data_dir` when it started)."""

    def __init__(self, gateway: Role, data_dir: Path) -> None:
        self.gateway = gateway
        self.data_dir = data_dir
        self.issuer = DevIssuer.load_or_create(data_dir / "keys")
        self.admin = {"Authorization": f"Bearer {self.issuer.mint('admin', roles=['admin'])}"}

    def open_poll(self, title: str, options: Sequence[str], lanes: int) -> str:
        """Create and open a poll whose option ids are `options`; its id."""
        created = httpx.post(
            f"{self.gateway.url}/v1/polls",
            json={
                "title": title,
                "options": [{"id": o, "label": o.upper()} for o in options],
                "lanes": lanes,
            },
            headers=self.admin,
        )
        assert created.status_code == 201, created.text
        poll_id: str = created.json()["id"]
        opened = httpx.post(f"{self.gateway.url}/v1/polls/{poll_id}/open", headers=self.admin)
        assert opened.is_success, opened.text
        return poll_id

    def vote(self, poll_id: str, subject: str, option: str) -> dict[str, Any]:
        """Vote as `subject`; the receipt the gateway answers with."""
        voted = httpx.post(
            f"{self.gateway.url}/v1/polls/{poll_id}/votes",
            json={"option": option},
            headers={"Authorization": f"Bearer {self.issuer.mint(subject)}"},
        )
        assert voted.status_code == 201, voted.text
        receipt: dict[str, Any] = voted.json()["receipt"]
        return receipt

    def close(self, poll_id: str) -> None:
        closed = httpx.post(f"{self.gateway.url}/v1/polls/{poll_id}/close", headers=self.admin)
        assert closed.is_success, closed.text

    def integrity(self, path: str) -> list[dict[str, Any]] | None:
        """The `integrity` member (the poll's alarms) of a poll or results document."""
        reply = self.gateway.get(path)
        assert reply.status_code == 200, reply.text
        found: list[dict[str, Any]] | None = reply.json().get("integrity")
        return found

    def published_keys(self) -> str:
        """GET /ledger/keys: the ledger key's line, then each admission key's with its validity."""
        reply = self.gateway.get("/ledger/keys")
        assert reply.status_code == 200, reply.text
        return reply.text

    def certificate(self, poll_id: str, timeout_s: float = 15.0) -> tuple[str, ResultCertificate]:
        """The result certificate the archiver signs at close (its body, and parsed), once it
        is on disk."""
        path = self.data_dir / "ledger" / "polls" / poll_id / layout.CERTIFICATE
        wait_for(path.exists, "the result certificate", timeout_s=timeout_s)
        body = path.read_bytes().rpartition(b"\n\n")[0].decode() + "\n"
        return body, ResultCertificate.parse(body)


@contextlib.asynccontextmanager
async def as_role(valkey: StoreUnderTest, role: str) -> AsyncIterator[StoreConnection]:
    """A connection to the store as `role`'s ACL user (store/acl.py). One valkey-server has the
    users already (EmbeddedValkey starts with them). On the cluster the store-level tests share,
    the test creates a user of its own with the role's very rules (acl.setuser_args, renamed so
    that no user the cluster may have for its own roles is reset) on every node, as ACL is per
    node and never replicated, and deletes it afterwards."""
    if valkey.server is not None:
        client: StoreConnection = Valkey(valkey.server.endpoint_for(role))
        try:
            await client.connect()
            yield client
        finally:
            await client.close()
        return
    cluster = valkey.cluster
    assert cluster is not None
    password = secrets.token_urlsafe(24)
    user, *rules = acl.setuser_args(acl.ROLES[role], password)
    user = f"{user}-insider-test"
    ports = [node.port for node in cluster.topology()]
    for port in ports:
        assert cluster.call(port, "ACL", "SETUSER", user, *rules) == "OK"
    seeds = ClusterSeeds.from_url(valkey.url)
    client = ValkeyCluster(ClusterSeeds(seeds.nodes, user, password))
    try:
        await client.connect()
        yield client
    finally:
        await client.close()
        for port in ports:
            cluster.call(port, "ACL", "DELUSER", user)
