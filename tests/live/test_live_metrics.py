"""/metrics reports the live side and the aggregator, read at scrape time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from live_clients import receive, ws_connect
from live_server import live_server

from conftest import RunningTally


def sample(text: str, name: str) -> float:
    """The value of an unlabelled sample in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_count_open_live_connections(tmp_path: Path) -> None:
    """tally_live_connections rises while a watcher is connected and falls when it leaves."""
    async with live_server(tmp_path) as server, httpx.AsyncClient() as http:
        poll_id = await server.open_poll()
        await server.publish(poll_id, 1)
        before = sample((await http.get(server.url + "/metrics")).text, "tally_live_connections")
        async with ws_connect(server.ws_url(poll_id)) as ws:
            await receive(ws)
            during = sample(
                (await http.get(server.url + "/metrics")).text, "tally_live_connections"
            )
        for _ in range(100):
            after = sample((await http.get(server.url + "/metrics")).text, "tally_live_connections")
            if after == before:
                break
            await asyncio.sleep(0.02)
        assert (before, during, after) == (0, 1, 0)


def test_metrics_report_the_running_aggregator(tally: RunningTally) -> None:
    """Under tally serve, the aggregator's ticks advance and its snapshots are counted."""
    poll_id = str(tally.open_poll()["id"])
    tally.client(tally.voter_token("metrics-voter")).post(
        f"/v1/polls/{poll_id}/votes", {"option": "red"}
    )
    deadline = time.monotonic() + 10  # the aggregator picks a new poll up within about a second
    text = httpx.get(tally.url + "/metrics").text
    while sample(text, "tally_aggregator_snapshots_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        text = httpx.get(tally.url + "/metrics").text
    assert sample(text, "tally_aggregator_ticks_total") > 0
    assert sample(text, "tally_aggregator_snapshots_total") >= 1
    assert sample(text, "tally_aggregator_leading_polls") >= 1
    assert sample(text, "tally_aggregator_store_errors_total") == 0
