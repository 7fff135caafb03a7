"""Schemathesis over /openapi.json against a real `tally serve` (bundled valkey-server): every
check it has, as an admin and as a voter. A request the document calls valid must be accepted, one
it calls invalid refused, and every answer must be documented (status, content type, schema); no
5xx. The three operations with rules no schema can state may answer 422 only for those rules
(tests/api/schemathesis_hooks.py).

The run is `st run` itself, as a developer runs it (the command is printed on failure), with the
configuration in tests/api/schemathesis.toml; bounded (examples per operation, a fixed seed) to
stay under two minutes on two cores.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from conftest import RunningTally, StartTally, serving
from tally.gateway.openapi import PROBLEM_CODES, SPACE, build
from tally.gateway.problems import TITLES

HERE = Path(__file__).resolve().parent
ST = Path(sys.executable).with_name("st")
SEED = os.environ.get("TALLY_SCHEMATHESIS_SEED", "1")


def st_run(url: str, token: str, *extra: str, cwd: Path, timeout_s: float) -> None:
    """`st run` with the config and hooks; fails the test with its report unless it passes.
    `cwd`: where it keeps its cache (.schemathesis), out of the work tree."""
    argv = [
        str(ST),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--seed",
        SEED,
        "--no-shrink",
        # One worker: CPython 3.11's parser is not thread-safe under Hypothesis's lambda
        # descriptions ("AST constructor recursion depth mismatch" with two).
        "--workers",
        "1",
        *extra,
    ]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        shown = shlex.join(
            a if not a.startswith("Authorization") else "Authorization: ..." for a in argv
        )
        pytest.fail(
            f"{shown}\nexited {done.returncode}:\n{done.stdout[-12000:]}{done.stderr[-4000:]}"
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTally]:
    """A server of its own: the run creates hundreds of polls."""
    with serving(tmp_path_factory.mktemp("schemathesis")) as running:
        yield running


@pytest.mark.timeout(180)
def test_the_api_keeps_every_promise_of_its_document_to_an_admin(
    server: RunningTally, tmp_path: Path
) -> None:
    """Every phase (coverage, fuzzing, and stateful: create, open, vote, close via links)."""
    st_run(server.url, server.admin_token(), "--max-examples", "8", cwd=tmp_path, timeout_s=160)


@pytest.mark.timeout(150)
def test_the_api_keeps_every_promise_of_its_document_to_a_voter(
    server: RunningTally, tmp_path: Path
) -> None:
    """A voter reaches the vote and challenge paths as a voter, and every admin path's 403
    (fuzzing only: the admin's coverage phase already walks every boundary of the schema)."""
    st_run(
        server.url,
        server.voter_token("schemathesis-voter"),
        "--max-examples",
        "5",
        "--phases",
        "fuzzing",
        cwd=tmp_path,
        timeout_s=130,
    )


def test_every_problem_code_is_documented_under_one_status() -> None:
    """The document's per-status `code` lists cover every code the server has, each once."""
    listed = [code for codes in PROBLEM_CODES.values() for code in codes]
    assert len(listed) == len(set(listed))
    assert set(TITLES) <= set(listed), sorted(set(TITLES) - set(listed))


def test_the_schemas_white_space_is_what_the_domain_trims() -> None:
    """Titles and labels are measured after str.strip(); the patterns name the same characters."""
    every = [chr(c) for c in range(0x110000)]
    assert [c for c in every if re.fullmatch(f"[{SPACE}]", c)] == [c for c in every if c.isspace()]


def test_a_vote_and_what_follows_it_answer_as_documented(start_tally: StartTally) -> None:
    """The paths a random run rarely reaches (a vote accepted, the same vote again, a receipt's
    proof, the held listing and a decision on it), each sent as one schemathesis case and checked
    with every check against the document. A server of its own: the archiver of the shared one
    is busy with the random runs' hundreds of polls, and the proof waits for a checkpoint."""
    server = start_tally()
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    poll = server.open_poll("Red", "Green", lanes=1, defences={"pow": {"difficulty": 0}})
    admin = {"Authorization": f"Bearer {server.admin_token()}"}
    voter = {"Authorization": f"Bearer {server.voter_token('one-documented-voter')}"}
    ids = {"poll_id": poll["id"]}

    def call(path: str, method: str, headers: dict[str, str], **parts: Any) -> int:
        case = schema[path][method].Case(path_parameters=ids, **parts)
        status: int = case.call_and_validate(headers=headers).status_code
        return status

    votes = "/v1/polls/{poll_id}/votes"
    assert call(votes, "POST", voter, body={"option": "red"}) == 201
    assert call(votes, "POST", voter, body={"option": "green"}) == 409
    assert call("/v1/polls/{poll_id}/results", "GET", {}) == 200
    assert call("/v1/polls/{poll_id}/live", "GET", {}) == 426  # a plain GET of the WebSocket
    assert call("/v1/polls/{poll_id}/held", "GET", admin) == 200
    decision = {"decision": "release", "entries": [{"lane": 0, "entry_id": 1}]}
    assert call("/v1/polls/{poll_id}/held/decisions", "POST", admin, body=decision) == 200
    proof = schema["/v1/polls/{poll_id}/receipts/{lane}/{entry_id}/proof"]["GET"].Case(
        path_parameters={**ids, "lane": 0, "entry_id": 1}
    )
    # 404 not-archived (documented, with Retry-After) until the archiver's next checkpoint.
    assert until_ok(lambda: proof.call_and_validate().status_code)
    log = {**ids, "log": "0"}
    checkpoint = schema["/ledger/{poll_id}/{log}/checkpoint"]["GET"].Case(path_parameters=log)
    assert checkpoint.call_and_validate().status_code == 200
    assert call("/ledger/{poll_id}/checkpoints", "GET", {}) == 200
    assert call("/v1/polls/{poll_id}/close", "POST", admin) == 200
    assert call("/v1/polls/{poll_id}/results.csv", "GET", {}) == 200
    assert until_ok(lambda: call("/ledger/{poll_id}/certificate", "GET", {}))


def until_ok(status: Callable[[], int], timeout_s: float = 60.0) -> bool:
    """Whether `status()` (each answer checked as it comes) reaches 200 within the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if status() == 200:
            return True
        time.sleep(0.5)
    return False


# Routes that serve pages, their files, or a form, not the API (gateway/pages.py, docs.py,
# signin.py's demo form): each answers HTML or a static file.
PAGES = {
    "/",
    "/admin",
    "/verify",
    "/present/{poll_id}",
    "/static/{name}",
    "/docs/{name}",
    "/auth/demo",
}
GATEWAY = Path(__file__).resolve().parents[2] / "src" / "tally" / "gateway"


def test_every_api_route_the_gateway_serves_is_in_the_document() -> None:
    """A route added to the gateway without its description fails here (schemathesis can only
    test what the document lists)."""
    served = {
        re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        for source in GATEWAY.rglob("*.py")
        for path in re.findall(r'Route\(\s*"(/[^"]*)"', source.read_text())
    }
    documented = set(build()["paths"])
    assert served - PAGES - documented == set()
    assert documented >= {"/v1/polls", "/v1/polls/{poll_id}/votes", "/ledger/keys"}


@pytest.mark.parametrize(
    "body",
    [
        {"title": "", "options": ["Red", "Green"]},
        {"title": "   ", "options": ["Red", "Green"]},
        {"title": "Colours", "options": []},
        {"title": "Colours", "options": ["Red"]},
        {"title": "Colours", "options": ["Red", ""]},
        {"title": "Colours", "options": ["Red", {"label": " "}]},
        {"title": "Colours", "options": ["Red", {"label": "Green", "id": "Green"}]},
        {"title": "Colours", "options": ["Red", "Green"], "lanes": 3},
        {"title": "Colours", "options": ["Red", "Green"], "closes_at": "2030-01-01T00:00:00"},
        {"title": "Colours", "options": ["Red", "Green"], "defences": {"pow": {"difficulty": 33}}},
    ],
    ids=repr,
)
def test_what_the_server_refuses_the_document_refuses_too(
    server: RunningTally, body: dict[str, Any]
) -> None:
    """The issue's cases (an empty title, option list or option passed the schema and got 422),
    and their kin: the document's CreatePollBody refuses each body the server answers 422."""
    document = build()
    schema = {**document, "$ref": "#/components/schemas/CreatePollBody"}
    assert not jsonschema_rs.validator_for(schema).is_valid(body)
    schemathesis_case = schemathesis.openapi.from_dict(document)["/v1/polls"]["POST"].Case(
        body=body
    )
    answer = schemathesis_case.call(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token()}"}
    )
    assert answer.status_code == 422


def test_the_config_lets_only_the_documented_operations_answer_422_to_valid_data() -> None:
    """schemathesis.toml's per-operation sections reach exactly the operations they name."""
    config = SchemathesisConfig.from_path(str(HERE / "schemathesis.toml"))
    schema = schemathesis.openapi.from_dict(build(), config=config)
    relaxed = set()
    for operation in schema.get_all_operations():
        op = operation.ok()  # type: ignore[union-attr]  # an Err raises here: the document is bad
        settings = config.projects.default.operations.get_for_operation(op)
        if "422" in settings.checks.positive_data_acceptance.expected_statuses:
            relaxed.add(f"{op.method.upper()} {op.path}")
    assert relaxed == {f"POST {path}" for path, _ in CROSS_FIELD_PATHS}


# The three with rules no schema can state: across a new poll's fields, the poll's options,
# the poll's lanes.
CROSS_FIELD_PATHS = [
    ("/v1/polls", "new poll"),
    ("/v1/polls/{poll_id}/votes", "the poll's options"),
    ("/v1/polls/{poll_id}/held/decisions", "the poll's lanes"),
]
