"""When each post next needs attention: a heap of wake-up times with one injected clock.

Pure bookkeeping, no I/O: the dispatcher sets a uid's next wake-up, cancels it, and pops
the uids whose time has come. Superseded heap entries are skipped lazily and compacted
away when they outnumber the live ones, so memory stays proportional to the live posts.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Schedule:
    """Wake-up times by uid.

    Invariants:
    - `_live[uid] == (when, seq)` is uid's one current wake-up; the heap holds the entry
      `(when, seq, uid)` for it.
    - Every other heap entry is superseded (its seq is not in `_live`); `pop_due` drops
      them, and `_compact` rebuilds the heap from `_live` once they are the majority.
    - `seq` only grows, so an entry is current if and only if `_live` names its seq.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, uid: str) -> bool:
        return uid in self._live

    def set(self, uid: str, when: float) -> bool:
        """Wake `uid` at `when` (replacing any earlier plan). True if it is now first."""
        current = self._live.get(uid)
        if current is not None and current[0] == when:
            return False
        self._seq += 1
        self._live[uid] = (when, self._seq)
        heapq.heappush(self._heap, (when, self._seq, uid))
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._compact()
        return self._heap[0][2] == uid

    def cancel(self, uid: str) -> None:
        self._live.pop(uid, None)

    def pop_due(self, limit: int | None = None) -> list[str]:
        """Remove and return the uids due now, earliest first."""
        now = self._clock()
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            when, seq, uid = heapq.heappop(self._heap)
            if self._live.get(uid) == (when, seq):
                del self._live[uid]
                due.append(uid)
        return due

    def next_at(self) -> float | None:
        """The earliest live wake-up, dropping superseded entries on the way."""
        while self._heap:
            when, seq, uid = self._heap[0]
            if self._live.get(uid) == (when, seq):
                return when
            heapq.heappop(self._heap)
        return None

    def _compact(self) -> None:
        self._heap = [(when, seq, uid) for uid, (when, seq) in self._live.items()]
        heapq.heapify(self._heap)
