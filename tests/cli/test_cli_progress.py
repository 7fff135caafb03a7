"""Long work shows progress on a terminal, and only there: stderr of a real pseudo-terminal gets a
line with true counts and rates; a pipe or --json gets nothing, so data stays data."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

from cli_process import VENV, clean_env

from tally.audit.report import Progress as AuditBar
from tally.progress import Progress


def on_a_terminal(*args: str) -> tuple[int, str, str]:
    """`tally ARGS` with stderr on a pseudo-terminal (stdout a pipe): status, stdout, stderr."""
    controller, terminal = pty.openpty()
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(  # the test's own command
            [str(VENV / "bin" / "tally"), *args],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    return done.returncode, done.stdout, seen.decode(errors="replace")


def test_token_count_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """The last line says every token was minted, how long it took and at what rate."""
    status, out, err = on_a_terminal("token", "--count", "3000", "--data-dir", str(tmp_path))
    assert status == 0, err
    assert len(out.splitlines()) == 3000
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.fullmatch(
        r"(\x1b\[K)?minting tokens: 3000/3000 tokens \(100 %\) in [\d.]+ s \([\d,]+ tokens/s\)",
        final,
    ), final


def test_token_count_shows_nothing_in_a_pipe_or_with_json(tmp_path: Path) -> None:
    """Piped: stderr stays empty. --json on a terminal: stderr empty, stdout one JSON document."""
    piped = subprocess.run(  # the test's own command
        [str(VENV / "bin" / "tally"), "token", "--count", "50", "--data-dir", str(tmp_path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (piped.returncode, piped.stderr) == (0, "")
    status, out, err = on_a_terminal(
        "token", "--count", "50", "--json", "--data-dir", str(tmp_path)
    )
    assert (status, err) == (0, "")
    assert [t["subject"] for t in json.loads(out)] == [f"voter-{i}" for i in range(50)]


class Terminal(io.StringIO):
    """A text stream that says it is a terminal (what Progress checks before drawing)."""

    def isatty(self) -> bool:
        return True


def test_progress_counts_and_rates_are_the_true_ones() -> None:
    """Counts as stepped; the rate is over the time since the work began."""
    stream = Terminal()
    with Progress("checking", total=4, unit="files", stream=stream) as shown:
        time.sleep(0.2)
        for _ in range(4):
            shown.advance()
    final = stream.getvalue().split("\r")[-1]
    match = re.search(r"checking: 4/4 files \(100 %\) in ([\d.]+) s \(([\d,]+) files/s\)", final)
    assert match, final
    assert float(match[1]) >= 0.2
    assert int(match[2].replace(",", "")) <= 20  # 4 files in at least 0.2 s


def test_progress_is_silent_off_a_terminal_or_when_quiet() -> None:
    """A plain stream (a pipe, a file) or quiet=True (--json) gets nothing."""
    for stream, quiet in [(io.StringIO(), False), (Terminal(), True)]:
        with Progress("minting", total=2, stream=stream, quiet=quiet) as shown:
            shown.advance(2)
        assert stream.getvalue() == ""


def test_export_bar_rates_count_from_the_start_of_the_work() -> None:
    """The audit export's bar: files, bytes and their rates measured from when the export
    began, not from its first file (which made the first rate near infinite)."""
    stream = io.StringIO()
    bar = AuditBar(stream, enabled=True, label="files")
    time.sleep(0.25)
    bar(1, 2, 1_000_000)
    bar.finish()
    line = stream.getvalue().split("\r")[-1]
    match = re.search(r" 1/2 files\s+50% ([\d,]+)/s 1\.0 MB at ([\d.]+) MB/s", line)
    assert match, line
    assert int(match[1].replace(",", "")) <= 4  # 1 file in at least 0.25 s
    assert float(match[2]) <= 4.0  # 1 MB in at least 0.25 s


def test_bench_says_which_measurement_runs_on_a_terminal() -> None:
    """A small tally bench: the terminal is told each run as it starts, and the count of runs
    done at the end; its table still goes to stdout."""
    status, out, err = on_a_terminal(
        "bench", "--voters", "200", "--concurrency", "4", "--lanes", "2", "--no-baseline"
    )
    assert status == 0, err
    assert "votes/s" in out
    assert "tally bench: 0/1 runs (0 %): 200 votes over 4 connections" in err
    assert re.search(r"tally bench: 1/1 runs \(100 %\) in [\d.]+ s", err), err
