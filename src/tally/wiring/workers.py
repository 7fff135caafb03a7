"""`tally gateway --workers N`: N gateway processes serving one host:port.

One Python process votes on one core. To use a machine's cores, `tally gateway` starts a parent
that runs no gateway itself: it starts N workers, each a fresh interpreter
(`python -m tally gateway`, no fork of a process that has an event loop) that builds the whole
gateway role as a lone `tally gateway` does: its own event loop, its own Valkey connections, its
own live hub. With N = 1 (TALLY_WORKERS=1 or `--workers 1`) there is no parent: the one process
is the gateway, exactly as before.

**One port, SO_REUSEPORT sockets held by the parent.** The parent binds N sockets to host:port,
each with SO_REUSEPORT, and hands socket i to worker i (an inherited descriptor; uvicorn serves
a pre-bound socket, and listens on it once the worker's gateway is built). The kernel spreads
new connections over the listening sockets by a hash of each connection, so every worker gets
its share; one shared socket (plain pre-fork) leaves that to whichever process wakes first,
which under light load is mostly the same one. Binding in the parent rather than in each
worker means:

- a port already taken fails once, at start, with one message, rather than N times (the parent
  first binds the port without SO_REUSEPORT, so it never quietly joins another process's group);
- a crashed worker's socket stays open (and listening) in the parent: connections the kernel
  queued on it wait for the restarted worker, which takes the same socket, instead of being
  reset;
- the parent closes its copies first when it stops, so a worker that stops accepting is not
  left with a socket that still queues connections.

**Supervision.** The parent runs each worker as a duty of the process supervisor
(wiring.supervisor), so it has the same crash policy and shutdown order as every Tally process:

- a worker that exits while nobody asked it to is logged and started again after a backoff
  (0.5 s, doubling to 5 s), 3 times a minute at most; the 4th exit within a minute stops
  everything, exit status 1;
- SIGINT or SIGTERM: 1. the parent closes its listening sockets, 2. it sends SIGTERM to every
  worker, which runs its own numbered shutdown (live connections, requests in flight, Valkey),
  and SIGKILLs any worker still there after that shutdown's whole budget, 3. it removes the
  runtime directory. Exit status 0 when every worker stopped cleanly. A second signal is passed
  on (the workers stop waiting for requests in flight);
- workers run in their own session, so a terminal's Ctrl-C reaches the parent alone, which then
  stops them in order; each has PR_SET_PDEATHSIG, so a SIGKILLed parent takes them down too
  (SIGTERM: they shut down in order on their own).

**TLS.** With `--tls-cert/--tls-key` (or TALLY_TLS_CERT/TALLY_TLS_KEY) the parent checks the
pair once at start, and each worker loads it and runs the TLS handshakes of the connections its
socket gets, so handshakes use every core as requests do; the SO_REUSEPORT sockets are plain
TCP sockets either way.

**Metrics.** A scrape of /metrics lands on any one worker, so each worker also serves its own
metrics text on a unix socket in a runtime directory the parent made (0700, so only this user
can connect). The worker that answers /metrics reads its siblings' texts (1 s at most each) and
sums every sample with the same name and labels (gateway.metrics_merge): counters, histogram
buckets, sums and counts, gauges. `tally_gateway_workers` says how many workers' samples the
answer holds; `tally_gateway_workers_unreachable` how many did not answer (a worker being
restarted, say), whose samples are missing from it. The summing runs only when /metrics is
asked (Metrics.combine); nothing is added to the vote path. /healthz and /readyz answer for the
worker the connection reached. A SIGKILLed parent leaves its (empty) runtime directory behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import uvloop

from tally.config import ConfigError, Settings
from tally.gateway.metrics import Metrics
from tally.gateway.metrics_merge import gauge, parse, render, summed
from tally.gateway.server import GatewayServer
from tally.wiring import commands
from tally.wiring.gateway import Gateway, scheme, tls_context
from tally.wiring.identity import dev_issuer, pseudonym_secret
from tally.wiring.store import check_cluster, external_url
from tally.wiring.supervisor import Duty, Restart, Step, Supervisor

log = logging.getLogger("tally.workers")

# How the parent tells a process that it is worker i: JSON in this variable (never a setting).
WORKER_ENV = "_TALLY_GATEWAY_WORKER"
PR_SET_PDEATHSIG = 1
RESTART = Restart(limit=3, window_s=60.0, backoff_s=0.5, max_backoff_s=5.0)
SIBLING_TIMEOUT_S = 1.0  # a sibling's metrics text, read over its unix socket
POLL_S = 0.05  # how often the parent looks at its workers (Popen has no awaitable exit)


def default_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0))


def gateway(settings: Settings) -> int:
    """`tally gateway`: one worker of a parent's, the lone gateway (N = 1), or the parent."""
    worker = GatewayWorker.from_environment()
    if worker is not None:
        worker.tag_logs()
        return uvloop.run(commands.gateway(settings, worker))
    count = default_workers() if settings.workers is None else settings.workers
    if count < 1:
        raise ConfigError(f"--workers={count} is invalid: must be at least 1")
    if count == 1:
        return uvloop.run(commands.gateway(settings))
    pool = WorkerPool(settings, count)
    pool.prepare()
    return asyncio.run(pool.run())


@dataclass(frozen=True, slots=True)
class GatewayWorker:
    """This process is worker `index` of `count`: it serves the inherited listening socket `fd`
    and its metrics on a unix socket in `runtime_dir`, where its siblings serve theirs."""

    index: int
    count: int
    fd: int
    runtime_dir: Path

    @classmethod
    def from_environment(cls) -> GatewayWorker | None:
        raw = os.environ.pop(WORKER_ENV, None)  # not passed on to anything this process starts
        if raw is None:
            return None
        spec = json.loads(raw)
        return cls(int(spec["index"]), int(spec["count"]), int(spec["fd"]), Path(spec["dir"]))

    def environment(self) -> dict[str, str]:
        spec = {"index": self.index, "count": self.count, "fd": self.fd}
        return {WORKER_ENV: json.dumps({**spec, "dir": str(self.runtime_dir)})}

    def tag_logs(self) -> None:
        """Say which worker wrote each log line (the workers share the parent's stderr)."""
        formatter = logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s: [worker {self.index}] %(message)s"
        )
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)

    def metrics_socket(self, index: int) -> Path:
        return self.runtime_dir / f"worker-{index}.sock"

    def http_duty(self, role: Gateway, server: GatewayServer) -> Duty:
        """Gateway.http_duty, on the socket the parent bound instead of one of its own."""
        listening = socket.socket(fileno=self.fd)

        async def serve() -> None:
            try:
                await server.serve(sockets=[listening])
            finally:
                if not server.started:  # uvicorn never listened, so it shuts nothing down
                    await role.live.shutdown(role.settings.shutdown_timeout_s)

        return Duty("http", serve)

    def metrics_duty(self, metrics: Metrics) -> Duty:
        """Serve this worker's own metrics text to its siblings: connect, read to the end."""
        path = self.metrics_socket(self.index)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(metrics.render().encode())
                await writer.drain()
            except ConnectionError:
                pass  # the sibling gave up (its timeout)
            finally:
                writer.close()

        async def serve() -> None:
            path.unlink(missing_ok=True)  # left by this slot's previous worker, if it crashed
            server = await asyncio.start_unix_server(answer, path=str(path))
            try:
                await server.serve_forever()
            finally:
                server.close()
                path.unlink(missing_ok=True)

        return Duty("metrics socket", serve)

    def metrics_step(self, timeout_s: float) -> Step:
        return Step(
            "stop serving metrics to the other workers", timeout_s, ends=("metrics socket",)
        )

    async def scrape(self, own: str) -> str:
        """This worker's metrics text `own` plus every sibling's that answers, summed (what
        its /metrics answers: Metrics.combine)."""
        siblings = [i for i in range(self.count) if i != self.index]
        texts = await asyncio.gather(*(self._read(i) for i in siblings))
        expositions = [parse(own)]
        unreachable = 0
        for text in texts:
            try:
                if text is None:
                    raise ValueError("no answer")
                expositions.append(parse(text))
            except ValueError:
                unreachable += 1
        answered = len(expositions)
        expositions.append(
            gauge(
                "tally_gateway_workers",
                "Gateway worker processes whose samples this scrape sums.",
                answered,
            )
        )
        expositions.append(
            gauge(
                "tally_gateway_workers_unreachable",
                "Gateway workers that did not answer this scrape (their samples are missing).",
                unreachable,
            )
        )
        return render(summed(expositions))

    async def _read(self, index: int) -> str | None:
        try:
            async with asyncio.timeout(SIBLING_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.metrics_socket(index)))
                try:
                    data = await reader.read()
                finally:
                    writer.close()
            return data.decode()
        except (OSError, TimeoutError, UnicodeDecodeError):
            return None


class WorkerExited(RuntimeError):
    """A worker process ended on its own (or not cleanly while stopping)."""


class WorkerPool:
    """The parent: binds the sockets, makes the runtime directory, runs the workers."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        # Worker i's budget: its numbered shutdown (HTTP, metrics socket, Valkey), with margins.
        t = settings.shutdown_timeout_s
        self.kill_after_s = 4 * t + 2 * commands.MARGIN_S
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._sockets: list[socket.socket] = []
        self._runtime_dir: Path | None = None
        self._stopping = asyncio.Event()  # set by the shutdown's SIGTERM
        self._kill_at: float | None = None

    def prepare(self) -> None:
        """Before any event loop: check what every worker would refuse to start without, bind
        the sockets, make the runtime directory (0700). Raises SystemExit with the reason."""
        self._check()
        self._sockets = self._bind()
        try:
            self._runtime_dir = Path(
                tempfile.mkdtemp(prefix="tally-gateway-", dir=os.environ.get("XDG_RUNTIME_DIR"))
            )
        except OSError as exc:
            self._close_sockets()
            raise SystemExit(f"tally gateway cannot make its runtime directory: {exc}") from None

    async def run(self) -> int:
        """Run the workers until a signal or a crash loop; the exit status."""
        names = tuple(f"worker {i}" for i in range(self.count))
        duties = [Duty(name, partial(self._keep, i), RESTART) for i, name in enumerate(names)]
        shutdown = [
            # 1. The port stops taking connections for workers that are gone or going.
            Step("close the parent's listening sockets", 1.0, then=self._close),
            # 2. Each worker runs its own numbered shutdown; SIGKILL for one still there after.
            Step(
                f"stop the workers (SIGTERM; SIGKILL after {self.kill_after_s:g} s)",
                self.kill_after_s + commands.MARGIN_S,
                ends=names,
                ask=self._terminate,
            ),
            # 3. Their metrics sockets go with the directory.
            Step("remove the runtime directory", 5.0, then=self._remove_runtime_dir),
        ]
        log.info(
            "Tally gateway: %d workers on %s://%s:%d (runtime dir %s)",
            self.count, scheme(self.settings), self.settings.host, self.settings.port,
            self._runtime_dir,
        )  # fmt: skip
        try:
            return await Supervisor(
                duties, shutdown, force=[self._terminate_again], report=sys.stderr
            ).run()
        finally:  # only after a failure of the supervisor itself is there anything left here
            self._close_sockets()
            for process in self._processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
            await self._remove_runtime_dir()

    def _check(self) -> None:
        """What would stop every worker at its start stops the parent instead, once."""
        external_url(self.settings, "gateway")
        pseudonym_secret(self.settings)
        tls_context(self.settings)  # an unusable certificate or key: one message, not N
        if self.settings.cluster:  # a bad cluster URL stops the start once, naming the setting
            asyncio.run(check_cluster(self.settings))
        if self.settings.jwks is None:
            dev_issuer(self.settings)  # made here once, not by N workers at the same moment

    def _bind(self) -> list[socket.socket]:
        host, port = self.settings.host, self.settings.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sockets: list[socket.socket] = []
        try:
            # Without SO_REUSEPORT first: a port another process listens on, with SO_REUSEPORT
            # or not, fails here instead of being shared with it.
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
            for _ in range(self.count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((host, port))  # its worker listens (uvicorn, with its backlog)
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise SystemExit(f"tally gateway cannot listen on {host}:{port}: {exc}") from None
        return sockets

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        listening = self._sockets[index]
        assert self._runtime_dir is not None
        worker = GatewayWorker(index, self.count, listening.fileno(), self._runtime_dir)
        settings = self.settings
        argv = [
            sys.executable, "-m", "tally", "gateway",
            "--host", settings.host, "--port", str(settings.port),
            "--data-dir", str(settings.data_dir),
        ]  # fmt: skip
        if settings.tls_cert is not None and settings.tls_key is not None:
            # Each worker loads the pair itself (a flag may have set it, not the environment);
            # the TLS handshakes then run in the workers, on every core, as the requests do.
            argv += ["--tls-cert", str(settings.tls_cert), "--tls-key", str(settings.tls_key)]
        libc = ctypes.CDLL(None, use_errno=True)
        return subprocess.Popen(  # noqa: S603  # this same program, fixed arguments
            argv,
            env={**os.environ, **worker.environment()},
            stdin=subprocess.DEVNULL,
            pass_fds=(listening.fileno(),),
            start_new_session=True,  # a terminal's Ctrl-C is the parent's to pass on, once
            preexec_fn=partial(_die_with_parent, libc, os.getpid()),
        )

    async def _keep(self, index: int) -> None:
        """Worker `index`'s duty: start it, wait for its exit; an exit nobody asked for raises
        (the supervisor restarts it). SIGKILL once the stop's deadline passes."""
        if self._stopping.is_set():
            return
        process = self._spawn(index)
        self._processes[index] = process
        log.info("worker %d started (pid %d)", index, process.pid)
        try:
            killed = False
            while process.poll() is None:
                if not killed and self._kill_at is not None and time.monotonic() >= self._kill_at:
                    log.error(
                        "worker %d (pid %d) still runs %g s after SIGTERM: SIGKILL",
                        index, process.pid, self.kill_after_s,
                    )  # fmt: skip
                    process.kill()
                    killed = True
                await asyncio.sleep(POLL_S)
        finally:
            if process.poll() is None:  # cancelled: no worker is ever left behind
                process.kill()
                process.wait()
        how = _exit_status(process.returncode)
        if not self._stopping.is_set():
            raise WorkerExited(f"worker {index} (pid {process.pid}) exited ({how})")
        if process.returncode != 0:
            raise WorkerExited(f"worker {index} (pid {process.pid}) did not stop cleanly ({how})")
        log.info("worker %d (pid %d) stopped", index, process.pid)

    def _terminate(self) -> None:
        self._stopping.set()
        self._kill_at = time.monotonic() + self.kill_after_s
        self._signal_all(signal.SIGTERM)

    def _terminate_again(self) -> None:
        """A second signal: the workers stop waiting for requests in flight."""
        if self._stopping.is_set():
            self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    async def _close(self) -> None:
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()

    async def _remove_runtime_dir(self) -> None:
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)


def _die_with_parent(libc: ctypes.CDLL, parent: int) -> None:
    # Runs in the child between fork and exec: SIGTERM it when the parent dies, even by SIGKILL
    # (and exit now if the parent already died before the request could be made).
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _exit_status(code: int) -> str:
    try:
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"
    except ValueError:  # no signal by that number
        return f"status {code}"
