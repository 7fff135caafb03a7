"""The operator's commands reach the embedded store of a running `tally serve` with no
TALLY_VALKEY_URL: its admin URL sits in the data dir (0600) while it runs, and is gone after."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import serving
from tally.store.embedded import EmbeddedValkey

pytestmark = pytest.mark.single_node("the embedded server of tally serve is the point")


def operator(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, TALLY_DATA_DIR=str(data_dir))
    environment.pop("TALLY_VALKEY_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "tally", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_operator_commands_reach_a_running_serve_and_say_where_they_looked(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with serving(data_dir):
        url_file = EmbeddedValkey.admin_url_file(data_dir)
        assert stat.S_IMODE(url_file.stat().st_mode) == 0o600
        assert url_file.read_text().startswith("redis://tally-admin:")
        listed = operator(data_dir, "admission-key", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        keys = json.loads(listed.stdout)
        assert len(keys) == 1  # the key `tally serve` registered for its own gateway
        evidence = operator(data_dir, "evidence", "keys", "--json")
        assert evidence.returncode == 0, evidence.stderr
    assert not url_file.exists()  # stopped: nothing left that names the admin's password
    refused = operator(data_dir, "admission-key", "list")
    assert refused.returncode != 0
    assert "TALLY_VALKEY_URL" in refused.stderr
    assert str(url_file) in refused.stderr
