"""Checkpoints follow C2SP tlog-checkpoint exactly and are opened only for the log expected."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.ledger import note
from tally.ledger.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    admin_origin,
    lane_origin,
    open_checkpoint,
    sign_checkpoint,
)
from tally.ledger.merkle import EMPTY_ROOT

# The example body of c2sp.org/tlog-checkpoint.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
ROOT = hashlib.sha256(b"root").digest()
ROOT64 = base64.b64encode(ROOT).decode()
URL_SAFE_ROOT = base64.urlsafe_b64encode(bytes([0xFF] * 32)).decode()
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The same 32 bytes with one of the last character's two unused bits set.
NON_CANONICAL_ROOT = ROOT64[:-2] + _B64[_B64.index(ROOT64[-2]) ^ 1] + "="
ORIGIN = "tally.example/ledger/final/3"
SIGNER = note.Signer(ORIGIN, bytes(range(32)))


def test_the_spec_example_parses_and_formats_back() -> None:
    """The tlog-checkpoint example body is a checkpoint, and formats to the same text."""
    checkpoint = Checkpoint.parse(SPEC_BODY)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.format() == SPEC_BODY


def test_the_empty_tree_has_size_zero() -> None:
    """An empty log's checkpoint says 0 and the SHA-256 of nothing."""
    text = Checkpoint(ORIGIN, 0, EMPTY_ROOT).format()
    assert text == f"{ORIGIN}\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert Checkpoint.parse(text).size == 0


def test_extension_lines_round_trip() -> None:
    """Extension lines follow the root hash, one per line, in order."""
    checkpoint = Checkpoint(ORIGIN, 5, ROOT, ("ext one", "ext+two"))
    assert checkpoint.format().endswith(f"{ROOT64}\next one\next+two\n")
    assert Checkpoint.parse(checkpoint.format()) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n1\n{ROOT64}",  # no final newline
        f"{ORIGIN}\n1\n",  # no root line
        f"{ORIGIN}\n",
        "",
        f"\n1\n{ROOT64}\n",  # empty origin
        f"{ORIGIN}\n01\n{ROOT64}\n",  # leading zero
        f"{ORIGIN}\n00\n{ROOT64}\n",
        f"{ORIGIN}\n-1\n{ROOT64}\n",
        f"{ORIGIN}\n+1\n{ROOT64}\n",
        f"{ORIGIN}\n 1\n{ROOT64}\n",
        f"{ORIGIN}\n1 \n{ROOT64}\n",
        f"{ORIGIN}\n1_000\n{ROOT64}\n",
        f"{ORIGIN}\n\u0661\n{ROOT64}\n",  # an Arabic-Indic digit one
        f"{ORIGIN}\n0x10\n{ROOT64}\n",
        f"{ORIGIN}\n\n{ROOT64}\n",
        f"{ORIGIN}\n{2**64}\n{ROOT64}\n",  # past uint64
        f"{ORIGIN}\n1\n{ROOT64[:-1]}\n",  # padding missing
        f"{ORIGIN}\n1\n{NON_CANONICAL_ROOT}\n",  # non-zero padding bits
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31 bytes
        f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",  # 33 bytes
        f"{ORIGIN}\n1\n{URL_SAFE_ROOT}\n",  # URL-safe alphabet
        f"{ORIGIN}\n1\n {ROOT64}\n",
        f"{ORIGIN}\n1\n{ROOT64}\n\n",  # empty extension line
        f"{ORIGIN}\n1\n{ROOT64}\next\n\n",
        f"{ORIGIN}\r\n1\n{ROOT64}\n",  # CRLF
        f"{ORIGIN}\x00\n1\n{ROOT64}\n",  # control character
        f"{ORIGIN}\n1\n{ROOT64}\next\x7f\x01\n",
    ],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    """Every departure from the checkpoint body syntax raises CheckpointError."""
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        (ORIGIN, -1, ROOT, ()),
        (ORIGIN, MAX_TREE_SIZE + 1, ROOT, ()),
        (ORIGIN, 1, ROOT[:31], ()),
        (ORIGIN, 1, ROOT, ("",)),
        (ORIGIN, 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoints_cannot_be_built_malformed(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    """The constructor enforces what parse does, so format() always yields a valid body."""
    with pytest.raises(CheckpointError):
        Checkpoint(origin, size, root, extensions)


def test_a_signed_checkpoint_opens_for_its_origin() -> None:
    """A checkpoint signed by the log's key opens to the same checkpoint."""
    checkpoint = Checkpoint(ORIGIN, 42, ROOT)
    signed = sign_checkpoint(checkpoint, [SIGNER])
    assert signed.startswith(checkpoint.format().encode() + b"\n\xe2\x80\x94 " + ORIGIN.encode())
    assert open_checkpoint(signed, [SIGNER.verifier], origin=ORIGIN) == checkpoint


def test_a_checkpoint_of_another_log_is_refused() -> None:
    """A validly signed checkpoint of lane 3 is not accepted as lane 4's."""
    signed = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), [SIGNER])
    with pytest.raises(CheckpointError, match="expected"):
        open_checkpoint(signed, [SIGNER.verifier], origin="tally.example/ledger/final/4")


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    """Only the trusted key's signature counts."""
    other = note.Signer(ORIGIN, bytes(32))
    signed = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), [other])
    with pytest.raises(note.UnverifiedNote):
        open_checkpoint(signed, [SIGNER.verifier], origin=ORIGIN)


def test_an_altered_checkpoint_fails_its_signature() -> None:
    """Changing the tree size after signing breaks the signature."""
    signed = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), [SIGNER])
    with pytest.raises(note.BadSignature):
        open_checkpoint(signed.replace(b"\n42\n", b"\n43\n"), [SIGNER.verifier], origin=ORIGIN)


def test_a_signed_note_with_a_malformed_body_is_refused() -> None:
    """A valid signature over something that is not a checkpoint is still refused."""
    signed = note.sign(f"{ORIGIN}\n042\n{ROOT64}\n", [SIGNER])
    with pytest.raises(CheckpointError):
        open_checkpoint(signed, [SIGNER.verifier], origin=ORIGIN)


def test_our_origins() -> None:
    """Lane logs are <prefix>/<poll>/<lane>, admin logs <prefix>/<poll>/admin."""
    assert (
        lane_origin("tally.example/ledger", "final-2025", 3) == "tally.example/ledger/final-2025/3"
    )
    assert (
        admin_origin("tally.example/ledger", "final-2025")
        == "tally.example/ledger/final-2025/admin"
    )
    assert note.is_valid_name(lane_origin("tally.example", "p", 0))


@pytest.mark.parametrize(
    "prefix",
    ["", "https://tally.example", "tally.example/", "/tally.example", "tally example", "a+b"],
)
def test_origin_prefixes_are_urls_without_scheme_or_end_slash(prefix: str) -> None:
    """A prefix with a scheme, an end slash, a space or a plus is refused."""
    with pytest.raises(ValueError, match="prefix"):
        lane_origin(prefix, "p", 0)


@pytest.mark.parametrize("poll_id", ["", "a/b", "a b", "a+b"])
def test_origins_need_a_poll_id_that_stays_one_path_element(poll_id: str) -> None:
    """A poll id that is empty or would add path elements, spaces or plus signs is refused."""
    with pytest.raises(ValueError, match="poll id"):
        admin_origin("tally.example", poll_id)


def test_lanes_are_not_negative() -> None:
    """Lane numbers start at 0."""
    with pytest.raises(ValueError, match="lane"):
        lane_origin("tally.example", "p", -1)


_line = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20)


@given(
    _line,
    st.integers(0, MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(_line, max_size=3).map(tuple),
)
def test_any_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    """format and parse are inverses."""
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert Checkpoint.parse(checkpoint.format()) == checkpoint
