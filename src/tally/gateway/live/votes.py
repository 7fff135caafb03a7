"""Votes over the live WebSocket, with exactly the semantics, status codes and problem documents of
`POST /v1/polls/{id}/votes`: both go through the same `Voting` (voting.py: authentication, the one
intake, the outcome mapping, the metrics). Transport-agnostic: it turns frames into answer frames.

Client -> server (text frames holding JSON):
    {"type": "auth", "token": "<jwt>"}          once; again to replace a token about to expire
    {"type": "vote", "request_id": "<1-128 chars>", "option": "<option id>", "proof": "<answer>"}
        ("proof" only where a proof-of-work answer is wanted, as in the HTTP vote's body)
Server -> client:
    {"type": "auth_result", "status": 200}  |  {"type": "auth_result", "status": 401, "error": P}
    {"type": "vote_result", "request_id": R, "status": 201, "receipt": {...}}
    {"type": "vote_result", "request_id": R, "status": 202, "receipt": {...}, "held": {...}}
    {"type": "vote_result", "request_id": R, "status": 401|404|409|422|428|429|503, "error": P}
        (429 and 503 also carry "retry_after": seconds, the HTTP answer's Retry-After header)
    {"type": "error", "status": 400|415|422, "error": P}   the frame was not a message; nothing changed
P is the problem document the HTTP vote would answer, byte for byte (its `instance` is the vote
resource, /v1/polls/{id}/votes). The token is verified again for every vote (verifications are
cached by token), so a token that expires mid-session gets 401 token-expired, as over HTTP. Tokens
never travel in the URL.
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import msgspec
import orjson

from tally.domain.admission import Evidence
from tally.domain.errors import PollNotFound
from tally.gateway.problems import Problem, problem_body
from tally.gateway.viewer import ANONYMOUS, Viewers
from tally.gateway.voting import Ballot, Voting
from tally.security.pow import MAX_ANSWER_CHARS as MAX_PROOF_CHARS


class AuthMessage(msgspec.Struct, tag_field="type", tag="auth", forbid_unknown_fields=True):
    token: str


class VoteMessage(msgspec.Struct, tag_field="type", tag="vote", forbid_unknown_fields=True):
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    option: str
    proof: Annotated[str, msgspec.Meta(max_length=MAX_PROOF_CHARS)] | None = None


ClientMessage = AuthMessage | VoteMessage
_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)


def parse_message(data: bytes) -> ClientMessage:
    """The client's message; a Problem (400 malformed-json, 422 validation-failed) otherwise."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Problem(422, "validation-failed", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, "malformed-json", str(exc)) from None


def error_frame(problem: Problem, instance: str, request_id: str | None = None) -> bytes:
    """`{"type": "error", ...}`: a frame that was not a message, or why the socket is closing."""
    head: dict[str, Any] = {"type": "error", "status": problem.status}
    if request_id is not None:
        head["request_id"] = request_id
    return _with_problem(head, problem, instance)


def request_id_of(data: bytes) -> str | None:
    """Best effort, for error frames: the request_id of a frame that failed validation."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    request_id = parsed.get("request_id") if isinstance(parsed, dict) else None
    return request_id if isinstance(request_id, str) and len(request_id) <= 128 else None


def _with_problem(head: dict[str, Any], problem: Problem, instance: str) -> bytes:
    # Splice the HTTP problem bytes in unchanged rather than re-encoding a copy of them.
    return orjson.dumps(head)[:-1] + b',"error":' + problem_body(problem, instance) + b"}"


# A vote answered with these outcomes means the voter has a vote in the poll (result visibility).
VOTED_LABELS = frozenset({"accepted", "held", "already-voted"})


class LiveAnswer(NamedTuple):
    """A vote_result frame, and whether the voter now has a vote in the poll."""

    frame: bytes
    voted: bool


class LiveVoting:
    def __init__(self, voting: Voting, viewers: Viewers | None = None) -> None:
        """`viewers`: who may see the counts before the close (result visibility); None: every
        connection stays redacted on a poll that hides its counts until the close."""
        self._voting = voting
        self.viewers = viewers

    async def hidden_draft(self, poll_id: str) -> bool:
        """Whether the poll (found) is a draft, which a socket may follow only once an admin's
        auth frame came (VotingService.ensure_shown: to anyone else it is an unknown poll)."""
        if self.viewers is None:
            return False
        try:
            await self.viewers.ensure_shown(poll_id, ANONYMOUS)
        except PollNotFound:
            return True
        return False

    def is_admin(self, token: str) -> bool:
        """Whether an auth frame's token is a valid admin credential."""
        return self.viewers is not None and self.viewers.is_admin(f"Bearer {token}")

    def authenticate(self, token: str, instance: str) -> tuple[bool, bytes]:
        """Check a token now (each vote checks it again); returns (valid, auth_result frame)."""
        try:
            self._voting.authenticate(f"Bearer {token}")
        except Problem as problem:
            return False, _with_problem({"type": "auth_result", "status": 401}, problem, instance)
        return True, orjson.dumps({"type": "auth_result", "status": 200})

    async def vote(
        self, poll_id: str, token: str | None, message: VoteMessage, evidence: Evidence
    ) -> bytes:
        """Cast the vote as the HTTP route would; returns the vote_result frame."""
        return (await self.vote_answer(poll_id, token, message, evidence)).frame

    async def vote_answer(
        self, poll_id: str, token: str | None, message: VoteMessage, evidence: Evidence
    ) -> LiveAnswer:
        """`vote`, also saying whether the voter now has a vote in the poll."""
        authorization = None if token is None else f"Bearer {token}"

        async def ballot() -> Ballot:
            return Ballot(message.option, message.proof)

        answer = await self._voting.vote(poll_id, authorization, ballot, evidence)
        head: dict[str, Any] = {
            "type": "vote_result",
            "request_id": message.request_id,
            "status": answer.status,
        }
        voted = answer.label in VOTED_LABELS
        if answer.problem is None:
            return LiveAnswer(orjson.dumps({**head, **(answer.document or {})}), voted)
        retry_after = answer.problem.headers.get("Retry-After")
        if retry_after is not None:  # what HTTP says in a header, the frame says in a field
            head["retry_after"] = int(retry_after)
        return LiveAnswer(_with_problem(head, answer.problem, f"/v1/polls/{poll_id}/votes"), voted)
