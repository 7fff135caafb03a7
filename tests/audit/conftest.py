"""Fixture ledgers for the auditor's tests, written the way the archiver writes them.

A closed poll of 4 lanes, ~300 votes per lane, is appended with the server's own writer
(:class:`tally.archive.logs.LogWriter` on :class:`DurableFiles`) and published at the points a
running archiver would: a size-0 checkpoint of every lane when the poll opens, one of every lane
that grew every 97 votes, one of lane 0 at exactly 256 leaves (a full tile, no partial), and a
final one; then the signed result certificate. Tampered ledgers are made by editing files in a
copy, or, where only the meaning or the history can tell, by rewriting a lane with the same
writer and re-signing it with the ledger's own key.

`make_review_spec` is the same poll with votes held for review: every seventh voter's vote is
held, and reviewers release or void the held votes in batches, each decision a review record in
its lane and a reviewed record in the admin log, the last batch after the poll closed.

Only tests use the archive modules: the auditor under test imports none of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tally.archive.durable import DurableFiles
from tally.archive.logs import LogWriter
from tally.ledger import layout, note
from tally.ledger.admin import (
    AdminAction,
    AdminRecord,
    PollDefinition,
    PollOption,
    ReviewedVote,
    encode_admin,
)
from tally.ledger.certificate import (
    LogHead,
    ResultCertificate,
    ReviewTotals,
    certificate_origin,
    sign_certificate,
)
from tally.ledger.checkpoint import admin_origin, lane_origin
from tally.ledger.leaf import VoteRecord, VoteStatus, encode_leaf
from tally.ledger.review import (
    Decision,
    LaneReview,
    ReviewRecord,
    decode_lane_record,
    encode_review,
)
from tally.ledger.tiles import TILE_WIDTH

PREFIX = "tally.test/ledger"
POLL = "final-2026"
LANES = 4
OPTIONS = (PollOption("red", "Red"), PollOption("green", "Green"), PollOption("blue", "Blue"))
SIGNER = note.Signer(PREFIX, bytes(range(32)))
KEY = str(SIGNER.verifier)
CREATED_MS = 1_767_225_000_000  # 2025-12-31T23:50:00Z
OPENED_MS = CREATED_MS + 60_000
FIRST_VOTE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
VOTE_STEP_MS = 250
DEADLINE_MS = FIRST_VOTE_MS + 3_600_000
VOTERS = 1200
PUBLISH_EVERY = 97  # votes between two archiver cycles


def pseudonym_of(voter: int) -> bytes:
    return hashlib.sha256(f"voter-{voter}".encode()).digest()[:16]


def lane_of(pseudonym: bytes, lanes: int = LANES) -> int:
    return int.from_bytes(pseudonym[-4:], "big") & (lanes - 1)


@dataclass
class LedgerSpec:
    """Everything a poll's ledger is made from: the records, and when each log was published."""

    poll_id: str
    definition: PollDefinition
    admin: list[bytes]
    admin_publish: list[int]  # admin log sizes at which a checkpoint was signed
    votes: list[list[bytes]]  # each lane's records, in leaf order
    publish: list[list[int]]  # each lane's checkpoint sizes, increasing
    certify: bool = True
    counts: list[tuple[str, int]] | None = None  # certified counts; None: the recount
    review: ReviewTotals | None = None  # certified review totals; None: the recount's

    def _reviewed(self) -> tuple[Counter[str], ReviewTotals]:
        """Accepted + released votes per option, and the review totals, of the records."""
        counts: Counter[str] = Counter()
        totals = [0, 0, 0]
        for lane in self.votes:
            review = LaneReview()
            for data in lane:
                record = decode_lane_record(data)
                if isinstance(record, ReviewRecord):
                    review.decide(record)
                elif record.status is VoteStatus.ACCEPTED:
                    counts[record.option_id] += 1
                else:
                    review.vote(record)
            counts.update(review.released_counts)
            for n, value in enumerate((review.held, review.released, review.voided)):
                totals[n] += value
        return counts, ReviewTotals(*totals)

    def recount(self) -> list[tuple[str, int]]:
        counts, _ = self._reviewed()
        return [(o.id, counts[o.id]) for o in self.definition.options]

    def review_totals(self) -> ReviewTotals:
        return self._reviewed()[1]

    def with_lane(self, lane: int, records: list[bytes]) -> LedgerSpec:
        """The same poll with lane ``lane`` holding ``records``, published at the same points
        (cut to its new size)."""
        votes = [list(v) for v in self.votes]
        votes[lane] = records
        publish = [list(p) for p in self.publish]
        publish[lane] = sorted({s for s in publish[lane] if s < len(records)} | {len(records)})
        return replace(self, votes=votes, publish=publish)


def make_spec() -> LedgerSpec:
    """A realistic closed poll: 1200 voters over 4 lanes, published as an archiver would."""
    definition = PollDefinition("Final", LANES, DEADLINE_MS, OPTIONS)
    admin = [
        encode_admin(AdminRecord(POLL, AdminAction.CREATED, CREATED_MS, b"admin", definition)),
        encode_admin(AdminRecord(POLL, AdminAction.OPENED, OPENED_MS, b"admin")),
    ]
    votes: list[list[bytes]] = [[] for _ in range(LANES)]
    publish: list[set[int]] = [{0} for _ in range(LANES)]  # every lane published when opened
    for voter in range(VOTERS):
        pseudonym = pseudonym_of(voter)
        lane = lane_of(pseudonym)
        option = OPTIONS[pseudonym[0] % len(OPTIONS)].id
        record = VoteRecord(
            POLL,
            lane,
            len(votes[lane]) + 1,
            pseudonym,
            option,
            FIRST_VOTE_MS + voter * VOTE_STEP_MS,
        )
        votes[lane].append(encode_leaf(record))
        if lane == 0 and len(votes[0]) == TILE_WIDTH:
            publish[0].add(TILE_WIDTH)
        if (voter + 1) % PUBLISH_EVERY == 0:
            for n in range(LANES):
                publish[n].add(len(votes[n]))
    closed_ms = FIRST_VOTE_MS + VOTERS * VOTE_STEP_MS + 1000
    admin.append(encode_admin(AdminRecord(POLL, AdminAction.CLOSED, closed_ms, b"")))
    for n in range(LANES):
        publish[n].add(len(votes[n]))
    return LedgerSpec(POLL, definition, admin, [1, 2, 3], votes, [sorted(p) for p in publish])


HELD_EVERY = 7  # voters whose vote is held: voter % HELD_EVERY == 3
DECIDE_EVERY = 150  # voters between two batches of reviewers' decisions
REVIEWER = b"rita"


def make_review_spec(*, undecided: int = 0) -> LedgerSpec:
    """The poll of `make_spec`, with every seventh vote held and reviewers deciding them in
    batches (held seq even: released, odd: voided), the last batch after the close; the last
    ``undecided`` held votes are never decided."""
    definition = PollDefinition("Final", LANES, DEADLINE_MS, OPTIONS)
    admin = [
        encode_admin(AdminRecord(POLL, AdminAction.CREATED, CREATED_MS, b"admin", definition)),
        encode_admin(AdminRecord(POLL, AdminAction.OPENED, OPENED_MS, b"admin")),
    ]
    votes: list[list[bytes]] = [[] for _ in range(LANES)]
    pending: list[list[int]] = [[] for _ in range(LANES)]  # held seqs waiting for a decision
    never = VOTERS - undecided * HELD_EVERY  # held votes of voters from here on stay held

    def decide_all(at_ms: int) -> None:
        for lane in range(LANES):
            for held_seq in pending[lane]:
                decision = Decision.RELEASED if held_seq % 2 == 0 else Decision.VOIDED
                seq = len(votes[lane]) + 1
                votes[lane].append(
                    encode_review(ReviewRecord(POLL, lane, seq, held_seq, decision, at_ms))
                )
                reviewed = ReviewedVote(lane, held_seq, decision)
                record = AdminRecord(POLL, AdminAction.REVIEWED, at_ms, REVIEWER, None, reviewed)
                admin.append(encode_admin(record))
            pending[lane] = []

    for voter in range(VOTERS):
        pseudonym = pseudonym_of(voter)
        lane = lane_of(pseudonym)
        held = voter % HELD_EVERY == 3
        record = VoteRecord(
            POLL,
            lane,
            len(votes[lane]) + 1,
            pseudonym,
            OPTIONS[pseudonym[0] % len(OPTIONS)].id,
            FIRST_VOTE_MS + voter * VOTE_STEP_MS,
            VoteStatus.HELD if held else VoteStatus.ACCEPTED,
        )
        votes[lane].append(encode_leaf(record))
        if held and voter < never:
            pending[lane].append(record.seq)
        if (voter + 1) % DECIDE_EVERY == 0:
            decide_all(FIRST_VOTE_MS + voter * VOTE_STEP_MS + 1)
    closed_ms = FIRST_VOTE_MS + VOTERS * VOTE_STEP_MS + 1000
    admin.append(encode_admin(AdminRecord(POLL, AdminAction.CLOSED, closed_ms, b"")))
    decide_all(closed_ms + 60_000)  # reviewers decide after the close too
    publish = [sorted({0, len(votes[n]) // 2, len(votes[n])}) for n in range(LANES)]
    return LedgerSpec(POLL, definition, admin, [1, 2, len(admin) // 2, len(admin)], votes, publish)


def write_ledger(root: Path, spec: LedgerSpec, signer: note.Signer = SIGNER) -> None:
    """Write the poll's ledger under ``root`` with the archiver's writer, then certify it."""
    files = DurableFiles(root)
    prefix = signer.name
    admin = LogWriter(files, layout.ADMIN_LOG, admin_origin(prefix, spec.poll_id), signer)
    _append_and_publish(admin, spec.admin, spec.admin_publish)
    writers = []
    for lane, records in enumerate(spec.votes):
        writer = LogWriter(
            files, layout.lane_log(lane), lane_origin(prefix, spec.poll_id, lane), signer
        )
        _append_and_publish(writer, records, spec.publish[lane])
        writers.append(writer)
    if spec.certify:
        sign_certificate_file(
            root,
            spec.poll_id,
            LogHead(admin.size, admin.root()),
            [LogHead(w.size, w.root()) for w in writers],
            spec.counts if spec.counts is not None else spec.recount(),
            signer,
            spec.review if spec.review is not None else spec.review_totals(),
        )


def _append_and_publish(writer: LogWriter, records: Sequence[bytes], sizes: Sequence[int]) -> None:
    todo = sorted(sizes)
    if todo and todo[0] == 0:
        writer.publish()
        todo.pop(0)
    for record in records:
        writer.append(record)
        if todo and writer.appended == todo[0]:
            writer.publish()
            todo.pop(0)
    assert not todo, f"publish points {todo} beyond the {len(records)} records"


NO_REVIEWS = ReviewTotals(0, 0, 0)


def sign_certificate_file(
    root: Path,
    poll_id: str,
    admin: LogHead,
    lanes: Sequence[LogHead],
    counts: Sequence[tuple[str, int]],
    signer: note.Signer = SIGNER,
    review: ReviewTotals | None = NO_REVIEWS,
) -> None:
    """(Re-)sign the result certificate, as the archiver does when a poll closes (``review``
    None: a v1 certificate, as written before votes could be held)."""
    origin = certificate_origin(signer.name, poll_id)
    certificate = ResultCertificate(origin, poll_id, admin, tuple(lanes), tuple(counts), review)
    signed = sign_certificate(certificate, [signer.renamed(origin)])
    (root / layout.CERTIFICATE).write_bytes(signed)


@pytest.fixture(scope="session")
def spec() -> LedgerSpec:
    return make_spec()


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory, spec: LedgerSpec) -> Path:
    """The untampered ledger, written once; tests work on copies (see `ledger`)."""
    root = tmp_path_factory.mktemp("pristine") / POLL
    write_ledger(root, spec)
    return root


@pytest.fixture
def ledger(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the untampered ledger, free to tamper with."""
    root = tmp_path / "ledger" / POLL
    shutil.copytree(pristine, root)
    return root


def bundle_entry_offset(bundle: bytes, entry: int) -> int:
    """Where entry ``entry``'s record starts in an encoded bundle."""
    pos = 0
    for _ in range(entry):
        pos += 2 + int.from_bytes(bundle[pos : pos + 2], "big")
    return pos + 2


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the auditor as a user would: `python -m tally.audit ...`."""
    return subprocess.run(
        [sys.executable, "-m", "tally.audit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def directory_history(root: Path) -> dict[str, list[bytes]]:
    """Every log's history checkpoints in a poll directory, as a server serves them."""
    logs: dict[str, list[bytes]] = {}
    names = sorted(
        (p.name for p in root.iterdir() if p.is_dir()),
        key=lambda n: -1 if n == layout.ADMIN_LOG else int(n),
    )
    for name in names:
        directory = root / layout.history_dir(name)
        sizes = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        logs[name] = [(directory / str(size)).read_bytes() for size in sizes]
    return logs


class _LedgerHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/ledger/<poll>/...`` from a poll directory, and its history as JSON."""

    root: Path
    poll_id: str

    def do_GET(self) -> None:
        base = f"/ledger/{self.poll_id}/"
        if not self.path.startswith(base):
            self._reply(404, b"not found")
            return
        relative = self.path[len(base) :]
        if relative == layout.HISTORY:
            body = layout.encode_history(self.poll_id, directory_history(self.root))
            self._reply(200, body)
            return
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()) or not target.is_file():
            self._reply(404, b"not found")
            return
        self._reply(200, target.read_bytes())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


class _LedgerServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The auditor keeps several requests in flight; the default backlog of 5 would drop
    # connections and stall each for a SYN retransmission.
    request_queue_size = 128


@contextlib.contextmanager
def serve_ledger(root: Path, poll_id: str = POLL) -> Iterator[str]:
    """Serve a poll directory over HTTP on 127.0.0.1 (a free port); yields the poll's root URL."""
    handler = type("Handler", (_LedgerHandler,), {"root": root, "poll_id": poll_id})
    server = _LedgerServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}/ledger/{poll_id}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
