"""Key files shared by the roles of one data dir (security.keys): made once, 0600 in a 0700
directory, and the same for every process that starts at the same moment."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from tally.security.keys import ledger_key_file, pseudonym_secret_file, read_or_create


def test_a_key_file_is_made_once_private_and_kept(tmp_path: Path) -> None:
    """The first call writes the maker's bytes (0600, directory 0700); later calls read them and
    never call their maker."""
    path = pseudonym_secret_file(tmp_path)
    assert read_or_create(path, lambda: b"first") == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    def never() -> bytes:
        raise AssertionError("an existing key must not be made again")

    assert read_or_create(path, never) == b"first"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_creators_racing_for_one_key_all_get_the_winners(tmp_path: Path) -> None:
    """Roles starting at once each make a key; exactly one lands, and every one returns it."""
    path = ledger_key_file(tmp_path)
    start = threading.Barrier(8)
    results: list[bytes] = []

    def create(n: int) -> None:
        def make() -> bytes:
            start.wait()  # everyone has seen no file yet
            return b"key %d" % n

        results.append(read_or_create(path, make))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(results) == 8
    assert set(results) == {path.read_bytes()}
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
