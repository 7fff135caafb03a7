"""The `tally` command line against a real server: each command as a user types it, in its own
process, with admin commands minting their admin token from the server's data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from api_http import get_json

from conftest import RunningTally
from tally.security.tokens import TokenVerifier

SECRET_HEX = "5e" * 32
VALKEY_URL_WITH_PASSWORD = "redis://:pw@127.0.0.1:1"


def tally_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m tally ARGS` with no TALLY_* variables but `env`; never raises on exit codes."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tally", *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def ok(completed: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must have succeeded."""
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def at(tally: RunningTally) -> list[str | Path]:
    """The options that point a command at the test server and its data dir."""
    return ["--url", tally.url, "--data-dir", tally.data_dir]


def create(tally: RunningTally, *flags: str) -> dict[str, Any]:
    """`poll create "Best colour" --option Red --option Green FLAGS --json`: the poll printed."""
    argv = ["poll", "create", "Best colour", "--option", "Red", "--option", "Green", *flags]
    poll: dict[str, Any] = json.loads(ok(tally_cli(*argv, "--json", *at(tally))))
    return poll


def dev_verifier(tally: RunningTally) -> TokenVerifier:
    """A verifier for the server's dev issuer, as the server itself builds it."""
    return TokenVerifier(tally.issuer.key_set(), issuer="tally-dev", audience="tally")


def test_poll_create_open_prints_the_open_poll_as_json(tally: RunningTally) -> None:
    """`poll create T --option A --option B --open --json` creates and opens the poll."""
    poll = create(tally, "--open")
    assert poll["state"] == "open"
    assert poll["title"] == "Best colour"
    assert poll["options"] == [{"id": "red", "label": "Red"}, {"id": "green", "label": "Green"}]
    assert get_json(tally, f"/v1/polls/{poll['id']}") == poll


def test_poll_create_passes_lanes_and_deadline(tally: RunningTally) -> None:
    """--lanes and --closes-at reach the poll definition."""
    poll = create(tally, "--lanes", "8", "--closes-at", "2099-12-31T20:00:00Z")
    assert (poll["state"], poll["lanes"]) == ("draft", 8)
    assert poll["closes_at"] == "2099-12-31T20:00:00.000Z"


def test_poll_show_prints_the_poll(tally: RunningTally) -> None:
    """`poll show ID` prints id, state, title and options; with --json, the API's document."""
    poll = create(tally, "--open")
    text = ok(tally_cli("poll", "show", poll["id"], "--url", tally.url))
    assert f"{poll['id']}  [open]  Best colour" in text
    assert "red (Red), green (Green)" in text
    shown = ok(tally_cli("poll", "show", poll["id"], "--json", "--url", tally.url))
    assert json.loads(shown) == poll


def test_poll_create_sets_and_poll_show_prints_the_defences(tally: RunningTally) -> None:
    """--defences reaches the poll (over the server's defaults, field by field) and `poll show`
    prints its rate limits, challenge and risk rules; a bad one exits 1 naming the field."""
    defences = {
        "limits": {"address": {"per_s": 2, "burst": 30}, "poll": None},
        "pow": {"difficulty": 14},
        "risk": {
            "rules": [
                {"signal": "token_age_s", "comparison": "below", "value": 5, "score": 50,
                 "reason": "fresh-token"},
            ],
        },
    }  # fmt: skip
    poll = create(tally, "--defences", json.dumps(defences))
    assert poll["defences"]["limits"]["address"] == {"per_s": 2.0, "burst": 30}
    assert poll["defences"]["limits"]["poll"] is None
    assert poll["defences"]["pow"]["difficulty"] == 14
    text = ok(tally_cli("poll", "show", poll["id"], "--drafts", *at(tally)))
    assert "rate limits: address 2/s burst 30, " in text
    assert "poll off" in text
    assert "challenge: 14 bits" in text
    assert "fresh-token: token_age_s below 5 +50" in text
    bad = tally_cli(
        "poll", "create", "Bad", "--option", "A", "--option", "B",
        "--defences", '{"limits": {"adress": null}}', *at(tally),
    )  # fmt: skip
    assert bad.returncode == 1
    assert "defences.limits.adress" in bad.stderr


def test_poll_list_includes_a_new_poll(tally: RunningTally) -> None:
    """`poll list --json` lists the polls, the newest among them."""
    poll = create(tally, "--open")
    listed = json.loads(ok(tally_cli("poll", "list", "--json", "--url", tally.url)))
    assert poll in listed["polls"]
    assert poll["id"] in ok(tally_cli("poll", "list", "--url", tally.url))


def test_a_draft_is_listed_and_shown_with_drafts_only(tally: RunningTally) -> None:
    """A draft is the organiser's: `poll list` and `poll show` leave it out (404) unless
    --drafts asks as the organiser (here the data dir's dev admin token)."""
    draft = create(tally)
    assert draft["id"] not in ok(tally_cli("poll", "list", "--url", tally.url))
    listed = json.loads(ok(tally_cli("poll", "list", "--drafts", "--json", *at(tally))))
    assert draft in listed["polls"]
    hidden = tally_cli("poll", "show", draft["id"], "--url", tally.url)
    assert hidden.returncode == 1
    assert "poll-not-found" in hidden.stderr
    shown = json.loads(ok(tally_cli("poll", "show", draft["id"], "--drafts", "--json", *at(tally))))
    assert shown == draft


def test_poll_open_and_close_move_the_poll(tally: RunningTally) -> None:
    """`poll open` and `poll close` move a draft to open and then to closed."""
    poll_id = create(tally)["id"]
    opened = json.loads(ok(tally_cli("poll", "open", poll_id, "--json", *at(tally))))
    assert opened["state"] == "open"
    closed = json.loads(ok(tally_cli("poll", "close", poll_id, "--json", *at(tally))))
    assert closed["state"] == "closed"
    assert get_json(tally, f"/v1/polls/{poll_id}")["state"] == "closed"


def test_an_illegal_move_exits_1_naming_the_problem(tally: RunningTally) -> None:
    """Closing a closed poll fails with exit code 1 and the problem's status and code."""
    poll_id = create(tally)["id"]
    ok(tally_cli("poll", "close", poll_id, *at(tally)))
    again = tally_cli("poll", "close", poll_id, *at(tally))
    assert again.returncode == 1
    assert "409 invalid-transition" in again.stderr


def test_showing_an_unknown_poll_exits_1(tally: RunningTally) -> None:
    """`poll show` of a poll that does not exist fails with 404 poll-not-found."""
    missing = tally_cli("poll", "show", "nosuchpoll", "--url", tally.url)
    assert missing.returncode == 1
    assert "404 poll-not-found" in missing.stderr


def test_vote_prints_the_receipt(tally: RunningTally) -> None:
    """`vote POLL OPTION --token T` casts the vote and prints where it sits in the ledger."""
    poll_id = create(tally, "--open")["id"]
    token = tally.voter_token("cli-voter")
    text = ok(tally_cli("vote", poll_id, "green", "--token", token, "--url", tally.url))
    assert text.startswith("accepted: green in lane ")
    assert tally.results(poll_id, total=1)["counts"] == {"red": 0, "green": 1}


def test_a_repeated_vote_exits_1_and_prints_the_original_receipt(tally: RunningTally) -> None:
    """The second vote fails with exit code 1, says already-voted, and prints the first receipt."""
    poll_id = create(tally, "--open")["id"]
    token = tally.voter_token("cli-repeat")
    first = json.loads(
        ok(tally_cli("vote", poll_id, "red", "--token", token, "--json", "--url", tally.url))
    )
    again = tally_cli("vote", poll_id, "green", "--token", token, "--url", tally.url)
    assert again.returncode == 1
    assert "409 already-voted" in again.stderr
    assert json.loads(again.stdout) == first["receipt"]


def test_vote_without_a_token_exits_2(tally: RunningTally) -> None:
    """`vote` refuses to run without --token and says how to get one."""
    refused = tally_cli("vote", "somepoll", "red", "--url", tally.url)
    assert refused.returncode == 2
    assert "--token" in refused.stderr


def test_results_json_is_the_api_document(tally: RunningTally) -> None:
    """`results POLL --json` prints the counts exactly as GET .../results has them."""
    poll_id = create(tally, "--open")["id"]
    ok(tally_cli("vote", poll_id, "red", "--token", tally.voter_token("r1"), "--url", tally.url))
    tally.results(poll_id, total=1)
    printed = json.loads(ok(tally_cli("results", poll_id, "--json", "--url", tally.url)))
    assert printed == get_json(tally, f"/v1/polls/{poll_id}/results")
    assert (printed["counts"], printed["total"]) == ({"red": 1, "green": 0}, 1)


def test_an_unreachable_server_exits_1() -> None:
    """A command that cannot reach the server says so and exits with 1."""
    failed = tally_cli("results", "somepoll", "--url", "http://127.0.0.1:1")
    assert failed.returncode == 1
    assert "cannot reach Tally" in failed.stderr


def test_admin_commands_without_keys_or_token_exit_2(tally: RunningTally, tmp_path: Path) -> None:
    """With neither --token nor dev keys in the data dir, an admin command explains and exits 2."""
    refused = tally_cli("poll", "open", "somepoll", "--url", tally.url, "--data-dir", tmp_path)
    assert refused.returncode == 2
    assert "no --token" in refused.stderr


def test_token_with_role_admin_is_accepted_on_admin_routes(tally: RunningTally) -> None:
    """`token SUBJECT --role admin` prints a token the server accepts for creating polls."""
    token = ok(tally_cli("token", "ops", "--role", "admin", "--data-dir", tally.data_dir)).strip()
    assert dev_verifier(tally).verify(token).is_admin
    argv = ["poll", "create", "By token", "--option", "A", "--option", "B", "--json"]
    poll = json.loads(ok(tally_cli(*argv, "--token", token, "--url", tally.url)))
    assert poll["state"] == "draft"


def test_token_count_prints_distinct_valid_tokens(tally: RunningTally) -> None:
    """`token --count 20000 --prefix p` prints 20,000 tokens for p0..p19999, each distinct and
    valid for the server's dev issuer. (How fast is a benchmark's business, not a test's: a
    wall-clock bound fails on a loaded machine without anything being wrong.)"""
    out = ok(tally_cli("token", "--count", "20000", "--prefix", "p", "--data-dir", tally.data_dir))
    tokens = out.splitlines()
    assert len(tokens) == len(set(tokens)) == 20_000
    verifier = dev_verifier(tally)
    subjects = [verifier.verify(token).subject for token in tokens]
    assert subjects == [f"p{i}" for i in range(20_000)]


def settings_shown(completed: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The NAME=value lines `config show` printed, as a dict."""
    return dict(line.split("=", 1) for line in ok(completed).splitlines())


def test_config_show_masks_secrets() -> None:
    """`config show` prints the pseudonym secret and the Valkey password only as asterisks."""
    env = {"TALLY_PSEUDONYM_SECRET": SECRET_HEX, "TALLY_VALKEY_URL": VALKEY_URL_WITH_PASSWORD}
    completed = tally_cli("config", "show", env=env)
    shown = settings_shown(completed)
    assert shown["TALLY_PSEUDONYM_SECRET"] == "********"
    assert shown["TALLY_VALKEY_URL"] == "redis://:********@127.0.0.1:1"
    for secret in (SECRET_HEX, ":pw@"):
        assert secret not in completed.stdout + completed.stderr


def test_config_show_prints_the_defaults() -> None:
    """Without TALLY_* variables, `config show` prints the documented defaults."""
    shown = settings_shown(tally_cli("config", "show"))
    assert shown["TALLY_PORT"] == "8000"
    assert shown["TALLY_MAX_BODY_BYTES"] == "16384"
    assert shown["TALLY_VALKEY_URL"] == "(embedded)"


@pytest.mark.parametrize("command", [["config", "show"], ["serve"]])
def test_an_invalid_setting_exits_2_naming_the_variable(command: list[str]) -> None:
    """TALLY_PORT=abc stops the command before it does anything, naming TALLY_PORT."""
    failed = tally_cli(*command, env={"TALLY_PORT": "abc"})
    assert failed.returncode == 2
    assert "TALLY_PORT" in failed.stderr
    assert failed.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param("TALLY_PSEUDONYM_SECRET", SECRET_HEX[:62], SECRET_HEX[:62], id="short secret"),
        pytest.param("TALLY_PSEUDONYM_SECRET", "zz" + SECRET_HEX, SECRET_HEX, id="non-hex secret"),
        pytest.param(
            "TALLY_VALKEY_URL", "redis://:pw@127.0.0.1:port", ":pw@", id="url with a bad port"
        ),
    ],
)
def test_an_invalid_secret_is_named_but_not_echoed(variable: str, value: str, secret: str) -> None:
    """A configuration error about a secret names the variable without printing its value."""
    failed = tally_cli("config", "show", env={variable: value})
    assert failed.returncode == 2
    assert variable in failed.stderr
    assert secret not in failed.stdout + failed.stderr
