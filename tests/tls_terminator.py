"""A TLS terminator in front of a plain valkey-server, for the `rediss://` tests: the bundled
valkey-server is built without TLS ("Missing implement of connection type tls"), so this stands
where a TLS-enabled Valkey (or stunnel) would: it requires a client certificate signed by the
test CA (tests/tls_certs.py), then pipes bytes both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator

from tls_certs import Pki


class TlsTerminator:
    """Listens on 127.0.0.1:<port> with TLS (client certificate required), forwards each
    connection to the plain Valkey at `target`. Runs its own event loop in a thread, so it
    serves blocking and asynchronous clients and subprocesses alike."""

    def __init__(self, pki: Pki, target: tuple[str, int]) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED  # as `tls-auth-clients yes`
        self._context = context
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.handshake_failures = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._pipe, "127.0.0.1", 0, ssl=self._context, ssl_handshake_timeout=5.0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop.set_exception_handler(self._on_error)

    def _on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        # A refused handshake (no or wrong client certificate) is an expected outcome here.
        if isinstance(context.get("exception"), ssl.SSLError | ConnectionError | OSError):
            self.handshake_failures += 1
            return
        loop.default_exception_handler(context)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._open.discard(writer)

    def start(self) -> TlsTerminator:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._open):
                writer.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextlib.contextmanager
def terminating(pki: Pki, target: tuple[str, int]) -> Iterator[TlsTerminator]:
    terminator = TlsTerminator(pki, target).start()
    try:
        yield terminator
    finally:
        terminator.stop()
