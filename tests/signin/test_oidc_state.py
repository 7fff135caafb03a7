"""The sealed sign-in cookie (security/oidc.py StateSeal): only ours, only with its state, only
within ten minutes; anything else is signin-state, never a crash."""

from __future__ import annotations

import time

import pytest

from tally.security.oidc import LoginState, OidcError, StateSeal


@pytest.mark.parametrize(
    "cookie", [None, "", "no-dot", "é.x", "e30.", "e30.AAAA", "W10.ZmFrZQ", "a.b.c"]
)
def test_a_sign_in_cookie_that_is_not_ours_is_refused(cookie: str | None) -> None:
    seal = StateSeal(b"k" * 32)
    with pytest.raises(OidcError) as refused:
        seal.open(cookie, "state", time.time())
    assert refused.value.code == "signin-state"


def test_a_sealed_sign_in_opens_only_with_its_state_and_in_time() -> None:
    seal = StateSeal(b"k" * 32)
    login = LoginState.new("/?poll=x", 1_800_000_000)
    sealed = seal.seal(login)
    assert seal.open(sealed, login.state, 1_800_000_100) == login
    for state, now in [("other", 1_800_000_100), (login.state, 1_800_000_601), (None, 0)]:
        with pytest.raises(OidcError) as refused:
            seal.open(sealed, state, now)
        assert refused.value.code == "signin-state"
    with pytest.raises(OidcError):
        StateSeal(b"j" * 32).open(sealed, login.state, 1_800_000_100)  # another deployment's key
