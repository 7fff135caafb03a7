"""Merkle tree hashing and proofs for the ledger (RFC 9162 §2.1, RFC 6962 domain separation).

Pure functions on :mod:`hashlib`: no I/O, no clock. A hash is 32 ``bytes`` (SHA-256)::

    leaf hash  = SHA-256(0x00 || data)
    node hash  = SHA-256(0x01 || left || right)
    empty root = SHA-256("")

Where node hashes come from
---------------------------
The proof builders (:func:`inclusion_proof`, :func:`consistency_proof`) and
:meth:`TreeBuilder.resume` never need an incomplete subtree from storage: they read only
hashes of *complete* subtrees, addressed as C2SP tlog-tiles addresses them. Node
``(level L, index N)`` is the hash of the complete subtree of ``2**L`` leaves starting at
leaf ``N * 2**L``; level 0 holds the leaf hashes. They take either

- a plain ``Sequence[bytes]`` of leaf hashes (a list or tuple), wrapped in a fresh
  :class:`LeafHashes` per call, which costs O(n) hashing per proof; or
- a :class:`HashReader`: any callable ``(level, index) -> bytes``, such as a tile store's
  bound method, or one :class:`LeafHashes` kept and reused, which caches the levels it has
  built so each later proof costs O(log n).

A root does not commit to its tree size: a proof shows consistency between *(size, root)
pairs*, so verify against pairs taken from signed checkpoints, never a root on its own.

Errors
------
::

    ValueError
     └── ProofError    a proof did not verify, or its inputs are malformed

Proof *builders* raise plain ``ValueError`` for impossible requests (index outside the tree,
more leaves asked for than given). The reader raises ``IndexError`` for a node that does not
exist yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashReader",
    "LeafHashes",
    "ProofError",
    "TreeBuilder",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class ProofError(ValueError):
    """An inclusion or consistency proof does not verify, or its inputs are malformed."""


class HashReader(Protocol):
    """Supplies the hash of one complete subtree.

    ``reader(level, index)`` returns the 32-byte hash of the ``2**level`` leaves starting at
    leaf ``index * 2**level`` (C2SP tlog-tiles addressing). It is only asked for subtrees that
    are complete in the tree a proof is built for. It raises ``IndexError`` (or another
    ``LookupError``) when that subtree is not stored. It must be safe to call repeatedly.
    """

    def __call__(self, level: int, index: int, /) -> bytes: ...


def leaf_hash(data: bytes) -> bytes:
    """Return the hash of a leaf holding ``data``: SHA-256(0x00 || data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of an interior node: SHA-256(0x01 || left || right)."""
    if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
        raise ValueError(f"node children must be {HASH_SIZE}-byte hashes")
    return _sha256(_NODE_PREFIX + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash (MTH) of ``leaf_hashes``; the empty tree has EMPTY_ROOT.

    Hashes level by level, promoting a lone rightmost node unchanged: this equals the
    recursive "largest power of two" split of RFC 9162 §2.1.1.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    if set(map(len, leaf_hashes)) != {HASH_SIZE}:
        raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
    level = list(leaf_hashes)
    while len(level) > 1:
        parents = [
            _sha256(_NODE_PREFIX + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=False)
        ]
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
    return level[0]


class LeafHashes:
    """A :class:`HashReader` over leaf hashes held in memory.

    Interior levels are built on first use and cached. The sequence may grow between
    calls (an append-only log); entries already present must not change.
    """

    __slots__ = ("_leaves", "_levels")

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes
        self._levels: list[list[bytes]] = []  # _levels[i] holds level i + 1

    def __call__(self, level: int, index: int, /) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > len(self._leaves):
            raise IndexError(f"no complete subtree at level {level}, index {index}")
        if level == 0:
            return self._leaves[index]
        if level <= len(self._levels) and index < len(self._levels[level - 1]):
            return self._levels[level - 1][index]
        return self._level(level)[index]

    def _level(self, level: int) -> Sequence[bytes]:
        if level == 0:
            return self._leaves
        below = self._level(level - 1)
        while len(self._levels) < level:
            self._levels.append([])
        nodes = self._levels[level - 1]
        for i in range(len(nodes), len(below) // 2):
            nodes.append(_sha256(_NODE_PREFIX + below[2 * i] + below[2 * i + 1]).digest())
        return nodes


def _as_reader(hashes: Sequence[bytes] | HashReader, size: int) -> HashReader:
    if isinstance(hashes, Sequence):
        if size > len(hashes):
            raise ValueError(f"tree size {size} exceeds the {len(hashes)} leaf hashes given")
        return LeafHashes(hashes)
    return hashes


def _range_hash(nodes: HashReader, start: int, end: int) -> bytes:
    """MTH of leaves [start, end), where start is aligned to the subtree's width.

    The range splits into complete subtrees along the bits of its width, largest first.
    """
    blocks: list[bytes] = []
    while start < end:
        level = (end - start).bit_length() - 1
        blocks.append(nodes(level, start >> level))
        start += 1 << level
    result = blocks.pop()
    while blocks:
        result = _sha256(_NODE_PREFIX + blocks.pop() + result).digest()
    return result


def _split(start: int, end: int) -> int:
    """Return start + k, with k the largest power of two smaller than end - start."""
    return start + (1 << ((end - start - 1).bit_length() - 1))


def inclusion_proof(index: int, size: int, hashes: Sequence[bytes] | HashReader) -> list[bytes]:
    """Return PATH(index, D[size]) of RFC 9162 §2.1.3.1, nearest sibling first.

    ``hashes`` is the leaf hashes or a :class:`HashReader` (see the module docstring).
    Raises ValueError unless 0 <= index < size.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    nodes = _as_reader(hashes, size)
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = _split(start, end)
        if index < mid:
            path.append(_range_hash(nodes, mid, end))
            end = mid
        else:
            path.append(_range_hash(nodes, start, mid))
            start = mid
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, hashes: Sequence[bytes] | HashReader) -> list[bytes]:
    """Return PROOF(size1, D[size2]) of RFC 9162 §2.1.4.1 (SUBPROOF), innermost first.

    The proof is empty when size1 is 0 or equals size2. Raises ValueError unless
    0 <= size1 <= size2.
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"need 0 <= size1 <= size2, got {size1} and {size2}")
    nodes = _as_reader(hashes, size2)
    if size1 in (0, size2):
        return []
    proof: list[bytes] = []
    start, end, whole = 0, size2, True  # `whole`: the b flag of SUBPROOF
    while size1 != end:
        mid = _split(start, end)
        if size1 <= mid:
            proof.append(_range_hash(nodes, mid, end))
            end = mid
        else:
            proof.append(_range_hash(nodes, start, mid))
            start, whole = mid, False
    if not whole:
        proof.append(_range_hash(nodes, start, end))
    proof.reverse()
    return proof


class TreeBuilder:
    """Appends leaf hashes one by one, keeping only the right border (O(log n) hashes).

    The border holds one complete subtree per set bit of ``size``, largest (leftmost) first.
    """

    __slots__ = ("_border", "_size")

    def __init__(self) -> None:
        self._border: list[bytes] = []
        self._size = 0

    @classmethod
    def resume(cls, size: int, hashes: Sequence[bytes] | HashReader) -> TreeBuilder:
        """Rebuild the state after ``size`` leaves by reading the border's complete subtrees."""
        if size < 0:
            raise ValueError(f"tree size must be >= 0, got {size}")
        nodes = _as_reader(hashes, size)
        builder = cls()
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                node = nodes(level, (size >> level) - 1)
                if len(node) != HASH_SIZE:
                    raise ValueError(f"node ({level}, {(size >> level) - 1}) is not a hash")
                builder._border.append(node)
        builder._size = size
        return builder

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (already domain-separated, see :func:`leaf_hash`)."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        border, node, size = self._border, leaf_hash, self._size
        while size & 1:  # each trailing 1 bit is a subtree this leaf now completes
            node = _sha256(_NODE_PREFIX + border.pop() + node).digest()
            size >>= 1
        border.append(node)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append each leaf hash in order."""
        for item in leaf_hashes:
            self.append(item)

    def root(self) -> bytes:
        """Return the root of the tree so far (EMPTY_ROOT when empty)."""
        if not self._border:
            return EMPTY_ROOT
        border = self._border
        result = border[-1]
        for i in range(len(border) - 2, -1, -1):
            result = _sha256(_NODE_PREFIX + border[i] + result).digest()
        return result


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, item in enumerate(proof):
        _check_hash(f"proof[{i}]", item)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2, step by step. Raises ProofError on any mismatch or malformed input.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof(proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` with ``root2`` extends the one of ``size1``/``root1``.

    RFC 9162 §2.1.4.2 for 0 < size1 < size2. The RFC leaves the other cases to the caller:
    size1 == size2 needs an empty proof and equal roots (compared as given, matching the
    reference verifier); size1 == 0 needs an empty proof, root1 == EMPTY_ROOT and a
    well-formed root2. Raises ProofError on any mismatch or malformed input.
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"need 0 <= size1 <= size2, got {size1} and {size2}")
    if size1 == 0 or size1 == size2:
        if proof:
            raise ProofError("proof must be empty when size1 is 0 or equals size2")
        if size1 == 0:
            if root1 != EMPTY_ROOT:
                raise ProofError("root1 is not the root of the empty tree")
            _check_hash("root2", root2)
        if root1 != root2 and size1 == size2:
            raise ProofError("trees of equal size have different roots")
        return
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    _check_proof(proof)
    _verify_consistency_path(size1, size2, proof, root1, root2)


def _verify_consistency_path(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 §2.1.4.2 steps 1-7, for 0 < size1 < size2 and well-formed hashes."""
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a complete subtree: its hash is root1, not in the proof
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError("consistency proof does not lead to root1")
    if sr != root2:
        raise ProofError("consistency proof does not lead to root2")
