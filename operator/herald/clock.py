"""The one place Herald reads time. Adapters are given a `Clock`; the engine is given `now`.

Two readings, for two purposes:
- `wall()`: UTC wall time, only where a time is written to the API (status timestamps,
  Event times, webhook timestamps) or compared with one read from it.
- `monotonic()`: seconds on a clock that never jumps, for every period and wait the
  process measures itself (breaker periods, per-post backoff, timeouts, refresh timers).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """What every adapter that needs time is given (tests pass a `FakeClock`)."""

    def wall(self) -> dt.datetime:
        """Now, in UTC, to the millisecond."""
        ...

    def monotonic(self) -> float:
        """Seconds since an arbitrary point; never goes back."""
        ...


def _ms(now: dt.datetime) -> dt.datetime:
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class SystemClock:
    """The real clock."""

    def wall(self) -> dt.datetime:
        return _ms(dt.datetime.now(dt.UTC))

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (`advance`), both readings together."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._wall = _ms(start or dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        self._mono = 1000.0

    def wall(self) -> dt.datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall = _ms(self._wall + dt.timedelta(seconds=seconds))
        self._mono += seconds


SYSTEM = SystemClock()


def utcnow() -> dt.datetime:
    """Now, in UTC, to the millisecond: the precision status timestamps are written with."""
    return SYSTEM.wall()
