"""The result certificate and tlog-proof texts: exact round trips, strict parsing, signatures."""

from __future__ import annotations

import pytest

from tally.ledger import note
from tally.ledger.certificate import (
    CertificateError,
    LogHead,
    ResultCertificate,
    certificate_origin,
    open_certificate,
    sign_certificate,
)
from tally.ledger.proof import InclusionProofText, ProofFormatError

ORIGIN = "tally.example/ledger/final/certificate"
ROOT = bytes(range(32))
TEXT = (
    f"{ORIGIN}\n"
    "tally-result/v1\n"
    "poll final\n"
    "log admin 3 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "log 0 2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "log 1 1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    "count alice 2\n"
    "count bob 1\n"
    "total 3\n"
)


def certificate() -> ResultCertificate:
    return ResultCertificate(
        ORIGIN,
        "final",
        LogHead(3, ROOT),
        (LogHead(2, ROOT), LogHead(1, ROOT)),
        (("alice", 2), ("bob", 1)),
    )


def test_the_text_is_exactly_as_documented() -> None:
    assert certificate().format() == TEXT
    assert ResultCertificate.parse(TEXT) == certificate()


@pytest.mark.parametrize(
    "broken",
    [
        TEXT.replace("total 3", "total 4"),
        TEXT.replace("tally-result/v1", "tally-result/v2"),
        TEXT.replace("log 1 1", "log 2 1"),
        TEXT.replace("log 0 2", "log 0 02"),
        TEXT.replace("count bob 1\n", "count bob 1\ncount bob 0\n"),
        TEXT.replace("count bob 1\n", ""),
        TEXT.replace("count bob 1", "count bob -1"),
        TEXT.replace("poll final", "poll  final"),
        TEXT.replace("Hh8=\nlog 0", "Hh9=\nlog 0"),
        TEXT.replace("AAEC", "AAE", 1),
        TEXT[:-1],
        TEXT + "extra\n",
        TEXT.replace("log admin 3 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", ""),
    ],
)
def test_parsing_refuses_any_deviation(broken: str) -> None:
    with pytest.raises(CertificateError):
        ResultCertificate.parse(broken)


def test_signed_certificates_open_only_under_their_origin_and_key() -> None:
    skey, _ = note.generate_key("tally.example/ledger")
    signer = note.Signer.parse(skey)
    origin = certificate_origin(signer.name, "final")
    assert origin == ORIGIN
    signed = sign_certificate(certificate(), [signer.renamed(origin)])
    assert (
        open_certificate(signed, [signer.verifier.renamed(origin)], origin=origin) == certificate()
    )
    with pytest.raises(CertificateError):
        open_certificate(signed, [signer.verifier.renamed(origin)], origin=origin + "x")
    other = note.Signer.parse(note.generate_key("tally.example/ledger")[0])
    with pytest.raises(note.NoteError):
        open_certificate(signed, [other.verifier.renamed(origin)], origin=origin)


def test_tlog_proof_round_trip_and_strictness() -> None:
    checkpoint = b"o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\xe2\x80\x94 o AAAA\n"
    proof = InclusionProofText(7, (ROOT, bytes(32)), checkpoint, b"record")
    text = proof.format()
    assert text.startswith(b"c2sp.org/tlog-proof@v1\nextra cmVjb3Jk\nindex 7\n")
    assert InclusionProofText.parse(text) == proof
    assert InclusionProofText.parse(InclusionProofText(0, (), checkpoint).format()).extra is None
    for broken in (
        text.replace(b"index 7", b"index 07"),
        text.replace(b"tlog-proof@v1", b"tlog-proof@v2"),
        text.replace(b"extra cmVjb3Jk", b"extra cmVjb3J"),
        text.split(b"\n\n")[0],
    ):
        with pytest.raises(ProofFormatError):
            InclusionProofText.parse(broken)
