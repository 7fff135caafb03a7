"""`tally bench --defences` end to end, small: one server, a poll with every defence off and one
with the defaults, alternating blocks; every vote accepted and counted, the on poll's layers as
the defaults say, and its challenges solved before the votes (else the on blocks' votes would be
answered 428, not 201)."""

from __future__ import annotations

import json
import subprocess
import sys

from tally.domain.defences import DEFAULT_DEFENCES


def test_the_defences_bench_compares_on_and_off_in_one_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tally", "bench", "--defences", "--voters", "40",
         "--concurrency", "4", "--json"],
        capture_output=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["all_accepted"] is True
    assert result["counted_matches"] is True
    assert [b["defences"] for b in result["blocks"]] == ["off", "on", "off", "on", "off"]
    assert all(b["statuses"] == {"201": 20} for b in result["blocks"])
    assert result["on_layers"] == {
        "limits": ["address", "poll", "subnet", "voter"],
        "pow_difficulty": DEFAULT_DEFENCES.pow.difficulty,
        "risk_rules": len(DEFAULT_DEFENCES.risk.rules),
    }
    assert result["ratio_on_to_off"] > 0
    assert result["challenge_endpoint_req_per_s"] > 0
