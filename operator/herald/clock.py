"""The one place Herald reads the wall clock (adapters only; the engine is given `now`)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, in UTC, to the millisecond: the precision status timestamps are written with."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
