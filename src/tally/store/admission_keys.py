"""The registry of gateway admission public keys in Valkey, and its copies in polls' admin logs.

An operator registers each gateway deployment's admission key (``tally admission-key register``)
with a validity period, and retires it (sets its end) when the gateway goes away or its key
leaks. The registry is one hash, ``tally:admission:keys``: ``<name>|<public key hex>`` -> JSON
``{"name", "public_key" (hex), "not_before_ms", "not_after_ms"}``.

The registry itself proves nothing to an auditor: what counts is each poll's admin log. So a
poll is created with every registered key not yet retired appended right after ``created``
(tally_poll_create), and a key registered or retired later is appended to the admin log of every
poll not closed (tally_poll_admission_keys, one call per poll: each touches one poll's keys, as
Valkey Cluster needs), except a poll opened with no key, which stays unsigned. Both skip a key the poll's log already holds with the same validity, so
any step may be repeated. A poll created while a key is being registered is caught up by
``sync_poll`` just after its creation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tally.ports import StoreClient
from tally.store import keys
from tally.store.resp import raise_first_error

__all__ = ["RegisteredKey", "ValkeyAdmissionKeys", "creation_args"]

_PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """A gateway admission key as registered: valid for votes admitted from `not_before_ms` up
    to, not including, `not_after_ms` (0: no end)."""

    name: str
    public_key: bytes
    not_before_ms: int
    not_after_ms: int = 0

    def __post_init__(self) -> None:
        if len(self.public_key) != _PUBLIC_KEY_BYTES:
            raise ValueError(f"an admission public key is {_PUBLIC_KEY_BYTES} bytes")
        if not self.name:
            raise ValueError(f"invalid admission key name {self.name!r}")
        if self.not_before_ms < 0 or self.not_after_ms < 0:
            raise ValueError("validity times are ms since the epoch")
        if self.not_after_ms and self.not_after_ms < self.not_before_ms:
            raise ValueError("a key cannot end before it starts")

    @property
    def field(self) -> str:
        """The key's field in the registry and in each poll's admission hash."""
        return f"{self.name}|{self.public_key.hex()}"

    def retired(self, at_ms: int) -> bool:
        """Whether the key no longer signs anything valid from `at_ms` on."""
        return bool(self.not_after_ms) and self.not_after_ms <= at_ms

    def args(self) -> list[bytes | str | int]:
        """The five arguments tally_poll_create and tally_poll_admission_keys take per key."""
        return [self.field, self.name, self.public_key, self.not_before_ms, self.not_after_ms]

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "public_key": self.public_key.hex(),
                "not_before_ms": self.not_before_ms,
                "not_after_ms": self.not_after_ms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes) -> RegisteredKey:
        doc = json.loads(raw)
        return cls(
            str(doc["name"]),
            bytes.fromhex(doc["public_key"]),
            int(doc["not_before_ms"]),
            int(doc["not_after_ms"]),
        )


class ValkeyAdmissionKeys:
    def __init__(self, client: StoreClient) -> None:
        self._client = client

    async def registered(self) -> list[RegisteredKey]:
        """Every registered key, retired ones included, ordered by name then start."""
        flat = await self._client.call("HGETALL", keys.ADMISSION_KEYS)
        found = [RegisteredKey.from_json(value) for value in flat[1::2]]
        return sorted(found, key=lambda key: (key.name, key.not_before_ms, key.public_key))

    async def register(self, key: RegisteredKey, actor: str = "") -> int:
        """Add `key` (or restate its validity) and append it to every poll not closed; returns
        how many polls' admin logs took it."""
        await self._client.call("HSET", keys.ADMISSION_KEYS, key.field, key.to_json())
        return await self._to_open_polls([key], actor)

    async def retire(self, key: RegisteredKey, at_ms: int, actor: str = "") -> RegisteredKey:
        """End `key`'s validity at `at_ms` (not before its start; an earlier end stays) and
        append that to every poll not closed; returns the key as now registered."""
        end = max(at_ms, key.not_before_ms)
        if key.not_after_ms:
            end = min(end, key.not_after_ms)
        ended = replace(key, not_after_ms=end)
        await self._client.call("HSET", keys.ADMISSION_KEYS, ended.field, ended.to_json())
        await self._to_open_polls([ended], actor)
        return ended

    async def sync_poll(self, poll_id: str, at_ms: int, actor: str = "") -> int:
        """Append to one poll's admin log whatever registered key not retired at `at_ms` it
        lacks (a poll created while a key was being registered); 0 if nothing was missing, -1
        for a closed poll, -2 for a poll opened unsigned (it stays so: tally_poll_admission_keys)."""
        registered = [key for key in await self.registered() if not key.retired(at_ms)]
        if not registered:
            return 0
        reply = await self._client.call(*_append_command(poll_id, registered, actor))
        return int(reply)

    async def _to_open_polls(self, changed: Sequence[RegisteredKey], actor: str) -> int:
        ids = await self._client.call("ZRANGE", keys.POLL_INDEX, 0, -1)
        if not ids:
            return 0
        replies = await self._client.pipeline(
            [_append_command(poll_id.decode(), changed, actor) for poll_id in ids]
        )
        raise_first_error(replies)
        return sum(1 for reply in replies if reply > 0)


async def creation_args(client: StoreClient, created_at_ms: int) -> list[Any]:
    """The admission-key ARGV of tally_poll_create for a poll created at `created_at_ms`: every
    registered key not retired by then (one valid only later is copied too: its start says so)."""
    current = [
        key
        for key in await ValkeyAdmissionKeys(client).registered()
        if not key.retired(created_at_ms)
    ]
    return [arg for key in current for arg in key.args()]


def _append_command(poll_id: str, changed: Sequence[RegisteredKey], actor: str) -> list[Any]:
    return [
        "FCALL",
        "tally_poll_admission_keys",
        3,
        keys.poll_meta(poll_id),
        keys.poll_admin(poll_id),
        keys.poll_admission(poll_id),
        actor,
        *(arg for key in changed for arg in key.args()),
    ]
