"""Signed notes follow C2SP signed-note and match sumdb/note's published keys and signatures."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.ledger import note
from tally.ledger.note import (
    BadSignature,
    InvalidKey,
    MalformedNote,
    NoteError,
    Signer,
    UnverifiedNote,
    Verifier,
)

# The reference vectors of golang.org/x/mod/sumdb/note (note.go's package doc and note_test.go).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
PETER_NOTE = (TEXT + "\n" + PETER_SIG).encode()

PETER = Verifier.parse(PETER_VKEY)
ENOCH = Verifier.parse(ENOCH_VKEY)


def test_reference_keys_parse_to_their_names_and_ids() -> None:
    """The sumdb/note example keys parse, and the key ID is the spec's SHA-256 prefix."""
    signer = Signer.parse(PETER_SKEY)
    assert (PETER.name, PETER.key_id) == ("PeterNeumann", 0xC74F20A3)
    assert (ENOCH.name, ENOCH.key_id) == ("EnochRoot", 0xAF0CFE78)
    assert note.key_id("PeterNeumann", PETER.public_key) == 0xC74F20A3
    assert signer.verifier == PETER
    assert str(PETER) == PETER_VKEY
    assert signer.private_key_string() == PETER_SKEY


def test_signing_the_reference_text_reproduces_the_reference_note() -> None:
    """Ed25519 is deterministic, so our note is sumdb/note's byte for byte."""
    assert note.sign(TEXT, [Signer.parse(PETER_SKEY)]) == PETER_NOTE


def test_opening_the_reference_note_returns_its_text_and_signer() -> None:
    """A note signed by a known key opens to its text and that key's name."""
    assert note.open(PETER_NOTE, [PETER]) == (TEXT, ("PeterNeumann",))


def test_both_reference_signatures_verify_when_both_keys_are_known() -> None:
    """Each known key's signature is checked and reported, in note order."""
    opened = note.open(PETER_NOTE + ENOCH_SIG.encode(), [ENOCH, PETER])
    assert opened.signers == ("PeterNeumann", "EnochRoot")


def test_signatures_by_unknown_keys_are_ignored() -> None:
    """An unknown key's signature neither verifies nor fails the note."""
    assert note.open(PETER_NOTE + ENOCH_SIG.encode(), [PETER]).signers == ("PeterNeumann",)


def test_a_key_known_by_name_but_not_id_is_unknown() -> None:
    """Name and key ID together identify a key; sharing one of them is not enough."""
    impostor = Signer("PeterNeumann", bytes(32))  # same name, other key, so another ID
    with pytest.raises(UnverifiedNote) as caught:
        note.open(note.sign(TEXT, [impostor]), [PETER])
    assert caught.value.unknown == (("PeterNeumann", impostor.key_id),)


def test_a_note_with_no_known_signature_is_unverified() -> None:
    """With no signature from a known key the note is rejected, naming the keys it had."""
    with pytest.raises(UnverifiedNote, match="PeterNeumann\\+c74f20a3, EnochRoot\\+af0cfe78"):
        note.open(PETER_NOTE + ENOCH_SIG.encode(), [])


def test_a_known_keys_bad_signature_rejects_the_whole_note() -> None:
    """One failing known signature rejects the note even when another verifies."""
    bad_peter = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(BadSignature, match="PeterNeumann\\+c74f20a3"):
        note.open((TEXT + "\n" + ENOCH_SIG + bad_peter).encode(), [PETER, ENOCH])


def test_repeated_signatures_are_ignored() -> None:
    """A known key's later signatures and repeated unknown ones are skipped, as in sumdb/note."""
    bad_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    signed = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + bad_enoch
    assert note.open(signed.encode(), [PETER]).signers == ("PeterNeumann",)


def test_identical_verifiers_given_twice_are_not_ambiguous() -> None:
    """Passing the same key twice is harmless."""
    assert note.open(PETER_NOTE, [PETER, ENOCH, PETER]).signers == ("PeterNeumann",)


def test_the_text_may_hold_blank_lines() -> None:
    """The last blank line separates text from signatures; earlier ones belong to the text."""
    text = "a\n\n\nb\n\n"
    signed = note.sign(text, [Signer.parse(PETER_SKEY)])
    assert note.open(signed, [PETER]).text == text


def test_at_most_100_signatures() -> None:
    """100 signature lines are accepted; 101 are malformed whoever signed them."""
    assert note.open((TEXT + "\n" + PETER_SIG * 100).encode(), [PETER]).signers == ("PeterNeumann",)
    for known in ([PETER], []):
        with pytest.raises(MalformedNote):
            note.open((TEXT + "\n" + PETER_SIG * 101).encode(), known)


_SIG_B64 = PETER_SIG.split(" ")[2].strip()


@pytest.mark.parametrize(
    "signed",
    [
        TEXT,  # no signatures
        TEXT + "\n",  # blank line but no signature lines
        TEXT + "\n" + PETER_SIG[:-1],  # last line without its newline
        "\x01" + TEXT + "\n" + PETER_SIG,  # control character
        TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG,  # carriage return
        "\t" + TEXT + "\n" + PETER_SIG,  # tab
        TEXT + "\n" + "— Bad Name " + _SIG_B64 + "\n",  # space in name
        TEXT + "\n" + "— Peter+Neumann " + _SIG_B64 + "\n",  # plus in name
        TEXT + "\n" + "—  " + _SIG_B64 + "\n",  # empty name
        TEXT + "\n" + "— Peter\u00a0Neumann " + _SIG_B64 + "\n",  # Unicode space in name
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG + "\n",  # blank line after the signatures
        TEXT + "\n" + "- PeterNeumann " + _SIG_B64 + "\n",  # hyphen, not em dash
        TEXT + "\n" + "—PeterNeumann " + _SIG_B64 + "\n",  # no space after the dash
        TEXT + "\n" + "— PeterNeumann\n",  # no signature
        TEXT + "\n" + "— PeterNeumann \n",  # empty signature
        TEXT + "\n" + "— PeterNeumann  " + _SIG_B64 + "\n",  # two spaces
        TEXT + "\n" + "— PeterNeumann " + _SIG_B64 + " \n",  # trailing space
        TEXT + "\n" + "— PeterNeumann " + _SIG_B64.rstrip("=") + "\n",  # missing padding
        TEXT + "\n" + "— PeterNeumann " + _SIG_B64.replace("M=", "N=") + "\n",  # non-canonical
        TEXT + "\n" + "— PeterNeumann " + _SIG_B64.replace("/", "_") + "\n",  # URL alphabet
        TEXT + "\n" + "— PeterNeumann AAAAAA==\n",  # 4 bytes: a key ID and no signature
    ],
)
def test_malformed_notes_are_rejected(signed: str) -> None:
    """Every departure from the note syntax raises MalformedNote, known key or not."""
    with pytest.raises(MalformedNote):
        note.open(signed.encode(), [PETER])


@pytest.mark.parametrize(
    "raw", [b"\xff" + PETER_NOTE, PETER_NOTE.replace(b"\xe2\x80\x94", b"\xe2\x80")]
)
def test_notes_that_are_not_utf8_are_malformed(raw: bytes) -> None:
    """A note must be valid UTF-8."""
    with pytest.raises(MalformedNote):
        note.open(raw, [PETER])


def test_every_single_bit_flip_of_a_note_is_rejected() -> None:
    """No one-bit change to a signed note still opens: canonical base64 leaves no slack."""
    for i in range(len(PETER_NOTE) * 8):
        flipped = bytearray(PETER_NOTE)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(NoteError):
            note.open(bytes(flipped), [PETER])


def _substrings(key: str) -> list[str]:
    return [key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)]


def _increments(key: str) -> list[str]:
    return [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]


def test_every_mangled_verifier_key_is_rejected() -> None:
    """Every proper substring and every one-character change of a verifier key fails to parse."""
    for mangled in [*_substrings(PETER_VKEY)[:-1], *_increments(PETER_VKEY)]:
        if mangled != PETER_VKEY:
            with pytest.raises(InvalidKey):
                Verifier.parse(mangled)


def test_every_mangled_signer_key_is_rejected() -> None:
    """Every proper substring and every one-character change of a signer key fails to parse."""
    for mangled in [*_substrings(PETER_SKEY), *_increments(PETER_SKEY)]:
        if mangled != PETER_SKEY:
            with pytest.raises(InvalidKey):
                Signer.parse(mangled)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x02" + PETER.public_key).decode(),
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + PETER.public_key[:31]).decode(),
        "PeterNeumann+c74f20a3+",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+0xc74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_verifier_keys_need_an_ed25519_key_a_hex_id_and_a_name(vkey: str) -> None:
    """Unknown algorithm bytes, short keys, bad IDs and empty names are invalid keys."""
    with pytest.raises(InvalidKey):
        Verifier.parse(vkey)


def test_uppercase_hex_key_ids_are_accepted_as_sumdb_note_does() -> None:
    """The key ID is parsed as a number, so its hex case does not matter."""
    assert Verifier.parse(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == PETER


@pytest.mark.parametrize(
    "name", ["", "a b", "a+b", "a\tb", "a\nb", "a\u2003b", "a\u3000b", "a\x00b", "\ud800"]
)
def test_invalid_key_names(name: str) -> None:
    """Key names are non-empty with no white space, plus, control or surrogate characters."""
    assert not note.is_valid_name(name)
    with pytest.raises(InvalidKey):
        note.generate_key(name)


@pytest.mark.parametrize("name", ["tally.example/ledger/final/3", "PeterNeumann", "é/ü", "a-b_c"])
def test_valid_key_names(name: str) -> None:
    """URL-like and non-ASCII names are valid."""
    assert note.is_valid_name(name)


def test_generated_keys_sign_and_verify() -> None:
    """A generated key pair parses back and its signatures verify, and only on the same text."""
    skey, vkey = note.generate_key("tally.example/ledger/p/0")
    signer, verifier = Signer.parse(skey), Verifier.parse(vkey)
    assert signer.verifier == verifier
    signed = note.sign("hello\n", [signer])
    assert note.open(signed, [verifier]).signers == ("tally.example/ledger/p/0",)
    with pytest.raises(BadSignature):
        note.open(signed.replace(b"hello", b"jello"), [verifier])


def test_renaming_a_key_keeps_the_key_and_changes_the_id() -> None:
    """A renamed key has the same public key, a new ID, and only verifies its own name's notes."""
    signer = Signer.parse(PETER_SKEY).renamed("tally.example/ledger/p/1")
    assert signer.verifier.public_key == PETER.public_key
    assert signer.key_id != PETER.key_id
    assert PETER.renamed(signer.name) == signer.verifier
    with pytest.raises(UnverifiedNote):
        note.open(note.sign(TEXT, [signer]), [PETER])


def test_a_signers_repr_hides_the_private_key() -> None:
    """repr shows name and key ID, never the seed."""
    signer = Signer.parse(PETER_SKEY)
    assert repr(signer) == "Signer('PeterNeumann', key_id=c74f20a3)"
    assert "AYEKFALV" not in repr(signer)


@pytest.mark.parametrize(
    "text", ["", "no newline", "tab\there\n", "cr\r\n", "nul\x00\n", "\ud800\n"]
)
def test_signing_rejects_texts_that_could_not_be_opened(text: str) -> None:
    """The text must end in a newline and hold no control character but newline."""
    with pytest.raises(MalformedNote):
        note.sign(text, [Signer.parse(PETER_SKEY)])


def test_signing_needs_signers_with_distinct_keys() -> None:
    """A note needs at least one signature, and one signer per key."""
    signer = Signer.parse(PETER_SKEY)
    with pytest.raises(MalformedNote):
        note.sign(TEXT, [])
    with pytest.raises(InvalidKey):
        note.sign(TEXT, [signer, signer])


def test_ed25519_key_sizes_are_checked() -> None:
    """Seeds and public keys are 32 bytes."""
    with pytest.raises(InvalidKey):
        Signer("name", bytes(31))
    with pytest.raises(InvalidKey):
        Verifier("name", bytes(33))


def test_the_verifier_rejects_signatures_of_the_wrong_length() -> None:
    """verify is False, not an exception, for a truncated signature."""
    signer = Signer.parse(PETER_SKEY)
    assert not PETER.verify(b"m", signer.sign(b"m")[:63])
    assert PETER.verify(b"m", signer.sign(b"m"))


_SIGNER = Signer("tally.example/ledger/prop/0", bytes(range(32)))
_note_text = st.lists(
    st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=30), min_size=1, max_size=5
).map(lambda lines: "".join(line + "\n" for line in lines))


@given(_note_text)
def test_any_valid_text_round_trips(text: str) -> None:
    """Whatever valid text is signed opens to exactly that text."""
    assert note.open(note.sign(text, [_SIGNER]), [_SIGNER.verifier]).text == text
