"""A circuit breaker per n8n target, in the design notes' three states.

Closed: requests flow; transient failures are counted over a sliding window. Open: once
`threshold` failures fall within `window` seconds, dispatches to that target are deferred
(not attempted, not counted against the posts' attempts). Half-open: then a single probe
request is let through; success closes the circuit at once, failure opens it again.

The open period starts short (`open_min`, 10 s by default) and doubles with each failed
probe up to `open_for` (300 s): a 20 s outage delays posts by about 10-20 s after n8n is
back instead of five minutes, while a long outage is still probed only every 5 minutes.
Time is always passed in: the breaker never reads a clock.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class State(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


@dataclass
class CircuitBreaker:
    """One target's breaker.

    Invariants: `_opened_at is None` exactly in the closed state, and then `_period` is
    `open_min` and `_probing` is False; `open_min <= _period <= open_for`.
    """

    threshold: int
    window: float
    open_for: float
    open_min: float = 10.0
    _failures: deque[float] = field(default_factory=deque)
    _opened_at: float | None = None
    _probing: bool = False
    _period: float = 0.0

    def __post_init__(self) -> None:
        self.open_min = min(self.open_min, self.open_for)
        self._period = self.open_min

    @property
    def open_period(self) -> float:
        return self._period

    def state(self, now: float) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._probing or now >= self._opened_at + self._period:
            return State.HALF_OPEN
        return State.OPEN

    def allow(self, now: float) -> bool:
        """May a request go now? In half-open, only the first caller gets to probe."""
        state = self.state(now)
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_at(self, now: float) -> float:
        """When a deferred request should ask again."""
        if self._opened_at is None:
            return now
        return max(now, self._opened_at + self._period) + (1.0 if self._probing else 0.0)

    @property
    def probing(self) -> bool:
        """A half-open probe is out: other requests wait for its outcome."""
        return self._probing

    def cancel_probe(self) -> None:
        """The caller that was allowed to probe did not send a request after all (only
        that caller may call this)."""
        self._probing = False

    def record_success(self, now: float) -> None:
        """n8n answered. Any answer closes the circuit, a straggler's too (n8n is up)."""
        self._failures.clear()
        self._opened_at = None
        self._probing = False
        self._period = self.open_min

    def record_failure(self, now: float, *, straggler: bool = False) -> None:
        """A transient failure. `straggler`: the request was not the probe (it started
        before the circuit opened); it must not end a probe that is still out."""
        if self._opened_at is not None:
            if straggler and self._probing:
                return  # the probe under way decides
            # A failed probe (or a straggler while no probe is out): stay open, and wait
            # twice as long before the next probe.
            if self._probing or now >= self._opened_at + self._period:
                self._period = min(self._period * 2, self.open_for)
            self._opened_at = now
            self._probing = False
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.window:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._opened_at = now
            self._failures.clear()
