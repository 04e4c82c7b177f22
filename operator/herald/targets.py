"""The dispatcher's n8n targets: one `Target` record each, and the bookkeeping around them.

Which claims are parked behind a full target and whose turn it is when a slot frees,
which posts wait for a half-open probe and when they are woken, and whether a post may
be claimed at all (`held_back`: not while its target's circuit is open or its probe is
out, so nothing is written that would only be given back).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from herald import engine
from herald.circuit import CircuitBreaker, State
from herald.track import Target, Track
from herald.writer import post_context

if TYPE_CHECKING:
    from herald.dispatcher import Dispatcher

log = logging.getLogger("herald.dispatcher")


class Targets:
    """Target records by name, created on first use (never for an unknown target: the
    engine fails such a post before anything is claimed)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.by_name: dict[str, Target] = {}

    def get(self, name: str) -> Target:
        target = self.by_name.get(name)
        if target is None:
            c = self.d.config
            limit = c.target_concurrency.get(name) or self._default_limit()
            breaker = CircuitBreaker(
                c.circuit_threshold, c.circuit_window, c.circuit_open_for, c.circuit_open_min
            )
            target = self.by_name[name] = Target(name, limit, breaker)
        return target

    def _default_limit(self) -> int:
        """Unset per-target limit: with several targets, half the workers each, so one
        slow target cannot hold every slot; with one target, all of them."""
        targets = self.d.config.defaults.targets or frozenset()
        if len(targets) > 1:
            return max(1, self.d.config.concurrency // 2)
        return self.d.config.concurrency

    def drop(self, track: Track) -> None:
        """The post leaves its target's parked/waiting list; the turn passes on."""
        names = {track.parked, track.waiting, track.turn} - {None}
        track.parked = track.waiting = track.turn = None
        for name in names:
            assert name is not None
            target = self.get(name)
            self.wake(target, target.drop(track.uid))

    def release_turn(self, track: Track) -> None:
        """A woken parked claim did not use its slot: the next one gets it."""
        if track.turn is not None:
            target = self.get(track.turn)
            track.turn = None
            target.turns.discard(track.uid)
            self.wake(target, target.wake())

    def wake(self, target: Target, uids: list[str]) -> None:
        for uid in uids:
            track = self.d.tracks.get(uid)
            if track is None:
                target.drop(uid)  # cannot happen: forget() drops it first
                continue
            if uid in target.turns:
                track.parked, track.turn = None, target.name
            else:
                track.waiting = None
            self.d.requeue(track)

    def held_back(self, track: Track, post: engine.Post) -> bool:
        """Before a claim is written: is the target's circuit open or its probe out?
        Then the post waits without writing anything."""
        target = self.get(post.spec.target)
        now = self.d.clock.monotonic()
        gate = target.gate(now)
        if gate is State.OPEN:
            self.d.metrics.dispatch_total.labels(target.name, "deferred_circuit_open").inc()
            log.info(
                "%s/%s deferred: circuit for target %s is open",
                post.namespace,
                post.name,
                target.name,
                extra=post_context(post),
            )
            track.not_before = target.breaker.retry_at(now)
            self.d.schedule_at(track.uid, track.not_before)
            return True
        if gate is State.HALF_OPEN:
            self.wait(track, target)
            return True
        return False

    def wait(self, track: Track, target: Target) -> None:
        target.waiting[track.uid] = None
        track.waiting = target.name

    def backlog(self) -> int:
        return sum(len(t.parked) + len(t.waiting) for t in self.by_name.values())
