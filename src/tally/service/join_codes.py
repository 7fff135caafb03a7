"""Each poll's join code (domain.join_codes): given at creation, and lazily to a poll made before
join codes existed (or whose creation was interrupted before its code was bound), the first time
anything asks for it. Any gateway may do either; the store's set-once rules make them agree.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from tally.domain.errors import StoreUnavailable
from tally.domain.join_codes import CODE_SPACE, code_of, normalise
from tally.ports import JoinCodeStore

# A random code is taken with probability (codes in use) / 8.9e8: 16 taken in a row means the
# code space is nearly full or the randomness is broken, either worth an error, not a loop.
MAX_TRIES = 16


class JoinCodes:
    def __init__(
        self, store: JoinCodeStore, random_below: Callable[[int], int] = secrets.randbelow
    ) -> None:
        """`random_below(n)`: a uniform number in [0, n) (tests pass a scripted one)."""
        self._store = store
        self._random_below = random_below

    async def code_for(self, poll_id: str) -> str:
        """The poll's join code, given now if it has none. The caller checked the poll exists."""
        (code,) = await self.codes_for([poll_id])
        return code

    async def codes_for(self, poll_ids: Sequence[str]) -> list[str]:
        """Each poll's join code in order, one read for all; those without one get one now."""
        found = await self._store.code_of(poll_ids)
        return [
            code if code is not None else await self._give(poll_id)
            for poll_id, code in zip(poll_ids, found, strict=True)
        ]

    async def poll_for(self, text: str) -> str | None:
        """The poll id a typed or scanned code leads to (any case, dashes and spaces ignored);
        None for a code that is not one or leads nowhere."""
        code = normalise(text)
        return None if code is None else await self._store.poll_of(code)

    async def _give(self, poll_id: str) -> str:
        for _ in range(MAX_TRIES):
            code = code_of(self._random_below(CODE_SPACE))
            if await self._store.claim(code, poll_id):
                # Another gateway may have bound a code to the poll meanwhile: its code wins, and
                # ours, claimed, still leads to the same poll.
                return await self._store.bind(poll_id, code)
        raise StoreUnavailable(f"no free join code found in {MAX_TRIES} tries")
