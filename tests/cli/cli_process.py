"""The `tally` command as a newcomer runs it: its own process, a shell's environment without any
TALLY_* variable unless the test gives one, in a working directory of the test's choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

VENV = Path(sys.executable).parent.parent  # the .venv the tests run in, with bin/tally


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus every TALLY_* variable, plus `extra`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    environment.update(extra or {})
    return environment


def tally(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`tally ARGS` (the installed console script); never raises on its exit status."""
    return subprocess.run(  # the test's own arguments
        [str(VENV / "bin" / "tally"), *map(str, args)],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def shell(
    line: str, *, cwd: Path, env: Mapping[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """One command line exactly as printed, run by bash in `cwd`."""
    return subprocess.run(  # a line Tally printed for its user to paste
        ["/bin/bash", "-c", line],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def with_venv(directory: Path) -> Path:
    """`directory` with a `.venv` link to the test's virtual environment, so that the
    `.venv/bin/tally` the server prints resolves there as it does in a checkout."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / ".venv"
    if not link.exists():
        link.symlink_to(VENV, target_is_directory=True)
    return directory
