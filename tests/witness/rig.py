"""What the witness tests build on: a ledger key and logs signed with it (the archiver's own
checkpoint code), and `tally witness` as a real process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from role_processes import HOST, Role, running_process
from tally.bench.processes import free_port
from tally.ledger import merkle, note
from tally.ledger.checkpoint import Checkpoint, lane_origin, sign_checkpoint
from tally.ledger.cosignature import CosignatureVerifier
from tally.witness.protocol import format_add_checkpoint

PREFIX = "tally.test/ledger"
LEDGER = note.Signer(PREFIX, bytes(range(32)))
POLL = "final-2026"


class Log:
    """A lane's log: records appended, checkpoints signed with the ledger key renamed to it."""

    def __init__(self, lane: int = 0, *, signer: note.Signer = LEDGER, tag: str = "") -> None:
        self.origin = lane_origin(signer.name, POLL, lane)
        self.signer = signer.renamed(self.origin)
        self.tag = tag  # a forked log's records differ by it
        self.hashes: list[bytes] = []

    def grow(self, size: int) -> Log:
        while len(self.hashes) < size:
            self.hashes.append(merkle.leaf_hash(f"{self.tag}vote {len(self.hashes)}".encode()))
        return self

    def checkpoint(self, size: int | None = None) -> bytes:
        size = len(self.hashes) if size is None else size
        body = Checkpoint(self.origin, size, merkle.root(self.hashes[:size]))
        return sign_checkpoint(body, [self.signer])

    def request(self, old: int, size: int | None = None) -> bytes:
        """An add-checkpoint body: this log at ``size``, with a proof from ``old``."""
        size = len(self.hashes) if size is None else size
        proof = merkle.consistency_proof(old, size, self.hashes[:size]) if 0 < old < size else []
        return format_add_checkpoint(old, proof, self.checkpoint(size))


def witness_key(key_file: Path) -> CosignatureVerifier:
    """`tally witness --print-key`: makes the key on first use, prints its verifier key."""
    result = subprocess.run(
        [sys.executable, "-m", "tally", "witness", "--print-key", "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return CosignatureVerifier.parse(result.stdout.strip())


@contextlib.contextmanager
def running_witness(
    directory: Path,
    log_keys: Sequence[str] = (str(LEDGER.verifier),),
    name: str = "witness",
    port: int | None = None,
) -> Iterator[Role]:
    """`tally witness` with its state and key in ``directory`` (on ``port``, or a free one);
    yields once /healthz answers; on exit kills what still runs and reaps it."""
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "tally", "witness", "--host", HOST, "--port", str(port)]
    argv += ["--state-dir", str(directory), "--key-file", str(directory / "witness.key")]
    for key in log_keys:
        argv += ["--log-key", key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    log_path = directory.parent / f"{name}.log"
    with running_process("witness", argv, env, port, log_path) as role:
        yield role


def post(role: Role, body: bytes) -> httpx.Response:
    return httpx.post(f"{role.url}/add-checkpoint", content=body, timeout=10.0)
