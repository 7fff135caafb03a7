"""Issue 11's acceptance, as an insider with the store's admin password, against a LIVE store:
`tally gateway` and `tally archiver` as separate processes on a Valkey the test started (so the
test holds the admin user), their polls, votes and certificates over HTTP, and the real
`tally audit` command line as a third party runs it.

- Ballot stuffing: the admin user FCALLs tally_vote with made-up pseudonyms, with no admission
  signature, a garbage one, and one replayed from another voter's receipt; the store accepts
  them. The gateway's ACL user is refused every raw write outside tally_vote's keys, every
  delete and trim, the admin's commands and the other roles' functions, and may call tally_vote
  (its job), which stuffs as well; the aggregator's and archiver's users may not. After close,
  the certificate counts the ledger's recount without the stuffed votes and records the alarm,
  and `tally audit verify` fails with an admission finding at each stuffed lane and leaf.
- A vote deleted (XDEL as admin) at the end of its lane before any checkpoint covered it: the
  archiver raises the alarm, the certificate counts without it, the victim's `tally audit
  receipt` exits 3 "missing from the final log", and the receipt with /ledger/keys alone proves
  the gateway admitted it (checked here with `cryptography` only, not Tally's code).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from insider_stack import Operator, as_role, deployment_env, tally_cli

from conftest import StoreConnection, StoreUnderTest, own_store
from role_processes import running_role, wait_for
from tally.domain.polls import Poll
from tally.domain.pseudonyms import bucket_of, index_field, lane_of
from tally.ports import ReplyError
from tally.store import acl, keys
from tally.store.polls import ValkeyPolls

ENV = {
    "TALLY_PSEUDONYM_SECRET": "1d" * 32,
    "TALLY_CHECKPOINT_INTERVAL_MS": "200",
    "TALLY_SHUTDOWN_TIMEOUT_S": "5",
}
OPTIONS = ("a", "b")


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """The store the roles share, started by the test, which thereby holds its admin user."""
    async with own_store(tmp_path / "external") as store:
        yield store


@pytest.fixture
async def admin(valkey: StoreUnderTest) -> AsyncIterator[StoreConnection]:
    """The insider: a connection as the store's admin user."""
    client = valkey.client()
    await client.connect()
    yield client
    await client.close()


async def poll_of(store: StoreConnection, poll_id: str) -> Poll:
    poll = await ValkeyPolls(store).get(poll_id)
    assert poll is not None
    return poll


def vote_call(poll: Poll, pseudonym: bytes, option: str, blob: bytes | None) -> tuple[Any, ...]:
    """FCALL tally_vote as the gateway sends it (store/votes.py), for any pseudonym, with the
    76-byte admission blob `blob` (None: none at all)."""
    lane = lane_of(pseudonym, poll.lanes)
    voters = keys.lane_voters(poll.id, lane, bucket_of(pseudonym, poll.bucket_bits))
    return (
        "FCALL", "tally_vote", 4,
        keys.lane_state(poll.id, lane), keys.lane_counts(poll.id, lane),
        keys.lane_ledger(poll.id, lane), voters,
        pseudonym, index_field(pseudonym), option, *(() if blob is None else (blob,)),
    )  # fmt: skip


async def stuff(
    store: StoreConnection, poll: Poll, option: str, blob: bytes | None
) -> tuple[int, int]:
    """One made-up vote through tally_vote, which the store accepts: its (lane, seq)."""
    pseudonym = os.urandom(16)
    reply = await store.execute(*vote_call(poll, pseudonym, option, blob))
    assert reply[0] == b"accepted", reply
    return lane_of(pseudonym, poll.lanes), int(reply[1])


def blob_of(receipt: dict[str, Any]) -> bytes:
    """The 76 bytes the store keeps of a real vote's admission (admitted ms, key id, signature),
    as an insider copies them from the queue or a voter's receipt."""
    admission = receipt["admission"]
    admitted = round(datetime.fromisoformat(admission["admitted_at"]).timestamp() * 1000)
    signature = bytes.fromhex(admission["signature"])
    return struct.pack(">QI64s", admitted, int(admission["key_id"], 16), signature)


def refused(reply: Any) -> bool:
    """An ACL refusal: of the command or of a key (NOPERM), or of a command a function ran."""
    text = str(reply)
    return isinstance(reply, ReplyError) and (
        text.startswith("NOPERM") or "ACL failure in script" in text
    )


def forbidden_to_the_gateway(poll: Poll) -> list[tuple[Any, ...]]:
    """On this poll's own keys: what a stolen gateway password must not be able to send."""
    p = poll.id
    ledger, counts, integrity = (
        keys.lane_ledger(p, 0),
        keys.lane_counts(p, 0),
        keys.poll_integrity(p),
    )
    return [
        # Raw writes outside tally_vote's keys: the published results, the alarms, the held
        # votes, the archiver's lease.
        ("XADD", keys.poll_snapshot(p), "*", "doc", "{}"),
        ("XADD", integrity, "*", "kind", "none"),
        ("HSET", keys.poll_snapshot(p), "doc", '{"counts": {"a": 1000}}'),
        ("HSET", integrity, "counter-mismatch:0", "{}"),
        ("HINCRBY", keys.poll_snapshot(p), "seq", 1),
        ("HINCRBY", keys.lane_held(p, 0), "1", 1),
        ("HINCRBY", keys.lane_voters(p, 0, 0), "x", 1),
        ("SET", keys.poll_archiver_lease(p), "insider"),
        # Taking a vote back or hiding the evidence: deletes and trims of any log or record.
        ("XDEL", ledger, "1-0"),
        ("XDEL", keys.poll_admin(p), "1-0"),
        ("XTRIM", ledger, "MAXLEN", 0),
        ("XTRIM", keys.poll_admin(p), "MAXLEN", 0),
        ("DEL", ledger),
        ("DEL", counts),
        ("DEL", integrity),
        ("UNLINK", keys.lane_state(p, 0)),
        ("HDEL", integrity, "counter-mismatch:0"),
        ("HDEL", counts, "a"),
        # The admin's commands (a vote function that skips its checks) and the other roles'
        # functions (the archiver's counters read, its lease; the aggregator's snapshots).
        ("FUNCTION", "LOAD", "REPLACE", "#!lua name=tally\n"),
        ("FUNCTION", "DELETE", "tally"),
        ("FUNCTION", "FLUSH"),
        ("FCALL", "tally_lane_counters", 2, keys.lane_state(p, 0), counts),
        ("FCALL", "tally_lease", 1, keys.poll_archiver_lease(p), "insider", 60_000),
        ("FCALL", "tally_snapshot", 2, keys.poll_snapshot(p), keys.poll_lease(p), "insider",
         1, "{}", keys.live_channel(p)),
        ("CONFIG", "SET", "appendonly", "no"),
        ("ACL", "SETUSER", acl.username(acl.GATEWAY), "+@all", "~*"),
    ]  # fmt: skip


async def store_state(store: StoreConnection, poll: Poll) -> list[Any]:
    """What a refused command must leave as it was: each lane's counters and state, how many
    entries its queue and the admin log were ever given (the archiver trims what it archived
    meanwhile, so not their length), the alarms, the snapshot."""
    state: list[Any] = []
    for lane in range(poll.lanes):
        state.append(await added(store, keys.lane_ledger(poll.id, lane)))
        state.append(await store.execute("HGETALL", keys.lane_counts(poll.id, lane)))
        state.append(await store.execute("HGETALL", keys.lane_state(poll.id, lane)))
    state.append(await added(store, keys.poll_admin(poll.id)))
    state.append(await store.execute("HGETALL", keys.poll_integrity(poll.id)))
    state.append(await store.execute("HGETALL", keys.poll_snapshot(poll.id)))
    return state


async def added(store: StoreConnection, stream: str) -> tuple[int, bytes]:
    """A stream's entries-added and last-generated-id (XINFO STREAM): unchanged by a trim."""
    info = await store.execute("XINFO", "STREAM", stream)
    fields = dict(zip(info[::2], info[1::2], strict=True))
    return int(fields[b"entries-added"]), fields[b"last-generated-id"]


async def live_counts(store: StoreConnection, poll: Poll) -> dict[str, int]:
    """The lanes' counters summed, as /results would show them."""
    counts = dict.fromkeys(OPTIONS, 0)
    for lane in range(poll.lanes):
        fields = await store.execute("HGETALL", keys.lane_counts(poll.id, lane))
        for option, count in zip(fields[::2], fields[1::2], strict=True):
            counts[option.decode()] += int(count)
    return counts


def audit_verify(operator: Operator, poll_id: str) -> tuple[int, dict[str, Any]]:
    """`tally audit verify` of the poll's published ledger, as a third party runs it."""
    ledger_key = operator.published_keys().splitlines()[0]
    source = f"{operator.gateway.url}/ledger/{poll_id}"
    run = tally_cli("audit", "verify", source, "--key", ledger_key, "--json")
    assert run.returncode in (0, 1), run.stdout + run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    return run.returncode, report


def leaf_of(finding: dict[str, Any]) -> tuple[int, int]:
    """(lane, seq) of an admission finding: its file is a lane's entry bundle (`<lane>/tile/
    entries/...`), its index the leaf (seq - 1)."""
    return int(finding["file"].split("/")[0]), int(finding["index"]) + 1


async def test_ballots_stuffed_through_the_vote_function_fail_the_audit_and_are_not_counted(
    valkey: StoreUnderTest, admin: StoreConnection, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = deployment_env(valkey, data_dir, **ENV)
    with (
        running_role("archiver", env, tmp_path),
        running_role("gateway", env, tmp_path) as gateway,
    ):
        operator = Operator(gateway, data_dir)
        poll_id = operator.open_poll("Stuffed", OPTIONS, lanes=2)
        receipts = [operator.vote(poll_id, f"voter-{i}", "ab"[i % 3 == 0]) for i in range(6)]
        assert all("admission" in r for r in receipts)
        poll = await poll_of(admin, poll_id)

        # The insider as the admin user: three made-up voters, all for b.
        stuffed = {
            await stuff(admin, poll, "b", None): "admission-unsigned",
            await stuff(admin, poll, "b", os.urandom(76)): "admission-unknown-key",
            # Another voter's real signature: right key, signs another pseudonym and option.
            await stuff(admin, poll, "b", blob_of(receipts[1])): "admission-bad-signature",
        }

        # The insider as the gateway's ACL user: refused all but the vote function ...
        async with as_role(valkey, acl.GATEWAY) as gateway_user:
            before = await store_state(admin, poll)
            commands = forbidden_to_the_gateway(poll)
            replies = [await gateway_user.submit(c) for c in commands]
            assert [(c, r) for c, r in zip(commands, replies, strict=True) if not refused(r)] == []
            assert await store_state(admin, poll) == before
            # ... which ACL must allow, since voting is the gateway's job: it stuffs too.
            stuffed[await stuff(gateway_user, poll, "b", blob_of(receipts[2]))] = (
                "admission-bad-signature"
            )
        # The other roles' users may not even call it.
        for role in (acl.AGGREGATOR, acl.ARCHIVER):
            async with as_role(valkey, role) as user:
                before = await store_state(admin, poll)
                reply = await user.submit(vote_call(poll, os.urandom(16), "b", None))
                assert refused(reply), (role, reply)
                assert await store_state(admin, poll) == before

        # The store took them all: the live counters hold 4 more votes for b.
        assert await live_counts(admin, poll) == {"a": 4, "b": 2 + 4}

        operator.close(poll_id)
        text, certificate = operator.certificate(poll_id)
        # The certificate counts the ledger's recount: the 6 admitted votes only (a: 4, b: 2),
        # and records the alarm with the counters' total beside it.
        assert certificate.counts == (("a", 4), ("b", 2)), text
        assert certificate.integrity is not None, text
        stuffed_lanes = {lane for lane, _ in stuffed}
        assert {("unsigned-vote", str(lane)) for lane in stuffed_lanes} <= set(
            certificate.integrity.alarms
        ), text
        assert dict(certificate.integrity.counters) == {"a": 4, "b": 6}, text
        alarms = operator.integrity(f"/v1/polls/{poll_id}") or []
        assert {(a["kind"], a["lane"]) for a in alarms} >= {
            ("unsigned-vote", lane) for lane in stuffed_lanes
        }, alarms

        status, report = audit_verify(operator, poll_id)
        assert status == 1, report
        assert not report["ok"]
        assert report["admission"]["state"] == "invalid"
        assert report["admission"]["signed_votes"] == 6
        found = {
            leaf_of(f): f["code"] for f in report["findings"] if f["code"].startswith("admission-")
        }
        assert found == stuffed, report["findings"]
        # Besides them, only the alarms the certificate records: the auditor's recount leaves
        # the stuffed votes out as the archiver's did (docs/ledger-format.md §14.3), so the
        # certificate's counts are not blamed.
        others = {f["code"] for f in report["findings"] if not f["code"].startswith("admission-")}
        assert others <= {"integrity-alarm"}, report["findings"]
        assert report["counts"] == {"a": 4, "b": 2}, report


def published_admission_keys(text: str) -> dict[int, tuple[Ed25519PublicKey, int, int]]:
    """/ledger/keys as a third party reads it (docs/ledger-format.md §4.4, §14.2): after the
    ledger key's line, `<name>+<key id hex>+<base64(0x01 || public key)> <not before> <not
    after>` per admission key; each key id checked against its name and key."""
    found = {}
    for line in text.splitlines()[1:]:
        verifier, not_before, not_after = line.split(" ")
        name, key_id_hex, encoded = verifier.split("+", 2)  # base64 may hold a "+"
        raw = base64.b64decode(encoded)
        assert raw[0] == 0x01, line  # Ed25519
        assert len(raw) == 33, line
        key_id = int(key_id_hex, 16)
        computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        assert int.from_bytes(computed, "big") == key_id, line
        found[key_id] = (
            Ed25519PublicKey.from_public_bytes(raw[1:]),
            int(not_before),
            int(not_after),
        )
    return found


def admitted_by_gateway(receipt: dict[str, Any], published: str) -> bool:
    """What anyone can check with the receipt and /ledger/keys alone: the gateway's signature of
    the vote (docs/ledger-format.md §14.1), under a published key valid at the admitted time."""
    admission = receipt["admission"]
    public_key, not_before, not_after = published_admission_keys(published)[
        int(admission["key_id"], 16)
    ]
    admitted_ms = round(datetime.fromisoformat(admission["admitted_at"]).timestamp() * 1000)
    if admitted_ms < not_before or (not_after and admitted_ms >= not_after):
        return False
    poll, option = receipt["poll_id"].encode(), receipt["option"].encode()
    status = 0x01 if receipt.get("status", "accepted") == "accepted" else 0x02
    message = b"".join((
        b"tally-admission/v1\n",
        bytes([len(poll)]), poll,
        bytes.fromhex(receipt["pseudonym"]),
        bytes([len(option)]), option,
        struct.pack(">BQI", status, admitted_ms, int(admission["key_id"], 16)),
    ))  # fmt: skip
    try:
        public_key.verify(bytes.fromhex(admission["signature"]), message)
    except InvalidSignature:
        return False
    return True


def audit_receipt(
    receipt: dict[str, Any], operator: Operator, published: str, tmp_path: Path
) -> tuple[int, str]:
    """`tally audit receipt` of a voter's receipt against the poll's published ledger, with the
    keys as /ledger/keys gives them."""
    path = tmp_path / f"receipt-{receipt['lane']}-{receipt['entry_id']}.json"
    path.write_text(json.dumps({"receipt": receipt}))
    source = f"{operator.gateway.url}/ledger/{receipt['poll_id']}"
    run = tally_cli("audit", "receipt", str(path), source, "--key", published)
    return run.returncode, run.stdout + run.stderr


async def test_a_vote_deleted_at_the_end_of_a_lane_is_missing_from_the_final_log(
    valkey: StoreUnderTest, admin: StoreConnection, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = deployment_env(valkey, data_dir, **ENV)
    with running_role("gateway", env, tmp_path) as gateway:
        operator = Operator(gateway, data_dir)
        poll_id = operator.open_poll("Deleted", OPTIONS, lanes=2)
        receipts = [operator.vote(poll_id, f"voter-{i}", "ab"[i % 3 == 0]) for i in range(8)]
        # The victim: the last vote of a lane holding at least two (its neighbour stays).
        by_lane: dict[int, list[dict[str, Any]]] = {}
        for receipt in receipts:
            by_lane.setdefault(receipt["lane"], []).append(receipt)
        lane_votes = max(by_lane.values(), key=len)
        assert len(lane_votes) >= 2
        victim, neighbour = lane_votes[-1], lane_votes[-2]
        assert victim["entry_id"] == len(lane_votes)
        # No archiver has run yet: no checkpoint covers any vote. The insider deletes it.
        ledger = keys.lane_ledger(poll_id, victim["lane"])
        assert await admin.execute("XDEL", ledger, f"{victim['entry_id']}-0") == 1

        with running_role("archiver", env, tmp_path):
            # The archiver finds the lane's counters ahead of its queue: the alarm, while open.
            wait_for(lambda: operator.integrity(f"/v1/polls/{poll_id}"), "the alarm", timeout_s=15)
            [alarm] = operator.integrity(f"/v1/polls/{poll_id}") or []
            assert (alarm["kind"], alarm["lane"]) == ("ledger-gap", victim["lane"]), alarm
            operator.close(poll_id)
            text, certificate = operator.certificate(poll_id)
            # The ledger's count, without the deleted vote; the counters' beside it.
            expected = {o: sum(r["option"] == o for r in receipts) for o in OPTIONS}
            counters = dict(expected)
            expected[victim["option"]] -= 1
            assert dict(certificate.counts) == expected, text
            assert certificate.integrity is not None, text
            assert ("ledger-gap", str(victim["lane"])) in certificate.integrity.alarms, text
            assert dict(certificate.integrity.counters) == counters, text

            published = operator.published_keys()
            status, output = audit_receipt(victim, operator, published, tmp_path)
            assert status == 3, output
            assert "missing from the final log" in output, output
            # Its neighbour in the same lane checks out: the lane itself is sound.
            status, output = audit_receipt(neighbour, operator, published, tmp_path)
            assert status == 0, output

        # The receipt alone and the published keys prove the gateway admitted the lost vote;
        # the same check refuses a receipt whose vote was changed.
        assert admitted_by_gateway(victim, published)
        assert not admitted_by_gateway(
            {**victim, "option": "b" if victim["option"] == "a" else "a"}, published
        )
        assert not admitted_by_gateway({**victim, "pseudonym": neighbour["pseudonym"]}, published)
