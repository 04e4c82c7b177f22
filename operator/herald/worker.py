"""The dispatcher's workers: the loop that moves due posts to the queue, and the work on
one post, which reads it, asks the state machine (`engine.act`) and applies the decision.

A fixed pool of workers takes uids from the fair queue. A worker's turn on a post is
read -> decide -> apply: the version of the post the dispatcher holds (or a GET), the
engine's decision, then a compare-and-swap status write, a delete, or the claim's send,
which `herald.sender` does. After the turn the post's next wake-up is planned from the
freshest version seen, and its Track is dropped when nothing is held any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from herald import engine
from herald.accounts import HOLD_RECHECK_SECONDS, Held, Refused, quota_message
from herald.cache import Entry
from herald.kube import Conflict, KubeError, NotFound
from herald.models import AccountRef
from herald.track import Track, View
from herald.writer import post_context

if TYPE_CHECKING:
    from herald.dispatcher import Dispatcher

log = logging.getLogger("herald.dispatcher")
HEARTBEAT_SECONDS = 1.0


class Workers:
    """The loop and the worker pool of one Dispatcher. `_working` counts the turns under
    way; `_idle` is set when it drops to zero."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self._working = 0
        self._idle = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        log.info("dispatcher started as %s", self.d.config.me)
        self._workers = [
            asyncio.create_task(self._worker(), name=f"herald-worker-{i}")
            for i in range(self.d.config.concurrency)
        ]
        try:
            while not self.d.stopping:
                self.d.last_beat = self.d.clock.monotonic()
                self.d.metrics.heartbeat.set(self.d.clock.wall().timestamp())
                self.move_due()
                delay = HEARTBEAT_SECONDS
                first = self.d.schedule.next_at()
                if first is not None:
                    delay = min(delay, max(0.0, first - self.d.clock.monotonic()))
                self.d.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.d.wakeup.wait(), timeout=delay)
        except asyncio.CancelledError:
            for task in self._workers:
                task.cancel()
            raise

    def move_due(self) -> None:
        """Queue the posts whose wake-up time has come."""
        for uid in self.d.schedule.pop_due():
            entry = self.d.cache.get(uid)
            if entry is None:
                continue
            track = self.d.track(uid, entry.namespace)
            # Sends are late when they wait; records guard against a re-send.
            self.d.enqueue(track, urgent=track.claim is not None or track.sent is not None)

    async def _worker(self) -> None:
        while True:
            uid = await self.d.queue.get()
            if self.d.stopping:
                return  # shutting down: finish what is under way, start nothing new
            await self.handle(uid)

    async def handle(self, uid: str) -> None:
        """One worker's turn on one post."""
        entry = self.d.cache.get(uid)
        if entry is None:
            return
        track = self.d.track(uid, entry.namespace)
        track.busy = True
        self._working += 1
        try:
            await self._work(track, entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error while handling post uid=%s", uid)
            self.d.backoff(track)
        finally:
            track.busy = False
            self._working -= 1
            if not self._working:
                self._idle.set()
            self._after(track)

    def _after(self, track: Track) -> None:
        """Work on a post ended: plan what comes next, and drop the track if idle."""
        if self.d.tracks.get(track.uid) is not track:
            return  # forgotten meanwhile
        if self.d.cache.get(track.uid) is None:
            self.d.finished(track)
            return
        if track.dirty:
            track.dirty = False
            self.d.enqueue(track)  # the watch brought news meanwhile
            return
        if track.uid not in self.d.queue:
            self.d.targets.release_turn(track)  # woken, but it did not send
            self.d.plan(track, None)
        self.d.prune(track)

    async def stop(self, grace: float = 25.0) -> None:
        self.d.stopping = True
        self.d.wakeup.set()
        deadline = self.d.clock.monotonic() + grace
        if self._working:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
        for task in self._workers:
            task.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=1)
        await self.d.sender.shut_down(deadline)
        await self.d.writer.drain()

    # --- acting on one post: read -> decide -> apply -----------------------------------

    async def _work(self, track: Track, entry: Entry) -> None:
        if track.sent is not None:
            await self.d.sender.record(track)
            return
        held = track.claim
        if (
            held is not None
            and held.post.generation == entry.generation
            and self.d.now() >= engine.send_at(held.post.status)
        ):
            await self.d.sender.send(track)
            return
        view = await self.d.read(track)
        for _ in range(3):
            if view is None:
                return
            decision = engine.act(view.post, self.d.now(), self.d.config.defaults, self.d.config.me)
            view = await self._apply(track, view, decision)
        if view is not None:
            self.d.backoff(track)  # lost the compare-and-swap three times running

    async def _apply(self, track: Track, view: View, decision: engine.Decision) -> View | None:
        """Carry a decision out; returns a fresh view to decide again after a lost
        compare-and-swap, else None."""
        post = view.post
        if decision.action is engine.Action.SEND:
            track.claim = view  # ours, and not sent (else `sent` would hold it)
            await self.d.sender.send(track)
            return None
        if decision.action is engine.Action.DELETE:
            await self._delete(track, view)
            return None
        if decision.status is None:
            return None
        if decision.action is engine.Action.CLAIM:
            vetted = await self._vet_account(track, post, decision)
            if vetted is None:
                return None
            decision = vetted
        if decision.action is engine.Action.CLAIM and self.d.targets.held_back(track, post):
            return None
        now = self.d.now()
        try:
            updated = await self.d.writer.apply(view.obj, post, decision, now)
        except Conflict:
            return await self.d.read(track, fresh=True)
        except NotFound:
            self.d.forget(track.uid)
            return None
        except KubeError:
            self.d.backoff(track)
            return None
        track.failures, track.not_before = 0, 0.0
        claimed = self.d.observe(updated, own=True) or View.of(updated)
        if decision.action is engine.Action.CLAIM:
            track.claim = claimed
            track.reclaimed = any(e.reason == engine.Reason.RECLAIMED for e in decision.events)
            if self.d.now() >= engine.send_at(claimed.post.status):
                await self.d.sender.send(track)
            else:
                await self.d.sender.prepare(track)
        return None

    def _not_yet(self, track: Track, post: engine.Post, what: str, exc: KubeError) -> None:
        """The accounts or quotas could not be read: no claim now, back off."""
        log.warning(
            "%s/%s: cannot %s (%s); not claiming yet",
            post.namespace,
            post.name,
            what,
            exc,
            extra=post_context(post),
        )
        self.d.backoff(track)

    async def _vet_account(
        self, track: Track, post: engine.Post, claim: engine.Decision
    ) -> engine.Decision | None:
        """The claim with the account it is sent as, or, when the post may not publish
        as its account, the decision that fails (or holds) it instead: nothing of a
        refused post is ever sent. None: the accounts could not be read (backing off)."""
        spec = post.spec
        try:
            found = await self.d.accounts.resolve(
                post.namespace, spec.account, spec.channel, spec.target
            )
        except KubeError as exc:
            self._not_yet(track, post, "read its account", exc)
            return None
        now = self.d.now()
        if isinstance(found, Refused):
            return engine.account_refused(post, now, found.reason, found.message)
        if isinstance(found, Held):
            return engine.account_held(post, now, found.message, HOLD_RECHECK_SECONDS)
        account = found.account
        if account.spec.limits is not None:
            try:
                taken = await self.d.quotas.take(account, post.uid, now)
            except KubeError as exc:
                self._not_yet(track, post, "count its account's quota", exc)
                return None
            await self.d.quotas.report(account, taken)
            if taken.full is not None:
                msg = quota_message(account, taken.full, post.namespace)
                return engine.quota_exceeded(post, now, taken.full.end, msg)
        ref = AccountRef(kind=account.kind, name=account.name, handle=account.spec.handle)
        return engine.with_account(claim, ref)

    async def _delete(self, track: Track, view: View) -> None:
        post = view.post
        try:
            await self.d.kube.delete_post(
                post.namespace, post.name, post.uid, view.resource_version
            )
        except NotFound:
            pass
        except Conflict:
            track.dirty = True  # edited or retried meanwhile: look again
            return
        except KubeError:
            self.d.backoff(track)
            return
        phase = post.status.phase.value if post.status.phase else "Unknown"
        self.d.metrics.deleted.labels(phase).inc()
        log.info(
            "%s/%s: deleted, %s and past its TTL",
            post.namespace,
            post.name,
            phase,
            extra=post_context(post),
        )
        self.d.forget(post.uid)
