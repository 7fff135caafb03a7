"""`tally bench --signing both`: what admission signing (issue 11) costs the vote path, as votes/s
with and without it, each a ratio to the hello-world baseline measured in the same run.

Signing is a per-process setting (TALLY_ADMISSION_SIGNING), so three servers run side by side for
the whole run: the Starlette hello-world (`tally.bench.baseline`), a `tally serve` that signs every
vote it admits, and one with TALLY_ADMISSION_SIGNING=off (each its own temporary data dir and
embedded valkey-server, the archiver off: its recount would land in whichever block runs then;
`benchmarks/archiver_throughput.py` prices the archiver's side). After a warm-up of each, rounds
of three blocks of `--voters` requests follow, the two vote blocks in turn first:

    round 1: baseline, signed, unsigned
    round 2: baseline, unsigned, signed    ...

so load that comes and goes on a shared machine weighs on both sides. Each block reports its
rate, latency and the server's CPU per request (`tally serve` and its valkey-server, or the
baseline process, from /proc): CPU per vote moves far less with other load than votes/s does.
Per round: signed / baseline, unsigned / baseline and signed / unsigned; the summary is the
median over the rounds.

That the two servers really differ in signing is checked on what they answered, not assumed:
both get the same admission key (TALLY_ADMISSION_KEY, made by the bench); every 201 receipt of
the signed server carries an admission signature, a sample of them verifies (as `tally audit
receipt` checks one) under that key, and no receipt of the unsigned server carries one. The
report also holds one receipt of each side as answered and the key's verifier string, so a
reader can check them independently.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from tally.audit.receipt_admission import admission_keys, check_receipt_admission
from tally.audit.receipt_parse import ReceiptError, parse_receipt
from tally.bench.interleaved import HOST, Block, baseline, block_doc, open_poll, order, timed
from tally.bench.loadgen import build_request, run_requests
from tally.bench.polls import final_total, vote_requests
from tally.bench.processes import free_port, running
from tally.client import TallyClient
from tally.config import Settings
from tally.ledger import note
from tally.security.admission_keys import admission_key_name
from tally.security.dev_issuer import DevIssuer

__all__ = ["SIDES", "run_signing_bench"]

WARMUP = 2000
SIDES = ("signed", "unsigned")
# Receipts whose signature is verified per block: enough to catch a wrong key or message, few
# enough that checking them stays a small part of the run.
VERIFIED_PER_BLOCK = 200


@dataclass(frozen=True, slots=True)
class _Server:
    """A running `tally serve` with one open bench poll."""

    side: str
    port: int
    pid: int
    admin: TallyClient
    issuer: DevIssuer
    poll_id: str
    options: list[str]


@contextmanager
def _tally_serve(side: str, lanes: int, admission_key: str) -> Iterator[_Server]:
    with tempfile.TemporaryDirectory(prefix=f"tally-bench-{side}-") as data_dir:
        port = free_port()
        env = dict(os.environ, TALLY_DATA_DIR=data_dir, TALLY_LOG_LEVEL="warning")
        for name in ("TALLY_VALKEY_URL", "TALLY_ADMISSION_KEY_FILE"):
            env.pop(name, None)
        env.update(
            TALLY_EDGE_RATE="0",  # one address sends every vote
            TALLY_ARCHIVER="off",
            TALLY_ADMISSION_SIGNING="on" if side == "signed" else "off",
            TALLY_ADMISSION_KEY=admission_key,  # `tally serve` registers it itself
        )
        argv = [sys.executable, "-m", "tally", "serve", "--host", HOST, "--port", str(port)]
        with running(argv, host=HOST, port=port, env=env, timeout_s=60) as process:
            issuer = DevIssuer.load_or_create(Path(data_dir) / "keys")
            admin = TallyClient(
                f"http://{HOST}:{port}", issuer.mint("bench-admin", roles=["admin"])
            )
            poll_id, options = open_poll(admin, f"bench {side}", lanes)
            yield _Server(side, port, process.pid, admin, issuer, poll_id, options)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    voters, conc = args.voters, args.concurrency
    # The bench makes the gateway's admission key, so it knows the public key to check the
    # receipts with (the ledger key /ledger/keys starts with is published by the archiver, off).
    signer_key, verifier_key = note.generate_key(
        admission_key_name(Settings(admission_key_name="bench"))
    )
    with ExitStack() as stack:
        base_port, base_pid = stack.enter_context(baseline())
        servers = {
            side: stack.enter_context(_tally_serve(side, args.lanes, signer_key)) for side in SIDES
        }
        hello = build_request("GET", "/hello", host=HOST)
        uvloop.run(run_requests(HOST, base_port, [hello] * min(WARMUP, voters), concurrency=conc))
        for server in servers.values():
            warm_poll, warm_options = open_poll(server.admin, "bench warm-up", args.lanes)
            warm = vote_requests(
                server.issuer, warm_poll, warm_options, min(WARMUP, voters), args.alg, "voter-"
            )
            uvloop.run(run_requests(HOST, server.port, warm, concurrency=conc))
        # Tokens are minted before the timed blocks: minting is the bench's work, not the server's.
        pending = {
            side: [
                vote_requests(
                    s.issuer, s.poll_id, s.options, voters, args.alg, "voter-", first=r * voters
                )
                for r in range(args.rounds)
            ]
            for side, s in servers.items()
        }
        blocks = []
        for rnd, sides in enumerate(order(args.rounds, SIDES)):
            for side in sides:
                if side == "baseline":
                    blocks.append(timed(side, rnd, base_port, base_pid, [hello] * voters, conc))
                else:
                    s = servers[side]
                    blocks.append(timed(side, rnd, s.port, s.pid, pending[side][rnd], conc))
        counted = {side: final_total(s.admin, s.poll_id) for side, s in servers.items()}
    return {"blocks": blocks, "admission_key": verifier_key, "counted": counted}


def receipts_check(blocks: list[Block], verifier_key: str) -> dict[str, Any]:
    """What one side's 201 receipts carry: how many an admission signature, how many of a sample
    of those verify under the gateway's admission key, and one receipt as answered."""
    keys = admission_keys([note.Verifier.parse(verifier_key)])
    accepted = signed = checked = valid = 0
    sample: Any = None
    for block in blocks:
        replies = [r for r in block.load.completed() if r.status == 201]
        step = max(1, len(replies) // VERIFIED_PER_BLOCK)
        for n, reply in enumerate(replies):
            accepted += 1
            try:
                receipt = parse_receipt(reply.body)
            except ReceiptError:
                continue
            if sample is None:
                sample = json.loads(reply.body)
            if receipt.admission is None:
                continue
            signed += 1
            record = receipt.record()
            if n % step == 0 and record is not None:
                checked += 1
                verdict = check_receipt_admission(record, receipt.admission, keys)
                valid += verdict.code is None
    return {
        "receipts": accepted,
        "with_admission_signature": signed,
        "signatures_checked": checked,
        "signatures_valid": valid,
        "sample_receipt": sample,
    }


def summary(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    blocks: list[Block] = measured["blocks"]
    docs = [block_doc(b) for b in blocks]

    def of(side: str, rnd: int) -> dict[str, Any]:
        return next(d for d in docs if d["side"] == side and d["round"] == rnd + 1)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 3) if b else 0.0

    rounds = []
    for rnd in range(args.rounds):
        base, signed, unsigned = of("baseline", rnd), of("signed", rnd), of("unsigned", rnd)
        rounds.append(
            {
                "round": rnd + 1,
                "signed_to_baseline": ratio(signed["per_s"], base["per_s"]),
                "unsigned_to_baseline": ratio(unsigned["per_s"], base["per_s"]),
                "signed_to_unsigned": ratio(signed["per_s"], unsigned["per_s"]),
                # Votes one unit of server CPU gives signed, per vote it gives unsigned.
                "cpu_unsigned_to_signed": ratio(
                    unsigned["cpu_us_per_request"], signed["cpu_us_per_request"]
                ),
            }
        )

    def median(values: Callable[[dict[str, Any]], float], rows: list[dict[str, Any]]) -> float:
        return round(statistics.median(values(row) for row in rows), 3)

    def side_docs(side: str) -> list[dict[str, Any]]:
        return [d for d in docs if d["side"] == side]

    checks = {
        side: receipts_check([b for b in blocks if b.side == side], measured["admission_key"])
        for side in SIDES
    }
    accepted = {side: sum(d["statuses"].get(201, 0) for d in side_docs(side)) for side in SIDES}
    warm = min(WARMUP, args.voters)
    result: dict[str, Any] = {
        "voters_per_block": args.voters,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "token_alg": args.alg,
        "lanes": args.lanes,
        "blocks": docs,
        "per_round": rounds,
        "median": {
            side: {
                "per_s": median(lambda d: d["per_s"], side_docs(side)),
                "cpu_us_per_request": median(lambda d: d["cpu_us_per_request"], side_docs(side)),
            }
            for side in ("baseline", *SIDES)
        },
        "signed_to_baseline": median(lambda r: r["signed_to_baseline"], rounds),
        "unsigned_to_baseline": median(lambda r: r["unsigned_to_baseline"], rounds),
        "signed_to_unsigned": median(lambda r: r["signed_to_unsigned"], rounds),
        "cpu_unsigned_to_signed": median(lambda r: r["cpu_unsigned_to_signed"], rounds),
        "receipts": checks,
        "admission_key": measured["admission_key"],
        "all_accepted": all(
            d["statuses"] == {(201 if d["side"] in SIDES else 200): args.voters} for d in docs
        ),
        # The bench poll holds the timed votes only; the warm-up voted in a poll of its own.
        "counted_matches": {s: measured["counted"][s] == accepted[s] for s in SIDES},
        "warmup_per_server": warm,
    }
    signed, unsigned = checks["signed"], checks["unsigned"]
    result["signing_differs"] = (
        signed["with_admission_signature"] == signed["receipts"] > 0
        and signed["signatures_valid"] == signed["signatures_checked"] > 0
        and unsigned["with_admission_signature"] == 0
        and unsigned["receipts"] > 0
    )
    return result


def run_signing_bench(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        print("tally bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = summary(args, measure(args))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    ok = result["all_accepted"] and all(result["counted_matches"].values())
    return 0 if ok and result["signing_differs"] else 1


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['voters_per_block']:,} requests a block, {r['rounds']} rounds, concurrency "
        f"{r['concurrency']}, tokens {r['token_alg']}, lanes {r['lanes']}"
    )
    for b in r["blocks"]:
        unit = "req/s  " if b["side"] == "baseline" else "votes/s"
        print(
            f"round {b['round']} {b['side']:<9} {b['per_s']:>9,.0f} {unit}  "
            f"server CPU {b['cpu_us_per_request']:>6} us/request  p50 {b['p50_ms']} ms  "
            f"p99 {b['p99_ms']} ms  statuses {b['statuses']}"
        )
    for row in r["per_round"]:
        print(
            f"round {row['round']}: signed/baseline {row['signed_to_baseline']:.3f}  "
            f"unsigned/baseline {row['unsigned_to_baseline']:.3f}  "
            f"signed/unsigned {row['signed_to_unsigned']:.3f}  "
            f"CPU per vote unsigned/signed {row['cpu_unsigned_to_signed']:.3f}"
        )
    m = r["median"]
    print(
        f"median       baseline {m['baseline']['per_s']:,.0f} req/s, signed "
        f"{m['signed']['per_s']:,.0f} votes/s ({m['signed']['cpu_us_per_request']} us CPU), "
        f"unsigned {m['unsigned']['per_s']:,.0f} votes/s ({m['unsigned']['cpu_us_per_request']} us CPU)"
    )
    print(f"ratio        signed/baseline   {r['signed_to_baseline']:.3f}")
    print(f"             unsigned/baseline {r['unsigned_to_baseline']:.3f}")
    print(f"             signed/unsigned   {r['signed_to_unsigned']:.3f}  (votes/s)")
    print(f"             CPU per vote unsigned/signed {r['cpu_unsigned_to_signed']:.3f}")
    for side in SIDES:
        c = r["receipts"][side]
        print(
            f"{side:<9} receipts {c['receipts']:,}: {c['with_admission_signature']:,} signed, "
            f"{c['signatures_valid']}/{c['signatures_checked']} sampled signatures valid"
        )
    print(
        f"every request answered as expected: {r['all_accepted']}; counts match: "
        f"{r['counted_matches']}; signing differs as configured: {r['signing_differs']}"
    )
