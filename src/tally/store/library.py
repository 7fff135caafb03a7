"""Loads Tally's Valkey Functions (functions/*.lua) into a server."""

from __future__ import annotations

from importlib.resources import files

from tally.ports import StoreClient

LIBRARY_NAME = "tally"


def library_source() -> str:
    return (files("tally.store") / "functions" / "tally.lua").read_text(encoding="utf-8")


async def load_functions(client: StoreClient) -> None:
    """FUNCTION LOAD REPLACE: idempotent, and upgrades an older library in place."""
    await client.execute("FUNCTION", "LOAD", "REPLACE", library_source())


async def functions_loaded(client: StoreClient) -> bool:
    reply = await client.execute("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)
    return bool(reply)
