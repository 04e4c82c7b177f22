"""A circuit breaker per n8n target, in the design notes' three states.

Closed: requests flow; transient failures are counted over a sliding window. Open: once
`threshold` failures fall within `window` seconds, dispatches to that target are deferred
(not attempted, not counted against the posts' attempts) for `open_for` seconds.
Half-open: then a single probe request is let through; success closes the circuit,
failure opens it again. Time is always passed in: the breaker never reads a clock.
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
    threshold: int
    window: float
    open_for: float
    _failures: deque[float] = field(default_factory=deque)
    _opened_at: float | None = None
    _probing: bool = False

    def state(self, now: float) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._probing or now >= self._opened_at + self.open_for:
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
        return max(now, self._opened_at + self.open_for) + (1.0 if self._probing else 0.0)

    def cancel_probe(self) -> None:
        """The caller that was allowed to probe did not send a request after all."""
        self._probing = False

    def record_success(self, now: float) -> None:
        self._failures.clear()
        self._opened_at = None
        self._probing = False

    def record_failure(self, now: float) -> None:
        if self._opened_at is not None:
            # A failed probe (or a straggler from before the circuit opened): stay open.
            self._opened_at = now
            self._probing = False
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.window:
            self._failures.popleft()
        if len(self._failures) >= self.threshold:
            self._opened_at = now
            self._failures.clear()
