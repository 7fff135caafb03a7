"""`tally vote` names options as people do: by id or by label, in any case, in any script; the
ids keep their letters all the way through the store, the ledger and the auditor."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_process import tally

from conftest import RunningTally, serving

FAST_CHECKPOINTS = {"TALLY_CHECKPOINT_INTERVAL_MS": "200"}


@pytest.fixture(scope="module")
def voting(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server with checkpoints every 200 ms (module-wide: each test votes with new voters)."""
    with serving(tmp_path_factory.mktemp("cli-vote"), FAST_CHECKPOINTS) as server:
        yield server


def open_poll(server: RunningTally, *labels: str) -> dict[str, Any]:
    made = tally(
        "poll", "create", "Which city?", *[a for label in labels for a in ("--option", label)],
        "--open", "--json", "--url", server.url, "--data-dir", server.data_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    poll: dict[str, Any] = json.loads(made.stdout)
    return poll


def vote(server: RunningTally, poll_id: str, option: str, voter: str) -> Any:
    return tally(
        "vote", poll_id, option, "--json", "--url", server.url, "--token", server.voter_token(voter)
    )


def test_ids_keep_non_ascii_letters(voting: RunningTally) -> None:
    """'Groß' is 'groß' (not 'gro'), '東京' is '東京' (not option-2)."""
    poll = open_poll(voting, "Groß", "東京", "São Paulo")
    assert [o["id"] for o in poll["options"]] == ["groß", "東京", "são-paulo"]


@pytest.mark.parametrize(
    ("given", "chosen"),
    [
        ("groß", "groß"),  # the id
        ("Groß", "groß"),  # the label
        ("GROSS", "groß"),  # the label, case folded (ß folds to ss)
        ("東京", "東京"),
        ("SÃO PAULO", "são-paulo"),  # a label in upper case
        ("São-Paulo", "são-paulo"),  # the id in another case
    ],
)
def test_vote_takes_an_id_or_a_label_in_any_case(
    voting: RunningTally, given: str, chosen: str
) -> None:
    """Each spelling reaches the option's id, as the receipt says."""
    poll = open_poll(voting, "Groß", "東京", "São Paulo")
    done = vote(voting, poll["id"], given, f"voter-{given}-{time.monotonic_ns()}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["receipt"]["option"] == chosen


def test_an_unknown_option_lists_the_valid_ones(voting: RunningTally) -> None:
    """No vote is sent; the error lists each option's id and label."""
    poll = open_poll(voting, "Red", "Green")
    failed = vote(voting, poll["id"], "blue", "voter-blue")
    assert failed.returncode == 2
    assert "no option 'blue'" in failed.stderr
    assert "red (Red), green (Green)" in failed.stderr
    assert voting.results(poll["id"])["total"] == 0


def test_a_malformed_token_says_it_is_not_a_jwt(voting: RunningTally) -> None:
    """A pasted word or a 'Bearer ...' header is refused in words, not as 'segments'."""
    poll = open_poll(voting, "Red", "Green")
    for token, words in [
        ("hello", "not a JWT: 1 part, not 3"),
        ("Bearer a.b.c", "not a JWT: give the token without its 'Bearer ' prefix"),
        ("a.b", "not a JWT: 2 parts, not 3"),
    ]:
        failed = tally("vote", poll["id"], "red", "--url", voting.url, "--token", token)
        assert failed.returncode == 1
        assert "401 unauthorized" in failed.stderr
        assert words in failed.stderr, failed.stderr


def test_non_ascii_ids_pass_the_store_the_ledger_and_the_audit(
    voting: RunningTally, tmp_path: Path
) -> None:
    """Votes for 'groß' and '東京' are counted, published and verified by tally audit verify."""
    poll = open_poll(voting, "Groß", "東京")
    for i, option in enumerate(["Groß", "東京", "GROSS"]):
        assert vote(voting, poll["id"], option, f"audited-{i}").returncode == 0
    shown = tally("results", poll["id"], "--json", "--url", voting.url)
    assert shown.returncode == 0, shown.stderr
    results = voting.results(poll["id"], total=3)
    assert results["counts"] == {"groß": 2, "東京": 1}
    with urllib.request.urlopen(f"{voting.url}/ledger/keys") as response:  # noqa: S310  # test server
        key = response.read().decode().strip()
    ledger = f"{voting.url}/ledger/{poll['id']}"
    deadline = time.monotonic() + 30
    while True:
        audit = tally("audit", "verify", ledger, "--key", key, "--json")
        report = json.loads(audit.stdout) if audit.stdout else {}
        if audit.returncode == 0 and sum(report.get("counts", {}).values()) == 3:
            break
        assert time.monotonic() < deadline, audit.stdout + audit.stderr
        time.sleep(0.3)
    assert report["counts"] == {"groß": 2, "東京": 1}
