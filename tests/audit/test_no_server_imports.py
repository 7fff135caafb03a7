"""The auditor runs without the server: importing it, and its command line, loads no server
module, and its source imports only the ledger format modules, the stdlib and orjson."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tally.audit
from imports import absolute_imports, third_party

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
    for name in absolute_imports(path):
        allowed = not third_party(name) or name.partition(".")[0] == "orjson"
        assert allowed or name.startswith(("tally.ledger", "tally.audit")), (
            f"{path.name} imports {name}"
        )
