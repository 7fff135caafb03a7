"""Naming a cluster: `valkey+cluster://` URLs parsed (and refused) as ClusterSeeds, the password
masked wherever settings are shown, and a URL that names no usable cluster stopping a real
`tally gateway` at start with a message naming TALLY_VALKEY_URL (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from defences_off import DEFENCES_OFF
from role_processes import register_gateway_key
from tally.bench.processes import free_port, running
from tally.config import ConfigError, load
from tally.store import acl
from tally.store.cluster import ClusterSeeds, is_cluster_url
from tally.store.embedded import EmbeddedValkey
from tally.store.local_cluster import SLOTS, LocalCluster
from tally.store.resp import Endpoint

HOST = "127.0.0.1"
SECRET_HEX = "5e" * 32
START_S = 20.0  # a refused start takes well under a second here; this is the give-up bound


# --- ClusterSeeds.from_url --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "nodes", "username", "password", "tls"),
    [
        ("valkey+cluster://127.0.0.1:7000", [("127.0.0.1", 7000)], None, None, False),
        (
            "valkey+cluster://a:7000,b:7001, c:7002",
            [("a", 7000), ("b", 7001), ("c", 7002)],
            None,
            None,
            False,
        ),
        ("redis+cluster://:s3cret@h:6379", [("h", 6379)], None, "s3cret", False),
        (
            "valkeys+cluster://alice:pw@h:6380,i:6381",
            [("h", 6380), ("i", 6381)],
            "alice",
            "pw",
            True,
        ),
        ("rediss+cluster://bob@h:1", [("h", 1)], "bob", None, True),
        # Percent-encoded, and raw '@', ':' and '/' in the password; a path is ignored.
        ("valkey+cluster://u%40x:p%2Fw@h:2", [("h", 2)], "u@x", "p/w", False),
        ("valkey+cluster://:p@ss:w/rd@h:3/0", [("h", 3)], None, "p@ss:w/rd", False),
        (
            "valkey+cluster://[::1]:7000,[fe80::1]:7001",
            [("::1", 7000), ("fe80::1", 7001)],
            None,
            None,
            False,
        ),
        ("valkey+cluster://:@h:4", [("h", 4)], None, None, False),  # an empty password is none
    ],
)
def test_a_cluster_url_names_its_seed_nodes_and_credentials(
    url: str, nodes: list[tuple[str, int]], username: str | None, password: str | None, tls: bool
) -> None:
    seeds = ClusterSeeds.from_url(url)
    assert list(seeds.nodes) == nodes
    assert (seeds.username, seeds.password, seeds.tls) == (username, password, tls)
    assert is_cluster_url(url)
    host, port = nodes[0]
    assert seeds.endpoint(host, port) == Endpoint(host, port, password, username, 0, tls)


@pytest.mark.parametrize(
    "url",
    [
        "valkey://h:6379",  # one node, not a cluster
        "valkey+cluster:/h:6379",
        "valkey-cluster://h:6379",
        "valkey+cluster://",
        "valkey+cluster://h",
        "valkey+cluster://h:",
        "valkey+cluster://:6379",
        "valkey+cluster://h:0",
        "valkey+cluster://h:65536",
        "valkey+cluster://h:port",
        "valkey+cluster://h:1,",
        "valkey+cluster://h:1,,i:2",
        "valkey+cluster://h:1?timeout=5",
    ],
)
def test_a_malformed_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"not a cluster URL|is not host:port"):
        ClusterSeeds.from_url(url)


def test_a_refusal_quotes_no_part_of_the_password() -> None:
    for url in ("valkey+cluster://:se/cr:et@h", "valkey+cluster://u:se/cret@h:x,i:1"):
        with pytest.raises(ValueError, match="is not host:port") as refused:
            ClusterSeeds.from_url(url)
        assert "se" not in str(refused.value).replace("seed", "")


# --- settings ----------------------------------------------------------------------------------


def test_settings_know_a_cluster_and_mask_its_password() -> None:
    url = "valkey+cluster://alice:hunter2@10.0.0.1:7000,10.0.0.2:7000"
    settings = load({"TALLY_VALKEY_URL": url})
    assert settings.cluster
    assert settings.replicas_to_confirm == 1  # a vote survives losing its primary
    assert load({"TALLY_VALKEY_URL": url, "TALLY_WAITAOF_REPLICAS": "0"}).replicas_to_confirm == 0
    shown = settings.public_view()["TALLY_VALKEY_URL"]
    assert shown == "valkey+cluster://alice:********@10.0.0.1:7000,10.0.0.2:7000"
    assert "hunter2" not in str(settings.public_view())

    view = load({"TALLY_VALKEY_URL": "valkey+cluster://:p@ss/w:rd@h:1"}).public_view()
    assert view["TALLY_VALKEY_URL"] == "valkey+cluster://:********@h:1"
    no_password = "valkey+cluster://h:1,i:2"
    assert load({"TALLY_VALKEY_URL": no_password}).public_view()["TALLY_VALKEY_URL"] == no_password

    single = load({"TALLY_VALKEY_URL": "valkey://:pw@h:6379"})
    assert not single.cluster
    assert single.replicas_to_confirm == 0


@pytest.mark.parametrize(
    "url", ["valkey+cluster://:hunter2@h", "valkey+cluster://:hunter2@h:1,", "valkey+cluster://"]
)
def test_a_malformed_cluster_url_stops_the_settings_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="TALLY_VALKEY_URL") as refused:
        load({"TALLY_VALKEY_URL": url})
    assert "hunter2" not in str(refused.value)


# --- a real gateway refuses to start on a URL that names no usable cluster ------------------------


def _environment(url: str, data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(
        DEFENCES_OFF,
        TALLY_VALKEY_URL=url,
        TALLY_PSEUDONYM_SECRET=SECRET_HEX,
        TALLY_DATA_DIR=str(data_dir),
        TALLY_PORT=str(port),
        TALLY_HOST=HOST,
        TALLY_WORKERS="1",
        TALLY_LOG_LEVEL="warning",
    )
    return env


def _refused_start(url: str, data_dir: Path, password: str | None) -> str:
    """Run `tally gateway` and return its stderr, checking it stopped at once and cleanly."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tally", "gateway"],
        env=_environment(url, data_dir, free_port()),
        capture_output=True,
        text=True,
        timeout=START_S,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode != 0, done.stderr
    assert took < 10.0
    assert "TALLY_VALKEY_URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    if password is not None:
        assert password not in done.stderr + done.stdout
    return done.stderr


@pytest.fixture
def single_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    import asyncio

    server = EmbeddedValkey(tmp_path_factory.mktemp("plain-valkey"))
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


def test_a_gateway_refuses_a_plain_valkey_named_as_a_cluster(
    single_node: EmbeddedValkey, tmp_path: Path
) -> None:
    endpoint = single_node.endpoint
    url = f"valkey+cluster://{endpoint.username}:{endpoint.password}@{HOST}:{endpoint.port}"
    stderr = _refused_start(url, tmp_path, endpoint.password)
    assert "not a cluster node" in stderr


def test_a_gateway_refuses_seed_nodes_that_do_not_answer(tmp_path: Path) -> None:
    url = f"valkey+cluster://:hunter2@{HOST}:{free_port()},{HOST}:{free_port()}"
    stderr = _refused_start(url, tmp_path, "hunter2")
    assert "no cluster node answered" in stderr


def test_a_gateway_starts_on_a_whole_cluster_and_refuses_one_with_uncovered_slots(
    tmp_path: Path,
) -> None:
    """The same one-node cluster: accepted while it serves every slot, refused once 100 of its
    slots are unassigned (the cluster itself still answers: cluster-require-full-coverage no)."""
    with LocalCluster(tmp_path / "cluster", primaries=1, replicas=0) as cluster:
        port = free_port()
        argv = [sys.executable, "-m", "tally", "gateway"]
        # As a deployment runs it: its key registered by the operator (the admin's URL), the
        # gateway on its own ACL user.
        register_gateway_key(_environment(cluster.url, tmp_path / "data", port))
        env = _environment(cluster.url_for(acl.GATEWAY), tmp_path / "data", port)
        with running(argv, host=HOST, port=port, env=env, timeout_s=START_S):
            pass  # it listens: the topology check passed
        (node,) = cluster.nodes
        cluster.call(node.port, "CLUSTER", "DELSLOTSRANGE", 100, 199)
        assert f"cluster_slots_assigned:{SLOTS - 100}" in cluster.call(node.port, "CLUSTER", "INFO")
        stderr = _refused_start(cluster.url, tmp_path / "data", cluster.password)
        assert f"100 of {SLOTS} hash slots are not served" in stderr
