"""CSV exports (issue 12): results.csv is exact against the votes cast and follows result
visibility like GET /results; turnout.csv lists the ballots of each UTC minute as the archiver
counts them from the ledger, for admins at any time and everyone once the poll is closed."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from datetime import datetime
from typing import Any

from api_http import Answer, assert_problem, send, send_json
from test_cli import ok, tally_cli

from conftest import RunningTally, StartTally
from tally.domain.turnout import MINUTE_MS, minute_of, turnout_rows

LABELS = ["Red", 'Big, "bold" blue', "=1+1"]


def create(tally: RunningTally, visibility: str = "live") -> str:
    body = {"title": "export", "options": LABELS, "lanes": 2, "visibility": visibility}
    answer = send_json(tally, "POST", "/v1/polls", body, token=tally.admin_token())
    assert answer.status == 201, answer.body
    poll_id: str = answer.json()["id"]
    assert send(tally, "POST", f"/v1/polls/{poll_id}/open", token=tally.admin_token()).status == 200
    return poll_id


def vote(tally: RunningTally, poll_id: str, option: str, subject: str) -> dict[str, Any]:
    token = tally.voter_token(subject)
    answer = send_json(tally, "POST", f"/v1/polls/{poll_id}/votes", {"option": option}, token=token)
    assert answer.status == 201, answer.body
    receipt: dict[str, Any] = answer.json()["receipt"]
    return receipt


def settled(tally: RunningTally, poll_id: str, total: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = send(tally, "GET", f"/v1/polls/{poll_id}/results", token=tally.admin_token())
        if answer.json()["total"] == total:
            return
        time.sleep(0.05)
    raise AssertionError(f"results of {poll_id} never reached {total}")


def rows(answer: Answer) -> list[list[str]]:
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    assert "authorization" in answer.headers["vary"].lower()
    text = answer.body.decode("utf-8")
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")  # RFC 4180: CRLF only
    return list(csv.reader(io.StringIO(text, newline="")))


def test_results_csv_is_exact_against_the_votes_cast(tally: RunningTally) -> None:
    poll_id = create(tally)
    ids = send(tally, "GET", f"/v1/polls/{poll_id}").json()["options"]
    red, blue, formula = (o["id"] for o in ids)
    cast = [red, blue, blue, formula, blue]
    for i, option in enumerate(cast):
        vote(tally, poll_id, option, f"csv-{i}")
    settled(tally, poll_id, len(cast))
    answer = send(tally, "GET", f"/v1/polls/{poll_id}/results.csv")
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="tally-results-{poll_id}.csv"'
    )
    assert rows(answer) == [
        ["option_id", "label", "votes", "share"],
        [red, "Red", "1", "0.2000"],
        [blue, 'Big, "bold" blue', "3", "0.6000"],
        [formula, "'=1+1", "1", "0.2000"],  # never run as a formula by a spreadsheet
        ["", "Total", "5", "1.0000"],
    ]
    # The quoting itself, byte for byte (a field with a comma or a quote is quoted, "" escapes).
    assert b'"Big, ""bold"" blue"' in answer.body


def test_an_empty_poll_exports_zero_shares(tally: RunningTally) -> None:
    poll_id = create(tally)
    table = rows(send(tally, "GET", f"/v1/polls/{poll_id}/results.csv"))
    assert [r[2:] for r in table[1:]] == [["0", "0.0000"]] * 4


def test_results_csv_follows_result_visibility(tally: RunningTally) -> None:
    poll_id = create(tally, "after-vote")
    red = send(tally, "GET", f"/v1/polls/{poll_id}").json()["options"][0]["id"]
    vote(tally, poll_id, red, "csv-voted")
    settled(tally, poll_id, 1)
    path = f"/v1/polls/{poll_id}/results.csv"
    hidden = send(tally, "GET", path)
    assert_problem(hidden, 403, "results-hidden")
    assert hidden.json()["hidden"] == "until-vote"
    not_voted = send(tally, "GET", path, token=tally.voter_token("csv-not-voted"))
    assert_problem(not_voted, 403, "results-hidden")
    assert rows(send(tally, "GET", path, token=tally.voter_token("csv-voted")))[1][2] == "1"
    admin = send(tally, "GET", path, token=tally.admin_token())
    assert admin.headers["cache-control"].startswith("private")
    assert rows(admin)[1][2] == "1"
    closed = create(tally, "after-close")
    assert send(tally, "GET", f"/v1/polls/{closed}/results.csv").json()["hidden"] == "until-close"
    assert send(tally, "POST", f"/v1/polls/{closed}/close", token=tally.admin_token()).status == 200
    assert rows(send(tally, "GET", f"/v1/polls/{closed}/results.csv"))[-1] == [
        "", "Total", "0", "0.0000"
    ]  # fmt: skip


def accepted_ms(receipt: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(receipt["accepted_at"]).timestamp() * 1000)


def test_turnout_csv_counts_each_minutes_ballots_from_the_ledger(start_tally: StartTally) -> None:
    tally = start_tally(env={"TALLY_CHECKPOINT_INTERVAL_MS": "200"})
    poll_id = create(tally)
    red = send(tally, "GET", f"/v1/polls/{poll_id}").json()["options"][0]["id"]
    receipts = [vote(tally, poll_id, red, f"turnout-{i}") for i in range(7)]
    path = f"/v1/polls/{poll_id}/turnout.csv"
    assert_problem(send(tally, "GET", path), 403, "results-hidden")  # open: organisers only
    expected = Counter(minute_of(accepted_ms(r)) for r in receipts)
    deadline = time.monotonic() + 15
    while True:  # the archiver counts them from the ledger within a few checkpoint intervals
        table = rows(send(tally, "GET", path, token=tally.admin_token()))
        if (table[1:] and table[-1][2] == str(len(receipts))) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert table[0] == ["minute", "votes", "cumulative"]
    got = {_minute_ms(r[0]): int(r[1]) for r in table[1:]}
    assert {m: n for m, n in got.items() if n} == dict(expected)
    assert [int(r[2]) for r in table[1:]] == [row.cumulative for row in turnout_rows(expected)]
    assert all(b - a == MINUTE_MS for a, b in zip(list(got), list(got)[1:], strict=False))
    assert (
        send(tally, "POST", f"/v1/polls/{poll_id}/close", token=tally.admin_token()).status == 200
    )
    public = rows(send(tally, "GET", path))  # closed: everyone
    assert public[-1][2] == "7"


def _minute_ms(text: str) -> int:
    assert text.endswith(":00Z"), text
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_the_cli_prints_hidden_results_and_the_csv_exports(tally: RunningTally) -> None:
    """`tally poll create --visibility` sets the mode; `tally results` says the counts are hidden (and why) instead of failing on null counts;
    `--csv results|turnout` prints the exports as the server gives them."""
    admin = tally.admin_token()
    created = ok(
        tally_cli(
            "poll", "create", "cli", "--option", "Red", "--option", "Green",
            "--visibility", "after-close", "--open", "--url", tally.url, "--token", admin,
        )
    )  # fmt: skip
    assert "counts shown after-close" in created
    poll_id = created.split()[0]
    red = send(tally, "GET", f"/v1/polls/{poll_id}").json()["options"][0]["id"]
    vote(tally, poll_id, red, "cli-voter")
    settled(tally, poll_id, 1)
    hidden = ok(tally_cli("results", poll_id, "--url", tally.url))
    assert "total 1" in hidden
    assert "counts hidden until the poll closes" in hidden
    as_json = json.loads(ok(tally_cli("results", poll_id, "--json", "--url", tally.url)))
    assert (as_json["counts"], as_json["hidden"]) == (None, "until-close")
    refused = tally_cli("results", poll_id, "--csv", "results", "--url", tally.url)
    assert refused.returncode != 0
    assert "results-hidden" in refused.stderr or "once the poll closes" in refused.stderr
    table = ok(
        tally_cli("results", poll_id, "--csv", "results", "--url", tally.url, "--token", admin)
    )
    assert table.splitlines()[0] == "option_id,label,votes,share"
    assert table.splitlines()[1].startswith(f"{red},Red,1,")
    turnout = ok(
        tally_cli("results", poll_id, "--csv", "turnout", "--url", tally.url, "--token", admin)
    )
    assert turnout.splitlines()[0] == "minute,votes,cumulative"
