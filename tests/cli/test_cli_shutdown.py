"""Shutdown says what it stopped: `tally gateway` (one process, and --workers N, whose parent
reports for its workers) prints each shutdown step and the duties it ended, on Ctrl-C."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import pytest

from conftest import StoreUnderTest
from role_processes import Role, running_role

STARTUP_S = 60.0


def wait_for_workers(gateway: Role, workers: int) -> None:
    """Until every worker logged that it listens: a worker still starting has no signal
    handlers yet, and a SIGTERM then kills it outright (not what this test is about)."""
    deadline = time.monotonic() + STARTUP_S
    while gateway.log_path.read_text().count("Tally gateway listening on") < workers:
        assert time.monotonic() < deadline, gateway.log_path.read_text()
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_gateway_prints_what_it_stopped(
    store_server: StoreUnderTest, tmp_path: Path, workers: int
) -> None:
    """SIGINT, as Ctrl-C sends it: exit 0, and the steps listed once, by the process that ran
    them (the lone gateway, or the parent of the workers)."""
    env = store_server.role_env(
        tmp_path, TALLY_LOG_LEVEL="info", TALLY_PSEUDONYM_SECRET=secrets.token_hex(32)
    )
    with running_role("gateway", env, tmp_path, args=("--workers", str(workers))) as gateway:
        wait_for_workers(gateway, workers)
        gateway.process.send_signal(signal.SIGINT)
        assert gateway.process.wait(timeout=30) == 0, gateway.log_path.read_text()
    printed = gateway.log_path.read_text()
    assert printed.count("tally: stopped in ") == 1, printed
    if workers == 1:
        assert "1. done      close live connections, stop HTTP" in printed, printed
        assert "close the Valkey connections" in printed, printed
    else:
        assert "2. done      stop the workers" in printed, printed
        assert "(worker 0, worker 1)" in printed, printed
