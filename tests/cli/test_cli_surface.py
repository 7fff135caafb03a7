"""The CLI's surface: every command and argument explains itself, every command whose output is
data can give it as JSON, `config show` writes values as one sets them, and `tally token` mints
only from an issuer a server can trust."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_process import tally

from tally.cli import _parser
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import TokenVerifier

# Commands whose output is data (a document, a list, a token, a report): each takes --json.
DATA_COMMANDS = [
    "results",
    "vote",
    "token",
    "config show",
    "poll create",
    "poll open",
    "poll close",
    "poll show",
    "poll list",
    "audit verify",
    "audit receipt",
    "audit export",
    "admission-key list",
    "evidence keys",
    "evidence reencrypt",
    "review list",
    "review release",
    "review void",
    "store acl",
    "cluster up",
    "bench",
]


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every (sub)command: its words, its parser, and the help its parent lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, listed.get(name)
                yield from commands(sub, (*path, name))


ALL = list(commands(_parser()))


def test_every_command_and_argument_has_help() -> None:
    """No command, positional or option in `tally --help` and below without a line of help."""
    missing = []
    for path, parser, listed in ALL:
        if not listed:
            missing.append(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_walk_sees_the_whole_tree() -> None:
    """The walk above reaches nested commands, so an empty list of missing help means something."""
    names = {" ".join(path) for path, _, _ in ALL}
    assert {"serve", "poll create", "audit verify", "cluster up", "review void"} <= names
    assert len(names) > 30


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_every_data_command_takes_json(command: str) -> None:
    """--json on each command that prints data."""
    parser = next(p for path, p, _ in ALL if " ".join(path) == command)
    assert "--json" in {o for a in parser._actions for o in a.option_strings}


def test_config_show_writes_values_as_they_are_set(tmp_path: Path) -> None:
    """on/off rather than True/False, and --json gives the same view as one object."""
    shown = tally("config", "show", env={"TALLY_ARCHIVER": "false"}, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert (lines["TALLY_ARCHIVER"], lines["TALLY_ADMISSION_SIGNING"]) == ("off", "on")
    assert "True" not in shown.stdout
    assert "False" not in shown.stdout
    as_json = tally("config", "show", "--json", env={"TALLY_ARCHIVER": "false"}, cwd=tmp_path)
    assert json.loads(as_json.stdout) == lines


def test_token_outside_a_data_dir_says_where_it_looked(tmp_path: Path) -> None:
    """No ./data here: nothing is minted or made, and the error says where and how to point it."""
    failed = tally("token", "alice", cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert str((tmp_path / "data").resolve()) in failed.stderr
    for hint in ("--data-dir", "TALLY_DATA_DIR", "--create"):
        assert hint in failed.stderr
    assert not (tmp_path / "data").exists()
    elsewhere = tally("token", "alice", env={"TALLY_DATA_DIR": str(tmp_path / "nope")})
    assert elsewhere.returncode == 2
    assert str(tmp_path / "nope") in elsewhere.stderr


def test_token_create_makes_an_issuer_on_request(tmp_path: Path) -> None:
    """--create makes the issuer there, and the token verifies against it."""
    made = tally("token", "alice", "--create", "--json", cwd=tmp_path)
    assert (made.returncode, made.stderr) == (0, "")
    document = json.loads(made.stdout)
    issuer = DevIssuer.load_or_create(tmp_path / "data" / "keys")
    verifier = TokenVerifier(issuer.key_set(), issuer="tally-dev", audience="tally")
    assert verifier.verify(document["token"]).subject == "alice"
    assert (document["subject"], document["role"]) == ("alice", "voter")
    again = tally("token", "bob", cwd=tmp_path)  # the issuer exists now: no --create needed
    assert (again.returncode, again.stderr) == (0, "")
    assert verifier.verify(again.stdout.strip()).subject == "bob"


def test_token_in_an_existing_data_dir_uses_its_issuer(tmp_path: Path) -> None:
    """A data dir a server made (its keys there) is used as it is."""
    issuer = DevIssuer.load_or_create(tmp_path / "keys")
    minted = tally("token", "carol", "--role", "admin", "--data-dir", tmp_path)
    assert minted.returncode == 0, minted.stderr
    verifier = TokenVerifier(issuer.key_set(), issuer="tally-dev", audience="tally")
    principal = verifier.verify(minted.stdout.strip())
    assert (principal.subject, principal.is_admin) == ("carol", True)


def test_token_warns_when_the_server_trusts_another_issuer(tmp_path: Path) -> None:
    """With TALLY_JWKS set, a dev token would be refused: the token is printed, with a note."""
    minted = tally("token", "dave", "--data-dir", tmp_path, env={"TALLY_JWKS": "/etc/jwks.json"})
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.count(".") == 2
    assert "TALLY_JWKS is set" in minted.stderr
