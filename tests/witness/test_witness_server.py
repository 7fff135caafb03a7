"""`tally witness` as a real process: it cosigns a log's checkpoints only while each extends the
one it cosigned before (C2SP tlog-witness), and keeps that state across restarts."""

from __future__ import annotations

import base64
import concurrent.futures
import stat
import time
from pathlib import Path

import httpx
import pytest

from tally.ledger import merkle, note
from tally.ledger.cosignature import CosignatureVerifier, add_cosignatures, check_cosignatures
from tally.witness.protocol import format_add_checkpoint
from tally.witness.state import origin_hash
from witness.rig import LEDGER, Log, post, running_witness, witness_key


def cosigned_at(body: bytes, answer: httpx.Response, key_file: Path) -> int:
    """The answer is one valid cosignature line of the witness's key: its time."""
    assert answer.status_code == 200, answer.text
    request_note = body.partition(b"\n\n")[2]
    check = check_cosignatures(
        add_cosignatures(request_note, [answer.text]), [witness_key(key_file)]
    )
    assert len(check.valid) == 1
    assert check.invalid == ()
    return check.valid[0].timestamp


def conflict(answer: httpx.Response) -> int:
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "text/x.tlog.size"
    return int(answer.text)


def test_cosigns_each_consistent_checkpoint_and_serves_the_latest(tmp_path: Path) -> None:
    state = tmp_path / "w"
    log = Log()
    with running_witness(state) as witness:
        assert witness.get("/healthz").json()["key"] == str(witness_key(state / "witness.key"))
        before = time.time() - 1
        sizes_and_olds = [(0, 0), (3, 0), (8, 3), (8, 8), (256, 8), (300, 256)]
        times = []
        for size, old in sizes_and_olds:
            body = log.grow(size).request(old, size)
            times.append(cosigned_at(body, post(witness, body), state / "witness.key"))
        assert before <= times[0] <= times[-1] <= time.time() + 1
        assert times == sorted(times)
        latest = witness.get(f"/{origin_hash(log.origin)}/checkpoint")
        assert latest.status_code == 200
        assert latest.content.startswith(log.checkpoint(300))  # the log's signature kept
        assert check_cosignatures(latest.content, [witness_key(state / "witness.key")]).valid
        assert witness.get(f"/{origin_hash('tally.test/ledger/x/9')}/checkpoint").status_code == 404
    # The state is private: 0700 folders, 0600 files (the key too).
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in [state / "witness.key", *(state / "logs").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_a_fork_a_smaller_tree_and_a_bad_proof(tmp_path: Path) -> None:
    log, fork = Log().grow(40), Log(tag="rewritten ").grow(40)
    with running_witness(tmp_path / "w") as witness:
        assert post(witness, log.request(0, 20)).status_code == 200
        # A fork at the same size: another root for size 20.
        same_size = post(witness, fork.request(20, 20))
        assert (same_size.status_code, same_size.json()["code"]) == (422, "inconsistent")
        # A fork that grew: its proof from 20 is of its own tree, not the one cosigned.
        grown = post(witness, fork.request(20, 40))
        assert (grown.status_code, grown.json()["code"]) == (422, "inconsistent")
        # A smaller tree: the old size cannot exceed the new one, and any other old size is
        # answered with the witness's own (409).
        assert post(witness, log.request(20, 10)).status_code == 400
        assert conflict(post(witness, log.request(10, 10))) == 20
        assert conflict(post(witness, log.request(0, 30))) == 20
        # A proof with one hash flipped.
        proof = merkle.consistency_proof(20, 40, log.hashes)
        proof[-1] = bytes([proof[-1][0] ^ 1]) + proof[-1][1:]
        bad = post(witness, format_add_checkpoint(20, proof, log.checkpoint(40)))
        assert (bad.status_code, bad.json()["code"]) == (422, "inconsistent")
        # None of that moved the witness: the honest log still extends from 20.
        assert post(witness, log.request(20, 40)).status_code == 200


def test_unknown_logs_bad_signatures_and_malformed_requests(tmp_path: Path) -> None:
    log = Log().grow(4)
    stranger = Log(signer=note.Signer("other.example/ledger", bytes(32))).grow(4)
    impostor = Log(signer=note.Signer(LEDGER.name, bytes(range(1, 33)))).grow(4)  # same name
    with running_witness(tmp_path / "w") as witness:
        unknown = post(witness, stranger.request(0))
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown-log")
        forged = post(witness, impostor.request(0))
        assert (forged.status_code, forged.json()["code"]) == (403, "bad-log-signature")
        assert forged.headers["content-type"] == "application/problem+json"
        broken = log.checkpoint()
        broken = broken[:-10] + (b"A" if broken[-10:-9] != b"A" else b"B") + broken[-9:]
        assert post(witness, format_add_checkpoint(0, [], broken)).status_code in (400, 403)
        assert post(witness, b"old 0\n" + log.checkpoint()).status_code == 400
        body = log.checkpoint().replace(b"\n4\n", b"\n0\n")  # an edited body: unsigned
        assert post(witness, format_add_checkpoint(0, [], body)).status_code == 403
        huge = post(witness, b"old 0\n" + b"A" * 70_000)
        assert huge.status_code == 413
        assert post(witness, log.request(0)).status_code == 200  # still works


def test_a_size_zero_checkpoint_needs_the_empty_root(tmp_path: Path) -> None:
    from tally.ledger.checkpoint import Checkpoint, sign_checkpoint

    log = Log()
    wrong = sign_checkpoint(Checkpoint(log.origin, 0, merkle.leaf_hash(b"x")), [log.signer])
    with running_witness(tmp_path / "w") as witness:
        answer = post(witness, format_add_checkpoint(0, [], wrong))
        assert (answer.status_code, answer.json()["code"]) == (422, "not-empty-root")
        assert post(witness, log.request(0, 0)).status_code == 200


def test_concurrent_requests_cannot_fork_or_roll_back_the_state(tmp_path: Path) -> None:
    """Twelve requests from the same old size at once: exactly one wins, the others learn its
    size (the check of the old size and the write of the new state are one step)."""
    log = Log().grow(40)
    with running_witness(tmp_path / "w") as witness:
        assert post(witness, log.request(0, 10)).status_code == 200
        bodies = [log.request(10, size) for size in range(11, 23)]
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: post(witness, body), bodies))
        winners = [
            size for size, a in zip(range(11, 23), answers, strict=True) if a.status_code == 200
        ]
        assert len(winners) == 1
        assert all(conflict(a) == winners[0] for a in answers if a.status_code != 200)
        assert conflict(post(witness, log.request(0, 40))) == winners[0]


def test_restart_keeps_the_state_and_the_key(tmp_path: Path) -> None:
    state = tmp_path / "w"
    log, fork = Log().grow(50), Log(tag="rewritten ").grow(50)
    with running_witness(state) as witness:
        assert post(witness, log.request(0, 25)).status_code == 200
        key = witness.get("/healthz").json()["key"]
        assert witness.terminate() == 0
    with running_witness(state, name="witness-again") as witness:
        assert witness.get("/healthz").json()["key"] == key
        assert conflict(post(witness, log.request(0, 50))) == 25
        assert post(witness, fork.request(0, 50)).status_code == 409
        assert post(witness, fork.request(25, 50)).json()["code"] == "inconsistent"
        assert post(witness, log.request(25, 50)).status_code == 200


def test_a_second_witness_on_the_same_state_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "w"
    with running_witness(state):
        second = running_witness(state, name="second")
        with pytest.raises(RuntimeError, match="another witness"):
            second.__enter__()


def test_the_command_line_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    def witness(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tally", "witness", "--state-dir", str(tmp_path), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert "at least one --log-key" in witness().stderr
    assert witness("--log-key", "nonsense+1+2").returncode == 2
    ledger_vkey = str(LEDGER.verifier)
    printed = witness("--log-key", ledger_vkey, "--print-key").stdout.strip()
    assert CosignatureVerifier.parse(printed).name == "tally.localhost/witness"
    assert witness("--print-key").stdout.strip() == printed  # made once, then read back
    key_material = base64.b64decode(printed.split("+", 2)[2])
    assert key_material[0] == 0x04
    assert len(key_material) == 33
