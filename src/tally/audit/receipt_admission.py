"""The admission signature on a receipt, for ``tally audit receipt``: which gateway admitted the
vote, checked with nothing but the receipt and the gateway's public key.

A receipt of a signed vote (docs/ledger-format.md §14.4) carries the pseudonym and the
admission (key id, admitted time, signature), so the vote record can be rebuilt from the
receipt alone: its leaf hash must be the receipt's ``leaf_hash`` (the receipt is one signed
vote, not a collage), and the signature must verify under the admission key with that id
(:func:`tally.ledger.admission.check_admission`). The keys are the ``--admission-key`` pins, or
those the server publishes at ``GET /ledger/keys`` (the lines named ``<prefix>/admission/...``).
A valid signature proves, to anyone, that the gateway admitted this vote: if the final log does
not hold it, the vote was lost or removed after admission.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tally.ledger import note
from tally.ledger.admission import AdmissionKey, check_admission
from tally.ledger.leaf import Admission, VoteRecord

__all__ = ["ADMISSION_SEGMENT", "AdmissionVerdict", "admission_keys", "check_receipt_admission"]

ADMISSION_SEGMENT = "/admission/"  # admission key names: <ledger origin prefix>/admission/<gateway>

# check_admission's reason -> the receipt finding code (as verify's, docs/ledger-format.md §14.3).
_CODE_OF_REASON = {
    "unknown-key": "admission-unknown-key",
    "key-not-valid-then": "admission-key-not-valid",
    "bad-signature": "admission-bad-signature",
    "admitted-too-early": "admission-time",
    "admitted-too-late": "admission-time",
}


def admission_keys(verifiers: Iterable[note.Verifier]) -> dict[int, AdmissionKey]:
    """The admission keys among ``verifiers``, by key id, valid at any time (a published or
    pinned key string carries no validity period: the poll's admin log does)."""
    return {
        verifier.key_id: AdmissionKey(verifier.name, verifier.public_key) for verifier in verifiers
    }


def published_keys(text: str) -> dict[int, AdmissionKey]:
    """The admission keys of a ``/ledger/keys`` document, by key id: each line is a verifier key,
    an admission key's (named ``.../admission/...``) followed by its validity, ``<not before ms>
    <not after ms, 0: no end>``. The ledger key's line, and a line that does not parse, are
    skipped."""
    keys: dict[int, AdmissionKey] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or ADMISSION_SEGMENT not in words[0].partition("+")[0]:
            continue
        try:
            verifier = note.Verifier.parse(words[0])
            validity = [int(word) for word in words[1:3]]
            key = AdmissionKey(verifier.name, verifier.public_key, *validity)
        except (note.NoteError, ValueError):
            continue
        keys[key.key_id] = key
    return keys


class AdmissionVerdict:
    """What checking a receipt's admission signature showed: ``code`` None when it verifies."""

    __slots__ = ("code", "key", "message")

    def __init__(self, code: str | None, message: str, key: AdmissionKey | None) -> None:
        self.code = code
        self.message = message
        self.key = key


def check_receipt_admission(
    record: VoteRecord, admission: Admission, keys: Mapping[int, AdmissionKey]
) -> AdmissionVerdict:
    """Check the admission ``record`` (rebuilt from the receipt) carries against ``keys``."""
    key = keys.get(admission.key_id)
    signer = f"{key.verifier}" if key else f"key id {admission.key_id:08x}"
    reason = check_admission(record, keys)
    if reason is None:
        return AdmissionVerdict(None, f"signed by {signer}", key)
    code = _CODE_OF_REASON.get(reason, "admission-bad-signature")
    message = {
        "admission-unknown-key": f"signed under key id {admission.key_id:08x}, none of the "
        "admission keys given or published",
        "admission-key-not-valid": f"admitted at {admission.admitted_ms} ms, outside the "
        f"validity of {signer}",
        "admission-bad-signature": f"the signature does not verify under {signer}",
        "admission-time": f"admitted at {admission.admitted_ms} ms but accepted at "
        f"{record.accepted_ms} ms ({reason})",
    }[code]
    return AdmissionVerdict(code, message, key)
