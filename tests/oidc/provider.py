"""The test OpenID Connect provider (provider.mjs, panva/oidc-provider on node) as a context manager,
and a client that signs a voter in at it the way a browser would (login and consent forms).

`running_provider(redirect_uris)` runs `npm ci` first if node_modules is missing, starts the
provider on a free 127.0.0.1 port, waits for its discovery document, and stops it on exit. Tests
skip with a reason when node or npm is not installed (.ci/run installs both).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from conftest import RunningTally, serving
from tally.bench.processes import free_port

HERE = Path(__file__).resolve().parent
CLIENT_ID = "tally"  # public: PKCE only
CONFIDENTIAL_CLIENT_ID = "tally-confidential"
CLIENT_SECRET = "tally-test-secret"
ORGANISER = "olga"  # the account whose ID token says roles: ["admin"]


@dataclass(frozen=True)
class OidcProvider:
    issuer: str  # also its discovery base: <issuer>/.well-known/openid-configuration
    port: int


MIN_NODE = 20  # oidc-provider 9 supports node 20.19+ and 22+


def node_or_skip() -> tuple[str, str]:
    """node and npm, or a skip saying why (a failure in CI, which installs them: .ci/run)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    reason = None
    if node is None or npm is None:
        reason = "node and npm are not installed: the OIDC tests run a real provider on node"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        major = int(version.lstrip("v").split(".")[0] or 0)
        if major < MIN_NODE:
            reason = f"node {version.strip()} is older than {MIN_NODE}, which oidc-provider 9 needs"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, yet this is CI, where the sign-in tests must run")
        pytest.skip(reason)
    assert node is not None
    assert npm is not None
    return node, npm


def install(npm: str) -> None:
    """`npm ci` from the committed package-lock.json, once (CI's make test does it too)."""
    if (HERE / "node_modules" / "oidc-provider").is_dir():
        return
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
        check=True,
        capture_output=True,
        timeout=300,
    )


@contextlib.contextmanager
def running_provider(
    redirect_uris: list[str], *, port: int | None = None
) -> Iterator[OidcProvider]:
    node, npm = node_or_skip()
    install(npm)
    port = port or free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        REDIRECT_URIS=",".join(redirect_uris),
        CLIENT_SECRET=CLIENT_SECRET,
    )
    log = (HERE / "node_modules" / f".provider-{port}.log").open("wb")
    process = subprocess.Popen(
        [node, str(HERE / "provider.mjs")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the OIDC provider did not answer discovery in 30 s")
            time.sleep(0.1)
        yield OidcProvider(issuer, port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def gateway_signing_in_here(
    directory: Path, env: dict[str, str] | None = None
) -> Iterator[RunningTally]:
    """`tally serve` in `directory` whose voters sign in at a test provider started for it (on
    a port chosen first, so the gateway's discovery URL can name it); `env` adds settings."""
    node_or_skip()
    port = free_port()
    settings = {
        "TALLY_OIDC_DISCOVERY_URL": f"http://127.0.0.1:{port}/.well-known/openid-configuration",
        "TALLY_OIDC_CLIENT_ID": CLIENT_ID,
        **(env or {}),
    }
    with (
        serving(directory, settings) as server,
        running_provider([f"{server.url}/auth/callback"], port=port),
    ):
        yield server


def sign_in_at_provider(authorize_url: str, login: str, callback_prefix: str) -> str:
    """Follows an authorization request through the provider's login and consent pages, as a
    browser would, until the provider redirects to `callback_prefix`; returns that URL (with
    code, state and iss)."""
    with httpx.Client(timeout=10) as browser:
        url = authorize_url
        for _ in range(12):
            response = browser.get(url)
            while response.is_redirect:
                url = urljoin(url, response.headers["location"])
                if url.startswith(callback_prefix):
                    return url
                response = browser.get(url)
            action = re.search(r'<form[^>]*action="([^"]+)"', response.text)
            if action is None:
                raise AssertionError(f"no form at {url}: {response.status_code}")
            target = urljoin(url, unescape(action.group(1)))
            fields = {"prompt": "login", "login": login, "password": "any"}
            if 'value="consent"' in response.text:
                fields = {"prompt": "consent"}
            posted = browser.post(target, data=fields)
            if not posted.is_redirect:
                raise AssertionError(f"the form at {target} answered {posted.status_code}")
            url = urljoin(target, posted.headers["location"])
            if url.startswith(callback_prefix):
                return url
        raise AssertionError("the provider never redirected back")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
