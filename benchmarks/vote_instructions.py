"""Instructions per vote of the gateway's vote path: a figure that does not move with the load on
a shared machine, for before/after comparisons of changes to the vote path.

The gateway role is built as the composition root builds it (an embedded valkey-server, archiver
off), and POST /v1/polls/{id}/votes is called through ASGI directly, 64 votes in flight: the
token check, the intake, the cast, the answer and the metrics, without uvicorn's HTTP parsing.
It runs under `valgrind --tool=callgrind` twice, with SMALL and SMALL + VOTES votes (one token
per voter, EdDSA, minted beforehand), and reports the difference of the two instruction totals divided
by VOTES, so start-up and imports cancel out. valkey-server is a child process and not counted.

    .venv/bin/python benchmarks/vote_instructions.py                 # this checkout
    .venv/bin/python benchmarks/vote_instructions.py --src /tmp/before/src   # another tree

`--src` runs another source tree (e.g. `git worktree add /tmp/before <commit>`) with this
checkout's virtual environment; trees from before the seams refactor (issue 8) are built through
their `tally.wiring.start`. `--freeze` calls gc.freeze() after start-up, as `tally serve` and
`tally gateway` do since then. Needs valgrind (Debian's `valgrind`); ~3 min with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

CONCURRENCY = 64
WARM = 200
DEFENCES_OFF = {
    "limits": {"address": None, "subnet": None, "voter": None, "poll": None},
    "pow": {"difficulty": 0},
    "risk": {"rules": []},
}


async def build(data_dir: Path, unsigned: bool = False) -> tuple[Any, Any, Any, Any]:
    """(app, service, dev issuer, stop) of the gateway role, in either generation of wiring;
    `unsigned`: admission signing off (issue 11), to price it."""
    from tally.config import Settings

    settings = Settings(data_dir=data_dir, log_level="warning", archiver=False)
    if unsigned:
        if "admission_signing" not in {f.name for f in dataclasses.fields(Settings)}:
            raise SystemExit("--unsigned: this tree has no admission signing to turn off")
        settings = dataclasses.replace(settings, admission_signing=False)
    try:
        from tally.wiring.gateway import build_gateway
        from tally.wiring.store import open_store
    except ImportError:  # a tree from before the seams refactor
        from tally.wiring import start, stop  # type: ignore[attr-defined]

        runtime = await start(settings)
        return runtime.app, runtime.service, runtime.issuer, lambda: stop(runtime)
    store = await open_store(settings, "serve", may_embed=True)
    # Since issue 11 the gateway signs each vote with a registered admission key; `tally serve`
    # registers its own, as here.
    register = "register_admission_key" in inspect.signature(build_gateway).parameters
    gateway = await build_gateway(
        settings, store, **({"register_admission_key": True} if register else {})
    )
    return gateway.app, gateway.service, gateway.issuer, lambda: store.close(5)


async def cast_votes(app: Any, poll_id: str, tokens: list[str]) -> dict[int, int]:
    path = f"/v1/polls/{poll_id}/votes"
    body = b'{"option":"red"}'
    statuses: dict[int, int] = {}
    room = asyncio.Semaphore(CONCURRENCY)

    async def vote(token: str) -> None:
        scope = {
            "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "client": ("127.0.0.1", 5555),
            "headers": [
                (b"authorization", b"Bearer " + token.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"user-agent", b"vote-instructions"),
            ],
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        async with room:
            await app(scope, receive, send)

    await asyncio.gather(*(vote(token) for token in tokens))
    return statuses


async def inner(
    data_dir: Path, tokens: list[str] | None, votes: int, freeze: bool, unsigned: bool
) -> list[str]:
    """Cast one vote per token; with no tokens, only mint `votes` of them (and return them)."""
    from tally.domain.polls import OptionSpec
    from tally.service import NewPoll

    app, service, issuer, stop = await build(data_dir, unsigned)
    try:
        if tokens is None:
            return [issuer.mint(f"voter-{i}", ttl_s=86_400) for i in range(votes)]
        tokens = tokens[:votes]
        options = [OptionSpec("Red"), OptionSpec("Blue")]
        spec = NewPoll("instructions", options, lanes=16)
        if "defences" in {f.name for f in dataclasses.fields(NewPoll)}:
            # The vote path itself, comparable with trees from before the defences (issue 10):
            # every vote here comes from one address without a challenge. `tally bench
            # --defences` prices the defences.
            spec = dataclasses.replace(spec, defences=DEFENCES_OFF)
        poll = await service.create_poll(spec)
        await service.open_poll(poll.id)
        if freeze:
            gc.freeze()
        statuses = await cast_votes(app, poll.id, tokens)
        print(json.dumps({"statuses": statuses}))
        if statuses != {201: votes}:
            raise SystemExit(f"not every vote was accepted: {statuses}")
        return tokens
    finally:
        await stop()


def instructions(
    src: Path, keys: Path, tokens: Path, votes: int, freeze: bool, unsigned: bool
) -> int:
    """Callgrind's instruction total of one inner run over `votes` votes."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(keys, Path(tmp) / "keys")
        argv = [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--inner", "--data-dir", tmp, "--tokens", str(tokens),
            "--votes", str(votes), *(["--freeze"] if freeze else []),
            *(["--unsigned"] if unsigned else []),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(src))
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the run of {votes} votes failed:\n{done.stderr[-3000:]}")
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction total from callgrind:\n{done.stderr[-2000:]}")
    return int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).parent.parent / "src")
    parser.add_argument("--votes", type=int, default=1000, help="votes between the two runs")
    parser.add_argument("--small", type=int, default=WARM + 200, help="votes of the short run")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() after start-up")
    parser.add_argument(
        "--unsigned",
        action="store_true",
        help="admission signing off (TALLY_ADMISSION_SIGNING=off), to price it (issue 11)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        minting = not args.tokens.exists()
        tokens = None if minting else args.tokens.read_text().split("\n")
        run = inner(args.data_dir, tokens, args.votes, args.freeze, args.unsigned)
        cast = uvloop.run(run)  # as served
        if minting:
            args.tokens.write_text("\n".join(cast))
        return
    with tempfile.TemporaryDirectory() as tmp:
        mint_dir, tokens = Path(tmp) / "mint", Path(tmp) / "tokens.txt"
        mint_dir.mkdir()
        total = args.small + args.votes
        env = dict(os.environ, PYTHONPATH=str(args.src))
        mint = [sys.executable, __file__, "--inner", "--data-dir", str(mint_dir)]
        mint += ["--tokens", str(tokens), "--votes", str(total)]
        mint += ["--unsigned"] if args.unsigned else []
        subprocess.run(mint, env=env, check=True)
        keys = mint_dir / "keys"
        short = instructions(args.src, keys, tokens, args.small, args.freeze, args.unsigned)
        long = instructions(args.src, keys, tokens, total, args.freeze, args.unsigned)
    per_vote = (long - short) / args.votes
    result = {"src": str(args.src), "freeze": args.freeze, "votes": args.votes}
    result |= {"unsigned": args.unsigned}
    result |= {"instructions_short": short, "instructions_long": long}
    result |= {"instructions_per_vote": round(per_vote)}
    print(json.dumps(result) if args.json else f"{per_vote:,.0f} instructions per vote")


if __name__ == "__main__":
    main()
