"""`tally witness`: run a checkpoint witness (C2SP tlog-witness) for one or more Tally ledgers.

A separate process with its own Ed25519 key (made once in --key-file, 0600) and its own state
dir (the latest cosigned checkpoint of each log). It follows the logs of each --log-key: a
ledger's verifier key as `GET /ledger/keys` serves it, named by its origin prefix. Give its
verifier key (`--print-key`) to the archiver (TALLY_WITNESSES) and to auditors
(`tally audit verify --witness`). Binds 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tally.ledger import note
from tally.ledger.cosignature import CosignatureError, Cosigner, generate_cosigner_key

DEFAULT_PORT = 8003
DEFAULT_STATE_DIR = Path("data/witness")
DEFAULT_NAME = "tally.localhost/witness"

log = logging.getLogger("tally.witness")


def add_witness_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `witness` to subparsers (anything with argparse's `add_parser`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "witness",
        help="run a checkpoint witness: cosigns each consistent checkpoint of a ledger's logs",
        description=(__doc__ or "").split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"the witness's state: the latest checkpoint per log (default ./{DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        help="the witness's signing key, made on first start (default STATE_DIR/witness.key)",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"the witness's key name when the key is first made (default {DEFAULT_NAME})",
    )
    parser.add_argument(
        "--log-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a ledger's verifier key (NAME+ID+KEY), the /ledger/keys document (its admission "
        "keys are skipped) or a file of either; the witness follows NAME/<poll>/<log>; repeatable",
    )
    parser.add_argument(
        "--print-key", action="store_true", help="print the witness's verifier key and exit"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="default info"
    )
    parser.set_defaults(run=run_witness)
    return parser


def load_cosigner(key_file: Path, name: str) -> Cosigner:
    """The witness key in ``key_file``, made once (security.keys: 0600, atomic, fsynced)."""
    from tally.security.keys import read_or_create

    def make() -> bytes:
        signer_key, _ = generate_cosigner_key(name)
        return (signer_key + "\n").encode()

    return Cosigner.parse(read_or_create(key_file, make).decode())


def load_log_keys(values: list[str]) -> list[note.Verifier]:
    """Each --log-key: a verifier key, the /ledger/keys document (as text or a file), or a file
    with one key per line. In /ledger/keys, the lines after a key that carry a validity period
    (`<key> <not before> <not after>`) are gateways' admission keys, not log keys: skipped."""
    keys: list[note.Verifier] = []
    for value in values:
        text = value
        if "+" not in value or (("\n" not in value) and Path(value).is_file()):
            text = Path(value).read_text()
        lines = [line.split() for line in text.splitlines() if line.strip()]
        keys += [note.Verifier.parse(fields[0]) for fields in lines if len(fields) == 1]
    return keys


def run_witness(args: argparse.Namespace) -> int:
    key_file = args.key_file or args.state_dir / "witness.key"
    try:
        cosigner = load_cosigner(key_file, args.name)
    except (OSError, CosignatureError) as exc:
        print(f"tally witness: cannot use the key in {key_file}: {exc}", file=sys.stderr)
        return 2
    if args.print_key:
        print(cosigner.verifier)
        return 0
    try:
        keys = load_log_keys(args.log_key)
    except (OSError, note.NoteError) as exc:
        print(f"tally witness: --log-key: {exc}", file=sys.stderr)
        return 2
    if not keys:
        print("tally witness: give at least one --log-key (a ledger's key)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from tally.witness.server import witness_app
    from tally.witness.state import StateFiles, StateLocked
    from tally.witness.witness import LogKeys, Witness

    state = StateFiles(args.state_dir)
    try:
        state.lock()
    except (StateLocked, OSError) as exc:
        print(f"tally witness: {exc}", file=sys.stderr)
        return 2
    witness = Witness(cosigner, LogKeys(keys), state, time.time)
    log.info(
        "witness %s on http://%s:%d, state in %s, following %s",
        cosigner.verifier, args.host, args.port, args.state_dir,
        ", ".join(f"{key.name}/*" for key in keys),
    )  # fmt: skip
    config = uvicorn.Config(
        witness_app(witness),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
    )
    try:
        _server_class()(config).run()  # stops on SIGTERM/SIGINT once requests in flight finish
    finally:
        state.unlock()
    return 0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, exiting 0 after a graceful stop (its own capture re-raises the signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def stop(signum: int, frame: object) -> None:
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server
