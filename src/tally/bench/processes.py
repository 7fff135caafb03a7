"""Start the servers a benchmark measures, and stop them without leaving a process behind.

Each server runs in its own session (process group), so stopping it also reaches whatever it
started itself (a gateway's bundled valkey-server, say). What this cannot cover: a parent killed
with SIGKILL runs no cleanup at all, so its children outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tally.store.embedded import free_port

__all__ = ["free_port", "rss_bytes", "running", "wait_for_port"]

_POLL_INTERVAL_S = 0.02


async def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Return once `host:port` accepts a TCP connection; raise TimeoutError after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            # Polling is the only option: nothing notifies us when another process listens.
            while True:
                if await _accepts(host, port):
                    return
                await asyncio.sleep(_POLL_INTERVAL_S)
    except TimeoutError:
        raise TimeoutError(f"{host}:{port} accepted no connection within {timeout_s}s") from None


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    host: str,
    port: int,
    timeout_s: float = 20,
    env: Mapping[str, str] | None = None,
    stop_timeout_s: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` as a server for the duration of the `with` block.

    Yields once `host:port` accepts TCP connections; raises TimeoutError if that takes longer
    than `timeout_s`, RuntimeError if the process exits first. `env` is the child's whole
    environment, as for `subprocess.Popen` (None: inherit ours). stdout and stderr are inherited
    so a server's errors stay visible. On exit the process group is stopped (see `_stop`).
    """
    # argv is chosen by the benchmark code that calls us, never taken from outside input.
    process = subprocess.Popen(  # noqa: S603
        list(argv),
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_accepting(process, host, port, timeout_s)
        yield process
    finally:
        _stop(process, stop_timeout_s)


def _wait_until_accepting(
    process: subprocess.Popen[bytes], host: str, port: int, timeout_s: float
) -> None:
    # Blocking on purpose: `running` is a plain context manager, usable with or without a loop,
    # and nothing else needs the loop while a server starts.
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            raise RuntimeError(f"{process.args!r} exited with {code} before accepting connections")
        try:
            with socket.create_connection((host, port), timeout=_POLL_INTERVAL_S * 10):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{host}:{port} accepted no connection within {timeout_s}s"
                ) from None
            time.sleep(_POLL_INTERVAL_S)


def _stop(process: subprocess.Popen[bytes], stop_timeout_s: float) -> None:
    """Stop the process and everything in its group, gracefully if it lets us.

    1. SIGTERM the group: servers shut down gracefully on it (uvicorn drains connections).
    2. Wait up to `stop_timeout_s` for the leader to exit.
    3. Still running: SIGKILL the group and reap the leader.
    4. SIGKILL the group once more: members that outlived their leader would be orphans.
    """
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=stop_timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # start_new_session made the child a group leader, so its pid is the group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS in /proc/<pid>/status; Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise ValueError(f"process {pid} reports no VmRSS (a zombie or kernel thread?)")
