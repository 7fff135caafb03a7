"""Step 2 of ``tally audit verify``: a log's entries and tiles against its signed checkpoints.

The entry bundles are read in order up to the newest verified size; each is split, leaf-hashed
and handed to the meaning check of step 3, and the tree is rebuilt from the hashes
(:class:`~tally.audit.verify_tree.Tree`). Then every tile is compared byte for byte with the
published one (every full tile, and the partial tiles and bundles of every checkpoint size), the
root is recomputed at every checkpoint size, and an RFC 9162 consistency proof is checked between
each pair of successive checkpoints. Where the entries and the published tiles disagree, the
signed root decides which of the two was changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from tally.audit.source import Source
from tally.audit.verify_checkpoints import Log, Signed
from tally.audit.verify_findings import Findings, b64
from tally.audit.verify_tree import Tree, bundle_of, full_tiles, leaf_hashes, partial_tiles
from tally.ledger import merkle
from tally.ledger.merkle import HASH_SIZE, TreeBuilder
from tally.ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Bundle,
    Tile,
    TileError,
    TileReader,
    bundles_for_size,
    decode_bundle,
    decode_tile,
)

__all__ = ["BundleCheck", "EntryChecks"]

# Step 3's check of one bundle: (index of its first leaf, its entries, its path).
BundleCheck = Callable[[int, list[bytes], str], None]


@dataclass(frozen=True, slots=True)
class _TileDiff:
    """One hash of a published tile that differs from the rebuilt one."""

    path: str
    position: int  # the hash's place in the tile
    first: int  # the leaves it covers: [first, end)
    end: int
    expected: bytes
    found: bytes


class EntryChecks:
    """Rebuilds each log from its entries and holds the published tiles and roots against it."""

    def __init__(self, source: Source, findings: Findings, tick: Callable[[int], None]) -> None:
        self.source = source
        self.findings = findings
        self._tick = tick  # leaves done, for the progress callback

    def check_log(self, log: Log, check_bundle: BundleCheck) -> None:
        """Check ``log`` up to its newest verified checkpoint; ``check_bundle`` each bundle."""
        tree = self._rebuild(log, check_bundle)
        tree.finish()
        diffs = self._compare_tiles(log, tree)
        self._check_roots(log, tree, diffs)

    # -- the entries (the hot path) ------------------------------------------------------------

    def _rebuild(self, log: Log, check_bundle: BundleCheck) -> Tree:
        tree = Tree()
        size = log.size
        bundles = bundles_for_size(size)
        paths = [f"{log.name}/{bundle.path}" for bundle in bundles]
        for bundle, path, data in zip(bundles, paths, self.source.read_many(paths), strict=True):
            entries: list[bytes] | None = None
            if data is None:
                self.findings.add("missing-file", path, "the entry bundle is missing")
            else:
                try:
                    entries = decode_bundle(data, bundle.width)
                except TileError as exc:
                    self.findings.add("bad-bundle", path, str(exc), index=bundle.start)
            if entries is None:
                # Go on with the published tile's hashes, so that the rest of the log is still
                # checked; those leaves are not decoded, so not counted.
                hashes = self._published_level0(log, bundle)
                if hashes is None:
                    self.findings.add(
                        "missing-file",
                        f"{log.name}/{Tile(0, bundle.index, bundle.width).path}",
                        f"the tile is missing too: leaves from {bundle.start} on cannot be checked",
                        index=bundle.start,
                    )
                    break
                tree.add(hashes)
            else:
                tree.add(leaf_hashes(entries))
                check_bundle(bundle.start, entries, path)
            self._tick(bundle.width)
        return tree

    def _published_level0(self, log: Log, bundle: Bundle) -> list[bytes] | None:
        data = self.source.read(f"{log.name}/{Tile(0, bundle.index, bundle.width).path}")
        if data is None:
            return None
        try:
            return decode_tile(data, bundle.width)
        except TileError:
            return None

    # -- the tiles -----------------------------------------------------------------------------

    def _compare_tiles(self, log: Log, tree: Tree) -> list[_TileDiff]:
        """Compare every tile of every checkpoint size with the rebuilt one."""
        # The tiles of the newest size first, so that a leaf's first difference names them.
        tiles = full_tiles(tree.size) + partial_tiles(tree.size)
        for signed in log.signed:
            if signed.size <= tree.size:
                tiles += partial_tiles(signed.size)
        wanted: dict[str, Tile] = {}
        for tile in tiles:
            wanted.setdefault(f"{log.name}/{tile.path}", tile)  # each path once
        diffs: list[_TileDiff] = []
        paths = list(wanted)
        for path, published in zip(paths, self.source.read_many(paths), strict=True):
            tile = wanted[path]
            expected = tree.tile(tile)
            if published == expected:
                continue
            if published is None:
                self.findings.add("missing-file", path, "the tile is missing")
            elif len(published) != len(expected):
                self.findings.add(
                    "tile-size",
                    path,
                    f"a tile of width {tile.width} is {len(expected)} bytes, found {len(published)}",
                    expected=str(len(expected)),
                    found=str(len(published)),
                )
            else:
                diffs += _hash_diffs(path, tile, expected, published)
        return diffs

    # -- the roots: which side is wrong --------------------------------------------------------

    def _check_roots(self, log: Log, tree: Tree, diffs: list[_TileDiff]) -> None:
        checked = [s for s in log.signed if s.size <= tree.size]
        good = {id(s): tree.root(s.size) == s.root for s in checked}
        level0: dict[int, _TileDiff] = {}
        for diff in diffs:
            if diff.end - diff.first == 1:
                level0.setdefault(diff.first, diff)  # the newest size's tile, listed first
        wrong_entries, tiles_agree = self._changed_entries(log, checked, good, level0)
        explained = {
            id(s)
            for s in checked
            if id(s) in tiles_agree and any(j < s.size for j in wrong_entries)
        }
        self._report_changed_entries(log, tree, level0, wrong_entries)
        self._report_tile_diffs(diffs, wrong_entries)
        self._report_roots(tree, checked, good, explained)
        self._check_consistency(tree, checked, good, explained)
        self._check_partial_bundles(log, tree, checked, wrong_entries, level0)

    def _changed_entries(
        self,
        log: Log,
        checked: list[Signed],
        good: dict[int, bool],
        level0: dict[int, _TileDiff],
    ) -> tuple[set[int], set[int]]:
        """The leaves whose entries were changed, and the ids of the checkpoints that say so.

        Where the rebuilt leaves differ from the published tiles and a checkpoint does not match
        the entries, ask the signature which side is right: if the published tiles give the
        signed root, the entries were changed, not the tiles.
        """
        wrong_entries: set[int] = set()
        tiles_agree: set[int] = set()  # ids of mismatched checkpoints the published tiles give
        if level0:
            for signed in checked:
                if not good[id(signed)] and self._published_root(log, signed.size) == signed.root:
                    tiles_agree.add(id(signed))
                    wrong_entries.update(j for j in level0 if j < signed.size)
        return wrong_entries, tiles_agree

    def _published_root(self, log: Log, size: int) -> bytes | None:
        def fetch(tile: Tile) -> bytes:
            data = self.source.read(f"{log.name}/{tile.path}")
            if data is None:
                raise KeyError(tile.path)
            return data

        try:
            return TreeBuilder.resume(size, TileReader(size, fetch)).root()
        except (LookupError, ValueError):
            return None

    def _report_changed_entries(
        self, log: Log, tree: Tree, level0: dict[int, _TileDiff], wrong_entries: set[int]
    ) -> None:
        for j in sorted(wrong_entries):
            bundle = bundle_of(j, tree.size)
            diff = level0[j]
            self.findings.add(
                "entry-mismatch",
                f"{log.name}/{bundle.path}",
                f"leaf {j}: the entry hashes to {diff.expected.hex()}, but the signed tree "
                f"holds {diff.found.hex()} ({diff.path})",
                index=j,
                expected=diff.found.hex(),
                found=diff.expected.hex(),
            )

    def _report_tile_diffs(self, diffs: list[_TileDiff], wrong_entries: set[int]) -> None:
        for diff in diffs:
            if any(diff.first <= j < diff.end for j in wrong_entries):
                continue  # the tile is right; the entry was reported
            self.findings.add(
                "tile-mismatch",
                diff.path,
                f"hash {diff.position}: expected {diff.expected.hex()} (from entries), "
                f"found {diff.found.hex()}",
                index=diff.first,
                expected=diff.expected.hex(),
                found=diff.found.hex(),
            )

    def _report_roots(
        self, tree: Tree, checked: list[Signed], good: dict[int, bool], explained: set[int]
    ) -> None:
        for n, signed in enumerate(checked):
            if good[id(signed)] or id(signed) in explained:
                continue
            rebuilt = tree.root(signed.size)
            later_good = any(good[id(s)] for s in checked[n + 1 :] if s.size > signed.size)
            if later_good:
                self.findings.add(
                    "history-rewritten",
                    signed.file,
                    f"the entries give another root at size {signed.size} than this checkpoint "
                    "signs, while later checkpoints match them: the log's history was rewritten "
                    f"(inconsistent with checkpoint {signed.file})",
                    expected=b64(rebuilt),
                    found=b64(signed.root),
                )
            else:
                self.findings.add(
                    "root-mismatch",
                    signed.file,
                    f"the entries give root {b64(rebuilt)} at size {signed.size}, the "
                    f"checkpoint signs {b64(signed.root)}",
                    expected=b64(rebuilt),
                    found=b64(signed.root),
                )

    def _check_consistency(
        self, tree: Tree, checked: list[Signed], good: dict[int, bool], explained: set[int]
    ) -> None:
        for older, newer in itertools.pairwise(checked):
            # RFC 9162 §2.1.4: the proof is built from the rebuilt tree and checked against the
            # signed roots, an independent path to the same answer as the roots above.
            proof = merkle.consistency_proof(older.size, newer.size, tree.reader(newer.size))
            try:
                merkle.verify_consistency(older.size, newer.size, proof, older.root, newer.root)
            except merkle.ProofError as exc:
                pair = (older, newer)
                if any(id(s) in explained for s in pair) and all(
                    good[id(s)] or id(s) in explained for s in pair
                ):
                    continue  # the changed entries, reported above, are why
                self.findings.add(
                    "inconsistent-history",
                    newer.file,
                    f"size {newer.size} does not extend checkpoint {older.file} (size "
                    f"{older.size}): {exc}",
                    expected=f"a tree extending {older.file}",
                    found=b64(newer.root),
                )

    # -- the partial bundles -------------------------------------------------------------------

    def _check_partial_bundles(
        self,
        log: Log,
        tree: Tree,
        checked: list[Signed],
        wrong_entries: set[int],
        level0: dict[int, _TileDiff],
    ) -> None:
        """Each checkpoint's partial bundle holds the log's entries at that size."""
        bundles = {
            Bundle(s.size // TILE_WIDTH, s.size % TILE_WIDTH)
            for s in checked
            if s.size % TILE_WIDTH and s.size < tree.size
        }
        ordered = sorted(bundles, key=lambda b: (b.index, b.width))
        paths = [f"{log.name}/{bundle.path}" for bundle in ordered]
        for bundle, path, data in zip(ordered, paths, self.source.read_many(paths), strict=True):
            if data is None:
                self.findings.add(
                    "missing-file", path, "the checkpoint's partial bundle is missing"
                )
                continue
            try:
                entries = decode_bundle(data, bundle.width)
            except TileError as exc:
                self.findings.add("bad-bundle", path, str(exc), index=bundle.start)
                continue
            for offset, digest in enumerate(leaf_hashes(entries)):
                j = bundle.start + offset
                trusted = level0[j].found if j in wrong_entries else tree.leaf(j)
                if digest != trusted:
                    self.findings.add(
                        "bundle-mismatch",
                        path,
                        f"leaf {j}: the entry hashes to {digest.hex()}, the log's leaf is "
                        f"{trusted.hex()}",
                        index=j,
                        expected=trusted.hex(),
                        found=digest.hex(),
                    )


def _hash_diffs(path: str, tile: Tile, expected: bytes, published: bytes) -> list[_TileDiff]:
    """Each hash of a published tile (of the right length) that differs from the rebuilt one."""
    diffs: list[_TileDiff] = []
    span = 1 << (TILE_HEIGHT * tile.level)
    for position in range(tile.width):
        at = position * HASH_SIZE
        want, got = expected[at : at + HASH_SIZE], published[at : at + HASH_SIZE]
        if want != got:
            first = (tile.index * TILE_WIDTH + position) * span
            diffs.append(_TileDiff(path, position, first, first + span, want, got))
    return diffs
