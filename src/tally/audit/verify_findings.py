"""How ``tally audit verify`` records its findings, for every step of :mod:`tally.audit.verify`.

Each step adds what it finds to one :class:`Findings`, which lists at most
:data:`MAX_FINDINGS_PER_KIND` of one code in one log and sums up the rest in one ``too-many``
line: a lane rewritten wholesale would otherwise print a line per leaf. The codes themselves,
and what each means, are :data:`tally.audit.verify.FINDING_CODES`.
"""

from __future__ import annotations

import base64
from collections import Counter

from tally.audit.report import Finding

__all__ = ["MAX_FINDINGS_PER_KIND", "Findings", "b64"]

# Findings of one code in one log listed before the rest are summed up in one `too-many` line.
MAX_FINDINGS_PER_KIND = 50


def b64(data: bytes) -> str:
    """A root or hash as a finding shows it: base64, as checkpoints write roots."""
    return base64.b64encode(data).decode("ascii")


class Findings:
    """The findings so far, at most MAX_FINDINGS_PER_KIND of one code per log."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._listed: Counter[tuple[str, str]] = Counter()
        self._omitted: Counter[tuple[str, str]] = Counter()

    def add(
        self,
        code: str,
        file: str,
        message: str,
        *,
        index: int | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        kind = (file.partition("/")[0], code)
        if self._listed[kind] >= MAX_FINDINGS_PER_KIND:
            self._omitted[kind] += 1
            return
        self._listed[kind] += 1
        self.items.append(Finding(code, file, message, index, expected, found))

    def __len__(self) -> int:
        return len(self.items) + sum(self._omitted.values())

    def finish(self) -> list[Finding]:
        for (log, code), count in self._omitted.items():
            self.items.append(
                Finding(
                    "too-many",
                    log,
                    f"{count} more [{code}] findings in {log} are not listed",
                    expected=code,
                    found=str(count),
                )
            )
        return self.items
