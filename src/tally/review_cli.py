"""`tally review list|release|void`: reviewers' commands over the held-votes API.

    tally review list POLL [--json]
    tally review release POLL (--reason R | --subnet S | --entry LANE:ID ...)
    tally review void POLL    (--reason R | --subnet S | --entry LANE:ID ...)

--reason and --subnet together select the votes held for that reason from that subnet. The token
(--token / TALLY_TOKEN) needs the reviewer or admin role; without one, a dev reviewer token is
minted from the local data dir. `list` shows each vote's client address and user agent (kept
sealed at rest) to the reviewer role only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from tally.client import TallyClient

ClientFactory = Callable[[argparse.Namespace], TallyClient]


def add_review_parser(
    subparsers: Any, common: argparse.ArgumentParser, client_of: ClientFactory
) -> None:
    """Add `review list|release|void` to subparsers (anything with argparse's `add_parser`);
    each action gets the shared options of `common`; `client_of` builds the reviewer's client."""
    review = subparsers.add_parser(
        "review", help="list votes held for review, release or void them (reviewer)"
    )
    actions = review.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[common], help="held votes grouped by reason and subnet"
    )
    listing.add_argument("poll_id", help="the poll")
    listing.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    listing.set_defaults(run=lambda args: _list(args, client_of(args)))
    for verb in ("release", "void"):
        decide = actions.add_parser(
            verb, parents=[common], help=f"{verb} held votes: by group or one by one"
        )
        decide.add_argument("poll_id", help="the poll")
        decide.add_argument("--reason", help="every vote held for this reason")
        decide.add_argument("--subnet", help="every vote held from this subnet (e.g. 192.0.2.0/24)")
        decide.add_argument(
            "--entry", action="append", type=_entry, default=[], metavar="LANE:ID",
            help="one held vote by its receipt's lane and entry_id (repeat)",
        )  # fmt: skip
        decide.add_argument(
            "--json", action="store_true", help="print the result as JSON (data only)"
        )
        decide.set_defaults(run=lambda args, verb=verb: _decide(args, verb, client_of(args)))


def _entry(text: str) -> dict[str, int]:
    lane, sep, entry_id = text.partition(":")
    if not sep or not lane.isdigit() or not entry_id.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not LANE:ID (two numbers)")
    return {"lane": int(lane), "entry_id": int(entry_id)}


def _list(args: argparse.Namespace, client: TallyClient) -> int:
    listing = client.get(f"/v1/polls/{args.poll_id}/held")
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print(f"{listing['poll_id']}: {listing['under_review']} under review")
    for group in listing["groups"]:
        subnet = group["subnet"] or "(no address)"
        print(f"  {group['reason']}  {subnet}  {group['count']} held")
        for e in group["entries"]:
            # The evidence is stored sealed; the server opens it for the reviewer role only.
            if "address" in e:
                network = f"  from {e['address'] or '-'}  agent {e['user_agent']!r}"
            else:
                network = f"  evidence {e.get('evidence', 'none')}"
            print(f"    {e['lane']}:{e['entry_id']}  {e['option']}  held {e['held_at']}{network}")
        if group["truncated"]:
            print(f"    ... and {group['count'] - len(group['entries'])} more")
    return 0


def _decide(args: argparse.Namespace, verb: str, client: TallyClient) -> int:
    if args.entry and (args.reason is not None or args.subnet is not None):
        print("tally: give --entry, or --reason and/or --subnet, not both", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"decision": verb}
    if args.entry:
        body["entries"] = args.entry
    elif args.reason is not None or args.subnet is not None:
        body["group"] = {
            name: value
            for name, value in (("reason", args.reason), ("subnet", args.subnet))
            if value is not None
        }
    else:
        print("tally: give --reason, --subnet or --entry LANE:ID", file=sys.stderr)
        return 2
    report = client.post(f"/v1/polls/{args.poll_id}/held/decisions", body)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"released {report['released']}, voided {report['voided']}, "
            f"already decided {report['already_decided']}, refused {report['refused']}"
        )
        for e in report["entries"]:
            if e["outcome"] in ("not-held", "conflict"):
                print(f"  {e['lane']}:{e['entry_id']}  refused: {e['outcome']}")
    return 1 if report["refused"] else 0
