"""The demo poll `make run` opens, and the instructions it prints for voting on it and for
presenting it (the presenter screen and the join code the audience types or scans).

Over HTTPS the printed client commands trust the server's certificate as printed: they carry
`--ca-file` (curl `--cacert`) when the certificate needs one (ca_file_for), so a newcomer's
shell without TALLY_CA_FILE still runs them."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from tally.client import DEFAULT_URL
from tally.config import Settings
from tally.domain.polls import OptionSpec, Poll, PollState
from tally.security.certificates import holds_self_signed
from tally.security.dev_issuer import DevIssuer
from tally.service import NewPoll, VotingService
from tally.service.join_codes import JoinCodes

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


def ca_file_for(settings: Settings, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The CA file a client needs to trust this server, or None (plain HTTP, or a certificate
    the system's trust store verifies): TALLY_CA_FILE where the server's shell sets it (the
    operator's private CA, which the client commands read too), else the served certificate
    file itself where it holds a self-signed certificate (its own trust anchor)."""
    if settings.tls_cert is None:
        return None
    named = environ.get("TALLY_CA_FILE")
    if named:
        return Path(named).resolve()
    if holds_self_signed(settings.tls_cert):
        return settings.tls_cert.resolve()
    return None


def instructions(
    poll: Poll,
    settings: Settings,
    issuer: DevIssuer | None,
    join_code: str | None = None,
    ca_file: Path | None = None,
) -> str:
    """`join_code`: the poll's (None: no join line); `ca_file`: what clients must trust
    (ca_file_for), given to each client command."""
    scheme = "https" if settings.tls_cert is not None else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    option = poll.options[0].id
    # The commands work as printed on any port and data dir: each names the server and the
    # data dir whose dev issuer it trusts whenever they are not the CLI's defaults.
    url = "" if base == DEFAULT_URL else f" --url {shlex.quote(base)}"
    trust = "" if ca_file is None else f" --ca-file {shlex.quote(str(ca_file))}"
    curl = "curl -s" if ca_file is None else f"curl -s --cacert {shlex.quote(str(ca_file))}"
    keys = f'--key "$({curl} {base}/ledger/keys)"{trust}'
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
        f"Present it on a big screen: {base}/present/{poll.id}  (live bars, QR code, winner)",
    ]
    if join_code is not None:
        lines.append(f"The audience joins with the code {join_code}: {base}/j/{join_code}")
    lines.append(f"Create, open and close polls in the organiser console: {base}/admin")
    if ca_file is not None:
        lines.append(f"Clients trust this server's certificate through {ca_file}")
    lines += [
        "",
        "Vote with the CLI (a new voter per token):",
        f'  {tally} vote {poll.id} {option}{url}{trust} --token "$({tally} token alice{data})"',
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
            f"  {curl} -X POST {base}/v1/polls/{poll.id}/votes -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d {body}",
        ]
    lines += [
        "Results:",
        f"  {tally} results {poll.id}{url}{trust}     or     {curl} {base}/v1/polls/{poll.id}/results",
        "Audit the published ledger (checkpoints every few seconds) and a saved receipt:",
        f"  {tally} audit verify {base}/ledger/{poll.id} {keys}",
        f'  {tally} vote {poll.id} {option}{url}{trust} --token "$({tally} token carol{data})" --json > receipt.json',
        f"  {tally} audit receipt receipt.json {base}/ledger/{poll.id} {keys}",
        f"API description: {base}/openapi.json",
        "",
    ]
    return "\n".join(lines)


async def announce_demo(
    service: VotingService,
    settings: Settings,
    issuer: DevIssuer | None,
    join_codes: JoinCodes | None = None,
) -> Poll:
    """Open the demo poll and print the instructions; `join_codes`: where its join code is
    read (None: no join line)."""
    poll = await ensure_demo_poll(service)
    code = None if join_codes is None else await join_codes.code_for(poll.id)
    print(instructions(poll, settings, issuer, code, ca_file_for(settings)), flush=True)
    return poll
