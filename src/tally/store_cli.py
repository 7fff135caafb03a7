"""`tally store acl|load-functions`: the operator's side of Tally's Valkey (docs/valkey-acl.md).

    tally store acl [--json] [--replicas]   the ACL file for an external Valkey, from store/acl.py
    tally store load-functions              load Tally's functions, as the admin user

`acl` prints the file to load with `aclfile` (or each line's rules as `ACL SETUSER`): the default
user off and one user per role, each password a placeholder to replace with `#` and its SHA-256;
`--replicas` adds the user replicas authenticate to their primary as (`masteruser`), `--json`
gives each user's rules as a list instead. It reads no setting and talks to no server.

`load-functions` connects to TALLY_VALKEY_URL, which must name the admin user (the roles' users
may not FUNCTION LOAD), and runs FUNCTION LOAD REPLACE on the node, or on every primary of a
cluster (a replica gets the library from its primary): after a new Tally version, or on a new
external Valkey before the role processes start (they only check the functions, and are not
ready until they are there). The embedded server of `tally serve` and `tally cluster up` load
them themselves.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import uvloop

from tally import config
from tally.store import acl

SettingsOf = Callable[[argparse.Namespace], config.Settings]

__all__ = ["acl_document", "add_store_parser"]


def add_store_parser(
    subparsers: Any, common: argparse.ArgumentParser, settings_of: SettingsOf
) -> None:
    """Add `store acl|load-functions` to subparsers."""
    parser = subparsers.add_parser(
        "store", help="Tally's Valkey: the ACL file of its users, loading its functions (admin)"
    )
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    users = actions.add_parser(
        "acl", help="print the ACL file (default user off, one user per role) for a Valkey"
    )
    users.add_argument("--json", action="store_true", help="each user's rules as a JSON list")
    users.add_argument(
        "--replicas",
        action="store_true",
        help="add the user replicas authenticate to their primary as (masteruser/masterauth)",
    )
    users.set_defaults(run=_acl)
    load = actions.add_parser(
        "load-functions",
        parents=[common],
        help="load Tally's Valkey functions as the admin (TALLY_VALKEY_URL), on every primary",
    )
    load.set_defaults(run=lambda args: _load_functions(settings_of(args)))


def acl_document(*, replicas: bool = False) -> dict[str, dict[str, Any]]:
    """`--json`: every user by name, with its role's summary and its rules (as in the file,
    without the password)."""
    users: dict[str, dict[str, Any]] = {
        "default": {"on": False, "rules": ["resetpass", "resetkeys", "resetchannels", "-@all"]}
    }
    for role in acl.ROLES.values():
        users[acl.username(role.name)] = {
            "role": role.name,
            "summary": role.summary,
            "on": True,
            "rules": acl.role_rules(role),
        }
    if replicas:
        users[acl.username(acl.REPLICATION)] = {
            "role": acl.REPLICATION,
            "summary": "replicas authenticate to their primary as it (masteruser/masterauth)",
            "on": True,
            "rules": list(acl.REPLICATION_RULES),
        }
    return users


def _acl(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(acl_document(replicas=args.replicas), indent=2))
        return 0
    text = acl.acl_file()
    if args.replicas:
        placeholder = f"#{acl.REPLICATION.upper()}-PASSWORD-SHA256"
        text += acl.replication_line(placeholder) + "\n"
    print(text, end="")
    return 0


def _load_functions(settings: config.Settings) -> int:
    if settings.valkey_url is None:
        print(
            "tally store load-functions needs TALLY_VALKEY_URL naming the admin user "
            f"({acl.username(acl.ADMIN)}); tally serve's embedded Valkey loads them itself",
            file=sys.stderr,
        )
        return 2
    return uvloop.run(_load(settings))


async def _load(settings: config.Settings) -> int:
    from tally.domain.errors import StoreUnavailable
    from tally.ports import ReplyError
    from tally.store.cluster import ClusterSeeds, ValkeyCluster
    from tally.store.library import LIBRARY_NAME, library_source, load_functions
    from tally.store.resp import Endpoint, Valkey
    from tally.wiring.store import check_cluster, external_url, tls_files

    url = external_url(settings, "store load-functions")
    client: Valkey | ValkeyCluster
    if settings.cluster:
        seeds: ClusterSeeds = await check_cluster(settings)
        client, user = ValkeyCluster(seeds), seeds.username
    else:
        endpoint = replace(Endpoint.from_url(url), tls_files=tls_files(settings))
        client, user = Valkey(endpoint), endpoint.username
    try:
        await client.connect()
        await load_functions(client)  # on a cluster: on every primary (FUNCTION is keyless)
    except ReplyError as exc:
        if str(exc).startswith("NOPERM"):
            print(
                f"tally: the user {user or 'default'!r} may not load functions ({exc}): give "
                f"TALLY_VALKEY_URL the admin's user, {acl.username(acl.ADMIN)}",
                file=sys.stderr,
            )
        else:
            print(f"tally: Valkey refused: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    digest = hashlib.sha256(library_source().encode()).hexdigest()[:12]
    where = (
        f"on {len(client.shards)} primaries" if isinstance(client, ValkeyCluster) else "on the node"
    )
    print(f"loaded Valkey library {LIBRARY_NAME!r} (sha256 {digest}…) {where} as {user!r}")
    return 0
