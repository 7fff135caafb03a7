"""`tally admission-key register|retire|list`: the registry of gateway admission keys (admin).

    tally admission-key register VKEY [--not-before MS]   a gateway's key, valid from now (or MS)
    tally admission-key retire NAME|KEY_ID [--at MS]       its validity ends now (or at MS)
    tally admission-key list [--json]                      every key with its validity

VKEY is the key's verifier string, ``<name>+<key id>+<base64>``, as `tally gateway` prints it
when it refuses to start with an unregistered key. Register and retire also append the key to
the admin log of every poll not closed (tally.store.admission_keys), which is what the auditor
trusts. They talk to the store directly as its operator: TALLY_VALKEY_URL must name the admin
user, or, unset, they reach the embedded server of a `tally serve` running on the data dir
(wiring.store.operator_url); that server registers its own gateway's key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop

from tally import config
from tally.ledger import note
from tally.store.admission_keys import RegisteredKey, ValkeyAdmissionKeys

SettingsOf = Callable[[argparse.Namespace], config.Settings]

__all__ = ["add_admission_key_parser"]


def add_admission_key_parser(
    subparsers: Any, common: argparse.ArgumentParser, settings_of: SettingsOf
) -> None:
    """Add `admission-key register|retire|list` to subparsers."""
    parser = subparsers.add_parser(
        "admission-key", help="register, retire and list gateway admission keys (admin)"
    )
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    register = actions.add_parser(
        "register", parents=[common], help="register a gateway's admission key"
    )
    register.add_argument("key", help="the verifier key NAME+ID+BASE64 the gateway printed")
    register.add_argument("--not-before", type=int, default=None, help="ms since the epoch")
    register.add_argument("--actor", default="operator", help="who registers (admin log)")
    register.set_defaults(run=lambda args: _run(_register, args, settings_of(args)))
    retire = actions.add_parser("retire", parents=[common], help="end an admission key's validity")
    retire.add_argument("key", help="the key's name, or its 8-hex-digit key id")
    retire.add_argument("--at", type=int, default=None, help="ms since the epoch (default now)")
    retire.add_argument("--actor", default="operator", help="who retires it (admin log)")
    retire.set_defaults(run=lambda args: _run(_retire, args, settings_of(args)))
    listing = actions.add_parser("list", parents=[common], help="every registered admission key")
    listing.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    listing.set_defaults(run=lambda args: _run(_list, args, settings_of(args)))


def _run(
    action: Callable[[ValkeyAdmissionKeys, argparse.Namespace], Any],
    args: argparse.Namespace,
    settings: config.Settings,
) -> int:
    async def main() -> int:
        from tally.wiring.store import open_store

        store = await open_store(settings, "admission-key", operator=True)
        try:
            client = store.client("admin")
            await client.connect()
            result: int = await action(ValkeyAdmissionKeys(client), args)
            return result
        finally:
            await store.close(settings.shutdown_timeout_s)

    return uvloop.run(main())


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _register(registry: ValkeyAdmissionKeys, args: argparse.Namespace) -> int:
    try:
        verifier = note.Verifier.parse(args.key.strip())
    except note.NoteError as exc:
        print(f"tally: not a verifier key: {exc}", file=sys.stderr)
        return 2
    start = _now_ms() if args.not_before is None else args.not_before
    polls = await registry.register(
        RegisteredKey(verifier.name, verifier.public_key, start), actor=args.actor
    )
    print(f"registered {verifier} valid from {start}; appended to {polls} open poll(s)")
    return 0


async def _retire(registry: ValkeyAdmissionKeys, args: argparse.Namespace) -> int:
    wanted = args.key.strip().lower()
    matches = [
        key
        for key in await registry.registered()
        if key.name == args.key.strip() or f"{note.key_id(key.name, key.public_key):08x}" == wanted
    ]
    if len(matches) != 1:
        what = "no registered key" if not matches else f"{len(matches)} keys"
        print(f"tally: {what} named {args.key!r}: use the 8-digit key id", file=sys.stderr)
        return 1
    at = _now_ms() if args.at is None else args.at
    ended = await registry.retire(matches[0], at, actor=args.actor)
    print(f"retired {_verifier(ended)}: valid until {ended.not_after_ms}")
    return 0


async def _list(registry: ValkeyAdmissionKeys, args: argparse.Namespace) -> int:
    keys = await registry.registered()
    if args.json:
        docs = [
            {
                "key": str(_verifier(key)),
                "not_before_ms": key.not_before_ms,
                "not_after_ms": key.not_after_ms,
            }
            for key in keys
        ]
        print(json.dumps(docs, indent=2))
        return 0
    for key in keys:
        print(f"{_verifier(key)} {key.not_before_ms} {key.not_after_ms}")
    return 0


def _verifier(key: RegisteredKey) -> note.Verifier:
    return note.Verifier(key.name, key.public_key)
