"""Bearer tokens: what the verifier accepts, what it refuses (and with which code), and the dev IdP.

PyJWT is the independent party: it mints tokens we must accept and decodes tokens we mint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from tally.security import dev_issuer, tokens
from tally.security.dev_issuer import DevIssuer
from tally.security.tokens import KeySet, Principal, TokenError, TokenVerifier

ISSUER = "tally-dev"
AUDIENCE = "tally"
NOW = 1_900_000_000.0  # a fixed moment: tokens are minted at it and the verifier's clock reads it
KIDS = {"EdDSA": "dev-ed25519", "ES256": "dev-es256", "RS256": "dev-rs256"}
ALGS = sorted(KIDS)
SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class ManualClock:
    """Time that moves only when a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("dev") / "keys")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def verifier(dev: DevIssuer, clock: ManualClock) -> TokenVerifier:
    return TokenVerifier(dev.key_set(), issuer=ISSUER, audience=AUDIENCE, clock=clock)


def private_key(dev: DevIssuer, kid: str) -> SigningKey:
    pem = (dev.jwks_path.parent / f"{kid}.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    )
    return key


def claims(**changes: object) -> dict[str, object]:
    """Valid claims at NOW, with `changes` applied; a change to None removes the claim."""
    body: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "voter-1",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not None}


def pyjwt_token(
    dev: DevIssuer, body: dict[str, object], *, alg: str = "EdDSA", kid: str | None = None
) -> str:
    """A token PyJWT signs with the dev key for `alg`, naming `kid` (default: that key's kid)."""
    headers = {"kid": kid if kid is not None else KIDS[alg]}
    return jwt.api_jws.encode(
        orjson.dumps(body), private_key(dev, KIDS[alg]), algorithm=alg, headers=headers
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(header: dict[str, object], body: dict[str, object], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(body))}.{b64(signature)}"


def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    return refused.value.code


# --- accepted tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_minted_token_verifies_to_its_principal(
    dev: DevIssuer, verifier: TokenVerifier, alg: str
) -> None:
    """A token minted with each algorithm verifies to the subject, roles and expiry it carries."""
    token = dev.mint("voter-7", roles=("voter", "admin"), ttl_s=600, alg=alg, now=NOW)
    principal = verifier.verify(token)
    assert principal == Principal(
        ISSUER, "voter-7", frozenset({"voter", "admin"}), int(NOW) + 600, int(NOW)
    )
    assert principal.is_admin


@pytest.mark.parametrize("alg", ALGS)
def test_token_minted_by_pyjwt_verifies(dev: DevIssuer, verifier: TokenVerifier, alg: str) -> None:
    """A token PyJWT signs with a dev key verifies with ours."""
    token = pyjwt_token(dev, claims(sub="voter-3", roles=["voter"]), alg=alg)
    assert verifier.verify(token).subject == "voter-3"


@pytest.mark.parametrize("alg", ALGS)
def test_our_token_decodes_with_pyjwt_and_our_jwks(dev: DevIssuer, alg: str) -> None:
    """PyJWT decodes a token we mint, using the public key it reads from our jwks.json."""
    jwks = jwt.PyJWKSet.from_json(dev.jwks_path.read_text())
    token = dev.mint("voter-9", roles=("voter", "admin"), alg=alg)
    decoded = jwt.decode(
        token, jwks[KIDS[alg]].key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER
    )
    assert (decoded["sub"], decoded["roles"]) == ("voter-9", ["admin", "voter"])
    assert jwt.get_unverified_header(token)["kid"] == KIDS[alg]


def test_roles_default_to_voter(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token without a roles claim speaks for a plain voter."""
    principal = verifier.verify(pyjwt_token(dev, claims()))
    assert principal.roles == frozenset({"voter"})
    assert not principal.is_admin


def test_audience_list_containing_ours_is_accepted(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """An aud list that includes our audience is accepted."""
    assert verifier.verify(pyjwt_token(dev, claims(aud=["billing", AUDIENCE])))


def test_expiry_and_not_before_allow_the_leeway(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """Clock skew within the 30 s leeway neither expires a token nor makes it premature."""
    body = claims(exp=int(NOW) - 20, nbf=int(NOW) + 20, iat=int(NOW) + 20)
    assert verifier.verify(pyjwt_token(dev, body))


def test_single_key_set_accepts_a_token_without_kid(dev: DevIssuer) -> None:
    """With exactly one key configured, a token without kid is checked against that key."""
    public = private_key(dev, "dev-ed25519").public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keys = KeySet.from_jwks({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": "k"}]})
    token = jwt.encode(claims(), private_key(dev, "dev-ed25519"), algorithm="EdDSA")
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, clock=ManualClock(NOW))
    assert verifier.verify(token).subject == "voter-1"


# --- refused tokens: each code from a realistic bad token ------------------------------------


ED25519_HEADER = b64(orjson.dumps({"alg": "EdDSA", "kid": "dev-ed25519"}))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "Bearer abc.def.ghi",
        "abc.def",
        "a.b.c.d",
        "..",
        "é30.e30.e30",
        "W10.e30.e30",  # header is a JSON list
        "bm90IGpzb24.e30.e30",  # header is not JSON
        f"{ED25519_HEADER}.e30.A",  # a signature of impossible length
    ],
)
def test_garbage_is_malformed(verifier: TokenVerifier, token: str) -> None:
    """Strings that are not compact JWS with base64url JSON segments are refused as malformed."""
    assert refusal(verifier, token) == "token-malformed"


def test_signed_payload_that_is_not_json_is_malformed(
    dev: DevIssuer, verifier: TokenVerifier
) -> None:
    """A correctly signed payload that is not a JSON object is malformed."""
    key = private_key(dev, "dev-ed25519")
    for payload in (b"not json", b"[1, 2]"):
        token = jwt.api_jws.encode(payload, key, algorithm="EdDSA", headers={"kid": "dev-ed25519"})
        assert refusal(verifier, token) == "token-malformed"


def test_wrong_segment_count_is_malformed(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A valid token with a segment dropped or added is malformed."""
    token = dev.mint("voter-1", now=NOW)
    header, payload, _ = token.split(".")
    assert refusal(verifier, f"{header}.{payload}") == "token-malformed"
    assert refusal(verifier, f"{token}.{payload}") == "token-malformed"


def test_overlong_token_is_refused_before_parsing(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A correctly signed token longer than 8 KiB is refused as malformed."""
    token = dev.mint("voter-1", roles=[f"role-{i}" for i in range(1000)], now=NOW)
    assert len(token) > tokens.MAX_TOKEN_CHARS
    assert refusal(verifier, token) == "token-malformed"


def test_critical_header_extension_is_malformed(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A header marking extensions as critical is refused: we implement none."""
    key = private_key(dev, "dev-ed25519")
    headers = {"kid": "dev-ed25519", "crit": ["b64"], "b64": False}
    token = jwt.api_jws.encode(orjson.dumps(claims()), key, algorithm="EdDSA", headers=headers)
    assert refusal(verifier, token) == "token-malformed"


def test_payload_edited_to_admin_fails_signature(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A voter who rewrites the payload to claim the admin role is refused on the signature."""
    header, _, signature = dev.mint("voter-1", now=NOW).split(".")
    forged = b64(orjson.dumps(claims(roles=["admin"])))
    assert refusal(verifier, f"{header}.{forged}.{signature}") == "token-signature"


@pytest.mark.parametrize("alg", ALGS)
def test_tampered_signature_fails(dev: DevIssuer, verifier: TokenVerifier, alg: str) -> None:
    """Changing one character in the middle of the signature is refused on the signature."""
    header, payload, signature = dev.mint("voter-1", alg=alg, now=NOW).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tampered = signature[:middle] + flipped + signature[middle + 1 :]
    assert refusal(verifier, f"{header}.{payload}.{tampered}") == "token-signature"


def test_es256_der_signature_fails(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """An ES256 token carrying a DER signature instead of raw r||s is refused on the signature."""
    key = private_key(dev, "dev-es256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    header = b64(orjson.dumps({"alg": "ES256", "kid": "dev-es256"}))
    signing_input = f"{header}.{b64(orjson.dumps(claims()))}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert refusal(verifier, f"{signing_input}.{b64(der)}") == "token-signature"


def test_key_from_another_issuer_under_our_kid_fails(
    tmp_path: Path, verifier: TokenVerifier
) -> None:
    """A token signed by someone else's key but naming our kid is refused on the signature."""
    stranger = DevIssuer.load_or_create(tmp_path / "stranger", issuer=ISSUER, audience=AUDIENCE)
    assert refusal(verifier, stranger.mint("voter-1", now=NOW)) == "token-signature"


def test_expired_token_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token whose exp passed more than the leeway ago is expired."""
    token = dev.mint("voter-1", ttl_s=600, now=NOW - 3600)
    assert refusal(verifier, token) == "token-expired"


def test_not_before_in_the_future_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token with nbf beyond the leeway in the future is not yet valid."""
    token = pyjwt_token(dev, claims(nbf=int(NOW) + 300))
    assert refusal(verifier, token) == "token-not-yet-valid"


def test_issued_in_the_future_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token whose iat lies beyond the leeway in the future is not yet valid."""
    assert refusal(verifier, dev.mint("voter-1", now=NOW + 300)) == "token-not-yet-valid"


def test_wrong_issuer_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token from another issuer name is refused, even when signed with a trusted key."""
    other = DevIssuer.load_or_create(dev.jwks_path.parent, issuer="other-idp")
    assert refusal(verifier, other.mint("voter-1", now=NOW)) == "token-issuer"


def test_wrong_audience_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A token minted for another audience is refused."""
    other = DevIssuer.load_or_create(dev.jwks_path.parent, audience="billing")
    assert refusal(verifier, other.mint("voter-1", now=NOW)) == "token-audience"


def test_audience_list_without_ours_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """An aud list that does not include our audience is refused."""
    token = pyjwt_token(dev, claims(aud=["billing", "reports"]))
    assert refusal(verifier, token) == "token-audience"


def test_unknown_kid_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """A kid that names no configured key (say, one rotated away) is refused."""
    token = pyjwt_token(dev, claims(), kid="dev-ed25519-2019")
    assert refusal(verifier, token) == "token-unknown-key"


def test_missing_kid_with_several_keys_is_refused(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """Without a kid the verifier will not guess among several keys."""
    token = jwt.encode(claims(), private_key(dev, "dev-ed25519"), algorithm="EdDSA")
    assert refusal(verifier, token) == "token-unknown-key"


@pytest.mark.parametrize("alg", ["none", "None", None, ["EdDSA"]])
def test_alg_none_is_refused(verifier: TokenVerifier, alg: object) -> None:
    """An unsigned token (alg none, or no usable alg at all) is refused, whatever key it names."""
    token = unsigned({"alg": alg, "kid": "dev-ed25519"}, claims(roles=["admin"]))
    assert refusal(verifier, token) == "token-algorithm"


def test_hs256_keyed_with_the_rsa_public_key_is_refused(
    dev: DevIssuer, verifier: TokenVerifier
) -> None:
    """The classic confusion attack, HMAC keyed with the published RSA public key, is refused."""
    public_pem = (
        private_key(dev, "dev-rs256")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(orjson.dumps({"alg": "HS256", "kid": "dev-rs256", "typ": "JWT"}))
    signing_input = f"{header}.{b64(orjson.dumps(claims(roles=['admin'])))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert refusal(verifier, f"{signing_input}.{b64(mac)}") == "token-algorithm"


@pytest.mark.parametrize(("alg", "kid"), [("EdDSA", "dev-rs256"), ("RS256", "dev-es256")])
def test_header_alg_must_match_the_keys_type(
    dev: DevIssuer, verifier: TokenVerifier, alg: str, kid: str
) -> None:
    """A header whose alg is not the named key's algorithm is refused (no algorithm confusion)."""
    assert refusal(verifier, pyjwt_token(dev, claims(), alg=alg, kid=kid)) == "token-algorithm"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": None},
        {"exp": True},
        {"exp": "1900000600"},
        {"nbf": False},
        {"iat": [1]},
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"sub": "v" * 257},
        {"roles": "admin"},
        {"roles": ["voter", 1]},
    ],
    ids=repr,
)
def test_bad_claims_are_refused(
    dev: DevIssuer, verifier: TokenVerifier, changes: dict[str, object]
) -> None:
    """A correctly signed token with a missing or mistyped claim is refused as token-claims."""
    assert refusal(verifier, pyjwt_token(dev, claims(**changes))) == "token-claims"


# --- the cache ------------------------------------------------------------------------------


def test_repeated_token_is_answered_from_the_cache(dev: DevIssuer, verifier: TokenVerifier) -> None:
    """Verifying the same token twice returns the very same Principal."""
    token = dev.mint("voter-1", now=NOW)
    assert verifier.verify(token) is verifier.verify(token)


def test_cached_token_still_expires(
    dev: DevIssuer, verifier: TokenVerifier, clock: ManualClock
) -> None:
    """A cached token is refused as expired once the clock passes exp plus the leeway."""
    token = dev.mint("voter-1", ttl_s=600, now=NOW)
    verifier.verify(token)
    clock.now = NOW + 600 + 29
    verifier.verify(token)
    clock.now = NOW + 600 + 30
    assert refusal(verifier, token) == "token-expired"


def test_refusals_are_not_cached(
    dev: DevIssuer, verifier: TokenVerifier, clock: ManualClock
) -> None:
    """A token refused as premature is accepted once its nbf arrives."""
    token = pyjwt_token(dev, claims(nbf=int(NOW) + 300, exp=int(NOW) + 900))
    assert refusal(verifier, token) == "token-not-yet-valid"
    clock.now = NOW + 300
    assert verifier.verify(token).subject == "voter-1"


def test_cache_evicts_the_oldest_entry(dev: DevIssuer, clock: ManualClock) -> None:
    """Past cache_size the oldest token is evicted and verified afresh; newer ones stay cached."""
    verifier = TokenVerifier(
        dev.key_set(), issuer=ISSUER, audience=AUDIENCE, cache_size=2, clock=clock
    )
    first, second, third = (dev.mint(f"voter-{i}", now=NOW) for i in range(3))
    kept = verifier.verify(first)
    assert verifier.verify(first) is kept
    verifier.verify(second)
    newest = verifier.verify(third)
    assert verifier.verify(first) is not kept
    assert verifier.verify(first) == kept
    assert verifier.verify(third) is newest


# --- the dev issuer ---------------------------------------------------------------------------


def test_dev_issuer_reuses_its_keys(tmp_path: Path) -> None:
    """A second load_or_create on the same directory verifies tokens minted by the first."""
    first = DevIssuer.load_or_create(tmp_path / "keys")
    published = first.jwks_path.read_bytes()
    second = DevIssuer.load_or_create(tmp_path / "keys")
    verifier = TokenVerifier(second.key_set(), issuer=ISSUER, audience=AUDIENCE)
    for alg in ALGS:
        assert verifier.verify(first.mint("voter-1", alg=alg)).subject == "voter-1"
    assert second.jwks_path.read_bytes() == published
    assert second.key_set().kids() == frozenset(KIDS.values())


def test_dev_issuer_keeps_private_keys_private(tmp_path: Path) -> None:
    """The key directory is 0700, each PKCS8 PEM key file 0600, and jwks.json holds public keys."""
    dev = DevIssuer.load_or_create(tmp_path / "state" / "keys")
    directory = dev.jwks_path.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for kid in KIDS.values():
        key_file = directory / f"{kid}.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    published = orjson.loads(dev.jwks_path.read_bytes())
    assert all({"d", "p", "q"}.isdisjoint(jwk) for jwk in published["keys"])
    assert sorted(path.name for path in directory.iterdir()) == sorted(
        [*(f"{kid}.pem" for kid in KIDS.values()), "jwks.json"]
    )


@pytest.mark.parametrize(
    "mistake",
    [{"roles": "admin"}, {"alg": "HS256"}, {"ttl_s": 0}],
    ids=repr,
)
def test_mint_refuses_misuse(dev: DevIssuer, mistake: dict[str, object]) -> None:
    """mint refuses a bare string as roles, an unknown alg and a non-positive ttl."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        dev.mint("voter-1", **mistake)  # type: ignore[arg-type]


def test_mint_many_checks_arguments_at_the_call(dev: DevIssuer) -> None:
    """mint_many refuses a bad alg when called, before any token is requested."""
    with pytest.raises(ValueError, match="alg"):
        dev.mint_many(["voter-1"], alg="HS256")


def test_mint_many_tokens_all_verify(dev: DevIssuer) -> None:
    """Twenty thousand tokens from mint_many each verify to their own subject."""
    verifier = TokenVerifier(dev.key_set(), issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    subjects = [f"voter-{i}" for i in range(20_000)]
    minted = list(dev.mint_many(subjects))
    assert len(set(minted)) == len(subjects)
    assert [verifier.verify(token).subject for token in minted] == subjects


# --- key sets ---------------------------------------------------------------------------------


def test_key_set_loads_from_a_file(dev: DevIssuer) -> None:
    """KeySet.load reads a JWKS file path."""
    assert KeySet.load(str(dev.jwks_path)).kids() == frozenset(KIDS.values())


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    """Serves `body` over HTTP on loopback for the duration of the block; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/jwk-set+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Silenced: request lines on stderr are noise in test output."""

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_key_set_loads_from_a_url(dev: DevIssuer) -> None:
    """KeySet.load fetches a JWKS document over HTTP, and the keys verify tokens."""
    with serving(dev.jwks_path.read_bytes()) as url:
        keys = KeySet.load(url, timeout_s=2.0)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(dev.mint("voter-1", alg="ES256")).subject == "voter-1"


def test_key_set_refuses_a_non_json_document(tmp_path: Path) -> None:
    """A file that is not JSON is a ValueError naming the file."""
    path = tmp_path / "jwks.json"
    path.write_text("<html>login</html>")
    with pytest.raises(ValueError, match=r"jwks\.json"):
        KeySet.load(str(path))


def rsa_jwk(kid: str, bits: int) -> dict[str, object]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    n, e = numbers.public_numbers().n, numbers.public_numbers().e
    return {
        "kty": "RSA",
        "kid": kid,
        "n": b64(n.to_bytes(bits // 8, "big")),
        "e": b64(e.to_bytes(3, "big")),
    }


def ec_jwk(kid: str, curve: ec.EllipticCurve, size: int) -> dict[str, object]:
    point = ec.generate_private_key(curve).public_key().public_numbers()
    x, y = b64(point.x.to_bytes(size, "big")), b64(point.y.to_bytes(size, "big"))
    return {"kty": "EC", "kid": kid, "crv": "P-256" if size == 32 else "P-384", "x": x, "y": y}


def okp_jwk(kid: str) -> dict[str, object]:
    raw = ed25519.Ed25519PrivateKey.generate().public_key()
    x = raw.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(x)}


def x25519_jwk(kid: str) -> dict[str, object]:
    public = x25519.X25519PrivateKey.generate().public_key()
    x = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "X25519", "kid": kid, "x": b64(x)}


@pytest.mark.parametrize(
    "jwk",
    [
        rsa_jwk("short-rsa", 1024),
        ec_jwk("p384", ec.SECP384R1(), 48),
        x25519_jwk("x25519"),
        {"kty": "oct", "kid": "hmac-secret", "k": b64(b"secret")},
        okp_jwk("leaked") | {"d": b64(bytes(32))},
        okp_jwk("mislabelled") | {"alg": "RS256"},
        okp_jwk("encryption") | {"use": "enc"},
        ec_jwk("off-curve", ec.SECP256R1(), 32) | {"y": b64((1).to_bytes(32, "big"))},
    ],
    ids=lambda jwk: str(jwk["kid"]),
)
def test_key_set_refuses_keys_it_would_not_trust(jwk: dict[str, object]) -> None:
    """Short RSA, other curves, secret, private, mislabelled, off-curve keys are refused by kid."""
    with pytest.raises(ValueError, match=str(jwk["kid"])):
        KeySet.from_jwks({"keys": [okp_jwk("fine"), jwk]})


def test_key_set_refuses_duplicate_kids() -> None:
    """Two keys under one kid are refused: a kid must pick exactly one key."""
    with pytest.raises(ValueError, match="same"):
        KeySet.from_jwks({"keys": [okp_jwk("same"), okp_jwk("same")]})


def test_public_surface() -> None:
    """The tokens module exports exactly the names the gateway codes against."""
    assert set(tokens.__all__) == {
        "KeySet",
        "Principal",
        "TokenError",
        "TokenErrorCode",
        "TokenVerifier",
    }


def test_dev_issuer_surface() -> None:
    """The dev issuer module exports the issuer alone."""
    assert dev_issuer.__all__ == ["DevIssuer"]
