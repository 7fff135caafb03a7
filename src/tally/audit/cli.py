"""The auditor's command line: ``tally audit verify|receipt|export`` (and ``tally-audit``).

:func:`build_parser` adds the three commands to an existing ``audit`` parser (``tally``'s), each
with ``run=<function(args) -> int>``; :func:`main` is the same commands on their own
(``python -m tally.audit``). Exit status: 0 when everything checks out, 1 with findings (or
files an export could not find), 2 for a usage error or a source that cannot be read; ``receipt``
also exits 3 when the vote is missing from the final log of a closed, certified poll.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from tally.audit.export import export
from tally.audit.receipt import ReceiptError, check_receipt, parse_receipt
from tally.audit.receipt_admission import admission_keys, published_keys
from tally.audit.report import Progress
from tally.audit.source import HttpSource, Source, SourceError, open_source
from tally.audit.verify import verify
from tally.ledger import note
from tally.ledger.admission import AdmissionKey
from tally.ledger.checkpoint import admin_origin
from tally.ledger.cosignature import CosignatureVerifier

__all__ = ["build_parser", "main"]

DEFAULT_URL = "http://127.0.0.1:8000"
USAGE_ERROR = 2
MISSING_FROM_FINAL_LOG = 3  # `receipt`: the certified final log does not hold the vote
RECEIPT_EXIT_STATUSES = """exit status:
  0  the vote is in the lane's signed log, as the receipt says
  1  a finding: the receipt and the log disagree, or the vote is not yet in a checkpoint
     ("not-in-checkpoint": try again after the next checkpoint)
  2  usage error, or the receipt, key or source cannot be read
  3  missing from the final log: the poll is closed and certified, and the lane's final log
     does not hold the vote (a receipt with a valid admission signature proves it was admitted)
"""


class UsageError(Exception):
    """A command-line argument is not usable; exit status 2."""


def build_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``verify``, ``receipt`` and ``export`` to ``parser`` (an ``audit`` command)."""
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify_cmd = commands.add_parser(
        "verify",
        help="check a poll's published ledger: signatures, tiles, history, meaning, result",
        description="Check a poll's ledger with only its published files and the public key. "
        "Exit 0 when it checks out, 1 with findings, 2 if it cannot be read.",
    )
    verify_cmd.add_argument(
        "source",
        metavar="SOURCE",
        help="the poll's ledger root: http(s)://HOST/ledger/POLL, or a directory",
    )
    _key_argument(verify_cmd)
    verify_cmd.add_argument("--poll", metavar="ID", help="the poll the ledger must be of")
    verify_cmd.add_argument(
        "--known",
        metavar="SOURCE",
        action="append",
        default=[],
        help="an earlier copy of the ledger (a `tally audit export` dir or URL) whose "
        "checkpoints the ledger must still extend; repeatable. Catches a history rewritten "
        "and re-signed as a whole",
    )
    _admission_key_argument(verify_cmd)
    verify_cmd.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="threads that verify admission signatures (default: one per CPU)",
    )
    _witness_arguments(verify_cmd)
    _ca_file_argument(verify_cmd)
    verify_cmd.add_argument("--json", action="store_true", help="print one JSON document")
    verify_cmd.add_argument(
        "--progress", action="store_true", help="show a progress bar on stderr even if not a TTY"
    )
    verify_cmd.set_defaults(run=run_verify)

    receipt_cmd = commands.add_parser(
        "receipt",
        help="check that a vote receipt is in the published log",
        description="Check a vote receipt against the lane's signed log (SOURCE), a tlog-proof "
        "(--proof, offline), or both, and its admission signature against the gateways' "
        "admission keys (--admission-key, or those SOURCE's server publishes at /ledger/keys). "
        "With only --admission-key, check what the receipt alone proves: the gateway's "
        "signature that it admitted the vote.",
        epilog=RECEIPT_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    receipt_cmd.add_argument(
        "receipt", metavar="RECEIPT", help="the receipt JSON file (or a vote reply holding it)"
    )
    receipt_cmd.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="the poll's ledger root (URL or directory); optional with --proof",
    )
    _key_argument(receipt_cmd)
    receipt_cmd.add_argument(
        "--proof",
        type=Path,
        metavar="FILE",
        help="a C2SP tlog-proof of the vote, checked against the key alone",
    )
    _admission_key_argument(receipt_cmd)
    _ca_file_argument(receipt_cmd)
    receipt_cmd.add_argument("--json", action="store_true", help="print one JSON document")
    receipt_cmd.set_defaults(run=run_receipt)

    export_cmd = commands.add_parser(
        "export",
        help="copy a poll's whole ledger into a directory (for verify DIR)",
        description="Copy every published file of a poll's ledger into DIR, in the directory "
        "layout that verify reads.",
    )
    export_cmd.add_argument("poll", metavar="POLL", help="the poll id")
    export_cmd.add_argument(
        "directory", type=Path, metavar="DIR", help="where to write the copy (its root)"
    )
    where = export_cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        # SUPPRESS: when not given here, an --url given to `tally audit` (or TALLY_URL) stands.
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"the Tally server (env TALLY_URL, default {DEFAULT_URL}); copies URL/ledger/POLL",
    )
    where.add_argument(
        "--source", metavar="SOURCE", help="copy from this ledger root (URL or directory) instead"
    )
    export_cmd.add_argument(
        "--progress", action="store_true", help="show a progress bar on stderr even if not a TTY"
    )
    export_cmd.add_argument("--json", action="store_true", help="print one JSON document")
    _ca_file_argument(export_cmd)
    export_cmd.set_defaults(run=run_export)


def main(argv: Sequence[str] | None = None) -> int:
    """``tally-audit``: the audit commands without the rest of ``tally``."""
    parser = argparse.ArgumentParser(
        prog="tally-audit",
        description="Audit a Tally poll from its published ledger and public key alone.",
    )
    build_parser(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


def _key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        required=True,
        metavar="VKEY",
        help="the ledger's verifier key (NAME+ID+KEY, as /ledger/keys serves it) or a file "
        "holding it; get it from the poll's organiser, not only from the server audited",
    )


def _ca_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA certificate(s) to trust for an https source, e.g. a private CA "
        "(default: TALLY_CA_FILE, else the system's)",
    )


def _admission_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admission-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a gateway's admission verifier key (NAME+ID+KEY, as its operator publishes it) or "
        "a file of them, one a line; repeatable. Only these keys' signatures count, and every "
        "vote must carry one",
    )


def load_admission_keys(texts: Sequence[str]) -> list[note.Verifier]:
    """Each ``--admission-key``: a verifier key string, or a file of them (one a line)."""
    keys: list[note.Verifier] = []
    for text in texts:
        values = [text]
        path = Path(text)
        if "+" not in text or path.is_file():
            try:
                values = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"--admission-key: not a key, and cannot read it as a file: {exc}"
                ) from None
            if not values:
                raise UsageError(f"--admission-key: {text} holds no key")
        for value in values:
            try:
                keys.append(note.Verifier.parse(value))
            except note.NoteError as exc:
                raise UsageError(f"--admission-key: not a verifier key: {exc}") from None
    return keys


def load_key(text: str) -> note.Verifier:
    """The verifier key given as a key string or as a file holding one (first non-empty line)."""
    value = text.strip().partition("\n")[0].strip()  # /ledger/keys: the ledger key comes first
    path = Path(text)
    if "+" not in text or path.is_file():
        try:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--key: not a key, and cannot read it as a file: {exc}") from None
        if not lines:
            raise UsageError(f"--key: {text} holds no key")
        value = lines[0]
    try:
        key = note.Verifier.parse(value)
    except note.NoteError as exc:
        raise UsageError(f"--key: not a verifier key: {exc}") from None
    try:
        admin_origin(key.name, "poll")
    except ValueError:
        raise UsageError(
            f"--key: the key is named {key.name!r}, not by the ledger's origin prefix "
            "(like tally.example/ledger)"
        ) from None
    return key


def _fail(message: str) -> int:
    print(f"tally audit: {message}", file=sys.stderr)
    return USAGE_ERROR


def _progress(args: argparse.Namespace, label: str, *, quiet: bool) -> Progress:
    """A bar when asked for, or when stderr is a terminal and stdout is not JSON."""
    enabled = bool(args.progress) or (not quiet and sys.stderr.isatty())
    return Progress(sys.stderr, enabled=enabled, label=label)


def _witness_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="VKEY",
        help="a checkpoint witness's verifier key (NAME+ID+KEY, type 0x04, as `tally witness "
        "--print-key` prints it) or a file of them; each log's newest checkpoint must carry "
        "valid cosignatures of --min-witnesses of them; repeatable",
    )
    parser.add_argument(
        "--min-witnesses",
        type=int,
        metavar="K",
        help="how many of the --witness keys must have cosigned (default: all of them)",
    )


def load_witness_keys(texts: Sequence[str], required: int | None) -> list[CosignatureVerifier]:
    """Each ``--witness``: a cosigner verifier key, or a file of them (one a line)."""
    keys: list[CosignatureVerifier] = []
    for text in texts:
        lines = [text]
        path = Path(text)
        if "+" not in text or path.is_file():
            try:
                lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(
                    f"--witness: not a key, and cannot read it as a file: {exc}"
                ) from None
        for line in lines:
            try:
                keys.append(CosignatureVerifier.parse(line))
            except note.NoteError as exc:
                raise UsageError(f"--witness: not a witness verifier key: {exc}") from None
    if required is not None and not keys:
        raise UsageError("--min-witnesses needs at least one --witness key")
    if required is not None and not 1 <= required <= len(keys):
        raise UsageError(f"--min-witnesses must be 1 to {len(keys)} (the --witness keys given)")
    return keys


def run_verify(args: argparse.Namespace) -> int:
    bar = _progress(args, "leaves", quiet=args.json)
    try:
        key = load_key(args.key)
        source = open_source(args.source, ca_file=args.ca_file)
        known = [open_source(text, ca_file=args.ca_file) for text in args.known]
        admission_keys = load_admission_keys(args.admission_key)
        if args.jobs is not None and args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        witnesses = load_witness_keys(args.witness, args.min_witnesses)
        report = verify(
            source,
            key,
            poll_id=args.poll,
            progress=bar,
            known=known,
            admission_keys=admission_keys,
            jobs=args.jobs,
            witnesses=witnesses,
            min_witnesses=args.min_witnesses,
        )
    except (UsageError, SourceError) as exc:
        bar.finish()
        return _fail(str(exc))
    bar.finish()
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(report.render_text())
    return 0 if report.ok else 1


def run_receipt(args: argparse.Namespace) -> int:
    if args.source is None and args.proof is None and not args.admission_key:
        return _fail("receipt: give a SOURCE, a --proof file, or an --admission-key")
    try:
        key = load_key(args.key)
        receipt = parse_receipt(_read_file(Path(args.receipt), "receipt"))
        proof = None if args.proof is None else _read_file(args.proof, "--proof")
        source: Source | None = (
            None if args.source is None else open_source(args.source, ca_file=args.ca_file)
        )
        pinned = load_admission_keys(args.admission_key)
        keys = admission_keys(pinned) if pinned else _published_admission_keys(source)
        report = check_receipt(
            receipt,
            key,
            source=source,
            proof=proof,
            proof_name=str(args.proof or "proof"),
            admission_keys=keys or None,
        )
    except ReceiptError as exc:
        return _fail(f"{args.receipt}: not a receipt: {exc}")
    except (UsageError, SourceError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(report.render_text())
    return {"ok": 0, "missing": MISSING_FROM_FINAL_LOG}.get(report.verdict, 1)


def _published_admission_keys(source: Source | None) -> dict[int, AdmissionKey]:
    """The admission keys the server of an http(s) ledger root publishes at /ledger/keys (none
    for a directory, or a server that publishes none)."""
    if not isinstance(source, HttpSource):
        return {}
    root, _, _ = source.url.rpartition("/")  # <base>/ledger/<poll> -> <base>/ledger
    data = HttpSource(root, timeout_s=source.timeout_s, ca_file=source.ca_file).read("keys")
    if data is None:
        return {}
    return published_keys(data.decode("utf-8", "replace"))


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def run_export(args: argparse.Namespace) -> int:
    bar = _progress(args, "files", quiet=args.json)
    try:
        if args.source:
            source = open_source(args.source, ca_file=args.ca_file)
        else:
            base = getattr(args, "url", None) or os.environ.get("TALLY_URL") or DEFAULT_URL
            poll = urllib.parse.quote(args.poll, safe="")
            source = HttpSource(f"{base.rstrip('/')}/ledger/{poll}", ca_file=args.ca_file)
        result = export(source, args.directory, progress=bar)
    except SourceError as exc:
        bar.finish()
        return _fail(str(exc))
    except OSError as exc:
        bar.finish()
        return _fail(f"cannot write {args.directory}: {exc.strerror or exc}")
    bar.finish()
    if args.json:
        document = {
            "poll": args.poll,
            "source": source.location,
            "directory": str(args.directory),
            "files": result.files,
            "bytes": result.bytes,
            "logs": result.logs,
            "missing": result.missing,
        }
        print(json.dumps(document, indent=2))
        return 1 if result.missing else 0
    logs = ", ".join(f"{log} {size}" for log, size in result.logs.items())
    print(
        f"exported {result.files} files ({result.bytes:,} bytes) of poll {args.poll} from "
        f"{source.location} to {args.directory}: logs {logs or 'none'}"
    )
    for path in result.missing:
        print(f"MISSING {path}: not found at the source", file=sys.stderr)
    return 1 if result.missing else 0
