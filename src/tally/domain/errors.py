"""The domain's error tree. Each maps to exactly one problem type at the edges (gateway/problems.py).

TallyError
 ├── InvalidInput          a request broke a rule of the domain (field + reason)
 ├── PollNotFound          no poll with that id
 ├── IllegalTransition     a lifecycle move the transition table forbids
 └── StoreUnavailable      Valkey could not be reached or could not confirm durability (retryable)
"""

from __future__ import annotations


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""


class InvalidInput(TallyError):
    """A value broke a domain rule; `field` names it as the client sent it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PollNotFound(TallyError):
    def __init__(self, poll_id: str) -> None:
        super().__init__(f"no poll {poll_id!r}")
        self.poll_id = poll_id


class IllegalTransition(TallyError):
    def __init__(self, poll_id: str, current: str, target: str, why: str = "") -> None:
        super().__init__(
            f"poll {poll_id!r} cannot go from {current} to {target}{why and ': ' + why}"
        )
        self.poll_id = poll_id
        self.current = current
        self.target = target


class StoreUnavailable(TallyError):
    """The store did not answer, or did not confirm durability. Safe to retry: votes are idempotent."""
