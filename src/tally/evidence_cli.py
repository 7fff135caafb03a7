"""`tally evidence keys|rotate|reencrypt|drop-key`: the evidence key ring of held votes.

    tally evidence keys [--json]      key ids, the current one, and how many blobs each sealed
    tally evidence rotate             add a key; it seals from now on (running gateways pick it
                                      up at their next held vote: they re-read the key folder)
    tally evidence reencrypt [--json] re-seal every stored blob under the current key (and seal
                                      any subnet an older version kept in clear); idempotent
    tally evidence drop-key ID        delete an old key; refused while any blob still uses it

A rotation is: rotate, reencrypt, drop-key <old id>. The key files live in the data dir
(`secrets/evidence/`); with TALLY_EVIDENCE_KEYS set the keys come from there instead, and rotate
and drop-key say to change that variable. keys, reencrypt and drop-key read the store as its
admin (they walk every poll's held votes): TALLY_VALKEY_URL naming the admin user, or, unset, the
embedded server of a `tally serve` running on the data dir (wiring.store.operator_url).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import uvloop

from tally import config
from tally.security.evidence import EvidenceKeys
from tally.service.evidence import EvidenceMaintenance

SettingsOf = Callable[[argparse.Namespace], config.Settings]


def add_evidence_parser(
    subparsers: Any, common: argparse.ArgumentParser, settings_of: SettingsOf
) -> None:
    """Add `evidence keys|rotate|reencrypt|drop-key` to subparsers; `settings_of(args)` loads the
    configuration (data dir, TALLY_EVIDENCE_KEYS, TALLY_VALKEY_URL)."""
    evidence = subparsers.add_parser(
        "evidence", help="the key ring sealing held votes' network evidence (admin)"
    )
    actions = evidence.add_subparsers(required=True, metavar="ACTION")
    keys = actions.add_parser("keys", parents=[common], help="key ids and the blobs each sealed")
    keys.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    keys.set_defaults(run=lambda args: _keys(args, settings_of(args)))
    rotate = actions.add_parser("rotate", parents=[common], help="add a key that seals from now")
    rotate.set_defaults(run=lambda args: _rotate(settings_of(args)))
    again = actions.add_parser(
        "reencrypt", parents=[common], help="re-seal every blob under the current key"
    )
    again.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    again.set_defaults(run=lambda args: _reencrypt(args, settings_of(args)))
    drop = actions.add_parser(
        "drop-key", parents=[common], help="delete an old key no blob uses any more"
    )
    drop.add_argument(
        "key_id", type=int, help="the id of the key to delete (see tally evidence keys)"
    )
    drop.set_defaults(run=lambda args: _drop(args, settings_of(args)))


def _keys_of(settings: config.Settings) -> EvidenceKeys:
    return EvidenceKeys(settings.data_dir, settings.evidence_keys)


def _rotate(settings: config.Settings) -> int:
    keys = _keys_of(settings)
    try:
        key_id = keys.rotate()
    except ValueError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 2
    print(
        f"evidence key {key_id} seals from now on; next: `tally evidence reencrypt`, then "
        "`tally evidence drop-key <old id>`"
    )
    return 0


def _keys(args: argparse.Namespace, settings: config.Settings) -> int:
    keys = _keys_of(settings)
    ring = keys.ring()
    used = uvloop.run(_with_maintenance(settings, lambda m: m.usage()))
    document = {
        "current": ring.current_id,
        "keys": [{"id": key_id, "blobs": used.get(key_id, 0)} for key_id in ring.ids],
        "unknown_keys": {str(k): n for k, n in used.items() if k > 0 and k not in ring.ids},
        "clear": used.get(0, 0),
        "malformed": used.get(-1, 0),
        "source": "TALLY_EVIDENCE_KEYS" if keys.from_env else str(keys.directory),
    }
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"evidence keys ({document['source']}):")
    for key in document["keys"]:
        mark = "  (current)" if key["id"] == ring.current_id else ""
        print(f"  {key['id']}: {key['blobs']} blobs{mark}")
    for key_id, n in document["unknown_keys"].items():
        print(f"  {key_id}: {n} blobs, key not in the ring (unreadable)")
    if document["clear"]:
        print(f"  {document['clear']} held votes keep a subnet in clear: run reencrypt")
    return 0


def _reencrypt(args: argparse.Namespace, settings: config.Settings) -> int:
    keys = _keys_of(settings)
    report = uvloop.run(_with_maintenance(settings, lambda m: m.reencrypt(keys)))
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(
            f"key {report.key_id}: {report.resealed} re-sealed, {report.sealed_clear} sealed from "
            f"clear, {report.already_current} already current, {report.unreadable} unreadable, "
            f"{report.raced} decided or rewritten meanwhile ({report.polls} polls)"
        )
    return 1 if report.unreadable else 0


def _drop(args: argparse.Namespace, settings: config.Settings) -> int:
    keys = _keys_of(settings)
    if keys.from_env:
        print("tally: the keys come from TALLY_EVIDENCE_KEYS: remove it there", file=sys.stderr)
        return 2
    used = uvloop.run(_with_maintenance(settings, lambda m: m.usage()))
    if used.get(args.key_id, 0):
        print(
            f"tally: {used[args.key_id]} blobs still use evidence key {args.key_id}: run "
            "`tally evidence reencrypt` first",
            file=sys.stderr,
        )
        return 1
    try:
        keys.drop(args.key_id)
    except ValueError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 2
    print(f"evidence key {args.key_id} deleted")
    return 0


async def _with_maintenance(
    settings: config.Settings, work: Callable[[EvidenceMaintenance], Any]
) -> Any:
    from tally.store.evidence import ValkeyHeldEvidence
    from tally.store.polls import ValkeyPolls
    from tally.store.review import ValkeyReviews
    from tally.wiring.store import open_store

    store = await open_store(settings, "evidence", operator=True)
    try:
        client = store.client("admin")
        await client.connect()
        maintenance = EvidenceMaintenance(
            ValkeyPolls(client), ValkeyReviews(client), ValkeyHeldEvidence(client)
        )
        return await work(maintenance)
    finally:
        await store.close(settings.shutdown_timeout_s)
