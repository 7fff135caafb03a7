"""`tally bench --sessions` end to end, tiny: the hello-world baseline and one `tally serve` taking
session votes and RS256 JWT votes in interleaved rounds; every request answered, every vote
counted in its side's poll, each round's ratios reported."""

from __future__ import annotations

import json
import subprocess
import sys

VOTERS = 40


def test_the_sessions_bench_compares_sessions_and_jwts_in_one_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tally", "bench", "--sessions", "--alg", "RS256",
         "--voters", str(VOTERS), "--concurrency", "4", "--rounds", "2", "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert [(b["round"], b["side"]) for b in result["blocks"]] == [
        (1, "baseline"), (1, "sessions"), (1, "jwt"),
        (2, "baseline"), (2, "jwt"), (2, "sessions"),
    ]  # fmt: skip
    for block in result["blocks"]:
        assert block["statuses"] == {"200" if block["side"] == "baseline" else "201": VOTERS}
        assert block["per_s"] > 0
    assert result["all_accepted"] is True
    assert result["counted_matches"] == {"sessions": True, "jwt": True}
    assert result["jwt_alg"] == "RS256"
    for key in ("sessions_to_baseline", "jwt_to_baseline", "sessions_to_jwt"):
        assert result[key] > 0
    assert result["meets_target"] == (result["sessions_to_baseline"] >= 0.6)


def test_sessions_takes_no_signing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tally", "bench", "--sessions", "--signing", "both"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--sessions takes no" in done.stderr
