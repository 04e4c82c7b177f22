"""What the operator remembers about each post: a small projection, not the object.

The watch delivers whole ScheduledPosts (about 12 KB each once parsed, half of it
managedFields); the dispatcher needs a handful of fields to schedule them, and reads the
full object from the API server when it acts. Failed posts keep only their phase and
namespace, for the phase gauge; Published posts are not watched at all (herald.history).
Phase counts are kept incrementally, so a /metrics scrape costs the same at 100 posts as
at 100,000.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """A live post as the dispatcher schedules it."""

    namespace: str
    name: str
    uid: str
    generation: int
    phase: str
    resource_version: str


FINISHED = frozenset({"Published", "Failed"})


class PostCache:
    """Projections of the posts the watch has shown, by uid.

    Invariants:
    - a uid is in at most one of `_live` (live posts, and finished ones with time-driven
      work left: a TTL) and `_done` (finished, nothing left to do: (phase, namespace),
      interned, and the resourceVersion last seen);
    - `_counts[(phase, namespace)]` equals the number of uids in `_live` and `_done`
      with that phase and namespace; zero counts are deleted.
    """

    def __init__(self) -> None:
        self._live: dict[str, Entry] = {}
        self._done: dict[str, tuple[str, str, str]] = {}
        self._counts: Counter[tuple[str, str]] = Counter()

    def __len__(self) -> int:
        return len(self._live) + len(self._done)

    def get(self, uid: str) -> Entry | None:
        return self._live.get(uid)

    def resource_version(self, uid: str) -> str | None:
        """The version last remembered for the post, finished or not."""
        entry = self._live.get(uid)
        if entry is not None:
            return entry.resource_version
        done = self._done.get(uid)
        return done[2] if done else None

    def put(self, entry: Entry, *, pending: bool = True) -> None:
        """Remember a post; `pending=False` for a finished post with nothing left to do."""
        self._uncount(entry.uid)
        if entry.phase in FINISHED and not pending:
            self._live.pop(entry.uid, None)
            key = (sys.intern(entry.phase), sys.intern(entry.namespace))
            self._done[entry.uid] = (*key, entry.resource_version)
        else:
            self._done.pop(entry.uid, None)
            self._live[entry.uid] = entry
            key = (entry.phase, entry.namespace)
        self._counts[key] += 1

    def remove(self, uid: str) -> None:
        self._uncount(uid)
        self._live.pop(uid, None)
        self._done.pop(uid, None)

    def counts(self) -> Iterator[tuple[str, str, int]]:
        for (phase, namespace), n in list(self._counts.items()):
            yield phase, namespace, n

    def _uncount(self, uid: str) -> None:
        entry = self._live.get(uid)
        done = self._done.get(uid)
        key = (entry.phase, entry.namespace) if entry else (done[:2] if done else None)
        if key is None:
            return
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]
