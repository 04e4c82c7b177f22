"""The due-time scheduler: a schedule of wake-ups, a small cache, and a fixed pool of workers.

kopf's watch feeds `observe()` with every ScheduledPost it sees. The dispatcher keeps a
small projection of each live post (`PostCache`) and its next wake-up (`Schedule`); one
loop moves the posts whose time has come into a fair queue (`FairQueue`), and a fixed
pool of workers takes them from there: read the post, ask the state machine
(`engine.act`), write the status with a compare-and-swap, send the webhook.

Posts are claimed ahead of their time (`Defaults.claim_ahead_seconds`), so at the due
second only the HTTP request goes out; the record of n8n's acknowledgement trails behind
by `record_grace` and is skipped when n8n's callback got there first. The cache is only
a cache of what the CR statuses say: after a restart the initial listing rebuilds it,
and compare-and-swap writes keep replicas and the sidecar from stepping on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from herald import engine, signing
from herald.cache import Entry, PostCache
from herald.circuit import CircuitBreaker, State
from herald.kube import Conflict, KubeClient, KubeError, NotFound
from herald.metrics import CIRCUIT_STATES, Metrics, PhaseCount
from herald.models import RETRY_ANNOTATION, Phase, ScheduledPostStatus
from herald.n8n import N8nClient, payload
from herald.schedule import Schedule
from herald.workqueue import FairQueue
from herald.writer import Writer, post_context

log = logging.getLogger("herald.dispatcher")
HEARTBEAT_SECONDS = 1.0
WRITE_BACKOFF_MIN = 1.0
WRITE_BACKOFF_MAX = 60.0
OWN_WRITE_WAIT = 10.0
"""How long events older than our own last write are ignored while the watch catches up."""


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


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


@dataclass
class _Sent:
    """An attempt this instance sent whose outcome is not recorded in the status yet."""

    obj: dict[str, Any]
    attempt: int
    at: dt.datetime
    outcome: engine.Outcome


class Dispatcher:
    """Schedules and acts on posts. Time comes from `clock` (wall time, seconds).

    Invariants (uids are ScheduledPost uids):
    - `cache` holds every post the watch has shown and not deleted; `schedule` holds a
      wake-up for a live post exactly when the state machine has time-driven work for it
      or a write must be retried; a uid being worked on is in `_busy` and not scheduled.
    - a uid is in the queue, in `_busy`, or in neither; never both.
    - `_claims[uid]` is the object as this instance's claim wrote it, for a claim not
      sent yet; `_sent[uid]` an accepted attempt whose record is pending. A uid is in at
      most one of them, and only while the cache shows it Publishing.
    - `_written[uid]` is the resourceVersion of our own last write and when it was
      made: until the watch delivers that version, older events do not reschedule.
    - `_failures[uid]` counts consecutive failed writes (the per-post backoff).
    """

    def __init__(
        self,
        config: DispatchConfig,
        kube: KubeClient,
        n8n: N8nClient,
        writer: Writer,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.kube = kube
        self.n8n = n8n
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self.cache = PostCache()
        self.schedule = Schedule(clock)
        self.queue = FairQueue()
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._hints: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, dict[str, Any]] = {}
        self._sent: dict[str, _Sent] = {}
        self._written: dict[str, tuple[str, float]] = {}
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        self._target_slots: dict[str, asyncio.Semaphore] = {}
        self._parked: dict[str, list[str]] = {}
        self._parked_uids: set[str] = set()
        self._reclaimed: set[str] = set()
        self._fresh: dict[str, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        self.last_beat = clock()
        metrics.watch_cache(self._phase_counts, self._backlog)

    def now(self) -> dt.datetime:
        ts = self.clock()
        return _utc(round(ts, 3))

    # --- fed by the watch ------------------------------------------------------------

    def observe(self, obj: dict[str, Any], *, own: bool = False) -> None:
        """Remember the newest version of a post and when it next needs attention."""
        meta = obj["metadata"]
        uid = meta["uid"]
        rv = str(meta.get("resourceVersion") or "")
        written = self._written.get(uid)
        echo = False
        if own:
            if self.cache.resource_version(uid) == rv:
                return  # the watch delivered this version already
            self._written[uid] = (rv, self.clock())
        elif written is not None:
            echo = written[0] == rv
            if echo or self.clock() - written[1] > OWN_WRITE_WAIT:
                del self._written[uid]
            else:
                return  # older than our own write, which the cache already reflects
        try:
            post = engine.from_object(obj)
        except ValidationError as exc:
            log.warning("%s/%s: unreadable, ignoring: %s", meta["namespace"], meta["name"], exc)
            self.forget(uid)
            return
        status = post.status
        wake = engine.wake_at(post, self.config.defaults, self.config.me)
        self.cache.put(
            Entry(
                meta["namespace"],
                meta["name"],
                uid,
                post.generation,
                status.phase.value if status.phase else "Pending",
                rv,
            ),
            pending=wake is not None or needs_plan(obj, post),
        )
        self._settle_sent(uid, post)
        claim = self._claims.get(uid)
        if claim is not None and self._moved_past(status, claim["status"]["attempt"]):
            del self._claims[uid]
        if uid in self._busy:
            if own:
                self._fresh[uid] = obj  # what the work under way wrote last
            elif not echo:
                self._dirty.add(uid)  # look again when the work under way ends
            return
        if needs_plan(obj, post):
            if not own and len(self._hints) < 1000:
                self._hints[uid] = obj
            self._enqueue(uid, meta["namespace"])
            return
        self._plan_wake(uid, post)

    def forget(self, uid: str) -> None:
        """The post is gone: drop it; a pending dispatch never happens."""
        self.cache.remove(uid)
        self.schedule.cancel(uid)
        self.queue.discard(uid)
        for table in (
            self._hints,
            self._claims,
            self._sent,
            self._written,
            self._failures,
            self._fresh,
        ):
            table.pop(uid, None)
        self._not_before.pop(uid, None)
        self._parked_uids.discard(uid)
        self._reclaimed.discard(uid)

    def _settle_sent(self, uid: str, post: engine.Post) -> None:
        sent = self._sent.get(uid)
        if sent is None:
            return
        if self._moved_past(post.status, sent.attempt):
            # n8n's callback (or someone) moved the attempt on: no record needed.
            del self._sent[uid]

    def _moved_past(self, status: ScheduledPostStatus, attempt: int) -> bool:
        """Does this status show our claimed `attempt` as over or taken over? An event
        older than our claim (a lower attempt) does not."""
        if status.attempt != attempt:
            return status.attempt > attempt
        return (
            status.phase is not Phase.PUBLISHING
            or status.dispatched_at is not None
            or status.claimed_by != self.config.me
        )

    def _plan_wake(self, uid: str, post: engine.Post) -> None:
        if uid in self._sent:
            when: float | None = self._sent[uid].at.timestamp() + self.config.record_grace
        else:
            at = engine.wake_at(post, self.config.defaults, self.config.me)
            when = at.timestamp() if at is not None else None
        if when is None:
            self.schedule.cancel(uid)
            return
        when = max(when, self._not_before.get(uid, 0.0))
        if self.schedule.set(uid, when):
            self._wake.set()

    def _enqueue(self, uid: str, namespace: str, *, urgent: bool = False) -> None:
        self.schedule.cancel(uid)
        if uid in self._busy:
            self._dirty.add(uid)
            return
        self.queue.put(uid, namespace, urgent=urgent)

    # --- the loop and the workers --------------------------------------------------------

    async def run(self) -> None:
        log.info("dispatcher started as %s", self.config.me)
        self._workers = [
            asyncio.create_task(self._worker(), name=f"herald-worker-{i}")
            for i in range(self.config.concurrency)
        ]
        try:
            while not self._stopping:
                self.last_beat = self.clock()
                self.metrics.heartbeat.set(self.last_beat)
                for uid in self.schedule.pop_due():
                    entry = self.cache.get(uid)
                    if entry is None:
                        continue
                    # Sends are late when they wait; records guard against a re-send.
                    urgent = uid in self._claims or uid in self._sent
                    self._enqueue(uid, entry.namespace, urgent=urgent)
                delay = HEARTBEAT_SECONDS
                first = self.schedule.next_at()
                if first is not None:
                    delay = min(delay, max(0.0, first - self.clock()))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except asyncio.CancelledError:
            for task in self._workers:
                task.cancel()
            raise

    async def _worker(self) -> None:
        while True:
            uid = await self.queue.get()
            if self._stopping:
                return  # shutting down: finish what is under way, start nothing new
            entry = self.cache.get(uid)
            if entry is None:
                continue
            self._busy.add(uid)
            latest: dict[str, Any] | None = None
            try:
                latest = await self._work(entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error while handling post uid=%s", uid)
                self._backoff(uid)
            finally:
                self._busy.discard(uid)
                if not self._busy:
                    self._idle.set()
                self._after(uid, latest)

    def _after(self, uid: str, latest: dict[str, Any] | None) -> None:
        """Work on a post ended: plan what comes next from the freshest view we have."""
        latest = self._fresh.pop(uid, None) or latest
        entry = self.cache.get(uid)
        if entry is None or uid in self.schedule or uid in self.queue or uid in self._parked_uids:
            self._dirty.discard(uid)
            return
        if uid in self._dirty:
            self._dirty.discard(uid)
            self._enqueue(uid, entry.namespace)  # the watch brought news meanwhile
            return
        if uid in self._claims:
            latest = self._claims[uid]
        elif uid in self._sent:
            latest = self._sent[uid].obj
        if latest is not None:
            self._plan_wake(uid, engine.from_object(latest))

    async def stop(self, grace: float = 25.0) -> None:
        """Stop claiming; let sends under way finish and be recorded; give back the
        claims not sent yet, so another replica can take them at once."""
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._busy:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace)
        for task in self._workers:
            task.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=1)
        for uid in list(self._sent):
            if loop.time() >= deadline:
                break
            with contextlib.suppress(KubeError):
                await self._record(uid)
        for obj in list(self._claims.values()):
            if loop.time() >= deadline:
                break
            post = engine.from_object(obj)
            decision = engine.defer_claim(
                post,
                self.now(),
                None,
                "the operator is shutting down",
                spent=post.uid in self._reclaimed,
            )
            with contextlib.suppress(KubeError):
                await self.writer.apply(obj, post, decision, self.now())
        await self.writer.drain()

    # --- acting on one post ------------------------------------------------------------

    async def _work(self, entry: Entry) -> dict[str, Any] | None:
        """Do what the post needs now; return the newest version of it this saw."""
        uid = entry.uid
        if uid in self._sent:
            await self._record(uid)
            return None
        claimed = self._claims.get(uid)
        if (
            claimed is not None
            and entry.generation == claimed["metadata"].get("generation", 1)
            and self.now() >= engine.send_at(engine.from_object(claimed).status)
        ):
            await self._send(uid, claimed)
            return None
        obj = await self._read(entry)
        for _ in range(3):
            if obj is None:
                return None
            post = engine.from_object(obj)
            now = self.now()
            decision = engine.act(post, now, self.config.defaults, self.config.me)
            if decision.action is engine.Action.SEND:
                self._claims[uid] = obj
                await self._send(uid, obj)
                return None
            if decision.action is engine.Action.DELETE:
                await self._delete(obj, post)
                return None
            if decision.status is None:
                return obj
            if decision.action is engine.Action.DISPATCH:
                circuit = self._circuit(post.spec.target)
                if circuit.state(self.clock()) is State.OPEN:
                    self._defer_for_circuit(uid, post, circuit)
                    return obj
            try:
                updated = await self.writer.apply(obj, post, decision, now)
            except Conflict:
                obj = await self._read(entry)
                continue
            except NotFound:
                self.forget(uid)
                return None
            except KubeError:
                self._backoff(uid)
                return None
            self._failures.pop(uid, None)
            self._not_before.pop(uid, None)
            self.observe(updated, own=True)
            if decision.action is engine.Action.DISPATCH:
                self._claims[uid] = updated
                if any(e.reason == "Reclaimed" for e in decision.events):
                    self._reclaimed.add(uid)  # may have gone out: never hand its number back
                else:
                    self._reclaimed.discard(uid)
                if self.now() >= engine.send_at(engine.from_object(updated).status):
                    await self._send(uid, updated)
                    return None
            return updated
        self._backoff(uid)
        return None

    async def _read(self, entry: Entry) -> dict[str, Any] | None:
        hint = self._hints.pop(entry.uid, None)
        if hint is not None and hint["metadata"].get("resourceVersion") == entry.resource_version:
            return hint
        try:
            obj = await self.kube.get_post(entry.namespace, entry.name)
        except NotFound:
            self.forget(entry.uid)
            return None
        except KubeError as exc:
            log.warning("%s/%s: read failed: %s", entry.namespace, entry.name, exc)
            self._backoff(entry.uid)
            return None
        if obj["metadata"]["uid"] != entry.uid:
            self.forget(entry.uid)  # deleted and re-created under the same name
            return None
        return obj

    def _backoff(self, uid: str) -> None:
        """A write or read failed: try this post again later, doubling up to a minute."""
        n = self._failures.get(uid, 0) + 1
        self._failures[uid] = n
        delay = min(WRITE_BACKOFF_MAX, WRITE_BACKOFF_MIN * 2 ** (n - 1))
        self._not_before[uid] = self.clock() + delay
        if self.schedule.set(uid, self._not_before[uid]):
            self._wake.set()

    def _defer_for_circuit(self, uid: str, post: engine.Post, circuit: CircuitBreaker) -> None:
        retry = circuit.retry_at(self.clock())
        self.metrics.dispatch_total.labels(post.spec.target, "deferred_circuit_open").inc()
        log.info(
            "%s/%s deferred: circuit for target %s is open",
            post.namespace,
            post.name,
            post.spec.target,
            extra=post_context(post),
        )
        self._not_before[uid] = retry
        if self.schedule.set(uid, retry):
            self._wake.set()

    async def _delete(self, obj: dict[str, Any], post: engine.Post) -> None:
        meta = obj["metadata"]
        try:
            await self.kube.delete_post(
                post.namespace, post.name, post.uid, str(meta.get("resourceVersion"))
            )
        except NotFound:
            pass
        except Conflict:
            self._dirty.add(post.uid)  # edited or retried meanwhile: look again
            return
        except KubeError:
            self._backoff(post.uid)
            return
        phase = post.status.phase.value if post.status.phase else "Unknown"
        self.metrics.deleted.labels(phase).inc()
        log.info(
            "%s/%s: deleted, %s and past its TTL",
            post.namespace,
            post.name,
            phase,
            extra=post_context(post),
        )
        self.forget(post.uid)

    # --- sending ---------------------------------------------------------------------

    async def _send(self, uid: str, obj: dict[str, Any]) -> None:
        post = engine.from_object(obj)
        target = post.spec.target
        slots = self._slots(target)
        if slots.locked():
            # The target is at its own limit: wait aside, without holding a worker.
            self._parked.setdefault(target, []).append(uid)
            self._parked_uids.add(uid)
            return
        circuit = self._circuit(target)
        if not circuit.allow(self.clock()):
            await self._give_back(uid, obj, post, circuit)
            return
        if self._claim_is_old(post):
            # This process was slow (overloaded, paused): before sending, make sure no
            # other replica has taken the claim over as an orphan meanwhile.
            circuit.cancel_probe()
            entry = self.cache.get(uid)
            fresh = await self._read(entry) if entry is not None else None
            if fresh is None or self._moved_past(
                engine.from_object(fresh).status, post.status.attempt
            ):
                self._claims.pop(uid, None)
                return
            if not circuit.allow(self.clock()):
                await self._give_back(uid, obj, post, circuit)
                return
        # From here on the request may reach n8n: the claim is never handed back.
        self._claims.pop(uid, None)
        async with slots:
            try:
                outcome = await self._request(post)
            finally:
                # Whatever happened, the probe (if this was one) is over.
                circuit.cancel_probe()
            self._record_outcome(target, outcome)
        self._unpark(target)
        self._sent[uid] = _Sent(obj, post.status.attempt, self.now(), outcome)
        if (
            isinstance(outcome, engine.Accepted)
            and outcome.published is None
            and not self._stopping
        ):
            self._plan_wake(uid, post)  # the record trails by record_grace
            return
        await self._record(uid)

    def _claim_is_old(self, post: engine.Post) -> bool:
        status = post.status
        since = max(engine.send_at(status), status.claimed_at or engine.send_at(status))
        age = (self.now() - since).total_seconds()
        return age > self.config.defaults.claim_timeout_seconds / 2

    async def _request(self, post: engine.Post) -> engine.Outcome:
        attempt = post.status.attempt
        if attempt == 1 and not post.status.history:
            lateness = (self.now() - post.spec.publish_at).total_seconds()
            self.metrics.publish_lateness.observe(max(0.0, lateness))
        token = signing.callback_token(
            self.config.callback_key, post.namespace, post.name, post.uid, attempt
        )
        body = payload(post, self.config.callback_endpoint, token)
        key = engine.idempotency_key(post.uid, post.status.retry_epoch)
        with (
            self.metrics.in_flight.track_inprogress(),
            self.metrics.dispatch_duration.labels(post.spec.target).time(),
        ):
            return await self.n8n.dispatch(post.spec.target, body, idempotency_key=key)

    async def _give_back(
        self, uid: str, obj: dict[str, Any], post: engine.Post, circuit: CircuitBreaker
    ) -> None:
        """The circuit opened between the claim and its second: release the claim."""
        retry = circuit.retry_at(self.clock())
        self.metrics.dispatch_total.labels(post.spec.target, "deferred_circuit_open").inc()
        decision = engine.defer_claim(
            post,
            self.now(),
            _utc(retry),
            f"circuit for target {post.spec.target} is open",
            spent=uid in self._reclaimed,
        )
        self._claims.pop(uid, None)
        try:
            updated = await self.writer.apply(obj, post, decision, self.now())
        except KubeError:
            self._backoff(uid)
            return
        self.observe(updated, own=True)

    def _unpark(self, target: str) -> None:
        parked = self._parked.get(target)
        while parked:
            uid = parked.pop(0)
            self._parked_uids.discard(uid)
            entry = self.cache.get(uid)
            if entry is not None:
                self._enqueue(uid, entry.namespace, urgent=True)
                return

    async def _record(self, uid: str) -> None:
        """Write the outcome of an attempt this instance sent (retried with backoff)."""
        sent = self._sent.get(uid)
        if sent is None:
            return
        obj = sent.obj
        entry = self.cache.get(uid)
        for _ in range(5):
            post = engine.from_object(obj)
            now = self.now()
            at = sent.at if isinstance(sent.outcome, engine.Accepted) else now
            decision = engine.dispatch_result(
                post, at, sent.outcome, self.config.defaults, self.config.me
            )
            if decision.status is None:
                self._sent.pop(uid, None)
                return  # a callback or another instance already moved the post on
            try:
                updated = await self.writer.apply(obj, post, decision, now)
            except Conflict:
                fresh = await self._read(entry) if entry is not None else None
                if fresh is None:
                    self._sent.pop(uid, None)
                    return
                obj = fresh
                continue
            except NotFound:
                self.forget(uid)
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
                self._backoff(uid)
                return
            self._sent.pop(uid, None)
            self._failures.pop(uid, None)
            self.observe(updated, own=True)
            return
        self._backoff(uid)

    def _record_outcome(self, target: str, outcome: engine.Outcome) -> None:
        circuit = self._circuit(target)
        now = self.clock()
        if isinstance(outcome, engine.Accepted):
            label = "published" if outcome.published else "accepted"
            circuit.record_success(now)
        elif outcome.retryable:
            label = "transient"
            circuit.record_failure(now)
        else:
            label = "permanent"
            # n8n answered, so it is up: a permanent error is the post's problem.
            circuit.record_success(now)
        self.metrics.dispatch_total.labels(target, label).inc()
        self.metrics.circuit_state.labels(target).set(CIRCUIT_STATES[circuit.state(now).value])

    def _circuit(self, target: str) -> CircuitBreaker:
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = CircuitBreaker(
                self.config.circuit_threshold,
                self.config.circuit_window,
                self.config.circuit_open_for,
                self.config.circuit_open_min,
            )
        return circuit

    def _slots(self, target: str) -> asyncio.Semaphore:
        slots = self._target_slots.get(target)
        if slots is None:
            limit = self.config.target_concurrency.get(target) or self._default_target_limit()
            slots = self._target_slots[target] = asyncio.Semaphore(limit)
        return slots

    def _default_target_limit(self) -> int:
        """Unset per-target limit: with several targets, half the workers each, so one
        slow target cannot hold every slot; with one target, all of them."""
        targets = self.config.defaults.targets or frozenset()
        if len(targets) > 1:
            return max(1, self.config.concurrency // 2)
        return self.config.concurrency

    # --- views for metrics and probes --------------------------------------------------

    def _phase_counts(self) -> Iterable[PhaseCount]:
        return [PhaseCount(p, ns, n) for p, ns, n in self.cache.counts()]

    def _backlog(self) -> int:
        return len(self.queue) + sum(len(v) for v in self._parked.values())

    def heartbeat_age(self) -> float:
        return self.clock() - self.last_beat


def needs_plan(obj: dict[str, Any], post: engine.Post) -> bool:
    """Level-triggered work that does not wait for a time: a new post, an edit, a retry."""
    status = post.status
    if status.phase is None or status.observed_generation != post.generation:
        return True
    request = (obj["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION)
    return engine.handled_request(request) not in (None, status.last_handled_retry_request)
