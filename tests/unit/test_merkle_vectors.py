"""The verifiers agree with every public transparency-dev/merkle proof vector.

The vectors live outside the project, in ``../shared/testdata/merkle-vectors`` (or wherever
``TALLY_MERKLE_VECTORS`` points); without them these tests are skipped.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tally.ledger.merkle import ProofError, verify_consistency, verify_inclusion

VECTORS = Path(
    os.environ.get("TALLY_MERKLE_VECTORS")
    or Path(__file__).resolve().parents[3] / "shared" / "testdata" / "merkle-vectors"
)


def _cases(kind: str) -> list[pytest.ParameterSet]:
    """One param per vector file of a kind, or a single skipped param without the folder."""
    if not VECTORS.is_dir():
        reason = f"no Merkle vectors at {VECTORS} (set TALLY_MERKLE_VECTORS)"
        return [pytest.param(None, id="vectors-missing", marks=pytest.mark.skip(reason=reason))]
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(f, id=f.relative_to(VECTORS).as_posix()) for f in files]


def _load(path: Path) -> dict[str, Any]:
    """Read one vector file."""
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _hash(value: str | None) -> bytes:
    """Decode a base64 hash; JSON null is an absent (empty) hash."""
    return b"" if value is None else base64.b64decode(value, validate=True)


def _proof(value: list[str | None] | None) -> list[bytes]:
    """Decode a proof; JSON null is how Go writes a nil proof, i.e. no hashes."""
    return [_hash(item) for item in value or []]


@pytest.mark.skipif(not VECTORS.is_dir(), reason=f"no Merkle vectors at {VECTORS}")
def test_vector_folder_holds_both_kinds() -> None:
    """The vector folder is complete enough to mean something: both kinds are present."""
    assert _cases("inclusion")
    assert _cases("consistency")


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vector(path: Path) -> None:
    """An inclusion vector is accepted, or rejected with ProofError when wantErr is set."""
    case = _load(path)

    def verify() -> None:
        verify_inclusion(
            _hash(case["leafHash"]),
            case["leafIdx"],
            case["treeSize"],
            _proof(case["proof"]),
            _hash(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vector(path: Path) -> None:
    """A consistency vector is accepted, or rejected with ProofError when wantErr is set."""
    case = _load(path)

    def verify() -> None:
        verify_consistency(
            case["size1"],
            case["size2"],
            _proof(case["proof"]),
            _hash(case["root1"]),
            _hash(case["root2"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify()
    else:
        verify()
