"""Vote and admin records have one canonical encoding, exactly as docs/ledger-format.md lays out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.ledger.admin import (
    AdminAction,
    AdminRecord,
    PollDefinition,
    PollOption,
    admin_leaf_hash,
    decode_admin,
    encode_admin,
)
from tally.ledger.leaf import (
    LeafError,
    VoteRecord,
    VoteStatus,
    decode_leaf,
    encode_leaf,
    vote_leaf_hash,
)

# The worked example of docs/ledger-format.md (a pseudonym that maps to lane 3 of 16).
PSEUDONYM = bytes.fromhex("00112233445566778899aabbccddee03")
VOTE = VoteRecord("final-2025", 3, 1, PSEUDONYM, "alice", 1_767_225_600_000)
VOTE_HEX = (
    "01" "01"  # version, record type vote
    "0a" "66696e616c2d32303235"  # poll id "final-2025"
    "0003"  # lane 3
    "0000000000000001"  # seq 1
    "00112233445566778899aabbccddee03"  # pseudonym
    "05" "616c696365"  # option id "alice"
    "0000019b76daa800"  # accepted 2026-01-01T00:00:00Z
    "01"  # status accepted
)  # fmt: skip
VOTE_LEAF_HASH = "e8d26f8577f65d4318bbc2390c3d356cff621c81f7df36daa05c84bc07fb8d64"

DEFINITION = PollDefinition(
    "Final", 16, 1_767_229_200_000, (PollOption("alice", "Alice"), PollOption("bob", "Bob"))
)
CREATED = AdminRecord("final-2025", AdminAction.CREATED, 1_767_225_000_000, b"", DEFINITION)
CREATED_HEX = (
    "01" "02"  # version, record type admin
    "0a" "66696e616c2d32303235"  # poll id
    "01"  # action created
    "0000019b76d18040"  # time
    "00"  # actor: empty
    "0010"  # 16 lanes
    "0000019b77119680"  # closes at
    "0005" "46696e616c"  # title "Final"
    "02"  # two options
    "05" "616c696365" "0005" "416c696365"  # alice, "Alice"
    "03" "626f62" "0003" "426f62"  # bob, "Bob"
)  # fmt: skip
OPENED = AdminRecord("final-2025", AdminAction.OPENED, 1_767_225_300_000, b"\x01\x02")
OPENED_HEX = "01020a66696e616c2d32303235020000019b76d61420020102"


def test_the_worked_example_encodes_byte_for_byte() -> None:
    """The documented vote leaf is exactly these 54 bytes, with this leaf hash."""
    data = encode_leaf(VOTE)
    assert data.hex() == VOTE_HEX
    assert len(data) == 39 + len("final-2025") + len("alice")
    assert vote_leaf_hash(VOTE).hex() == VOTE_LEAF_HASH
    assert hashlib.sha256(b"\x00" + data).hexdigest() == VOTE_LEAF_HASH
    assert decode_leaf(data) == VOTE


def test_admin_records_encode_byte_for_byte() -> None:
    """A created record carries the poll definition; others end after the actor."""
    assert encode_admin(CREATED).hex() == CREATED_HEX
    assert admin_leaf_hash(CREATED).hex() == (
        "48e1cf244b7ec0dc3621efb737a6df8b44eea37d445e9bad776f2ee468659df1"
    )
    assert encode_admin(OPENED).hex() == OPENED_HEX
    assert decode_admin(bytes.fromhex(CREATED_HEX)) == CREATED
    assert decode_admin(bytes.fromhex(OPENED_HEX)) == OPENED
    assert admin_leaf_hash(OPENED) == hashlib.sha256(b"\x00" + encode_admin(OPENED)).digest()


def test_a_vote_knows_its_stream_id_and_leaf_index() -> None:
    """seq s is stream entry "<s>-0" and leaf s - 1."""
    assert (VOTE.entry_id, VOTE.leaf_index) == ("1-0", 0)


@pytest.mark.parametrize(
    "data", [encode_leaf(VOTE), bytes.fromhex(CREATED_HEX), bytes.fromhex(OPENED_HEX)]
)
def test_every_truncation_and_extension_is_rejected(data: bytes) -> None:
    """Decoding consumes exactly the record: any prefix or any extra byte raises LeafError."""
    decode = decode_leaf if data[1] == 1 else decode_admin
    for end in range(len(data)):
        with pytest.raises(LeafError):
            decode(data[:end])
    with pytest.raises(LeafError):
        decode(data + b"\x00")


def _patched(hex_record: str, offset: int, new: str) -> bytes:
    data = bytearray(bytes.fromhex(hex_record))
    patch = bytes.fromhex(new)
    data[offset : offset + len(patch)] = patch
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_patched(VOTE_HEX, 0, "03"), "version"),  # 0x02 is a signed vote (test_admission)
        (_patched(VOTE_HEX, 0, "00"), "version"),
        (_patched(VOTE_HEX, 1, "02"), "record type"),
        (_patched(VOTE_HEX, 1, "00"), "record type"),
        (bytes.fromhex("010100" + VOTE_HEX[26:]), "poll id"),  # empty poll id
        (_patched(VOTE_HEX, 3, "ff"), "poll id"),  # not UTF-8
        (_patched(VOTE_HEX, 3, "c0af"), "poll id"),  # overlong encoding of "/"
        (_patched(VOTE_HEX, 3, "eda080"), "poll id"),  # an encoded surrogate
        (_patched(VOTE_HEX, 15, "0000000000000000"), "seq"),  # seq 0
        (_patched(VOTE_HEX, 53, "00"), "status"),
        (_patched(VOTE_HEX, 53, "04"), "status"),
        (_patched(VOTE_HEX, 39, "00"), "option id"),  # option id length 0: shifts, then fails
    ],
)
def test_malformed_vote_leaves_are_rejected(data: bytes, message: str) -> None:
    """Unknown versions and types, empty or invalid strings, seq 0 and unknown statuses fail."""
    with pytest.raises(LeafError, match=message):
        decode_leaf(data)


def test_an_admin_record_is_not_a_vote_and_back() -> None:
    """The record type byte keeps the two logs' leaves apart."""
    with pytest.raises(LeafError, match="record type"):
        decode_leaf(bytes.fromhex(OPENED_HEX))
    with pytest.raises(LeafError, match="record type"):
        decode_admin(encode_leaf(VOTE))


@pytest.mark.parametrize(
    ("offset", "patch", "message"),
    [
        (13, "00", "action"),
        (13, "06", "action"),  # 0x05 is admission-key (test_admission)
        (13, "02", "bytes after"),  # opened, yet a definition follows
        (23, "0003", "lanes"),  # not a power of two
        (23, "0000", "lanes"),
        (23, "ffff", "lanes"),
        (25, "0000000000000000", None),  # 0 is "no deadline": decodes, see below
        (33, "0000", "title"),  # empty title
        (40, "00", "options"),  # no options
        (40, "03", "ends inside"),  # a third option that is not there
        (22, "01", "bytes after|ends inside|UTF-8|lanes|title"),  # actor swallows a byte
    ],
)
def test_malformed_admin_records_are_rejected(offset: int, patch: str, message: str | None) -> None:
    """Unknown actions, stray definitions, bad lane counts, titles and option lists fail."""
    data = _patched(CREATED_HEX, offset, patch)
    if message is None:
        assert decode_admin(data).definition == PollDefinition(
            DEFINITION.title, DEFINITION.lanes, None, DEFINITION.options
        )
        return
    with pytest.raises(LeafError, match=message):
        decode_admin(data)


def test_duplicate_option_ids_are_rejected() -> None:
    """Option ids are unique within a poll, in records built and decoded alike."""
    twice = CREATED_HEX.replace("03626f620003426f62", "05616c69636500025477")
    with pytest.raises(LeafError, match="unique"):
        decode_admin(bytes.fromhex(twice))
    with pytest.raises(LeafError, match="unique"):
        PollDefinition("T", 1, None, (PollOption("a", "A"), PollOption("a", "B")))


def test_a_created_record_without_a_definition_is_rejected() -> None:
    """Only created records carry a definition, and they must."""
    with pytest.raises(LeafError, match="definition"):
        AdminRecord("p", AdminAction.CREATED, 0)
    with pytest.raises(LeafError, match="definition"):
        AdminRecord("p", AdminAction.CLOSED, 0, b"", DEFINITION)


def test_no_deadline_is_written_as_zero() -> None:
    """closes_at None encodes as 0 and decodes back to None."""
    open_ended = AdminRecord(
        "p", AdminAction.CREATED, 5, b"", PollDefinition("T", 1, None, (PollOption("a", "A"),))
    )
    assert decode_admin(encode_admin(open_ended)) == open_ended


@pytest.mark.parametrize(
    "build",
    [
        lambda: VoteRecord("", 0, 1, bytes(16), "a", 0),
        lambda: VoteRecord("p" * 256, 0, 1, bytes(16), "a", 0),
        lambda: VoteRecord("p", 0, 1, bytes(16), "\ud800", 0),
        lambda: VoteRecord("p", -1, 1, bytes(16), "a", 0),
        lambda: VoteRecord("p", 65536, 1, bytes(16), "a", 0),
        lambda: VoteRecord("p", 0, 0, bytes(16), "a", 0),
        lambda: VoteRecord("p", 0, 2**64, bytes(16), "a", 0),
        lambda: VoteRecord("p", 0, 1, bytes(15), "a", 0),
        lambda: VoteRecord("p", 0, 1, bytes(17), "a", 0),
        lambda: VoteRecord("p", 0, 1, bytes(16), "a", -1),
        lambda: VoteRecord("p", 0, 1, bytes(16), "a", 2**64),
        lambda: VoteRecord("p", 0, 1, bytes(16), "a", 0, 1),  # type: ignore[arg-type]
        lambda: AdminRecord("p", AdminAction.OPENED, -1),
        lambda: AdminRecord("p", AdminAction.OPENED, 0, b"a" * 256),
        lambda: AdminRecord("p", 2, 0),  # type: ignore[arg-type]
        lambda: PollDefinition("", 1, None, (PollOption("a", "A"),)),
        lambda: PollDefinition("T", 3, None, (PollOption("a", "A"),)),
        lambda: PollDefinition("T", 65536, None, (PollOption("a", "A"),)),
        lambda: PollDefinition("T", 1, 0, (PollOption("a", "A"),)),
        lambda: PollDefinition("T", 1, None, ()),
        lambda: PollDefinition("T", 1, None, tuple(PollOption(str(i), "x") for i in range(256))),
        lambda: PollOption("", "A"),
        lambda: PollOption("a", ""),
        lambda: PollOption("a" * 256, "A"),
    ],
)
def test_records_cannot_be_built_out_of_range(build: Callable[[], object]) -> None:
    """Every field is checked when a record is built, so every record built can be encoded."""
    with pytest.raises(LeafError):
        build()


_texts = st.text(min_size=1, max_size=30)  # Hypothesis never draws surrogates
_votes = st.builds(
    VoteRecord,
    poll_id=_texts,
    lane=st.integers(0, 0xFFFF),
    seq=st.integers(1, 2**64 - 1),
    pseudonym=st.binary(min_size=16, max_size=16),
    option_id=_texts,
    accepted_ms=st.integers(0, 2**64 - 1),
    status=st.sampled_from(VoteStatus),
)
_options = st.lists(
    st.builds(PollOption, _texts, _texts), min_size=1, max_size=8, unique_by=lambda o: o.id
)
_definitions = st.builds(
    PollDefinition,
    title=_texts,
    lanes=st.sampled_from([1 << k for k in range(16)]),
    closes_at_ms=st.none() | st.integers(1, 2**64 - 1),
    options=_options.map(tuple),
)
_admins = st.one_of(
    st.builds(
        AdminRecord,
        poll_id=_texts,
        action=st.just(AdminAction.CREATED),
        at_ms=st.integers(0, 2**64 - 1),
        actor=st.binary(max_size=255),
        definition=_definitions,
    ),
    st.builds(
        AdminRecord,
        poll_id=_texts,
        action=st.sampled_from([AdminAction.OPENED, AdminAction.CLOSED]),
        at_ms=st.integers(0, 2**64 - 1),
        actor=st.binary(max_size=255),
    ),
)


@given(_votes)
def test_any_vote_round_trips(record: VoteRecord) -> None:
    """decode_leaf inverts encode_leaf."""
    assert decode_leaf(encode_leaf(record)) == record


@given(_admins)
def test_any_admin_record_round_trips(record: AdminRecord) -> None:
    """decode_admin inverts encode_admin."""
    assert decode_admin(encode_admin(record)) == record


def _mutated(data: bytes, position: int, value: int) -> bytes:
    """``data`` with one byte replaced: near-valid input, where decoders go wrong."""
    i = position % len(data)
    return data[:i] + bytes([value]) + data[i + 1 :]


_bytes_near = st.integers(0, 400), st.integers(0, 255)


@given(st.binary(max_size=80) | st.builds(_mutated, _votes.map(encode_leaf), *_bytes_near))
def test_bytes_are_a_vote_in_exactly_one_way(data: bytes) -> None:
    """Any bytes either fail to decode or are the one encoding of the record they decode to."""
    try:
        record = decode_leaf(data)
    except LeafError:
        return
    assert encode_leaf(record) == data


@given(st.binary(max_size=80) | st.builds(_mutated, _admins.map(encode_admin), *_bytes_near))
def test_bytes_are_an_admin_record_in_exactly_one_way(data: bytes) -> None:
    """Any bytes either fail to decode or are the one encoding of the record they decode to."""
    try:
        record = decode_admin(data)
    except LeafError:
        return
    assert encode_admin(record) == data
