"""The gateway's admission key at start: loaded, then registered (`tally serve`) or checked
against the registry (`tally gateway`).

A gateway whose key is not registered would sign votes the auditor rejects, so `tally gateway`
refuses to start and says how to register it. `tally serve` is the single-host deployment that
plays the operator too: it registers its own key, valid from now on (a key an operator retired
stays retired: the serve stops instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tally.config import Settings
from tally.ledger import note
from tally.ledger.admission import AdmissionSigner
from tally.ports import StoreClient
from tally.security.admission_keys import admission_key_file, admission_signer
from tally.store.admission_keys import RegisteredKey, ValkeyAdmissionKeys

__all__ = ["gateway_signer", "published_admission_keys", "verifier_key"]

log = logging.getLogger("tally")


def verifier_key(signer: AdmissionSigner) -> str:
    """The key's published form, ``<name>+<key id hex>+<base64(0x01 || public key)>``."""
    return str(signer.key.verifier)


async def gateway_signer(
    settings: Settings,
    client: StoreClient,
    clock_ms: Callable[[], int],
    *,
    registrar: StoreClient | None = None,
) -> AdmissionSigner | None:
    """The admission signer this gateway signs votes with, once its key is known to be
    registered and valid now; None with TALLY_ADMISSION_SIGNING=off (loudly: such votes fail the
    audit). SystemExit, with the command to run, for a key the registry does not accept.
    `registrar` (the store's admin connection, `tally serve` only) registers a key not yet
    registered instead."""
    if not settings.admission_signing:
        log.warning(
            "TALLY_ADMISSION_SIGNING=off: votes are cast without an admission signature and "
            "`tally audit verify` will reject them (for measuring the signing cost only)"
        )
        return None
    signer = admission_signer(settings)
    registry = ValkeyAdmissionKeys(client)
    now = clock_ms()
    key = signer.key
    found = next(
        (
            entry
            for entry in await registry.registered()
            if (entry.name, entry.public_key) == (key.name, key.public_key)
        ),
        None,
    )
    if found is None and registrar is not None:
        await ValkeyAdmissionKeys(registrar).register(
            RegisteredKey(key.name, key.public_key, now), actor="tally serve"
        )
        log.info("registered this gateway's admission key %s", verifier_key(signer))
        return signer
    if found is None or found.retired(now) or found.not_before_ms > now:
        where = admission_key_file(settings)
        state = (
            "is not registered"
            if found is None
            else f"is registered valid from {found.not_before_ms} to {found.not_after_ms or '-'}"
            " ms, which does not include now"
        )
        raise SystemExit(
            f"this gateway's admission key {key.name}+{key.key_id:08x} {state}: votes it signs "
            "would fail the audit. Register it (as the store's operator) with\n"
            f"    tally admission-key register {verifier_key(signer)}\n"
            + (
                f"(the key is read from {where}; "
                if not settings.admission_key
                else "(the key is TALLY_ADMISSION_KEY; "
            )
            + "a retired key cannot come back: make a new key and register that)"
        )
    return signer


async def published_admission_keys(client: StoreClient) -> list[str]:
    """Every registered admission key as GET /ledger/keys lists it after the ledger key:
    ``<name>+<key id>+<base64 key> <not before ms> <not after ms, 0: no end>``."""
    return [
        f"{note.Verifier(key.name, key.public_key)} {key.not_before_ms} {key.not_after_ms}"
        for key in await ValkeyAdmissionKeys(client).registered()
    ]
