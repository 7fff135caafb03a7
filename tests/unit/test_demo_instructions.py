"""The lines `tally serve --demo` prints name the scheme it serves: https with a certificate."""

from __future__ import annotations

from pathlib import Path

from tally.config import Settings
from tally.demo import instructions
from tally.domain.polls import OptionSpec, Poll, new_poll


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
