"""Shared fixtures: real Tally servers (subprocesses with their own embedded valkey-server) and a
real Valkey for store-level tests. Everything binds to 127.0.0.1 and is stopped by the fixture."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tally.bench.loadgen import build_request
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.security.dev_issuer import DevIssuer
from tally.store.embedded import EmbeddedValkey
from tally.store.library import load_functions
from tally.store.resp import Valkey

HOST = "127.0.0.1"


@dataclass
class RunningTally:
    """A `tally serve` process on a free port with its own data dir and embedded Valkey."""

    url: str
    host: str
    port: int
    data_dir: Path
    issuer: DevIssuer
    process: subprocess.Popen[bytes]

    def admin_token(self) -> str:
        return self.issuer.mint("test-admin", roles=["admin"])

    def voter_token(self, subject: str, *, alg: str = "EdDSA") -> str:
        return self.issuer.mint(subject, alg=alg)

    def client(self, token: str | None = None) -> TallyClient:
        return TallyClient(self.url, token)

    def admin(self) -> TallyClient:
        return TallyClient(self.url, self.admin_token())

    def open_poll(self, *options: str, lanes: int = 4, **extra: object) -> dict[str, object]:
        """Create and open a poll (default options red/green/blue); returns the poll document."""
        admin = self.admin()
        poll = admin.post(
            "/v1/polls",
            {
                "title": "test poll",
                "options": list(options or ("Red", "Green", "Blue")),
                "lanes": lanes,
                **extra,
            },
        )
        return admin.post(f"/v1/polls/{poll['id']}/open")

    def results(
        self, poll_id: str, *, total: int | None = None, state: str | None = None
    ) -> dict[str, Any]:
        """GET /results once the aggregator has caught up (snapshots trail writes by up to a
        tick): until `total`/`state` match when given, else until two reads a tick apart agree."""
        return settled_results(self.client(), poll_id, total=total, state=state)

    def valkey_pid(self) -> int:
        return int((self.data_dir / "valkey" / "valkey.pid").read_text().strip())


StartTally = Callable[..., RunningTally]
OPTIONS = ("red", "green", "blue")


def vote_requests(t: RunningTally, poll_id: str, tokens: list[str], shift: int) -> list[bytes]:
    """Raw HTTP vote requests for the load generator: voter i votes OPTIONS[(i + shift) % 3], so
    a repeat with another shift picks another option."""
    return [
        build_request(
            "POST",
            f"/v1/polls/{poll_id}/votes",
            host=f"{t.host}:{t.port}",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=orjson.dumps({"option": OPTIONS[(i + shift) % len(OPTIONS)]}),
        )
        for i, token in enumerate(tokens)
    ]


SETTLE_S = 0.6  # more than two aggregator ticks at the default TALLY_TICK_MS of 250


def settled_results(
    client: TallyClient,
    poll_id: str,
    *,
    total: int | None = None,
    state: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Results as the aggregator publishes them, once they reflect the writes the caller made."""
    path = f"/v1/polls/{poll_id}/results"
    deadline = time.monotonic() + timeout_s
    previous = client.get(path)
    while time.monotonic() < deadline:
        if total is not None or state is not None:
            if (total is None or previous["total"] == total) and (
                state is None or previous["state"] == state
            ):
                return previous
            time.sleep(0.05)
            previous = client.get(path)
            continue
        time.sleep(SETTLE_S)
        current = client.get(path)
        if current == previous:
            return current
        previous = current
    return previous


@contextlib.contextmanager
def serving(directory: Path, env: dict[str, str] | None = None) -> Iterator[RunningTally]:
    """`tally serve` on a free port with `directory` as its data dir; stopped on exit."""
    port = free_port()
    environment = dict(
        os.environ, TALLY_DATA_DIR=str(directory), TALLY_LOG_LEVEL="warning", **(env or {})
    )
    environment.pop("TALLY_VALKEY_URL", None)
    argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
    with running(argv, host=HOST, port=port, env=environment, timeout_s=60) as process:
        issuer = DevIssuer.load_or_create(directory / "keys")
        yield RunningTally(f"http://{HOST}:{port}", HOST, port, directory, issuer, process)


@pytest.fixture
def start_tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartTally]:
    """A factory: `start_tally(data_dir=None)` starts a server (reusing a data dir restarts on it)."""
    stack = contextlib.ExitStack()

    def start(data_dir: Path | None = None, env: dict[str, str] | None = None) -> RunningTally:
        return stack.enter_context(serving(data_dir or tmp_path_factory.mktemp("tally-data"), env))

    with stack:
        yield start


@pytest.fixture(scope="session")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    """One server shared by the tests that only create their own polls."""
    with serving(tmp_path_factory.mktemp("tally-shared")) as server:
        yield server


def is_running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """A real valkey-server (the bundled binary) for store-level tests."""
    import asyncio

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture
async def valkey(valkey_server: EmbeddedValkey) -> AsyncIterator[Valkey]:
    """A connected client with Tally's functions loaded (one per test, on the test's loop)."""
    client = Valkey(valkey_server.endpoint, on_connect=load_functions)
    await client.connect()
    yield client
    await client.close()
