"""The evidence key ring (security/evidence.py): AES-256-GCM blobs bound to their vote, key ids
for rotation, key files made once 0600, TALLY_EVIDENCE_KEYS. Pure, no store."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from tally import config
from tally.security.evidence import (
    DELETED,
    EvidenceError,
    EvidenceKeys,
    FieldState,
    KeyRing,
    NetworkEvidence,
    field_key_id,
    field_state,
    open_field,
    parse_env_keys,
    seal_field,
)

EVIDENCE = NetworkEvidence("203.0.113.77", "203.0.113.0/24", "EvidenceProbe/9.9 (unit)")
K1, K2 = b"\x01" * 32, b"\x02" * 32


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def test_a_sealed_field_opens_for_its_vote_and_shows_nothing_in_clear() -> None:
    ring = KeyRing({1: K1})
    field = seal_field(ring, "poll-a", 3, 17, EVIDENCE)
    assert field_state(field) is FieldState.SEALED
    assert "|" not in field
    assert field.startswith("e1.")
    for clear in ("203.0.113", "EvidenceProbe", "poll-a"):
        assert clear not in field
        assert clear.encode() not in base64.urlsafe_b64decode(field[3:] + "==")
    assert open_field(ring, field, "poll-a", 3, 17) == EVIDENCE
    assert field_key_id(field) == 1


def test_the_same_evidence_seals_differently_each_time() -> None:
    """A fresh nonce per blob: equal evidence does not give equal fields (no linking by value)."""
    ring = KeyRing({1: K1})
    assert seal_field(ring, "p", 0, 1, EVIDENCE) != seal_field(ring, "p", 0, 1, EVIDENCE)


@pytest.mark.parametrize(
    ("poll", "lane", "seq"),
    [("poll-b", 3, 17), ("poll-a", 2, 17), ("poll-a", 3, 18)],
    ids=["other-poll", "other-lane", "other-vote"],
)
def test_a_blob_moved_to_another_vote_is_refused(poll: str, lane: int, seq: int) -> None:
    ring = KeyRing({1: K1})
    field = seal_field(ring, "poll-a", 3, 17, EVIDENCE)
    with pytest.raises(EvidenceError) as refused:
        open_field(ring, field, poll, lane, seq)
    assert refused.value.code == "tampered"


def test_a_tampered_blob_is_refused() -> None:
    ring = KeyRing({1: K1})
    field = seal_field(ring, "poll-a", 0, 1, EVIDENCE)
    blob = bytearray(base64.urlsafe_b64decode(field[3:] + "=" * (-len(field[3:]) % 4)))
    for position in (4, 20, len(blob) - 1):  # nonce, ciphertext, tag
        altered = bytearray(blob)
        altered[position] ^= 0x01
        forged = "e1." + b64(bytes(altered))
        with pytest.raises(EvidenceError) as refused:
            open_field(ring, forged, "poll-a", 0, 1)
        assert refused.value.code == "tampered"


def test_a_blob_under_a_key_id_the_ring_lacks_is_refused() -> None:
    field = seal_field(KeyRing({7: K1}), "poll-a", 0, 1, EVIDENCE)
    with pytest.raises(EvidenceError) as refused:
        open_field(KeyRing({1: K1, 2: K2}), field, "poll-a", 0, 1)
    assert refused.value.code == "unknown-key"
    # A wrong key under the right id fails authentication.
    with pytest.raises(EvidenceError) as refused:
        open_field(KeyRing({7: K2}), field, "poll-a", 0, 1)
    assert refused.value.code == "tampered"


@pytest.mark.parametrize("field", ["e1.", "e1.!!!", "e1.AAAA", "x1.abc"])
def test_a_malformed_field_is_refused(field: str) -> None:
    with pytest.raises(EvidenceError) as refused:
        open_field(KeyRing({1: K1}), field, "p", 0, 1)
    assert refused.value.code == "malformed"


def test_the_newest_key_seals_and_every_key_opens() -> None:
    old = seal_field(KeyRing({1: K1}), "p", 0, 1, EVIDENCE)
    ring = KeyRing({1: K1, 2: K2})
    new = seal_field(ring, "p", 0, 2, EVIDENCE)
    assert (field_key_id(old), field_key_id(new), ring.current_id) == (1, 2, 2)
    assert open_field(ring, old, "p", 0, 1) == open_field(ring, new, "p", 0, 2) == EVIDENCE


def test_field_states() -> None:
    assert field_state("") is FieldState.NONE
    assert field_state(DELETED) is FieldState.DELETED
    assert field_state("198.51.100.0/24") is FieldState.LEGACY  # before sealing, a clear subnet
    assert seal_field(KeyRing({1: K1}), "p", 0, 1, NetworkEvidence()) == ""


def test_a_user_agent_is_kept_bounded() -> None:
    ring = KeyRing({1: K1})
    long = NetworkEvidence("192.0.2.1", "192.0.2.0/24", "A" * 10_000)
    opened = open_field(ring, seal_field(ring, "p", 0, 1, long), "p", 0, 1)
    assert opened.user_agent == "A" * 512


def test_key_files_are_made_once_0600_and_rotation_adds_one(tmp_path: Path) -> None:
    keys = EvidenceKeys(tmp_path)
    first = keys.ring()
    assert first.ids == [1]
    directory = tmp_path / "secrets" / "evidence"
    assert stat.S_IMODE((directory / "1.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    field = seal_field(first, "p", 0, 1, EVIDENCE)
    # Another process (another gateway on this data dir) sees the rotation without restarting.
    other = EvidenceKeys(tmp_path)
    assert other.ring().current_id == 1
    assert keys.rotate() == 2
    assert other.ring().current_id == 2
    assert stat.S_IMODE((directory / "2.key").stat().st_mode) == 0o600
    assert open_field(other.ring(), field, "p", 0, 1) == EVIDENCE
    with pytest.raises(ValueError, match="current key"):
        keys.drop(2)
    with pytest.raises(ValueError, match="no evidence key 9"):
        keys.drop(9)
    keys.drop(1)
    assert not (directory / "1.key").exists()
    with pytest.raises(EvidenceError) as refused:
        open_field(other.ring(), field, "p", 0, 1)  # crypto-shredded
    assert refused.value.code == "unknown-key"


def test_keys_from_the_environment(tmp_path: Path) -> None:
    keys = EvidenceKeys(tmp_path, f"1:{b64(K1)}, 4:{b64(K2)}")
    assert (keys.ring().ids, keys.ring().current_id, keys.from_env) == ([1, 4], 4, True)
    assert not (tmp_path / "secrets").exists()  # no key file is made
    with pytest.raises(ValueError, match="TALLY_EVIDENCE_KEYS"):
        keys.rotate()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1", "entry 1 is not"),
        ("0:" + b64(K1), "entry 1 is not"),
        ("1:" + b64(b"short"), "5 bytes"),
        ("1:%%%", "not base64url"),
        (f"1:{b64(K1)},1:{b64(K2)}", "appears twice"),
    ],
)
def test_bad_environment_keys_are_refused_without_echoing_them(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_env_keys(raw)
    with pytest.raises(config.ConfigError) as refused:
        config.load({"TALLY_EVIDENCE_KEYS": raw})
    said = str(refused.value)
    assert said.startswith("TALLY_EVIDENCE_KEYS "), said
    assert said.endswith("(value hidden)"), said
    assert b64(K1) not in said


def test_settings_mask_the_keys_and_read_the_retention() -> None:
    settings = config.load(
        {"TALLY_EVIDENCE_KEYS": f"1:{b64(K1)}", "TALLY_EVIDENCE_RETENTION_S": "5"}
    )
    assert settings.evidence_retention_s == 5
    assert settings.public_view()["TALLY_EVIDENCE_KEYS"] == "********"
    assert config.load({}).evidence_retention_s == 30 * 86_400
    with pytest.raises(config.ConfigError, match="TALLY_EVIDENCE_RETENTION_S"):
        config.load({"TALLY_EVIDENCE_RETENTION_S": "0"})
