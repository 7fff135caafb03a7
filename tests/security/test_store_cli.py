"""`tally store acl|load-functions` against real valkey-servers: the printed ACL file is the one
store/acl.py renders and, its placeholders replaced, is what a valkey-server loads (default user
off, each role's user with its password); `load-functions` loads Tally's library as the admin,
on one node and on every primary of a cluster, and refuses clearly with a role's user or no
URL, changing nothing. Stores of the tests' own: functions are deleted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tally.ports import ReplyError
from tally.store import acl, keys
from tally.store.embedded import EmbeddedValkey, find_valkey_server, free_port
from tally.store.library import LIBRARY_NAME, library_source
from tally.store.local_cluster import LocalCluster, NodeConnection


def tally(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", "TALLY_LOG_LEVEL": "warning", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tally", *argv],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    valkey = EmbeddedValkey(tmp_path_factory.mktemp("store-cli"))
    asyncio.run(valkey.start())
    try:
        yield valkey
    finally:
        asyncio.run(valkey.stop())


def node_call(port: int, user: str, password: str, *args: Any) -> Any:
    conn = NodeConnection(port, password, username=user)
    try:
        return conn.call(*args)
    finally:
        conn.close()


def admin_call(server: EmbeddedValkey, *args: Any) -> Any:
    return node_call(server.port, "tally-admin", server.passwords[acl.ADMIN], *args)


def loaded_code(call: Any) -> str | None:
    for library in call("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE"):
        fields = dict(zip(library[::2], library[1::2], strict=True))
        if fields["library_name"] == LIBRARY_NAME:
            code: str = fields["library_code"]
            return code
    return None


# --- tally store acl ------------------------------------------------------------------------------


def test_acl_prints_the_file_the_table_renders() -> None:
    plain = tally("store", "acl")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == acl.acl_file()
    with_replicas = tally("store", "acl", "--replicas")
    assert with_replicas.stdout == (
        acl.acl_file() + acl.replication_line("#REPLICATION-PASSWORD-SHA256") + "\n"
    )


def test_acl_json_gives_each_users_rules() -> None:
    done = tally("store", "acl", "--json", "--replicas")
    assert done.returncode == 0, done.stderr
    users = json.loads(done.stdout)
    assert list(users) == [
        "default",
        *(acl.username(r) for r in acl.ROLES),
        "tally-replication",
    ]
    assert users["default"]["on"] is False
    for role in acl.ROLES.values():
        entry = users[acl.username(role.name)]
        assert (entry["role"], entry["on"]) == (role.name, True)
        assert entry["rules"] == acl.role_rules(role)
    assert users["tally-replication"]["rules"] == list(acl.REPLICATION_RULES)
    assert "tally-replication" not in json.loads(tally("store", "acl", "--json").stdout)


def test_the_printed_file_with_real_hashes_is_what_valkey_loads(tmp_path: Path) -> None:
    """The operator's steps (docs/valkey-acl.md): each placeholder replaced by `#` and the
    SHA-256 of a password, the file loaded with `aclfile`: every user authenticates with its
    password and holds its rules; the default user is refused."""
    text = tally("store", "acl", "--replicas").stdout
    passwords = {user: f"pw-{user}-{i}" for i, user in enumerate((*acl.ROLES, acl.REPLICATION))}
    for user, password in passwords.items():
        text = text.replace(f"#{user.upper()}-PASSWORD-SHA256", acl.password_hash(password))
    users_file = tmp_path / "users.acl"
    users_file.write_text(text)
    port = free_port()
    config = f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\naclfile {users_file}\n'
    process = subprocess.Popen(  # the bundled binary, config on stdin
        [str(find_valkey_server()), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert process.stdin is not None
    process.stdin.write(config.encode())
    process.stdin.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ping = node_call(port, "tally-admin", passwords[acl.ADMIN], "PING")
                break
            except OSError:
                assert process.poll() is None, "valkey-server refused the ACL file"
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert ping == "PONG"
        for user, password in passwords.items():
            assert node_call(port, acl.username(user), password, "PING") == "PONG"
        with pytest.raises(ReplyError, match="WRONGPASS"):
            node_call(port, "default", "", "PING")
        gateway = ("tally-gateway", passwords[acl.GATEWAY])
        with pytest.raises(ReplyError, match="NOPERM"):
            node_call(port, *gateway, "XDEL", keys.lane_ledger("p", 0), "1-0")
        assert node_call(port, *gateway, "HINCRBY", keys.lane_counts("p", 0), "x", 1) == 1
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- tally store load-functions ---------------------------------------------------------------


def test_load_functions_as_the_admin_loads_the_library(server: EmbeddedValkey) -> None:
    admin_call(server, "FUNCTION", "DELETE", LIBRARY_NAME)
    assert loaded_code(lambda *a: admin_call(server, *a)) is None
    done = tally("store", "load-functions", env={"TALLY_VALKEY_URL": server.url_for(acl.ADMIN)})
    assert done.returncode == 0, done.stderr
    assert "loaded Valkey library 'tally'" in done.stdout
    assert "on the node as 'tally-admin'" in done.stdout
    assert loaded_code(lambda *a: admin_call(server, *a)) == library_source()
    again = tally("store", "load-functions", env={"TALLY_VALKEY_URL": server.url_for(acl.ADMIN)})
    assert again.returncode == 0, again.stderr  # idempotent: FUNCTION LOAD REPLACE


@pytest.mark.parametrize("role", [acl.GATEWAY, acl.AGGREGATOR, acl.ARCHIVER])
def test_load_functions_with_a_roles_user_is_refused_and_changes_nothing(
    server: EmbeddedValkey, role: str
) -> None:
    admin_call(server, "FUNCTION", "DELETE", LIBRARY_NAME)
    try:
        done = tally("store", "load-functions", env={"TALLY_VALKEY_URL": server.url_for(role)})
        assert done.returncode == 1
        assert f"the user 'tally-{role}' may not load functions (NOPERM" in done.stderr
        assert "TALLY_VALKEY_URL the admin's user, tally-admin" in done.stderr
        assert "Traceback" not in done.stderr
        assert server.passwords[role] not in done.stderr + done.stdout
        assert loaded_code(lambda *a: admin_call(server, *a)) is None
    finally:
        admin_call(server, "FUNCTION", "LOAD", "REPLACE", library_source())


def test_load_functions_needs_a_valkey_url(tmp_path: Path) -> None:
    done = tally("store", "load-functions", env={"TALLY_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "needs TALLY_VALKEY_URL naming the admin user (tally-admin)" in done.stderr


def test_load_functions_with_a_wrong_password_says_so(server: EmbeddedValkey) -> None:
    url = server.url_for(acl.ADMIN).replace(server.passwords[acl.ADMIN], "not-it")
    done = tally("store", "load-functions", env={"TALLY_VALKEY_URL": url})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "WRONGPASS invalid username-password pair" in done.stderr
    assert "not-it" not in done.stderr


def test_load_functions_loads_on_every_primary_of_a_cluster(tmp_path: Path) -> None:
    """Two primaries and their replicas: the library deleted everywhere, then loaded by one
    command with the admin's cluster URL on both primaries, and replicated to the replicas."""
    with LocalCluster(tmp_path / "cluster", primaries=2, replicas=1) as cluster:
        primaries = [n.port for n in cluster.nodes if n.role == "primary"]
        for port in primaries:
            cluster.call(port, "FUNCTION", "DELETE", LIBRARY_NAME)
        refused = tally(
            "store", "load-functions", env={"TALLY_VALKEY_URL": cluster.url_for(acl.GATEWAY)}
        )
        assert refused.returncode == 1
        assert "'tally-gateway' may not load functions" in refused.stderr
        done = tally("store", "load-functions", env={"TALLY_VALKEY_URL": cluster.url})
        assert done.returncode == 0, done.stderr
        assert "on 2 primaries as 'tally-admin'" in done.stdout
        for port in primaries:
            assert loaded_code(lambda *a, p=port: cluster.call(p, *a)) == library_source()
        for node in cluster.nodes:
            if node.primary_port is not None:  # a replica
                cluster.call(node.primary_port, "WAIT", 1, 5000)
                assert loaded_code(lambda *a, p=node.port: cluster.call(p, *a)) == (
                    library_source()
                )
