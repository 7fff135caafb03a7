"""The worked example of docs/ledger-format.md is what the code produces, byte for byte."""

from __future__ import annotations

import base64

from tally.ledger import merkle, note
from tally.ledger.checkpoint import Checkpoint, lane_origin, open_checkpoint, sign_checkpoint
from tally.ledger.leaf import VoteRecord, encode_leaf
from tally.ledger.tiles import BundleBuilder, TileSet

PSEUDONYMS = [
    bytes.fromhex("00112233445566778899aabbccddee03"),
    bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f13"),
    bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e123"),
]
VOTES = [
    VoteRecord(
        "final-2025", 3, seq, PSEUDONYMS[seq - 1], option, 1_767_225_600_000 + 250 * (seq - 1)
    )
    for seq, option in ((1, "alice"), (2, "bob"), (3, "alice"))
]
LEAVES = [
    "01010a66696e616c2d323032350003000000000000000100112233445566778899aabbccddee0305616c6963650000019b76daa80001",
    "01010a66696e616c2d3230323500030000000000000002a1b2c3d4e5f60718293a4b5c6d7e8f1303626f620000019b76daa8fa01",
    "01010a66696e616c2d32303235000300000000000000030f1e2d3c4b5a69788796a5b4c3d2e12305616c6963650000019b76daa9f401",
]
LEAF_HASHES = [
    "e8d26f8577f65d4318bbc2390c3d356cff621c81f7df36daa05c84bc07fb8d64",
    "37c1381db8b32ce7be2c6a808d7615e6ae4864a7c0464e6facc9964214601837",
    "4f6520d4f3fed01bf2e9328a8b79447efc0ff54a5e96d8d735986c2125ed2aba",
]
NODE_01 = "3253a77d54426961c590d7f84d2af60ad175eb500167c35baabff9844b491bf9"
ROOT = "a560823202ae4e5be68a320dec7c1718b6db0411b909a46fa3f26f4798dc1589"
ORIGIN = "tally.example/ledger/final-2025/3"
# An example key from a published seed (0x00..0x1f): never use it for a real log.
EXAMPLE_SKEY = "PRIVATE+KEY+tally.example/ledger/final-2025/3+4ab56368+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
EXAMPLE_VKEY = (
    "tally.example/ledger/final-2025/3+4ab56368+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
)
SIGNED_CHECKPOINT = (
    "tally.example/ledger/final-2025/3\n"
    "3\n"
    "pWCCMgKuTlvmijIN7HwXGLbbBBG5CaRvo/JvR5jcFYk=\n"
    "\n"
    "— tally.example/ledger/final-2025/3 SrVjaFDb0EOz+8OScY46oPWoKyT/vea4gOcnBR7vlt9nh5o893miUSn1pD0DIDP0h9IIRgNWl5+n5ccjoLvwg+ZjSA4=\n"
)


def test_leaves_and_leaf_hashes() -> None:
    """Three votes encode to the documented leaves and leaf hashes."""
    assert [encode_leaf(v).hex() for v in VOTES] == LEAVES
    assert [merkle.leaf_hash(bytes.fromhex(h)).hex() for h in LEAVES] == LEAF_HASHES


def test_tile_bundle_and_root() -> None:
    """The partial tile is the leaf hashes; the bundle is length-prefixed leaves; the root is MTH."""
    tiles, bundles = TileSet(), BundleBuilder()
    tiles.extend(bytes.fromhex(h) for h in LEAF_HASHES)
    for leaf in LEAVES:
        bundles.append(bytes.fromhex(leaf))
    [(tile, data)] = tiles.partial_tiles()
    assert (tile.path, data.hex()) == ("tile/0/000.p/3", "".join(LEAF_HASHES))
    bundle = bundles.partial()
    assert bundle is not None
    assert bundle.bundle.path == "tile/entries/000.p/3"
    assert bundle.data.hex() == "0036" + LEAVES[0] + "0034" + LEAVES[1] + "0036" + LEAVES[2]
    h = [bytes.fromhex(x) for x in LEAF_HASHES]
    assert merkle.node_hash(h[0], h[1]).hex() == NODE_01
    assert tiles.root().hex() == ROOT == merkle.node_hash(bytes.fromhex(NODE_01), h[2]).hex()


def test_proofs() -> None:
    """Leaf 1's inclusion proof is [leaf 0, leaf 2]; the 2 -> 3 consistency proof is [leaf 2]."""
    h = [bytes.fromhex(x) for x in LEAF_HASHES]
    assert merkle.inclusion_proof(1, 3, h) == [h[0], h[2]]
    merkle.verify_inclusion(h[1], 1, 3, [h[0], h[2]], bytes.fromhex(ROOT))
    assert merkle.consistency_proof(2, 3, h) == [h[2]]
    merkle.verify_consistency(2, 3, [h[2]], bytes.fromhex(NODE_01), bytes.fromhex(ROOT))


def test_signed_checkpoint() -> None:
    """The example key signs the size-3 checkpoint into exactly the documented note."""
    signer = note.Signer.parse(EXAMPLE_SKEY)
    assert str(signer.verifier) == EXAMPLE_VKEY
    assert lane_origin("tally.example/ledger", "final-2025", 3) == ORIGIN
    checkpoint = Checkpoint(ORIGIN, 3, bytes.fromhex(ROOT))
    assert sign_checkpoint(checkpoint, [signer]).decode() == SIGNED_CHECKPOINT
    verifier = note.Verifier.parse(EXAMPLE_VKEY)
    opened = open_checkpoint(SIGNED_CHECKPOINT.encode(), [verifier], origin=ORIGIN)
    assert opened == checkpoint
    assert base64.b64encode(opened.root).decode() == "pWCCMgKuTlvmijIN7HwXGLbbBBG5CaRvo/JvR5jcFYk="
