"""`tally poll create|open|close|show|list`: organisers' commands over the polls API.

    tally poll create TITLE --option A --option B [--lanes N] [--closes-at T] [--defences JSON]
                      [--visibility live|after-vote|after-close] [--open]
    tally poll open|close POLL          (admin)
    tally poll show POLL [--drafts]     (its definition and its defences)
    tally poll list [--drafts]          (open and closed polls; --drafts: drafts too, admin)

Admin commands take --token / TALLY_TOKEN with the admin role; without one, a dev admin token is
minted from the local data dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

from tally.client import TallyClient
from tally.domain.polls import Visibility

ClientFactory = Callable[[argparse.Namespace], TallyClient]


def add_poll_parser(
    subparsers: Any, common: argparse.ArgumentParser, admin_client: ClientFactory
) -> None:
    """Add `poll create|open|close|show|list` to subparsers (anything with argparse's
    `add_parser`); each action gets the shared options of `common`; `admin_client` builds the
    organiser's client."""
    poll = subparsers.add_parser("poll", help="create, open, close, show, list polls")
    actions = poll.add_subparsers(required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="create a poll (admin)")
    create.add_argument("title", help="the question, 1-200 characters")
    create.add_argument(
        "--option", action="append", required=True, help="an option label (repeat, 2-64)"
    )
    create.add_argument(
        "--lanes", type=int, help="vote logs the poll spreads over (default: from the store)"
    )
    create.add_argument("--closes-at", help="RFC 3339 deadline, e.g. 2026-12-31T20:00:00Z")
    create.add_argument(
        "--defences",
        metavar="JSON",
        help='rate limits, challenge and risk rules over the server\'s defaults, e.g. \'{"limits": {"address": {"per_s": 2, "burst": 30}}}\'',
    )
    create.add_argument(
        "--visibility",
        choices=[v.value for v in Visibility],
        help="who sees the counts before the close: everyone (live, the default), a voter once "
        "they have voted (after-vote), only admins (after-close)",
    )
    create.add_argument("--open", action="store_true", help="open it right away")
    create.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    create.set_defaults(run=lambda args: _create(args, admin_client(args)))
    for action in ("open", "close"):
        p = actions.add_parser(action, parents=[common], help=f"{action} a poll (admin)")
        p.add_argument("poll_id", help="the poll")
        p.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
        p.set_defaults(run=lambda args, action=action: _move(args, action, admin_client(args)))
    show = actions.add_parser("show", parents=[common], help="show a poll and its defences")
    show.add_argument("poll_id", help="the poll")
    show.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    show.add_argument("--drafts", action="store_true", help=_DRAFTS_HELP)
    show.set_defaults(run=lambda args: _show(args, _reader(args, admin_client)))
    listing = actions.add_parser("list", parents=[common], help="list polls")
    listing.add_argument("--json", action="store_true", help="print the result as JSON (data only)")
    listing.add_argument("--drafts", action="store_true", help=_DRAFTS_HELP)
    listing.set_defaults(run=lambda args: _list(args, _reader(args, admin_client)))


# A draft is shown to organisers only (GET /v1/polls?include=drafts, GET /v1/polls/{id}).
_DRAFTS_HELP = (
    "ask as an organiser, so drafts are shown too (the admin --token, or a dev admin token "
    "from the data dir)"
)


def _reader(args: argparse.Namespace, admin_client: ClientFactory) -> TallyClient:
    """Who reads: the organiser with --drafts, else whoever --token names (or nobody)."""
    if args.drafts:
        return admin_client(args)
    return TallyClient(args.url, args.token, ca_file=args.ca_file)


def _print(document: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(document, indent=2) if as_json else text)


def poll_text(poll: dict[str, Any]) -> str:
    options = ", ".join(f"{o['id']} ({o['label']})" for o in poll["options"])
    closes = f", closes {poll['closes_at']}" if poll.get("closes_at") else ""
    shown = poll.get("visibility", "live")
    counts = "" if shown == "live" else f", counts shown {shown}"
    return f"{poll['id']}  [{poll['state']}{closes}{counts}]  {poll['title']}\n  options: {options}"


def defences_text(defences: dict[str, Any]) -> str:
    limits = ", ".join(
        f"{scope} off" if rate is None else f"{scope} {rate['per_s']:g}/s burst {rate['burst']}"
        for scope, rate in defences["limits"].items()
    )
    pow_ = defences["pow"]
    risk = defences["risk"]
    rules = "; ".join(
        f"{r['reason']}: {r['signal']} {r['comparison']} {r['value']:g} +{r['score']}"
        for r in risk["rules"]
    )
    return (
        f"  rate limits: {limits}\n"
        f"  challenge: {pow_['difficulty']} bits (up to {pow_['max_difficulty']}), valid {pow_['ttl_s']} s\n"
        f"  risk: challenge harder (+{risk['harder_by']} bits) at {risk['challenge_at']}, "
        f"hold at {risk['hold_at']}; {rules or 'no rules'}"
    )


def _create(args: argparse.Namespace, client: TallyClient) -> int:
    body: dict[str, Any] = {"title": args.title, "options": args.option}
    if args.lanes is not None:
        body["lanes"] = args.lanes
    if args.closes_at:
        body["closes_at"] = args.closes_at
    if args.visibility:
        body["visibility"] = args.visibility
    if args.defences:
        try:
            body["defences"] = json.loads(args.defences)
        except ValueError as exc:
            print(f"tally: --defences is not JSON: {exc}", file=sys.stderr)
            return 2
    poll = client.post("/v1/polls", body)
    if args.open:
        poll = client.post(f"/v1/polls/{poll['id']}/open")
    _print(poll, args.json, poll_text(poll))
    return 0


def _move(args: argparse.Namespace, action: str, client: TallyClient) -> int:
    poll = client.post(f"/v1/polls/{args.poll_id}/{action}")
    _print(poll, args.json, poll_text(poll))
    return 0


def _show(args: argparse.Namespace, client: TallyClient) -> int:
    poll = client.get(f"/v1/polls/{args.poll_id}")
    _print(poll, args.json, poll_text(poll) + "\n" + defences_text(poll["defences"]))
    return 0


def _list(args: argparse.Namespace, client: TallyClient) -> int:
    polls = client.get("/v1/polls?include=drafts" if args.drafts else "/v1/polls")
    _print(polls, args.json, "\n".join(poll_text(p) for p in polls["polls"]) or "no polls")
    return 0


def resolve_option(poll: dict[str, Any], given: str) -> str | None:
    """The id of the option of `poll` that `given` names: its id, else its label or id in any case
    (casefolded, NFC: 'GROSS' and 'Groß' both name 'groß'). None, having said on stderr which
    options there are, when it names none."""
    if any(o["id"] == given for o in poll["options"]):
        return given
    wanted = _folded(given)
    for key in ("label", "id"):
        for option in poll["options"]:
            if _folded(option[key]) == wanted:
                return str(option["id"])
    listed = ", ".join(f"{o['id']} ({o['label']})" for o in poll["options"])
    print(
        f"tally: poll {poll['id']} has no option {given!r}; its options: {listed}", file=sys.stderr
    )
    return None


def _folded(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold().strip())
