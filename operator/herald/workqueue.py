"""The queue between the schedule and the workers: fair across tenants, sends first.

A namespace is a tenant: due posts are served round-robin across namespaces, so one
namespace's burst of 10,000 posts does not delay another's post due the same second.
Within that, sends (claimed posts whose second has come) go before everything else
(claims, records, recoveries), because only sends are late when they wait.
"""

from __future__ import annotations

import asyncio
from collections import deque

URGENT = 0
NORMAL = 1


class FairQueue:
    """uids waiting for a worker.

    Invariants:
    - `_queued[uid]` is the class a uid waits in; a uid waits at most once. `discard`
      only forgets it there; `get` skips deque entries that `_queued` no longer names.
    - for each class, `_rotation[c]` lists each namespace with a non-empty deque in
      `_by_ns[c]` exactly once, in serving order.
    - `_items.set()` holds iff `_queued` is not empty.
    """

    def __init__(self) -> None:
        self._by_ns: tuple[dict[str, deque[str]], ...] = ({}, {})
        self._rotation: tuple[deque[str], ...] = (deque(), deque())
        self._queued: dict[str, int] = {}
        self._items = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, uid: str) -> bool:
        return uid in self._queued

    def put(self, uid: str, namespace: str, *, urgent: bool = False) -> None:
        klass = URGENT if urgent else NORMAL
        current = self._queued.get(uid)
        if current is not None and current <= klass:
            return
        self._queued[uid] = klass
        lanes = self._by_ns[klass]
        lane = lanes.get(namespace)
        if lane is None:
            lane = lanes[namespace] = deque()
            self._rotation[klass].append(namespace)
        lane.append(uid)
        self._items.set()

    def discard(self, uid: str) -> None:
        self._queued.pop(uid, None)
        if not self._queued:
            self._items.clear()

    def pop(self) -> str | None:
        """The next uid, or None when nothing waits."""
        for klass in (URGENT, NORMAL):
            rotation, lanes = self._rotation[klass], self._by_ns[klass]
            while rotation:
                namespace = rotation.popleft()
                lane = lanes[namespace]
                uid = None
                while lane:
                    candidate = lane.popleft()
                    if self._queued.get(candidate) == klass:
                        uid = candidate
                        break
                if lane:
                    rotation.append(namespace)
                else:
                    del lanes[namespace]
                if uid is not None:
                    del self._queued[uid]
                    if not self._queued:
                        self._items.clear()
                    return uid
        self._items.clear()
        return None

    async def get(self) -> str:
        while True:
            uid = self.pop()
            if uid is not None:
                return uid
            await self._items.wait()
