"""`tally gateway --workers N` as real processes against a real Valkey: the workers share one
port and each takes votes, /metrics sums them over the workers, Ctrl-C stops every worker in
order (exit 0, no process left), a killed worker is restarted (a crash loop stops everything,
exit 1), and a SIGKILLed parent takes its workers down."""

from __future__ import annotations

import os
import re
import signal
import socket
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import is_running
from role_processes import STOP_S, Role, metric, role_env, running_role, wait_for
from tally.security.dev_issuer import DevIssuer
from tally.store.embedded import EmbeddedValkey

FAST = {
    "TALLY_PSEUDONYM_SECRET": "5e" * 32,
    "TALLY_SHUTDOWN_TIMEOUT_S": "3",
}
VOTES = 24  # on fresh connections: all on one worker of two has odds of 2**-23


@pytest.fixture
def deployment(valkey_server: EmbeddedValkey, tmp_path: Path) -> dict[str, Any]:
    data_dir = tmp_path / "data"
    return {
        "env": role_env(valkey_server, data_dir, **FAST),
        "data_dir": data_dir,
        "logs": tmp_path,
    }


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def workers_by_slot(gateway: Role) -> dict[int, int]:
    """Each worker slot's latest pid, as the parent logged it."""
    started = re.findall(r"worker (\d+) started \(pid (\d+)\)", gateway.log())
    return {int(slot): int(pid) for slot, pid in started}


def replaced(gateway: Role, pid: int) -> bool:
    """Whether worker 0 runs in another process than `pid` now."""
    return workers_by_slot(gateway)[0] != pid


def runtime_dir(gateway: Role) -> Path:
    found = re.search(r"\(runtime dir (\S+)\)", gateway.log())
    assert found is not None, gateway.log()
    return Path(found.group(1))


def own_metrics(gateway: Role, slot: int) -> str:
    """One worker's own metrics text, read where its siblings read it."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(runtime_dir(gateway) / f"worker-{slot}.sock"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def votes_in(text: str) -> int:
    return sum(
        int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tally_votes_total{")
    )


def all_workers_answer(gateway: Role, count: int) -> bool:
    try:
        text = gateway.get("/metrics").text
    except httpx.TransportError:
        return False
    return (
        metric(text, "tally_gateway_workers") == count
        and metric(text, "tally_gateway_workers_unreachable") == 0
    )


def open_poll(gateway: Role, issuer: DevIssuer) -> str:
    admin = {"Authorization": f"Bearer {issuer.mint('admin', roles=['admin'])}"}
    created = httpx.post(
        f"{gateway.url}/v1/polls", json={"title": "w", "options": ["Red", "Blue"]}, headers=admin
    )
    poll_id: str = created.json()["id"]
    assert httpx.post(f"{gateway.url}/v1/polls/{poll_id}/open", headers=admin).is_success
    return poll_id


def vote(gateway: Role, poll_id: str, token: str) -> httpx.Response:
    """One vote on a connection of its own (so the kernel picks a worker for it)."""
    return httpx.post(
        f"{gateway.url}/v1/polls/{poll_id}/votes",
        json={"option": "red"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )


def test_two_workers_share_the_port_and_metrics_sum_them_and_ctrl_c_stops_all(
    deployment: dict[str, Any],
) -> None:
    """Both workers take votes on the one port; /metrics on it counts every vote once; SIGINT
    to the parent stops each worker through its numbered shutdown, exit 0, nothing left."""
    env, logs = deployment["env"], deployment["logs"]
    with running_role("gateway", env, logs, args=["--workers", "2"]) as gateway:
        wait_for(lambda: all_workers_answer(gateway, 2), "both workers answering")
        pids = children(gateway.process.pid)
        assert len(pids) == 2
        assert pids == set(workers_by_slot(gateway).values())
        directory = runtime_dir(gateway)
        assert directory.stat().st_mode & 0o777 == 0o700

        issuer = DevIssuer.load_or_create(deployment["data_dir"] / "keys")
        poll_id = open_poll(gateway, issuer)
        for n in range(VOTES):
            reply = vote(gateway, poll_id, issuer.mint(f"voter-{n}"))
            assert reply.status_code == 201, reply.text
        assert vote(gateway, poll_id, issuer.mint("voter-0")).status_code == 409

        each = [votes_in(own_metrics(gateway, slot)) for slot in (0, 1)]
        assert sum(each) == VOTES + 1, each
        assert min(each) > 0, each  # both took votes
        text = gateway.get("/metrics").text
        assert votes_in(text) == VOTES + 1
        assert 'tally_votes_total{outcome="accepted"} ' + str(VOTES) in text
        assert metric(text, "tally_vote_duration_seconds_count") == VOTES + 1
        for _ in range(4):
            ready = gateway.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

        gateway.process.send_signal(signal.SIGINT)
        assert gateway.process.wait(timeout=STOP_S) == 0, gateway.log()
        log = gateway.log()
        for pid in pids:
            assert not is_running(pid)
        for slot in (0, 1):
            assert f"[worker {slot}] shutdown 3/3: close the Valkey connections" in log
            assert re.search(rf"worker {slot} \(pid \d+\) stopped", log), log
        assert "shutdown 3/3: remove the runtime directory" in log
        assert not directory.exists()
        assert "Traceback" not in log, log


def test_a_killed_worker_is_restarted_and_a_crash_loop_stops_everything(
    deployment: dict[str, Any],
) -> None:
    """A SIGKILLed worker is started again on the same port and the gateway serves on; the 4th
    death of one worker within a minute stops the other too, exit 1, no process left."""
    env, logs = deployment["env"], deployment["logs"]
    with running_role("gateway", env, logs, args=["--workers", "2"]) as gateway:
        wait_for(lambda: all_workers_answer(gateway, 2), "both workers answering")
        first = workers_by_slot(gateway)
        os.kill(first[0], signal.SIGKILL)
        wait_for(partial(replaced, gateway, first[0]), "worker 0 started again")
        wait_for(lambda: all_workers_answer(gateway, 2), "both workers answering again")
        assert workers_by_slot(gateway)[1] == first[1]
        assert f"worker 0 (pid {first[0]}) exited (killed by SIGKILL)" in gateway.log()
        assert "WARNING tally.supervisor: worker 0 restarted" in gateway.log()
        issuer = DevIssuer.load_or_create(deployment["data_dir"] / "keys")
        poll_id = open_poll(gateway, issuer)
        for n in range(8):
            assert vote(gateway, poll_id, issuer.mint(f"after-{n}")).status_code == 201

        for kill in range(3):  # deaths 2, 3 and 4 of worker 0
            pid = workers_by_slot(gateway)[0]
            os.kill(pid, signal.SIGKILL)
            if kill < 2:
                wait_for(partial(replaced, gateway, pid), "worker 0 started again")
        assert gateway.process.wait(timeout=STOP_S) == 1, gateway.log()
        log = gateway.log()
        assert "worker 0 crashed 4 times within 60 s: stopping the process (exit status 1)" in log
        assert "[worker 1] shutdown 3/3: close the Valkey connections" in log
        for pid in (*first.values(), *workers_by_slot(gateway).values()):
            assert not is_running(pid)


def test_a_sigkilled_parent_takes_its_workers_down(deployment: dict[str, Any]) -> None:
    """No parent, no workers: each has PR_SET_PDEATHSIG, and shuts down in order on it."""
    env, logs = deployment["env"], deployment["logs"]
    with running_role("gateway", env, logs, args=["--workers", "2"]) as gateway:
        wait_for(lambda: all_workers_answer(gateway, 2), "both workers answering")
        pids = children(gateway.process.pid)
        assert len(pids) == 2
        gateway.kill()
        wait_for(lambda: not any(is_running(pid) for pid in pids), "the workers gone", STOP_S)
        assert "[worker 1] shutdown 3/3: close the Valkey connections" in gateway.log()


def test_one_worker_is_the_gateway_itself(deployment: dict[str, Any]) -> None:
    """`--workers 1`: one process, no parent, no summing: the gateway as it always was."""
    env, logs = deployment["env"], deployment["logs"]
    with running_role("gateway", env, logs, args=["--workers", "1"]) as gateway:
        assert children(gateway.process.pid) == set()
        text = gateway.get("/metrics").text
        assert "tally_gateway_workers" not in text
        assert "tally_live_connections 0" in text
        assert gateway.terminate() == 0, gateway.log()
        assert "Traceback" not in gateway.log()
