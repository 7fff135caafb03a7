"""A voter's receipt: built from what the store recorded, or read back from the published ledger
once the vote was archived and trimmed from the store's queue.

The leaf hash is the Merkle leaf hash of the vote's ledger record (tally.ledger.leaf), the same
the archiver computes when it appends the vote, so a voter can check the published log later. A
signed vote's record is version 0x02, with the gateway's admission signature: the receipt carries
that signature and the pseudonym it covers, so anyone holding the published admission key can
check that a gateway admitted the vote, even if the vote never reaches the log.
"""

from __future__ import annotations

from tally.domain.errors import StoreUnavailable
from tally.domain.votes import AdmissionSignature, Receipt
from tally.ledger import merkle
from tally.ledger.leaf import (
    Admission,
    LeafError,
    VoteRecord,
    VoteStatus,
    decode_leaf,
    encode_leaf,
)
from tally.ports import LedgerReader


def receipt(
    poll_id: str,
    lane: int,
    seq: int,
    pseudonym: bytes,
    option: str,
    accepted_ms: int,
    admission: AdmissionSignature | None = None,
    *,
    held: bool = False,
) -> Receipt:
    """The receipt of a vote the store holds, with the leaf hash its ledger record will have.
    A vote cast `held` is recorded with status held once and for all: a reviewer's decision is
    a later entry of the lane's log, so the vote's own record and leaf hash never change,
    whatever the decision."""
    record = VoteRecord(
        poll_id, lane, seq, pseudonym, option, accepted_ms,
        VoteStatus.HELD if held else VoteStatus.ACCEPTED, _ledger_admission(admission),
    )  # fmt: skip
    return Receipt(
        poll_id,
        lane,
        seq,
        option,
        accepted_ms,
        merkle.leaf_hash(encode_leaf(record)),
        pseudonym,
        admission,
    )


def _ledger_admission(admission: AdmissionSignature | None) -> Admission | None:
    if admission is None:
        return None
    return Admission(admission.admitted_ms, admission.key_id, admission.signature)


async def archived_receipt(
    ledger: LedgerReader | None, poll_id: str, lane: int, seq: int
) -> Receipt:
    """The receipt of vote `seq` of a lane, read from the published ledger; StoreUnavailable if
    it is neither there nor (as the caller found) in the store's queue."""
    entry = None if ledger is None else await ledger.read_entry(poll_id, str(lane), seq - 1)
    if entry is None:
        raise StoreUnavailable(
            f"vote {seq} of poll {poll_id} lane {lane} is neither in its stream nor archived"
        )
    try:
        record = decode_leaf(entry)
    except LeafError as exc:
        raise StoreUnavailable(f"archived vote {seq} of lane {lane} is unreadable: {exc}") from None
    signed = record.admission
    return Receipt(
        poll_id,
        lane,
        seq,
        record.option_id,
        record.accepted_ms,
        merkle.leaf_hash(entry),
        record.pseudonym,
        None
        if signed is None
        else AdmissionSignature(signed.admitted_ms, signed.key_id, signed.signature),
    )
