"""A role process whose background task keeps crashing: the supervisor logs each traceback,
restarts the task a few times, then stops the process with a non-zero exit status, never a
process that looks alive while doing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import StoreUnderTest
from role_processes import HOST, role_process_env
from tally.bench.processes import free_port


def test_an_archiver_that_cannot_publish_its_key_is_restarted_then_exits_1(
    store_server: StoreUnderTest, tmp_path: Path
) -> None:
    """`ledger/keys` is a directory, so the archiver's loop crashes at its first step, every
    time: 3 restarts, then exit 1 with the tracebacks and the reason on stderr."""
    data_dir = tmp_path / "data"
    (data_dir / "ledger" / "keys").mkdir(parents=True)
    argv = [sys.executable, "-m", "tally", "archiver", "--host", HOST, "--port", str(free_port())]
    completed = subprocess.run(
        argv,
        env=role_process_env("archiver", store_server.role_env(data_dir)),  # its own user
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    stderr = completed.stderr
    assert completed.returncode == 1, stderr
    assert stderr.count("ERROR tally.supervisor: archiver crashed") == 4, stderr
    assert stderr.count("Traceback (most recent call last)") == 4, stderr
    assert "IsADirectoryError" in stderr
    assert stderr.count("WARNING tally.supervisor: archiver restarted") == 3, stderr
    assert "archiver crashed 4 times within 60 s: stopping the process (exit status 1)" in stderr
    assert "shutdown 4/4: close the Valkey connections" in stderr
