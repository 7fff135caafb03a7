"""Tally's Valkey Functions (functions/*.lua): loading them, and checking they are loaded.

Only a user allowed FUNCTION LOAD loads them: the admin (store/acl.py), or the one user of a
deployment without per-role users. A role's connection checks on connect that this Tally's
library is there (FUNCTION LIST ... WITHCODE, which every role may run) and loads it only when it
is missing or differs and the user may; otherwise it leaves it to the admin, and the role's
readiness (functions_problem) says they are missing until the admin loads them: `tally store
load-functions` with TALLY_VALKEY_URL naming the admin user (store_cli.py; on every primary of a
cluster), or a restart of `tally serve`, whose embedded server's admin loads it (`tally cluster
up` loads it too).
"""

from __future__ import annotations

import functools
import logging
from importlib.resources import files
from typing import Any

from tally.ports import ReplyError, StoreClient

log = logging.getLogger("tally.store")

LIBRARY_NAME = "tally"


@functools.cache
def library_source() -> str:
    """The library this Tally runs with, read once: a file changed under a running process is
    not the code it calls."""
    return (files("tally.store") / "functions" / "tally.lua").read_text(encoding="utf-8")


async def load_functions(client: StoreClient) -> None:
    """FUNCTION LOAD REPLACE: idempotent, and upgrades an older library in place."""
    await client.execute("FUNCTION", "LOAD", "REPLACE", library_source())


async def loaded_source(client: StoreClient) -> str | None:
    """The code of the library loaded under Tally's name, None if none is."""
    reply = await client.execute("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME, "WITHCODE")
    for library in reply:
        fields = _pairs(library)
        if fields.get(b"library_name") == LIBRARY_NAME.encode():
            code = fields.get(b"library_code")
            return code.decode() if isinstance(code, bytes) else None
    return None


async def ensure_functions(client: StoreClient) -> None:
    """A connection's `on_connect`: nothing when this Tally's library is loaded; else load it if
    this user may, or log that the admin must (module docstring)."""
    if await loaded_source(client) == library_source():
        return
    try:
        await load_functions(client)
    except ReplyError as exc:
        if not str(exc).startswith("NOPERM"):
            raise
        log.error(
            "Tally's Valkey functions are missing or from another version, and this role's "
            "user may not load them: run `tally store load-functions` with TALLY_VALKEY_URL "
            "naming the admin user (tally-admin)"
        )


async def functions_loaded(client: StoreClient) -> bool:
    return await loaded_source(client) is not None


async def functions_problem(client: StoreClient) -> str | None:
    """Readiness: None when Tally's library is loaded, else what is wrong. Another version is
    not a readiness failure (during a rolling upgrade both run); ensure_functions logs it."""
    if await loaded_source(client) is None:
        return (
            "Valkey is up but Tally's functions are not loaded (`tally store load-functions` "
            "with the admin's TALLY_VALKEY_URL loads them)"
        )
    return None


def _pairs(flat: Any) -> dict[bytes, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
