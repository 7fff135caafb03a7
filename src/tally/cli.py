"""`tally`: run the server (or one role of it), administer polls, vote, read results, audit the ledger, mint dev tokens,
benchmark.

Server modules are imported only by the commands that need them: `tally audit` must run with the
ledger format modules alone, as an outside auditor's copy would."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

from tally import config
from tally.admission_cli import add_admission_key_parser
from tally.audit.cli import build_parser as build_audit_parser
from tally.client import DEFAULT_URL, ApiError, TallyClient, default_url
from tally.cluster_cli import add_cluster_parser
from tally.evidence_cli import add_evidence_parser
from tally.poll_cli import add_poll_parser, resolve_option
from tally.progress import Progress
from tally.review_cli import add_review_parser
from tally.store_cli import add_store_parser
from tally.witness_cli import add_witness_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "url", "") is None:  # a client command given no --url
            args.url, args.url_from = default_url()
        return int(args.run(args) or 0)
    except config.ConfigError as exc:
        print(f"tally: configuration error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        if exc.code == "unreachable" and getattr(args, "url_from", None):
            print(f"tally: that URL came from {args.url_from}", file=sys.stderr)
        if exc.document.get("receipt"):
            print(json.dumps(exc.document["receipt"], indent=2))
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    # Shared options go on every command, so they may follow it: `tally vote P O --token T`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        help=f"Tally server (env TALLY_URL; else TALLY_HOST and TALLY_PORT as tally serve reads "
        f"them; default {DEFAULT_URL})",
    )
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (env TALLY_DATA_DIR, default ./data)",
    )
    common.add_argument(
        "--ca-file",
        type=Path,
        default=os.environ.get("TALLY_CA_FILE") or None,
        help="PEM CA certificate(s) to trust for an https --url, e.g. a private CA "
        "(env TALLY_CA_FILE; default: the system's trust store)",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("TALLY_TOKEN"),
        help="bearer token (env TALLY_TOKEN); admin commands mint one from the local data dir if omitted",
    )
    parser = argparse.ArgumentParser(prog="tally", description=(__doc__ or "").split("\n\n")[0])
    sub = _Subcommands(parser.add_subparsers(required=True, metavar="COMMAND"), common)

    serve = sub.add_parser(
        "serve",
        help="run every role in one process (embedded Valkey unless TALLY_VALKEY_URL is set)",
    )
    serve.add_argument("--host", help="gateway address (env TALLY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gateway port (env TALLY_PORT, default 8000)")
    serve.add_argument("--demo", action="store_true", help="open a demo poll and print how to vote")
    _tls_arguments(serve)
    serve.set_defaults(run=_serve)

    gateway = sub.add_parser(
        "gateway", help="run only the gateway role: HTTP API and live (needs TALLY_VALKEY_URL)"
    )
    gateway.add_argument("--host", help="address (env TALLY_HOST, default 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="port (env TALLY_PORT, default 8000)")
    gateway.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port (env TALLY_WORKERS, default one per core)",
    )
    _tls_arguments(gateway)
    gateway.set_defaults(run=_gateway)

    aggregator = sub.add_parser(
        "aggregator",
        help="run only the aggregator role and the deadline sweep (needs TALLY_VALKEY_URL)",
    )
    aggregator.add_argument(
        "--host", help="ops server address (env TALLY_OPS_HOST, default 127.0.0.1)"
    )
    aggregator.add_argument(
        "--port", type=int, help="ops server port (env TALLY_AGGREGATOR_PORT, default 8001)"
    )
    aggregator.set_defaults(run=_aggregator)

    archiver = sub.add_parser(
        "archiver", help="run only the archiver role (needs TALLY_VALKEY_URL and the ledger dir)"
    )
    archiver.add_argument(
        "--host", help="ops server address (env TALLY_OPS_HOST, default 127.0.0.1)"
    )
    archiver.add_argument(
        "--port", type=int, help="ops server port (env TALLY_ARCHIVER_PORT, default 8002)"
    )
    archiver.set_defaults(run=_archiver)

    add_cluster_parser(sub)  # tally cluster up|down: a local Valkey Cluster (tally.cluster_cli)
    # tally review list|release|void; the dev token minted without --token is a reviewer's, who
    # alone sees held votes' client addresses and user agents.
    add_review_parser(sub, common, lambda args: _admin_client(args, role="reviewer"))
    add_evidence_parser(sub, common, _settings)  # tally evidence keys|rotate|reencrypt|drop-key
    add_admission_key_parser(sub, common, _settings)  # tally admission-key register|retire|list
    add_witness_parser(sub)  # tally witness: a checkpoint witness (tally.witness_cli)
    add_store_parser(sub, common, _settings)  # tally store acl|load-functions (tally.store_cli)

    audit = sub.add_parser(
        "audit", help="verify a poll's published ledger, check a receipt, export a ledger"
    )
    build_audit_parser(audit)

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = _Subcommands(cfg.add_subparsers(required=True, metavar="ACTION"), common)
    show = cfg_sub.add_parser(
        "show", help="print the effective configuration (secrets masked), as TALLY_X=value lines"
    )
    show.add_argument("--json", action="store_true", help=JSON_HELP)
    show.set_defaults(run=_config_show)

    token = sub.add_parser(
        "token",
        help="mint tokens from the dev issuer in the data dir (the one tally serve made there)",
    )
    token.add_argument("subject", nargs="?", help="the voter (or admin, reviewer) it speaks for")
    token.add_argument(
        "--role",
        choices=["voter", "reviewer", "admin"],
        default="voter",
        help="its role (default voter)",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument(
        "--alg",
        choices=["EdDSA", "ES256", "RS256"],
        default="EdDSA",
        help="signature algorithm (default EdDSA)",
    )
    token.add_argument("--count", type=int, help="mint N voter tokens, one per line")
    token.add_argument("--prefix", default="voter-", help="subject prefix with --count")
    token.add_argument(
        "--create",
        action="store_true",
        help="make a new dev issuer if the data dir has none (a running server trusts only the "
        "one in its own data dir)",
    )
    token.add_argument("--json", action="store_true", help=JSON_HELP)
    token.set_defaults(run=_token)

    add_poll_parser(sub, common, _admin_client)  # tally poll create|open|close|show|list

    vote = sub.add_parser("vote", help="vote in a poll")
    vote.add_argument("poll_id", help="the poll")
    vote.add_argument(
        "option", help="the option: its id or its label, in any case (e.g. groß or Groß)"
    )
    vote.add_argument("--json", action="store_true", help=JSON_HELP)
    vote.set_defaults(run=_vote)

    results = sub.add_parser("results", help="current results of a poll")
    results.add_argument("poll_id", help="the poll")
    results.add_argument("--json", action="store_true", help=JSON_HELP)
    results.add_argument(
        "--csv",
        choices=["results", "turnout"],
        help="print GET /v1/polls/<poll>/results.csv (counts) or turnout.csv (ballots per minute) "
        "instead",
    )
    results.set_defaults(run=_results)

    bench = sub.add_parser(
        "bench", help="measure vote throughput and latency against a Starlette baseline"
    )
    bench.add_argument(
        "--voters", type=int, default=20000, help="voters, each voting once (default 20000)"
    )
    bench.add_argument(
        "--concurrency", type=int, default=64, help="connections sending votes (default 64)"
    )
    bench.add_argument(
        "--alg",
        choices=["EdDSA", "ES256", "RS256"],
        default="EdDSA",
        help="token algorithm the voters' tokens use",
    )
    bench.add_argument("--lanes", type=int, default=16, help="the bench poll's lanes (default 16)")
    bench.add_argument(
        "--no-baseline", action="store_true", help="skip the Starlette hello-world baseline"
    )
    bench.add_argument(
        "--watchers",
        type=int,
        default=0,
        metavar="N",
        help="N WebSocket watchers of the bench poll during the votes: vote-to-visible latency, "
        "snapshots received, gateway memory per watcher, broadcast time",
    )
    bench.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="VOTES_PER_S",
        help="pace the votes at this rate (default: as fast as the connections allow)",
    )
    bench.add_argument(
        "--defences",
        action="store_true",
        help="the defences' cost: votes/s with every defence on vs off, in one run",
    )
    bench.add_argument(
        "--signing",
        choices=["both"],
        help="admission signing's cost (issue 11): hello-world baseline, signed and unsigned "
        "votes in interleaved rounds of --voters each, in one run",
    )
    bench.add_argument(
        "--sessions",
        action="store_true",
        help="voting sessions vs bearer JWTs (--alg; RS256 for the issue-12 figure): hello-world "
        "baseline, session and JWT votes of one gateway process in interleaved rounds, one run",
    )
    bench.add_argument(
        "--rounds", type=int, default=2, help="rounds of --signing both or --sessions (default 2)"
    )
    bench.add_argument("--json", action="store_true", help=JSON_HELP)
    bench.set_defaults(run=_bench)
    return parser


JSON_HELP = "print the result as JSON (data only: no progress, no prose)"


def _tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert",
        type=Path,
        help="serve HTTPS and WSS with this PEM certificate chain (env TALLY_TLS_CERT)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        help="its PEM private key, readable by its owner only (env TALLY_TLS_KEY)",
    )


class _Subcommands:
    """add_parser that gives every command the shared options."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._action.add_parser(
            name, parents=[self._common], **kwargs
        )
        return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> config.Settings:
    return config.load(data_dir=args.data_dir, **overrides)


def _logged_settings(args: argparse.Namespace, **overrides: Any) -> config.Settings:
    """Settings for a long-running command, with logging set up at their level."""
    settings = _settings(args, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per WebSocket opened or closed is noise at 20k watchers; keep its warnings.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))
    return settings


def _private_data_dir(settings: config.Settings) -> None:
    """What a serving process writes is its owner's alone: umask 077 (files 0600, folders 0700,
    the embedded valkey-server's too) and the data dir itself 0700, even one made earlier."""
    os.umask(0o077)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)


def _serve(args: argparse.Namespace) -> int:
    settings = _logged_settings(
        args, host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    _private_data_dir(settings)
    from tally.wiring import commands

    return uvloop.run(commands.serve(settings, demo=args.demo))


def _gateway(args: argparse.Namespace) -> int:
    settings = _logged_settings(
        args,
        host=args.host,
        port=args.port,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    _private_data_dir(settings)
    from tally.wiring import workers

    return workers.gateway(settings)


def _aggregator(args: argparse.Namespace) -> int:
    settings = _logged_settings(args, ops_host=args.host, aggregator_port=args.port)
    _private_data_dir(settings)
    from tally.wiring import commands

    return uvloop.run(commands.aggregator(settings))


def _archiver(args: argparse.Namespace) -> int:
    settings = _logged_settings(args, ops_host=args.host, archiver_port=args.port)
    _private_data_dir(settings)
    from tally.wiring import commands

    return uvloop.run(commands.archiver(settings))


def _config_show(args: argparse.Namespace) -> int:
    view = _settings(args).public_view()
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    for name, value in view.items():
        print(f"{name}={value}")
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from tally.wiring.identity import dev_issuer

    if args.ttl > settings.token_max_lifetime_s:
        print(
            f"tally: --ttl {args.ttl} is longer than TALLY_TOKEN_MAX_LIFETIME_S="
            f"{settings.token_max_lifetime_s}: the gateway would refuse the token",
            file=sys.stderr,
        )
        return 2
    if args.count is not None and args.count < 1:
        print("tally: --count must be at least 1", file=sys.stderr)
        return 2
    if args.count is None and not args.subject:
        print("tally: give a SUBJECT or --count N", file=sys.stderr)
        return 2
    missing = None if args.create else _no_dev_issuer(settings)
    if missing is not None:
        print(f"tally: {missing}", file=sys.stderr)
        return 2
    if settings.jwks is not None and not args.json:
        print(
            "tally: note: TALLY_JWKS is set; a server with it accepts only that issuer's tokens, "
            "not these dev tokens",
            file=sys.stderr,
        )
    issuer = dev_issuer(settings)
    if args.count is not None:
        subjects = [f"{args.prefix}{i}" for i in range(args.count)]
        tokens = issuer.mint_many(subjects, ttl_s=args.ttl, alg=args.alg)
        if args.json:
            pairs = zip(subjects, tokens, strict=True)
            print(json.dumps([{"subject": s, "token": t} for s, t in pairs]))
            return 0
        out = sys.stdout
        with Progress("minting tokens", total=args.count, unit="tokens") as shown:
            for token in tokens:
                out.write(shown.step(token) + "\n")
        return 0
    token = issuer.mint(args.subject, roles=[args.role], ttl_s=args.ttl, alg=args.alg)
    if args.json:
        print(json.dumps({"subject": args.subject, "role": args.role, "token": token}))
    else:
        print(token)
    return 0


def _no_dev_issuer(settings: config.Settings) -> str | None:
    """Why `tally token` will not mint here, or None. A token from a new issuer made anywhere but
    a server's data dir is one no running server accepts, so outside a data dir it says where it
    looked instead. A data dir that exists (a server's, or one named on purpose) gets its issuer
    made on first use, as `tally serve` would."""
    from tally.security.keys import keys_dir

    keys = keys_dir(settings.data_dir)
    if (keys / "jwks.json").is_file() or settings.data_dir.is_dir():
        return None
    return (
        f"no dev issuer: the data dir {settings.data_dir.resolve()} does not exist, so no "
        f"server made one there (looked for {keys / 'jwks.json'}).\n"
        "  Point at the data dir of the running server with --data-dir DIR or TALLY_DATA_DIR "
        "(tally serve prints it),\n"
        "  or add --create to make a new issuer there (only a server started on that data dir "
        "accepts its tokens)."
    )


def _admin_client(args: argparse.Namespace, role: str = "admin") -> TallyClient:
    token = args.token
    if token is None:
        settings = _settings(args)
        from tally.security.keys import keys_dir
        from tally.wiring.identity import dev_issuer

        if not keys_dir(settings.data_dir).is_dir():
            print(
                f"tally: no --token and no dev issuer keys in {keys_dir(settings.data_dir)}",
                file=sys.stderr,
            )
            raise SystemExit(2)
        token = dev_issuer(settings).mint("tally-cli", roles=[role], ttl_s=300)
    return TallyClient(args.url, token, ca_file=args.ca_file)


def _print(document: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(document, indent=2) if as_json else text)


def _vote(args: argparse.Namespace) -> int:
    if not args.token:
        print("tally: vote needs --token (see `tally token SUBJECT`)", file=sys.stderr)
        return 2

    def solving(challenge: dict[str, Any]) -> None:
        if not args.json:
            print(
                f"solving a {challenge['difficulty']}-bit proof-of-work challenge…",
                file=sys.stderr,
            )

    client = TallyClient(args.url, args.token, ca_file=args.ca_file)
    # The API takes option ids; a person types what the page shows, so the CLI reads the poll
    # and sends the id of the option named by id or label.
    option = resolve_option(client.get(f"/v1/polls/{args.poll_id}"), args.option)
    if option is None:
        return 2
    reply = client.vote(args.poll_id, option, solving=solving)
    receipt = reply["receipt"]
    # 202: recorded but held for review, counted only once a reviewer releases it.
    outcome = f"held for review ({reply['held']['reason']})" if "held" in reply else "accepted"
    _print(
        reply,
        args.json,
        f"{outcome}: {receipt['option']} in lane {receipt['lane']}, entry {receipt['entry_id']} at {receipt['accepted_at']}",
    )
    return 0


def _results(args: argparse.Namespace) -> int:
    client = TallyClient(args.url, args.token, ca_file=args.ca_file)
    if args.csv:
        sys.stdout.write(client.get_text(f"/v1/polls/{args.poll_id}/{args.csv}.csv"))
        return 0
    results = client.get(f"/v1/polls/{args.poll_id}/results")
    if results.get("counts") is None:  # the poll hides them from this caller (result visibility)
        until = "you have voted" if results.get("hidden") == "until-vote" else "the poll closes"
        line = f"{results['poll_id']}  [{results['state']}]  total {results['total']}"
        _print(results, args.json, f"{line}  (counts hidden until {until})")
        return 0
    width = max((len(k) for k in results["counts"]), default=0)
    review = f", {results['under_review']} under review" if results.get("under_review") else ""
    lines = [
        f"{results['poll_id']}  [{results['state']}]  total {results['total']}{review}  (updated {results['updated_at']})"
    ]
    lines += [f"  {option:<{width}}  {n}" for option, n in results["counts"].items()]
    _print(results, args.json, "\n".join(lines))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from tally.bench.runner import run_bench

    if args.sessions:
        from tally.bench.sessions_run import run_sessions_bench

        if args.watchers or args.rate is not None or args.no_baseline or args.signing:
            print(
                "tally bench: --sessions takes no --watchers, --rate, --no-baseline or --signing",
                file=sys.stderr,
            )
            return 2
        return run_sessions_bench(args)

    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
