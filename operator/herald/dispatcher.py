"""The due-time scheduler: a schedule of wake-ups, a small cache, and a fixed pool of workers.

kopf's watch feeds `observe()` with every ScheduledPost it sees. The dispatcher keeps a
small projection of each live post (`PostCache`) and its next wake-up (`Schedule`); one
loop moves the posts whose time has come into a fair queue (`FairQueue`), and a fixed
pool of workers takes them from there. A worker reads the post, asks the state machine
(`engine.act`) and applies the decision: a compare-and-swap status write, or a claim's
send and record, which `herald.sender` does per target.

Posts are claimed ahead of their time (`Defaults.claim_ahead_seconds`), so at the due
second only the HTTP request goes out; the record of n8n's acknowledgement trails behind
by `record_grace` and is skipped when n8n's callback got there first. The cache is only
a cache of what the CR statuses say: after a restart the initial listing rebuilds it,
and compare-and-swap writes keep replicas and the sidecar from stepping on each other.
What the dispatcher holds per post while it works on it is one `Track` (herald.track).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from herald import engine, history
from herald.accountstore import AccountStore, Quotas
from herald.cache import Entry, PostCache
from herald.clock import Clock
from herald.kube import KubeClient, KubeError, NotFound
from herald.metrics import Metrics, PhaseCount
from herald.models import Phase
from herald.n8n import N8nClient
from herald.schedule import Schedule
from herald.sender import Sender
from herald.targets import Targets
from herald.track import Track, View
from herald.worker import Workers
from herald.workqueue import FairQueue
from herald.writer import Writer

log = logging.getLogger("herald.dispatcher")
WRITE_BACKOFF_MIN = 1.0
WRITE_BACKOFF_MAX = 60.0
OWN_WRITE_WAIT = 10.0
"""How long events older than our own last write are set aside while the watch catches
up; if the write's echo has not come by then, the post is read again."""
HINTS_MAX = 1000
"""Posts whose watched object is kept to act on without a GET (memory bound)."""


@dataclass(frozen=True)
class DispatchConfig:
    defaults: engine.Defaults
    me: str
    callback_endpoint: str
    callback_key: bytes
    concurrency: int
    circuit_threshold: int
    circuit_window: float
    circuit_open_for: float
    circuit_open_min: float = 10.0
    target_concurrency: dict[str, int] = field(default_factory=dict)
    record_grace: float = 5.0
    """How long after n8n's 2xx the operator waits for the callback before recording the
    acknowledgement itself (skipped when the callback lands first)."""
    quota_namespace: str = "default"
    """Where the accounts' quota slots (Leases) are kept: one namespace every replica
    shares, the operator's own."""
    request_timeout: float = 10.0
    """The longest a webhook request may take (the targets' largest timeout_seconds): a
    claim is sent only while this plus `record_grace` is left before a peer may take it
    over; otherwise it is renewed first."""


class Dispatcher:
    """Schedules and acts on posts. Time comes from `clock`: wall time for what is
    written, monotonic time for the schedule, backoffs and breakers.

    Invariants (uids are ScheduledPost uids; see also Track and Target):
    - `cache` holds every watched post (all but the Published: herald.history) the watch
      has shown and not deleted or seen leave; `tracks` holds a
      Track for a live post exactly while the dispatcher holds something for it.
    - a uid is at most one of: queued, worked on (track.busy), parked, waiting.
    - every live post with time-driven work is scheduled, queued, worked on, parked or
      waiting (nothing is stranded).
    """

    def __init__(
        self,
        config: DispatchConfig,
        kube: KubeClient,
        n8n: N8nClient,
        writer: Writer,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.config = config
        self.kube = kube
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self.cache = PostCache()
        """The watched posts: every one but the Published (herald.history)."""
        self.published: Counter[str] = Counter()
        """Published posts by namespace, as the last history sweep counted them."""
        self.schedule = Schedule(clock.monotonic)
        self.queue = FairQueue()
        self.tracks: dict[str, Track] = {}
        self.targets = Targets(self)
        self.accounts = AccountStore(kube, clock.monotonic)
        self.quotas = Quotas(kube, config.quota_namespace, clock.monotonic)
        self.sender = Sender(self, n8n)
        self.stopping = False
        self.wakeup = asyncio.Event()
        """Set when the earliest wake-up changed: the loop recomputes its sleep."""
        self.workers = Workers(self)
        self.last_beat = clock.monotonic()
        metrics.watch_cache(self._phase_counts, self._backlog)

    def now(self) -> dt.datetime:
        return self.clock.wall()

    def mono(self, at: dt.datetime) -> float:
        """The monotonic reading at wall time `at`."""
        return self.clock.monotonic() + (at - self.clock.wall()).total_seconds()

    def track(self, uid: str, namespace: str) -> Track:
        track = self.tracks.get(uid)
        if track is None:
            track = self.tracks[uid] = Track(uid, namespace)
        return track

    # --- fed by the watch ------------------------------------------------------------

    def observe(self, obj: dict[str, Any], *, own: bool = False) -> View | None:
        """Remember the newest version of a post and when it next needs attention."""
        meta = obj["metadata"]
        uid, rv = meta["uid"], str(meta.get("resourceVersion") or "")
        track = self.tracks.get(uid)
        echo = False
        if own:
            if self.cache.resource_version(uid) == rv:
                return None  # the watch delivered this version already
            track = self.track(uid, meta["namespace"])
            track.written = (rv, self.clock.monotonic())
        elif track is not None and track.written is not None:
            echo = track.written[0] == rv
            if echo or self.clock.monotonic() - track.written[1] > OWN_WRITE_WAIT:
                track.written, track.withheld = None, False
            else:
                # Older than our own write, which the cache already reflects; unless
                # the echo never comes (a relist): then `_plan` reads the post again.
                track.withheld = True
                if not track.busy:
                    self.plan(track, None)
                return None
        try:
            view = View.of(obj)
        except ValidationError as exc:
            log.warning("%s/%s: unreadable, ignoring: %s", meta["namespace"], meta["name"], exc)
            self.forget(uid)
            return None
        self.note(view)
        track = self.tracks.get(uid)
        if not history.watched(view.post):
            # Published: out of the watch (herald.history), and out of memory at once. A
            # turn under way ends in the worker, which then drops the track.
            if track is None or not track.busy:
                self.forget(uid)
            return view
        if track is not None and track.busy:
            if not own and not echo:
                track.dirty = True  # look again when the work under way ends
            return view
        if engine.needs_plan(view.post):
            track = self.track(uid, view.post.namespace)
            if not own and len(self.tracks) < HINTS_MAX:
                track.view = view
            self.enqueue(track)
            return view
        self.plan(track, view.post)
        if track is not None:
            if self.cache.get(uid) is None:
                self.finished(track)
            else:
                self.prune(track)
        return view

    def note(self, view: View) -> None:
        """Take in a version of the post: the cache, and what it settles in the track."""
        post = view.post
        wake = engine.wake_at(post, self.config.defaults, self.config.me, self.now())
        entry = Entry(
            post.namespace, post.name, post.uid, post.generation, view.phase, view.resource_version
        )
        if history.watched(post):
            self.cache.put(entry, pending=wake is not None or engine.needs_plan(post))
        else:
            self.cache.remove(post.uid)
        track = self.tracks.get(post.uid)
        if track is not None:
            track.view = view
            self.sender.settle(track, post.status)

    def forget(self, uid: str) -> None:
        """The post is gone: drop it; a claim not sent yet is never sent."""
        self.cache.remove(uid)
        self.schedule.cancel(uid)
        self.queue.discard(uid)
        track = self.tracks.pop(uid, None)
        if track is not None:
            self.sender.release(track)
            self.targets.drop(track)

    def finished(self, track: Track) -> None:
        """The post is finished (or gone): nothing is held for it any more. A late event
        from before our own last write costs a read, never a wrong write (CAS)."""
        if self.tracks.get(track.uid) is track:
            del self.tracks[track.uid]
            if self.cache.get(track.uid) is None:
                self.schedule.cancel(track.uid)
        self.targets.drop(track)

    def plan(self, track: Track | None, post: engine.Post | None) -> None:
        """Schedule the next wake-up from the freshest view of the post."""
        if track is not None:
            best = track.claim or (track.sent.view if track.sent else None) or track.view
            post = best.post if best is not None else post
        uid = track.uid if track is not None else post.uid if post is not None else None
        if uid is None:
            return
        whens: list[float] = []
        if track is not None and (track.parked or track.waiting) and track.claim is not None:
            whens.append(self.sender.renew_at(track.claim.post.status))
        elif track is not None and track.sent is not None:
            if track.sent.outcome is not None:
                whens.append(self.mono(track.sent.at) + self.config.record_grace)
        elif post is not None and not (track is not None and track.waiting):
            at = engine.wake_at(post, self.config.defaults, self.config.me, self.now())
            if at is not None:
                whens.append(self.mono(at))
            if engine.needs_plan(post):
                whens.append(self.clock.monotonic())  # e.g. after a failed write
        if track is not None and track.withheld and track.written is not None:
            whens.append(track.written[1] + OWN_WRITE_WAIT)
        if track is not None and track.failures:
            # A failed read leaves no view to plan from: the backoff is the wake-up.
            whens.append(track.not_before)
        if not whens:
            self.schedule.cancel(uid)
            return
        self.schedule_at(uid, max(min(whens), track.not_before if track is not None else 0.0))

    def schedule_at(self, uid: str, when: float) -> None:
        """Wake `uid` at monotonic time `when`."""
        if self.schedule.set(uid, when):
            self.wakeup.set()

    def enqueue(self, track: Track, *, urgent: bool = False) -> None:
        self.schedule.cancel(track.uid)
        if track.busy:
            track.dirty = True
            return
        self.targets.drop(track)  # out of its target's lists: it is looked at now
        self.queue.put(track.uid, track.namespace, urgent=urgent)

    def requeue(self, track: Track) -> None:
        """A parked or waiting post's turn has come (it keeps its turn)."""
        self.schedule.cancel(track.uid)
        if track.busy:
            track.dirty = True
        else:
            self.queue.put(track.uid, track.namespace, urgent=True)

    async def run(self) -> None:
        await self.workers.run()

    async def stop(self, grace: float = 25.0) -> None:
        """Stop claiming; let sends under way finish and be recorded; give back the
        claims not sent yet, so another replica can take them at once."""
        await self.workers.stop(grace)

    async def handle(self, uid: str) -> None:
        """One worker's turn on one post (the workers call it; so do tests)."""
        await self.workers.handle(uid)

    # --- for the workers and the sender: reading, backing off ---------------------------

    def prune(self, track: Track) -> None:
        if track.idle() and self.tracks.get(track.uid) is track:
            del self.tracks[track.uid]

    async def read(self, track: Track, *, fresh: bool = False) -> View | None:
        """The post as it is now: the version the watch last showed if we hold it, else
        a GET (which also settles a withheld update)."""
        entry = self.cache.get(track.uid)
        if entry is None:
            return None
        view = track.view
        if (
            not fresh
            and not track.withheld
            and view is not None
            and view.resource_version == entry.resource_version
        ):
            return view
        try:
            obj = await self.kube.get_post(entry.namespace, entry.name)
        except NotFound:
            self.forget(entry.uid)
            return None
        except KubeError as exc:
            log.warning("%s/%s: read failed: %s", entry.namespace, entry.name, exc)
            self.backoff(track)
            return None
        if obj["metadata"]["uid"] != entry.uid:
            self.forget(entry.uid)  # deleted and re-created under the same name
            return None
        view = View.of(obj)
        track.written, track.withheld = None, False  # the server's view supersedes both
        self.note(view)
        return view

    def backoff(self, track: Track, cap: float | None = None) -> None:
        """A write or read failed: try this post again later, doubling up to a minute
        (or `cap`, when a take-over deadline is near)."""
        track.failures += 1
        delay = min(WRITE_BACKOFF_MAX, WRITE_BACKOFF_MIN * 2 ** (track.failures - 1))
        if cap is not None:
            delay = min(delay, cap)
        track.not_before = self.clock.monotonic() + delay
        self.schedule_at(track.uid, track.not_before)

    # --- views for metrics and probes --------------------------------------------------

    def _phase_counts(self) -> Iterable[PhaseCount]:
        counts = [PhaseCount(p, ns, n) for p, ns, n in self.cache.counts()]
        published = Phase.PUBLISHED.value
        return counts + [PhaseCount(published, ns, n) for ns, n in self.published.items()]

    def count_published(self, counts: Counter[str]) -> None:
        """herald.history's count of the Published posts (not in the cache), by namespace."""
        self.published = counts

    def _backlog(self) -> int:
        return len(self.queue) + self.targets.backlog()

    def heartbeat_age(self) -> float:
        return self.clock.monotonic() - self.last_beat
