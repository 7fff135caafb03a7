"""Voter-index memory: what one-vote-per-voter costs in Valkey, per voter, measured.

The requirement: the voter index costs at most 32 B per voter at 5M voters, measured with
`INFO memory` (one plain SET per voter costs ~40-52 B, bucketed hashes ~18-24 B). One embedded
valkey-server (the bundled binary, as `tally serve` runs it) is started in a temp dir, then:

  (a) index   the voter index alone, written exactly as `tally_vote` writes it: one
              `HSET tally:{<poll>.<lane>}:v:<bucket hex> <pseudonym[2:]> <seq in lane>` per voter;
      naive   the rejected alternative, one `SET <prefix><hex pseudonym> <seq>` per voter;
  (b) votes   whole votes, `FCALL tally_vote` on a real poll's lanes: index + ledger stream +
              counters per vote, and the function's own speed (server time per call).

AOF is switched off at runtime (`CONFIG SET appendonly no`) unless --keep-aof: the dataset's
memory does not depend on it and the run is several times faster. Pseudonyms are random 16-byte
strings, which is what HMAC-SHA256 output looks like to Valkey.

Run:  .venv/bin/python benchmarks/voter_index_memory.py --voters 5000000 --lanes 16 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

from tally.domain.polls import OptionSpec, Poll, PollState, bucket_bits_for, new_poll
from tally.domain.pseudonyms import PSEUDONYM_BYTES, bucket_of, index_field, lane_of
from tally.store import keys
from tally.store.embedded import EmbeddedValkey
from tally.store.library import load_functions
from tally.store.polls import ValkeyPolls
from tally.store.resp import ReplyError, Valkey

TARGET_BYTES_PER_VOTER = 32
INDEX_POLL = "bench-index"
VOTES_POLL = "bench-votes"

Command = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Server:
    version: str
    allocator: str
    aof: str
    hash_max_listpack_entries: int
    hash_max_listpack_value: int


@dataclass(frozen=True, slots=True)
class IndexResult:
    voters: int
    lanes: int
    bucket_bits: int
    buckets: int
    used_memory_delta: int
    bytes_per_voter: float
    memory_usage_sum: int  # MEMORY USAGE over every bucket: a cross-check of the INFO delta
    voters_per_bucket_min: int
    voters_per_bucket_mean: float
    voters_per_bucket_max: int
    encodings: dict[str, int]
    seconds: float
    meets_target: bool


@dataclass(frozen=True, slots=True)
class NaiveResult:
    voters: int
    key_bytes: int
    used_memory_delta: int
    bytes_per_voter: float
    seconds: float


@dataclass(frozen=True, slots=True)
class VoteResult:
    votes: int
    lanes: int
    bucket_bits: int
    options: int
    outcomes: dict[str, int]
    used_memory_delta: int
    bytes_per_vote: float
    index_bytes: int  # MEMORY USAGE sums, per kind of key
    ledger_bytes: int
    lane_and_counts_bytes: int
    wall_seconds: float
    wall_votes_per_s: float
    server_usec_per_call: float
    server_votes_per_s: float
    counted: int  # sum of the lanes' counters after the run
    retry_outcome: str  # the first vote sent again


@dataclass(frozen=True, slots=True)
class Report:
    date: str
    command: str
    server: Server
    target_bytes_per_voter: int
    index: IndexResult
    naive: NaiveResult | None
    votes: VoteResult | None


# --- talking to Valkey ----------------------------------------------------------------------


async def pipelined(client: Valkey, chunks: Iterable[Sequence[Command]]) -> Counter[str]:
    """Send every chunk, keeping one chunk in flight while the next is built; count the replies by
    kind (a list reply by its first element). An error reply raises."""
    outcomes: Counter[str] = Counter()
    in_flight: list[asyncio.Future[Any]] = []
    for chunk in chunks:
        sent = [client.submit(command) for command in chunk]
        await asyncio.sleep(0)  # the client writes this chunk before we wait on the previous one
        _count(await _settled(in_flight), outcomes)
        in_flight = sent
    _count(await _settled(in_flight), outcomes)
    return outcomes


async def _settled(futures: list[asyncio.Future[Any]]) -> list[Any]:
    if futures:
        await futures[-1]  # replies arrive in order: the last one settles them all
    return [future.result() for future in futures]


def _count(replies: list[Any], outcomes: Counter[str]) -> None:
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
        outcomes[reply[0].decode() if isinstance(reply, list) else "ok"] += 1


async def replies_for(client: Valkey, commands: Sequence[Sequence[bytes | str | int]]) -> list[Any]:
    """Replies to many read commands, 10k per pipeline; an error reply raises."""
    replies: list[Any] = []
    for start in range(0, len(commands), 10_000):
        replies.extend(await client.pipeline(commands[start : start + 10_000]))
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


async def info(client: Valkey, section: str) -> dict[str, str]:
    text: bytes = await client.execute("INFO", section)
    pairs = (line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    return dict(pairs)


async def used_memory(client: Valkey) -> int:
    return int((await info(client, "memory"))["used_memory"])


async def config_int(client: Valkey, name: str) -> int:
    _, value = await client.execute("CONFIG", "GET", name)
    return int(value)


async def fresh_keyspace(client: Valkey) -> int:
    """Empty the keyspace (functions stay loaded) and return used_memory after."""
    await client.execute("FLUSHALL", "SYNC")
    return await used_memory(client)


# --- what gets written ----------------------------------------------------------------------


def pseudonym_chunks(rng: random.Random, count: int, chunk: int) -> Iterator[list[bytes]]:
    for start in range(0, count, chunk):
        blob = rng.randbytes(min(chunk, count - start) * PSEUDONYM_BYTES)
        yield [blob[i : i + PSEUDONYM_BYTES] for i in range(0, len(blob), PSEUDONYM_BYTES)]


def index_commands(
    poll_id: str, lanes: int, bucket_bits: int, pseudonyms: Iterator[list[bytes]]
) -> Iterator[list[Command]]:
    """HSET <bucket> <pseudonym[2:]> <seq in lane>: what tally_vote writes to the voter index."""
    buckets = [
        [keys.lane_voters(poll_id, lane, b).encode() for b in range(1 << bucket_bits)]
        for lane in range(lanes)
    ]
    seqs = [0] * lanes
    for chunk in pseudonyms:
        commands: list[Command] = []
        for p in chunk:
            lane = lane_of(p, lanes)
            seqs[lane] += 1
            key = buckets[lane][bucket_of(p, bucket_bits)]
            commands.append((b"HSET", key, index_field(p), b"%d" % seqs[lane]))
        yield commands


def naive_commands(
    poll_id: str, lanes: int, pseudonyms: Iterator[list[bytes]]
) -> Iterator[list[Command]]:
    """SET <lane prefix>voter:<hex pseudonym> <seq in lane>: the one-key-per-voter alternative
    (a hypothetical key, deliberately not in store/keys.py)."""
    prefixes = [(keys.lane_prefix(poll_id, lane) + "voter:").encode() for lane in range(lanes)]
    seqs = [0] * lanes
    for chunk in pseudonyms:
        commands: list[Command] = []
        for p in chunk:
            lane = lane_of(p, lanes)
            seqs[lane] += 1
            commands.append((b"SET", prefixes[lane] + p.hex().encode(), b"%d" % seqs[lane]))
        yield commands


def vote_commands(poll: Poll, pseudonyms: Iterator[list[bytes]]) -> Iterator[list[Command]]:
    """FCALL tally_vote, built exactly as store/votes.py builds it; the option is spread evenly."""
    lane_keys = [
        (
            keys.lane_state(poll.id, lane).encode(),
            keys.lane_counts(poll.id, lane).encode(),
            keys.lane_ledger(poll.id, lane).encode(),
        )
        for lane in range(poll.lanes)
    ]
    buckets = [
        [keys.lane_voters(poll.id, lane, b).encode() for b in range(1 << poll.bucket_bits)]
        for lane in range(poll.lanes)
    ]
    options = [o.id.encode() for o in poll.options]
    for chunk in pseudonyms:
        commands: list[Command] = []
        for p in chunk:
            lane = lane_of(p, poll.lanes)
            state, counts, ledger = lane_keys[lane]
            bucket = buckets[lane][bucket_of(p, poll.bucket_bits)]
            option = options[p[4] % len(options)]
            commands.append(
                (b"FCALL", b"tally_vote", b"4", state, counts, ledger, bucket, p, index_field(p), option)
            )  # fmt: skip
        yield commands


# --- the three measurements -----------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[voter-index-memory] {message}", file=sys.stderr, flush=True)


async def measure_index(
    client: Valkey, rng: random.Random, voters: int, lanes: int, bucket_bits: int, chunk: int
) -> IndexResult:
    progress(f"(a) writing the voter index: {voters:,} voters, {lanes} lanes, {bucket_bits} bits")
    before = await fresh_keyspace(client)
    started = time.perf_counter()
    commands = index_commands(INDEX_POLL, lanes, bucket_bits, pseudonym_chunks(rng, voters, chunk))
    await pipelined(client, commands)
    seconds = time.perf_counter() - started
    delta = await used_memory(client) - before
    bucket_keys = [
        keys.lane_voters(INDEX_POLL, lane, b)
        for lane in range(lanes)
        for b in range(1 << bucket_bits)
    ]
    sizes = await replies_for(client, [("HLEN", k) for k in bucket_keys])
    encodings = await replies_for(client, [("OBJECT", "ENCODING", k) for k in bucket_keys])
    usage = await replies_for(client, [("MEMORY", "USAGE", k, "SAMPLES", "0") for k in bucket_keys])
    per_voter = delta / voters
    return IndexResult(
        voters=voters,
        lanes=lanes,
        bucket_bits=bucket_bits,
        buckets=len(bucket_keys),
        used_memory_delta=delta,
        bytes_per_voter=round(per_voter, 2),
        memory_usage_sum=sum(u or 0 for u in usage),
        voters_per_bucket_min=min(sizes),
        voters_per_bucket_mean=round(sum(sizes) / len(sizes), 1),
        voters_per_bucket_max=max(sizes),
        encodings=dict(Counter("(missing)" if e is None else e.decode() for e in encodings)),
        seconds=round(seconds, 1),
        meets_target=per_voter <= TARGET_BYTES_PER_VOTER,
    )


async def measure_naive(
    client: Valkey, rng: random.Random, voters: int, lanes: int, chunk: int
) -> NaiveResult:
    progress(f"(a) writing the naive index for comparison: {voters:,} SETs")
    before = await fresh_keyspace(client)
    started = time.perf_counter()
    await pipelined(client, naive_commands(INDEX_POLL, lanes, pseudonym_chunks(rng, voters, chunk)))
    seconds = time.perf_counter() - started
    delta = await used_memory(client) - before
    key_bytes = len(keys.lane_prefix(INDEX_POLL, 0) + "voter:") + 2 * PSEUDONYM_BYTES
    return NaiveResult(voters, key_bytes, delta, round(delta / voters, 2), round(seconds, 1))


async def open_poll(client: Valkey, votes: int, lanes: int, options: int, bits: int | None) -> Poll:
    """A real poll created and opened through the store (tally_lane_create, tally_move)."""
    poll = new_poll(
        poll_id=VOTES_POLL,
        title="voter index memory benchmark",
        options=[OptionSpec(f"Option {i + 1}") for i in range(options)],
        now_ms=int(time.time() * 1000),
        lanes=lanes,
        expected_voters=votes,
    )
    if bits is not None:
        poll = replace(poll, bucket_bits=bits)
    store = ValkeyPolls(client)
    await store.create(poll)
    await store.move(poll, PollState.OPEN)
    return poll.moved_to(PollState.OPEN, int(time.time() * 1000))


async def measure_votes(
    client: Valkey,
    rng: random.Random,
    votes: int,
    lanes: int,
    options: int,
    bits: int | None,
    chunk: int,
) -> VoteResult:
    await fresh_keyspace(client)
    poll = await open_poll(client, votes, lanes, options, bits)
    progress(f"(b) casting {votes:,} votes via FCALL tally_vote, {poll.bucket_bits} bucket bits")
    before = await used_memory(client)
    await client.execute("CONFIG", "RESETSTAT")
    chunks = vote_commands(poll, pseudonym_chunks(rng, votes, chunk))
    first_chunk = next(chunks)
    started = time.perf_counter()
    outcomes = await pipelined(client, chain([first_chunk], chunks))
    wall = time.perf_counter() - started
    delta = await used_memory(client) - before
    fcall = dict(
        pair.split("=") for pair in (await info(client, "commandstats"))["cmdstat_fcall"].split(",")
    )
    usec_per_call = float(fcall["usec_per_call"])
    index_bytes, ledger_bytes, lane_bytes = await _vote_breakdown(client, poll)
    lane_tallies, _ = await ValkeyPolls(client).tallies(poll)
    retry = await client.execute(*first_chunk[0])
    return VoteResult(
        votes=votes,
        lanes=lanes,
        bucket_bits=poll.bucket_bits,
        options=options,
        outcomes=dict(outcomes),
        used_memory_delta=delta,
        bytes_per_vote=round(delta / votes, 2),
        index_bytes=index_bytes,
        ledger_bytes=ledger_bytes,
        lane_and_counts_bytes=lane_bytes,
        wall_seconds=round(wall, 1),
        wall_votes_per_s=round(votes / wall),
        server_usec_per_call=usec_per_call,
        server_votes_per_s=round(1e6 / usec_per_call),
        counted=sum(sum(t.counts.values()) for t in lane_tallies),
        retry_outcome=retry[0].decode(),
    )


async def _vote_breakdown(client: Valkey, poll: Poll) -> tuple[int, int, int]:
    def usage(names: list[str]) -> list[tuple[str, ...]]:
        return [("MEMORY", "USAGE", name, "SAMPLES", "0") for name in names]

    lanes = range(poll.lanes)
    buckets = [
        keys.lane_voters(poll.id, la, b) for la in lanes for b in range(1 << poll.bucket_bits)
    ]
    ledgers = [keys.lane_ledger(poll.id, la) for la in lanes]
    others = [keys.lane_state(poll.id, la) for la in lanes] + [
        keys.lane_counts(poll.id, la) for la in lanes
    ]
    return (
        sum(u or 0 for u in await replies_for(client, usage(buckets))),
        sum(u or 0 for u in await replies_for(client, usage(ledgers))),
        sum(u or 0 for u in await replies_for(client, usage(others))),
    )


# --- running and reporting ------------------------------------------------------------------


async def describe(client: Valkey) -> Server:
    server = await info(client, "server")
    memory = await info(client, "memory")
    persistence = await info(client, "persistence")
    return Server(
        version=server.get("valkey_version", server["redis_version"]),
        allocator=memory["mem_allocator"],
        aof="on, appendfsync always"
        if persistence["aof_enabled"] == "1"
        else "off (CONFIG SET appendonly no)",
        hash_max_listpack_entries=await config_int(client, "hash-max-listpack-entries"),
        hash_max_listpack_value=await config_int(client, "hash-max-listpack-value"),
    )


async def run(args: argparse.Namespace, command: str) -> Report:
    rng = random.Random(args.seed)
    bits = (
        args.bucket_bits
        if args.bucket_bits is not None
        else bucket_bits_for(args.voters, args.lanes)
    )
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as tmp:
        server = EmbeddedValkey(Path(tmp))
        await server.start()
        client = Valkey(server.endpoint, on_connect=load_functions)
        try:
            await client.connect()
            if not args.keep_aof:
                await client.execute("CONFIG", "SET", "appendonly", "no")
            described = await describe(client)
            progress(
                f"valkey {described.version}, malloc={described.allocator}, AOF {described.aof}"
            )
            index = await measure_index(client, rng, args.voters, args.lanes, bits, args.chunk)
            naive = None
            if args.naive_voters:
                naive = await measure_naive(client, rng, args.naive_voters, args.lanes, args.chunk)
            votes = None
            if args.votes:
                votes = await measure_votes(
                    client, rng, args.votes, args.lanes, args.options, args.bucket_bits, args.chunk
                )
        finally:
            await client.close()
            await server.stop()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Report(date, command, described, TARGET_BYTES_PER_VOTER, index, naive, votes)


def table(report: Report) -> str:
    s, a, n, v = report.server, report.index, report.naive, report.votes
    verdict = "meets" if a.meets_target else "MISSES"
    lines = [
        f"Voter-index memory  {report.date}",
        f"valkey {s.version}, malloc={s.allocator}, AOF {s.aof}; "
        f"hash-max-listpack-entries {s.hash_max_listpack_entries}, -value {s.hash_max_listpack_value}",
        "",
        f"(a) voter index alone: {a.voters:,} voters, {a.lanes} lanes x {1 << a.bucket_bits:,} buckets "
        f"({a.bucket_bits} bits) = {a.buckets:,} hashes",
        f"    INFO used_memory delta   {a.used_memory_delta:>14,} B   {a.bytes_per_voter:6.2f} B/voter "
        f"({verdict} the {report.target_bytes_per_voter} B target)",
        f"    MEMORY USAGE, all buckets{a.memory_usage_sum:>14,} B   {a.memory_usage_sum / a.voters:6.2f} B/voter",
        f"    voters per bucket        min {a.voters_per_bucket_min}, mean {a.voters_per_bucket_mean}, "
        f"max {a.voters_per_bucket_max}",
        f"    bucket encodings         {', '.join(f'{k} {c:,}' for k, c in sorted(a.encodings.items()))}",
        f"    written in               {a.seconds} s ({a.voters / a.seconds:,.0f} HSET/s incl. Python)",
    ]
    if n is not None:
        lines += [
            f"    naive SET per voter      {n.used_memory_delta:>14,} B   {n.bytes_per_voter:6.2f} B/voter "
            f"({n.voters:,} voters, {n.key_bytes} B keys; {n.bytes_per_voter / a.bytes_per_voter:.1f}x the index)",
        ]
    if v is not None:
        lines += [
            "",
            f"(b) whole votes via FCALL tally_vote: {v.votes:,} votes, {v.lanes} lanes, "
            f"{v.bucket_bits} bucket bits, {v.options} options",
            f"    outcomes                 {', '.join(f'{k} {c:,}' for k, c in sorted(v.outcomes.items()))}; "
            f"counters sum {v.counted:,}; first vote re-sent -> {v.retry_outcome}",
            f"    INFO used_memory delta   {v.used_memory_delta:>14,} B   {v.bytes_per_vote:6.2f} B/vote",
            f"      voter index buckets    {v.index_bytes:>14,} B   {v.index_bytes / v.votes:6.2f} B/vote",
            f"      ledger streams         {v.ledger_bytes:>14,} B   {v.ledger_bytes / v.votes:6.2f} B/vote",
            f"      lane + counts hashes   {v.lane_and_counts_bytes:>14,} B",
            f"    function, server time    {v.server_usec_per_call:.2f} us/call = {v.server_votes_per_s:,} votes/s per core",
            f"    end to end from Python   {v.wall_seconds} s = {v.wall_votes_per_s:,} votes/s "
            "(one client process on the same 2 cores)",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--voters", type=int, default=5_000_000, help="voters in (a) (default 5M)")
    parser.add_argument("--lanes", type=int, default=16, help="lanes per poll (default 16)")
    parser.add_argument(
        "--bucket-bits", type=int, default=None, help="override bucket_bits_for(voters, lanes)"
    )
    parser.add_argument(
        "--naive-voters",
        type=int,
        default=1_000_000,
        help="SETs for the naive comparison (0: skip)",
    )
    parser.add_argument("--votes", type=int, default=1_000_000, help="votes cast in (b) (0: skip)")
    parser.add_argument("--options", type=int, default=4, help="options of the poll in (b)")
    parser.add_argument("--chunk", type=int, default=10_000, help="commands per pipeline")
    parser.add_argument("--seed", type=int, default=2024, help="random seed for pseudonyms")
    parser.add_argument(
        "--keep-aof", action="store_true", help="keep AOF on (appendfsync always); slower"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join(["benchmarks/voter_index_memory.py", *(argv or sys.argv[1:])])
    report = asyncio.run(run(args, command))
    print(json.dumps(asdict(report), indent=2) if args.json else table(report))


if __name__ == "__main__":
    main()
