"""Admission signatures: the signed message, version 0x02 vote records, admission-key admin
records, and every verdict of check_admission (tally.ledger.admission, leaf, admin)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.ledger import note
from tally.ledger.admin import (
    AdminAction,
    AdminRecord,
    AdmissionKey,
    decode_admin,
    encode_admin,
)
from tally.ledger.admission import (
    ADMISSION_CONTEXT,
    MAX_ADMISSION_AGE_MS,
    MAX_CLOCK_SKEW_MS,
    REASONS,
    Admission,
    AdmissionSigner,
    admission_message,
    check_admission,
    keys_from_admin,
)
from tally.ledger.leaf import (
    LeafError,
    VoteRecord,
    VoteStatus,
    decode_leaf,
    encode_leaf,
)
from tally.ledger.review import decode_lane_record

PSEUDONYM = bytes.fromhex("00112233445566778899aabbccddee03")
SEED = bytes(range(32))
NAME = "tally.example/ledger/admission/gw-1"
ADMITTED = 1_767_225_600_000
V1 = VoteRecord("final-2025", 3, 1, PSEUDONYM, "alice", ADMITTED + 20)
V1_HEX = (
    "0101"
    "0a66696e616c2d32303235"
    "0003"
    "0000000000000001"
    "00112233445566778899aabbccddee03"
    "05616c696365"
    "0000019b76daa814"
    "01"
)


def signer(name: str = NAME, seed: bytes = SEED) -> AdmissionSigner:
    return AdmissionSigner(name, Ed25519PrivateKey.from_private_bytes(seed))


def signed(
    record: VoteRecord = V1, admitted_ms: int = ADMITTED, by: AdmissionSigner | None = None
) -> VoteRecord:
    by = by or signer()
    admission = by.sign(
        record.poll_id, record.pseudonym, record.option_id, record.status, admitted_ms
    )
    return dataclasses.replace(record, admission=admission)


def keys(*found: AdmissionKey) -> dict[int, AdmissionKey]:
    return {key.key_id: key for key in found}


# --- the signed message and the signer ---


def test_message_layout_is_the_specs() -> None:
    message = admission_message("p", PSEUDONYM, "yes", 0x02, 0x0102030405060708, 0xA1B2C3D4)
    assert message == (
        b"tally-admission/v1\n"
        + b"\x01p"
        + PSEUDONYM
        + b"\x03yes"
        + b"\x02"
        + bytes.fromhex("0102030405060708")
        + bytes.fromhex("a1b2c3d4")
    )
    assert message.startswith(ADMISSION_CONTEXT)


def test_message_refuses_out_of_range_fields() -> None:
    with pytest.raises(LeafError):
        admission_message("", PSEUDONYM, "yes", 1, 0, 0)
    with pytest.raises(LeafError):
        admission_message("p", PSEUDONYM[:15], "yes", 1, 0, 0)
    with pytest.raises(LeafError):
        admission_message("p", PSEUDONYM, "yes", 1, 2**64, 0)
    with pytest.raises(LeafError):
        admission_message("p", PSEUDONYM, "x" * 256, 1, 0, 0)


def test_signer_key_id_is_the_note_key_id() -> None:
    key = signer().key
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    digest = hashlib.sha256(NAME.encode() + b"\n\x01" + public).digest()
    assert key.public_key == public
    assert key.key_id == int.from_bytes(digest[:4], "big") == note.key_id(NAME, public)
    assert (key.not_before_ms, key.not_after_ms) == (0, 0)
    assert str(key.verifier) == str(note.Signer(NAME, SEED).verifier)
    assert "PRIVATE" not in repr(signer())


def test_signature_verifies_over_the_message() -> None:
    record = signed()
    admission = record.admission
    assert admission is not None
    assert admission.key_id == signer().key.key_id
    message = admission_message("final-2025", PSEUDONYM, "alice", 1, ADMITTED, admission.key_id)
    assert signer().key.verifier.verify(message, admission.signature)


# --- version 0x02 vote records ---


def test_v1_record_still_encodes_and_decodes_as_before() -> None:
    assert encode_leaf(V1).hex() == V1_HEX
    assert decode_leaf(bytes.fromhex(V1_HEX)) == V1
    assert decode_leaf(bytes.fromhex(V1_HEX)).admission is None


def test_v2_record_layout() -> None:
    admission = Admission(ADMITTED, 0xA1B2C3D4, bytes(range(64)))
    record = dataclasses.replace(V1, admission=admission)
    data = encode_leaf(record)
    assert data[0] == 0x02
    assert data[1:] == bytes.fromhex(V1_HEX)[1:] + bytes.fromhex(
        "0000019b76daa800a1b2c3d4"
    ) + bytes(range(64))
    assert len(data) == 115 + len("final-2025") + len("alice")
    assert admission.to_bytes() == data[-76:]
    assert Admission.from_bytes(data[-76:]) == admission


@pytest.mark.parametrize("status", [VoteStatus.ACCEPTED, VoteStatus.HELD])
def test_v2_round_trip_fast_and_checked(status: VoteStatus) -> None:
    record = signed(dataclasses.replace(V1, status=status))
    data = encode_leaf(record)
    assert decode_leaf(data) == record
    assert decode_lane_record(data) == record
    # the checked decoder, reached when the fast one declines: same answer
    from tally.ledger.leaf import _decode_checked, _decode_fast

    assert _decode_fast(data) == _decode_checked(data) == record


def _bad_v2_records() -> list[tuple[str, bytes]]:
    good = encode_leaf(signed())
    return [
        ("one byte short", good[:-1]),
        ("one byte long", good + b"\x00"),
        ("no admission at all", b"\x02" + good[1:-76]),
        ("v1 with an admission", b"\x01" + good[1:]),
        ("version 3", b"\x03" + good[1:]),
        ("bad status", good[:-77] + b"\x07" + good[-76:]),
        ("admission cut in the key id", good[:-66]),
    ]


@pytest.mark.parametrize(("why", "data"), _bad_v2_records(), ids=[w for w, _ in _bad_v2_records()])
def test_bad_v2_records_are_refused(why: str, data: bytes) -> None:
    with pytest.raises(LeafError):
        decode_leaf(data)
    with pytest.raises(LeafError):
        decode_lane_record(data)


def test_admission_fields_are_range_checked() -> None:
    with pytest.raises(LeafError):
        Admission(-1, 0, bytes(64))
    with pytest.raises(LeafError):
        Admission(0, 2**32, bytes(64))
    with pytest.raises(LeafError):
        Admission(0, 0, bytes(63))
    with pytest.raises(LeafError):
        Admission.from_bytes(bytes(75))


# --- admission-key admin records ---


def test_admission_key_admin_record_round_trip() -> None:
    key = AdmissionKey(NAME, signer().key.public_key, ADMITTED - 1000, ADMITTED + 10**9)
    record = AdminRecord("final-2025", AdminAction.ADMISSION_KEY, ADMITTED, b"ops", None, None, key)
    data = encode_admin(record)
    name = NAME.encode()
    assert data.endswith(
        bytes((len(name),))
        + name
        + key.public_key
        + (ADMITTED - 1000).to_bytes(8, "big")
        + (ADMITTED + 10**9).to_bytes(8, "big")
    )
    assert data[3 + len("final-2025")] == 0x05
    assert decode_admin(data) == record
    with pytest.raises(LeafError):
        decode_admin(data[:-1])
    with pytest.raises(LeafError):
        decode_admin(data + b"\x00")
    # not after before not before
    bad = data[:-16] + (5).to_bytes(8, "big") + (4).to_bytes(8, "big")
    with pytest.raises(LeafError):
        decode_admin(bad)


def test_admission_key_goes_with_its_action_only() -> None:
    key = signer().key
    with pytest.raises(LeafError):
        AdminRecord("p", AdminAction.ADMISSION_KEY, 0)
    with pytest.raises(LeafError):
        AdminRecord("p", AdminAction.OPENED, 0, b"", None, None, key)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "x" * 256])
def test_admission_key_names_are_note_names(name: str) -> None:
    with pytest.raises(LeafError):
        AdmissionKey(name, bytes(32))


def test_validity_period_is_half_open() -> None:
    key = AdmissionKey(NAME, bytes(32), 100, 200)
    assert [key.valid_at(ms) for ms in (99, 100, 199, 200)] == [False, True, True, False]
    assert AdmissionKey(NAME, bytes(32), 100, 0).valid_at(2**63)


def test_keys_from_admin_later_validity_wins() -> None:
    key = AdmissionKey(NAME, signer().key.public_key, 0, 0)
    retired = dataclasses.replace(key, not_after_ms=ADMITTED)
    other = signer("tally.example/ledger/admission/gw-2", bytes(32)).key
    log = [
        AdminRecord("p", AdminAction.OPENED, 1),
        AdminRecord("p", AdminAction.ADMISSION_KEY, 2, b"", None, None, key),
        AdminRecord("p", AdminAction.ADMISSION_KEY, 3, b"", None, None, other),
        AdminRecord("p", AdminAction.ADMISSION_KEY, 4, b"", None, None, retired),
    ]
    assert keys_from_admin(log) == {key.key_id: retired, other.key_id: other}
    assert keys_from_admin(log[:1]) == {}


def test_keys_from_admin_refuses_two_keys_under_one_id() -> None:
    key = AdmissionKey(NAME, bytes(32))
    clash = AdmissionKey(NAME, bytes(31) + b"\x01")
    object.__setattr__(clash, "key_id", key.key_id)  # a forged 32-bit collision
    log = [AdminRecord("p", AdminAction.ADMISSION_KEY, 1, b"", None, None, k) for k in (key, clash)]
    with pytest.raises(LeafError, match="share key id"):
        keys_from_admin(log)


# --- check_admission: every verdict ---


def test_a_valid_admission_checks() -> None:
    assert check_admission(signed(), keys(signer().key)) is None
    held = signed(dataclasses.replace(V1, status=VoteStatus.HELD))
    assert check_admission(held, keys(signer().key)) is None


def test_unsigned() -> None:
    assert check_admission(V1, keys(signer().key)) == "unsigned"


def test_unknown_key() -> None:
    other = signer(seed=bytes(32))
    assert check_admission(signed(by=other), keys(signer().key)) == "unknown-key"


@pytest.mark.parametrize(("not_before", "not_after"), [(ADMITTED + 1, 0), (0, ADMITTED)])
def test_key_not_valid_then(not_before: int, not_after: int) -> None:
    key = dataclasses.replace(signer().key, not_before_ms=not_before, not_after_ms=not_after)
    assert check_admission(signed(), keys(key)) == "key-not-valid-then"


@pytest.mark.parametrize(
    "change",
    [
        {"option_id": "bob"},
        {"poll_id": "final-2026"},
        {"pseudonym": bytes(16)},
        {"status": VoteStatus.HELD},
    ],
    ids=["option", "poll", "pseudonym", "status"],
)
def test_bad_signature_when_a_signed_field_changes(change: dict[str, object]) -> None:
    forged = dataclasses.replace(signed(), **change)  # type: ignore[arg-type]
    assert check_admission(forged, keys(signer().key)) == "bad-signature"


def test_bad_signature_when_the_time_or_signature_changes() -> None:
    record = signed()
    admission = record.admission
    assert admission is not None
    later = dataclasses.replace(admission, admitted_ms=admission.admitted_ms + 1)
    flipped = dataclasses.replace(
        admission, signature=bytes([admission.signature[0] ^ 1]) + admission.signature[1:]
    )
    for bad in (later, flipped):
        assert check_admission(dataclasses.replace(record, admission=bad), keys(signer().key)) == (
            "bad-signature"
        )


def test_lane_and_seq_are_not_signed() -> None:
    moved = dataclasses.replace(signed(), lane=7, seq=99)
    assert check_admission(moved, keys(signer().key)) is None


def test_admission_age_bounds() -> None:
    key = keys(signer().key)

    def at(accepted_ms: int) -> str | None:
        return check_admission(signed(dataclasses.replace(V1, accepted_ms=accepted_ms)), key)

    assert at(ADMITTED + MAX_ADMISSION_AGE_MS) is None
    assert at(ADMITTED + MAX_ADMISSION_AGE_MS + 1) == "admitted-too-early"
    assert at(ADMITTED - MAX_CLOCK_SKEW_MS) is None
    assert at(ADMITTED - MAX_CLOCK_SKEW_MS - 1) == "admitted-too-late"


def test_every_reason_is_reachable_and_listed() -> None:
    assert set(REASONS) == {
        "unsigned",
        "unknown-key",
        "key-not-valid-then",
        "bad-signature",
        "admitted-too-early",
        "admitted-too-late",
    }
