"""Tiles and entry bundles follow C2SP tlog-tiles, and hashes read back through them are the tree's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.ledger import merkle
from tally.ledger.merkle import LeafHashes, TreeBuilder
from tally.ledger.tiles import (
    TILE_WIDTH,
    Bundle,
    BundleBuilder,
    Tile,
    TileData,
    TileError,
    TileReader,
    TileSet,
    bundle_path,
    bundles_for_size,
    decode_bundle,
    decode_tile,
    encode_bundle,
    encode_tile,
    new_bundles,
    new_tiles,
    parse_path,
    tile_data,
    tile_path,
    tiles_for_size,
)

MAX_SIZE = 1000
LEAVES = [merkle.leaf_hash(b"vote %d" % i) for i in range(MAX_SIZE)]
HASHES = LeafHashes(LEAVES)
# Sizes around every tile boundary below MAX_SIZE, plus a spread between them.
SAMPLED_SIZES = sorted(
    {1, 2, 3, 7, 8, 9, MAX_SIZE, *range(13, MAX_SIZE, 37)}
    | {n + d for n in range(256, MAX_SIZE, 256) for d in (-1, 0, 1)}
)


class Store:
    """What an archiver would have written: every full tile once, partial tiles per checkpoint."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put(self, tiles: list[TileData]) -> None:
        for tile, data in tiles:
            assert self.files.setdefault(tile.path, data) == data, f"{tile.path} rewritten"

    def fetch(self, tile: Tile) -> bytes:
        return self.files[tile.path]


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, None, "tile/0/000"),
        (0, 1, 256, "tile/0/001"),
        (1, 999, 5, "tile/1/999.p/5"),
        (2, 1000, 255, "tile/2/x001/000.p/255"),
        (63, 1234067, None, "tile/63/x001/x234/067"),
        (4, 10**9, 1, "tile/4/x001/x000/x000/000.p/1"),
    ],
)
def test_tile_paths(level: int, index: int, width: int | None, path: str) -> None:
    """Indexes are 3-digit groups with x on all but the last; partial tiles end in .p/<W>."""
    assert tile_path(level, index, width) == path
    assert parse_path(path) == Tile(level, index, width or TILE_WIDTH)


def test_bundle_paths() -> None:
    """Entry bundles live under tile/entries with the level-0 index and width."""
    assert bundle_path(1234067) == "tile/entries/x001/x234/067"
    assert bundle_path(0, 17) == "tile/entries/000.p/17"
    assert parse_path("tile/entries/x001/x234/067") == Bundle(1234067)
    assert parse_path("tile/entries/000.p/17") == Bundle(0, 17)
    assert Bundle(3).start == 768


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",  # not 3 digits
        "tile/0/0001",
        "tile/0/x000/001",  # leading zero group
        "tile/0/001/002",  # missing x
        "tile/0/x001",  # x on the last element
        "tile/0/x001/x002",
        "tile/0/x01/002",
        "tile/00/001",  # leading zero level
        "tile/64/001",  # level out of range
        "tile/-1/001",
        "tile/0/-01",
        "tile/0/001.p/0",  # width 0
        "tile/0/001.p/256",  # a full tile is never .p
        "tile/0/001.p/07",
        "tile/0/001.p/",
        "tile/0/001.p/1000",
        "tile/0/001.p",
        "tile/0/001/",
        "/tile/0/001",
        "tile/0/",
        "tile/data/001",
        "tile/entries/001.p/256",
        "tile/entries/",
        "tiles/0/001",
        "tile/0/001\n",
        "tile/0/\u0660\u0660\u0661",  # Arabic-Indic digits
    ],
)
def test_malformed_paths_are_rejected(path: str) -> None:
    """Each tile has exactly one path; any other spelling raises TileError."""
    with pytest.raises(TileError):
        parse_path(path)


@pytest.mark.parametrize(
    ("level", "index", "width"), [(-1, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]
)
def test_tiles_out_of_range_do_not_exist(level: int, index: int, width: int) -> None:
    """Levels are 0..63, indexes >= 0, widths 1..256."""
    with pytest.raises(TileError):
        Tile(level, index, width)


def test_the_spec_example_tree_of_70000() -> None:
    """tlog-tiles §Partial Tiles: 273 full + 1 partial (112) at level 0, 1 + 1 (17) at 1, 1 (1) at 2."""
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    assert len(level0) == 274
    assert level0[-1] == Tile(0, 273, 112)
    assert [t for t in tiles if t.level > 0] == [Tile(1, 0), Tile(1, 1, 17), Tile(2, 0, 1)]


def test_a_tree_of_256_has_one_full_tile_and_a_partial_above() -> None:
    """tlog-tiles: size 256 is a full level 0 tile and a level 1 tile of width 1."""
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []
    assert bundles_for_size(257) == [Bundle(0), Bundle(1, 1)]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (1, 1, []),
        (5, 5, []),
        (100, 101, [Tile(0, 0, 101)]),
        (255, 256, [Tile(0, 0), Tile(1, 0, 1)]),
        (256, 257, [Tile(0, 1, 1)]),
        (256, 512, [Tile(0, 1), Tile(1, 0, 2)]),
        (300, 600, [Tile(0, 1), Tile(0, 2, 88), Tile(1, 0, 2)]),
    ],
)
def test_new_tiles_are_what_the_larger_tree_adds(old: int, new: int, expected: list[Tile]) -> None:
    """Growing a tree adds its newly full tiles and its new partial edge, nothing it had."""
    assert new_tiles(old, new) == expected


@given(st.integers(0, 200_000), st.integers(0, 200_000))
def test_new_tiles_are_the_set_difference(a: int, b: int) -> None:
    """new_tiles(old, new) is exactly tiles(new) minus tiles(old); likewise for bundles."""
    old, new = sorted((a, b))
    assert set(new_tiles(old, new)) == set(tiles_for_size(new)) - set(tiles_for_size(old))
    assert set(new_bundles(old, new)) == set(bundles_for_size(new)) - set(bundles_for_size(old))


def test_sizes_must_not_shrink() -> None:
    """A tree never gets smaller."""
    with pytest.raises(ValueError, match="old_size"):
        new_tiles(2, 1)


def test_tile_encoding_is_concatenated_hashes() -> None:
    """A tile is its hashes back to back; decoding checks the exact length."""
    data = encode_tile(LEAVES[:3])
    assert data == b"".join(LEAVES[:3])
    assert decode_tile(data, 3) == LEAVES[:3]
    for bad in (data[:-1], data + b"x", b""):
        with pytest.raises(TileError):
            decode_tile(bad, 3)
    for hashes in ([], LEAVES[:257], [b"short"]):
        with pytest.raises(TileError):
            encode_tile(hashes)


def test_bundle_encoding_is_uint16_length_prefixed() -> None:
    """Each entry is a big-endian uint16 length and its bytes."""
    data = encode_bundle([b"a", b"", b"xyz"])
    assert data == b"\x00\x01a\x00\x00\x00\x03xyz"
    assert decode_bundle(data, 3) == [b"a", b"", b"xyz"]
    assert decode_bundle(encode_bundle([b"e" * 0xFFFF]), 1) == [b"e" * 0xFFFF]


@pytest.mark.parametrize(
    ("data", "width"),
    [
        (b"", 1),  # no entries
        (b"\x00", 1),  # half a length
        (b"\x00\x02a", 1),  # entry shorter than its length
        (b"\x00\x01a\x00", 1),  # trailing byte
        (b"\x00\x01a\x00\x01b", 1),  # more entries than the width
        (b"\x00\x01a", 2),  # fewer entries than the width
        (b"\x00\x01a", 0),
        (b"\x00\x01a", 257),
    ],
)
def test_malformed_bundles_are_rejected(data: bytes, width: int) -> None:
    """A bundle must hold exactly its width of complete entries and nothing else."""
    with pytest.raises(TileError):
        decode_bundle(data, width)


def test_bundles_hold_1_to_256_entries_of_at_most_65535_bytes() -> None:
    """Empty bundles, oversized bundles and oversized entries cannot be encoded."""
    for entries in ([], [b""] * 257, [b"e" * 0x10000]):
        with pytest.raises(TileError):
            encode_bundle(entries)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=TILE_WIDTH))
def test_any_bundle_round_trips(entries: list[bytes]) -> None:
    """decode_bundle inverts encode_bundle."""
    assert decode_bundle(encode_bundle(entries), len(entries)) == entries


def test_tiles_hold_the_tree_hashes_for_every_sampled_size() -> None:
    """Built incrementally, each tile equals the tree's hashes at level 8*L, size after size."""
    tiles, store, built = TileSet(), Store(), 0
    for size in SAMPLED_SIZES:
        store.put(tiles.extend(LEAVES[built:size]))
        store.put(tiles.partial_tiles())
        built = size
        assert tiles.root() == merkle.root(LEAVES[:size])
        for tile in tiles_for_size(size):
            assert store.fetch(tile) == tile_data(tile, HASHES), tile.path


def test_hashes_read_through_tiles_make_the_same_roots_and_proofs() -> None:
    """A TileReader answers like the leaf hashes themselves: roots and proofs agree."""
    tiles, store = TileSet(), Store()
    built = 0
    for size in SAMPLED_SIZES:
        store.put(tiles.extend(LEAVES[built:size]))
        store.put(tiles.partial_tiles())
        built = size
        reader = TileReader(size, store.fetch)
        assert TreeBuilder.resume(size, reader).root() == merkle.root(LEAVES[:size])
        for index in {0, size // 2, size - 1}:
            proof = merkle.inclusion_proof(index, size, reader)
            assert proof == merkle.inclusion_proof(index, size, LEAVES)
        for old in {1, size // 3, size - 1} - {0}:
            assert merkle.consistency_proof(old, size, reader) == merkle.consistency_proof(
                old, size, LEAVES
            )


def test_every_complete_node_reads_back_through_tiles() -> None:
    """Every (level, index) of a complete subtree is the hash merkle addresses that way."""
    size = 777
    store = Store()
    tiles = TileSet()
    store.put(tiles.extend(LEAVES[:size]))
    store.put(tiles.partial_tiles())
    reader = TileReader(size, store.fetch)
    for level in range(size.bit_length()):
        for index in range(size >> level):
            assert reader(level, index) == HASHES(level, index), (level, index)
    with pytest.raises(IndexError):
        reader(0, size)
    with pytest.raises(IndexError):
        reader(9, 1)


def test_the_tiles_of_a_two_level_tree() -> None:
    """Past 65,536 leaves a level-1 tile fills and level 2 appears, as the spec's example says."""
    size = 70_000
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    hashes = LeafHashes(leaves)
    tiles, store = TileSet(), Store()
    full = tiles.extend(leaves)
    assert [t.tile for t in full if t.tile.level == 1] == [Tile(1, 0)]
    store.put(full)
    store.put(tiles.partial_tiles())
    assert [t.tile for t in tiles.partial_tiles()] == [
        Tile(0, 273, 112),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    for tile in [Tile(1, 0), Tile(1, 1, 17), Tile(2, 0, 1)]:
        assert store.fetch(tile) == tile_data(tile, hashes)
    reader = TileReader(size, store.fetch)
    assert reader(16, 0) == hashes(16, 0)
    assert reader(12, 16) == hashes(12, 16)
    assert TreeBuilder.resume(size, reader).root() == merkle.root(leaves)


def test_a_flipped_byte_in_any_tile_breaks_a_proof_built_from_it() -> None:
    """Tampering with any stored tile makes some inclusion proof fail against the true root."""
    size = 600
    tiles, store = TileSet(), Store()
    store.put(tiles.extend(LEAVES[:size]))
    store.put(tiles.partial_tiles())
    root = merkle.root(LEAVES[:size])
    for tile in tiles_for_size(size):
        data = bytearray(store.files[tile.path])
        data[len(data) // 2] ^= 0x01
        tampered = {**store.files, tile.path: bytes(data)}
        reader = _reader_over(tampered, size)
        assert not all(_proves(i, size, reader, root) for i in range(size)), tile.path


def _reader_over(files: dict[str, bytes], size: int) -> TileReader:
    return TileReader(size, lambda tile: files[tile.path])


def _proves(index: int, size: int, reader: TileReader, root: bytes) -> bool:
    proof = merkle.inclusion_proof(index, size, reader)
    try:
        merkle.verify_inclusion(reader(0, index), index, size, proof, root)
    except merkle.ProofError:
        return False
    return True


def test_a_stored_tile_of_the_wrong_length_is_named() -> None:
    """A truncated tile raises TileError naming its path."""
    reader = TileReader(3, lambda tile: b"\x00" * 95)
    with pytest.raises(TileError, match=r"tile/0/000\.p/3"):
        reader(0, 0)


def test_the_reader_caches_recent_tiles() -> None:
    """Reading many hashes of one tile fetches it once."""
    fetched: list[Tile] = []
    store = Store()
    tiles = TileSet()
    store.put(tiles.extend(LEAVES[:300]))
    store.put(tiles.partial_tiles())

    def fetch(tile: Tile) -> bytes:
        fetched.append(tile)
        return store.fetch(tile)

    reader = TileReader(300, fetch, cache=1)
    for i in range(256):
        reader(0, i)
    assert fetched == [Tile(0, 0)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=5), st.data())
def test_resuming_from_stored_tiles_continues_identically(
    steps: list[int], data: st.DataObject
) -> None:
    """An archiver that restarts at any checkpoint from its own tiles writes the same tiles."""
    sizes = [min(sum(steps[: i + 1]), MAX_SIZE) for i in range(len(steps))]
    tiles, store, built = TileSet(), Store(), 0
    for size in sizes:
        store.put(tiles.extend(LEAVES[built:size]))
        store.put(tiles.partial_tiles())
        built = size
    restart = data.draw(st.sampled_from(sizes))
    resumed = TileSet.resume(restart, TileReader(restart, store.fetch))
    assert resumed.size == restart
    assert resumed.root() == merkle.root(LEAVES[:restart])
    assert resumed.partial_tiles() == TileSet.resume(restart, HASHES).partial_tiles()
    store.put(resumed.extend(LEAVES[restart:MAX_SIZE]))  # Store.put asserts nothing changes
    store.put(resumed.partial_tiles())
    assert resumed.root() == merkle.root(LEAVES)


def test_an_empty_tile_set() -> None:
    """Nothing appended: no partial tiles, the empty root."""
    tiles = TileSet()
    assert tiles.partial_tiles() == []
    assert tiles.root() == merkle.EMPTY_ROOT
    assert TileSet.resume(0, HASHES).partial_tiles() == []


def test_bundles_group_entries_by_256() -> None:
    """Full bundles come out as they fill; the partial one on demand; resume carries on."""
    entries = [b"entry %d" % i for i in range(600)]
    builder = BundleBuilder()
    full = [b for b in map(builder.append, entries) if b is not None]
    assert [b.bundle for b in full] == [Bundle(0), Bundle(1)]
    assert decode_bundle(full[1].data, 256) == entries[256:512]
    partial = builder.partial()
    assert partial is not None
    assert partial.bundle == Bundle(2, 88)
    resumed = BundleBuilder.resume(600, decode_bundle(partial.data, 88))
    assert resumed.partial() == partial
    assert BundleBuilder.resume(512, []).partial() is None
    with pytest.raises(TileError):
        BundleBuilder.resume(600, entries[:87])
    with pytest.raises(TileError):
        builder.append(b"x" * 0x10000)
