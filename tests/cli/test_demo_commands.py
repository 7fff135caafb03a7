"""What `tally serve --demo` prints for `make run` (the defaults) and for any other port or data
dir: the CLI lines name the server and the data dir exactly when the CLI would not find them."""

from __future__ import annotations

from pathlib import Path

from tally.config import Settings
from tally.demo import instructions
from tally.domain.polls import OptionSpec, Poll, new_poll


def demo_poll() -> Poll:
    options = [OptionSpec(label="Aurora"), OptionSpec(label="Borealis")]
    return new_poll(poll_id="demopoll", title="Demo", options=options, now_ms=0, lanes=1)


def cli_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if ".venv/bin/tally " in line]


def test_make_run_prints_the_short_commands() -> None:
    """On 127.0.0.1:8000 with ./data, the commands need no --url or --data-dir."""
    lines = cli_lines(instructions(demo_poll(), Settings(), None))
    assert lines[0] == (
        '.venv/bin/tally vote demopoll aurora --token "$(.venv/bin/tally token alice)"'
    )
    assert not any("--url" in line or "--data-dir" in line for line in lines)


def test_another_port_and_data_dir_are_carried_by_every_cli_line(tmp_path: Path) -> None:
    """Each vote and results line carries --url; each token, the data dir's absolute path."""
    settings = Settings(port=8123, data_dir=tmp_path / "my data")
    lines = cli_lines(instructions(demo_poll(), settings, None))
    quoted = f"'{(tmp_path / 'my data').resolve()}'"  # shell-quoted: the path has a space
    assert lines[0] == (
        ".venv/bin/tally vote demopoll aurora --url http://127.0.0.1:8123 "
        f'--token "$(.venv/bin/tally token alice --data-dir {quoted})"'
    )
    for line in lines:
        if " vote " in line or " results " in line:
            assert "--url http://127.0.0.1:8123" in line, line
        if " token " in line:
            assert f"--data-dir {quoted}" in line, line
