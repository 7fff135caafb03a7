"""The one test PKI, made with `cryptography`: a throwaway certificate authority and the
certificates it signs, for the HTTPS/WSS tests (tests/security/test_https.py, the page test) and
the `rediss://` tests behind tests/tls_terminator.py (a server and a client certificate)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA's certificate, the server's certificate chain and its key (0600)."""

    ca: Path
    cert: Path
    key: Path
    spki_sha256: str  # base64 SHA-256 of the server key's SubjectPublicKeyInfo (Chromium's pin)

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client context that trusts the test CA alone (maximum_version=... to limit it)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        for name, version in versions.items():
            setattr(context, name, version)
        return context


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Certificates:
    """A CA and a server certificate signed by it, valid for `hosts` and localhost, for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca("Tally test CA")
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(host)) for host in hosts]
    cert, key = _issue(ca_cert, ca_key, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names)
    paths = Certificates(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem", spki_hash(cert)
    )
    _write_cert(paths.ca, ca_cert)
    _write_cert(paths.cert, cert)
    _write_key(paths.key, key)
    return paths


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = make_ca(directory)
    server_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _issue_files(
        directory, "valkey", ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, server_names
    )
    client = _issue_files(directory, "tally", ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca, server[0], server[1], client[0], client[1])


def make_ca(
    directory: Path, name: str = "Tally test CA"
) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA named `name`, its certificate written to `directory` (spaces in the name as -)."""
    cert, key = _ca(name)
    path = directory / f"{name.replace(' ', '-')}.pem"
    _write_cert(path, cert)
    return path, cert, key


def spki_hash(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    """A certificate valid from five minutes ago (clock skew) for a day."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(name), _name(name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An end-entity certificate for `usage` (server or client auth), signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _issue_files(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[Path, Path]:
    cert, key = _issue(ca_cert, ca_key, stem, usage, names)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    _write_cert(cert_path, cert)
    _write_key(key_path, key)
    return cert_path, key_path


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """The key file is 0600 before the key is in it (the TLS loaders refuse a readable key)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
