"""Bearer-token authentication for every route (REST, the hot vote path, later WebSocket)."""

from __future__ import annotations

from tally.gateway.problems import Problem, unauthorized
from tally.security.tokens import Principal, TokenError, TokenVerifier


class Authenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def principal(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <jwt>` header, or a 401 problem."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("missing bearer token", "token-missing")
        try:
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
