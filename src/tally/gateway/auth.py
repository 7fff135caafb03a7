"""Bearer authentication for every route (REST, the hot vote path, the WebSocket auth frame, SSE).

The bearer is either a Tally voting session (`tsv1.`, security/sessions.py: one HMAC) or a JWT
(security/tokens.py); both give the same Principal and fail with the same 401 problem codes."""

from __future__ import annotations

from tally.gateway.problems import Problem, unauthorized
from tally.security.sessions import Sessions, is_session
from tally.security.tokens import Principal, TokenError, TokenVerifier


class Authenticator:
    def __init__(self, verifier: TokenVerifier, sessions: Sessions | None = None) -> None:
        self._verifier = verifier
        self._sessions = sessions

    def principal(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <session or jwt>` header, or a 401."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing bearer token", "token-missing")
        try:
            if self._sessions is not None and is_session(token):
                return self._sessions.verify(token)
            return self._verifier.verify(token)
        except TokenError as exc:
            raise unauthorized(exc.detail, exc.code) from None

    def admin(self, authorization: str | None) -> Principal:
        principal = self.principal(authorization)
        if not principal.is_admin:
            raise Problem(403, "forbidden", "this needs the admin role")
        return principal

    def reviewer(self, authorization: str | None) -> Principal:
        """A caller who may decide on held votes: the reviewer role or the admin role."""
        principal = self.principal(authorization)
        if not principal.is_reviewer:
            raise Problem(403, "forbidden", "this needs the reviewer or admin role")
        return principal
