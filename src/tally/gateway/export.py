"""CSV exports of a poll (issue 12), for the organiser's spreadsheet and the broadcaster's graphics:

    GET /v1/polls/{poll_id}/results.csv   option_id,label,votes,share  (+ a Total row)
    GET /v1/polls/{poll_id}/turnout.csv   minute,votes,cumulative      (ballots per UTC minute)

RFC 4180: a header row, CRLF line ends, fields quoted where they must be; `text/csv;
charset=utf-8` as an attachment (`Content-Disposition`). The ledger export (`tally audit export`)
stays what it was: the proof; these are the figures.

Who may download them (a draft's: an admin only; to anyone else a draft is an unknown poll, 404
poll-not-found, as everywhere: VotingService.ensure_shown):
- results.csv follows result visibility exactly as GET /results does (domain.visibility, through
  the same service call): where the caller may not see the counts yet it is a 403
  `results-hidden` problem naming why (`hidden`: until-vote or until-close).
- turnout.csv: an admin at any time; everyone else once the poll is closed (a 403 `results-hidden`
  with `hidden: until-close` before). The running total is public anyway, but minute by minute it
  shows when the audience voted, which the organiser may want to present first.

turnout.csv is counted from the ledger by the archiver (domain.turnout), so it trails the votes by
up to one checkpoint interval (TALLY_CHECKPOINT_INTERVAL_MS) and is complete once the poll is
certified.

A spreadsheet runs a cell that starts with = + - @ (or a tab or carriage return) as a formula:
such a label is written with a leading apostrophe (OWASP's CSV injection advice), which
spreadsheets show as text; option ids cannot start so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tally.domain.polls import PollState
from tally.domain.results import Results
from tally.domain.timestamps import iso_ms
from tally.domain.turnout import turnout_rows
from tally.domain.visibility import Hidden
from tally.gateway.auth import Authenticator
from tally.gateway.problems import Problem
from tally.gateway.routes import poll_id_param
from tally.gateway.viewer import cache_headers, viewer_of
from tally.ports import TurnoutStore
from tally.service import VotingService

MEDIA_TYPE = "text/csv; charset=utf-8"
RESULTS_HEADER = ("option_id", "label", "votes", "share")
TURNOUT_HEADER = ("minute", "votes", "cumulative")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def results_hidden(hidden: Hidden) -> Problem:
    """403: the caller may not see the counts yet (domain.visibility)."""
    detail = {
        Hidden.UNTIL_VOTE: "the counts are shown once you have voted",
        Hidden.UNTIL_CLOSE: "the counts are shown once the poll closes",
    }[hidden]
    return Problem(403, "results-hidden", detail, hidden=hidden.value)


def csv_text(rows: Iterable[Sequence[object]]) -> bytes:
    """RFC 4180: CRLF line ends, a field quoted only where it holds a comma, quote or line end."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows(rows)
    return out.getvalue().encode()


def cell(text: str) -> str:
    """`text` as a spreadsheet shows it, never as a formula it runs (module docstring)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def share(votes: int, total: int) -> str:
    """The option's part of the counted votes, 0 to 1 with four decimals (0 when none)."""
    return f"{votes / total:.4f}" if total else "0.0000"


def results_rows(results: Results, labels: dict[str, str]) -> list[tuple[object, ...]]:
    """The header, one row per option in the poll's order, and a Total row."""
    total = sum(results.counts.values())
    rows: list[tuple[object, ...]] = [RESULTS_HEADER]
    for option, votes in results.counts.items():
        rows.append((option, cell(labels.get(option, option)), votes, share(votes, total)))
    rows.append(("", "Total", total, share(total, total)))
    return rows


def turnout_csv_rows(minutes: dict[int, int]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = [TURNOUT_HEADER]
    for row in turnout_rows(minutes):
        rows.append((iso_ms(row.minute_ms).replace(".000Z", "Z"), row.votes, row.cumulative))
    return rows


def attachment(body: bytes, filename: str, headers: dict[str, str]) -> Response:
    return Response(
        body,
        200,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **headers},
        media_type=MEDIA_TYPE,
    )


class ExportRoutes:
    def __init__(
        self, service: VotingService, auth: Authenticator, turnout: TurnoutStore | None
    ) -> None:
        """`turnout`: where the archiver keeps ballots per minute (None: turnout.csv is empty)."""
        self._service = service
        self._auth = auth
        self._turnout = turnout

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/polls/{poll_id}/results.csv", self.results_csv, methods=["GET"]),
            Route("/v1/polls/{poll_id}/turnout.csv", self.turnout_csv, methods=["GET"]),
        ]

    async def results_csv(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        viewer = viewer_of(self._auth, request.headers.get("authorization"))
        results, hidden = await self._service.visible_results(
            poll_id, viewer.voter, is_admin=viewer.is_admin
        )
        await self._service.ensure_shown(poll_id, is_admin=viewer.is_admin, state=results.state)
        poll = await self._service.definition(poll_id)  # cached by visible_results just now
        if hidden is not None:
            raise results_hidden(hidden)
        labels = {o.id: o.label for o in poll.options}
        body = csv_text(results_rows(results, labels))
        return attachment(body, f"tally-results-{poll_id}.csv", cache_headers(viewer))

    async def turnout_csv(self, request: Request) -> Response:
        poll_id = poll_id_param(request)
        viewer = viewer_of(self._auth, request.headers.get("authorization"))
        poll = await self._service.get_poll(poll_id)  # its state now, the deadline included
        await self._service.ensure_shown(poll_id, is_admin=viewer.is_admin, state=poll.state)
        if not viewer.is_admin and poll.state is not PollState.CLOSED:
            raise results_hidden(Hidden.UNTIL_CLOSE)
        minutes = {} if self._turnout is None else await self._turnout.minutes(poll_id)
        body = csv_text(turnout_csv_rows(minutes))
        return attachment(body, f"tally-turnout-{poll_id}.csv", cache_headers(viewer))
