"""The demo poll `make run` opens, and the instructions it prints for voting on it."""

from __future__ import annotations

import shlex
from pathlib import Path

from tally.client import DEFAULT_URL
from tally.config import Settings
from tally.domain.polls import OptionSpec, Poll, PollState
from tally.security.dev_issuer import DevIssuer
from tally.service import NewPoll, VotingService

DEMO_TITLE = "Tally demo: which song should win the final?"
DEMO_OPTIONS = ["Aurora", "Borealis", "Cascade", "Dynamo"]


async def ensure_demo_poll(service: VotingService) -> Poll:
    """The open demo poll, created and opened on first run, reused on every later run."""
    for poll in await service.list_polls(1000):
        if poll.title == DEMO_TITLE and poll.state is PollState.OPEN:
            return poll
    poll = await service.create_poll(
        NewPoll(title=DEMO_TITLE, options=[OptionSpec(label=o) for o in DEMO_OPTIONS])
    )
    return await service.open_poll(poll.id)


def instructions(poll: Poll, settings: Settings, issuer: DevIssuer | None) -> str:
    scheme = "https" if settings.tls_cert is not None else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    option = poll.options[0].id
    # The commands work as printed on any port and data dir: each names the server and the
    # data dir whose dev issuer it trusts whenever they are not the CLI's defaults.
    url = "" if base == DEFAULT_URL else f" --url {shlex.quote(base)}"
    data = (
        ""
        if settings.data_dir == Path("data")
        else f" --data-dir {shlex.quote(str(settings.data_dir.resolve()))}"
    )
    tally = ".venv/bin/tally"
    lines = [
        "",
        f"Tally is running at {base}  (Ctrl-C to stop; data in {settings.data_dir.resolve()})",
        f"Demo poll {poll.id!r} is open: {poll.title}",
        "  options: " + ", ".join(f"{o.id} ({o.label})" for o in poll.options),
        "",
        f"Open {base}/?poll={poll.id} in a browser to watch it live and vote.",
        "",
        "Vote with the CLI (a new voter per token):",
        f'  {tally} vote {poll.id} {option}{url} --token "$({tally} token alice{data})"',
    ]
    if issuer is not None:
        token = issuer.mint("demo-voter-1", ttl_s=24 * 3600)
        body = shlex.quote(f'{{"option": "{option}"}}')
        difficulty = poll.defences.pow.difficulty
        lines += [
            f"or with curl, which cannot solve the {difficulty}-bit proof-of-work challenge a vote"
            " needs: it gets 428 challenge-required with the challenge inside (the page and"
            " `tally vote` solve it)"
            if difficulty
            else "or with curl:",
            f"  curl -s -X POST {base}/v1/polls/{poll.id}/votes -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {body}",
        ]
    lines += [
        "Results:",
        f"  {tally} results {poll.id}{url}     or     curl -s {base}/v1/polls/{poll.id}/results",
        "Audit the published ledger (checkpoints every few seconds) and a saved receipt:",
        f'  {tally} audit verify {base}/ledger/{poll.id} --key "$(curl -s {base}/ledger/keys)"',
        f'  {tally} vote {poll.id} {option}{url} --token "$({tally} token carol{data})" --json > receipt.json',
        f'  {tally} audit receipt receipt.json {base}/ledger/{poll.id} --key "$(curl -s {base}/ledger/keys)"',
        f"API description: {base}/openapi.json",
        "",
    ]
    return "\n".join(lines)


async def announce_demo(
    service: VotingService, settings: Settings, issuer: DevIssuer | None
) -> Poll:
    poll = await ensure_demo_poll(service)
    print(instructions(poll, settings, issuer), flush=True)
    return poll
