"""The role table (tally.store.acl) against what it describes: every function tally.lua
registers and every command it runs is in the table, every function a role names exists, and
docs/valkey-acl.md gives exactly the ACL file the table renders."""

from __future__ import annotations

import re
from pathlib import Path

from tally.store import acl
from tally.store.library import library_source

DOC = Path(__file__).parents[2] / "docs" / "valkey-acl.md"


def test_every_registered_function_is_in_the_table() -> None:
    registered = set(
        re.findall(r"register_function[({]\s*(?:function_name\s*=\s*)?'(\w+)'", library_source())
    )
    assert registered == set(acl.FUNCTIONS)


def test_every_command_the_functions_run_is_granted_by_some_function() -> None:
    """A command added to tally.lua without its grant would fail with 'ACL failure in script'
    for the roles that call it: caught here, before any role does."""
    ran = {c.upper() for c in re.findall(r"redis\.call\('(\w+)'", library_source())}
    granted = set(acl.LEASE_COMMANDS)
    for function in acl.FUNCTIONS.values():
        granted.update(function.keyless)
        for commands in [*function.uses.values(), *function.channels.values()]:
            granted.update(commands)
    assert ran - granted == set()


def test_every_role_names_known_functions_and_no_destructive_command() -> None:
    destructive = {"DEL", "UNLINK", "XDEL", "FLUSHALL", "FLUSHDB", "FUNCTION", "CONFIG", "ACL"}
    for role in acl.ROLES.values():
        assert set(role.functions) <= set(acl.FUNCTIONS), role.name
        if role.everything:
            continue
        rules = " ".join(acl.role_rules(role)).upper()
        assert "+@ALL" not in rules
        assert "~*" not in rules.replace("}:*", "").replace("{*}", ""), role.name
        raw = {c for commands in role.commands.values() for c in commands}
        assert raw & destructive == set(), role.name


def test_the_docs_give_the_generated_acl_file() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- acl-file -->\n```\n(.*?)```\n", text, re.S)
    assert block is not None, "docs/valkey-acl.md lost its generated ACL file block"
    assert block.group(1) == acl.acl_file(), "regenerate it: tally store acl"
    replication = acl.replication_line("#REPLICATION-PASSWORD-SHA256")
    assert f"```\n{replication}\n```\n" in text, (
        "and its replication line: tally store acl --replicas"
    )
