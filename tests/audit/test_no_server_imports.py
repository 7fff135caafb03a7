"""The auditor runs without the server: importing it, and its command line, loads no server
module, and its source imports only the ledger format modules, the stdlib and orjson."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tally.audit

SERVER_PACKAGES = (
    "tally.store",
    "tally.gateway",
    "tally.archive",
    "tally.service",
    "tally.wiring",
    "tally.aggregator",
    "tally.security",
    "tally.domain",
)
AUDIT_DIR = Path(tally.audit.__file__).parent


def test_importing_the_auditor_loads_no_server_module() -> None:
    probe = (
        "import json, sys\n"
        "import tally.audit, tally.audit.cli, tally.audit.verify, tally.audit.receipt\n"
        "import tally.audit.export, tally.audit.source, tally.audit.report\n"
        "tally.audit.cli.build_parser(__import__('argparse').ArgumentParser())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout)
    assert "tally.audit.cli" in loaded
    assert "tally.ledger.leaf" in loaded
    server = [name for name in loaded if name.startswith(SERVER_PACKAGES)]
    assert server == []


@pytest.mark.parametrize("path", sorted(AUDIT_DIR.glob("*.py")), ids=lambda p: p.name)
def test_auditor_source_imports_only_the_ledger_stdlib_and_orjson(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            allowed = top in sys.stdlib_module_names or top in {"__future__", "orjson"}
            assert allowed or name.startswith(("tally.ledger", "tally.audit")), (
                f"{path.name} imports {name}"
            )
