"""C2SP tlog-tiles: a log's Merkle tree and entries as static, immutable files (c2sp.org/tlog-tiles).

Pure: no I/O. Callers read and write the bytes; this module names, builds and parses them.

Layout (tlog-tiles §Merkle Tree, §Log entries), tile height 8::

    tile/<L>/<N>[.p/<W>]        Merkle tile: W (1..256) hashes of 32 bytes, concatenated
    tile/entries/<N>[.p/<W>]    entry bundle: W entries, each a big-endian uint16 length + bytes

``<L>`` is the tile level 0..63; ``<N>`` the tile index in zero-padded 3-digit path elements,
all but the last prefixed with ``x`` (1234067 -> ``x001/x234/067``); ``.p/<W>`` marks a partial
tile of width W 1..255, and a full tile (256 hashes, 8,192 bytes) has no suffix.

Tile ``(L, N)`` holds, for i in 0..255, ``MTH(D[(N*256 + i) * 256**L : (N*256 + i + 1) * 256**L])``:
entry i is node ``(level 8*L, index N*256 + i)`` in :mod:`tally.ledger.merkle`'s addressing
(level l, index n = the complete subtree of 2**l leaves starting at leaf n * 2**l). Level 0 tiles
hold leaf hashes. For a tree of size s the partial tile at level L has width
``floor(s / 256**L) mod 256``; empty tiles do not exist. Bundles align with level-0 tiles.

Errors
------
::

    ValueError
     └── TileError    a path, tile or bundle is malformed, or a stored tile has the wrong size
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tally.ledger import merkle
from tally.ledger.merkle import HASH_SIZE, HashReader, TreeBuilder

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Bundle",
    "BundleBuilder",
    "BundleData",
    "Tile",
    "TileData",
    "TileError",
    "TileReader",
    "TileSet",
    "bundle_path",
    "bundles_for_size",
    "decode_bundle",
    "decode_tile",
    "encode_bundle",
    "encode_tile",
    "new_bundles",
    "new_tiles",
    "parse_path",
    "tile_data",
    "tile_path",
    "tiles_for_size",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes (or entries) in a full tile
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF  # a bundle's uint16 length prefix

_INDEX_RE = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")
_PATH_RE = re.compile(r"tile/(entries|0|[1-9][0-9]?)/([x0-9/]+?)(?:\.p/([1-9][0-9]{0,2}))?")


class TileError(ValueError):
    """A tile path, tile or entry bundle is malformed."""


@dataclass(frozen=True, slots=True)
class Tile:
    """A Merkle tile: tile level, index within the level, and width (256 when full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL:
            raise TileError(f"tile level must be 0 to {MAX_LEVEL}, got {self.level}")
        _check_index_width(self.index, self.width)

    @property
    def path(self) -> str:
        """The tile's path under the log prefix: ``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{_format_index(self.index)}{_suffix(self.width)}"


@dataclass(frozen=True, slots=True)
class Bundle:
    """An entry bundle: index (as a level-0 tile's) and width (256 when full)."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        _check_index_width(self.index, self.width)

    @property
    def path(self) -> str:
        """The bundle's path under the log prefix: ``tile/entries/<N>[.p/<W>]``."""
        return f"tile/entries/{_format_index(self.index)}{_suffix(self.width)}"

    @property
    def start(self) -> int:
        """The leaf index of the bundle's first entry."""
        return self.index * TILE_WIDTH


class TileData(NamedTuple):
    """A tile and its contents."""

    tile: Tile
    data: bytes


class BundleData(NamedTuple):
    """An entry bundle and its encoding."""

    bundle: Bundle
    data: bytes


def _check_index_width(index: int, width: int) -> None:
    if index < 0:
        raise TileError(f"tile index must be >= 0, got {index}")
    if not 1 <= width <= TILE_WIDTH:
        raise TileError(f"tile width must be 1 to {TILE_WIDTH}, got {width}")


def _format_index(index: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int) -> str:
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """Return ``tile/<L>/<N>[.p/<W>]``; width None or 256 means a full tile."""
    return Tile(level, index, TILE_WIDTH if width is None else width).path


def bundle_path(index: int, width: int | None = None) -> str:
    """Return ``tile/entries/<N>[.p/<W>]``; width None or 256 means a full bundle."""
    return Bundle(index, TILE_WIDTH if width is None else width).path


def parse_path(path: str) -> Tile | Bundle:
    """Parse a tile or bundle path in its one canonical spelling; raise TileError otherwise."""
    match = _PATH_RE.fullmatch(path)
    if match is None or not _INDEX_RE.fullmatch(match[2]):
        raise TileError(f"not a tile path: {path!r}")
    level, index_text, width_text = match.groups()
    index = int(index_text.replace("x", "").replace("/", ""))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if (width_text is not None and width >= TILE_WIDTH) or _format_index(index) != index_text:
        raise TileError(f"not a canonical tile path: {path!r}")
    return Bundle(index, width) if level == "entries" else Tile(int(level), index, width)


def tiles_for_size(size: int) -> list[Tile]:
    """Return every tile of a tree of ``size`` leaves, level by level, full then partial."""
    return list(_tiles_between(0, size))


def new_tiles(old_size: int, new_size: int) -> list[Tile]:
    """Return the tiles a tree of ``new_size`` has and a tree of ``old_size`` lacks."""
    return list(_tiles_between(old_size, new_size))


def bundles_for_size(size: int) -> list[Bundle]:
    """Return every entry bundle of a log of ``size`` entries, full then partial."""
    return new_bundles(0, size)


def new_bundles(old_size: int, new_size: int) -> list[Bundle]:
    """Return the entry bundles a log of ``new_size`` has and a log of ``old_size`` lacks."""
    return [Bundle(t.index, t.width) for t in _tiles_at_level(0, old_size, new_size)]


def _tiles_between(old_size: int, new_size: int) -> Iterator[Tile]:
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size <= new_size, got {old_size} and {new_size}")
    level = 0
    while new_size >> (TILE_HEIGHT * level):
        yield from _tiles_at_level(level, old_size, new_size)
        level += 1


def _tiles_at_level(level: int, old_size: int, new_size: int) -> Iterator[Tile]:
    if not 0 <= old_size <= new_size:
        raise ValueError(f"need 0 <= old_size <= new_size, got {old_size} and {new_size}")
    old_full, old_width = divmod(old_size >> (TILE_HEIGHT * level), TILE_WIDTH)
    new_full, new_width = divmod(new_size >> (TILE_HEIGHT * level), TILE_WIDTH)
    for index in range(old_full, new_full):
        yield Tile(level, index)
    if new_width and (new_full, new_width) != (old_full, old_width):
        yield Tile(level, new_full, new_width)


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """Return a tile's contents: 1 to 256 hashes, concatenated."""
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise TileError(f"a tile is 1 to {TILE_WIDTH} hashes of {HASH_SIZE} bytes")
    return b"".join(hashes)


def decode_tile(data: bytes, width: int) -> list[bytes]:
    """Split a tile of ``width`` hashes; raise TileError unless it is exactly that long."""
    if not 1 <= width <= TILE_WIDTH or len(data) != width * HASH_SIZE:
        raise TileError(f"a tile of width {width} is {width * HASH_SIZE} bytes, got {len(data)}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Return an entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise TileError(f"a bundle holds 1 to {TILE_WIDTH} entries, got {len(entries)}")
    parts: list[bytes] = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"an entry is at most {MAX_ENTRY_SIZE} bytes, got {len(entry)}")
        parts += (len(entry).to_bytes(2, "big"), entry)
    return b"".join(parts)


def decode_bundle(data: bytes, width: int) -> list[bytes]:
    """Split a bundle that must hold exactly ``width`` entries; raise TileError otherwise."""
    if not 1 <= width <= TILE_WIDTH:
        raise TileError(f"bundle width must be 1 to {TILE_WIDTH}, got {width}")
    entries: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(entries) == width:
            raise TileError(f"bundle has bytes after its {width} entries, at offset {pos}")
        if end - pos < 2:
            raise TileError(f"bundle is truncated in the length of entry {len(entries)}")
        length = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if end - pos < length:
            raise TileError(f"bundle is truncated in entry {len(entries)}")
        entries.append(data[pos : pos + length])
        pos += length
    if len(entries) != width:
        raise TileError(f"bundle holds {len(entries)} entries, expected {width}")
    return entries


def tile_data(tile: Tile, hashes: HashReader) -> bytes:
    """Return the contents ``tile`` must have, read from any :class:`merkle.HashReader`."""
    level, first = TILE_HEIGHT * tile.level, tile.index * TILE_WIDTH
    return b"".join(hashes(level, first + i) for i in range(tile.width))


class TileSet:
    """Builds a log's tiles as leaf hashes are appended, keeping only the right edge in memory.

    :meth:`append` returns each tile the moment it becomes full (lowest level first); the
    partial tiles of the current size come from :meth:`partial_tiles`. Memory: at most 255
    hashes per level plus a :class:`merkle.TreeBuilder`.
    """

    __slots__ = ("_edge", "_tree")

    def __init__(self) -> None:
        self._edge: list[list[bytes]] = [[]]  # _edge[L]: hashes of the partial tile at level L
        self._tree = TreeBuilder()

    @classmethod
    def resume(cls, size: int, hashes: HashReader) -> TileSet:
        """Rebuild the state after ``size`` leaves from stored hashes (e.g. a TileReader)."""
        tiles = cls()
        tiles._tree = TreeBuilder.resume(size, hashes)
        tiles._edge = []
        level = 0
        while not tiles._edge or size >> (TILE_HEIGHT * level):
            full, width = divmod(size >> (TILE_HEIGHT * level), TILE_WIDTH)
            first = full * TILE_WIDTH
            row = [hashes(TILE_HEIGHT * level, first + i) for i in range(width)]
            if any(len(h) != HASH_SIZE for h in row):
                raise TileError(f"stored hashes at tile level {level} are not {HASH_SIZE} bytes")
            tiles._edge.append(row)
            level += 1
        return tiles

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._tree.size

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves so far."""
        return self._tree.root()

    def append(self, leaf_hash: bytes) -> list[TileData]:
        """Append one leaf hash; return the tiles it completes, lowest level first."""
        self._tree.append(leaf_hash)  # checks the length
        size, edge = self._tree.size, self._edge
        done: list[TileData] = []
        node, level = leaf_hash, 0
        while True:
            if level == len(edge):
                edge.append([])
            row = edge[level]
            row.append(node)
            if len(row) < TILE_WIDTH:
                return done
            index = (size >> (TILE_HEIGHT * (level + 1))) - 1
            done.append(TileData(Tile(level, index), b"".join(row)))
            node = merkle.root(row)
            edge[level] = []
            level += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[TileData]:
        """Append each leaf hash in order; return every tile completed, in completion order."""
        done: list[TileData] = []
        for item in leaf_hashes:
            done += self.append(item)
        return done

    def partial_tiles(self) -> list[TileData]:
        """Return the partial tiles of the current size (the non-empty right edge), by level."""
        size = self._tree.size
        return [
            TileData(Tile(level, size >> (TILE_HEIGHT * (level + 1)), len(row)), b"".join(row))
            for level, row in enumerate(self._edge)
            if row
        ]


class BundleBuilder:
    """Groups a log's entries into bundles: full ones as they complete, the partial one on demand."""

    __slots__ = ("_pending", "_size")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._size = 0

    @classmethod
    def resume(cls, size: int, pending: Sequence[bytes]) -> BundleBuilder:
        """Rebuild the state after ``size`` entries, given the entries of its partial bundle."""
        if size < 0 or len(pending) != size % TILE_WIDTH:
            raise TileError(
                f"a log of {size} entries has {size % TILE_WIDTH} in its partial bundle"
            )
        builder = cls()
        builder._pending = list(pending)
        builder._size = size
        return builder

    @property
    def size(self) -> int:
        """The number of entries appended so far."""
        return self._size

    def append(self, entry: bytes) -> BundleData | None:
        """Append one entry; return the bundle it completes, if any."""
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"an entry is at most {MAX_ENTRY_SIZE} bytes, got {len(entry)}")
        self._pending.append(entry)
        self._size += 1
        if len(self._pending) < TILE_WIDTH:
            return None
        full = BundleData(Bundle(self._size // TILE_WIDTH - 1), encode_bundle(self._pending))
        self._pending = []
        return full

    def partial(self) -> BundleData | None:
        """Return the partial bundle of the current size, or None when the last one is full."""
        if not self._pending:
            return None
        index = self._size // TILE_WIDTH
        return BundleData(Bundle(index, len(self._pending)), encode_bundle(self._pending))


class TileReader:
    """A :class:`merkle.HashReader` over the stored tiles of a tree of ``size`` leaves.

    ``fetch(tile)`` returns the stored bytes of that exact tile (for a partial tile, a caller
    MAY return the first ``tile.width`` hashes of the full tile instead, as tlog-tiles allows),
    and raises a ``LookupError`` (e.g. KeyError) for a tile it does not have.
    Hashes between tile levels are recomputed from the tile below. Tiles are checked for length,
    not authenticity: verify what is built from them against a signed checkpoint. The last
    ``cache`` tiles fetched are kept.
    """

    __slots__ = ("_cache", "_fetch", "_limit", "_size")

    def __init__(self, size: int, fetch: Callable[[Tile], bytes], *, cache: int = 64) -> None:
        if size < 0:
            raise ValueError(f"tree size must be >= 0, got {size}")
        self._size = size
        self._fetch = fetch
        self._limit = max(1, cache)
        self._cache: OrderedDict[Tile, list[bytes]] = OrderedDict()

    @property
    def size(self) -> int:
        """The tree size whose tiles this reads."""
        return self._size

    def __call__(self, level: int, index: int, /) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise IndexError(f"no complete subtree at level {level}, index {index}")
        tile_level, height = divmod(level, TILE_HEIGHT)
        tile_index, offset = divmod(index << height, TILE_WIDTH)
        entries = self._size >> (TILE_HEIGHT * tile_level)
        width = min(TILE_WIDTH, entries - tile_index * TILE_WIDTH)
        row = self._tile(Tile(tile_level, tile_index, width))
        span = row[offset : offset + (1 << height)]
        return merkle.root(span) if height else span[0]

    def _tile(self, tile: Tile) -> list[bytes]:
        row = self._cache.get(tile)
        if row is not None:
            self._cache.move_to_end(tile)
            return row
        data = self._fetch(tile)
        try:
            row = decode_tile(data, tile.width)
        except TileError as exc:
            raise TileError(f"{tile.path}: {exc}") from None
        self._cache[tile] = row
        if len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return row
