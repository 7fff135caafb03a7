"""`tally audit export`: a copy of a poll's ledger that `verify` reads as it reads the original."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from audit.conftest import KEY, POLL, audit_cli, flip_byte, serve_ledger
from tally.audit.export import export
from tally.audit.source import DirectorySource


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def verify_json(source: str) -> tuple[int, dict[str, Any]]:
    result = audit_cli("verify", source, "--key", KEY, "--json")
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def test_export_over_http_round_trip(pristine: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    with serve_ledger(pristine) as url:
        base = url.removesuffix(f"/ledger/{POLL}")
        result = audit_cli("export", POLL, str(copy), "--url", base)
        remote = verify_json(url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"of poll {POLL} from {url} to {copy}" in result.stdout
    # Every file the archiver wrote, byte for byte; no temporary file left behind.
    assert files_under(copy) == files_under(pristine)
    assert verify_json(str(copy)) == remote == (0, remote[1])


def test_export_url_from_the_environment(pristine: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    with serve_ledger(pristine) as url:
        environment = {**os.environ, "TALLY_URL": url.removesuffix(f"/ledger/{POLL}")}
        result = subprocess.run(
            [sys.executable, "-m", "tally.audit", "export", POLL, str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert files_under(copy) == files_under(pristine)


def test_export_of_a_tampered_ledger_keeps_the_evidence(ledger: Path, tmp_path: Path) -> None:
    flip_byte(ledger / "3" / "tile" / "0" / "000", 40 * 32)
    copy = tmp_path / "copy"
    with serve_ledger(ledger) as url:
        remote = verify_json(url)
        assert audit_cli("export", POLL, str(copy), "--source", url).returncode == 0
    local = verify_json(str(copy))
    assert local == remote
    assert local[0] == 1
    assert [(f["code"], f["file"], f["index"]) for f in local[1]["findings"]] == [
        ("tile-mismatch", "3/tile/0/000", 40)
    ]


def test_export_from_a_directory_in_process(pristine: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    seen: list[tuple[int, int]] = []
    written: list[int] = []

    def progress(done: int, total: int, size: int) -> None:
        seen.append((done, total))
        written.append(size)

    result = export(DirectorySource(pristine), copy, progress=progress)
    assert result.missing == []
    assert result.logs == {"admin": 3, "0": 305, "1": 299, "2": 310, "3": 286}
    copied = files_under(copy)
    assert copied == files_under(pristine)
    assert (result.files, result.bytes) == (len(copied), sum(map(len, copied.values())))
    assert seen[-1][0] == seen[-1][1]
    assert written == sorted(written)
    assert written[-1] == result.bytes  # the true bytes written so far
    # Exporting again over the copy changes nothing.
    again = export(DirectorySource(pristine), copy)
    assert (again.files, again.missing) == (result.files, [])
    assert files_under(copy) == copied


def test_export_reports_files_missing_at_the_source(ledger: Path, tmp_path: Path) -> None:
    (ledger / "1" / "tile" / "entries" / "000.p" / "28").unlink()
    result = audit_cli("export", POLL, str(tmp_path / "copy"), "--source", str(ledger))
    assert result.returncode == 1
    assert "MISSING 1/tile/entries/000.p/28" in result.stderr
    verified = verify_json(str(tmp_path / "copy"))
    assert verified == verify_json(str(ledger))
    assert [(f["code"], f["file"]) for f in verified[1]["findings"]] == [
        ("missing-file", "1/tile/entries/000.p/28")
    ]


def test_export_from_an_unreachable_server_exits_2(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = audit_cli("export", POLL, str(tmp_path / "copy"), "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 2
    assert "cannot connect" in result.stderr
