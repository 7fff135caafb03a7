"""The lines `tally serve --demo` prints name the scheme it serves (https with a certificate),
how to present the poll (the presenter screen and its join code), and over HTTPS the CA file the
client commands need to trust the server, where they need one."""

from __future__ import annotations

from pathlib import Path

from tally.config import Settings
from tally.demo import ca_file_for, instructions
from tally.domain.polls import OptionSpec, Poll, new_poll
from tls_certs import make_certificates


def demo_poll() -> Poll:
    options = [OptionSpec(label="Aurora"), OptionSpec(label="Borealis")]
    return new_poll(poll_id="demopoll", title="Demo", options=options, now_ms=0, lanes=1)


def test_the_printed_urls_follow_tls() -> None:
    plain = instructions(demo_poll(), Settings(port=8123), None)
    assert "http://127.0.0.1:8123/?poll=demopoll" in plain
    tls = Settings(port=8123, tls_cert=Path("c.pem"), tls_key=Path("k.pem"))
    secure = instructions(demo_poll(), tls, None)
    assert "https://127.0.0.1:8123/?poll=demopoll" in secure
    assert "http://" not in secure


def test_the_presenter_screen_and_the_join_code_are_printed() -> None:
    printed = instructions(demo_poll(), Settings(port=8123), None, "K7PQ2M")
    assert "http://127.0.0.1:8123/present/demopoll" in printed
    assert "organiser console: http://127.0.0.1:8123/admin" in printed
    assert "K7PQ2M: http://127.0.0.1:8123/j/K7PQ2M" in printed


def test_the_ca_file_is_given_where_the_certificate_needs_one(tmp_path: Path) -> None:
    """None on plain HTTP; TALLY_CA_FILE where the server's shell names one; else the served
    certificate file itself if it is self-signed, and nothing for one a CA issued (the system
    trust store's business)."""
    pki = make_certificates(tmp_path)
    issued = Settings(tls_cert=pki.cert, tls_key=pki.key)
    self_signed = Settings(tls_cert=pki.ca, tls_key=pki.key)  # the CA's own: signed by itself
    assert ca_file_for(Settings(), {"TALLY_CA_FILE": str(pki.ca)}) is None
    assert ca_file_for(issued, {}) is None
    assert ca_file_for(issued, {"TALLY_CA_FILE": str(pki.ca)}) == pki.ca.resolve()
    assert ca_file_for(self_signed, {}) == pki.ca.resolve()
    assert ca_file_for(Settings(tls_cert=tmp_path / "missing.pem"), {}) is None


def test_every_client_command_carries_the_ca_file_over_tls(tmp_path: Path) -> None:
    """Each command that reaches the server trusts the CA file (curl with --cacert); the plain
    HTTP instructions name none."""
    ca = tmp_path / "my ca.pem"
    tls = Settings(port=8443, tls_cert=Path("c.pem"), tls_key=Path("k.pem"))
    printed = instructions(demo_poll(), tls, None, "K7PQ2M", ca)
    commands = [line.strip() for line in printed.splitlines() if ".venv/bin/tally " in line]
    reaching = [c for c in commands if " token " not in c.split("$(")[0]]
    assert len(reaching) == 5, printed
    assert all(f"--ca-file '{ca}'" in c for c in reaching)
    assert printed.count(f"curl -s --cacert '{ca}'") == 3  # results, and both audits' keys
    plain = instructions(demo_poll(), Settings(port=8123), None, "K7PQ2M")
    assert "--ca-file" not in plain
    assert "--cacert" not in plain
