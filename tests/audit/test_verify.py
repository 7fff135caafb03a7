"""`tally audit verify` on untampered ledgers: from a directory and over HTTP, its report, its
exit statuses, and the poll states that are fine (open, no certificate yet)."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

from audit.conftest import (
    KEY,
    POLL,
    PREFIX,
    LedgerSpec,
    audit_cli,
    serve_ledger,
    write_ledger,
)
from tally.audit.source import DirectorySource, History, HttpSource
from tally.audit.verify import FINDING_CODES, verify
from tally.ledger import note
from tally.ledger.leaf import decode_leaf, encode_leaf

JSON_KEYS = {
    "ok", "poll_id", "logs", "votes", "counts", "review", "certificate", "admission", "findings",
}  # fmt: skip


def test_untampered_ledger_verifies(pristine: Path, spec: LedgerSpec) -> None:
    report = verify(DirectorySource(pristine), note.Verifier.parse(KEY))
    assert report.findings == []
    assert report.ok
    assert report.poll_id == POLL
    assert report.state == "closed"
    assert report.logs == {
        "admin": 3,
        **{str(lane): len(votes) for lane, votes in enumerate(spec.votes)},
    }
    assert report.counts == dict(spec.recount())
    assert report.votes == sum(len(v) for v in spec.votes) == 1200
    assert report.certificate == "verified"


def test_fixture_is_realistic(spec: LedgerSpec, pristine: Path) -> None:
    """What the other tests rely on: several checkpoints per lane, full tiles, an exact-256
    checkpoint, size-0 checkpoints and every pseudonym in its lane."""
    for lane, sizes in enumerate(spec.publish):
        assert len(sizes) >= 10
        assert sizes[0] == 0
        assert sizes[-1] > 256
        assert (pristine / str(lane) / "tile" / "0" / "000").stat().st_size == 8192
        for record in map(decode_leaf, spec.votes[lane]):
            assert int.from_bytes(record.pseudonym[-4:], "big") & 3 == lane
    assert 256 in spec.publish[0]


def test_cli_text_report(pristine: Path, spec: LedgerSpec) -> None:
    result = audit_cli("verify", str(pristine), "--key", KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "result       OK: no findings" in result.stdout
    assert f"poll         {POLL} (closed)" in result.stdout
    counts = ", ".join(f"{option} {n}" for option, n in spec.recount())
    assert f"counts       {counts}" in result.stdout
    assert result.stderr == ""  # no progress bar: stderr is not a terminal


def test_json_output_shape(pristine: Path, spec: LedgerSpec) -> None:
    result = audit_cli("verify", str(pristine), "--key", KEY, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == JSON_KEYS
    assert document["ok"] is True
    assert document["poll_id"] == POLL
    assert document["logs"] == {"admin": 3, "0": 305, "1": 299, "2": 310, "3": 286}
    assert document["votes"] == 1200
    assert document["counts"] == dict(spec.recount())
    assert list(document["counts"]) == ["red", "green", "blue"]  # the poll's order
    assert document["certificate"] == "verified"
    assert document["findings"] == []


def test_json_finding_shape(ledger: Path) -> None:
    (ledger / "2" / "tile" / "0" / "000").write_bytes(b"\0" * 8192)
    result = audit_cli("verify", str(ledger), "--key", KEY, "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    finding = document["findings"][0]
    assert set(finding) == {"code", "file", "index", "expected", "found", "message"}
    assert finding["code"] in FINDING_CODES
    assert (finding["code"], finding["file"], finding["index"]) == (
        "tile-mismatch",
        "2/tile/0/000",
        0,
    )


def test_progress_bar_goes_to_stderr_only_when_asked(pristine: Path) -> None:
    result = audit_cli("verify", str(pristine), "--key", KEY, "--json", "--progress")
    assert result.returncode == 0
    assert json.loads(result.stdout)["ok"] is True
    assert "1,203/1,203 leaves" in result.stderr  # 1200 votes and 3 admin records


def test_key_from_a_file_and_poll_named(pristine: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "ledger.vkey"
    key_file.write_text(f"\n{KEY}\n")
    result = audit_cli("verify", str(pristine), "--key", str(key_file), "--poll", POLL)
    assert result.returncode == 0, result.stdout + result.stderr


def test_another_poll_named_is_a_finding(pristine: Path) -> None:
    result = audit_cli("verify", str(pristine), "--key", KEY, "--poll", "other-poll", "--json")
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    assert findings[0]["code"] == "poll-mismatch"
    assert (findings[0]["expected"], findings[0]["found"]) == ("other-poll", POLL)


def test_another_key_finds_nothing_signed(pristine: Path) -> None:
    other = str(note.Signer(PREFIX, bytes(32)).verifier)
    result = audit_cli("verify", str(pristine), "--key", other, "--json")
    assert result.returncode == 1
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert "bad-signature" in codes


def test_usage_errors_exit_2(pristine: Path, tmp_path: Path) -> None:
    missing = audit_cli("verify", str(tmp_path / "nothing-here"), "--key", KEY)
    assert missing.returncode == 2
    assert "not a directory" in missing.stderr
    empty = audit_cli("verify", str(tmp_path), "--key", KEY)
    assert empty.returncode == 2
    assert "no ledger here" in empty.stderr
    bad_key = audit_cli("verify", str(pristine), "--key", "not+a+key")
    assert bad_key.returncode == 2
    assert "--key" in bad_key.stderr
    no_key = audit_cli("verify", str(pristine))
    assert no_key.returncode == 2


def test_unreachable_server_exits_2() -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = audit_cli("verify", f"http://127.0.0.1:{port}/ledger/{POLL}", "--key", KEY)
    assert result.returncode == 2
    assert "cannot connect" in result.stderr


def test_verify_over_http_matches_the_directory(pristine: Path) -> None:
    local = audit_cli("verify", str(pristine), "--key", KEY, "--json")
    with serve_ledger(pristine) as url:
        remote = audit_cli("verify", url, "--key", KEY, "--json")
        report = verify(HttpSource(url), note.Verifier.parse(KEY))
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert report.ok
    assert report.source == url


def test_unknown_poll_over_http_exits_2(pristine: Path) -> None:
    with serve_ledger(pristine) as url:
        result = audit_cli("verify", url.replace(POLL, "no-such-poll"), "--key", KEY)
    assert result.returncode == 2
    assert "no ledger here" in result.stderr


def test_open_poll_without_certificate_is_fine(spec: LedgerSpec, tmp_path: Path) -> None:
    open_poll = replace(spec, admin=spec.admin[:2], admin_publish=[1, 2], certify=False)
    write_ledger(tmp_path / POLL, open_poll)
    report = verify(DirectorySource(tmp_path / POLL), note.Verifier.parse(KEY))
    assert report.findings == []
    assert (report.state, report.certificate) == ("open", "not-closed")
    assert "none: the poll is not closed" in report.render_text()


def test_closed_poll_without_certificate_is_a_finding(spec: LedgerSpec, tmp_path: Path) -> None:
    write_ledger(tmp_path / POLL, replace(spec, certify=False))
    report = verify(DirectorySource(tmp_path / POLL), note.Verifier.parse(KEY))
    assert [(f.code, f.file) for f in report.findings] == [("certificate-missing", "certificate")]
    assert report.certificate == "missing"


def test_findings_of_one_kind_are_capped(spec: LedgerSpec, tmp_path: Path) -> None:
    """A lane rewritten wholesale (every vote for an unknown option) lists 50 leaves, then sums
    up the rest, rather than print a line per leaf."""
    rewritten = [encode_leaf(replace(decode_leaf(r), option_id="yellow")) for r in spec.votes[3]]
    write_ledger(tmp_path / POLL, spec.with_lane(3, rewritten))
    report = verify(DirectorySource(tmp_path / POLL), note.Verifier.parse(KEY))
    unknown = [f for f in report.findings if f.code == "unknown-option"]
    assert len(unknown) == 50
    assert unknown[0].index == 0
    assert unknown[0].file == "3/tile/entries/000"
    summary = [f for f in report.findings if f.code == "too-many"]
    assert [(f.file, f.expected, f.found) for f in summary] == [
        ("3", "unknown-option", str(len(rewritten) - 50))
    ]


class _HistoryReadEarlier(DirectorySource):
    """A live log that grew between the history read and the latest checkpoint read: the
    history lacks each log's newest checkpoint, which the latest checkpoint already is."""

    def history(self) -> History:
        read = super().history()
        return replace(read, logs={log: notes[:-1] for log, notes in read.logs.items()})


def test_a_log_growing_during_the_audit_is_not_a_finding(pristine: Path) -> None:
    report = verify(_HistoryReadEarlier(pristine), note.Verifier.parse(KEY))
    assert report.findings == []


def test_an_honest_earlier_copy_passes_as_known(pristine: Path, tmp_path: Path) -> None:
    """An export made mid-vote holds a prefix of each log's history: the final ledger extends
    every one of its checkpoints, so it adds no finding."""
    earlier = tmp_path / "earlier"
    for log_dir in (p for p in pristine.iterdir() if p.is_dir()):
        sizes = sorted(int(p.name) for p in (log_dir / "checkpoints").iterdir())
        kept = sizes[: max(1, len(sizes) // 2)]
        (earlier / log_dir.name / "checkpoints").mkdir(parents=True)
        for size in kept:
            data = (log_dir / "checkpoints" / str(size)).read_bytes()
            (earlier / log_dir.name / "checkpoints" / str(size)).write_bytes(data)
        (earlier / log_dir.name / "checkpoint").write_bytes(
            (log_dir / "checkpoints" / str(kept[-1])).read_bytes()
        )
    report = verify(
        DirectorySource(pristine), note.Verifier.parse(KEY), known=[DirectorySource(earlier)]
    )
    assert report.findings == []
