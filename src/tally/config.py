"""Configuration: read once from TALLY_* environment variables into one frozen object.

Every invalid value fails at start with a message naming the variable. `tally config show` prints
`Settings.public_view()`, which masks secrets.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from tally.domain.defences import DEFAULT_DEFENCES, Defences, from_document, to_document
from tally.domain.errors import InvalidInput
from tally.store.cluster import CLUSTER_SCHEMES, ClusterSeeds

T = TypeVar("T")


class ConfigError(ValueError):
    """A TALLY_* variable holds a value Tally cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # Gateway processes `tally gateway` runs on that one port; None: one per core.
    workers: int | None = None
    data_dir: Path = Path("data")
    # None: start and supervise an embedded valkey-server in data_dir.
    valkey_url: str | None = None
    # rediss:// to Valkey (store.resp.TlsFiles): the CA that signs its certificate (None: the
    # system's), and a client certificate and key for a server that requires one.
    valkey_tls_ca: str | None = None
    valkey_tls_cert: str | None = None
    valkey_tls_key: str | None = None
    # HMAC key for voter pseudonyms; embedded mode keeps a generated one in data_dir.
    pseudonym_secret: bytes | None = None
    jwks: str | None = None
    jwt_issuer: str = "tally-dev"
    jwt_audience: str = "tally"
    # Replicas that must confirm each batch of votes (WAITAOF 1 N); None: 1 on a cluster, else 0.
    waitaof_replicas: int | None = None
    waitaof_timeout_ms: int = 1000
    max_body_bytes: int = 16384
    shutdown_timeout_s: float = 10.0
    log_level: str = "info"
    # Realtime: aggregator tick, and how the gateway treats live watchers.
    tick_ms: int = 250
    lease_ttl_ms: int = 1500
    slow_client_s: float = 10.0
    max_connections: int = 50_000
    max_connections_per_ip: int = 200
    ping_interval_s: float = 20.0
    sse_keepalive_s: float = 15.0
    # Ledger: how often each grown log gets a signed checkpoint, and the origin prefix that names
    # the logs (used when the ledger key is first made; the key's name is the prefix from then on).
    checkpoint_interval_ms: int = 5000
    # Whether `tally serve` also runs the archiver (off for a pool of gateways whose ledger is
    # written by `tally archiver` processes elsewhere).
    archiver: bool = True
    ledger_origin: str | None = None
    # The ops server (/healthz, /readyz, /metrics) of `tally aggregator` and `tally archiver`:
    # loopback by default, one port per role so both can run beside a gateway on :8000.
    ops_host: str = "127.0.0.1"
    aggregator_port: int = 8001
    archiver_port: int = 8002
    # Threads the archiver checks votes' admission signatures on; None: one per core.
    archiver_verify_threads: int | None = None
    # Checkpoint witnesses (archive/witnessing.py): each (URL, the witness's cosignature
    # verifier key); the archiver asks each to cosign every checkpoint before publishing it.
    witnesses: tuple[tuple[str, str], ...] = ()
    # Defences: the defaults for new polls (TALLY_DEFENCES, a JSON object shaped like a poll's
    # `defences`, over the built-in defaults of tally.domain.defences).
    defences: Defences = DEFAULT_DEFENCES
    # Proxies whose X-Forwarded-For is believed (CIDRs); from anyone else the socket peer counts.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # The HTTP edge of each gateway process (gateway/edge.py): request head size, deadlines for
    # a head and a body, open HTTP connections per address, and a token bucket per address
    # (requests per second and burst; a rate or burst of 0 turns the bucket off).
    max_request_head_bytes: int = 16384
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_http_connections_per_ip: int = 256
    edge_rate: float = 100.0
    edge_burst: int = 200
    # HTTPS and WSS on the gateway's port (gateway/tls.py): a PEM certificate chain and its key
    # (the key readable by its owner only); both or neither. HSTS max-age, sent only over TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    hsts_max_age_s: int = 63_072_000  # two years, Mozilla's recommendation
    # Where the audience reaches Tally (scheme://host[:port]): the origin of the join URL the
    # presenter screen shows and encodes as QR; None: the scheme and host each request came to.
    public_url: str | None = None
    # Bearer tokens may live at most this long (exp - iat); a token without iat is refused.
    token_max_lifetime_s: int = 86_400

    # Admission signatures (security/admission_keys.py): the gateway's Ed25519 key, from
    # TALLY_ADMISSION_KEY (a PRIVATE+KEY+... signer key string) or a key file made once (default
    # data/keys/admission.key); its name is <ledger origin>/admission/<admission_key_name>
    # (default: the host name). Signing off (TALLY_ADMISSION_SIGNING=off) is for measuring its
    # cost only: such votes are unsigned version 0x01 records the auditor rejects.
    admission_key: str | None = None
    admission_key_file: Path | None = None
    admission_key_name: str | None = None
    admission_signing: bool = True
    # Held votes' network evidence (security/evidence.py), stored only sealed: the key ring from
    # TALLY_EVIDENCE_KEYS (`<id>:<base64url 32-byte key>,...`) or, unset, key files made in
    # data/secrets/evidence/; deleted this long after the poll closes (default 30 days).
    evidence_keys: str | None = None
    evidence_retention_s: int = 2_592_000
    # Voter sign-in (security/oidc.py, gateway/signin.py): the organiser's OpenID Connect
    # provider (a discovery URL, or its issuer URL), this gateway's client at it (a secret only
    # for a confidential client), the issuers whose ID tokens are accepted (default: the one
    # discovery names), the callback URL registered there (default: /auth/callback on the
    # request's own origin), the ID token claim listing roles, and subjects made admin.
    oidc_discovery_url: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_allowed_issuers: tuple[str, ...] = ()
    oidc_redirect_url: str | None = None
    oidc_roles_claim: str = "roles"
    oidc_admin_subjects: tuple[str, ...] = ()
    # Voting sessions (security/sessions.py): how long one lives, and the HMAC keys
    # (`<id>:<base64url 32 bytes>,...`, the first signs; unset: data/keys/session.key).
    session_ttl_s: int = 43_200
    session_keys: str | None = None

    @property
    def embedded(self) -> bool:
        return self.valkey_url is None

    @property
    def cluster(self) -> bool:
        """TALLY_VALKEY_URL names a Valkey Cluster (`valkey+cluster://host:port,...`)."""
        return self.valkey_url is not None and "+cluster://" in self.valkey_url

    @property
    def replicas_to_confirm(self) -> int:
        """TALLY_WAITAOF_REPLICAS, or its default: 1 on a cluster (a vote survives losing its
        primary), 0 on one node."""
        if self.waitaof_replicas is not None:
            return self.waitaof_replicas
        return 1 if self.cluster else 0

    @property
    def ledger_dir(self) -> Path:
        """Where the archiver publishes the ledger and gateways read it."""
        return self.data_dir / "ledger"

    def public_view(self) -> dict[str, str]:
        """Every setting as text, secrets masked (passwords in URLs too)."""
        view: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "pseudonym_secret":
                text = "(generated in data dir)" if value is None else "********"
            elif f.name == "admission_key":
                text = "(key file)" if value is None else "********"
            elif f.name == "evidence_keys":
                text = "(key files in data dir)" if value is None else "********"
            elif f.name == "session_keys":
                text = "(key file in data dir)" if value is None else "********"
            elif f.name == "oidc_client_secret":
                text = "(none: public client)" if value is None else "********"
            elif f.name in ("oidc_allowed_issuers", "oidc_admin_subjects"):
                text = ",".join(value) or "(none)"
            elif f.name in ("workers", "archiver_verify_threads"):
                text = "(one per core)" if value is None else str(value)
            elif f.name == "ledger_origin":
                text = "(the ledger key's name)" if value is None else value
            elif f.name == "defences":
                text = json.dumps(to_document(value), separators=(",", ":"))
            elif f.name == "valkey_url":
                text = "(embedded)" if value is None else _mask_url(value)
            elif f.name in ("tls_cert", "tls_key"):
                text = "(off: plain HTTP)" if value is None else str(value)
            elif f.name == "witnesses":
                text = ",".join(f"{url} {key}" for url, key in value) or "(none)"
            elif f.name == "trusted_proxies":
                text = ",".join(str(network) for network in value) or "(none)"
            else:
                text = _as_written(value)
            view[f"TALLY_{f.name.upper()}"] = text
        return view


def _as_written(value: object) -> str:
    """A value as one would set it: on/off (not True/False), 10 (not 10.0), blank for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment, then explicit overrides (CLI flags) on top."""
    source = os.environ if env is None else env
    defaults = Settings()
    values: dict[str, object] = {
        "host": _get(source, "TALLY_HOST", _host, defaults.host),
        "port": _get(source, "TALLY_PORT", _port, defaults.port),
        "workers": _get(source, "TALLY_WORKERS", _positive, None),
        "data_dir": _get(source, "TALLY_DATA_DIR", _path, defaults.data_dir),
        "valkey_url": _get(source, "TALLY_VALKEY_URL", _valkey_url, None),
        "valkey_tls_ca": _get(source, "TALLY_VALKEY_TLS_CA", _nonempty, None),
        "valkey_tls_cert": _get(source, "TALLY_VALKEY_TLS_CERT", _nonempty, None),
        "valkey_tls_key": _get(source, "TALLY_VALKEY_TLS_KEY", _nonempty, None),
        "pseudonym_secret": _get(source, "TALLY_PSEUDONYM_SECRET", _secret, None),
        "jwks": _get(source, "TALLY_JWKS", _nonempty, None),
        "jwt_issuer": _get(source, "TALLY_JWT_ISSUER", _nonempty, defaults.jwt_issuer),
        "jwt_audience": _get(source, "TALLY_JWT_AUDIENCE", _nonempty, defaults.jwt_audience),
        "waitaof_replicas": _get(source, "TALLY_WAITAOF_REPLICAS", _non_negative, None),
        "waitaof_timeout_ms": _get(source, "TALLY_WAITAOF_TIMEOUT_MS", _positive, 1000),
        "max_body_bytes": _get(source, "TALLY_MAX_BODY_BYTES", _positive, defaults.max_body_bytes),
        "shutdown_timeout_s": _get(source, "TALLY_SHUTDOWN_TIMEOUT_S", _positive_float, 10.0),
        "log_level": _get(source, "TALLY_LOG_LEVEL", _log_level, defaults.log_level),
        "tick_ms": _get(source, "TALLY_TICK_MS", _positive, defaults.tick_ms),
        "lease_ttl_ms": _get(source, "TALLY_LEASE_TTL_MS", _positive, defaults.lease_ttl_ms),
        "slow_client_s": _get(
            source, "TALLY_SLOW_CLIENT_S", _positive_float, defaults.slow_client_s
        ),
        "max_connections": _get(
            source, "TALLY_MAX_CONNECTIONS", _positive, defaults.max_connections
        ),
        "max_connections_per_ip": _get(
            source, "TALLY_MAX_CONNECTIONS_PER_IP", _positive, defaults.max_connections_per_ip
        ),
        "ping_interval_s": _get(
            source, "TALLY_PING_INTERVAL_S", _positive_float, defaults.ping_interval_s
        ),
        "sse_keepalive_s": _get(
            source, "TALLY_SSE_KEEPALIVE_S", _positive_float, defaults.sse_keepalive_s
        ),
        "checkpoint_interval_ms": _get(
            source, "TALLY_CHECKPOINT_INTERVAL_MS", _positive, defaults.checkpoint_interval_ms
        ),
        "ledger_origin": _get(source, "TALLY_LEDGER_ORIGIN", _origin_prefix, None),
        "archiver": _get(source, "TALLY_ARCHIVER", _switch, defaults.archiver),
        "ops_host": _get(source, "TALLY_OPS_HOST", _host, defaults.ops_host),
        "aggregator_port": _get(source, "TALLY_AGGREGATOR_PORT", _port, defaults.aggregator_port),
        "archiver_port": _get(source, "TALLY_ARCHIVER_PORT", _port, defaults.archiver_port),
        "archiver_verify_threads": _get(source, "TALLY_ARCHIVER_VERIFY_THREADS", _positive, None),
        "witnesses": _get(source, "TALLY_WITNESSES", _witnesses, defaults.witnesses),
        "defences": _get(source, "TALLY_DEFENCES", _defences, defaults.defences),
        "trusted_proxies": _get(
            source, "TALLY_TRUSTED_PROXIES", _networks, defaults.trusted_proxies
        ),
        "max_request_head_bytes": _get(
            source, "TALLY_MAX_REQUEST_HEAD_BYTES", _head_bytes, defaults.max_request_head_bytes
        ),
        "head_timeout_s": _get(
            source, "TALLY_HEAD_TIMEOUT_S", _positive_float, defaults.head_timeout_s
        ),
        "body_timeout_s": _get(
            source, "TALLY_BODY_TIMEOUT_S", _positive_float, defaults.body_timeout_s
        ),
        "max_http_connections_per_ip": _get(
            source,
            "TALLY_MAX_HTTP_CONNECTIONS_PER_IP",
            _positive,
            defaults.max_http_connections_per_ip,
        ),
        "edge_rate": _get(source, "TALLY_EDGE_RATE", _rate, defaults.edge_rate),
        "edge_burst": _get(source, "TALLY_EDGE_BURST", _count_or_off, defaults.edge_burst),
        "tls_cert": _get(source, "TALLY_TLS_CERT", _path, None),
        "tls_key": _get(source, "TALLY_TLS_KEY", _path, None),
        "hsts_max_age_s": _get(
            source, "TALLY_HSTS_MAX_AGE_S", _non_negative, defaults.hsts_max_age_s
        ),
        "public_url": _get(source, "TALLY_PUBLIC_URL", _public_url, None),
        "token_max_lifetime_s": _get(
            source, "TALLY_TOKEN_MAX_LIFETIME_S", _positive, defaults.token_max_lifetime_s
        ),
        "admission_key": _get(source, "TALLY_ADMISSION_KEY", _nonempty, None),
        "admission_key_file": _get(source, "TALLY_ADMISSION_KEY_FILE", _path, None),
        "admission_key_name": _get(source, "TALLY_ADMISSION_KEY_NAME", _key_name, None),
        "admission_signing": _get(source, "TALLY_ADMISSION_SIGNING", _switch, True),
        "evidence_keys": _get(source, "TALLY_EVIDENCE_KEYS", _evidence_keys, None),
        "evidence_retention_s": _get(
            source, "TALLY_EVIDENCE_RETENTION_S", _positive, defaults.evidence_retention_s
        ),
        "oidc_discovery_url": _get(source, "TALLY_OIDC_DISCOVERY_URL", _http_url, None),
        "oidc_client_id": _get(source, "TALLY_OIDC_CLIENT_ID", _nonempty, None),
        "oidc_client_secret": _get(source, "TALLY_OIDC_CLIENT_SECRET", _nonempty, None),
        "oidc_allowed_issuers": _get(
            source, "TALLY_OIDC_ALLOWED_ISSUERS", _list, defaults.oidc_allowed_issuers
        ),
        "oidc_redirect_url": _get(source, "TALLY_OIDC_REDIRECT_URL", _http_url, None),
        "oidc_roles_claim": _get(source, "TALLY_OIDC_ROLES_CLAIM", _nonempty, "roles"),
        "oidc_admin_subjects": _get(
            source, "TALLY_OIDC_ADMIN_SUBJECTS", _list, defaults.oidc_admin_subjects
        ),
        "session_ttl_s": _get(source, "TALLY_SESSION_TTL_S", _positive, defaults.session_ttl_s),
        "session_keys": _get(source, "TALLY_SESSION_KEYS", _session_keys, None),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)  # type: ignore[arg-type]  # keys are exactly Settings' fields
    if settings.lease_ttl_ms < 2 * settings.tick_ms:
        raise ConfigError(
            f"TALLY_LEASE_TTL_MS={settings.lease_ttl_ms} must be at least twice TALLY_TICK_MS="
            f"{settings.tick_ms}, or a live aggregator could lose its lease between two ticks"
        )
    return settings


def generate_secret() -> bytes:
    return secrets.token_bytes(32)


# Never echo these back, not even in an error message.
SECRET_VARIABLES = frozenset(
    {
        "TALLY_PSEUDONYM_SECRET",
        "TALLY_VALKEY_URL",
        "TALLY_ADMISSION_KEY",
        "TALLY_EVIDENCE_KEYS",
        "TALLY_SESSION_KEYS",
        "TALLY_OIDC_CLIENT_SECRET",
    }
)


def _get(source: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(_refusal(name, raw, exc)) from None


def _refusal(name: str, raw: str, exc: Exception) -> str:
    """`TALLY_PORT must be an integer 1-65535, not 'http'`: what the setting expects, in words.
    Every parser here says `must ...`; a message from elsewhere (a key or URL parser) is quoted
    as the reason."""
    shown = "(value hidden)" if name in SECRET_VARIABLES else repr(raw)
    reason = _without(raw, exc)
    if reason.startswith("must "):
        return f"{name} {reason}, not {shown}"
    return f"{name} is not usable ({reason}): {shown}"


def _without(raw: str, exc: Exception) -> str:
    """The parser's message, minus any echo of the raw value (parsers like to quote it)."""
    return str(exc).replace(raw, "...")


def _integer(raw: str, lowest: int, highest: int | None, expected: str) -> int:
    """An integer in [lowest, highest]; anything else (16k, 80.5, http) fails with `expected`,
    never with int()'s "invalid literal for int() with base 10"."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if value < lowest or (highest is not None and value > highest):
        raise ValueError(expected)
    return value


def _port(raw: str) -> int:
    return _integer(raw, 1, 65535, "must be an integer 1-65535")


def _positive(raw: str) -> int:
    return _integer(raw, 1, None, "must be a whole number of at least 1")


def _non_negative(raw: str) -> int:
    return _integer(raw, 0, None, "must be a whole number of at least 0")


def _positive_float(raw: str) -> float:
    """A duration or another positive quantity: 10, 0.25, 1e3; not 0, nan or inf."""
    expected = "must be a positive number, e.g. 10 or 0.5"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if not 0 < value < math.inf:
        raise ValueError(expected)
    return value


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be blank")
    return raw


def _host(raw: str) -> str:
    """A host name or an IP address to bind or reach: no blanks, no scheme, no port."""
    if not raw.strip() or any(ch.isspace() for ch in raw) or "/" in raw:
        raise ValueError("must be a host name or an IP address, e.g. 127.0.0.1 or ::")
    return raw


def _path(raw: str) -> Path:
    if not raw.strip() or "\x00" in raw:
        raise ValueError("must be a file or directory path")
    return Path(raw)


def _secret(raw: str) -> bytes:
    expected = "must be at least 32 bytes, hex encoded (64 hex digits)"
    try:
        data = bytes.fromhex(raw)
    except ValueError:
        raise ValueError(expected) from None
    if len(data) < 32:
        raise ValueError(expected)
    return data


def _valkey_url(raw: str) -> str:
    if raw.partition("://")[0] in CLUSTER_SCHEMES:
        ClusterSeeds.from_url(raw)  # raises ValueError naming what is wrong
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "valkey", "valkeys"):
        raise ValueError(
            "scheme must be redis://, rediss://, valkey:// or valkeys:// (one node), or "
            "valkey+cluster://host:port,host:port... (a cluster)"
        )
    if not parts.hostname:
        raise ValueError("must name a host, e.g. redis://valkey.internal:6379")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("must name a port 1-65535 after the host, or none (6379)") from None
    return raw


def _defences(raw: str) -> Defences:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"must be a JSON object shaped like a poll's defences ({exc})") from None
    try:
        return from_document(document)
    except InvalidInput as exc:
        raise ValueError(f"must be a JSON object shaped like a poll's defences: {exc}") from None


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # strict: 10.0.0.1/8 is a typo for a host or a network, and guessing which trusts too much
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part))
        except ValueError:
            raise ValueError(
                "must be IP networks separated by commas, e.g. 10.0.0.0/8,::1 (host bits zero: "
                f"10.0.0.0/8, not 10.0.0.1/8); {part!r} is not one"
            ) from None
    return tuple(networks)


def _head_bytes(raw: str) -> int:
    # a request line and a bearer token alone take more than 1024
    return _integer(raw, 1024, None, "must be a whole number of bytes, at least 1024")


def _rate(raw: str) -> float:
    if raw.strip().lower() == "off":
        return 0.0
    expected = "must be a number of requests per second (0 or off: no limit)"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if not 0 <= value < math.inf:
        raise ValueError(expected)
    return value


def _count_or_off(raw: str) -> int:
    return 0 if raw.strip().lower() == "off" else _non_negative(raw)


def _key_name(raw: str) -> str:
    """A gateway name for its admission key: part of a signed-note key name."""
    if not raw.isprintable() or any(ch.isspace() or ch in "+/" for ch in raw):
        raise ValueError("must be printable, with no spaces, '+' or '/'")
    return raw


def _witnesses(raw: str) -> tuple[tuple[str, str], ...]:
    """``<url> <verifier key>`` entries, separated by commas or newlines."""
    from tally.ledger.cosignature import CosignatureVerifier

    entries: list[tuple[str, str]] = []
    for entry in raw.replace("\n", ",").split(","):
        if not entry.strip():
            continue
        parts = entry.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ValueError(
                "must be '<http(s) URL> <witness verifier key>' entries, separated by commas"
            )
        CosignatureVerifier.parse(parts[1])  # a NoteError (a ValueError) names the problem
        entries.append((parts[0], parts[1]))
    return tuple(entries)


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError("must be on or off (or true/false, yes/no, 1/0)")


def _origin_prefix(raw: str) -> str:
    if "://" in raw or raw.endswith("/") or any(c.isspace() or c == "+" for c in raw):
        raise ValueError(
            "must be a URL prefix without scheme or trailing slash, e.g. tally.example/ledger"
        )
    return raw


def _public_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(
            "must be the origin the audience uses, scheme://host[:port] without a path, "
            "e.g. https://vote.example.org"
        )
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("must be scheme://host[:port] only, without user, query or fragment")
    return f"{parts.scheme}://{parts.netloc}"


def _evidence_keys(raw: str) -> str:
    from tally.security.evidence import parse_env_keys

    parse_env_keys(raw)  # ValueError naming the entry at fault, never the key
    return raw


def _session_keys(raw: str) -> str:
    from tally.security.sessions import parse_env_keys

    parse_env_keys(raw)  # ValueError naming the entry at fault, never the key
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return level


def _mask_url(url: str) -> str:
    if url.partition("://")[0] in CLUSTER_SCHEMES:
        scheme, _, rest = url.partition("://")
        credentials, at, hosts = rest.rpartition("@")
        user, colon, _secret = credentials.partition(":")
        return f"{scheme}://{user}:********@{hosts}" if at and colon else url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@")
    return parts._replace(netloc=netloc).geturl()
