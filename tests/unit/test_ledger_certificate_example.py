"""The worked example of a closed poll in docs/ledger-format.md (admin log, result certificate,
receipt, proof, published files) is what the code produces, byte for byte.

It continues the lane-3 example of test_ledger_worked_example.py: poll `final-2025` has 16 lanes,
its three votes are in lane 3, and every other lane is empty."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from tally.archive.logs import LedgerFiles
from tally.archive.poll_logs import PollLogs
from tally.domain.polls import Option, Poll, PollState
from tally.domain.votes import Receipt
from tally.gateway.render import receipt_doc
from tally.ledger import layout, merkle, note
from tally.ledger.admin import (
    AdminAction,
    AdminRecord,
    PollDefinition,
    PollOption,
    decode_admin,
    encode_admin,
)
from tally.ledger.certificate import (
    LogHead,
    ResultCertificate,
    ReviewTotals,
    certificate_origin,
    open_certificate,
    sign_certificate,
)
from tally.ledger.proof import InclusionProofText
from tally.ports import QueuedAdminAction, QueuedEntry, QueuedVote

POLL = "final-2025"
PREFIX = "tally.example/ledger"
SEED = bytes(range(32))  # the published example seed 00..1f: never sign a real log with it
LANES = 16

# The admin log: created (docs §6.4), opened by "ops@example", closed by the system at the deadline.
ADMIN_RECORDS = [
    AdminRecord(
        POLL,
        AdminAction.CREATED,
        1_767_225_000_000,
        b"",
        PollDefinition(
            "Final",
            LANES,
            1_767_229_200_000,
            (PollOption("alice", "Alice"), PollOption("bob", "Bob")),
        ),
    ),
    AdminRecord(POLL, AdminAction.OPENED, 1_767_225_300_000, b"ops@example"),
    AdminRecord(POLL, AdminAction.CLOSED, 1_767_229_200_412, b""),
]
ADMIN_LEAVES = [
    "01020a66696e616c2d32303235010000019b76d180400000100000019b77119680000546696e616c0205616c6963650005416c69636503626f620003426f62",
    "01020a66696e616c2d32303235020000019b76d614200b6f7073406578616d706c65",
    "01020a66696e616c2d32303235030000019b7711981c00",
]
ADMIN_LEAF_HASHES = [
    "48e1cf244b7ec0dc3621efb737a6df8b44eea37d445e9bad776f2ee468659df1",
    "a2a5c8e114b6d2d28829cf3f0e04887b3de3ccc1e174a3ce3c4adfc9be1788f7",
    "ab377f53b4ca6f7ccb2224f0d65a3f4c575e0434d56f3768fc83db1a94289ca2",
]
ADMIN_ROOT = "jsczqbTdJhLSZOMrLrEw6tZKJPv3l5gpfceN/vYkikM="
EMPTY_ROOT = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # SHA-256 of nothing
LANE3_ROOT = "pWCCMgKuTlvmijIN7HwXGLbbBBG5CaRvo/JvR5jcFYk="  # docs §6.3

# Lane 3's queue: the stream entries "<seq>-0" with fields p, o, t (docs §6.2).
LANE3_STREAM = [
    (1, "00112233445566778899aabbccddee03", "alice", 1_767_225_600_000),
    (2, "a1b2c3d4e5f60718293a4b5c6d7e8f13", "bob", 1_767_225_600_250),
    (3, "0f1e2d3c4b5a69788796a5b4c3d2e123", "alice", 1_767_225_600_500),
]
LANE3_LEAF_HASHES = [
    "e8d26f8577f65d4318bbc2390c3d356cff621c81f7df36daa05c84bc07fb8d64",
    "37c1381db8b32ce7be2c6a808d7615e6ae4864a7c0464e6facc9964214601837",
    "4f6520d4f3fed01bf2e9328a8b79447efc0ff54a5e96d8d735986c2125ed2aba",
]

KEYS_FILE = "tally.example/ledger+2ddc5c1e+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4\n"
CERT_ORIGIN = "tally.example/ledger/final-2025/certificate"
CERT_SKEY = "PRIVATE+KEY+tally.example/ledger/final-2025/certificate+6a4c3734+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
CERT_VKEY = "tally.example/ledger/final-2025/certificate+6a4c3734+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
CERT_TEXT = (
    "tally.example/ledger/final-2025/certificate\n"
    "tally-result/v2\n"
    "poll final-2025\n"
    f"log admin 3 {ADMIN_ROOT}\n"
    + "".join(
        f"log {lane} 3 {LANE3_ROOT}\n" if lane == 3 else f"log {lane} 0 {EMPTY_ROOT}\n"
        for lane in range(LANES)
    )
    + "count alice 2\ncount bob 1\ntotal 3\n"
    + "held 0\nreleased 0\nvoided 0\n"  # no vote was held for review
)
CERT_SIGNATURE = (
    "akw3NN8Pne/swe6gxMbDWEOsQE1LlqGCauj8iNKPkkFJnhg4IMaODXvDI+L+HQoR5IwGS5+E3MdUqo+7RA88GPTroQM="
)
SIGNED_CERT = f"{CERT_TEXT}\n— {CERT_ORIGIN} {CERT_SIGNATURE}\n"

LANE3_CHECKPOINT = (  # docs §6.3
    "tally.example/ledger/final-2025/3\n"
    "3\n"
    f"{LANE3_ROOT}\n"
    "\n"
    "— tally.example/ledger/final-2025/3 SrVjaFDb0EOz+8OScY46oPWoKyT/vea4gOcnBR7vlt9nh5o893miUSn1pD0DIDP0h9IIRgNWl5+n5ccjoLvwg+ZjSA4=\n"
)
RECEIPT: dict[str, object] = {
    "poll_id": "final-2025",
    "lane": 3,
    "entry_id": 2,
    "option": "bob",
    "accepted_at": "2026-01-01T00:00:00.250Z",
    "leaf_hash": "37c1381db8b32ce7be2c6a808d7615e6ae4864a7c0464e6facc9964214601837",
}
LEAF_2 = "AQEKZmluYWwtMjAyNQADAAAAAAAAAAKhssPU5fYHGCk6S1xtfo8TA2JvYgAAAZt22qj6AQ=="
PROOF_2 = [
    "6NJvhXf2XUMYu8I5DD01bP9iHIH33zbaoFyEvAf7jWQ=",
    "T2Ug1PP+0Bvy6TKKi3lEfvwP9UpeltjXNZhsISXtKro=",
]
TLOG_PROOF_2 = (
    "c2sp.org/tlog-proof@v1\n"
    f"extra {LEAF_2}\n"
    "index 1\n"
    f"{PROOF_2[0]}\n"
    f"{PROOF_2[1]}\n"
    "\n" + LANE3_CHECKPOINT
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_admin_records_leaf_hashes_and_root() -> None:
    """The admin log's three records encode to the documented bytes, hashes and root."""
    leaves = [encode_admin(record) for record in ADMIN_RECORDS]
    assert [leaf.hex() for leaf in leaves] == ADMIN_LEAVES
    assert [len(leaf) for leaf in leaves] == [63, 34, 23]
    assert [decode_admin(leaf) for leaf in leaves] == ADMIN_RECORDS
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    assert [h.hex() for h in hashes] == ADMIN_LEAF_HASHES
    assert b64(merkle.root(hashes)) == ADMIN_ROOT
    assert b64(hashlib.sha256(b"").digest()) == EMPTY_ROOT == b64(merkle.root([]))


def test_certificate_text_signature_and_keys() -> None:
    """The certificate's text and its signature under the example key are exactly as documented."""
    origin = certificate_origin(PREFIX, POLL)
    assert origin == CERT_ORIGIN
    empty = LogHead(0, base64.b64decode(EMPTY_ROOT))
    lanes = tuple(
        LogHead(3, base64.b64decode(LANE3_ROOT)) if lane == 3 else empty for lane in range(LANES)
    )
    certificate = ResultCertificate(
        origin,
        POLL,
        LogHead(3, base64.b64decode(ADMIN_ROOT)),
        lanes,
        (("alice", 2), ("bob", 1)),
        ReviewTotals(0, 0, 0),
    )
    assert certificate.format() == CERT_TEXT
    assert len(CERT_TEXT.encode()) == 1048
    assert ResultCertificate.parse(CERT_TEXT) == certificate

    signer = note.Signer(origin, SEED)
    assert signer.private_key_string() == CERT_SKEY
    assert str(signer.verifier) == CERT_VKEY
    assert note.Signer(PREFIX, SEED).verifier.renamed(origin) == signer.verifier
    signed = sign_certificate(certificate, [signer])
    assert signed.decode() == SIGNED_CERT
    assert len(signed) == 1190
    signature = base64.b64decode(CERT_SIGNATURE)
    assert signature[:4].hex() == "6a4c3734" == f"{signer.key_id:08x}"
    assert signer.verifier.verify(CERT_TEXT.encode(), signature[4:])
    verifier = note.Verifier.parse(CERT_VKEY)
    assert open_certificate(signed, [verifier], origin=CERT_ORIGIN) == certificate


def archive_the_example(ledger_root: Path) -> LedgerFiles:
    """Run the example's queues through the archiver's own code into a ledger directory."""
    poll = Poll(
        POLL,
        "Final",
        (Option("alice", "Alice"), Option("bob", "Bob")),
        PollState.CLOSED,
        LANES,
        1_767_229_200_000,
        1_767_225_000_000,
        0,
    )
    files = LedgerFiles(ledger_root)
    files.publish_key(str(note.Signer(PREFIX, SEED).verifier))
    logs = PollLogs(files.poll_files(POLL), poll, note.Signer(PREFIX, SEED))
    admin = [
        QueuedAdminAction(1, PollState.DRAFT, 1_767_225_000_000, b""),
        QueuedAdminAction(2, PollState.OPEN, 1_767_225_300_000, b"ops@example"),
        QueuedAdminAction(3, PollState.CLOSED, 1_767_229_200_412, b""),
    ]
    lane3: list[QueuedEntry] = [
        QueuedVote(seq, bytes.fromhex(p), o, t) for seq, p, o, t in LANE3_STREAM
    ]
    lanes: list[list[QueuedEntry]] = [lane3 if lane == 3 else [] for lane in range(LANES)]
    admin_log: list[QueuedEntry] = list(admin)
    assert logs.append([admin_log, *lanes]) == 6
    assert logs.publish() == 1 + LANES  # every log, empty ones too, gets a first checkpoint
    assert logs.review().counts(["alice", "bob"]) == [("alice", 2), ("bob", 1)]
    assert logs.certify().decode() == SIGNED_CERT
    return files


def test_the_archiver_publishes_exactly_these_files(tmp_path: Path) -> None:
    """From the example's stream entries, the archiver writes the documented files and bytes."""
    files = archive_the_example(tmp_path)
    assert (tmp_path / "keys").read_text() == KEYS_FILE
    poll_dir = files.poll_dir(POLL)
    assert poll_dir == tmp_path / "polls" / POLL
    written = sorted(str(p.relative_to(poll_dir)) for p in poll_dir.rglob("*") if p.is_file())
    lane3 = ["3/checkpoint", "3/checkpoints/3", "3/tile/0/000.p/3", "3/tile/entries/000.p/3"]
    admin = [f"admin/{name}" for name in ("checkpoint", "checkpoints/3", "tile/0/000.p/3")]
    admin.append("admin/tile/entries/000.p/3")
    empty = [
        f"{lane}/{name}"
        for lane in range(LANES)
        if lane != 3
        for name in ("checkpoint", "checkpoints/0")
    ]
    assert written == sorted([*admin, *lane3, *empty, "certificate"])

    assert files.read(POLL, "3/checkpoint") == LANE3_CHECKPOINT.encode()
    assert files.read(POLL, layout.history_path("3", 3)) == LANE3_CHECKPOINT.encode()
    assert files.read(POLL, "3/tile/0/000.p/3") == bytes.fromhex("".join(LANE3_LEAF_HASHES))
    assert files.read(POLL, "admin/tile/0/000.p/3") == bytes.fromhex("".join(ADMIN_LEAF_HASHES))
    admin_bundle = b"".join(
        len(leaf).to_bytes(2, "big") + leaf for leaf in map(bytes.fromhex, ADMIN_LEAVES)
    )
    assert files.read(POLL, "admin/tile/entries/000.p/3") == admin_bundle
    assert (len(admin_bundle), len(bytes.fromhex("".join(ADMIN_LEAF_HASHES)))) == (126, 96)
    assert files.read(POLL, layout.CERTIFICATE) == SIGNED_CERT.encode()

    history = files.history(POLL)
    assert history is not None
    assert list(history) == ["admin", *(str(lane) for lane in range(LANES))]
    assert history["3"] == [LANE3_CHECKPOINT.encode()]
    document = layout.encode_history(POLL, history)
    assert document.startswith(b'{"poll_id":"final-2025","logs":{"admin":["tally.example/')
    assert layout.decode_history(document) == (POLL, history)


def test_receipt_and_proof_of_the_second_vote(tmp_path: Path) -> None:
    """Vote 2's receipt, its proof from the published files, and its tlog-proof text."""
    receipt = Receipt(POLL, 3, 2, "bob", 1_767_225_600_250, bytes.fromhex(LANE3_LEAF_HASHES[1]))
    assert receipt_doc(receipt) == RECEIPT

    files = archive_the_example(tmp_path)
    proven = files.entry(POLL, layout.lane_log(3), 2 - 1)  # lane 3, entry_id 2
    assert proven is not None
    assert (proven.index, b64(proven.entry)) == (1, LEAF_2)
    assert merkle.leaf_hash(proven.entry).hex() == RECEIPT["leaf_hash"]
    assert [b64(h) for h in proven.proof] == PROOF_2
    assert proven.checkpoint.decode() == LANE3_CHECKPOINT
    merkle.verify_inclusion(
        merkle.leaf_hash(proven.entry), 1, 3, proven.proof, base64.b64decode(LANE3_ROOT)
    )
    text = InclusionProofText(proven.index, tuple(proven.proof), proven.checkpoint, proven.entry)
    assert text.format().decode() == TLOG_PROOF_2
