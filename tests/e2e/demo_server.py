"""`tally serve --demo` as a subprocess for the page tests: its own port, data dir and Valkey."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import store_env
from tally.bench.processes import free_port, running
from tally.client import ApiError, TallyClient
from tally.demo import DEMO_TITLE
from tally.security.dev_issuer import DevIssuer

HOST = "127.0.0.1"
DEMO_POLL_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class DemoTally:
    """A running demo server and the demo poll it opened."""

    url: str
    data_dir: Path
    issuer: DevIssuer
    demo_poll: dict[str, Any]
    ca_file: Path | None = None  # the CA that signed the server's certificate, over https

    def admin(self) -> TallyClient:
        token = self.issuer.mint("e2e-admin", roles=["admin"])
        return TallyClient(self.url, token, ca_file=self.ca_file)

    def open_poll(self, title: str, *options: str) -> dict[str, Any]:
        """Create and open a poll; returns its document."""
        admin = self.admin()
        poll = admin.post("/v1/polls", {"title": title, "options": list(options), "lanes": 2})
        return admin.post(f"/v1/polls/{poll['id']}/open")


@contextlib.contextmanager
def demo_tally(
    data_dir: Path, *, demo: bool = True, tls: tuple[Path, Path, Path] | None = None
) -> Iterator[DemoTally]:
    """Run `tally serve [--demo]` until the block ends; yields once the demo poll is open.
    `tls`: (certificate, key, CA certificate) to serve https and wss instead of http."""
    port = free_port()
    environment = dict(os.environ, TALLY_DATA_DIR=str(data_dir), TALLY_LOG_LEVEL="warning")
    environment.pop("TALLY_VALKEY_URL", None)
    environment.pop("TALLY_JWKS", None)
    argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
    if demo:
        argv.append("--demo")
    if tls is not None:
        argv += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    ca_file = None if tls is None else tls[2]
    with (
        store_env(data_dir) as store,  # cluster mode: the data dir's own cluster
        running(argv, host=HOST, port=port, env={**environment, **store}, timeout_s=60),
    ):
        url = f"{'http' if tls is None else 'https'}://{HOST}:{port}"
        poll = _wait_for_demo_poll(TallyClient(url, ca_file=ca_file)) if demo else {}
        issuer = DevIssuer.load_or_create(data_dir / "keys")
        yield DemoTally(url, data_dir, issuer, poll, ca_file)


def _wait_for_demo_poll(client: TallyClient) -> dict[str, Any]:
    # The port accepts before the demo poll exists: it is created once the server has started.
    deadline = time.monotonic() + DEMO_POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiError):
            for poll in client.get("/v1/polls")["polls"]:
                if poll["title"] == DEMO_TITLE and poll["state"] == "open":
                    return dict(poll)
        time.sleep(0.05)
    raise TimeoutError(f"no open demo poll at {client.base_url} within {DEMO_POLL_TIMEOUT_S}s")
