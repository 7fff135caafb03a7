"""A gateway deployment's admission key: the Ed25519 key it signs every admitted vote with.

The key is a signed-note signer key string (``PRIVATE+KEY+<name>+<id>+<base64>``,
tally.ledger.note) from TALLY_ADMISSION_KEY (a secret store or KMS hands it over as an
environment variable), or else from a key file made once with security.keys.read_or_create
(TALLY_ADMISSION_KEY_FILE, default ``data/keys/admission.key``). Every gateway process of a
deployment reads the same key. Its name is ``<ledger origin>/admission/<gateway name>``: the
gateway name is TALLY_ADMISSION_KEY_NAME, or the host name when the key file is first made.

A gateway's key signs nothing an auditor accepts until an operator registers its public key
(``tally admission-key register``, tally.store.admission_keys): the registry, copied into each
poll's admin log, is what says which keys were valid when.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tally.config import Settings
from tally.ledger import note
from tally.ledger.admission import AdmissionSigner
from tally.security.keys import keys_dir, read_or_create

__all__ = [
    "DEFAULT_LEDGER_ORIGIN",
    "admission_key_file",
    "admission_key_name",
    "admission_signer",
    "parse_signer_key",
]

# The origin prefix of the ledger's logs when TALLY_LEDGER_ORIGIN is unset (wiring/archiver.py
# names its ledger key the same way).
DEFAULT_LEDGER_ORIGIN = "tally.localhost/ledger"


def admission_key_file(settings: Settings) -> Path:
    """TALLY_ADMISSION_KEY_FILE, or ``<data dir>/keys/admission.key`` beside the ledger key."""
    return settings.admission_key_file or keys_dir(settings.data_dir) / "admission.key"


def admission_key_name(settings: Settings) -> str:
    """The name a new admission key gets: ``<ledger origin>/admission/<gateway name>``."""
    origin = settings.ledger_origin or DEFAULT_LEDGER_ORIGIN
    gateway = settings.admission_key_name or _host_name()
    name = f"{origin}/admission/{gateway}"
    if not note.is_valid_name(name) or len(name.encode()) > 255:
        raise SystemExit(
            f"admission key name {name!r} is not a valid key name (no spaces or '+', at most "
            "255 bytes): set TALLY_ADMISSION_KEY_NAME to a short gateway name"
        )
    return name


def parse_signer_key(text: str) -> AdmissionSigner:
    """An AdmissionSigner from a ``PRIVATE+KEY+...`` string; note.InvalidKey if malformed."""
    skey = text.strip()
    parsed = note.Signer.parse(skey)  # checks the name, the key ID and the encoding
    # PRIVATE+KEY+<name>+<id>+<base64>: the base64 itself may hold '+'.
    key64 = skey.split("+", 4)[4]
    seed = base64.b64decode(key64)[1:]
    return AdmissionSigner(parsed.name, Ed25519PrivateKey.from_private_bytes(seed))


def admission_signer(settings: Settings) -> AdmissionSigner:
    """The gateway's admission key: TALLY_ADMISSION_KEY, else the key file (made if missing).

    A key file keeps the name it was made under: an explicit TALLY_ADMISSION_KEY_NAME that
    disagrees with it is refused, since renaming changes the key id auditors know it by."""
    if settings.admission_key is not None:
        try:
            return parse_signer_key(settings.admission_key)
        except note.NoteError as exc:
            raise SystemExit(f"TALLY_ADMISSION_KEY is not a signer key: {exc}") from None
    path = admission_key_file(settings)

    def make() -> bytes:
        signer_key, _ = note.generate_key(admission_key_name(settings))
        return (signer_key + "\n").encode()

    try:
        signer = parse_signer_key(read_or_create(path, make).decode())
    except (note.NoteError, UnicodeDecodeError) as exc:
        raise SystemExit(f"the admission key in {path} is unreadable: {exc}") from None
    if settings.admission_key_name is not None and admission_key_name(settings) != signer.key.name:
        raise SystemExit(
            f"TALLY_ADMISSION_KEY_NAME={settings.admission_key_name} but the admission key in "
            f"{path} is named {signer.key.name}: a key keeps its name (and key id); move the "
            "file away to make a new key, then register it"
        )
    return signer


def _host_name() -> str:
    """The host name, cut at the first dot, with anything a key name cannot hold replaced."""
    host = socket.gethostname().partition(".")[0] or "gateway"
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in host)
