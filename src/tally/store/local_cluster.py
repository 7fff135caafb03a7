"""A real Valkey Cluster on this machine, for developers, tests and benchmarks.

`LocalCluster` starts `primaries` primaries with `replicas` replicas each, all from the bundled
valkey-server binary, and forms the cluster itself (valkey-cli is not bundled): slots split
evenly with CLUSTER ADDSLOTSRANGE, CLUSTER MEET to the first node, CLUSTER REPLICATE, then it waits
until every node says `cluster_state:ok` and every replica's link to its primary is up.

Same durability and users as the embedded server: AOF with `appendfsync always`, loopback only,
the default user off and one ACL user per role (store/acl.py: `tally-gateway`,
`tally-aggregator`, `tally-archiver`, `tally-admin`), plus `tally-replication`, the user each
replica authenticates to its primary as (`masteruser`/`masterauth`), allowed the replication
handshake alone (acl.REPLICATION_RULES): the admin's password then sits in no node's config, and
whoever reads a replica's `masterauth` can replicate, not write. Passwords are random per
cluster, in 0600 config files (as SHA-256 hashes, but `masterauth`) in 0700 node directories,
never on a command line. `up` loads Tally's functions on every primary as the admin (as the
embedded server does), so role processes find them. Failover is tuned for tests: a short
`cluster-node-timeout`, `cluster-replica-validity-factor 0` (any replica may be promoted) and
`cluster-require-full-coverage no` (the other shards keep taking writes while one fails over).

The processes run detached in their own sessions, so `tally cluster up` returns while the cluster
keeps running; `<dir>/cluster.json` (0600) records ports, pids, roles and the passwords so that
`tally cluster down` in another process can stop it, and `<dir>/<role>.url` (0600) holds each
role's TALLY_VALKEY_URL (`TALLY_VALKEY_URL=$(cat data/cluster/gateway.url) tally gateway`).

Layout: `<dir>/cluster.json`, `<dir>/{admin,gateway,aggregator,archiver}.url`,
`<dir>/node-<port>/{valkey.conf,nodes.conf,appendonly/,valkey.log}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import hiredis

from tally.ports import Arg, ReplyError
from tally.security.keys import read_or_create
from tally.store import acl
from tally.store.embedded import find_valkey_server, free_port
from tally.store.library import library_source
from tally.store.resp import Endpoint, encode

__all__ = [
    "SLOTS",
    "STATE_FILE",
    "ClusterError",
    "ClusterNode",
    "LocalCluster",
    "NodeConnection",
    "cluster_url",
    "down",
    "url_file",
]

log = logging.getLogger("tally.cluster")

SLOTS = 16384
HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
# 2: a password per user (1: one shared password, the default user's; still attached, to stop it).
STATE_VERSION = 2
# Every user of a cluster's nodes: the roles, then the replicas' own.
USERS = (*acl.ROLES, acl.REPLICATION)
Role = Literal["primary", "replica"]
T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster could not be started, formed, found or stopped."""


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One node. `role` and `primary_port` are as formed by `up`, or as seen live by
    `LocalCluster.topology()`; `primary_port` is None for a primary."""

    port: int
    cluster_port: int
    pid: int
    role: Role
    node_id: str = ""
    primary_port: int | None = None


def cluster_url(password: str, ports: list[int], username: str | None = None) -> str:
    """`valkey+cluster://<username>:<password>@127.0.0.1:<port1>,127.0.0.1:<port2>,...` (seed
    nodes); no username: the default user's."""
    seeds = ",".join(f"{HOST}:{port}" for port in ports)
    user = quote(username or "", safe="")
    return f"valkey+cluster://{user}:{quote(password, safe='')}@{seeds}"


def url_file(directory: Path, role: str) -> Path:
    """Where `up` writes `role`'s TALLY_VALKEY_URL (0600)."""
    return Path(directory) / f"{role}.url"


# --- a tiny blocking RESP connection: formation is a handful of commands, no event loop needed ---


class NodeConnection:
    """A blocking connection to one node: `call(*args)` returns the reply, raises ReplyError."""

    def __init__(
        self,
        port: int,
        password: str | None,
        timeout_s: float = 2.0,
        username: str | None = None,
    ) -> None:
        self._sock = socket.create_connection((HOST, port), timeout=timeout_s)
        self._reader = hiredis.Reader(replyError=ReplyError, encoding="utf-8", errors="replace")
        if password is not None:
            try:
                self.call("AUTH", *([username] if username else []), password)
            except BaseException:
                self._sock.close()
                raise

    def call(self, *args: Arg) -> Any:
        self._sock.sendall(encode(args))
        while True:
            reply = self._reader.gets()
            if reply is not False:
                if isinstance(reply, ReplyError):
                    raise reply
                return reply
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self._reader.feed(chunk)

    def close(self) -> None:
        self._sock.close()


@contextlib.contextmanager
def _connect(
    port: int, password: str | None, username: str | None = None
) -> Iterator[NodeConnection]:
    conn = NodeConnection(port, password, username=username)
    try:
        yield conn
    finally:
        conn.close()


def _info(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@dataclass(frozen=True, slots=True)
class _Seen:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slot_ranges: tuple[tuple[int, int], ...]


def _cluster_nodes(text: str) -> list[_Seen]:
    seen = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        port = int(address.rsplit(":", 1)[1] or 0)
        ranges = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            start, _, end = item.partition("-")
            ranges.append((int(start), int(end or start)))
        seen.append(
            _Seen(
                node_id=parts[0],
                port=port,
                flags=frozenset(parts[2].split(",")),
                primary_id=None if parts[3] == "-" else parts[3],
                slot_ranges=tuple(ranges),
            )
        )
    return seen


def _wait_for(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    """Poll check() until it returns something other than None; ClusterError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result is not None:
                return result
        except (OSError, ReplyError) as exc:  # a node still starting, a link not up yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(f"timed out after {timeout_s:.0f}s waiting for {what}{detail}")
        time.sleep(0.05)


# --- processes -----------------------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of pid, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _is_our_node(pid: int, port: int) -> bool:
    """pid is alive and is the valkey-server serving port (not a reused pid)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    if not Path("/proc").is_dir():  # no procfs: trust the pid
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    # valkey-server retitles itself "valkey-server 127.0.0.1:<port> [cluster]".
    return b"valkey-server" in cmdline and f":{port}".encode() in cmdline


def _write_private(path: Path, text: str) -> None:
    """Write text to path atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(0o600)  # in case it already existed with wider rights
    tmp.replace(path)


@dataclass
class _Node:
    port: int
    cluster_port: int
    role: Role
    primary_index: int | None  # for a replica: index of its primary in the node list
    pid: int = 0
    node_id: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class LocalCluster:
    """A Valkey Cluster of local processes. `up()` (or `with LocalCluster(dir) as cluster:`)
    starts and forms it; `stop()` stops it; `LocalCluster.attach(dir)` finds a running one."""

    def __init__(
        self,
        directory: Path,
        *,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        base_port: int | None = None,
        binary: Path | None = None,
        passwords: Mapping[str, str] | None = None,
    ) -> None:
        if primaries < 1:
            raise ValueError("a cluster needs at least one primary")
        if replicas < 0:
            raise ValueError("replicas must be 0 or more")
        if primaries > SLOTS:
            raise ValueError(f"at most {SLOTS} primaries")
        self.dir = Path(directory).resolve()
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.base_port = base_port
        self.binary = binary or find_valkey_server()
        # Each user's password (USERS), made here unless given (attach: as recorded).
        self.passwords = dict(passwords or {u: secrets.token_urlsafe(24) for u in USERS})
        # The admin's user name; None for a cluster recorded with one shared password (state
        # version 1), whose admin is the default user.
        self._admin_user: str | None = acl.username(acl.ADMIN)
        self._nodes: list[_Node] = []

    # --- public view ---

    @property
    def password(self) -> str:
        """The admin's password."""
        return self.passwords[acl.ADMIN]

    @property
    def url(self) -> str:
        """The admin's cluster URL (store-level setup, `tally serve`, `tally store`), listing
        every primary as a seed node."""
        return self.url_for(acl.ADMIN)

    def url_for(self, role: str) -> str:
        """TALLY_VALKEY_URL for `role` (store.acl: gateway, aggregator, archiver, admin): its own
        ACL user, every primary as a seed node."""
        seeds = [n.port for n in self._nodes if n.role == "primary"]
        username = self._admin_user if role == acl.ADMIN else acl.username(role)
        return cluster_url(self.passwords[role], seeds, username)

    def url_files(self) -> dict[str, Path]:
        """Each role's URL file, written by `up`."""
        return {role: url_file(self.dir, role) for role in acl.ROLES}

    @property
    def nodes(self) -> list[ClusterNode]:
        """Every node with its role as formed by `up` (see `topology()` for the live roles)."""
        return [self._public(n) for n in self._nodes]

    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    def node_dir(self, port: int) -> Path:
        return self.dir / f"node-{port}"

    def endpoint(self, port: int, role: str = acl.ADMIN) -> Endpoint:
        """An Endpoint for the project's async client (tally.store.resp.Valkey) to one node, as
        `role`'s user (the admin's unless told otherwise)."""
        username = self._admin_user if role == acl.ADMIN else acl.username(role)
        return Endpoint(host=HOST, port=port, password=self.passwords[role], username=username)

    @contextlib.contextmanager
    def connect(self, port: int, *, authenticate: bool = True) -> Iterator[NodeConnection]:
        """A blocking connection to one node, as the admin unless told not to authenticate."""
        if not authenticate:
            with _connect(port, None) as conn:
                yield conn
            return
        with _connect(port, self.password, self._admin_user) as conn:
            yield conn

    def call(self, port: int, *args: Arg) -> Any:
        """Run one command on one node (blocking), as the admin, and return its reply;
        ReplyError on -ERR."""
        with _connect(port, self.password, self._admin_user) as conn:
            return conn.call(*args)

    def is_alive(self, port: int) -> bool:
        node = self._node(port)
        if node.process is not None:
            return node.process.poll() is None
        return _is_our_node(node.pid, node.port)

    def live_ports(self) -> list[int]:
        return [n.port for n in self._nodes if self.is_alive(n.port)]

    def topology(self) -> list[ClusterNode]:
        """Every node with its role as a live node sees it now (after failovers too)."""
        by_id = {n.node_id: n for n in self._nodes}
        seen = self._first_live(lambda port: _cluster_nodes(self.call(port, "CLUSTER", "NODES")))
        ports_by_id = {s.node_id: s.port for s in seen}
        result = []
        for s in seen:
            node = by_id.get(s.node_id)
            if node is None:
                continue
            is_replica = "slave" in s.flags or "replica" in s.flags
            result.append(
                replace(
                    self._public(node),
                    role="replica" if is_replica else "primary",
                    primary_port=ports_by_id.get(s.primary_id or "") if is_replica else None,
                )
            )
        return sorted(result, key=lambda n: n.port)

    def slot_of(self, key: str | bytes) -> int:
        """The hash slot of key (CLUSTER KEYSLOT)."""
        slot: int = self._first_live(lambda port: self.call(port, "CLUSTER", "KEYSLOT", key))
        return slot

    def primary_of_slot(self, slot: int) -> int:
        """The port of the primary serving slot now, as a live node sees it."""

        def ask(port: int) -> int:
            for entry in self.call(port, "CLUSTER", "SLOTS"):
                if entry[0] <= slot <= entry[1]:
                    return int(entry[2][1])
            raise ClusterError(f"slot {slot} is not served by any primary")

        return self._first_live(ask)

    def primary_of_key(self, key: str | bytes) -> int:
        return self.primary_of_slot(self.slot_of(key))

    def replicas_of(self, primary_port: int) -> list[int]:
        """Ports of the live view's replicas of the primary on primary_port."""
        return [n.port for n in self.topology() if n.primary_port == primary_port]

    # --- lifecycle ---

    def up(self, timeout_s: float = 60.0) -> LocalCluster:
        """Start every node and form the cluster; ClusterError if it is not healthy in time.

        Refuses if the directory records a cluster that is still running. A stopped cluster's
        leftover node directories are removed: a new cluster starts empty."""
        existing = _load_running(self.dir)
        if existing is not None:
            raise ClusterError(
                f"a cluster is already running in {self.dir}: {existing.url} "
                f"(`tally cluster down --dir {self.dir}` stops it)"
            )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)
        self.state_file.unlink(missing_ok=True)
        for stale in self.dir.glob("node-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for path in self.url_files().values():
            path.unlink(missing_ok=True)  # an earlier cluster's passwords
        deadline = time.monotonic() + timeout_s
        try:
            self._start_all(deadline)
            self._save()
            self._form(deadline)
            self._save()
            self.load_functions()
            for role, path in self.url_files().items():
                read_or_create(path, self.url_for(role).encode)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every node (Valkey fsyncs and exits), SIGKILL what is left after timeout_s,
        then remove the state file and the URL files (their passwords die with the nodes). Node
        directories (data, logs) stay."""
        for node in self._nodes:
            self.kill(node.port, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(self.is_alive(n.port) for n in self._nodes):
            time.sleep(0.05)
        for node in self._nodes:
            if self.is_alive(node.port):
                log.error("valkey-server on port %d ignored SIGTERM; killing it", node.port)
                self.kill(node.port, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(self.is_alive(n.port) for n in self._nodes):
            time.sleep(0.05)
        for node in self._nodes:
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=1)  # reap it
        left = [n.port for n in self._nodes if self.is_alive(n.port)]
        if left:
            raise ClusterError(f"nodes still running after SIGKILL: {left}")
        self.state_file.unlink(missing_ok=True)
        for path in self.url_files().values():
            path.unlink(missing_ok=True)

    def load_functions(self) -> list[int]:
        """FUNCTION LOAD REPLACE Tally's library on every live primary, as the admin (a replica
        gets it from its primary); the primaries' ports."""
        ports = [n.port for n in self.topology() if n.role == "primary"]
        for port in ports:
            self.call(port, "FUNCTION", "LOAD", "REPLACE", library_source())
        return ports

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Send sig to the node on port (no-op if it is not running)."""
        node = self._node(port)
        if not self.is_alive(port):
            return
        if node.process is not None:
            node.process.send_signal(sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, sig)

    def restart(self, port: int, timeout_s: float = 30.0) -> None:
        """Start a stopped node again from its own config; it keeps its node id and data and
        rejoins the cluster (as a replica if it was failed over meanwhile)."""
        node = self._node(port)
        if self.is_alive(port):
            raise ClusterError(f"node {port} is still running")
        self._spawn(node)
        self._wait_ready(node, time.monotonic() + timeout_s)
        self._save()

    def wait_healthy(self, timeout_s: float = 30.0, *, replicas_in_sync: bool = False) -> None:
        """Wait until every live node says cluster_state:ok and serves all 16384 slots from
        primaries that are running (so a failover after `kill` is over). With replicas_in_sync, also until every live
        replica's link to its primary is up."""

        def healthy() -> bool | None:
            live = self.live_ports()
            if not live:
                raise ClusterError("no node of the cluster is running")
            for port in live:
                info = _info(self.call(port, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return None
                # Until the node timeout passes, the others still count a dead primary's slots
                # as served: ask that every slot's primary is one of ours that is running.
                served = 0
                for entry in self.call(port, "CLUSTER", "SLOTS"):
                    if int(entry[2][1]) not in live:
                        return None
                    served += entry[1] - entry[0] + 1
                if served != SLOTS:
                    return None
                if replicas_in_sync:
                    replication = _info(self.call(port, "INFO", "replication"))
                    if replication.get("role") == "slave" and (
                        replication.get("master_link_status") != "up"
                    ):
                        return None
            return True

        _wait_for("a healthy cluster", healthy, timeout_s)

    @classmethod
    def attach(cls, directory: Path) -> LocalCluster:
        """The cluster recorded in directory's state file (running or not)."""
        directory = Path(directory).resolve()
        path = directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise ClusterError(f"no cluster recorded in {directory}") from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"unreadable cluster state {path}: {exc}") from None
        version = state.get("version")
        if version not in (1, STATE_VERSION):
            raise ClusterError(f"{path}: unknown state version {version!r}")
        cluster = cls(
            directory,
            primaries=state["primaries"],
            replicas=state["replicas"],
            node_timeout_ms=state["node_timeout_ms"],
            binary=Path(state["binary"]),
            passwords=state["passwords"] if version == STATE_VERSION else {},
        )
        if version == 1:  # one shared password, the default user's: enough to stop it
            cluster.passwords = {acl.ADMIN: state["password"]}
            cluster._admin_user = None
        for raw in state["nodes"]:
            cluster._nodes.append(
                _Node(
                    port=raw["port"],
                    cluster_port=raw["cluster_port"],
                    role=raw["role"],
                    primary_index=raw["primary_index"],
                    pid=raw["pid"],
                    node_id=raw["node_id"],
                )
            )
        return cluster

    def __enter__(self) -> LocalCluster:
        if not self._nodes:
            self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ---

    def _node(self, port: int) -> _Node:
        for node in self._nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node on port {port} in this cluster")

    def _public(self, node: _Node) -> ClusterNode:
        primary_port = (
            self._nodes[node.primary_index].port if node.primary_index is not None else None
        )
        return ClusterNode(
            port=node.port,
            cluster_port=node.cluster_port,
            pid=node.pid,
            role=node.role,
            node_id=node.node_id,
            primary_port=primary_port,
        )

    def _first_live(self, ask: Callable[[int], T]) -> T:
        errors = []
        for port in self.live_ports():
            try:
                return ask(port)
            except (OSError, ReplyError) as exc:
                errors.append(f"{port}: {exc}")
        raise ClusterError("no live node answered: " + ("; ".join(errors) or "none running"))

    def _plan(self) -> None:
        count = self.primaries * (1 + self.replicas)
        if self.base_port is not None:
            ports = [self.base_port + i for i in range(count)]
            buses = [port + 10000 for port in ports]
        else:
            taken: set[int] = set()
            while len(taken) < 2 * count:
                taken.add(free_port())
            chosen = sorted(taken)
            ports, buses = chosen[:count], chosen[count:]
        self._nodes = [
            _Node(port=ports[i], cluster_port=buses[i], role="primary", primary_index=None)
            for i in range(self.primaries)
        ]
        for r in range(self.replicas):
            for p in range(self.primaries):
                i = self.primaries + r * self.primaries + p
                self._nodes.append(
                    _Node(port=ports[i], cluster_port=buses[i], role="replica", primary_index=p)
                )

    def _config(self, node: _Node) -> str:
        node_dir = self.node_dir(node.port)
        lines = {
            "bind": HOST,
            "protected-mode": "yes",
            "port": str(node.port),
            "cluster-port": str(node.cluster_port),
            # A replica (every node may become one after a failover) authenticates to its
            # primary as the replication user: the one plain password in the file.
            "masteruser": acl.username(acl.REPLICATION),
            "masterauth": self.passwords[acl.REPLICATION],
            "dir": str(node_dir),
            "daemonize": "no",
            "logfile": '""',  # stdout, which goes to valkey.log
            "cluster-enabled": "yes",
            "cluster-config-file": str(node_dir / "nodes.conf"),
            "cluster-node-timeout": str(self.node_timeout_ms),
            "cluster-replica-validity-factor": "0",
            "cluster-require-full-coverage": "no",
            "appendonly": "yes",
            "appendfsync": "always",
            "appenddirname": "appendonly",
            "aof-load-truncated": "yes",
            "save": '""',
            "repl-diskless-sync-delay": "0",  # default 5 s: each replica's first sync waits
            "maxmemory-policy": "noeviction",
            "hash-max-listpack-entries": "512",  # voter-index buckets are sized for this
        }
        users = [
            "user default off resetpass resetkeys resetchannels -@all",
            *(
                acl.user_line(role, acl.password_hash(self.passwords[name]))
                for name, role in acl.ROLES.items()
            ),
            acl.replication_line(acl.password_hash(self.passwords[acl.REPLICATION])),
        ]
        return "".join(f"{key} {value}\n" for key, value in lines.items()) + "\n".join(users) + "\n"

    def _spawn(self, node: _Node) -> None:
        node_dir = self.node_dir(node.port)
        node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        node_dir.chmod(0o700)
        config = node_dir / "valkey.conf"
        if not config.exists():
            _write_private(config, self._config(node))
        with (node_dir / "valkey.log").open("ab") as out:
            (node_dir / "valkey.log").chmod(0o600)
            node.process = subprocess.Popen(  # noqa: S603  # our own bundled binary, fixed arguments
                [str(self.binary), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node_dir,
                umask=0o077,  # nodes.conf, the AOF and its directory: the owner's alone
                start_new_session=True,  # detached: outlives `tally cluster up`, no terminal Ctrl-C
            )
        node.pid = node.process.pid

    def _wait_ready(self, node: _Node, deadline: float) -> None:
        def ready() -> bool | None:
            if node.process is not None and node.process.poll() is not None:
                log_file = self.node_dir(node.port) / "valkey.log"
                raise ClusterError(
                    f"valkey-server on port {node.port} exited at start; see {log_file}"
                )
            with _connect(node.port, self.password, self._admin_user) as conn:
                conn.call("PING")  # -LOADING while the AOF loads: not ready yet
                node.node_id = str(conn.call("CLUSTER", "MYID"))
            return True

        _wait_for(f"node {node.port} to answer", ready, max(0.0, deadline - time.monotonic()))

    def _start_all(self, deadline: float) -> None:
        for attempt in range(3):
            self._plan()
            for node in self._nodes:
                self._spawn(node)
            try:
                for node in self._nodes:
                    self._wait_ready(node, deadline)
                return
            except ClusterError as exc:
                # A port taken between free_port() and bind: try again on new ports.
                in_use = any(
                    "Address already in use" in self._log_tail(n.port) for n in self._nodes
                )
                self.stop()
                if not in_use or self.base_port is not None or attempt == 2:
                    raise
                log.warning("a port was taken meanwhile (%s); retrying on new ports", exc)
                for node in self._nodes:
                    shutil.rmtree(self.node_dir(node.port), ignore_errors=True)

    def _log_tail(self, port: int) -> str:
        try:
            return (self.node_dir(port) / "valkey.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _remaining(self, deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def _form(self, deadline: float) -> None:
        primaries = [n for n in self._nodes if n.role == "primary"]
        ids = {n.node_id for n in self._nodes}
        # Slots, and distinct config epochs (else the nodes settle the collision themselves).
        for i, node in enumerate(primaries):
            start = i * SLOTS // len(primaries)
            end = (i + 1) * SLOTS // len(primaries) - 1
            self.call(node.port, "CLUSTER", "ADDSLOTSRANGE", start, end)
            self.call(node.port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = self._nodes[0]
        for node in self._nodes[1:]:
            self.call(node.port, "CLUSTER", "MEET", HOST, first.port, first.cluster_port)

        def all_know_all() -> bool | None:
            for node in self._nodes:
                seen = _cluster_nodes(self.call(node.port, "CLUSTER", "NODES"))
                if {s.node_id for s in seen} != ids or any(
                    "handshake" in s.flags or "noaddr" in s.flags for s in seen
                ):
                    return None
            return True

        _wait_for("every node to know every other", all_know_all, self._remaining(deadline))

        for node in self._nodes:
            if node.primary_index is not None:
                primary_id = self._nodes[node.primary_index].node_id
                self.call(node.port, "CLUSTER", "REPLICATE", primary_id)

        expected_primary = {
            n.node_id: self._nodes[n.primary_index].node_id
            for n in self._nodes
            if n.primary_index is not None
        }

        def formed() -> bool | None:
            for node in self._nodes:
                info = _info(self.call(node.port, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return None
                # Every node agrees on who replicates whom.
                seen = _cluster_nodes(self.call(node.port, "CLUSTER", "NODES"))
                if {s.node_id: s.primary_id for s in seen if s.primary_id} != expected_primary:
                    return None
                if node.primary_index is not None:
                    replication = _info(self.call(node.port, "INFO", "replication"))
                    if replication.get("master_link_status") != "up":
                        return None
            return True

        _wait_for(
            "cluster_state:ok on every node and every replica in sync",
            formed,
            self._remaining(deadline),
        )

    def _save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "url": self.url,
            "passwords": self.passwords,
            "primaries": self.primaries,
            "replicas": self.replicas,
            "node_timeout_ms": self.node_timeout_ms,
            "binary": str(self.binary),
            "nodes": [
                {**asdict(self._public(n)), "primary_index": n.primary_index} for n in self._nodes
            ],
        }
        _write_private(self.state_file, json.dumps(state, indent=2) + "\n")


def _load_running(directory: Path) -> LocalCluster | None:
    """The cluster recorded in directory if any of its nodes is still running."""
    try:
        cluster = LocalCluster.attach(directory)
    except ClusterError:
        return None
    return cluster if cluster.live_ports() else None


def down(directory: Path, timeout_s: float = 15.0) -> LocalCluster:
    """Stop the cluster recorded in directory (from any process); return what was stopped."""
    cluster = LocalCluster.attach(directory)
    cluster.stop(timeout_s)
    return cluster
