"""Progress of long CLI work (`tally bench`, `tally audit`, `tally token --count`), one line on a
terminal's stderr redrawn in place: what, done/total, rate, time left.

Only on a terminal: a pipe, a file or `--json` gets nothing, so output that is data stays data and
logs stay free of carriage returns. The counts are the caller's true counts (items as they are
done, bytes as they are written), and the rate is measured over the work so far, never assumed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO, TypeVar

T = TypeVar("T")

REDRAW_S = 0.2  # often enough to look alive, rarely enough to cost nothing


class Progress:
    """`with Progress("minting tokens", total=n, unit="tokens") as p: ... p.step()`.

    `quiet` (the command's --json) or a stream that is not a terminal turns it off; the final line
    (counts, seconds, rate) is printed on leaving, also after an error, so a long run that fails
    still says how far it got."""

    def __init__(
        self,
        what: str,
        *,
        total: int | None = None,
        unit: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self._clock = clock
        self.shown = not quiet and _is_terminal(self._stream)
        self._started = clock()
        self._drawn_at = -REDRAW_S
        self._stage = ""

    def __enter__(self) -> Progress:
        self._started = self._clock()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.shown:
            elapsed = self._clock() - self._started
            self._stream.write(f"\r\x1b[K{self.what}: {self._counts()} in {elapsed:.1f} s")
            self._stream.write(f" ({self._rate(elapsed)})\n" if elapsed > 0 else "\n")
            self._stream.flush()

    def step(self, item: T, n: int = 1) -> T:
        """Count `n` more done (returning `item`, so it wraps an expression) and redraw if due."""
        self.advance(n)
        return item

    def stage(self, text: str) -> None:
        """Say what is being done now (`tally bench`: which measurement), drawn at once."""
        self._stage = text
        self._draw(self._clock())

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._drawn_at >= REDRAW_S:
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.shown:
            return
        self._drawn_at = now
        elapsed = now - self._started
        line = f"{self.what}: {self._counts()}"
        if elapsed > 0 and self.done:
            line += f", {self._rate(elapsed)}"
            if self.total is not None and self.done < self.total:
                left = (self.total - self.done) * elapsed / self.done
                line += f", {left:.0f} s left"
        if self._stage:
            line += f": {self._stage}"
        self._stream.write(f"\r\x1b[K{line}")
        self._stream.flush()

    def _counts(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.done}{unit}"
        percent = 100 * self.done / self.total if self.total else 100.0
        return f"{self.done}/{self.total}{unit} ({percent:.0f} %)"

    def _rate(self, elapsed: float) -> str:
        unit = self.unit or "items"
        return f"{self.done / elapsed:,.0f} {unit}/s"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: treat as not a terminal
        return False
