"""Claim -> send -> record: what happens to a claim this instance holds, per target.

The dispatcher hands over a post once this instance holds its claim. The sender keeps
one `Target` record per n8n target (its concurrency limit, the claims parked behind it,
the posts waiting for its half-open probe, its breaker) and takes each claim through:

- ledger: before the first send of an attempt series, the post's publication record
  (`herald.ledger`) is created or read: a publication another object sent or is sending
  is not sent again. It is asked when the claim is written ahead of the due second, so
  that second sends only the request; a post deleted before its send releases the record.
- send: only while a peer cannot take the claim over before the request and its record
  are done (else the claim is renewed first: one more write, only for late claims);
  a claim behind a full target parks, a post behind a probe under way waits, both
  without writing; an open circuit gives the claim back.
- from the moment the request may leave, the attempt is spent (`Track.sent`): whatever
  the request raises, its number is never handed back and never sent again.
- record: the outcome is written with a compare-and-swap, retried before a peer may
  take the claim over; it is skipped when n8n's callback moved the post on first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from herald import engine, signing
from herald.circuit import State
from herald.kube import Conflict, KubeError, NotFound
from herald.metrics import CIRCUIT_STATES
from herald.models import ErrorClass, ScheduledPostStatus
from herald.n8n import N8nClient, payload
from herald.track import Ledgered, Sent, Target, Track, View
from herald.writer import post_context

if TYPE_CHECKING:
    from herald.dispatcher import Dispatcher

log = logging.getLogger("herald.sender")
RENEW_SLACK = 0.5
"""Seconds of room kept on top of a request and its record before a take-over."""


class Sender:
    """The send side of one Dispatcher: target records and the claim's way out."""

    def __init__(self, dispatcher: Dispatcher, n8n: N8nClient) -> None:
        self.d = dispatcher
        self.n8n = n8n
        config = dispatcher.config
        self.budget = config.request_timeout + config.record_grace + RENEW_SLACK

    # --- bookkeeping the dispatcher calls --------------------------------------------

    def settle(self, track: Track, status: ScheduledPostStatus) -> None:
        """A newer status came in: drop what it shows as over or taken over."""
        me = self.d.config.me
        if track.claim is not None and engine.moved_past(
            status, track.claim.post.status.attempt, me
        ):
            track.claim = None
            self.d.targets.drop(track)
        sent = track.sent
        if (
            sent is not None
            and sent.outcome is not None
            and engine.moved_past(status, sent.attempt, me)
        ):
            track.sent = None  # n8n's callback (or someone) moved the attempt on

    def renew_at(self, status: ScheduledPostStatus) -> float:
        """When a parked claim must be renewed so that it never looks orphaned: just after
        `claim_is_old` turns true (at exactly `budget` before the take-over it is not yet,
        and a wake-up then would only park the claim again), still RENEW_SLACK / 2 ahead
        of what a request and its record need."""
        takeover = engine.takeover_at(status, self.d.config.defaults)
        return self.d.mono(takeover) - self.budget + RENEW_SLACK / 2

    # --- send ----------------------------------------------------------------------------

    async def send(self, track: Track) -> None:
        held = track.claim
        assert held is not None
        post = held.post
        if engine.claim_is_old(post.status, self.d.now(), self.d.config.defaults, self.budget):
            renewed = await self._renew(track, held)
            if renewed is None:
                return
            held, post = renewed, renewed.post
        if post.status.account is None:
            # Claimed by an operator that did not resolve accounts: resolve it now.
            await self.give_back(track, None, "claimed without a resolved account")
            return
        if not await self._ledger(track, held):
            return
        target = self.d.targets.get(post.spec.target)
        if target.full(track.uid):
            # Aside, without holding a worker; renewed before a peer may take it over.
            target.parked[track.uid] = None
            track.parked = target.name
            return
        now = self.d.clock.monotonic()
        gate = target.gate(now)
        if gate is State.HALF_OPEN:
            self.d.targets.wait(track, target)
            return
        probe = None if gate is State.OPEN else target.take_slot(track.uid, now)
        if probe is None:
            retry = target.breaker.retry_at(now)
            self.d.metrics.dispatch_total.labels(target.name, "deferred_circuit_open").inc()
            until = self.d.now() + dt.timedelta(seconds=retry - now)
            await self.give_back(track, until, f"circuit for target {target.name} is open")
            return
        # From here on the request may reach n8n: the attempt is spent.
        track.claim, track.probe, track.turn = None, probe, None
        sent = track.sent = Sent(held, self.d.now())
        try:
            sent.outcome = await self._request(post)
        except Exception as exc:  # whatever it was, the request may have been sent
            log.warning(
                "%s/%s: attempt %s: the request raised %r; counted as sent",
                post.namespace,
                post.name,
                sent.attempt,
                exc,
                extra=post_context(post),
            )
            sent.outcome = engine.Failure(
                ErrorClass.TRANSIENT, "RequestError", f"{type(exc).__name__}: {exc}"[:300]
            )
        finally:
            if sent.outcome is not None:
                self._count(target, sent.outcome, probe)
            track.probe = False
            self.d.targets.wake(target, target.release_slot(track.uid, probe))
        outcome = sent.outcome
        if (
            isinstance(outcome, engine.Accepted)
            and outcome.published is None
            and not self.d.stopping
        ):
            return  # the record trails by record_grace (planned by the dispatcher)
        await self.record(track)

    async def prepare(self, track: Track) -> None:
        """A claim was just written ahead of its due second: ask the ledger now, so the
        due second sends only the request. A ledger unreachable now is asked again then."""
        held = track.claim
        assert held is not None
        await self._ledger(track, held, ahead=True)

    def release(self, track: Track) -> None:
        """The post is gone with a claim never sent: release the record this instance
        created for it, so the same manifest applied again is sent at its due second and
        does not wait for a take-over. Only before the claim's take-over deadline: until
        then no peer can have taken the claim (and the record) over and sent."""
        held, ledgered, writer = track.claim, track.ledgered, self.d.writer
        if (
            held is None
            or track.sent is not None
            or ledgered is None
            or ledgered.created is None
            or ledgered.attempt != held.post.status.attempt
            or writer.ledger is None
            or self.d.now() >= engine.takeover_at(held.post.status, self.d.config.defaults)
        ):
            return
        uid, version = ledgered.created
        writer.background(writer.ledger.release(held.post.namespace, ledgered.name, uid, version))

    async def _ledger(self, track: Track, held: View, *, ahead: bool = False) -> bool:
        """The publication ledger's say before the first send of an attempt series: True
        to send. Otherwise the claim is given back (another object's send may be under
        way), or the post ends AlreadyPublished, or (the ledger unreachable) it backs off
        with the claim kept (`ahead`: it is asked again at the due second)."""
        ledger = self.d.writer.ledger
        post = held.post
        if ledger is None or not engine.first_of_series(post.status):
            return True
        name, attempt = engine.publication_name(post), post.status.attempt
        known = track.ledgered
        if known is not None and (known.name, known.attempt) == (name, attempt):
            return True
        now = self.d.now()
        try:
            checked = await ledger.check(post, now, self.d.config.defaults)
        except KubeError as exc:
            log.warning(
                "%s/%s: cannot reach the publication ledger (%s); not sending yet",
                post.namespace,
                post.name,
                exc,
                extra=post_context(post),
            )
            if not ahead:
                self.d.backoff(track)
            return False
        verdict = checked.decision
        if verdict.step in (engine.LedgerStep.SEND, engine.LedgerStep.TAKE_OVER):
            track.ledgered = Ledgered(name, attempt, checked.created)
            return True
        if verdict.step is engine.LedgerStep.WAIT:
            why = "another object of this post holds its publication record (send under way)"
            await self.give_back(track, verdict.until, why)
            return False
        track.claim = None
        self.d.targets.drop(track)
        try:
            updated = await self.d.writer.apply(held.obj, post, verdict.decision, now)
        except NotFound:
            self.d.forget(track.uid)
            return False
        except KubeError:
            track.dirty = True  # changed meanwhile, or unreachable: read and decide again
            return False
        self.d.observe(updated, own=True)
        return False

    async def _request(self, post: engine.Post) -> engine.Outcome:
        attempt = post.status.attempt
        if attempt == 1 and not post.status.history:
            lateness = (self.d.now() - post.spec.publish_at).total_seconds()
            self.d.metrics.publish_lateness.observe(max(0.0, lateness))
        c = self.d.config
        token = signing.callback_token(c.callback_key, post.namespace, post.name, post.uid, attempt)
        body = payload(post, c.callback_endpoint, token)
        key = engine.idempotency_key(engine.fingerprint(post), post.status.retry_epoch)
        with (
            self.d.metrics.in_flight.track_inprogress(),
            self.d.metrics.dispatch_duration.labels(post.spec.target).time(),
        ):
            return await self.n8n.dispatch(post.spec.target, body, idempotency_key=key)

    def _count(self, target: Target, outcome: engine.Outcome, probe: bool) -> None:
        breaker, now = target.breaker, self.d.clock.monotonic()
        if isinstance(outcome, engine.Accepted):
            label = "published" if outcome.published else "accepted"
            breaker.record_success(now)
        elif outcome.retryable:
            label = "transient"
            breaker.record_failure(now, straggler=not probe)
        else:
            label = "permanent"
            # n8n answered, so it is up: a permanent error is the post's problem.
            breaker.record_success(now)
        self.d.metrics.dispatch_total.labels(target.name, label).inc()
        state = CIRCUIT_STATES[breaker.state(now).value]
        self.d.metrics.circuit_state.labels(target.name).set(state)

    # --- writes: renew, give back, record ------------------------------------------------

    async def _renew(self, track: Track, held: View) -> View | None:
        """Move the claim's take-over deadline on before sending. None: the claim is not
        ours to send any more (or the write failed; the post is looked at again)."""
        decision = engine.renew_claim(held.post, self.d.now())
        try:
            updated = await self.d.writer.apply(held.obj, held.post, decision, self.d.now())
        except Conflict:
            track.claim = None  # taken over, edited or moved on: read and decide again
            track.dirty = True
            return None
        except NotFound:
            self.d.forget(track.uid)
            return None
        except KubeError:
            self.d.backoff(track)
            return None
        renewed = self.d.observe(updated, own=True) or View.of(updated)
        track.claim = renewed
        return renewed

    async def give_back(self, track: Track, until: dt.datetime | None, why: str) -> None:
        """The one way a claim not sent goes back: the attempt number is handed back
        unless the claim took an orphan over (that number may have gone out)."""
        held = track.claim
        if held is None:
            return
        track.claim = None
        self.d.targets.drop(track)
        now = self.d.now()
        decision = engine.defer_claim(held.post, now, until, why, spent=track.reclaimed)
        try:
            updated = await self.d.writer.apply(held.obj, held.post, decision, now)
        except NotFound:
            self.d.forget(track.uid)
            return
        except KubeError:
            self.d.backoff(track)  # the claim stays written: looked at again later
            return
        self.d.observe(updated, own=True)

    async def record(self, track: Track) -> None:
        """Write the outcome of an attempt this instance sent. Never drops it on a
        failed write: retried with backoff, in time before a peer may take over."""
        sent = track.sent
        if sent is None or sent.outcome is None:
            return
        me, defaults = self.d.config.me, self.d.config.defaults
        latest = track.view
        if latest is not None and engine.moved_past(latest.post.status, sent.attempt, me):
            track.sent = None
            return
        view = sent.view
        for _ in range(3):
            post, now = view.post, self.d.now()
            at = sent.at if isinstance(sent.outcome, engine.Accepted) else now
            decision = engine.dispatch_result(post, at, sent.outcome, defaults, me)
            if decision.status is None:
                track.sent = None
                return  # a callback or another instance already moved the post on
            try:
                updated = await self.d.writer.apply(view.obj, post, decision, now)
            except Conflict:
                fresh = await self.d.read(track, fresh=True)
                if fresh is None:
                    return  # backing off (or gone); `sent` is kept
                view = fresh
                continue
            except NotFound:
                self.d.forget(track.uid)
                return
            except KubeError as exc:
                log.warning(
                    "%s/%s: could not record the outcome of attempt %s (%s); retrying",
                    post.namespace,
                    post.name,
                    sent.attempt,
                    exc,
                    extra=post_context(post),
                )
                left = self.d.mono(engine.takeover_at(sent.view.post.status, defaults))
                self.d.backoff(track, cap=max(0.1, (left - self.d.clock.monotonic()) / 4))
                return
            track.sent = None
            track.failures, track.not_before = 0, 0.0
            self.d.observe(updated, own=True)
            return
        self.d.backoff(track)

    async def shut_down(self, deadline: float) -> None:
        """Record the sends that ended; give back the claims not sent."""
        for track in [t for t in self.d.tracks.values() if t.sent is not None]:
            if self.d.clock.monotonic() >= deadline:
                return
            with contextlib.suppress(KubeError):
                await self.record(track)
        for track in [t for t in self.d.tracks.values() if t.claim is not None]:
            if self.d.clock.monotonic() >= deadline:
                return
            with contextlib.suppress(KubeError):
                await self.give_back(track, None, "the operator is shutting down")
