"""TALLY_WITNESSES: each entry '<url> <witness verifier key>', checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tally import config
from tally.ledger import note
from tally.ledger.cosignature import Cosigner
from tally.wiring.archiver import checkpoint_witnesses
from tally.witness_cli import load_log_keys

W1 = Cosigner("witness.test/w1", bytes(range(32))).verifier
W2 = Cosigner("witness.test/w2", bytes(range(1, 33))).verifier


def test_witnesses_are_parsed_and_built_into_the_archivers_client() -> None:
    raw = f"http://127.0.0.1:8003 {W1}, https://w2.example/ {W2}\n"
    settings = config.load({"TALLY_WITNESSES": raw})
    assert settings.witnesses == (
        ("http://127.0.0.1:8003", str(W1)),
        ("https://w2.example/", str(W2)),
    )
    built = checkpoint_witnesses(settings)
    assert built is not None
    assert [(e.url, e.key) for e in built.endpoints] == [
        ("http://127.0.0.1:8003", W1),
        ("https://w2.example", W2),
    ]
    assert checkpoint_witnesses(config.load({})) is None
    assert config.load({"TALLY_WITNESSES": raw}).public_view()["TALLY_WITNESSES"].count("http") == 2


@pytest.mark.parametrize(
    "raw",
    [
        f"127.0.0.1:8003 {W1}",  # no scheme
        "http://127.0.0.1:8003",  # no key
        "http://127.0.0.1:8003 tally.test/ledger+f18e0ffe+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        f"http://127.0.0.1:8003 {W1} extra",
    ],
)
def test_a_malformed_witness_entry_is_refused_at_start(raw: str) -> None:
    with pytest.raises(config.ConfigError, match="TALLY_WITNESSES"):
        config.load({"TALLY_WITNESSES": raw})


def test_log_keys_come_from_a_key_the_ledger_keys_document_or_a_file(tmp_path: Path) -> None:
    """`tally witness --log-key "$(curl .../ledger/keys)"` follows the ledger key and skips the
    gateways' admission keys (the lines with a validity period after the key)."""
    ledger = note.Signer("tally.test/ledger", bytes(range(32))).verifier
    admission = note.Signer("tally.test/ledger/admission/gw", bytes(range(1, 33))).verifier
    document = f"{ledger}\n{admission} 0 0\n"
    saved = tmp_path / "keys"
    saved.write_text(document)
    for value in (str(ledger), document, str(saved)):
        assert [str(k) for k in load_log_keys([value])] == [str(ledger)]
