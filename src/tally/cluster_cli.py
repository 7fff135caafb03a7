"""`tally cluster up|down`: a local Valkey Cluster for development, tests and benchmarks.

`up` starts and forms the cluster (the default user off, one ACL user per role, Tally's
functions loaded), prints the admin's URL, then each role's with the 0600 file that holds it, and
returns while the nodes keep running; `down` (from any shell) stops the cluster recorded in the
same directory and removes the URL files.

    export TALLY_VALKEY_URL=$(cat data/cluster/admin.url)    # tally serve, tally store, ...
    TALLY_VALKEY_URL=$(cat data/cluster/gateway.url) tally gateway
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tally.store.local_cluster import STATE_FILE, ClusterError, LocalCluster, down

DEFAULT_DIR = Path("data/cluster")


def add_cluster_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `cluster up|down` to subparsers (anything with argparse's `add_parser`)."""
    cluster = subparsers.add_parser("cluster", help="start or stop a local Valkey Cluster")
    actions = cluster.add_subparsers(required=True, metavar="ACTION", dest="cluster_action")
    up = actions.add_parser(
        "up",
        help="start a local cluster, print its admin's and each role's URL (the nodes keep "
        "running)",
    )
    up.add_argument("--primaries", type=_positive, default=3, help="primaries (default 3)")
    up.add_argument(
        "--replicas", type=_non_negative, default=1, help="replicas per primary (default 1)"
    )
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"default ./{DEFAULT_DIR}")
    up.add_argument(
        "--node-timeout-ms",
        type=_positive,
        default=1000,
        help="cluster-node-timeout: how soon a dead primary is failed over (default 1000)",
    )
    up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for a healthy cluster"
    )
    up.add_argument(
        "--json",
        action="store_true",
        help='print {"url", "roles": {ROLE: {"url", "file"}}} as JSON (the URLs hold passwords)',
    )
    stop = actions.add_parser("down", help="stop the local cluster recorded in --dir")
    stop.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"default ./{DEFAULT_DIR}")
    for parser in (cluster, up, stop):
        parser.set_defaults(run=run_cluster)
    cluster_parser: argparse.ArgumentParser = cluster
    return cluster_parser


def run_cluster(args: argparse.Namespace) -> int:
    try:
        if args.cluster_action == "up":
            cluster = LocalCluster(
                args.dir,
                primaries=args.primaries,
                replicas=args.replicas,
                node_timeout_ms=args.node_timeout_ms,
            )
            cluster.up(timeout_s=args.timeout)
            files = cluster.url_files()
            if args.json:
                roles = {
                    role: {"url": cluster.url_for(role), "file": str(path)}
                    for role, path in files.items()
                }
                print(json.dumps({"url": cluster.url, "roles": roles}, indent=2))
                return 0
            print(cluster.url)
            print(f"export TALLY_VALKEY_URL='{cluster.url}'")
            for role, path in files.items():
                print(f"{role}: {cluster.url_for(role)} ({path})")
            return 0
        if not (args.dir / STATE_FILE).exists():
            print(f"no cluster recorded in {args.dir}; nothing to stop")
            return 0
        stopped = down(args.dir)
        print(f"stopped {len(stopped.nodes)} nodes in {stopped.dir}:")
        for node in stopped.nodes:  # each by name, so one can tell what ran there
            of = f" of {node.primary_port}" if node.primary_port is not None else ""
            print(f"  {node.role}{of} on port {node.port} (pid {node.pid})")
        return 0
    except ClusterError as exc:
        print(f"tally cluster: {exc}", file=sys.stderr)
        return 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tally.cluster_cli cluster up|down ...`, until `tally cluster` is wired in."""
    parser = argparse.ArgumentParser(prog="tally")
    add_cluster_parser(parser.add_subparsers(required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return run_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
