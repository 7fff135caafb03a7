"""C2SP tlog-cosignature v1 (Ed25519) and the tlog-witness request bytes, with no I/O."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tally.ledger import merkle, note
from tally.ledger.checkpoint import Checkpoint, open_checkpoint
from tally.ledger.cosignature import (
    CosignatureError,
    CosignatureVerifier,
    Cosigner,
    add_cosignatures,
    check_cosignatures,
    cosigned_message,
    cosigner_key_id,
    generate_cosigner_key,
)
from tally.witness.protocol import (
    ProtocolError,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_size,
)
from witness.rig import Log

WITNESS = Cosigner("witness.test/w1", bytes(range(100, 132)))
T = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_key_id_commits_to_the_cosignature_type_0x04() -> None:
    public = WITNESS.verifier.public_key
    digest = hashlib.sha256(b"witness.test/w1\n\x04" + public).digest()
    assert WITNESS.verifier.key_id == int.from_bytes(digest[:4], "big")
    assert WITNESS.verifier.key_id != note.key_id("witness.test/w1", public)  # 0x01's
    vkey = str(WITNESS.verifier)
    name, hex_id, material = vkey.split("+", 2)
    assert (name, int(hex_id, 16)) == ("witness.test/w1", cosigner_key_id(name, public))
    assert base64.b64decode(material) == b"\x04" + public
    assert CosignatureVerifier.parse(vkey) == WITNESS.verifier
    assert Cosigner.parse(WITNESS.private_key_string()).verifier == WITNESS.verifier


def test_message_is_header_time_line_and_the_checkpoint_body() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosigned_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + body.encode()
    )


def test_the_spec_examples_signature_holds_key_id_then_timestamp() -> None:
    """The cosignature line of the tlog-cosignature example: 4-byte key ID, then the u64
    timestamp of its example message (1679315147), then 64 signature bytes."""
    raw = base64.b64decode(
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[4:12], "big") == 1679315147


def test_cosign_then_check_and_the_log_key_still_opens_it() -> None:
    log = Log().grow(5)
    signed = log.checkpoint()
    text = signed.rpartition(b"\n\n")[0].decode() + "\n"
    line = WITNESS.cosign(text, T)
    cosigned = add_cosignatures(signed, [line])
    assert cosigned == signed + line.encode()
    check = check_cosignatures(cosigned, [WITNESS.verifier])
    assert check.valid[0].timestamp == T
    assert check.invalid == ()
    assert open_checkpoint(cosigned, [log.signer.verifier], origin=log.origin).size == 5
    assert add_cosignatures(cosigned, [line]) == cosigned  # not added twice
    # Unknown cosigners and the log's line are ignored; the log's key ignores the cosignature.
    other = Cosigner("witness.test/w2", bytes(32))
    assert check_cosignatures(cosigned, [other.verifier]) == ((), ())


def test_a_cosignature_moved_to_another_checkpoint_or_time_does_not_verify() -> None:
    log, fork = Log().grow(5), Log(tag="forged ").grow(5)
    text = log.checkpoint().rpartition(b"\n\n")[0].decode() + "\n"
    line = WITNESS.cosign(text, T)
    moved = add_cosignatures(fork.checkpoint(), [line])
    check = check_cosignatures(moved, [WITNESS.verifier])
    assert check.valid == ()
    assert check.invalid == ((WITNESS.name, WITNESS.verifier.key_id),)
    raw = bytearray(base64.b64decode(line.split()[-1]))
    raw[11] ^= 1  # another time
    retimed = f"\N{EM DASH} {WITNESS.name} {base64.b64encode(bytes(raw)).decode()}\n"
    assert check_cosignatures(
        add_cosignatures(log.checkpoint(), [retimed]), [WITNESS.verifier]
    ).invalid


def test_key_strings_are_checked() -> None:
    skey, vkey = generate_cosigner_key("witness.test/new")
    assert Cosigner.parse(skey).verifier == CosignatureVerifier.parse(vkey)
    with pytest.raises(CosignatureError, match="0x01"):
        CosignatureVerifier.parse(str(note.Signer("w", bytes(32)).verifier))  # a note key
    name, hex_id, material = vkey.split("+", 2)
    with pytest.raises(CosignatureError, match="does not match"):
        CosignatureVerifier.parse(f"{name}x+{hex_id}+{material}")
    with pytest.raises(CosignatureError):
        WITNESS.cosign("a\n1\nroot\n", 0)  # a witness's time is never omitted


def test_add_checkpoint_request_round_trip_and_strictness() -> None:
    log = Log().grow(9)
    proof = merkle.consistency_proof(4, 9, log.hashes)
    body = format_add_checkpoint(4, proof, log.checkpoint())
    assert parse_add_checkpoint(body) == (4, tuple(proof), log.checkpoint())
    assert Checkpoint.parse(parse_add_checkpoint(body).checkpoint.split(b"\n\n")[0].decode() + "\n")
    for bad in (
        b"old 04\n\n" + log.checkpoint(),
        b"old 4\n" + b"AAAA\n\n" + log.checkpoint(),  # not a 32-byte hash
        b"new 4\n\n" + log.checkpoint(),
        b"old 4\n",
        b"old 0\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\n",
    ):
        with pytest.raises(ProtocolError):
            parse_add_checkpoint(bad)
    assert parse_size(b"20852014\n") == 20852014
    with pytest.raises(ProtocolError):
        parse_size(b"012\n")
