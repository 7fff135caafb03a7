"""HTTPS and WSS on the gateway (`--tls-cert/--tls-key`): a real `tally serve` with a certificate
from a throwaway CA (tests/tls_certs.py), talked to by real clients that trust that CA alone.

TLS 1.3 only, HSTS on every response over TLS and never over plain HTTP, the edge's limits
still applying to the decrypted bytes, a handshake that never finishes closed at the head
deadline, and a key file that others may read refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from conftest import RunningTally, serving
from role_processes import register_gateway_key, role_env
from tally import config
from tally.bench.processes import free_port
from tally.client import ApiError, TallyClient
from tally.config import ConfigError
from tally.gateway.tls import server_context
from tally.store.embedded import EmbeddedValkey
from tally.wiring.gateway import tls_context
from tls_certs import Certificates, make_certificates

HEAD_TIMEOUT_S = 1.0  # the TLS server's TALLY_HEAD_TIMEOUT_S: also its handshake deadline
HSTS_MAX_AGE_S = 600
HSTS = f"max-age={HSTS_MAX_AGE_S}; includeSubDomains"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TlsTally:
    server: RunningTally
    certs: Certificates

    @property
    def url(self) -> str:
        return f"https://{self.server.host}:{self.server.port}"

    def ws_url(self, poll_id: str) -> str:
        return f"wss://{self.server.host}:{self.server.port}/v1/polls/{poll_id}/live"

    def client(self, token: str | None = None) -> TallyClient:
        return TallyClient(self.url, token, ca_file=self.certs.ca)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self.certs.client_context())

    def open_poll(self) -> str:
        admin = self.client(self.server.admin_token())
        poll = admin.post(
            "/v1/polls", {"title": "over TLS", "options": ["red", "green"], "lanes": 2}
        )
        return str(admin.post(f"/v1/polls/{poll['id']}/open")["id"])


@pytest.fixture(scope="module")
def tls_tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsTally]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    env = {
        "TALLY_TLS_CERT": str(certs.cert),
        "TALLY_TLS_KEY": str(certs.key),
        "TALLY_HSTS_MAX_AGE_S": str(HSTS_MAX_AGE_S),
        "TALLY_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "TALLY_DEFENCES": '{"pow": {"difficulty": 0}}',  # these votes come without a challenge
    }
    with serving(tmp_path_factory.mktemp("tls-data"), env) as server:
        yield TlsTally(server, certs)


def tls_socket(t: TlsTally, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection((t.server.host, t.server.port), timeout=TIMEOUT_S)
    context = context or t.certs.client_context()
    return context.wrap_socket(raw, server_hostname=t.server.host)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- HTTPS: votes, receipts, HSTS -------------------------------------------------------------


def test_a_vote_over_https_gets_its_receipt_and_counts(tls_tally: TlsTally) -> None:
    poll_id = tls_tally.open_poll()
    voter = tls_tally.client(tls_tally.server.voter_token("tls-voter"))
    receipt = voter.vote(poll_id, "red")["receipt"]
    assert (receipt["poll_id"], receipt["option"]) == (poll_id, "red")
    with pytest.raises(ApiError) as again:
        voter.vote(poll_id, "green")
    assert again.value.status == 409
    assert again.value.document["receipt"] == receipt  # the same receipt, over TLS too
    deadline = time.monotonic() + TIMEOUT_S
    while voter.get(f"/v1/polls/{poll_id}/results")["total"] != 1:
        assert time.monotonic() < deadline, "the vote never reached the results"
        time.sleep(0.05)


async def test_every_response_over_tls_carries_hsts(tls_tally: TlsTally) -> None:
    """The app's answers, the hot vote path's problems and the edge's own refusals alike."""
    poll_id = tls_tally.open_poll()
    async with tls_tally.http() as http:
        answers = [
            await http.get("/v1/polls"),
            await http.get("/v1/polls/nope/results"),  # 404 problem
            await http.post(f"/v1/polls/{poll_id}/votes", json={"option": "red"}),  # 401
            await http.get("/", headers={"X-Filler": "a" * 20_000}),  # the edge's 431
        ]
    assert [a.status_code for a in answers] == [200, 404, 401, 431]
    assert all(a.headers.get("strict-transport-security") == HSTS for a in answers), [
        dict(a.headers) for a in answers
    ]
    assert answers[3].json()["code"] == "headers-too-large"


def test_plain_http_never_sends_hsts(tally: RunningTally) -> None:
    """Without a certificate the same answers have no Strict-Transport-Security header."""
    with httpx.Client(base_url=tally.url) as http:
        answers = [
            http.get("/v1/polls"),
            http.get("/v1/polls/nope/results"),
            http.get("/", headers={"X-Filler": "a" * 20_000}),
        ]
    assert [a.status_code for a in answers] == [200, 404, 431]
    assert not any("strict-transport-security" in a.headers for a in answers)


def test_the_cli_client_refuses_a_server_it_cannot_authenticate(tls_tally: TlsTally) -> None:
    """Without the private CA the certificate does not verify: no token is ever sent."""
    client = TallyClient(tls_tally.url, ca_file=None)
    with pytest.raises(ApiError) as refused:
        client.get("/v1/polls")
    assert refused.value.code == "unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.detail
    assert "--ca-file" in refused.value.detail


def test_the_cli_reads_results_over_https_with_ca_file(tls_tally: TlsTally) -> None:
    poll_id = tls_tally.open_poll()
    env = {k: v for k, v in os.environ.items() if k != "TALLY_CA_FILE"}
    argv = [
        sys.executable, "-m", "tally", "results", poll_id, "--json",
        "--url", tls_tally.url, "--ca-file", str(tls_tally.certs.ca),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["poll_id"] == poll_id


def test_the_auditor_reads_a_ledger_over_https_with_ca_file(tls_tally: TlsTally) -> None:
    """`tally audit verify` fetches the ledger over https trusting --ca-file; without it the
    private CA's certificate does not verify and the audit cannot read its source (exit 2)."""
    poll_id = tls_tally.open_poll()
    with httpx.Client(base_url=tls_tally.url, verify=tls_tally.certs.client_context()) as http:
        deadline = time.monotonic() + 30
        # The admin log's first checkpoint comes with the archiver's next cycle.
        while http.get(f"/ledger/{poll_id}/admin/checkpoint").status_code != 200:
            assert time.monotonic() < deadline, "no checkpoint of the admin log"
            time.sleep(0.2)
        ledger_key = http.get("/ledger/keys").text.splitlines()[0]
    env = {k: v for k, v in os.environ.items() if k != "TALLY_CA_FILE"}
    argv = [
        sys.executable, "-m", "tally", "audit", "verify", f"{tls_tally.url}/ledger/{poll_id}",
        "--key", ledger_key, "--json",
    ]  # fmt: skip
    trusted = subprocess.run(
        [*argv, "--ca-file", str(tls_tally.certs.ca)],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert orjson.loads(trusted.stdout)["poll_id"] == poll_id
    refused = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert b"CERTIFICATE_VERIFY_FAILED" in refused.stderr


# --- TLS itself -------------------------------------------------------------------------------


def test_tls_1_3_is_negotiated_with_alpn_http_1_1(tls_tally: TlsTally) -> None:
    context = tls_tally.certs.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with tls_socket(tls_tally, context) as sock:
        assert sock.version() == "TLSv1.3"
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.compression() is None


def test_a_tls_1_2_client_is_refused(tls_tally: TlsTally) -> None:
    """A client that offers at most TLS 1.2 (older ones a fortiori) fails its handshake: the
    server closes the connection before any HTTP is spoken."""
    context = tls_tally.certs.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        tls_socket(tls_tally, context)
    # The server goes on serving TLS 1.3 clients.
    assert tls_tally.client().get("/v1/polls")["polls"] is not None


def test_plain_http_to_the_tls_port_is_closed_without_an_answer(tls_tally: TlsTally) -> None:
    """A plain request is not a TLS handshake: the connection closes at once, with no HTTP
    answer (nothing a plain client could mistake for one), and the server keeps serving."""
    host, port = tls_tally.server.host, tls_tally.server.port
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"GET /v1/polls HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)
    assert not answer.startswith(b"HTTP/"), answer[:80]
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 1
    assert tls_tally.client().get("/v1/polls")["polls"] is not None


def test_a_handshake_that_never_finishes_is_closed_at_the_head_deadline(
    tls_tally: TlsTally,
) -> None:
    """A client that connects and sends nothing (or half a handshake) holds the connection no
    longer than TALLY_HEAD_TIMEOUT_S, not the event loop's default 60 s."""
    host, port = tls_tally.server.host, tls_tally.server.port
    for opening in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # silence, half a hello
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=HEAD_TIMEOUT_S + 4) as sock:
            sock.sendall(opening)
            assert read_all(sock) == b""
        waited = time.monotonic() - started
        assert HEAD_TIMEOUT_S - 0.1 < waited < HEAD_TIMEOUT_S + 2, waited


def test_an_oversize_head_over_tls_gets_431_and_the_connection_closes(tls_tally: TlsTally) -> None:
    """The edge counts the decrypted head, sent in small TLS records as a slow attacker would."""
    with tls_socket(tls_tally) as sock:
        sock.sendall(b"GET /v1/polls HTTP/1.1\r\nHost: x\r\nX-Filler: ")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            for _ in range(40):
                sock.sendall(b"a" * 1000)
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert f"strict-transport-security: {HSTS}".encode() in head
    assert orjson.loads(body)["code"] == "headers-too-large"


# --- WSS and SSE ------------------------------------------------------------------------------


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


async def test_live_frames_and_a_vote_over_wss(tls_tally: TlsTally) -> None:
    """The native live WebSocket over TLS: the snapshot at join, a vote with its receipt, and
    the snapshot that counts it."""
    poll_id = tls_tally.open_poll()
    token = tls_tally.server.voter_token("wss-voter")
    context = tls_tally.certs.client_context()
    async with connect(
        tls_tally.ws_url(poll_id), ssl=context, open_timeout=TIMEOUT_S, proxy=None
    ) as ws:
        first = await receive(ws)
        assert (first["type"], first["poll_id"], first["total"]) == ("snapshot", poll_id, 0)
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        await ws.send(
            orjson.dumps({"type": "vote", "request_id": "r1", "option": "green"}).decode()
        )
        seen: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            while not any(m["type"] == "snapshot" and m["total"] == 1 for m in seen):
                seen.append(await receive(ws))
    assert any(m["type"] == "snapshot" and m["total"] == 1 for m in seen), seen
    results = [m for m in seen if m["type"] == "vote_result"]
    assert results[0]["status"] == 201, results
    assert results[0]["receipt"]["option"] == "green"
    assert [m["status"] for m in seen if m["type"] == "auth_result"] == [200]


async def test_server_sent_events_over_tls(tls_tally: TlsTally) -> None:
    poll_id = tls_tally.open_poll()
    async with (
        tls_tally.http() as http,
        http.stream("GET", f"/v1/polls/{poll_id}/events", timeout=TIMEOUT_S) as events,
    ):
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        assert events.headers["strict-transport-security"] == HSTS
        async with asyncio.timeout(TIMEOUT_S):
            async for line in events.aiter_lines():
                if line.startswith("data:"):
                    snapshot = orjson.loads(line.removeprefix("data:"))
                    break
    assert (snapshot["poll_id"], snapshot["total"]) == (poll_id, 0)


# --- the key file -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    certs = make_certificates(tmp_path)
    certs.key.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        server_context(certs.cert, certs.key)


def test_an_owner_only_key_loads_and_a_mismatched_pair_is_refused(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "a")
    certs.key.chmod(0o400)
    context = server_context(certs.cert, certs.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    other = make_certificates(tmp_path / "b")
    with pytest.raises(ConfigError, match="must match"):
        server_context(certs.cert, other.key)
    with pytest.raises(ConfigError, match="cannot be read"):
        server_context(certs.cert, tmp_path / "missing.pem")


def test_serve_refuses_to_start_with_a_group_readable_key(tmp_path: Path) -> None:
    """Exit status 2 and one line naming the file and the fix; nothing listens."""
    certs = make_certificates(tmp_path / "certs")
    certs.key.chmod(0o640)
    env = dict(os.environ, TALLY_DATA_DIR=str(tmp_path / "data"))
    argv = [
        sys.executable, "-m", "tally", "gateway", "--workers", "2",
        "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
    ]  # fmt: skip
    env["TALLY_VALKEY_URL"] = "redis://127.0.0.1:1"  # never reached: the key is checked first
    env["TALLY_PSEUDONYM_SECRET"] = "ab" * 32
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert b"chmod 600" in done.stderr


def test_a_certificate_without_its_key_is_a_configuration_error(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    with pytest.raises(ConfigError, match="go together"):
        tls_context(config.load({"TALLY_TLS_CERT": str(certs.cert)}))
    with pytest.raises(ConfigError, match="go together"):
        tls_context(config.load({"TALLY_TLS_KEY": str(certs.key)}))
    assert tls_context(config.load({})) is None


# --- tally gateway --workers N over TLS -------------------------------------------------------


@pytest.mark.single_node("the role processes share the one-node Valkey (role_processes.role_env)")
def test_every_gateway_worker_serves_https(valkey_server: EmbeddedValkey, tmp_path: Path) -> None:
    """`tally gateway --workers 2 --tls-cert ... --tls-key ...`: each worker loads the pair
    (the flags reach them), so every fresh connection, whichever worker the kernel hands it to,
    speaks TLS 1.3 with HSTS; /metrics sums both workers."""
    certs = make_certificates(tmp_path / "certs")
    env = role_env(valkey_server, tmp_path / "data", TALLY_PSEUDONYM_SECRET="5e" * 32)
    register_gateway_key(env)
    port = free_port()
    argv = [
        sys.executable, "-m", "tally", "gateway", "--workers", "2",
        "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
    ]  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", verify=certs.client_context()).status_code == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
            time.sleep(0.1)
        answers = [  # fresh connections: the kernel spreads them over the workers' sockets
            httpx.get(f"{url}/v1/polls", verify=certs.client_context()) for _ in range(16)
        ]
        assert all(a.status_code == 200 for a in answers)
        assert all(a.headers["strict-transport-security"].startswith("max-age=") for a in answers)
        text = httpx.get(f"{url}/metrics", verify=certs.client_context()).text
        assert re.search(r"^tally_gateway_workers 2(\.0)?$", text, re.MULTILINE), text[-500:]
        assert "Tally gateway: 2 workers on https://" in (tmp_path / "gateway.log").read_text()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert process.returncode == 0
