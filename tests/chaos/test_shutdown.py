"""Ctrl-C semantics of `tally serve --demo`, as a terminal delivers them: SIGINT to the whole
foreground process group. Tally stops in order, exits 0, takes its valkey-server with it, and the
next start on the same data dir finds the demo poll and its votes."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import is_running, settled_results
from tally.bench.processes import free_port
from tally.client import ApiError, TallyClient
from tally.security.dev_issuer import DevIssuer

HOST = "127.0.0.1"
STARTUP_S = 60.0
EXIT_WITHIN_S = 15.0
DEMO_POLL = re.compile(r"Demo poll '([a-z0-9_-]+)' is open")


@dataclass
class Demo:
    """A running `tally serve --demo` and what its instructions told us."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    poll_id: str

    def valkey_pid(self) -> int:
        return int((self.data_dir / "valkey" / "valkey.pid").read_text().strip())

    def ctrl_c(self) -> int:
        """SIGINT the process group, as a terminal's Ctrl-C does; returns the exit code."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=EXIT_WITHIN_S)


def read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> str:
    """Everything the process printed up to and including `marker` (raises if it never does)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    printed = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while marker not in printed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} within {timeout_s}s; printed {printed!r}")
            if selector.select(remaining):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"tally exited before printing {marker!r}: {printed!r}")
                printed += chunk
    return printed.decode()


@contextlib.contextmanager
def demo_server(data_dir: Path) -> Iterator[Demo]:
    """`tally serve --demo` in its own process group; killed (group and Valkey) if still running."""
    port = free_port()
    env = dict(os.environ, TALLY_DATA_DIR=str(data_dir), TALLY_LOG_LEVEL="warning")
    env.pop("TALLY_VALKEY_URL", None)
    argv = [sys.executable, "-m", "tally", "serve", "--demo", "--host", HOST, "--port", str(port)]
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        printed = read_until(process, b"openapi.json", STARTUP_S)
        found = DEMO_POLL.search(printed)
        assert found is not None, printed
        yield Demo(process, f"http://{HOST}:{port}", data_dir, found.group(1))
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
        pidfile = data_dir / "valkey" / "valkey.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            leftover = int(pidfile.read_text().strip())
            if is_running(leftover):
                os.kill(leftover, signal.SIGKILL)


def cast(demo: Demo, subject: str, option: str) -> dict[str, object]:
    issuer = DevIssuer.load_or_create(demo.data_dir / "keys")
    return TallyClient(demo.url, issuer.mint(subject)).post(
        f"/v1/polls/{demo.poll_id}/votes", {"option": option}
    )


@pytest.mark.single_node(
    "Ctrl-C of `tally serve --demo` must stop its embedded valkey-server (read from its pid "
    "file) too; an external store outlives the server"
)
def test_ctrl_c_exits_0_stops_valkey_and_the_next_start_keeps_the_demo_votes(
    tmp_path: Path,
) -> None:
    """Ctrl-C exits 0 within 15 s, valkey-server gone; a restart has the same demo poll and vote."""
    with demo_server(tmp_path) as first:
        option = TallyClient(first.url).get(f"/v1/polls/{first.poll_id}")["options"][0]["id"]
        receipt = cast(first, "ctrl-c-voter", option)["receipt"]
        valkey = first.valkey_pid()
        assert first.ctrl_c() == 0
        assert not is_running(valkey)

    with demo_server(tmp_path) as second:
        assert second.poll_id == first.poll_id
        results = settled_results(TallyClient(second.url), second.poll_id, total=1)
        assert (results["state"], results["total"], results["counts"][option]) == ("open", 1, 1)
        with pytest.raises(ApiError) as repeat:
            cast(second, "ctrl-c-voter", option)
        assert (repeat.value.status, repeat.value.code) == (409, "already-voted")
        assert repeat.value.document["receipt"] == receipt
        valkey = second.valkey_pid()
        assert second.ctrl_c() == 0
        assert not is_running(valkey)
