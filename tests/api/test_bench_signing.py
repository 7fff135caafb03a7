"""`tally bench --signing both` end to end, tiny: the hello-world baseline, a signing `tally serve`
and one with TALLY_ADMISSION_SIGNING=off, in interleaved rounds; every request answered and every
vote counted, each round's ratios reported, and the two servers really differ in signing: the
signed one's receipts carry admission signatures that verify under the key the bench gave it
(checked here again on the receipt the report holds), the unsigned one's carry none."""

from __future__ import annotations

import json
import subprocess
import sys

from tally.audit.receipt_admission import admission_keys, check_receipt_admission
from tally.audit.receipt_parse import parse_receipt
from tally.ledger import note

VOTERS = 40


def test_the_signing_bench_compares_signed_and_unsigned_votes_in_one_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tally", "bench", "--signing", "both", "--voters", str(VOTERS),
         "--concurrency", "4", "--rounds", "2", "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])

    assert [(b["round"], b["side"]) for b in result["blocks"]] == [
        (1, "baseline"), (1, "signed"), (1, "unsigned"),
        (2, "baseline"), (2, "unsigned"), (2, "signed"),
    ]  # fmt: skip
    for block in result["blocks"]:
        status = "200" if block["side"] == "baseline" else "201"
        assert block["statuses"] == {status: VOTERS}
        assert block["per_s"] > 0
    assert result["all_accepted"] is True
    assert result["counted_matches"] == {"signed": True, "unsigned": True}
    assert [r["round"] for r in result["per_round"]] == [1, 2]
    for key in ("signed_to_baseline", "unsigned_to_baseline", "signed_to_unsigned"):
        assert result[key] > 0
    assert set(result["median"]) == {"baseline", "signed", "unsigned"}

    signed, unsigned = result["receipts"]["signed"], result["receipts"]["unsigned"]
    assert signed["receipts"] == signed["with_admission_signature"] == 2 * VOTERS
    assert signed["signatures_checked"] == signed["signatures_valid"] > 0
    assert unsigned["receipts"] == 2 * VOTERS
    assert unsigned["with_admission_signature"] == 0
    assert result["signing_differs"] is True

    # The receipts as answered, checked here without the bench's own counting.
    keys = admission_keys([note.Verifier.parse(result["admission_key"])])
    receipt = parse_receipt(json.dumps(signed["sample_receipt"]).encode())
    record = receipt.record()
    assert receipt.admission is not None
    assert record is not None
    assert check_receipt_admission(record, receipt.admission, keys).code is None
    plain = parse_receipt(json.dumps(unsigned["sample_receipt"]).encode())
    assert plain.admission is None
    assert "admission" not in unsigned["sample_receipt"]["receipt"]
