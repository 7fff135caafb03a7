"""The small interfaces the service and the roles need from storage, with the guarantees they
rely on. They speak the domain's values: no Valkey field names, stream ids or file paths.

Only the composition root (tally.wiring) knows the concrete classes (today: Valkey, in
tally.store; the ledger directory, in tally.archive).

    StoreClient      RESP commands, pipelined, durable writes (store.resp.Valkey)
    PollStore        poll definitions and lifecycle           (store.polls.ValkeyPolls)
    BallotBox        casting a vote, once, durably            (store.votes.ValkeyBallotBox)
    ReviewStore      held votes and reviewers' decisions      (store.review.ValkeyReviews)
    HeldEvidenceStore held votes' sealed network evidence     (store.evidence.ValkeyHeldEvidence)
    SpentChallenges  proof-of-work answers, each spent once   (store.challenges.ValkeySpentChallenges)
    JoinCodeStore    each poll's short join code, both ways   (store.join_codes.ValkeyJoinCodes)
    RateLimiter      GCRA limits shared by every gateway      (store.ratelimits.ValkeyRateLimits)
    SnapshotStore    latest snapshot, live channel, lease     (store.snapshots.ValkeySnapshots)
    LedgerQueue      votes and admin actions not yet archived (store.ledger_queue.ValkeyLedgerQueue)
    IntegrityStore   live counters as checked, integrity alarms (store.integrity.ValkeyIntegrity)
    LedgerReader     the published ledger, read-only, async   (archive.logs.LedgerDirectory)
    LedgerStore      where the archiver publishes the ledger  (archive.logs.LedgerFiles)
    PollFiles        one poll's ledger files, write-once      (archive.durable.DurableFiles)
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tally.domain.defences import LimitScope
from tally.domain.integrity import IntegrityAlarm, LaneCounters
from tally.domain.polls import Poll, PollState
from tally.domain.results import LaneTally
from tally.domain.review import Decision, EntryRef, HeldVote
from tally.domain.snapshots import Snapshot
from tally.domain.votes import AdmissionSignature, NotOpen, UnknownOption

Arg = bytes | str | int


class ReplyError(Exception):
    """The store answered a command with an error reply (StoreClient's error reply type: raw
    replies hold it as a value, `execute` raises it)."""


class StoreClient(Protocol):
    """RESP commands to the store, pipelined.

    - Replies come back in the order commands were submitted; commands submitted in the same
      event-loop tick leave in one write.
    - A lost connection fails every command still waiting with StoreUnavailable: the caller
      cannot know whether a write landed, which is why every Tally write is idempotent. The next
      command reconnects.
    - `durable` resolves only once the write is durable by the client's policy (the reply of a
      server that fsyncs before replying, or a WAITAOF on the same connection confirming the
      batch the write left in); if that cannot be confirmed it raises StoreUnavailable.
    """

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Connect now (or join a connect under way); StoreUnavailable on failure."""

    async def close(self) -> None: ...

    async def execute(self, *args: Arg) -> Any:
        """One command's reply; an error reply raises ReplyError."""

    async def call(self, *args: Arg) -> Any:
        """One command's reply; an error reply raises StoreUnavailable."""

    def submit(self, args: Sequence[Arg]) -> Awaitable[Any]:
        """Queue a command on the live connection; the raw reply (an error reply as a value)."""

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Commands back to back; their raw replies (error replies as values)."""

    def durable(self, args: Sequence[Arg]) -> Awaitable[Any]:
        """A write's raw reply, once the write is durable (see the class docstring)."""


class PollStore(Protocol):
    """Poll definitions and their lifecycle state.

    A definition never changes once created. `move` changes every lane and then the poll record;
    each lane moves atomically with respect to votes on it, so a vote racing with a close is
    either counted or refused, never half-applied. Moves are idempotent, so a move interrupted
    part-way is finished by repeating it.
    """

    async def create(self, poll: Poll, actor: str = "") -> None:
        """Store a new poll and its lanes (state draft), and record 'created' by `actor` in its
        admin log. Raises InvalidInput('id') if it exists."""

    async def get(self, poll_id: str) -> Poll | None: ...

    async def recent(self, limit: int, offset: int = 0) -> list[Poll]:
        """Newest first: `limit` polls after skipping the `offset` newest."""

    async def move(self, poll: Poll, target: PollState, actor: str = "") -> PollState:
        """Move every lane, then the poll, to `target` from any earlier state, recording the
        poll's move by `actor` ("" for the system) in its admin log atomically with it; returns
        the state the poll record had before (already `target` if the move was a repeat)."""

    async def lane_states(self, poll: Poll) -> list[PollState | None]:
        """Each lane's state in lane order (None for a lane that does not exist)."""

    async def tallies(self, poll: Poll) -> tuple[list[LaneTally], int]:
        """Each lane's counters, and when the poll's state last changed (ms)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """The vote is stored: entry `seq` of lane `lane`'s ledger queue, accepted at `accepted_ms`
    by the store's clock."""

    lane: int
    seq: int
    accepted_ms: int


@dataclass(frozen=True, slots=True)
class RecordedHeld:
    """The vote is stored as Recorded says, held for review: not counted. (A type of its own,
    not a flag on Recorded, so the accepted path builds and checks nothing more.)"""

    lane: int
    seq: int
    accepted_ms: int


@dataclass(frozen=True, slots=True)
class AlreadyRecorded:
    """The pseudonym voted before: its entry `seq` of lane `lane`. `option` and `accepted_ms`
    are None once the entry was archived and trimmed from the queue (the published ledger holds
    it then). `status`: accepted, or held / released / voided for a vote cast held. `admission`:
    the gateway signature stored with it (None once trimmed, or for an unsigned vote)."""

    lane: int
    seq: int
    option: str | None
    accepted_ms: int | None
    status: str = "accepted"
    admission: AdmissionSignature | None = None


CastResult = Recorded | RecordedHeld | AlreadyRecorded | NotOpen | UnknownOption


@dataclass(frozen=True, slots=True)
class HoldAs:
    """Cast the vote held for review: why (the admission check's reason, a code kept in clear)
    and the request's network evidence (client address after trusted-proxy resolution, user
    agent), kept for reviewers beside the lane only sealed (EvidenceKeeper), never in the
    ledger."""

    reason: str
    address: str = ""
    user_agent: str = ""


class EvidenceKeeper(Protocol):
    """Keeps a held vote's network evidence, sealed (tally.security.evidence), in its lane's held
    index once the vote is cast held as entry `seq` of `lane` (the seal binds that place, which
    only the cast decides). Never raises: evidence that cannot be kept is left out (logged), the
    vote stands."""

    async def keep(self, poll: Poll, lane: int, seq: int, hold: HoldAs) -> None: ...


class HeldEvidenceStore(Protocol):
    """The evidence fields of held votes (third field of the held index, tally.store.evidence).

    `rewrite` is a compare-and-set per vote: a field changes only while the vote is still held
    and its field is exactly `expected`, so a rewrite never races a decision or another rewrite.
    """

    async def rewrite(self, poll: Poll, changes: Sequence[tuple[EntryRef, str, str]]) -> int:
        """Set each (vote, expected field, new field); returns how many changed."""

    async def closed_at_ms(self, poll: Poll) -> int | None:
        """When the poll closed, or will at its deadline (the earlier of the deadline and the
        move to closed); None for a draft, or an open poll without a deadline."""


class BallotBox(Protocol):
    """Casting votes.

    `cast` is one atomic step on the voter's lane: the vote is recorded in the lane's ledger
    queue, voter index and counter together or not at all, at most once per pseudonym and poll.
    It returns only once the vote is durable (fsynced, and on replicas if so configured); if that
    cannot be confirmed it raises StoreUnavailable, and a retry is safe: it returns the same entry
    as AlreadyRecorded. An unknown poll raises PollNotFound.

    With `hold`, the vote is recorded the same way (ledger entry with status held, voter index)
    but not counted: it waits in the lane's held votes (`ReviewStore`) and is answered as
    RecordedHeld.

    `admission`, the admitting gateway's signature, is stored with the vote's ledger entry
    (None: an unsigned vote, only with TALLY_ADMISSION_SIGNING=off); a repeat gets it back.
    """

    async def cast(
        self,
        poll: Poll,
        pseudonym: bytes,
        option: str,
        hold: HoldAs | None = None,
        admission: AdmissionSignature | None = None,
    ) -> CastResult: ...

    async def has_voted(self, poll: Poll, pseudonym: bytes) -> bool:
        """Whether the voter-index holds this pseudonym's vote (accepted or held): one read, for
        result visibility (domain.visibility), never on the vote path."""


class ReviewStore(Protocol):
    """Held votes and reviewers' decisions on them (domain.review).

    A decision on a held vote is two atomic steps, always in this order, each idempotent:
    `record` puts it in the poll's admin log (at most one decision per vote: a later one returns
    the decision recorded first and appends nothing), then `apply` changes the vote's lane (only
    while the vote is still held: out of the held votes, counted on release, the decision
    appended to the lane's ledger). A crash between the two is finished by recording and applying
    the same decision again (`recorded` lists what the admin log holds). Both work on open and
    closed polls alike.
    """

    async def held(self, poll: Poll) -> list[HeldVote]:
        """Every vote of the poll still held, in lane and entry order."""

    async def still_held(self, poll: Poll, refs: Sequence[EntryRef]) -> list[bool]:
        """For each entry: is it a vote still held (in its lane's held votes)?"""

    async def decided(self, poll: Poll, refs: Sequence[EntryRef]) -> list[Decision | None]:
        """For each entry: the decision its lane applied, None if none was (held or not)."""

    async def record(
        self, poll: Poll, actor: str, decision: Decision, refs: Sequence[EntryRef]
    ) -> list[Decision | None]:
        """Append the decision of each entry by `actor` to the admin log; for each entry None if
        it was appended now, else the decision recorded before (nothing appended).
        PollNotFound for an unknown poll."""

    async def apply(
        self, poll: Poll, decision: Decision, refs: Sequence[EntryRef]
    ) -> list[tuple[bool, Decision | None]]:
        """Apply the decision to each entry's lane: (True, None) if applied now, else (False,
        the decision applied before, or None if the entry is not a held vote)."""

    async def recorded(self, poll: Poll) -> dict[EntryRef, Decision]:
        """Every decision the poll's admin log holds."""


class SpentChallenges(Protocol):
    """Proof-of-work challenges already spent on a vote (tally.security.pow).

    `spend` is one atomic step: of any number of concurrent calls with one `spend_id`, on any
    gateways sharing the store, exactly one returns True until `ttl_ms` (the challenge's time
    left before it expires) has passed; after that the challenge is refused as expired anyway.
    """

    async def spend(self, spend_id: str, ttl_ms: int) -> bool:
        """Mark the challenge spent; False if it already was. StoreUnavailable if unsure."""


class JoinCodeStore(Protocol):
    """Join codes (domain.join_codes) to polls and back, shared by every gateway.

    A code names one poll for ever: `claim` is one atomic step, so of any number of concurrent
    claims of a code exactly one wins. A poll's own code is set once (`bind`, first one wins);
    a code claimed but never bound (a lost race, a crash between the two) still leads to its
    poll, so nothing needs cleaning up.
    """

    async def claim(self, code: str, poll_id: str) -> bool:
        """Point `code` at `poll_id`; False if the code was taken already (by any poll)."""

    async def bind(self, poll_id: str, code: str) -> str:
        """Make `code` the poll's code unless it has one; the poll's code after the call."""

    async def code_of(self, poll_ids: Sequence[str]) -> list[str | None]:
        """Each poll's code (None where it has none yet), in order."""

    async def poll_of(self, code: str) -> str | None:
        """The poll a (normalised) code points at, or None."""


@dataclass(frozen=True, slots=True)
class Limited:
    """Refused by the limit on `scope`: that bucket admits again in `retry_after_ms`."""

    scope: LimitScope
    retry_after_ms: int


class RateLimiter(Protocol):
    """The distributed GCRA rate limits (ARCHITECTURE.md section 6), shared by every gateway on
    the store: a request counts the same whichever gateway it reaches.

    `take` counts one vote request against each limit of `poll.defences.limits` that is on and
    applies: the address and subnet limits only with their ids, the voter's only with its id
    (ids are keyed hashes the caller made; "" for none), the poll's always.
    - The address and subnet buckets are one atomic step, the voter's another, the poll's (one
      lane's share of it) a third; in each step, if one bucket refuses, no bucket changes.
    - The steps leave together (one round trip), so a request one step refuses still counts in
      the steps that admitted it.
    - Time is the store's clock, the same for every gateway; idle buckets expire.
    Returns None (admitted), or the refusal with the longest wait. StoreUnavailable if the store
    does not answer: the caller fails closed.
    """

    async def take(self, poll: Poll, voter: str, address: str, subnet: str) -> Limited | None: ...


@dataclass(frozen=True, slots=True)
class Published:
    """The snapshot is stored as the poll's latest and was sent to its live channel."""

    seq: int


@dataclass(frozen=True, slots=True)
class NotLeader:
    """Refused: the publisher does not hold the poll's lease (it expired, or another took it)."""


@dataclass(frozen=True, slots=True)
class Stale:
    """Refused: the store already holds `stored_seq` >= the snapshot's seq; continue after it."""

    stored_seq: int


PublishOutcome = Published | NotLeader | Stale


class SnapshotStore(Protocol):
    """Each poll's latest snapshot, its live channel, and the lease that lets one aggregator
    publish for the poll.

    - Lease: `acquire` takes or renews it atomically; at most one owner holds a poll's lease at
      any moment, until `ttl_ms` passes without a renewal or the owner releases it.
    - `publish` is one atomic step: only the lease holder, and only with a seq above the stored
      one, stores the snapshot as the latest and sends its document to the poll's live channel.
      So the stored seq never goes back, and the documents on a channel carry strictly
      increasing seqs, in the order they were published, even across a failover.
    - Delivery on the channel is at most once (pub/sub): a subscriber that was disconnected has
      missed snapshots and must read `latest`, which returns the last one stored.
    """

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the poll's lease for `ttl_ms`; False while another owner holds it."""

    async def release(self, poll_id: str, owner: str) -> bool:
        """Give the lease up, if `owner` holds it (so a successor need not wait for the TTL)."""

    async def holder(self, poll_id: str) -> str | None:
        """Who holds the poll's lease now (None: no live aggregator leads the poll)."""

    async def latest(self, poll_id: str) -> Snapshot | None:
        """The last snapshot stored for the poll, in one read; None if none was published."""

    async def publish(self, poll_id: str, owner: str, snapshot: Snapshot) -> PublishOutcome:
        """Store and broadcast `snapshot` if `owner` holds the lease and its seq moves forward."""


@dataclass(frozen=True, slots=True)
class QueuedVote:
    """A vote waiting in its lane's queue: entry `seq` (its leaf index + 1); `held` if an
    admission check held it for review (not counted unless a reviewer releases it); `admission`
    the admitting gateway's signature (None: an unsigned, version 0x01 vote)."""

    seq: int
    pseudonym: bytes
    option: str
    accepted_ms: int
    held: bool = False
    admission: AdmissionSignature | None = None


@dataclass(frozen=True, slots=True)
class QueuedDecision:
    """A reviewer's decision waiting in a lane's queue, at entry `seq`: held vote `held_seq` of
    the same lane released (counted from then on) or voided, at `at_ms`."""

    seq: int
    held_seq: int
    released: bool
    at_ms: int


@dataclass(frozen=True, slots=True)
class QueuedAdminAction:
    """A poll's move waiting in its admin queue: `state` is what the poll entered (DRAFT for its
    creation), `actor` who acted ("" for the system), `at_ms` when."""

    seq: int
    state: PollState
    at_ms: int
    actor: bytes


@dataclass(frozen=True, slots=True)
class QueuedReview:
    """A reviewer's decision waiting in the poll's admin queue (written before the lane's
    QueuedDecision): `actor` released or voided held vote `held_seq` of lane `lane`."""

    seq: int
    at_ms: int
    actor: bytes
    lane: int
    held_seq: int
    released: bool


@dataclass(frozen=True, slots=True)
class QueuedAdmissionKey:
    """A gateway admission key waiting in the poll's admin queue: copied from the registry when
    the poll was created, or registered / retired while it was open. `actor` who registered it;
    the key `name` and Ed25519 `public_key`, valid for votes admitted from `not_before_ms` up to
    `not_after_ms` (0: no end)."""

    seq: int
    at_ms: int
    actor: bytes
    name: str
    public_key: bytes
    not_before_ms: int
    not_after_ms: int


QueuedEntry = QueuedVote | QueuedDecision | QueuedAdminAction | QueuedReview | QueuedAdmissionKey


class MalformedEntry(ValueError):
    """A queue entry that is not a well-formed vote or admin action: it must not reach the
    ledger half-read (the archiver stops the poll's archive instead)."""


class LedgerQueue(Protocol):
    """The store's side of the ledger: each log's entries not yet archived, in order, and the
    lease that lets one archiver write a poll's logs.

    `log` is None for the poll's admin log (QueuedAdminAction and QueuedReview entries), else a
    lane (QueuedVote and QueuedDecision entries). Entries carry seqs 1, 2, 3, ... with no gap; `trim` drops those below `seq` and is
    called only once they are durable in the archive. An entry that cannot be decoded raises
    MalformedEntry.
    """

    async def read(
        self, poll_id: str, logs: list[int | None], first_seqs: list[int], count: int
    ) -> list[list[QueuedEntry]]:
        """Up to `count` entries of each log, from the given seq on, in one round trip."""

    async def trim(self, poll_id: str, logs: list[int | None], below_seqs: list[int]) -> None:
        """Drop each log's entries whose seq is below the given one."""

    async def acquire(self, poll_id: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew the poll's archiver lease; False while another archiver holds it."""

    async def release(self, poll_id: str, owner: str) -> None: ...


class IntegrityStore(Protocol):
    """What the archiver's integrity check reads and raises (domain.integrity).

    `lane_counters` reads each lane's counters with the seq of the lane's last ledger entry in
    one atomic step per lane (a vote or a release changes both at once), so they can be compared
    with the ledger recounted up to that seq however fast votes arrive. `raise_alarm` keeps the
    first alarm of each kind and log (a repeat changes nothing); `alarms` is what gateways show.
    """

    async def lane_counters(self, poll: Poll) -> list[LaneCounters]:
        """Each lane's counters, in lane order."""

    async def raise_alarm(self, poll_id: str, alarm: IntegrityAlarm) -> bool:
        """Store the alarm; True if none of its kind and log was stored before."""

    async def alarms(self, poll_id: str) -> list[IntegrityAlarm]: ...


class TurnoutStore(Protocol):
    """Ballots per minute of each poll (domain.turnout), as its archiver counts them from the
    ledger. `save` sets each given minute's whole count (idempotent: a takeover saves them all
    again); `minutes` is what gateways export."""

    async def save(self, poll_id: str, minutes: Mapping[int, int]) -> None: ...

    async def minutes(self, poll_id: str) -> dict[int, int]:
        """Minute start (epoch ms) -> ballots, for every minute saved."""


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    """A log entry, its index and inclusion proof, and the signed checkpoint it is proven against
    (with that checkpoint's tree size and root)."""

    entry: bytes
    index: int
    proof: list[bytes]
    checkpoint: bytes
    tree_size: int
    root: bytes


class LedgerReader(Protocol):
    """The published ledger, read-only: what gateways serve under /ledger and what the service
    reads an archived vote back from. Never blocks the event loop.

    Files appear only once durable and the latest checkpoint covers only durable tiles, so a
    reader never sees a checkpoint it cannot prove against. `relative` paths are ones the caller
    validated (tally.ledger.layout). `log` is "admin" or a lane number."""

    async def keys(self) -> bytes | None:
        """The ledger's verifier key(s), one per line."""

    async def read(self, poll_id: str, relative: str) -> bytes | None: ...

    async def history(self, poll_id: str) -> dict[str, list[bytes]] | None:
        """Every published checkpoint of every log of the poll, by increasing size."""

    async def entry(self, poll_id: str, log: str, index: int) -> ProvenEntry | None:
        """Entry `index` with its inclusion proof against the log's latest checkpoint; None
        while no published checkpoint covers it."""

    async def read_entry(self, poll_id: str, log: str, index: int) -> bytes | None:
        """Entry `index`, if a published checkpoint covers it."""


class PollFiles(Protocol):
    """One poll's ledger files, as the archiver writes them (blocking: its worker thread).

    `write_once` never changes a file: the same bytes again are a no-op, other bytes raise
    LedgerConflict. `replace` is atomic (readers see the old or the new file). Nothing counts as
    written until `sync` returned."""

    def read(self, relative: str) -> bytes | None: ...

    def names(self, relative_dir: str) -> list[str]:
        """The entries of a directory (none if it does not exist)."""

    def write_once(self, relative: str, data: bytes) -> None: ...

    def replace(self, relative: str, data: bytes) -> None: ...

    def sync(self) -> None: ...


class LedgerStore(Protocol):
    """Where the archiver publishes the ledger (a local directory now; an object store later),
    so that gateways need only read it (LedgerReader). Blocking: the archiver's worker thread."""

    def poll_files(self, poll_id: str) -> PollFiles: ...

    def read(self, poll_id: str, relative: str) -> bytes | None: ...

    def publish_key(self, verifier_key: str) -> None:
        """Publish the verifier key served at /ledger/keys."""
