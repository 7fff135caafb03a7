"""A newcomer's first run: `tally serve --demo` on a port and data dir of their own, then every
command it printed, pasted as printed into a shell that has no TALLY_* variable, from another
directory; then Ctrl-C."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cli_process import VENV, clean_env, shell, tally, with_venv

from conftest import settled_results, store_env
from defences_off import DEFENCES_OFF
from tally.bench.processes import free_port
from tally.client import TallyClient
from tls_certs import make_certificates

STARTUP_S = 60.0
CHECKPOINT_ENV = {"TALLY_CHECKPOINT_INTERVAL_MS": "200"}  # audits need a checkpoint soon


@dataclass
class DemoServe:
    """A `tally serve --demo` process and what it printed."""

    process: subprocess.Popen[str]
    stdout: Path
    stderr: Path
    url: str

    def printed(self) -> str:
        return self.stdout.read_text()

    def interrupt(self, timeout_s: float = 30) -> str:
        """Ctrl-C (SIGINT to the process, as a terminal sends it), then its stderr once it ended."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=timeout_s)
        return self.stderr.read_text()


@contextlib.contextmanager
def serve_demo(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[DemoServe]:
    """`.venv/bin/tally serve --demo ARGS` run in `cwd` until its instructions are printed."""
    stdout, stderr = cwd / "serve.out", cwd / "serve.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(  # the test's own command
            [str(VENV / "bin" / "tally"), "serve", "--demo", *args],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while "API description" not in stdout.read_text():
            assert process.poll() is None, f"tally serve exited: {stderr.read_text()}"
            assert time.monotonic() < deadline, f"no instructions printed: {stderr.read_text()}"
            time.sleep(0.05)
        base = stdout.read_text().split("Tally is running at ", 1)[1].split()[0]
        yield DemoServe(process, stdout, stderr, base)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def printed_commands(text: str) -> list[str]:
    """The command lines of the instructions, in order: each `.venv/bin/tally ...` or `curl ...`
    line (a line offering two, `A     or     B`, gives both)."""
    commands: list[str] = []
    for line in text.splitlines():
        for part in line.strip().split("     or     "):
            if part.startswith((".venv/bin/tally ", "curl ")):
                commands.append(part)
    return commands


def until_ok(line: str, *, cwd: Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `line` until it succeeds: an audit needs the first checkpoint that covers the votes."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = shell(line, cwd=cwd)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def test_every_printed_command_works_as_printed_on_another_port(tmp_path: Path) -> None:
    """Served on a free port from a data dir named relatively, the demo's commands (tokens,
    votes by CLI and curl, results, audit of ledger and receipt) succeed pasted into a fresh
    shell in another directory: they carry --url and the data dir's absolute path."""
    server_dir, user_dir = tmp_path / "server", with_venv(tmp_path / "user")
    data_dir = server_dir / "my-data"
    port = free_port()
    with (
        store_env(data_dir) as store,
        serve_demo(
            with_venv(server_dir),
            "--port",
            str(port),
            "--data-dir",
            "my-data",
            env={**DEFENCES_OFF, **CHECKPOINT_ENV, **store, "TALLY_LOG_LEVEL": "warning"},
        ) as server,
    ):
        assert server.url == f"http://127.0.0.1:{port}"
        commands = printed_commands(server.printed())
        assert len(commands) == 7, server.printed()
        assert all(
            f"--url {server.url}" in c for c in commands if c.startswith(".venv/bin/tally v")
        )
        assert all(f"--data-dir {data_dir.resolve()}" in c for c in commands if " token " in c)
        for line in commands:
            done = until_ok(line, cwd=user_dir) if " audit " in line else shell(line, cwd=user_dir)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        receipt = json.loads((user_dir / "receipt.json").read_text())
        assert (
            receipt["receipt"]["poll_id"] == server.printed().split("Demo poll '")[1].split("'")[0]
        )
        results = settled_results(TallyClient(server.url), receipt["receipt"]["poll_id"], total=3)
        assert results["total"] == 3  # alice and carol by the CLI, demo-voter-1 by curl
        assert not (user_dir / "data").exists()  # no command fell back to ./data
        stopped = server.interrupt()
    assert server.process.returncode == 0, stopped
    assert "stopped" in stopped
    for part in ("HTTP", "embedded valkey-server" if not store else "Valkey connections"):
        assert part in stopped, stopped


def test_over_tls_every_printed_command_trusts_the_ca_and_the_join_code_leads_to_the_poll(
    tmp_path: Path,
) -> None:
    """Served over HTTPS with a private CA named by TALLY_CA_FILE in the server's shell, the
    printed client commands carry --ca-file (curl --cacert) and succeed pasted into a shell that
    has no TALLY_CA_FILE (in the server's directory, as after `make run`); the presenter screen
    and the join code printed beside them answer."""
    certs = make_certificates(tmp_path / "pki")
    server_dir = with_venv(tmp_path / "server")
    port = free_port()
    tls = {
        "TALLY_TLS_CERT": str(certs.cert),
        "TALLY_TLS_KEY": str(certs.key),
        "TALLY_CA_FILE": str(certs.ca),
    }
    env = {**DEFENCES_OFF, **CHECKPOINT_ENV, **tls, "TALLY_LOG_LEVEL": "warning"}
    with (
        store_env(server_dir / "data") as store,
        serve_demo(server_dir, "--port", str(port), env={**env, **store}) as server,
    ):
        assert server.url == f"https://127.0.0.1:{port}"
        printed = server.printed()
        commands = printed_commands(printed)
        assert len(commands) == 7, printed
        reaching = [c for c in commands if not c.startswith(".venv/bin/tally token")]
        assert all(f"--ca-file {certs.ca}" in c or f"--cacert {certs.ca}" in c for c in reaching)
        for line in commands:
            done = (
                until_ok(line, cwd=server_dir) if " audit " in line else shell(line, cwd=server_dir)
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        poll_id = printed.split("Demo poll '")[1].split("'")[0]
        assert f"{server.url}/present/{poll_id}" in printed
        join_url = printed.split("The audience joins with the code ")[1].split()[1]
        code = join_url.rsplit("/", 1)[1]
        assert join_url == f"{server.url}/j/{code}"
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=certs.client_context(), timeout=30
        )
        try:
            connection.request("GET", f"/j/{code}")
            answer = connection.getresponse()
            answer.read()
            assert (answer.status, answer.getheader("location")) == (303, f"/?poll={poll_id}")
            connection.request("GET", f"/present/{poll_id}")
            page = connection.getresponse()
            assert (page.status, b"<html" in page.read()) == (200, True)
        finally:
            connection.close()
        server.interrupt()


def test_the_cli_follows_tally_port_when_given_no_url(tmp_path: Path) -> None:
    """The shell that started the server with TALLY_PORT reaches it without --url."""
    port = free_port()
    data_dir = tmp_path / "data"
    env = {**DEFENCES_OFF, "TALLY_PORT": str(port), "TALLY_LOG_LEVEL": "warning"}
    with store_env(data_dir) as store, serve_demo(with_venv(tmp_path), env={**env, **store}):
        listed = tally("poll", "list", "--json", env={"TALLY_PORT": str(port)}, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert [p["title"] for p in json.loads(listed.stdout)["polls"]] == [
            "Tally demo: which song should win the final?"
        ]


def test_a_connection_error_says_what_it_tried_and_how_to_point_the_cli(tmp_path: Path) -> None:
    """Nothing on the port: the error names the URL, where it came from, --url and TALLY_URL."""
    port = free_port()
    failed = tally("results", "some-poll", env={"TALLY_PORT": str(port)}, cwd=tmp_path)
    assert failed.returncode == 1
    assert f"http://127.0.0.1:{port}" in failed.stderr
    assert "--url" in failed.stderr
    assert "TALLY_URL" in failed.stderr
    assert "came from TALLY_PORT" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_bad_setting_says_what_is_expected_not_a_python_message(tmp_path: Path) -> None:
    """TALLY_PORT=http: the server does not start and says what a port is."""
    failed = tally("serve", env={"TALLY_PORT": "http"}, cwd=tmp_path)
    assert failed.returncode == 2
    assert "TALLY_PORT must be an integer 1-65535, not 'http'" in failed.stderr
    assert "invalid literal" not in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "data").exists()
