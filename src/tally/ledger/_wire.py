"""Byte-level pieces shared by the ledger record encodings (docs/ledger-format.md, "Records").

Every record starts with a format version byte and a record type byte. Integers are unsigned
big-endian of fixed width; strings are UTF-8 after a length prefix; decoding must consume every
byte. Nothing here is public API: :mod:`tally.ledger.leaf`, :mod:`tally.ledger.review` and
:mod:`tally.ledger.admin` are.
"""

from __future__ import annotations

from enum import IntEnum

FORMAT_VERSION = 0x01
# Vote records carrying the gateway's admission signature (tally.ledger.leaf); every other record
# type stays at FORMAT_VERSION.
ADMITTED_VOTE_VERSION = 0x02


class LeafError(ValueError):
    """A ledger record cannot be encoded, or bytes are not a valid record."""


class RecordType(IntEnum):
    """The record type byte: which log a leaf belongs to."""

    VOTE = 0x01
    ADMIN = 0x02
    REVIEW = 0x03


def check_text(field: str, value: str, max_size: int) -> None:
    """Check that ``value`` is 1 to ``max_size`` bytes of UTF-8."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise LeafError(f"{field} is not encodable as UTF-8") from None
    if not 1 <= size <= max_size:
        raise LeafError(f"{field} must be 1 to {max_size} bytes of UTF-8, got {size}")


class Writer:
    """Appends fixed-width integers and length-prefixed fields to a record."""

    __slots__ = ("_parts",)

    def __init__(self, kind: RecordType) -> None:
        self._parts: list[bytes] = [bytes((FORMAT_VERSION, kind))]

    def uint(self, value: int, size: int, field: str) -> None:
        """Append ``value`` as a big-endian unsigned integer of ``size`` bytes."""
        if not 0 <= value < 1 << (8 * size):
            raise LeafError(f"{field} must be 0 to {(1 << (8 * size)) - 1}, got {value}")
        self._parts.append(value.to_bytes(size, "big"))

    def fixed(self, value: bytes, size: int, field: str) -> None:
        """Append exactly ``size`` raw bytes."""
        if len(value) != size:
            raise LeafError(f"{field} must be {size} bytes, got {len(value)}")
        self._parts.append(value)

    def blob(self, value: bytes, prefix: int, field: str, *, min_size: int = 0) -> None:
        """Append a ``prefix``-byte length, then ``value``."""
        self.uint(len(value), prefix, f"length of {field}")
        if len(value) < min_size:
            raise LeafError(f"{field} must be at least {min_size} bytes")
        self._parts.append(value)

    def text(self, value: str, prefix: int, field: str) -> None:
        """Append a non-empty string as a ``prefix``-byte length, then its UTF-8 bytes."""
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise LeafError(f"{field} is not encodable as UTF-8") from None
        self.blob(encoded, prefix, field, min_size=1)

    def build(self) -> bytes:
        """Return the record's bytes."""
        return b"".join(self._parts)


class Reader:
    """Reads a record written by :class:`Writer`, strictly; errors name the field and offset."""

    __slots__ = ("_data", "_pos", "version")

    def __init__(
        self, data: bytes, kind: RecordType, versions: tuple[int, ...] = (FORMAT_VERSION,)
    ) -> None:
        self._data = bytes(data)
        self._pos = 0
        version = self.uint(1, "format version")
        if version not in versions:
            raise LeafError(f"unknown format version 0x{version:02x}")
        self.version = version
        found = self.uint(1, "record type")
        if found != kind:
            raise LeafError(f"record type 0x{found:02x} is not a {kind.name.lower()} record")

    def _take(self, size: int, field: str) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise LeafError(f"record ends inside {field} (offset {self._pos})")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, field: str) -> int:
        """Read a big-endian unsigned integer of ``size`` bytes."""
        return int.from_bytes(self._take(size, field), "big")

    def fixed(self, size: int, field: str) -> bytes:
        """Read exactly ``size`` raw bytes."""
        return self._take(size, field)

    def blob(self, prefix: int, field: str, *, min_size: int = 0) -> bytes:
        """Read a ``prefix``-byte length, then that many bytes."""
        offset = self._pos
        size = self.uint(prefix, f"length of {field}")
        if size < min_size:
            raise LeafError(f"{field} must be at least {min_size} bytes (offset {offset})")
        return self._take(size, field)

    def text(self, prefix: int, field: str) -> str:
        """Read a length-prefixed, non-empty UTF-8 string."""
        offset = self._pos
        raw = self.blob(prefix, field, min_size=1)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LeafError(f"{field} is not valid UTF-8 (offset {offset})") from None

    def end(self) -> None:
        """Check that every byte was read."""
        if self._pos != len(self._data):
            raise LeafError(f"{len(self._data) - self._pos} bytes after the record's last field")
