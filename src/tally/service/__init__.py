"""The application service: what the gateway (HTTP, WebSocket), the roles and the CLI ask of
Tally. No transport and no store detail: handlers call one function here each, and the stores are
the ports of tally.ports.

    voting     VotingService: polls (create, open, close, results) and the vote entry point
    intake     VoteIntake: the one way a vote gets in (admission chain, cast, receipt)
    admission  the admission checks and their Protocol
    receipts   a voter's receipt from what the store recorded, or from the published ledger
"""

from tally.domain.admission import Evidence, Transport, Voter, VoteRequest
from tally.service.voting import NewPoll, VotingService, new_poll_id, system_clock_ms

__all__ = [
    "Evidence",
    "NewPoll",
    "Transport",
    "VoteRequest",
    "Voter",
    "VotingService",
    "new_poll_id",
    "system_clock_ms",
]
