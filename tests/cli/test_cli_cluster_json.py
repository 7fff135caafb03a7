"""`tally cluster up --json`: the URLs a script needs, as data; `down` lists what it stopped."""

from __future__ import annotations

import json
from pathlib import Path

from cli_process import tally

from tally.store import acl


def test_cluster_up_json_gives_each_roles_url_and_file(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    up = ("cluster", "up", "--dir", directory, "--primaries", "1", "--replicas", "0", "--json")
    try:
        done = tally(*up, timeout_s=90)
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert document["url"].startswith("valkey+cluster://")
        assert set(document["roles"]) == set(acl.ROLES)
        for role, entry in document["roles"].items():
            assert Path(entry["file"]).read_text().strip() == entry["url"], role
    finally:
        stopped = tally("cluster", "down", "--dir", directory, timeout_s=60)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped 1 nodes" in stopped.stdout
    assert "primary on port " in stopped.stdout
