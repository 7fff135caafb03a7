"""Role processes for the split-deployment tests: `tally gateway|aggregator|archiver` as real
subprocesses against one external valkey-server (or a local cluster), each in its own session
with its log in a file, and always stopped by the context manager that started it.

Least privilege, as a deployment runs them: each role process connects as its own ACL user
(store/acl.py), never as the admin. `role_env` gives the environment one deployment shares, with
the admin's URL as TALLY_VALKEY_URL (what the operator's steps use: `tally admission-key
register`, `tally store load-functions`, a test's store-level setup) and every role's URL beside
it (ROLE_URL_PREFIX + ROLE, no TALLY_ variable); `running_role` (and `role_process_env`) hands
`tally <role>` its own user's URL in place of the admin's and drops the others, so the role
process never holds the admin's password."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from defences_off import DEFENCES_OFF
from tally.bench.processes import free_port
from tally.store import acl
from tally.store.embedded import EmbeddedValkey
from tally.store.local_cluster import LocalCluster

HOST = "127.0.0.1"
STARTUP_S = 60.0
STOP_S = 20.0
# role_env's variables naming each role's URL (ROLE_URL_PREFIX + "GATEWAY"...): read by
# running_role, never passed on to a Tally process.
ROLE_URL_PREFIX = "TEST_VALKEY_URL_"
# The commands that run as one role's user: the command is the role's name.
ROLE_COMMANDS = (acl.GATEWAY, acl.AGGREGATOR, acl.ARCHIVER)

Store = EmbeddedValkey | LocalCluster


def valkey_url(store: Store) -> str:
    return store.url_for(acl.ADMIN)  # the admin's ACL user (store.acl)


@dataclass
class Role:
    """A running `tally <command>`; `url` is its HTTP port (the API, or the ops server)."""

    command: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5.0)

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator stops it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_S)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a crashed machine."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_S)


def role_env(valkey: Store, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment every role of one deployment shares: the admin's URL as
    TALLY_VALKEY_URL, each role's own beside it (the module docstring)."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TALLY_") and not k.startswith(ROLE_URL_PREFIX)
    }
    environment.update(
        DEFENCES_OFF,
        TALLY_VALKEY_URL=valkey_url(valkey),
        TALLY_DATA_DIR=str(data_dir),
        TALLY_LOG_LEVEL="info",
    )
    environment.update({ROLE_URL_PREFIX + role.upper(): valkey.url_for(role) for role in acl.ROLES})
    environment.update(extra)
    return environment


def role_process_env(command: str, env: Mapping[str, str]) -> dict[str, str]:
    """What `tally <command>` gets from a role_env: for a role, its own user's URL in place of
    the admin's, unless the test named another store in TALLY_VALKEY_URL; no role's URL."""
    own = {k: v for k, v in env.items() if not k.startswith(ROLE_URL_PREFIX)}
    admin = env.get(ROLE_URL_PREFIX + acl.ADMIN.upper())
    role_url = env.get(ROLE_URL_PREFIX + command.upper())
    if command in ROLE_COMMANDS and role_url and env.get("TALLY_VALKEY_URL") == admin:
        own["TALLY_VALKEY_URL"] = role_url
    return own


@contextlib.contextmanager
def running_role(
    command: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str | None = None,
    args: Sequence[str] = (),
) -> Iterator[Role]:
    """`tally <command> --host 127.0.0.1 --port <free> [args]`, as the role's own Valkey user
    (role_process_env); yields once the port accepts connections; on exit kills what still runs
    (its whole session) and reaps it."""
    if command == "gateway":
        register_gateway_key(env)
    port = free_port()
    log_path = log_dir / f"{name or command}.log"
    argv = [sys.executable, "-m", "tally", command, "--host", HOST, "--port", str(port), *args]
    with running_process(command, argv, role_process_env(command, env), port, log_path) as role:
        yield role


@contextlib.contextmanager
def running_process(
    command: str, argv: Sequence[str], env: Mapping[str, str], port: int, log_path: Path
) -> Iterator[Role]:
    """`argv` (`tally <command>` listening on `port`) in a session of its own, its output in
    `log_path`; yields once /healthz answers; on exit kills what still runs (the whole session)
    and reaps it."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    role = Role(command, process, port, log_path)
    try:
        wait_listening(role)
        yield role
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_S)


def register_gateway_key(env: Mapping[str, str]) -> None:
    """Register the admission key the gateways of `env` sign with, as an operator does before
    starting them (`tally gateway` refuses an unregistered key): the key is made in the data dir
    now (as the gateway would), then `tally admission-key register` runs with the admin's URL
    (`env`'s TALLY_VALKEY_URL: role_env's is the admin's)."""
    from tally import config
    from tally.security.admission_keys import admission_signer

    settings = config.load(env)
    if not settings.admission_signing:
        return
    verifier = str(admission_signer(settings).key.verifier)
    subprocess.run(
        [sys.executable, "-m", "tally", "admission-key", "register", verifier],
        env=dict(env),
        check=True,
        capture_output=True,
        timeout=STARTUP_S,
    )


def process_valkey_url(pid: int) -> str | None:
    """The TALLY_VALKEY_URL a running process was started with (its /proc environ)."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"TALLY_VALKEY_URL":
            return value.decode()
    return None


def wait_listening(role: Role) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        code = role.process.poll()
        if code is not None:
            raise RuntimeError(f"tally {role.command} exited {code} at start:\n{role.log()}")
        try:
            if role.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"tally {role.command} not listening:\n{role.log()}")
        time.sleep(0.05)


def wait_for(check: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """Ask `check()` again until it holds: the state lives in other processes."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)
