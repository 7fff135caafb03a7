"""Archiver throughput: leaves/s the archiver turns from the lane streams into a signed ledger.

One embedded valkey-server (the bundled binary, AOF on with `appendfsync always`, as `tally serve`
runs it) is started in a temp dir. A poll with 16 lanes and 3 options is created and opened
through VotingService, and N votes are cast through `VotingService.vote` (the real vote path:
pseudonym HMAC, `FCALL tally_vote`), in concurrent asyncio batches. The archiver (a real
`Archiver` with its own connection, on uvloop like `tally archiver`) then runs one `cycle()` per
simulated checkpoint interval, in two modes, each on a fresh keyspace and ledger dir:

  catch-up  all N votes queued first, then cycles until the streams are drained;
  steady    the votes queued in chunks of `rate x interval` (15,000 votes/s x 5 s = 75,000),
            one cycle after each chunk (a checkpoint of every lane per cycle).

Figures: leaves/s of wall time spent in the cycles, and leaves/s per core = leaves / the
process CPU seconds (time.process_time, all threads) spent in the cycles, split into user and
kernel time (os.times). valkey-server's CPU (INFO cpu) is a separate process and is reported
separately, not in the per-core figure. The kernel part (creating and fsyncing ledger files) is
the noisy one on a shared VM; --steady-first swaps the order of the modes to check for an order
effect.

Baseline, same run: the cost floor of a leaf, `hashlib.sha256(b"\\x00" + record).digest()` over
the same encoded records (`tally.ledger.leaf.encode_leaf`, the first mode's votes), timed between
the two modes and again at the end (best of 3 passes each; the ratio uses their mean). Each
lane's published root is checked against the Merkle root of the records as voted.

Bytes per vote: every file under the poll's ledger dir (tiles, bundles, checkpoints), as file
sizes, rounded up to 4 KiB blocks per file, and as `du` counts them, divided by N.

With --signed (issue 11), the votes carry admission signatures: a gateway admission key is
registered before the poll is created (as `tally serve` does), so the poll's admin log names it
and the archiver's recount verifies every vote's Ed25519 signature. Integrity alarms raised
(a refused signature would raise one) are reported; none are expected.

Run:  .venv/bin/python benchmarks/archiver_throughput.py [--votes 300000] [--signed] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.archive.logs import LedgerFiles, note_body
from tally.archiver import Archiver
from tally.domain.polls import OptionSpec, Poll
from tally.domain.pseudonyms import pseudonym
from tally.domain.votes import Accepted
from tally.ledger import layout, merkle, note
from tally.ledger.admission import AdmissionSigner
from tally.ledger.leaf import Admission, VoteRecord, encode_leaf
from tally.service import NewPoll, Voter, VotingService
from tally.store import keys
from tally.store.admission_keys import RegisteredKey, ValkeyAdmissionKeys
from tally.store.embedded import EmbeddedValkey
from tally.store.integrity import ValkeyIntegrity
from tally.store.ledger_queue import ValkeyLedgerQueue
from tally.store.library import load_functions
from tally.store.polls import ValkeyPolls
from tally.store.resp import Valkey
from tally.store.votes import ValkeyBallotBox

GATEWAY_VOTES_PER_S = 15_062  # BENCHMARKS.md, `tally bench` RS256, one gateway process
SECRET = b"archiver-throughput-bench-secret"
ISSUER = "bench"
ORIGIN = "tally.bench/ledger"
ADMISSION_KEY_NAME = "tally.bench/admission/bench"
LANES = 16
OPTIONS = 3
BLOCK = 4096
BASELINE_PASSES = 3


@dataclass(frozen=True, slots=True)
class Setup:
    valkey_version: str
    aof: str
    ledger_fs: str  # filesystem of the ledger dir: every tile and checkpoint is fsynced
    lanes: int
    options: int
    votes: int
    rate_votes_per_s: int
    interval_s: float
    chunk_votes: int
    vote_batch: int
    order: str  # which mode ran first
    signed: bool  # votes carry admission signatures the archiver verifies (issue 11)


@dataclass(frozen=True, slots=True)
class Disk:
    files: int
    directories: int
    file_bytes: int  # sum of file sizes
    block_bytes: int  # each file rounded up to whole 4 KiB blocks
    du_bytes: int  # st_blocks of every file and directory, as `du` counts
    tile_files: int
    tile_bytes: int
    bundle_files: int
    bundle_bytes: int
    checkpoint_files: int
    checkpoint_bytes: int
    file_bytes_per_vote: float
    block_bytes_per_vote: float
    du_bytes_per_vote: float


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    votes: int
    fill_seconds: float  # casting the votes through the service (not part of the figures)
    fill_votes_per_s: int
    cycles: int
    leaves: int
    checkpoints: int
    wall_seconds: float  # inside the cycles
    cpu_seconds: float  # this process, all threads, inside the cycles (time.process_time)
    cpu_user_seconds: float  # of which user time (os.times): Python and hashing
    cpu_sys_seconds: float  # of which kernel time: mostly creating and fsyncing ledger files
    valkey_cpu_seconds: float  # valkey-server (INFO cpu), during the cycles; separate process
    leaves_per_s_wall: int
    leaves_per_s_core: int
    cycle_seconds_mean: float
    cycle_seconds_max: float
    interval_busy_max: float  # slowest cycle / checkpoint interval
    ratio_core_to_baseline: float
    ratio_wall_to_baseline: float
    times_gateway_rate: float  # leaves_per_s_core / the gateway's votes/s
    keeps_up: bool
    roots_match: bool  # every lane's published root == the Merkle root of the records voted
    streams_empty: bool
    alarms: list[str]  # integrity alarms raised: none expected
    disk: Disk


@dataclass(frozen=True, slots=True)
class Baseline:
    leaves: int
    between_modes_leaves_per_s: int
    at_end_leaves_per_s: int
    leaves_per_s: int  # mean of the two
    record_bytes_mean: float
    record_bytes_min: int
    record_bytes_max: int


@dataclass(frozen=True, slots=True)
class CheckpointCost:
    """What the steady mode's extra checkpoints cost on disk: each lane checkpoint leaves its
    partial tiles, partial bundle and history file behind (immutable, never rewritten)."""

    extra_checkpoints: int
    extra_files: int
    file_bytes_per_checkpoint: int
    block_bytes_per_checkpoint: int


@dataclass(frozen=True, slots=True)
class Report:
    date: str
    command: str
    setup: Setup
    gateway_votes_per_s: int
    baseline: Baseline
    catch_up: Mode
    steady: Mode
    steady_checkpoint_cost: CheckpointCost
    keeps_up: bool  # both modes' per-core rate >= the gateway's rate
    times_gateway_rate: float  # of the slower mode


# --- the poll and its votes -----------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[archiver-throughput] {message}", file=sys.stderr, flush=True)


@dataclass
class Votes:
    """What was voted: each lane's encoded records in seq order, and the fill time."""

    lanes: list[list[bytes]]
    seconds: float = 0.0

    @property
    def records(self) -> list[bytes]:
        return [record for lane in self.lanes for record in lane]


async def open_poll(service: VotingService, votes: int) -> Poll:
    options = [OptionSpec(f"Option {i + 1}") for i in range(OPTIONS)]
    spec = NewPoll("archiver throughput", options, lanes=LANES, expected_voters=votes)
    poll = await service.create_poll(spec, actor="bench")
    return await service.open_poll(poll.id, actor="bench")


async def cast(service: VotingService, poll: Poll, voters: range, batch: int, votes: Votes) -> None:
    """Cast one vote per voter through the service, `batch` at a time concurrently; append each
    vote's encoded record (built from its receipt) to its lane, in seq order."""
    options = [o.id for o in poll.options]
    started = time.perf_counter()
    for first in range(voters.start, voters.stop, batch):
        chunk = range(first, min(first + batch, voters.stop))
        outcomes = await asyncio.gather(
            *(service.vote(poll.id, Voter(ISSUER, f"v{i}"), options[i % OPTIONS]) for i in chunk)
        )
        for i, outcome in zip(chunk, outcomes, strict=True):
            if not isinstance(outcome, Accepted):
                raise RuntimeError(f"vote {i} was not accepted: {outcome}")
            r = outcome.receipt
            p = pseudonym(SECRET, poll.id, ISSUER, f"v{i}")
            a = r.admission
            admission = None if a is None else Admission(a.admitted_ms, a.key_id, a.signature)
            record = VoteRecord(
                poll.id, r.lane, r.entry_id, p, r.option, r.accepted_at_ms, admission=admission
            )
            votes.lanes[r.lane].append(encode_leaf(record))
            if len(votes.lanes[r.lane]) != r.entry_id:
                raise RuntimeError(f"lane {r.lane}: seq {r.entry_id} arrived out of order")
    votes.seconds += time.perf_counter() - started


# --- measuring --------------------------------------------------------------------------------


async def valkey_cpu(client: Valkey) -> float:
    text: bytes = await client.execute("INFO", "cpu")
    fields = dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


@dataclass
class Clock:
    """Wall, process CPU and valkey-server CPU spent inside the measured cycles."""

    cycles: list[float]
    cpu: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    valkey: float = 0.0

    async def cycle(self, archiver: Archiver, client: Valkey) -> None:
        valkey_before = await valkey_cpu(client)
        times, cpu, wall = os.times(), time.process_time(), time.perf_counter()
        await archiver.cycle()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = os.times()
        self.user += after.user - times.user
        self.sys += after.system - times.system
        self.valkey += await valkey_cpu(client) - valkey_before
        self.cycles.append(wall)
        self.cpu += cpu


def baseline_rate(records: Sequence[bytes]) -> int:
    """Leaves/s of the bare leaf hash, SHA-256(0x00 || record): best of a few passes."""
    sha256 = hashlib.sha256
    best = math.inf
    for _ in range(BASELINE_PASSES):
        started = time.perf_counter()
        for record in records:
            sha256(b"\x00" + record).digest()
        best = min(best, time.perf_counter() - started)
    return round(len(records) / best)


def disk_usage(poll_dir: Path, votes: int) -> Disk:
    files = directories = file_bytes = block_bytes = du_bytes = 0
    kinds = {"tile": [0, 0], "bundle": [0, 0], "checkpoint": [0, 0]}
    for root, dirs, names in os.walk(poll_dir):
        directories += len(dirs)
        du_bytes += sum(Path(root, d).stat().st_blocks * 512 for d in dirs)
        for name in names:
            path = Path(root, name)
            st = path.stat()
            files += 1
            file_bytes += st.st_size
            block_bytes += -(-st.st_size // BLOCK) * BLOCK
            du_bytes += st.st_blocks * 512
            parts = path.relative_to(poll_dir).parts
            kind = (
                ("bundle" if parts[2] == "entries" else "tile")
                if len(parts) > 2 and parts[1] == "tile"
                else "checkpoint"
            )
            kinds[kind][0] += 1
            kinds[kind][1] += st.st_size
    du_bytes += poll_dir.stat().st_blocks * 512
    return Disk(
        files=files,
        directories=directories + 1,
        file_bytes=file_bytes,
        block_bytes=block_bytes,
        du_bytes=du_bytes,
        tile_files=kinds["tile"][0],
        tile_bytes=kinds["tile"][1],
        bundle_files=kinds["bundle"][0],
        bundle_bytes=kinds["bundle"][1],
        checkpoint_files=kinds["checkpoint"][0],
        checkpoint_bytes=kinds["checkpoint"][1],
        file_bytes_per_vote=round(file_bytes / votes, 2),
        block_bytes_per_vote=round(block_bytes / votes, 2),
        du_bytes_per_vote=round(du_bytes / votes, 2),
    )


def roots_match(files: LedgerFiles, poll: Poll, votes: Votes) -> bool:
    for lane, records in enumerate(votes.lanes):
        signed = files.read(poll.id, layout.checkpoint_path(layout.lane_log(lane)))
        if signed is None:
            return False
        checkpoint = note_body(signed)
        expected = merkle.root([merkle.leaf_hash(r) for r in records])
        if (checkpoint.size, checkpoint.root) != (len(records), expected):
            return False
    return True


async def streams_empty(client: Valkey, poll: Poll) -> bool:
    lengths = await client.pipeline(
        [("XLEN", keys.lane_ledger(poll.id, lane)) for lane in range(poll.lanes)]
    )
    return all(n == 0 for n in lengths)


@dataclass(frozen=True, slots=True)
class Session:
    """One mode's fresh state: keyspace flushed, its own ledger dir, a new archiver."""

    service: VotingService
    archiver: Archiver
    files: LedgerFiles
    poll: Poll
    votes: Votes
    alarms: list[str]  # integrity alarms the archiver raised (a refused signature would be one)


async def session(
    client: Valkey, archiver_client: Valkey, root: Path, name: str, args: argparse.Namespace
) -> Session:
    await client.execute("FLUSHALL", "SYNC")
    files = LedgerFiles(root / name / "ledger")
    ballots = ValkeyBallotBox(client)
    signer = None
    if args.signed:
        # As `tally serve` does: the gateway's admission key registered before the poll is
        # created, so the poll's admin log names it and the archiver checks every vote with it.
        signer = AdmissionSigner(ADMISSION_KEY_NAME, Ed25519PrivateKey.generate())
        start = time.time_ns() // 1_000_000 - 60_000
        key = RegisteredKey(signer.key.name, signer.key.public_key, start)
        await ValkeyAdmissionKeys(client).register(key, actor="bench")
    service = VotingService(ValkeyPolls(client), ballots, pseudonym_secret=SECRET, signer=signer)
    skey, _ = note.generate_key(ORIGIN)
    alarms: list[str] = []
    archiver = Archiver(
        ValkeyPolls(archiver_client),
        ValkeyLedgerQueue(archiver_client),
        files,
        note.Signer.parse(skey),
        ValkeyIntegrity(archiver_client),
        owner=f"bench-{name}",
        interval_ms=round(args.interval_s * 1000),
        on_alarm=lambda poll_id, alarm: alarms.append(f"{poll_id}: {alarm}"),
    )
    poll = await open_poll(service, args.votes)
    # The archiver was running before the votes came: the admin log (created, opened) and the
    # first, empty checkpoint of every lane are published by an unmeasured cycle.
    await archiver.cycle()
    return Session(service, archiver, files, poll, Votes([[] for _ in range(LANES)]), alarms)


def mode_result(
    name: str,
    s: Session,
    clock: Clock,
    leaves: int,
    checkpoints: int,
    empty: bool,
    args: argparse.Namespace,
) -> Mode:
    votes = args.votes
    wall = sum(clock.cycles)
    per_core = round(leaves / clock.cpu)
    return Mode(
        name=name,
        votes=votes,
        fill_seconds=round(s.votes.seconds, 1),
        fill_votes_per_s=round(votes / s.votes.seconds),
        cycles=len(clock.cycles),
        leaves=leaves,
        checkpoints=checkpoints,
        wall_seconds=round(wall, 3),
        cpu_seconds=round(clock.cpu, 3),
        cpu_user_seconds=round(clock.user, 2),
        cpu_sys_seconds=round(clock.sys, 2),
        valkey_cpu_seconds=round(clock.valkey, 3),
        leaves_per_s_wall=round(leaves / wall),
        leaves_per_s_core=per_core,
        cycle_seconds_mean=round(wall / len(clock.cycles), 3),
        cycle_seconds_max=round(max(clock.cycles), 3),
        interval_busy_max=round(max(clock.cycles) / args.interval_s, 3),
        ratio_core_to_baseline=0.0,  # filled in once the baseline's second pass is known
        ratio_wall_to_baseline=0.0,
        times_gateway_rate=round(per_core / GATEWAY_VOTES_PER_S, 2),
        keeps_up=per_core >= GATEWAY_VOTES_PER_S,
        roots_match=roots_match(s.files, s.poll, s.votes),
        streams_empty=empty,
        alarms=s.alarms,
        disk=disk_usage(s.files.poll_dir(s.poll.id), votes),
    )


async def catch_up(
    client: Valkey, archiver_client: Valkey, root: Path, args: argparse.Namespace
) -> tuple[Mode, list[bytes]]:
    s = await session(client, archiver_client, root, "catch-up", args)
    progress(f"catch-up: casting {args.votes:,} votes through VotingService.vote")
    await cast(s.service, s.poll, range(args.votes), args.batch, s.votes)
    progress(f"catch-up: cast in {s.votes.seconds:.1f} s; archiving the backlog")
    clock = Clock([])
    leaves0, checkpoints0 = s.archiver.stats.leaves, s.archiver.stats.checkpoints
    while s.archiver.stats.leaves - leaves0 < args.votes:
        if len(clock.cycles) >= 100 or s.archiver.stats.failed_polls:
            raise RuntimeError(f"the archiver does not drain: {s.archiver.stats}")
        await clock.cycle(s.archiver, archiver_client)
    leaves = s.archiver.stats.leaves - leaves0
    checkpoints = s.archiver.stats.checkpoints - checkpoints0
    empty = await streams_empty(client, s.poll)
    return mode_result("catch-up", s, clock, leaves, checkpoints, empty, args), s.votes.records


async def steady(
    client: Valkey, archiver_client: Valkey, root: Path, args: argparse.Namespace
) -> tuple[Mode, list[bytes]]:
    s = await session(client, archiver_client, root, "steady", args)
    chunk = args.chunk
    clock = Clock([])
    leaves0, checkpoints0 = s.archiver.stats.leaves, s.archiver.stats.checkpoints
    for first in range(0, args.votes, chunk):
        voters = range(first, min(first + chunk, args.votes))
        await cast(s.service, s.poll, voters, args.batch, s.votes)
        await clock.cycle(s.archiver, archiver_client)
        progress(
            f"steady: {voters.stop:,}/{args.votes:,} votes, cycle {len(clock.cycles)} took "
            f"{clock.cycles[-1]:.2f} s"
        )
    leaves = s.archiver.stats.leaves - leaves0
    if s.archiver.stats.failed_polls or leaves != args.votes:
        raise RuntimeError(f"the archiver fell behind or stopped: {s.archiver.stats}")
    checkpoints = s.archiver.stats.checkpoints - checkpoints0
    empty = await streams_empty(client, s.poll)
    return mode_result("steady", s, clock, leaves, checkpoints, empty, args), s.votes.records


def with_ratios(mode: Mode, baseline: int) -> Mode:
    return replace(
        mode,
        ratio_core_to_baseline=round(mode.leaves_per_s_core / baseline, 4),
        ratio_wall_to_baseline=round(mode.leaves_per_s_wall / baseline, 4),
    )


def filesystem_of(path: Path) -> str:
    """The type and mount point of the filesystem holding ``path`` (from /proc/mounts)."""
    best = ("?", "")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount, fstype = fields[1], fields[2]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (fstype, mount)
    return f"{best[0]} ({best[1]})"


async def run(args: argparse.Namespace, command: str) -> Report:
    with tempfile.TemporaryDirectory(prefix="tally-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        server = EmbeddedValkey(root)
        client = Valkey(server.endpoint, on_connect=load_functions)
        archiver_client = Valkey(server.endpoint, on_connect=load_functions)
        try:
            await server.start()
            await client.connect()
            await archiver_client.connect()
            info: bytes = await client.execute("INFO", "server")
            version = next(
                line.split(":", 1)[1]
                for line in info.decode().splitlines()
                if line.startswith("valkey_version:")
            )
            setup = Setup(
                valkey_version=version,
                aof="on, appendfsync always",
                ledger_fs=filesystem_of(root),
                lanes=LANES,
                options=OPTIONS,
                votes=args.votes,
                rate_votes_per_s=args.rate,
                interval_s=args.interval_s,
                chunk_votes=args.chunk,
                vote_batch=args.batch,
                order="steady, then catch-up" if args.steady_first else "catch-up, then steady",
                signed=args.signed,
            )
            progress(f"valkey {version}, AOF {setup.aof}, ledger on {setup.ledger_fs}")
            modes = [catch_up, steady][:: -1 if args.steady_first else 1]
            done: dict[str, Mode] = {}
            mode, records = await modes[0](client, archiver_client, root, args)
            done[mode.name] = mode
            between = baseline_rate(records)
            progress(
                f"{mode.name}: {mode.leaves_per_s_wall:,} leaves/s wall, "
                f"{mode.leaves_per_s_core:,} per core; baseline {between:,} leaves/s"
            )
            mode, _ = await modes[1](client, archiver_client, root, args)
            done[mode.name] = mode
            at_end = baseline_rate(records)
        finally:
            await archiver_client.close()
            await client.close()
            await server.stop()
    sizes = [len(r) for r in records]
    mean = round((between + at_end) / 2)
    first, second = done["catch-up"], done["steady"]
    baseline = Baseline(
        leaves=len(records),
        between_modes_leaves_per_s=between,
        at_end_leaves_per_s=at_end,
        leaves_per_s=mean,
        record_bytes_mean=round(sum(sizes) / len(sizes), 2),
        record_bytes_min=min(sizes),
        record_bytes_max=max(sizes),
    )
    extra = second.checkpoints - first.checkpoints
    cost = CheckpointCost(
        extra_checkpoints=extra,
        extra_files=second.disk.files - first.disk.files,
        file_bytes_per_checkpoint=round((second.disk.file_bytes - first.disk.file_bytes) / extra)
        if extra
        else 0,
        block_bytes_per_checkpoint=round((second.disk.block_bytes - first.disk.block_bytes) / extra)
        if extra
        else 0,
    )
    slower = min(first.times_gateway_rate, second.times_gateway_rate)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Report(
        date=date,
        command=command,
        setup=setup,
        gateway_votes_per_s=GATEWAY_VOTES_PER_S,
        baseline=baseline,
        catch_up=with_ratios(first, mean),
        steady=with_ratios(second, mean),
        steady_checkpoint_cost=cost,
        keeps_up=first.keeps_up and second.keeps_up,
        times_gateway_rate=slower,
    )


# --- reporting ------------------------------------------------------------------------------


def mode_lines(m: Mode, setup: Setup) -> list[str]:
    d = m.disk
    verdict = "yes" if m.keeps_up else "NO"
    checks = "roots match the votes" if m.roots_match else "ROOTS DIFFER FROM THE VOTES"
    checks += ", streams trimmed" if m.streams_empty else ", STREAMS NOT EMPTY"
    checks += ", no alarm" if not m.alarms else f", ALARMS: {m.alarms[:3]}"
    return [
        f"  {m.leaves:,} leaves in {m.cycles} cycle(s), {m.checkpoints} checkpoints; {checks}",
        f"  wall in cycles         {m.wall_seconds:8.2f} s   {m.leaves_per_s_wall:>9,} leaves/s   "
        f"({m.ratio_wall_to_baseline:.4f}x baseline)",
        f"  archiver CPU           {m.cpu_seconds:8.2f} s   {m.leaves_per_s_core:>9,} leaves/s per core "
        f"({m.ratio_core_to_baseline:.4f}x baseline)",
        f"    of which             user {m.cpu_user_seconds:.2f} s, kernel {m.cpu_sys_seconds:.2f} s "
        "(kernel: mostly creating and fsyncing ledger files)",
        f"  valkey-server CPU      {m.valkey_cpu_seconds:8.2f} s   (separate process, not in the per-core figure)",
        f"  cycle time             mean {m.cycle_seconds_mean:.2f} s, max {m.cycle_seconds_max:.2f} s "
        f"= {m.interval_busy_max:.0%} of the {setup.interval_s:g} s interval",
        f"  keeps up: {verdict} ({m.times_gateway_rate:.1f} times the gateway's rate)",
        f"  ledger on disk         {d.files:,} files in {d.directories:,} dirs: "
        f"tiles {d.tile_files:,} ({d.tile_bytes:,} B), bundles {d.bundle_files:,} ({d.bundle_bytes:,} B), "
        f"checkpoints {d.checkpoint_files:,} ({d.checkpoint_bytes:,} B)",
        f"    file sizes           {d.file_bytes:>12,} B   {d.file_bytes_per_vote:7.2f} B/vote",
        f"    in 4 KiB blocks      {d.block_bytes:>12,} B   {d.block_bytes_per_vote:7.2f} B/vote",
        f"    du (files + dirs)    {d.du_bytes:>12,} B   {d.du_bytes_per_vote:7.2f} B/vote",
        f"  (votes cast through VotingService.vote in {m.fill_seconds} s = "
        f"{m.fill_votes_per_s:,} votes/s; not measured as archiver time)",
    ]


def table(report: Report) -> str:
    s, b, c = report.setup, report.baseline, report.steady_checkpoint_cost
    return "\n".join(
        [
            f"Archiver throughput  {report.date}",
            f"valkey {s.valkey_version}, AOF {s.aof}; ledger on {s.ledger_fs}; "
            f"{s.lanes} lanes, {s.options} options, {s.votes:,} votes; ran {s.order}; "
            + ("votes signed (admission signatures verified)" if s.signed else "votes unsigned"),
            "",
            f"baseline: SHA-256(0x00 || record) over the {b.leaves:,} records: "
            f"{b.leaves_per_s:,} leaves/s (between the modes {b.between_modes_leaves_per_s:,}, "
            f"at the end {b.at_end_leaves_per_s:,})",
            f"record size: mean {b.record_bytes_mean} B (min {b.record_bytes_min}, max {b.record_bytes_max})",
            f"gateway rate to keep up with: {report.gateway_votes_per_s:,} votes/s (RS256 `tally bench`)",
            "",
            "(a) catch-up: every vote queued, then cycles until drained",
            *mode_lines(report.catch_up, s),
            "",
            f"(b) steady: {s.chunk_votes:,} votes per {s.interval_s:g} s interval "
            f"({s.rate_votes_per_s:,} votes/s), one cycle after each chunk",
            *mode_lines(report.steady, s),
            f"  its {c.extra_checkpoints} extra lane checkpoints left {c.extra_files} more files: "
            f"{c.file_bytes_per_checkpoint:,} B ({c.block_bytes_per_checkpoint:,} B in 4 KiB blocks) "
            "per checkpoint",
            "",
            f"keeps up: {'yes' if report.keeps_up else 'NO'} "
            f"({report.times_gateway_rate:.1f} times the gateway's rate, slower mode, per core)",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--votes", type=int, default=300_000, help="votes per mode (default 300k)")
    parser.add_argument(
        "--rate", type=int, default=15_000, help="steady mode: votes/s arriving (default 15,000)"
    )
    parser.add_argument(
        "--interval-s",
        type=float,
        default=5.0,
        help="checkpoint interval in s; steady chunk = rate x interval (default 5)",
    )
    parser.add_argument(
        "--batch", type=int, default=2000, help="votes cast concurrently while filling"
    )
    parser.add_argument(
        "--steady-first", action="store_true", help="run the steady mode before the catch-up"
    )
    parser.add_argument("--dir", default=None, help="parent of the temp dir (default: system tmp)")
    parser.add_argument(
        "--signed",
        action="store_true",
        help="votes signed by a registered admission key, each verified by the archiver",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    args.chunk = max(1, round(args.rate * args.interval_s))
    if args.votes < 1:
        parser.error("--votes must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(["benchmarks/archiver_throughput.py", *(argv or sys.argv[1:])])
    report = uvloop.run(run(args, command))
    print(json.dumps(asdict(report), indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
