"""HTTPS and WSS on the gateway's port: the server's TLS context, its key file's permissions,
and the HSTS header that goes with it.

**TLS 1.3 only** (Mozilla's "modern" profile). Every browser since 2018-2020 speaks it, and so
does the `tally` CLI (Python's ssl on OpenSSL >= 1.1.1); TLS 1.3 has no RSA key exchange, no
CBC, no renegotiation and no compression, and all five of its cipher suites are AEAD with
forward secrecy, so there is no cipher list to get wrong. A TLS 1.2 (or older) client gets a
handshake failure (`protocol_version` alert) and never reaches HTTP.

- ALPN offers `http/1.1` only: the gateway speaks HTTP/1.1 (and WebSocket over it), so an
  HTTP/2-capable client must not be told otherwise.
- No TLS compression (CRIME); no stateless session tickets, as Mozilla advises (their keys are
  the process's and never rotated): a resumed session is looked up in the process's own cache.
- The handshake is bounded by the edge's head deadline (TALLY_HEAD_TIMEOUT_S): uvicorn's
  protocol, and so the edge's limits, only sees a connection once its handshake is complete
  (server.py passes the deadline to the event loop's create_server).

**The key file must be readable by its owner only** (mode 0600 or 0400), as ssh insists for its
keys: a key that any group member or any local user can read is no longer this server's
identity, and refusing to start says so while the fix is one `chmod 600`. The check follows
symlinks (a certbot `live/` link to its `archive/` file).

HSTS (`Strict-Transport-Security: max-age=N; includeSubDomains`) is added to every HTTP
response when TLS is on (uvicorn's default headers, and the edge's own refusals), never on
plain HTTP, where a browser would ignore it anyway and a proxy in front may be the one doing TLS.
"""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from tally.config import ConfigError

ALPN = ("http/1.1",)
HSTS = "strict-transport-security"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The gateway's TLS context for the PEM chain `cert` and its private key `key`; raises
    ConfigError naming the file and the fix when either cannot be used."""
    check_key_file(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    context.set_alpn_protocols(list(ALPN))
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TALLY_TLS_CERT / TALLY_TLS_KEY: no such file {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"TALLY_TLS_CERT={str(cert)!r} with TALLY_TLS_KEY={str(key)!r} cannot be used: {exc} "
            "(the certificate chain and its private key, both PEM, and the key must match)"
        ) from None
    return context


def check_key_file(key: Path) -> None:
    """Refuse a private key that anyone but its owner may read (module docstring)."""
    try:
        mode = key.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"TALLY_TLS_KEY={str(key)!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"TALLY_TLS_KEY={str(key)!r} is not a regular file")
    if mode & 0o077:
        raise ConfigError(
            f"TALLY_TLS_KEY={str(key)!r} is readable by others than its owner (mode "
            f"{stat.S_IMODE(mode):04o}): run `chmod 600 {key}`; a private key that a group or "
            "every local user can read is not this server's alone"
        )


def hsts_value(max_age_s: int) -> str:
    """The Strict-Transport-Security value for `max_age_s` (0 tells browsers to forget it)."""
    return f"max-age={max_age_s}; includeSubDomains"
