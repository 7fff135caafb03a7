"""Leases in Valkey: one holder per key at a time, renewed by its holder, expiring on their own.

The aggregator (one per poll's snapshots) and the archiver (one per poll's ledger) both lead
through one, with `tally_lease` / `tally_release` (tally.lua) on their own key."""

from __future__ import annotations

from tally.ports import StoreClient


async def take(client: StoreClient, key: str, owner: str, ttl_ms: int) -> bool:
    """Take or renew the lease for `ttl_ms`; False while another owner holds it."""
    return bool(await client.call("FCALL", "tally_lease", 1, key, owner, ttl_ms) == 1)


async def release(client: StoreClient, key: str, owner: str) -> bool:
    """Give the lease up if `owner` holds it; True if it did."""
    return bool(await client.call("FCALL", "tally_release", 1, key, owner) == 1)
