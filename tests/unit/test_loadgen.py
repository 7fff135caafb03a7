"""The benchmark load generator, its baseline server and its process helper, on real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tally.bench.loadgen import LoadResult, Reply, build_request, run_requests
from tally.bench.processes import free_port, running, wait_for_port

HOST = "127.0.0.1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def baseline_port() -> Iterator[int]:
    """The baseline app in a subprocess, stopped after this module's tests."""
    port = free_port()
    argv = [sys.executable, "-m", "tally.bench.baseline", "--host", HOST, "--port", str(port)]
    with running(argv, host=HOST, port=port):
        yield port


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A raw asyncio server on 127.0.0.1 running `handler` per connection, fully stopped on exit."""
    handlers: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        except ConnectionError:
            pass  # the load generator aborts connections it gave up on
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers)


async def request_heads(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request head on the connection until the client closes it (requests have no body)."""
    while True:
        try:
            yield await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return


def path_of(head: bytes) -> bytes:
    return head.split(b" ", 2)[1]


def gets(port: int, paths: list[str]) -> list[bytes]:
    return [build_request("GET", path, host=f"{HOST}:{port}") for path in paths]


def bodies(result: LoadResult) -> list[bytes | None]:
    return [None if reply is None else reply.body for reply in result.replies]


# build_request


def test_build_request_writes_host_headers_length_and_keep_alive_in_order() -> None:
    """A request is its line, Host, the caller's headers, Content-Length, keep-alive, body."""
    request = build_request(
        "POST",
        "/polls/p1/votes",
        host="127.0.0.1:8000",
        headers={"Content-Type": "application/json", "Authorization": "Bearer t"},
        body=b'{"choice":"a"}',
    )
    assert request == (
        b"POST /polls/p1/votes HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8000\r\n"
        b"Content-Type: application/json\r\n"
        b"Authorization: Bearer t\r\n"
        b"Content-Length: 14\r\n"
        b"Connection: keep-alive\r\n"
        b"\r\n"
        b'{"choice":"a"}'
    )


def test_build_request_sends_a_zero_content_length_without_a_body() -> None:
    """A bodiless request still says Content-Length: 0."""
    assert build_request("GET", "/hello", host="h") == (
        b"GET /hello HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET\r\n", "/", {}),
        ("GET", "/a b", {}),
        ("GET", "/", {"X-A": "1\r\nX-Injected: 1"}),
        ("GET", "/", {"X:A": "1"}),
        ("GET", "/", {"content-length": "5"}),
    ],
)
def test_build_request_rejects_smuggled_lines_and_reserved_headers(
    method: str, path: str, headers: dict[str, str]
) -> None:
    """Line breaks, spaces in the target and headers the generator owns raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        build_request(method, path, host="h", headers=headers)


# run_requests against the baseline app


async def test_replies_arrive_in_request_order_with_their_statuses(baseline_port: int) -> None:
    """replies[i] answers requests[i], whichever of the connections carried it."""
    paths = ["/hello" if i % 3 else f"/missing/{i}" for i in range(60)]
    result = await run_requests(HOST, baseline_port, gets(baseline_port, paths), concurrency=4)
    assert result.transport_errors == {}
    assert result.reconnects == 0
    for path, reply in zip(paths, result.replies, strict=True):
        assert reply is not None
        if path == "/hello":
            assert (reply.status, reply.body) == (200, b'{"hello":"world"}')
            assert reply.content_type == b"application/json"
        else:
            assert reply.status == 404
    assert result.by_status() == {200: 40, 404: 20}


async def test_percentiles_of_a_real_run_are_ordered_and_within_the_run(baseline_port: int) -> None:
    """p50 <= p95 <= p99, all positive and no longer than the whole run."""
    result = await run_requests(
        HOST, baseline_port, gets(baseline_port, ["/hello"] * 200), concurrency=8
    )
    percentiles = result.latency_percentiles_ms()
    assert list(percentiles) == ["p50", "p95", "p99"]
    assert 0.0 < percentiles["p50"] <= percentiles["p95"] <= percentiles["p99"]
    assert percentiles["p99"] <= result.elapsed_s * 1000.0
    assert result.throughput() == pytest.approx(200 / result.elapsed_s)


# run_requests against hand-written servers


async def test_chunked_bodies_are_reassembled() -> None:
    """A chunked response split over several writes arrives as one body, headers intact."""

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for head in request_heads(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Multi: a\r\n"
                b"X-Multi: b\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            for piece in (b"path=", path_of(head)):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

    async with serving(chunked) as port:
        result = await run_requests(HOST, port, gets(port, ["/a", "/b", "/c"]), concurrency=2)
    assert bodies(result) == [b"path=/a", b"path=/b", b"path=/c"]
    reply = result.replies[0]
    assert reply is not None
    assert reply.content_type == b"text/plain"
    assert reply.headers[b"x-multi"] == b"a, b"


@pytest.mark.parametrize("announced", [True, False], ids=["connection-close", "silent-close"])
async def test_a_server_closing_after_each_reply_costs_reconnects_not_requests(
    announced: bool,
) -> None:
    """Every request still gets its reply; each extra connection is counted as a reconnect."""
    close_header = b"Connection: close\r\n" if announced else b""

    async def one_reply_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        body = path_of(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (close_header, len(body), body)
        )
        await writer.drain()

    paths = [f"/{i}" for i in range(12)]
    async with serving(one_reply_per_connection) as port:
        result = await run_requests(HOST, port, gets(port, paths), concurrency=3)
    assert bodies(result) == [path.encode() for path in paths]
    assert result.transport_errors == {}
    assert result.reconnects == 12 - 3


async def test_a_request_whose_connection_keeps_closing_fails_as_closed_after_one_retry() -> None:
    """A close before any response byte is retried once, then the request counts as 'closed'."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with serving(hang_up) as port:
        result = await run_requests(HOST, port, gets(port, ["/"] * 5), concurrency=2)
    assert result.replies == [None] * 5
    assert result.transport_errors == {"closed": 5}
    assert result.reconnects == 2 * 5 - 2


async def test_a_close_in_the_middle_of_a_body_fails_without_retry() -> None:
    """A response cut short by a close is a 'closed' failure; it is not sent again."""

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    async with serving(truncate) as port:
        result = await run_requests(HOST, port, gets(port, ["/"] * 4), concurrency=2)
    assert result.replies == [None] * 4
    assert result.transport_errors == {"closed": 4}
    assert result.reconnects == 4 - 2


async def test_a_body_delimited_by_the_close_is_a_complete_reply() -> None:
    """Without Content-Length or chunking, the body is whatever came before the close."""

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    async with serving(close_delimited) as port:
        result = await run_requests(HOST, port, gets(port, ["/"] * 2), concurrency=1)
    assert bodies(result) == [b"until the end"] * 2
    assert result.transport_errors == {}


async def test_a_request_without_reply_fails_as_timeout() -> None:
    """A request unanswered after timeout_s fails as 'timeout' and its connection is replaced."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    async with serving(silent) as port:
        result = await run_requests(HOST, port, gets(port, ["/"] * 4), concurrency=2, timeout_s=0.1)
    assert result.replies == [None] * 4
    assert result.transport_errors == {"timeout": 4}
    assert result.reconnects == 4 - 2


async def test_a_refused_connection_fails_each_request_by_exception_name() -> None:
    """With nothing listening, every request fails as ConnectionRefusedError."""
    port = free_port()
    result = await run_requests(HOST, port, gets(port, ["/"] * 3), concurrency=2)
    assert result.replies == [None] * 3
    assert result.transport_errors == {"ConnectionRefusedError": 3}


# LoadResult arithmetic


def test_percentiles_interpolate_between_ranks() -> None:
    """Latencies 1..100 ms give p0 = 1, p50 = 50.5, p100 = 100 and keys like 'p99.9'."""
    replies: list[Reply | None] = [Reply(200, b"", ms / 1000.0, {}) for ms in range(100, 0, -1)]
    result = LoadResult([*replies, None], {"closed": 1}, elapsed_s=2.0, reconnects=0)
    assert result.latency_percentiles_ms(0, 50, 100, 99.9) == pytest.approx(
        {"p0": 1.0, "p50": 50.5, "p100": 100.0, "p99.9": 99.901}
    )
    assert result.throughput() == 50.0


def test_percentiles_of_no_completed_reply_raise() -> None:
    """With nothing completed there is no latency to report, so the call raises ValueError."""
    result = LoadResult([None], {"timeout": 1}, elapsed_s=1.0, reconnects=0)
    with pytest.raises(ValueError, match="no completed replies"):
        result.latency_percentiles_ms()


def test_by_status_counts_completed_replies_only() -> None:
    """by_status ignores failed requests and lists statuses in ascending order."""
    replies: list[Reply | None] = [Reply(status, b"", 0.001, {}) for status in (503, 200, 200, 409)]
    result = LoadResult([*replies, None], {"closed": 1}, elapsed_s=1.0, reconnects=0)
    assert result.by_status() == {200: 2, 409: 1, 503: 1}
    assert list(result.by_status()) == [200, 409, 503]


# processes


def test_running_stops_the_server_and_what_it_started(tmp_path: Path) -> None:
    """Leaving the block terminates the server and its own child process: no orphan."""
    port = free_port()
    child_pid_file = tmp_path / "child.pid"
    server = textwrap.dedent(f"""
        import pathlib, socket, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        pathlib.Path({str(child_pid_file)!r}).write_text(str(child.pid))
        listener = socket.create_server(("127.0.0.1", {port}))
        time.sleep(60)
    """)
    with running([sys.executable, "-c", server], host=HOST, port=port) as process:
        child_pid = int(child_pid_file.read_text())
    assert process.returncode == -signal.SIGTERM
    assert gone_or_zombie(child_pid, within_s=5.0)


def gone_or_zombie(pid: int, *, within_s: float) -> bool:
    """Whether `pid` has exited (a zombie awaiting its new parent's reaping counts as exited)."""
    deadline = time.monotonic() + within_s
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_running_raises_when_the_server_exits_before_listening() -> None:
    """A server that dies during startup is reported at once, not after the timeout."""
    with (
        pytest.raises(RuntimeError, match="exited with 3"),
        running([sys.executable, "-c", "raise SystemExit(3)"], host=HOST, port=free_port()),
    ):
        pass


async def test_wait_for_port_times_out_on_a_closed_port() -> None:
    """Waiting on a port nobody listens on ends in TimeoutError after timeout_s."""
    with pytest.raises(TimeoutError, match="accepted no connection"):
        await wait_for_port(HOST, free_port(), timeout_s=0.1)


async def test_wait_for_port_returns_once_the_port_accepts() -> None:
    """wait_for_port returns as soon as a server listens."""

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with serving(idle) as port:
        await wait_for_port(HOST, port, timeout_s=2.0)
