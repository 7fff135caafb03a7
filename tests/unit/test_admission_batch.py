"""check_admissions: the batch form of check_admission gives each record's reason in order, the
same with or without a thread pool, whatever the chunking; and the pool really runs chunks."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.ledger.admission import AdmissionSigner, check_admission, check_admissions
from tally.ledger.leaf import VoteRecord, VoteStatus

NAME = "tally.example/ledger/admission/gw-1"
ADMITTED = 1_767_225_600_000
SIGNER = AdmissionSigner(NAME, Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
OTHER = AdmissionSigner(NAME, Ed25519PrivateKey.from_private_bytes(bytes(32)))
KEYS = {SIGNER.key.key_id: SIGNER.key}


def vote(i: int, by: AdmissionSigner | None = SIGNER) -> VoteRecord:
    record = VoteRecord("final-2025", i % 4, i + 1, i.to_bytes(16, "big"), "alice", ADMITTED + 20)
    if by is None:
        return record
    admission = by.sign(record.poll_id, record.pseudonym, "alice", VoteStatus.ACCEPTED, ADMITTED)
    return dataclasses.replace(record, admission=admission)


def mixed(count: int) -> list[VoteRecord]:
    """Valid votes with, every few records, an unsigned one, one by an unknown key, and one whose
    option was changed after signing."""
    records = []
    for i in range(count):
        kind = i % 7
        if kind == 3:
            records.append(vote(i, by=None))
        elif kind == 5:
            records.append(vote(i, by=OTHER))
        elif kind == 6:
            records.append(dataclasses.replace(vote(i), option_id="bob"))
        else:
            records.append(vote(i))
    return records


RECORDS = mixed(50)
EXPECTED = [check_admission(record, KEYS) for record in RECORDS]


def test_the_mix_holds_every_outcome() -> None:
    assert set(EXPECTED) == {None, "unsigned", "unknown-key", "bad-signature"}


@pytest.mark.parametrize("chunk", [1, 3, 7, 50, 512])
def test_a_thread_pool_gives_each_reason_in_order(chunk: int) -> None:
    with ThreadPoolExecutor(2) as pool:
        assert check_admissions(RECORDS, KEYS, pool, chunk=chunk) == EXPECTED


def test_without_a_pool_and_empty() -> None:
    assert check_admissions(RECORDS, KEYS) == EXPECTED
    with ThreadPoolExecutor(2) as pool:
        assert check_admissions([], KEYS, pool, chunk=1) == []


def test_chunks_run_on_the_pool() -> None:
    ran_on: set[int] = set()

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            def recorded(*a, **k):  # type: ignore[no-untyped-def]
                ran_on.add(threading.get_ident())
                return fn(*a, **k)

            return super().submit(recorded, *args, **kwargs)

    with Recording(2) as pool:
        assert check_admissions(RECORDS, KEYS, pool, chunk=5) == EXPECTED
    assert ran_on
    assert threading.get_ident() not in ran_on
