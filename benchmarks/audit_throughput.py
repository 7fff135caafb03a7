"""Auditor throughput: leaves/s that `tally audit verify` checks, on one core.

A closed poll's ledger of N vote leaves (default 1,000,000 over 16 lanes, 3 options) is written
to a temp dir with the archiver's own writer (`tally.archive.logs.LogWriter`), published as a
running archiver would: a checkpoint of every lane every 75,000 votes (15,000 votes/s x 5 s),
then a final one, and a signed result certificate. The writer's files are not fsynced here
(durability is not what is measured, and fsyncing ~8,000 files would only slow the setup).

Then, in this process, pinned to one CPU where the OS allows it:

  verify    `tally.audit.verify.verify` over the directory: every signature, every record
            decoded and hashed, every tile rebuilt and compared, every root and consistency
            proof, the meaning checks and the recount against the certificate. The files are
            in the page cache (just written), so this is the auditor's CPU cost, not the disk's.
  baseline  the floor of a leaf: `hashlib.sha256(b"\\x00" + record).digest()` over the same
            records, already in memory.

With --signed, every vote is a version 0x02 record signed by a gateway's admission key (named in
the admin log), so verify also checks one Ed25519 signature per vote, on --jobs threads pinned to
as many CPUs. Both are best of --repeat runs. Figures: leaves/s of each and their ratio (how many times the
bare leaf hash the whole audit costs). The audit must report no findings, and its counts must be
the votes as cast.

Run:  .venv/bin/python benchmarks/audit_throughput.py [--leaves 1000000] [--lanes 16] [--json]
      [--signed [--jobs N]]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.archive.durable import DurableFiles
from tally.archive.logs import LogWriter
from tally.audit.source import DirectorySource
from tally.audit.verify import verify
from tally.ledger import layout, note
from tally.ledger.admin import AdminAction, AdminRecord, PollDefinition, PollOption, encode_admin
from tally.ledger.admission import AdmissionSigner
from tally.ledger.certificate import (
    LogHead,
    ResultCertificate,
    certificate_origin,
    sign_certificate,
)
from tally.ledger.checkpoint import admin_origin, lane_origin
from tally.ledger.leaf import VoteRecord, encode_leaf

PREFIX = "bench.tally/ledger"
POLL = "bench-audit"
OPTIONS = (PollOption("red", "Red"), PollOption("green", "Green"), PollOption("blue", "Blue"))
VOTES_PER_CHECKPOINT = 75_000  # 15,000 votes/s for a 5 s archiver cycle
START_MS = 1_767_225_600_000


class _UnsyncedFiles(DurableFiles):
    """DurableFiles that skips fsync: the same files, written faster, for a throwaway ledger."""

    def write_once(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(data)

    def replace(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(data)
        temporary.replace(path)

    def sync(self) -> None:
        pass


@dataclass(frozen=True)
class Result:
    leaves: int
    lanes: int
    checkpoints_per_lane: int
    build_s: float
    verify_s: float
    verify_cpu_s: float
    verify_leaves_per_s: float
    baseline_s: float
    baseline_leaves_per_s: float
    ratio: float  # baseline leaves/s divided by verify leaves/s
    cpus: str
    signed: bool = False
    jobs: int = 1


def build(
    root: Path,
    leaves: int,
    lanes: int,
    signer: note.Signer,
    gateway: AdmissionSigner | None = None,
) -> list[bytes]:
    """Write the poll's ledger under ``root``; return every vote record, in lane order
    (version 0x02, signed by ``gateway``, when one is given)."""
    files = _UnsyncedFiles(root)
    definition = PollDefinition("Audit bench", lanes, None, OPTIONS)
    admin = LogWriter(files, layout.ADMIN_LOG, admin_origin(PREFIX, POLL), signer)
    admin.append(
        encode_admin(
            AdminRecord(POLL, AdminAction.CREATED, START_MS - 60_000, b"admin", definition)
        )
    )
    if gateway is not None:
        admin.append(
            encode_admin(
                AdminRecord(
                    POLL,
                    AdminAction.ADMISSION_KEY,
                    START_MS - 60_000,
                    b"registry",
                    admission_key=gateway.key,
                )
            )
        )
    admin.publish()
    admin.append(encode_admin(AdminRecord(POLL, AdminAction.OPENED, START_MS - 1, b"admin")))
    admin.publish()
    writers = [
        LogWriter(files, layout.lane_log(lane), lane_origin(PREFIX, POLL, lane), signer)
        for lane in range(lanes)
    ]
    for writer in writers:
        writer.publish()
    records: list[list[bytes]] = [[] for _ in range(lanes)]
    counts: Counter[str] = Counter()
    for voter in range(leaves):
        pseudonym = hashlib.sha256(voter.to_bytes(8, "big")).digest()[:16]
        lane = int.from_bytes(pseudonym[-4:], "big") & (lanes - 1)
        option = OPTIONS[pseudonym[0] % len(OPTIONS)].id
        counts[option] += 1
        vote = VoteRecord(POLL, lane, len(records[lane]) + 1, pseudonym, option, START_MS + voter)
        if gateway is not None:
            admission = gateway.sign(POLL, pseudonym, option, vote.status, START_MS + voter - 3)
            vote = replace(vote, admission=admission)
        record = encode_leaf(vote)
        records[lane].append(record)
        writers[lane].append(record)
        if (voter + 1) % VOTES_PER_CHECKPOINT == 0:
            for writer in writers:
                writer.publish()
    for writer in writers:
        writer.publish()
    admin.append(encode_admin(AdminRecord(POLL, AdminAction.CLOSED, START_MS + leaves, b"")))
    admin.publish()
    origin = certificate_origin(PREFIX, POLL)
    certificate = ResultCertificate(
        origin,
        POLL,
        LogHead(admin.size, admin.root()),
        tuple(LogHead(w.size, w.root()) for w in writers),
        tuple((o.id, counts[o.id]) for o in OPTIONS),
    )
    (root / layout.CERTIFICATE).write_bytes(sign_certificate(certificate, [signer.renamed(origin)]))
    return [record for lane in records for record in lane]


def pin_cpus(count: int = 1) -> str:
    """Run on ``count`` CPUs (the first this process may use) where the OS supports it."""
    with contextlib.suppress(AttributeError, OSError):
        cpus = sorted(os.sched_getaffinity(0))[:count]
        os.sched_setaffinity(0, set(cpus))
        return ",".join(map(str, cpus))
    return "unpinned"


def best(runs: int, work: object) -> float:
    assert callable(work)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def run(leaves: int, lanes: int, repeat: int, signed: bool = False, jobs: int = 1) -> Result:
    cpus = pin_cpus(jobs)
    signer = note.Signer(PREFIX, hashlib.sha256(b"audit bench").digest())
    gateway = (
        AdmissionSigner(
            f"{PREFIX}/admission/bench",
            Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gateway").digest()),
        )
        if signed
        else None
    )
    with tempfile.TemporaryDirectory(prefix="tally-audit-bench-") as temp:
        root = Path(temp) / POLL
        started = time.perf_counter()
        records = build(root, leaves, lanes, signer, gateway)
        build_s = time.perf_counter() - started
        source = DirectorySource(root)
        verify_s = float("inf")
        verify_cpu_s = float("inf")
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            report = verify(source, signer.verifier, jobs=jobs)
            verify_s = min(verify_s, time.perf_counter() - wall)
            verify_cpu_s = min(verify_cpu_s, time.process_time() - cpu)
            if not report.ok or report.votes != leaves:
                for finding in report.findings[:20]:
                    print(finding.line(), file=sys.stderr)
                raise SystemExit(f"the audit did not pass: {len(report.findings)} findings")
        checkpoints = len(list((root / "0" / layout.HISTORY).iterdir()))
        sha256 = hashlib.sha256
        baseline_s = best(repeat, lambda: [sha256(b"\x00" + r).digest() for r in records])
    return Result(
        leaves=leaves,
        lanes=lanes,
        checkpoints_per_lane=checkpoints,
        build_s=round(build_s, 2),
        verify_s=round(verify_s, 3),
        verify_cpu_s=round(verify_cpu_s, 3),
        verify_leaves_per_s=round(leaves / verify_s),
        baseline_s=round(baseline_s, 3),
        baseline_leaves_per_s=round(leaves / baseline_s),
        ratio=round(verify_s / baseline_s, 1),
        cpus=cpus,
        signed=signed,
        jobs=jobs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000, help="vote leaves in the poll")
    parser.add_argument("--lanes", type=int, default=16, help="lanes (a power of two)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument(
        "--signed", action="store_true", help="votes signed by an admission key (version 0x02)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="admission-check threads, pinned to as many CPUs"
    )
    args = parser.parse_args(argv)
    if args.lanes < 1 or args.lanes & (args.lanes - 1) or args.leaves < 1 or args.repeat < 1:
        parser.error("--lanes must be a power of two, --leaves and --repeat at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    result = run(args.leaves, args.lanes, args.repeat, args.signed, args.jobs)
    if args.json:
        print(json.dumps(asdict(result)))
        return 0
    print(
        f"ledger    {result.leaves:,} leaves, {result.lanes} lanes, "
        f"{result.checkpoints_per_lane} checkpoints per lane (built in {result.build_s} s)"
        + (f", votes signed, {result.jobs} admission thread(s)" if result.signed else "")
    )
    print(
        f"verify    {result.verify_leaves_per_s:>12,} leaves/s  ({result.verify_s} s wall, "
        f"{result.verify_cpu_s} s CPU, cpu {result.cpus})"
    )
    print(
        f"baseline  {result.baseline_leaves_per_s:>12,} leaves/s  ({result.baseline_s} s: "
        "sha256(0x00 || record) alone)"
    )
    print(f"ratio     verify costs {result.ratio}x the bare leaf hash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
