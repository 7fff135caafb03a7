"""Request bodies: strict shapes (unknown fields refused), read with a size cap, decoded once."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.requests import Request

from tally.domain.polls import OptionSpec, Visibility
from tally.gateway.problems import Problem
from tally.security.pow import MAX_ANSWER_CHARS as MAX_PROOF_CHARS
from tally.service import NewPoll

T = TypeVar("T")

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")


class OptionBody(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    id: str | None = None


class CreatePollBody(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    options: list[str | OptionBody]
    lanes: int | None = None  # None: the server's default (lanes_for its store's primaries)
    closes_at: str | None = None
    expected_voters: int = 1_000_000
    # Over the server's defaults (TALLY_DEFENCES); checked field by field by domain.defences.
    defences: dict[str, Any] | None = None
    # Who sees the counts before the poll closes (domain.visibility); absent: live.
    visibility: Visibility = Visibility.LIVE


class VoteBody(msgspec.Struct, forbid_unknown_fields=True):
    option: str
    # The proof-of-work answer, `<challenge>:<nonce>` (tally.security.pow); only where the poll
    # or the risk scorer asks for one. Longer than any real answer is a 422, not a parse.
    proof: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=MAX_PROOF_CHARS,
                description="the answer to a proof-of-work challenge: `<challenge>:<nonce>` "
                "(GET /v1/polls/{poll_id}/challenge)",
            ),
        ]
        | None
    ) = None


_decoders: dict[type, msgspec.json.Decoder[object]] = {}


async def read_json(request: Request, shape: type[T], max_bytes: int) -> T:
    """The body decoded as `shape`, or a Problem: 415 not JSON, 413 too big, 400 malformed, 422 wrong shape."""
    check_content_type(request.headers.get("content-type"))
    check_declared_length(request.headers.get("content-length"), max_bytes)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "body-too-large", f"at most {max_bytes} bytes")
        chunks.append(chunk)
    return decode(b"".join(chunks), shape)


def check_content_type(value: str | None) -> None:
    if (value or "").split(";", 1)[0].strip().lower() != "application/json":
        raise Problem(415, "unsupported-media-type")


def check_declared_length(value: str | None, max_bytes: int) -> None:
    if value is not None and (not value.isdigit() or int(value) > max_bytes):
        raise Problem(413, "body-too-large", f"at most {max_bytes} bytes")


def decode(data: bytes, shape: type[T]) -> T:
    decoder = _decoders.get(shape)
    if decoder is None:
        decoder = _decoders[shape] = msgspec.json.Decoder(shape)
    try:
        return decoder.decode(data)  # type: ignore[return-value]  # the decoder was built for `shape`
    except msgspec.ValidationError as exc:
        raise Problem(422, "validation-failed", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, "malformed-json", str(exc)) from None


def to_new_poll(body: CreatePollBody) -> NewPoll:
    options = [
        OptionSpec(label=o) if isinstance(o, str) else OptionSpec(label=o.label, id=o.id)
        for o in body.options
    ]
    return NewPoll(
        title=body.title,
        options=options,
        lanes=body.lanes,
        closes_at_ms=None if body.closes_at is None else parse_time_ms("closes_at", body.closes_at),
        expected_voters=body.expected_voters,
        defences=body.defences,
        visibility=body.visibility,
    )


def parse_time_ms(field: str, text: str) -> int:
    """RFC 3339 with an explicit offset ('Z' or +hh:mm) to epoch milliseconds."""
    try:
        if not RFC3339.fullmatch(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Problem(
            422,
            "validation-failed",
            f"{field}: not an RFC 3339 time",
            errors=[{"field": field, "message": "not an RFC 3339 time"}],
        ) from None
    if moment.tzinfo is None:
        raise Problem(
            422,
            "validation-failed",
            f"{field}: needs a time zone offset",
            errors=[{"field": field, "message": "needs a time zone offset"}],
        )
    return int(moment.timestamp() * 1000)
