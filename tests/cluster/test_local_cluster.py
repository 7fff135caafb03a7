"""The local Valkey Cluster launcher: a real 3x1 cluster formed without valkey-cli, locked down
(the default user off, one ACL user per role as on the embedded server, replicas authenticating
as a replication-only user, loopback, private files), with Tally's functions loaded, durable, and
stopped without leftovers."""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.cluster_cli import add_cluster_parser, run_cluster
from tally.ports import ReplyError
from tally.store import acl
from tally.store.library import library_source
from tally.store.local_cluster import (
    SLOTS,
    ClusterError,
    LocalCluster,
    NodeConnection,
    cluster_url,
    down,
    url_file,
)
from tally.store.resp import Valkey

CLI = [sys.executable, "-m", "tally.cluster_cli", "cluster"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    started = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        started.up()
        yield started
    finally:
        started.stop()


def test_every_slot_is_served_by_three_primaries_each_with_a_replica_in_sync(
    cluster: LocalCluster,
) -> None:
    primaries = [n for n in cluster.nodes if n.role == "primary"]
    replicas = [n for n in cluster.nodes if n.role == "replica"]
    assert len(primaries) == 3
    assert sorted(r.primary_port or 0 for r in replicas) == sorted(p.port for p in primaries)
    assert cluster.topology() == sorted(cluster.nodes, key=lambda n: n.port)

    for node in cluster.nodes:
        info = cluster.call(node.port, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert f"cluster_slots_assigned:{SLOTS}" in info
        assert "cluster_known_nodes:6" in info
    slots = cluster.call(primaries[0].port, "CLUSTER", "SLOTS")
    covered = sorted((int(entry[0]), int(entry[1])) for entry in slots)
    assert covered[0][0] == 0
    assert covered[-1][1] == SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(covered))
    assert {int(entry[2][1]) for entry in slots} == {p.port for p in primaries}

    for replica in replicas:
        replication = cluster.call(replica.port, "INFO", "replication")
        assert "role:slave" in replication
        assert "master_link_status:up" in replication
        assert f"master_port:{replica.primary_port}" in replication


def test_the_url_lists_the_primaries_and_the_admins_user(cluster: LocalCluster) -> None:
    ports = [n.port for n in cluster.nodes if n.role == "primary"]
    assert cluster.url == cluster_url(cluster.password, ports, "tally-admin")
    assert cluster.url.startswith(f"valkey+cluster://tally-admin:{cluster.password}@127.0.0.1:")
    assert cluster.url.count(",") == 2
    for role in acl.ROLES:
        url = cluster.url_for(role)
        assert url == cluster_url(cluster.passwords[role], ports, f"tally-{role}")
        assert url_file(cluster.dir, role).read_text() == url
    assert len({cluster.passwords[user] for user in (*acl.ROLES, acl.REPLICATION)}) == 5


def test_each_node_has_the_role_users_and_the_default_user_off(cluster: LocalCluster) -> None:
    """As on the embedded server: every role's user with its rules from store/acl.py, the
    replication user allowed the replication handshake alone; Tally's functions on every node
    (the primaries' loaded by `up` as the admin, the replicas' replicated)."""
    for node in cluster.nodes:
        users = {line.split()[1]: line for line in cluster.call(node.port, "ACL", "LIST")}
        assert set(users) == {"default", *(f"tally-{u}" for u in (*acl.ROLES, acl.REPLICATION))}
        assert " off " in users["default"]
        with (
            cluster.connect(node.port, authenticate=False) as conn,
            pytest.raises(ReplyError, match="WRONGPASS"),
        ):
            conn.call("AUTH", "default", "any")
        for role in acl.ROLES:
            line = users[f"tally-{role}"]
            assert f" on {acl.password_hash(cluster.passwords[role])} " in line
            dryrun = cluster.call(node.port, "ACL", "DRYRUN", f"tally-{role}", "FLUSHALL")
            assert (role == acl.ADMIN) == (dryrun == "OK"), (role, dryrun)
        allowed = ("ACL", "DRYRUN", "tally-gateway", "SSUBSCRIBE", "tally:live:{p}")
        assert cluster.call(node.port, *allowed) == "OK"
        replication = NodeConnection(
            node.port, cluster.passwords[acl.REPLICATION], username="tally-replication"
        )
        try:
            assert replication.call("PING") == "PONG"
            for refused in (("GET", "k"), ("FUNCTION", "LIST"), ("CLUSTER", "SHARDS")):
                with pytest.raises(ReplyError, match="NOPERM"):
                    replication.call(*refused)
        finally:
            replication.close()
        (library,) = cluster.call(node.port, "FUNCTION", "LIST", "WITHCODE")
        assert dict(zip(library[::2], library[1::2], strict=True))["library_code"] == (
            library_source()
        )


async def test_a_role_connects_as_its_own_user_and_is_held_to_its_rules(
    cluster: LocalCluster,
) -> None:
    primary = next(n.port for n in cluster.nodes if n.role == "primary")
    client = Valkey(cluster.endpoint(primary, acl.ARCHIVER))
    try:
        assert await client.execute("PING") == b"PONG"  # authenticated as tally-archiver
        for refused in (("FCALL", "tally_vote", 0), ("FLUSHALL",), ("FUNCTION", "FLUSH")):
            with pytest.raises(ReplyError, match="NOPERM"):
                await client.execute(*refused)
    finally:
        await client.close()


def test_every_node_requires_the_password_and_listens_on_loopback_only(
    cluster: LocalCluster,
) -> None:
    for node in cluster.nodes:
        with (
            cluster.connect(node.port, authenticate=False) as conn,
            pytest.raises(ReplyError, match="NOAUTH"),
        ):
            conn.call("GET", "x")
        assert cluster.call(node.port, "CONFIG", "GET", "bind")[1] == "127.0.0.1"
        assert cluster.call(node.port, "CONFIG", "GET", "protected-mode")[1] == "yes"
        assert cluster.call(node.port, "CONFIG", "GET", "appendfsync")[1] == "always"
        assert cluster.call(node.port, "CONFIG", "GET", "appendonly")[1] == "yes"
        with (
            cluster.connect(node.port, authenticate=False) as conn,
            pytest.raises(ReplyError, match="WRONGPASS"),
        ):
            conn.call("AUTH", "not-the-password")


def test_the_passwords_live_only_in_private_files(cluster: LocalCluster) -> None:
    """The state file and each role's URL file are 0600; a node's config holds the roles'
    passwords as hashes only, and the replication user's (masterauth) alone in clear."""
    assert _mode(cluster.dir) == 0o700
    assert _mode(cluster.state_file) == 0o600
    assert cluster.password in cluster.state_file.read_text()
    for role in acl.ROLES:
        assert _mode(url_file(cluster.dir, role)) == 0o600
    for node in cluster.nodes:
        node_dir = cluster.node_dir(node.port)
        assert _mode(node_dir) == 0o700
        assert _mode(node_dir / "valkey.conf") == 0o600
        assert _mode(node_dir / "nodes.conf") & 0o077 == 0
        config = (node_dir / "valkey.conf").read_text()
        assert "masteruser tally-replication\n" in config
        assert f"masterauth {cluster.passwords[acl.REPLICATION]}\n" in config
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes()
        for user, password in cluster.passwords.items():
            assert password.encode() not in cmdline
            if user != acl.REPLICATION:
                assert password not in config
                assert acl.password_hash(password) in config


async def test_a_write_lands_on_the_owning_primary_and_reaches_its_replica(
    cluster: LocalCluster,
) -> None:
    key = "poll:{p1}:total"
    port = cluster.primary_of_key(key)
    assert cluster.slot_of(key) == cluster.slot_of("{p1}")
    client = Valkey(cluster.endpoint(port))
    try:
        assert await client.execute("SET", key, "42") == b"OK"
        assert await client.execute("GET", key) == b"42"
        assert await client.execute("WAIT", 1, 5000) == 1
    finally:
        await client.close()
    other = next(n.port for n in cluster.nodes if n.role == "primary" and n.port != port)
    with pytest.raises(ReplyError, match="MOVED"):
        cluster.call(other, "GET", key)
    (replica,) = cluster.replicas_of(port)
    with cluster.connect(replica) as conn:
        assert conn.call("READONLY") == "OK"
        assert conn.call("GET", key) == "42"


def test_up_refuses_a_directory_whose_cluster_is_running(cluster: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="already running") as raised:
        LocalCluster(cluster.dir).up()
    assert cluster.url in str(raised.value)
    assert all(_alive(n.pid) for n in cluster.nodes)


def test_a_killed_primary_is_failed_over_and_rejoins_as_a_replica(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, primaries=3, replicas=1) as cluster:
        key = "k"
        old = cluster.primary_of_key(key)
        cluster.call(old, "SET", key, "v")
        cluster.call(old, "WAIT", 1, 5000)
        (heir,) = cluster.replicas_of(old)
        cluster.kill(old, signal.SIGKILL)
        cluster.wait_healthy(timeout_s=30)
        assert cluster.primary_of_key(key) == heir
        assert cluster.call(heir, "GET", key) == "v"
        cluster.restart(old)
        cluster.wait_healthy(timeout_s=30, replicas_in_sync=True)
        (rejoined,) = (n for n in cluster.topology() if n.port == old)
        assert rejoined.role == "replica"
        assert rejoined.primary_port == heir
        # Every replication link, the rejoined node's to its new primary too, ran as the
        # replication user and was refused nothing.
        for port in cluster.live_ports():
            refused = [e for e in cluster.call(port, "ACL", "LOG") if "tally-replication" in e]
            assert refused == [], refused
        pids = [n.pid for n in cluster.nodes]
    assert not any(_alive(pid) for pid in pids)
    assert not cluster.state_file.exists()


def test_the_cli_brings_a_cluster_up_that_outlives_it_and_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "cluster"
    up = [*CLI, "up", "--dir", str(directory), "--primaries", "2", "--replicas", "0"]
    pids: list[int] = []
    try:
        done = subprocess.run(up, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        attached = LocalCluster.attach(directory)
        url = attached.url
        assert done.stdout.splitlines() == [
            url,
            f"export TALLY_VALKEY_URL='{url}'",
            *(
                f"{role}: {attached.url_for(role)} ({directory.resolve() / f'{role}.url'})"
                for role in acl.ROLES
            ),
        ]
        pids = [n.pid for n in LocalCluster.attach(directory).nodes]
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)  # `up` has exited; the nodes run on

        again = subprocess.run(up, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 1
        assert "already running" in again.stderr
        assert url in again.stderr
    finally:
        if (directory / "cluster.json").exists():
            parser = argparse.ArgumentParser(prog="tally")
            add_cluster_parser(parser.add_subparsers(required=True))
            stop = parser.parse_args(["cluster", "down", "--dir", str(directory)])
            assert stop.run(stop) == 0
    out = capsys.readouterr().out
    assert "stopped 2 nodes" in out
    for pid in pids:  # each node it stopped, by role, port and pid
        assert f"(pid {pid})" in out
    assert not any(_alive(pid) for pid in pids)
    assert not (directory / "cluster.json").exists()
    assert not list(directory.glob("*.url"))  # the passwords died with the nodes
    assert run_cluster(stop) == 0  # nothing recorded: nothing to do


def test_a_cluster_recorded_by_an_older_tally_is_still_stopped(tmp_path: Path) -> None:
    """State version 1 (one shared password, the default user's): attached with that password
    as the admin's, so `tally cluster down` still finds and stops its nodes."""
    state = {
        "version": 1,
        "url": "valkey+cluster://:old@127.0.0.1:1",
        "password": "old",
        "primaries": 1,
        "replicas": 0,
        "node_timeout_ms": 1000,
        "binary": "/nonexistent/valkey-server",
        "nodes": [
            {"port": 1, "cluster_port": 2, "pid": 2**22 + 7, "role": "primary", "node_id": "a"}
            | {"primary_port": None, "primary_index": None}
        ],
    }
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    old = LocalCluster.attach(tmp_path)
    assert old.url == "valkey+cluster://:old@127.0.0.1:1"
    assert old.endpoint(1).username is None
    assert down(tmp_path).nodes[0].port == 1  # nothing alive: the record is removed
    assert not (tmp_path / "cluster.json").exists()
