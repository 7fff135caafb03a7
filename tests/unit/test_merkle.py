"""Merkle hashing and proofs behave as RFC 9162 defines them, checked against a naive model."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    LeafHashes,
    ProofError,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
EXHAUSTIVE_PAIRS = 64
DATA = [b"vote %d" % i for i in range(MAX_SIZE)]
LEAVES = [leaf_hash(d) for d in DATA]
READER = LeafHashes(LEAVES)
OTHER_HASH = hashlib.sha256(b"not in the tree").digest()

# The naive model: RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 as written, over DATA[start:end].


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def _mth(start: int, end: int) -> bytes:
    """MTH(D[start:end]) by its recursive definition."""
    n = end - start
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + DATA[start]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + _mth(start, start + k) + _mth(start + k, end)).digest()


def _path(m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]), m counted from start."""
    if end - start == 1:
        return []
    k = _k(end - start)
    if m < k:
        return [*_path(m, start, start + k), _mth(start + k, end)]
    return [*_path(m - k, start + k, end), _mth(start, start + k)]


def _subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[start:end], whole), m counted from start."""
    if m == end - start:
        return [] if whole else [_mth(start, end)]
    k = _k(end - start)
    if m <= k:
        return [*_subproof(m, start, start + k, whole), _mth(start + k, end)]
    return [*_subproof(m - k, start + k, end, False), _mth(start, start + k)]


def _tile_store(level: int, index: int) -> bytes:
    """A HashReader standing in for a tile store: complete subtree hashes from the model."""
    return _mth(index << level, (index + 1) << level)


class _CountingStore:
    """A tile-store reader that records which nodes it was asked for."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def __call__(self, level: int, index: int, /) -> bytes:
        self.reads.append((level, index))
        return _tile_store(level, index)


def _flip(value: bytes, bit: int) -> bytes:
    """Return value with one bit inverted."""
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def positions(draw: st.DrawFn) -> tuple[int, int]:
    """A (leaf index, tree size) with the index inside the tree."""
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn, min_size1: int = 0) -> tuple[int, int]:
    """A (size1, size2) with min_size1 <= size1 <= size2 <= MAX_SIZE."""
    size2 = draw(st.integers(max(min_size1, 1), MAX_SIZE))
    return draw(st.integers(min_size1, size2)), size2


def _raises(check: Callable[[], None]) -> bool:
    """Whether check raised ProofError."""
    try:
        check()
    except ProofError:
        return True
    return False


fuzz = settings(max_examples=300, deadline=None)


def test_leaf_and_node_hashes_use_rfc6962_prefixes() -> None:
    """A leaf hashes 0x00 || data and a node hashes 0x01 || left || right."""
    assert leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"vote") == hashlib.sha256(b"\x00vote").digest()
    left, right = LEAVES[0], LEAVES[1]
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_node_hash_rejects_children_that_are_not_hashes() -> None:
    """node_hash refuses children that are not 32 bytes."""
    with pytest.raises(ValueError, match="32-byte"):
        node_hash(LEAVES[0], LEAVES[1][:31])


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    """The empty tree's root is SHA-256 of the empty string."""
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert EMPTY_ROOT.hex() == empty
    assert root([]) == EMPTY_ROOT
    assert TreeBuilder().root() == EMPTY_ROOT
    assert TreeBuilder().size == 0


def test_root_matches_the_recursive_definition_at_every_size() -> None:
    """root() equals the recursive MTH for every tree size 0..300."""
    for size in range(MAX_SIZE + 1):
        assert root(LEAVES[:size]) == _mth(0, size), size


def test_root_rejects_leaf_hashes_that_are_not_32_bytes() -> None:
    """root() refuses a leaf hash of the wrong length."""
    with pytest.raises(ValueError, match="32 bytes"):
        root([LEAVES[0], b"short"])


def test_tree_builder_root_matches_root_at_every_size() -> None:
    """Appending leaves one by one gives the same root as root() at every size."""
    builder = TreeBuilder()
    for size, leaf in enumerate(LEAVES, start=1):
        builder.append(leaf)
        assert builder.size == size
        assert builder.root() == _mth(0, size), size


def test_tree_builder_extend_equals_repeated_append() -> None:
    """extend() appends each leaf hash in order."""
    builder = TreeBuilder()
    builder.extend(LEAVES[:100])
    builder.extend(LEAVES[100:])
    assert (builder.size, builder.root()) == (MAX_SIZE, _mth(0, MAX_SIZE))


def test_tree_builder_rejects_leaf_hashes_that_are_not_32_bytes() -> None:
    """append() refuses a leaf hash of the wrong length and leaves the tree unchanged."""
    builder = TreeBuilder()
    with pytest.raises(ValueError, match="32 bytes"):
        builder.append(b"raw vote data")
    assert (builder.size, builder.root()) == (0, EMPTY_ROOT)


def test_tree_builder_resumes_from_the_border_nodes_alone() -> None:
    """resume() reads one node per set bit of the size, then appends as if never stopped."""
    for size in range(MAX_SIZE + 1):
        store = _CountingStore()
        builder = TreeBuilder.resume(size, store)
        assert len(store.reads) == size.bit_count()
        assert (builder.size, builder.root()) == (size, _mth(0, size))
        builder.extend(LEAVES[size : size + 3])
        assert builder.root() == _mth(0, min(size + 3, MAX_SIZE))


def test_tree_builder_resume_accepts_plain_leaf_hashes() -> None:
    """resume() over a list of leaf hashes equals appending them."""
    assert TreeBuilder.resume(77, LEAVES).root() == _mth(0, 77)
    with pytest.raises(ValueError, match="exceeds"):
        TreeBuilder.resume(MAX_SIZE + 1, LEAVES)


def test_inclusion_proofs_match_the_path_definition() -> None:
    """inclusion_proof() equals PATH(m, D[n]) for every leaf of every tree size 1..300."""
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            assert inclusion_proof(index, size, READER) == _path(index, 0, size)


def test_every_inclusion_proof_verifies() -> None:
    """Every leaf of every tree size 1..300 is proven included in that tree's root."""
    for size in range(1, MAX_SIZE + 1):
        tree_root = _mth(0, size)
        for index in range(size):
            proof = inclusion_proof(index, size, _tile_store)
            verify_inclusion(LEAVES[index], index, size, proof, tree_root)


def test_consistency_proofs_match_the_subproof_definition() -> None:
    """consistency_proof() equals PROOF(m, D[n]) for every 0 < m <= n <= 64."""
    for size2 in range(1, EXHAUSTIVE_PAIRS + 1):
        for size1 in range(1, size2 + 1):
            assert consistency_proof(size1, size2, READER) == _subproof(size1, 0, size2, True)


def test_every_consistency_proof_verifies() -> None:
    """Every pair 0 <= size1 <= size2 <= 64 is proven consistent."""
    for size2 in range(EXHAUSTIVE_PAIRS + 1):
        for size1 in range(size2 + 1):
            proof = consistency_proof(size1, size2, _tile_store)
            verify_consistency(size1, size2, proof, _mth(0, size1), _mth(0, size2))


@fuzz
@given(size_pairs())
def test_sampled_consistency_proofs_up_to_300_match_and_verify(pair: tuple[int, int]) -> None:
    """Consistency proofs between trees up to 300 leaves match SUBPROOF and verify."""
    size1, size2 = pair
    proof = consistency_proof(size1, size2, READER)
    if size1 > 0:
        assert proof == _subproof(size1, 0, size2, True)
    verify_consistency(size1, size2, proof, _mth(0, size1), _mth(0, size2))


def test_proofs_are_the_same_from_a_list_or_a_reader() -> None:
    """Leaf hashes given as a list, a LeafHashes or a tile-store reader give one proof."""
    for index, size in [(0, 1), (5, 8), (6, 7), (130, 299), (299, 300)]:
        from_list = inclusion_proof(index, size, LEAVES[:size])
        assert from_list == inclusion_proof(index, size, READER)
        assert from_list == inclusion_proof(index, size, _tile_store)
    for size1, size2 in [(1, 1), (1, 8), (6, 7), (100, 257), (299, 300)]:
        from_list = consistency_proof(size1, size2, tuple(LEAVES[:size2]))
        assert from_list == consistency_proof(size1, size2, READER)
        assert from_list == consistency_proof(size1, size2, _tile_store)


def test_leaf_hashes_reader_follows_a_growing_log() -> None:
    """A LeafHashes over a list that grows serves the nodes completed since."""
    leaves = LEAVES[:3]
    reader = LeafHashes(leaves)
    assert reader(1, 0) == _mth(0, 2)
    with pytest.raises(IndexError):
        reader(1, 1)
    leaves.append(LEAVES[3])
    assert reader(1, 1) == _mth(2, 4)
    assert reader(2, 0) == _mth(0, 4)


@pytest.mark.parametrize(("level", "index"), [(-1, 0), (0, -1), (0, 300), (9, 0), (8, 1)])
def test_leaf_hashes_reader_has_no_node_outside_the_leaves(level: int, index: int) -> None:
    """Asking for a subtree that is not complete in the leaves raises IndexError."""
    with pytest.raises(IndexError):
        READER(level, index)


@pytest.mark.parametrize(("index", "size", "leaves"), [(0, 0, 0), (-1, 5, 5), (5, 5, 5), (0, 6, 5)])
def test_inclusion_proof_refuses_impossible_requests(index: int, size: int, leaves: int) -> None:
    """No inclusion proof exists outside the tree or beyond the leaves given."""
    with pytest.raises(ValueError, match=r"outside|exceeds"):
        inclusion_proof(index, size, LEAVES[:leaves])


@pytest.mark.parametrize(("size1", "size2"), [(-1, 3), (4, 3), (2, 6)])
def test_consistency_proof_refuses_impossible_requests(size1: int, size2: int) -> None:
    """No consistency proof exists for sizes out of order or beyond the leaves given."""
    with pytest.raises(ValueError, match=r"size1 <= size2|exceeds"):
        consistency_proof(size1, size2, LEAVES[:5])


def test_inclusion_rejects_every_single_flipped_bit_in_small_trees() -> None:
    """In trees up to 8 leaves, flipping any bit of the leaf, proof or root is caught."""
    for size in range(1, 9):
        tree_root = _mth(0, size)
        for index in range(size):
            leaf, proof = LEAVES[index], _path(index, 0, size)
            for bit in range(HASH_SIZE * 8):
                with pytest.raises(ProofError):
                    verify_inclusion(_flip(leaf, bit), index, size, proof, tree_root)
                with pytest.raises(ProofError):
                    verify_inclusion(leaf, index, size, proof, _flip(tree_root, bit))
                for i, item in enumerate(proof):
                    tampered = [*proof[:i], _flip(item, bit), *proof[i + 1 :]]
                    with pytest.raises(ProofError):
                        verify_inclusion(leaf, index, size, tampered, tree_root)


@fuzz
@given(positions(), st.integers(0, HASH_SIZE * 8 - 1), st.data())
def test_inclusion_rejects_a_flipped_bit(
    position: tuple[int, int], bit: int, data: st.DataObject
) -> None:
    """Flipping one bit of the leaf hash, a proof hash or the root is caught."""
    index, size = position
    leaf, proof, tree_root = LEAVES[index], _path(index, 0, size), _mth(0, size)
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")
    if target == -2:
        leaf = _flip(leaf, bit)
    elif target == -1:
        tree_root = _flip(tree_root, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, tree_root)


@fuzz
@given(positions(), st.integers(-2, MAX_SIZE + 2))
def test_inclusion_rejects_a_wrong_index(position: tuple[int, int], wrong: int) -> None:
    """A proof for one leaf does not prove any other index, in or out of the tree."""
    index, size = position
    if wrong != index:
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], wrong, size, _path(index, 0, size), _mth(0, size))


@fuzz
@given(positions(), st.integers(0, MAX_SIZE))
def test_inclusion_rejects_another_tree_size(position: tuple[int, int], other: int) -> None:
    """Against another size's root, a proof verifies only if it is that size's proof too."""
    index, size = position
    proof = _path(index, 0, size)
    rejected = _raises(lambda: verify_inclusion(LEAVES[index], index, other, proof, _mth(0, other)))
    assert rejected == (index >= other or proof != _path(index, 0, other))


@fuzz
@given(positions(), st.data())
def test_inclusion_rejects_a_truncated_or_extended_proof(
    position: tuple[int, int], data: st.DataObject
) -> None:
    """Removing a proof hash, or inserting any hash anywhere, is caught."""
    index, size = position
    proof, tree_root = _path(index, 0, size), _mth(0, size)
    extra = data.draw(st.sampled_from([OTHER_HASH, tree_root, LEAVES[index], *proof]))
    where = data.draw(st.integers(0, len(proof)))
    with pytest.raises(ProofError):
        verify_inclusion(
            LEAVES[index], index, size, [*proof[:where], extra, *proof[where:]], tree_root
        )
    if proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[index], index, size, proof, tree_root)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_inclusion_rejects_hashes_that_are_not_32_bytes(length: int) -> None:
    """A leaf hash, proof hash or root of the wrong length is malformed."""
    bad = b"\x00" * length
    proof, tree_root = _path(2, 0, 5), _mth(0, 5)
    for args in [
        (bad, 2, 5, proof, tree_root),
        (LEAVES[2], 2, 5, [proof[0], bad, proof[2]], tree_root),
        (LEAVES[2], 2, 5, proof, bad),
    ]:
        with pytest.raises(ProofError, match="32-byte"):
            verify_inclusion(*args)


def test_inclusion_in_the_empty_tree_is_impossible() -> None:
    """No leaf is in a tree of size 0, whatever the root."""
    with pytest.raises(ProofError, match="outside"):
        verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)


def test_single_leaf_tree_needs_an_empty_proof() -> None:
    """A one-leaf tree's root is its leaf hash and the proof is empty."""
    verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(LEAVES[0], 0, 1, [LEAVES[0]], LEAVES[0])


def test_consistency_rejects_every_single_flipped_bit_in_small_trees() -> None:
    """For trees up to 8 leaves, flipping any bit of the proof or either root is caught."""
    for size2 in range(1, 9):
        for size1 in range(1, size2 + 1):
            proof, root1, root2 = _subproof(size1, 0, size2, True), _mth(0, size1), _mth(0, size2)
            for bit in range(HASH_SIZE * 8):
                with pytest.raises(ProofError):
                    verify_consistency(size1, size2, proof, _flip(root1, bit), root2)
                with pytest.raises(ProofError):
                    verify_consistency(size1, size2, proof, root1, _flip(root2, bit))
                for i, item in enumerate(proof):
                    tampered = [*proof[:i], _flip(item, bit), *proof[i + 1 :]]
                    with pytest.raises(ProofError):
                        verify_consistency(size1, size2, tampered, root1, root2)


@fuzz
@given(size_pairs(min_size1=1), st.integers(0, HASH_SIZE * 8 - 1), st.data())
def test_consistency_rejects_a_flipped_bit(
    pair: tuple[int, int], bit: int, data: st.DataObject
) -> None:
    """Flipping one bit of a proof hash or of either root is caught."""
    size1, size2 = pair
    proof, root1, root2 = _subproof(size1, 0, size2, True), _mth(0, size1), _mth(0, size2)
    target = data.draw(st.integers(-2, len(proof) - 1), label="target")
    if target == -2:
        root1 = _flip(root1, bit)
    elif target == -1:
        root2 = _flip(root2, bit)
    else:
        proof[target] = _flip(proof[target], bit)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)


@fuzz
@given(size_pairs(min_size1=1), size_pairs())
def test_consistency_rejects_other_sizes(pair: tuple[int, int], other: tuple[int, int]) -> None:
    """Against other sizes' roots, a proof verifies only if it is their proof too."""
    proof = consistency_proof(*pair, READER)
    size1, size2 = other
    rejected = _raises(
        lambda: verify_consistency(size1, size2, proof, _mth(0, size1), _mth(0, size2))
    )
    assert rejected == (proof != consistency_proof(size1, size2, READER))


@fuzz
@given(size_pairs(min_size1=1), st.data())
def test_consistency_rejects_a_truncated_or_extended_proof(
    pair: tuple[int, int], data: st.DataObject
) -> None:
    """Removing a proof hash, or inserting any hash anywhere, is caught."""
    size1, size2 = pair
    proof, root1, root2 = _subproof(size1, 0, size2, True), _mth(0, size1), _mth(0, size2)
    extra = data.draw(st.sampled_from([OTHER_HASH, root1, root2, *proof]))
    where = data.draw(st.integers(0, len(proof)))
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, [*proof[:where], extra, *proof[where:]], root1, root2)
    if proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, root2)


@pytest.mark.parametrize("length", [0, 31, 33])
def test_consistency_rejects_hashes_that_are_not_32_bytes(length: int) -> None:
    """A proof hash or root of the wrong length is malformed when a proof is checked."""
    bad = b"\x00" * length
    proof, root1, root2 = _subproof(3, 0, 7, True), _mth(0, 3), _mth(0, 7)
    for args in [
        (3, 7, [bad, *proof[1:]], root1, root2),
        (3, 7, proof, bad, root2),
        (3, 7, proof, root1, bad),
        (0, 7, [], EMPTY_ROOT, bad),
    ]:
        with pytest.raises(ProofError, match="32-byte"):
            verify_consistency(*args)


@pytest.mark.parametrize(
    ("size1", "size2", "proof", "root1", "root2", "reason"),
    [
        (3, 2, [], _mth(0, 3), _mth(0, 2), "size1 <= size2"),
        (-1, 2, [], EMPTY_ROOT, _mth(0, 2), "size1 <= size2"),
        (4, 4, [_mth(0, 4)], _mth(0, 4), _mth(0, 4), "must be empty"),
        (4, 4, [], _mth(0, 4), _mth(0, 5), "different roots"),
        (0, 0, [], EMPTY_ROOT, OTHER_HASH, "different roots"),
        (0, 0, [], OTHER_HASH, OTHER_HASH, "empty tree"),
        (0, 5, [], OTHER_HASH, _mth(0, 5), "empty tree"),
        (0, 5, [EMPTY_ROOT], EMPTY_ROOT, _mth(0, 5), "must be empty"),
        (3, 5, [], _mth(0, 3), _mth(0, 5), "empty"),
        (1, 2, [LEAVES[1], OTHER_HASH], LEAVES[0], _mth(0, 2), "too long"),
        (3, 5, _subproof(3, 0, 5, True)[:-1], _mth(0, 3), _mth(0, 5), "too short"),
    ],
)
def test_consistency_edge_cases_are_rejected(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes, reason: str
) -> None:
    """Sizes out of order, a misplaced or wrong-length proof, or unequal roots fail."""
    with pytest.raises(ProofError, match=reason):
        verify_consistency(size1, size2, proof, root1, root2)


def test_consistency_trivial_cases_are_accepted() -> None:
    """Equal sizes with equal roots, and the empty tree before any tree, need no proof."""
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 9, [], EMPTY_ROOT, _mth(0, 9))
    verify_consistency(9, 9, [], _mth(0, 9), _mth(0, 9))
