"""Everything a real `tally serve` writes in its data dir is its owner's alone: files 0600,
folders 0700, Valkey's AOF directory and files, its log and pid file, the ledger, the keys."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from conftest import StartTally

pytestmark = pytest.mark.single_node(reason="reads the embedded valkey-server's files")


def loose_modes(root: Path) -> list[str]:
    """Every path under `root` (itself included) whose mode is not 0700 (folder) or 0600."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat()
        if stat.S_ISLNK(mode.st_mode) or stat.S_ISSOCK(mode.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(mode.st_mode) else 0o600
        if stat.S_IMODE(mode.st_mode) != want:
            loose.append(f"{oct(stat.S_IMODE(mode.st_mode))} {path.relative_to(root)}")
    return loose


def test_every_file_in_the_data_dir_is_private(start_tally: StartTally, tmp_path: Path) -> None:
    data = tmp_path / "data"
    t = start_tally(data, {"TALLY_CHECKPOINT_INTERVAL_MS": "200"})
    poll = t.open_poll("Red", "Blue", lanes=2)
    for i in range(5):
        t.client(t.voter_token(f"mode-{i}")).post(
            f"/v1/polls/{poll['id']}/votes", {"option": ("red", "blue")[i % 2]}
        )
    t.results(str(poll["id"]), total=5)
    deadline = time.monotonic() + 15
    while not any((data / "ledger").rglob("checkpoint")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any((data / "ledger").rglob("checkpoint"))  # the ledger is there to be checked
    assert any((data / "valkey" / "appendonly").iterdir())  # and the AOF
    assert (data / "valkey" / "valkey.log").exists()
    assert loose_modes(data) == []
