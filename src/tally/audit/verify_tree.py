"""Step 2 of ``tally audit verify``, its data: a log's tree, rebuilt from the entries alone.

:mod:`tally.audit.verify_entries` feeds a :class:`Tree` one bundle of leaf hashes at a time and
then asks it for any tile, leaf or root at any checkpoint size, to hold the published files
against. Here too is the geometry of tiles and bundles that says which files a tree of a given
size publishes (:func:`partial_tiles` is also what ``tally audit export`` copies).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from tally.ledger import merkle
from tally.ledger.merkle import HASH_SIZE, TreeBuilder
from tally.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, Bundle, Tile, TileReader, TileSet

__all__ = ["Tree", "bundle_of", "full_tiles", "leaf_hashes", "partial_tiles"]

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"


def partial_tiles(size: int) -> list[Tile]:
    """The partial tiles (one per level at most) of a tree of ``size`` leaves."""
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = (size >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if width:
            tiles.append(Tile(level, size >> (TILE_HEIGHT * (level + 1)), width))
        level += 1
    return tiles


def full_tiles(size: int) -> list[Tile]:
    """The full tiles of every level of a tree of ``size`` leaves."""
    tiles: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * (level + 1)):
        tiles += (Tile(level, index) for index in range(size >> (TILE_HEIGHT * (level + 1))))
        level += 1
    return tiles


def bundle_of(index: int, size: int) -> Bundle:
    """The bundle of a log of ``size`` entries that holds entry ``index``."""
    start = index - index % TILE_WIDTH
    return Bundle(index // TILE_WIDTH, min(TILE_WIDTH, size - start))


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """RFC 9162 leaf hashes of ``entries``."""
    return [_sha256(_LEAF_PREFIX + entry).digest() for entry in entries]


class Tree:
    """A log's tiles, rebuilt from its leaf hashes one bundle at a time.

    Level-0 tiles are kept as joined bytes (one object per 256 leaves); the tree above them is a
    :class:`TileSet` fed with the root of each full level-0 tile, whose tiles are our levels
    1 and up. Every tile entry is a complete subtree and never changes, so the partial tile of an
    earlier size is a prefix of the tile of the final size: one set of tiles serves every size.
    """

    __slots__ = ("_higher", "_level0", "_upper", "size")

    def __init__(self) -> None:
        self._level0: list[bytes] = []
        self._upper = TileSet()
        self._higher: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def add(self, hashes: Sequence[bytes]) -> None:
        """Append one bundle's leaf hashes (full ones, then at most one partial, last)."""
        self._level0.append(b"".join(hashes))
        if len(hashes) == TILE_WIDTH:
            for done in self._upper.append(merkle.root(hashes)):
                self._higher[(done.tile.level + 1, done.tile.index)] = done.data
        self.size += len(hashes)

    def finish(self) -> None:
        for edge in self._upper.partial_tiles():
            self._higher[(edge.tile.level + 1, edge.tile.index)] = edge.data

    def tile(self, tile: Tile) -> bytes:
        """The rebuilt contents of ``tile``; LookupError if the tree does not reach it."""
        data = (
            self._level0[tile.index] if tile.level == 0 else self._higher[(tile.level, tile.index)]
        )
        if len(data) < tile.width * HASH_SIZE:
            raise KeyError(tile.path)
        return data[: tile.width * HASH_SIZE]

    def leaf(self, index: int) -> bytes:
        data = self._level0[index // TILE_WIDTH]
        offset = index % TILE_WIDTH * HASH_SIZE
        return data[offset : offset + HASH_SIZE]

    def reader(self, size: int) -> TileReader:
        return TileReader(size, self.tile)

    def root(self, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        return TreeBuilder.resume(size, self.reader(size)).root()
