"""What a served certificate file says about who must be told to trust it: whether it holds a
self-signed certificate (a self-signed server certificate, or a chain that ends in its private
root), which no system trust store knows, so a client must be given it as its CA file."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature


def holds_self_signed(cert_file: Path) -> bool:
    """Whether the PEM file holds a certificate that signed itself; False for a file that cannot
    be read as PEM certificates (the server's own start refuses such a file anyway)."""
    try:
        certificates = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    for certificate in certificates:
        if certificate.issuer != certificate.subject:
            continue
        try:
            certificate.verify_directly_issued_by(certificate)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return True
    return False
