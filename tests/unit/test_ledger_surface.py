"""The ledger format modules expose what we meant and depend on nothing an auditor lacks."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import tally.ledger
from imports import absolute_imports, third_party

LEDGER_DIR = Path(tally.ledger.__file__).parent
PUBLIC = {
    "note": {
        "ALG_ED25519", "MAX_SIGNATURES", "BadSignature", "InvalidKey", "MalformedNote",
        "NoteError", "OpenedNote", "Signer", "UnverifiedNote", "Verifier", "generate_key",
        "is_valid_name", "key_id", "open", "sign",
    },
    "checkpoint": {
        "MAX_TREE_SIZE", "Checkpoint", "CheckpointError", "admin_origin", "lane_origin",
        "open_checkpoint", "sign_checkpoint",
    },
    "tiles": {
        "MAX_ENTRY_SIZE", "MAX_LEVEL", "TILE_HEIGHT", "TILE_WIDTH", "Bundle", "BundleBuilder",
        "BundleData", "Tile", "TileData", "TileError", "TileReader", "TileSet", "bundle_path",
        "bundles_for_size", "decode_bundle", "decode_tile", "encode_bundle", "encode_tile",
        "new_bundles", "new_tiles", "parse_path", "tile_data", "tile_path", "tiles_for_size",
    },
    "leaf": {
        "ADMISSION_SIZE", "PSEUDONYM_SIZE", "SIGNATURE_SIZE", "Admission", "LeafError",
        "VoteRecord", "VoteStatus", "decode_leaf", "encode_leaf", "vote_leaf_hash",
    },
    "admin": {
        "MAX_LANES", "AdminAction", "AdminRecord", "AdmissionKey", "LeafError", "PollDefinition",
        "PollOption", "ReviewedVote", "admin_leaf_hash", "decode_admin", "encode_admin",
    },
    "admission": {
        "ADMISSION_CONTEXT", "MAX_ADMISSION_AGE_MS", "MAX_CLOCK_SKEW_MS", "REASONS", "Admission",
        "AdmissionKey", "AdmissionSigner", "admission_message", "check_admission",
        "check_admissions", "keys_from_admin",
    },
    "review": {
        "Decision", "LaneReview", "LeafError", "ReviewRecord", "decode_lane_record",
        "decode_review", "encode_review", "review_leaf_hash",
    },
    "layout": {
        "ADMIN_LOG", "CERTIFICATE", "HISTORY", "LayoutError", "checkpoint_path", "decode_history",
        "encode_history", "history_dir", "history_path", "lane_log", "parse_log", "parse_size",
    },
    "certificate": {
        "FORMAT", "FORMAT_V3", "CertificateError", "Integrity", "LogHead", "ResultCertificate",
        "ReviewTotals",
        "certificate_origin", "open_certificate", "sign_certificate",
    },
    "proof": {"HEADER", "InclusionProofText", "ProofFormatError"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names(name: str) -> None:
    """Each module's __all__ is exactly its intended surface, and every name exists."""
    module = importlib.import_module(f"tally.ledger.{name}")
    assert set(module.__all__) == PUBLIC[name]
    for attr in module.__all__:
        assert hasattr(module, attr), attr


@pytest.mark.parametrize("path", sorted(LEDGER_DIR.glob("*.py")), ids=lambda p: p.name)
def test_ledger_modules_import_only_the_stdlib_cryptography_and_each_other(path: Path) -> None:
    """The auditor can use these modules without the server: no Valkey, no web, no domain."""
    for name in absolute_imports(path):
        allowed = not third_party(name) or name.partition(".")[0] == "cryptography"
        assert allowed or name.startswith("tally.ledger"), f"{path.name} imports {name}"
