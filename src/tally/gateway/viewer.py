"""Who is looking at a poll's results: the one reading of an optional credential that every
results transport uses (REST /results and its CSV, SSE, the WebSocket's auth frame), for result
visibility (domain.visibility).

No credential is an anonymous viewer, never an error: results are public. A credential that is
sent but invalid is a 401 (the caller meant to be someone: telling them beats silently showing
less).

Caching: a results answer that depends on the credential says so (`Vary: Authorization`, and
`private` once a credential was sent), so no shared cache hands one viewer's counts to another.
"""

from __future__ import annotations

from dataclasses import dataclass

from tally.domain.admission import Voter
from tally.domain.errors import PollNotFound, TallyError
from tally.domain.polls import PollState
from tally.domain.visibility import hidden_reason, needs_vote_lookup
from tally.gateway.auth import Authenticator
from tally.gateway.problems import Problem
from tally.security.tokens import Principal
from tally.service import VotingService


@dataclass(frozen=True, slots=True)
class Viewer:
    """`voter`: the identity whose vote is looked up (None: anonymous); `is_admin`: an
    organiser, who always sees the counts."""

    voter: Voter | None = None
    is_admin: bool = False

    @property
    def personal(self) -> bool:
        """Whether an answer was made for this caller (so only a private cache may keep it)."""
        return self.voter is not None


ANONYMOUS = Viewer()


def viewer_of_principal(principal: Principal) -> Viewer:
    voter = Voter(principal.issuer, principal.subject, principal.issued_at, principal.expires_at)
    return Viewer(voter, principal.is_admin)


def viewer_of(auth: Authenticator, authorization: str | None) -> Viewer:
    """The viewer behind an optional `Authorization` header; a 401 problem if it is invalid."""
    if authorization is None:
        return ANONYMOUS
    return viewer_of_principal(auth.principal(authorization))


def is_admin(auth: Authenticator, authorization: str | None) -> bool:
    """Whether an optional `Authorization` header names an admin; a missing or invalid one does
    not (where a poll answers the same to both: a draft's 404 must not tell a bad credential
    apart from none, since an unknown poll's does not either)."""
    if authorization is None:
        return False
    try:
        return auth.principal(authorization).is_admin
    except Problem:
        return False


async def ensure_shown_to(
    service: VotingService,
    auth: Authenticator,
    authorization: str | None,
    poll_id: str,
    state: PollState | None = None,
) -> None:
    """VotingService.ensure_shown for a request's optional credential (a missing or invalid one
    is no admin's), asked as a non-admin first, so the credential is checked only on a draft,
    where it decides."""
    try:
        await service.ensure_shown(poll_id, is_admin=False, state=state)
    except PollNotFound:
        if not is_admin(auth, authorization):
            raise


def cache_headers(viewer: Viewer, *, varies: bool = True) -> dict[str, str]:
    """Cache-Control and Vary for an answer that follows result visibility. `varies`: whether
    the answer can differ from viewer to viewer (False for a live or closed poll, whose answer a
    shared cache may keep even when the request carried a credential)."""
    scope = "private" if viewer.personal and varies else "public"
    return {"Cache-Control": f"{scope}, max-age=1", "Vary": "Authorization"}


class Viewers:
    """What a live connection (WebSocket, SSE) asks about its viewer: who the credential names,
    and whether they may see the counts before the close. A connection starts redacted unless
    this says otherwise; the close shows everyone the counts through the snapshot itself (a
    closed snapshot has no redacted encoding: gateway.live.snapshot)."""

    def __init__(self, auth: Authenticator, service: VotingService) -> None:
        self._auth = auth
        self._service = service

    def of(self, authorization: str | None) -> Viewer:
        """As viewer_of: anonymous without a credential, a 401 problem for an invalid one."""
        return viewer_of(self._auth, authorization)

    def is_admin(self, authorization: str | None) -> bool:
        """As is_admin: a missing or invalid credential is not an admin's."""
        return is_admin(self._auth, authorization)

    async def ensure_shown(self, poll_id: str, viewer: Viewer) -> None:
        """PollNotFound where `viewer` may not learn the poll exists (a draft to a non-admin):
        VotingService.ensure_shown, with no read once the poll is known to be open or closed."""
        await self._service.ensure_shown(poll_id, is_admin=viewer.is_admin)

    async def token_sees_counts(self, poll_id: str, token: str, *, voted: bool) -> bool:
        """For a live socket's auth frame or vote: whether the bearer `token` may see the counts
        now. False where the token no longer checks or the store does not answer: the socket
        stays redacted, and its next auth frame or vote asks again."""
        try:
            return await self.sees_counts(poll_id, self.of(f"Bearer {token}"), voted=voted)
        except (Problem, TallyError):
            return False

    async def sees_counts(self, poll_id: str, viewer: Viewer, *, voted: bool = False) -> bool:
        """Whether `viewer` may see the counts of the poll while it is open. `voted`: they are
        known to have voted (a vote answered on this connection); otherwise the store is asked
        where that decides. Raises PollNotFound or StoreUnavailable."""
        poll = await self._service.definition(poll_id)
        state = PollState.OPEN  # a closed poll's snapshots are never redacted
        if (
            not voted
            and viewer.voter is not None
            and needs_vote_lookup(poll.visibility, state, viewer.is_admin)
        ):
            voted = await self._service.has_voted(poll, viewer.voter)
        return (
            hidden_reason(
                poll.visibility, state, viewer_is_admin=viewer.is_admin, viewer_has_voted=voted
            )
            is None
        )
