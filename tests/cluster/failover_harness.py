"""A whole Tally deployment on a real local Valkey Cluster, for the failover drills: the cluster
(3 primaries x 1 replica), `tally gateway --workers 2`, `tally aggregator` and `tally archiver`
as real processes, an open poll whose lanes land on every primary, a steady load of distinct
voters that records every vote's status, receipt and latency, and the ledger checks at the end.

Every process is started in its own session with its log in a file, and stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from role_processes import HOST, Role, role_env, running_role, wait_for
from tally.archive.logs import LedgerFiles
from tally.bench.loadgen import Reply, build_request, run_requests
from tally.domain.pseudonyms import lane_of, pseudonym
from tally.ledger import layout
from tally.ledger.certificate import certificate_origin, open_certificate
from tally.ledger.note import Verifier
from tally.security.dev_issuer import DevIssuer
from tally.store import keys
from tally.store.local_cluster import LocalCluster

SECRET_HEX = "3c" * 32
WAITAOF_TIMEOUT_MS = 1000  # the default, spelled out: the latency bounds are derived from it
OPTIONS = ("red", "green", "blue")
LANES = 16
# A vote the load generator still waits for after this long counts as a hang (status 0).
HANG_S = 15.0
AUDIT = [sys.executable, "-m", "tally", "audit", "verify"]

ENV = {
    "TALLY_PSEUDONYM_SECRET": SECRET_HEX,
    "TALLY_WAITAOF_TIMEOUT_MS": str(WAITAOF_TIMEOUT_MS),
    "TALLY_TICK_MS": "100",
    "TALLY_LEASE_TTL_MS": "1000",
    "TALLY_CHECKPOINT_INTERVAL_MS": "200",
    "TALLY_SHUTDOWN_TIMEOUT_S": "5",
    "TALLY_LOG_LEVEL": "info",
}


# --- role processes ------------------------------------------------------------------------------


@dataclass
class Deployment:
    cluster: LocalCluster
    data_dir: Path
    issuer: DevIssuer
    gateway: Role
    aggregator: Role
    archiver: Role

    @property
    def roles(self) -> list[Role]:
        return [self.gateway, self.aggregator, self.archiver]

    def logs(self) -> str:
        return "\n".join(f"--- {role.command} ---\n{role.log()[-6000:]}" for role in self.roles)


@contextlib.contextmanager
def deployment(directory: Path) -> Iterator[Deployment]:
    """The cluster and the three roles against it (each as its own ACL user), every one
    stopped on exit."""
    data_dir = directory / "data"
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            LocalCluster(directory / "cluster", primaries=3, replicas=1, node_timeout_ms=1000)
        )
        # Each role process as its own ACL user (running_role), the admin's URL for the rest.
        environment = role_env(cluster, data_dir, **ENV)
        archiver = stack.enter_context(running_role("archiver", environment, directory))
        gateway = stack.enter_context(
            running_role("gateway", environment, directory, args=["--workers", "2"])
        )
        aggregator = stack.enter_context(running_role("aggregator", environment, directory))
        # Each new connection reaches either worker: ask until both have said ready.
        ready = [gateway.get("/readyz").status_code for _ in range(20)]
        assert set(ready) == {200}, (ready, gateway.log())
        issuer = DevIssuer.load_or_create(data_dir / "keys")
        yield Deployment(cluster, data_dir, issuer, gateway, aggregator, archiver)


# --- the poll ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    id: str
    lanes: int
    meta_primary: int  # the port of the primary serving the poll's own keys

    def lane_key(self, lane: int) -> str:
        return keys.lane_state(self.id, lane)


def admin_headers(d: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {d.issuer.mint('admin', roles=['admin'])}"}


def open_poll(d: Deployment) -> Poll:
    """An open poll of LANES lanes that land on every primary (a new poll id until they do)."""
    primaries = {n.port for n in d.cluster.topology() if n.role == "primary"}
    for _ in range(20):
        created = httpx.post(
            f"{d.gateway.url}/v1/polls",
            json={"title": "failover", "options": ["Red", "Green", "Blue"], "lanes": LANES},
            headers=admin_headers(d),
            timeout=10.0,
        )
        assert created.status_code == 201, created.text
        poll_id = created.json()["id"]
        poll = Poll(poll_id, LANES, d.cluster.primary_of_key(keys.poll_meta(poll_id)))
        if set(lanes_by_primary(d.cluster, poll)) == primaries:
            opened = httpx.post(
                f"{d.gateway.url}/v1/polls/{poll_id}/open", headers=admin_headers(d), timeout=10
            )
            assert opened.is_success, opened.text
            return poll
    raise AssertionError("no poll whose lanes land on every primary in 20 tries")


def lanes_by_primary(cluster: LocalCluster, poll: Poll) -> dict[int, set[int]]:
    """The primary port serving each lane of the poll, now."""
    owners: dict[int, set[int]] = {}
    for lane in range(poll.lanes):
        owners.setdefault(cluster.primary_of_key(poll.lane_key(lane)), set()).add(lane)
    return owners


def lane_of_voter(d: Deployment, poll: Poll, subject: str) -> int:
    """The lane a voter's vote lands in, as the gateway computes it."""
    secret = bytes.fromhex(SECRET_HEX)
    return lane_of(pseudonym(secret, poll.id, d.issuer.issuer, subject), poll.lanes)


def settled_results(d: Deployment, poll: Poll, total: int, timeout_s: float = 20.0) -> Any:
    """The published results once they count `total` votes (they trail the writes by a tick)."""
    replies: list[Any] = []

    def counted() -> bool:
        reply = d.gateway.get(f"/v1/polls/{poll.id}/results")
        replies.append(reply.json() if reply.status_code == 200 else reply.text)
        return reply.status_code == 200 and replies[-1]["total"] == total

    try:
        wait_for(counted, f"results counting {total} votes", timeout_s)
    except TimeoutError:
        raise AssertionError(f"results never counted {total}: last {replies[-1:]}") from None
    return replies[-1]


def close_and_certify(d: Deployment, poll: Poll, total: int) -> None:
    """Close the poll, wait for the archiver's certificate (which must count `total` votes),
    and `tally audit verify` the published ledger: exit 0."""
    closed = httpx.post(
        f"{d.gateway.url}/v1/polls/{poll.id}/close", headers=admin_headers(d), timeout=10
    )
    assert closed.is_success, closed.text
    files = LedgerFiles(d.data_dir / "ledger")
    try:
        wait_for(lambda: files.read(poll.id, layout.CERTIFICATE) is not None, "a certificate", 60)
    except TimeoutError:
        raise AssertionError(f"no certificate within 60 s\n{d.logs()}") from None
    key = Verifier.parse((d.data_dir / "ledger" / "keys").read_text().strip())
    origin = certificate_origin(key.name, poll.id)
    signed = files.read(poll.id, layout.CERTIFICATE) or b""
    certificate = open_certificate(signed, [key.renamed(origin)], origin=origin)
    assert certificate.total == total
    audit = subprocess.run(
        [*AUDIT, str(files.poll_dir(poll.id)), "--key", str(key), "--poll", poll.id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


# --- votes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One vote request's outcome: status 0 is a transport error or a hang past HANG_S."""

    voter: int
    status: int
    body: Any
    latency_s: float
    sent_at: float  # time.perf_counter() when the request was written

    @property
    def receipt(self) -> dict[str, Any]:
        receipt: dict[str, Any] = self.body["receipt"]
        return receipt

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


def _attempt(voter: int, reply: Reply | None, chunk_started: float) -> Attempt:
    if reply is None:
        return Attempt(voter, 0, None, HANG_S, chunk_started)
    body = orjson.loads(reply.body) if reply.body else None
    return Attempt(voter, reply.status, body, reply.latency_s, reply.completed_at - reply.latency_s)


class Voters:
    """Distinct voters `v<i>` with their tokens, minted as the load needs them."""

    def __init__(self, d: Deployment, poll: Poll) -> None:
        self.d, self.poll = d, poll
        self.tokens: list[str] = []
        self.subjects: list[str] = []

    def new(self, count: int) -> range:
        first = len(self.tokens)
        subjects = [f"v{i}" for i in range(first, first + count)]
        self.subjects += subjects
        self.tokens += self.d.issuer.mint_many(subjects)
        return range(first, first + count)

    def requests(self, voters: Iterable[int], shift: int) -> list[bytes]:
        """Voter i votes OPTIONS[(i + shift) % 3]: a retry with another shift asks another
        option, so a 409 that repeats the first receipt proves the first vote stood."""
        host = f"{HOST}:{self.d.gateway.port}"
        return [
            build_request(
                "POST",
                f"/v1/polls/{self.poll.id}/votes",
                host=host,
                headers={
                    "Authorization": f"Bearer {self.tokens[i]}",
                    "Content-Type": "application/json",
                },
                body=orjson.dumps({"option": OPTIONS[(i + shift) % len(OPTIONS)]}),
            )
            for i in voters
        ]

    async def send(
        self, voters: Sequence[int], shift: int, *, concurrency: int, rate_per_s: float | None
    ) -> list[Attempt]:
        started = time.perf_counter()
        result = await run_requests(
            HOST,
            self.d.gateway.port,
            self.requests(voters, shift),
            concurrency=concurrency,
            timeout_s=HANG_S,
            rate_per_s=rate_per_s,
        )
        return [_attempt(v, r, started) for v, r in zip(voters, result.replies, strict=True)]


@dataclass
class Chunk:
    started: float
    attempts: list[Attempt]


@dataclass
class SteadyLoad:
    """Open-loop load: every `chunk_s` a new chunk of rate x chunk_s new voters goes out, paced
    at `rate_per_s` on connections of its own, whether or not earlier chunks are done (a slow
    node does not slow the load down)."""

    voters: Voters
    rate_per_s: float
    chunk_s: float = 0.5
    chunks: list[Chunk] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        per_chunk = round(self.rate_per_s * self.chunk_s)
        running: list[asyncio.Task[None]] = []
        next_at = loop.time()
        while not stop.is_set():
            running.append(loop.create_task(self._chunk(self.voters.new(per_chunk))))
            next_at += self.chunk_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
        await asyncio.gather(*running)

    async def _chunk(self, voters: range) -> None:
        started = time.perf_counter()
        attempts = await self.voters.send(
            voters, 0, concurrency=len(voters), rate_per_s=self.rate_per_s
        )
        self.chunks.append(Chunk(started, attempts))

    @property
    def attempts(self) -> list[Attempt]:
        return sorted((a for c in self.chunks for a in c.attempts), key=lambda a: a.voter)

    async def clean_chunk_after(self, moment: float, lanes: set[int], timeout_s: float) -> float:
        """Wait for a chunk sent wholly after `moment` whose votes all got 201 and landed on
        every lane in `lanes`; when it completed (perf_counter)."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            for chunk in self.chunks:
                if chunk.started < moment:
                    continue
                statuses = {a.status for a in chunk.attempts}
                landed = {a.receipt["lane"] for a in chunk.attempts if a.status == 201}
                if statuses == {201} and lanes <= landed:
                    return max(a.sent_at + a.latency_s for a in chunk.attempts)
            await asyncio.sleep(0.05)
        recent = Counter(a.status for c in self.chunks if c.started >= moment for a in c.attempts)
        raise AssertionError(f"no clean chunk within {timeout_s} s after the switch: {recent}")
