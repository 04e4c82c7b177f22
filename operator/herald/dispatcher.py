"""The due-time scheduler: one loop, one heap, a bounded number of dispatches at once.

kopf's watch feeds `track()` with every ScheduledPost it sees; the dispatcher keeps the
latest object per uid and a heap of (wake-up time, uid). A single task sleeps until the
earliest wake-up (a due post, a retry, a stale deadline, an orphaned claim), then asks the
state machine what to do (`engine.act`) and does it under a semaphore. The heap and the
cache are only a cache of what the CR statuses say: after a restart the initial listing
rebuilds them, and compare-and-swap writes keep several replicas from stepping on each
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from herald import engine, signing
from herald.circuit import CircuitBreaker
from herald.clock import utcnow
from herald.kube import Conflict, KubeClient, KubeError, NotFound
from herald.metrics import CIRCUIT_STATES, Metrics, PhaseCount
from herald.models import Phase
from herald.n8n import N8nClient, payload
from herald.writer import Writer

log = logging.getLogger("herald.dispatcher")
HEARTBEAT_SECONDS = 1.0


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


class Dispatcher:
    def __init__(
        self,
        config: DispatchConfig,
        kube: KubeClient,
        n8n: N8nClient,
        writer: Writer,
        metrics: Metrics,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.kube = kube
        self.n8n = n8n
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self._objects: dict[str, dict[str, Any]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._circuits: dict[str, CircuitBreaker] = {}
        self._not_before: dict[str, float] = {}  # dispatches deferred by an open circuit
        self.last_beat = time.time()
        metrics.watch_cache(self._phase_counts, self._backlog)

    # --- fed by the watch ------------------------------------------------------------

    def track(self, obj: dict[str, Any]) -> None:
        """Remember the newest version of a post and when it next needs attention."""
        uid = obj["metadata"]["uid"]
        old = self._objects.get(uid)
        if old is not None and _rv(old) > _rv(obj):
            return  # an older version than one we already wrote ourselves
        self._objects[uid] = obj
        if uid in self._busy:
            return  # re-evaluated when the work in progress ends
        try:
            post = engine.from_object(obj)
        except ValidationError:
            self._due.pop(uid, None)
            return
        when = engine.wake_at(post, self.config.defaults, self.config.me)
        if when is None:
            self._due.pop(uid, None)
        else:
            self._schedule(uid, max(when.timestamp(), self._not_before.get(uid, 0.0)))

    def forget(self, uid: str) -> None:
        """The post is gone: drop it; a pending dispatch never happens."""
        self._objects.pop(uid, None)
        self._due.pop(uid, None)
        self._not_before.pop(uid, None)

    def _schedule(self, uid: str, when: float) -> None:
        if self._due.get(uid) == when:
            return
        self._due[uid] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, uid))
        if self._heap[0][2] == uid:
            self._wake.set()

    # --- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        log.info("dispatcher started as %s", self.config.me)
        while True:
            self.last_beat = time.time()
            self.metrics.heartbeat.set(self.last_beat)
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                when, _, uid = heapq.heappop(self._heap)
                if self._due.get(uid) != when:
                    continue  # superseded by a later schedule() or forget()
                del self._due[uid]
                self._spawn(uid)
            delay = HEARTBEAT_SECONDS
            if self._heap:
                delay = min(delay, max(0.0, self._heap[0][0] - time.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _spawn(self, uid: str) -> None:
        self._busy.add(uid)
        task = asyncio.create_task(self._process(uid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self.writer.drain()

    async def _process(self, uid: str) -> None:
        try:
            async with self._slots:
                await self._act(uid)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error while handling post uid=%s", uid)
        finally:
            self._busy.discard(uid)
            obj = self._objects.get(uid)
            if obj is not None:
                self.track(obj)

    async def _refresh(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """After a lost compare-and-swap: read the winner's version."""
        self.metrics.claim_conflicts.inc()
        meta = obj["metadata"]
        try:
            fresh = await self.kube.get_post(meta["namespace"], meta["name"])
        except NotFound:
            self.forget(meta["uid"])
            return None
        if fresh["metadata"]["uid"] != meta["uid"]:
            self.forget(meta["uid"])  # deleted and re-created under the same name
            return None
        self._objects[meta["uid"]] = fresh
        return fresh

    async def _act(self, uid: str) -> None:
        obj = self._objects.get(uid)
        if obj is None:
            return
        post = engine.from_object(obj)
        now = self.clock()
        decision = engine.act(post, now, self.config.defaults, self.config.me)
        if decision.status is None:
            return
        if decision.action is engine.Action.DISPATCH:
            circuit = self._circuit(post.spec.target)
            if not circuit.allow(time.time()):
                self.metrics.dispatch_total.labels(post.spec.target, "deferred_circuit_open").inc()
                retry = circuit.retry_at(time.time())
                log.info(
                    "%s/%s deferred: circuit for target %s is open",
                    post.namespace,
                    post.name,
                    post.spec.target,
                )
                self._not_before[uid] = retry
                return
        try:
            obj = await self.writer.apply(obj, post, decision, now)
        except Conflict:
            await self._refresh(obj)
            if decision.action is engine.Action.DISPATCH:
                self._circuit(post.spec.target).cancel_probe()
            return
        except NotFound:
            self.forget(uid)
            return
        except KubeError as exc:
            log.warning(
                "%s/%s: status write failed, retrying soon: %s", post.namespace, post.name, exc
            )
            self._not_before[uid] = time.time() + 2.0
            if decision.action is engine.Action.DISPATCH:
                self._circuit(post.spec.target).cancel_probe()
            return
        self._objects[uid] = obj
        if decision.action is engine.Action.DISPATCH:
            await self._dispatch(obj)

    async def _dispatch(self, obj: dict[str, Any]) -> None:
        post = engine.from_object(obj)
        target = post.spec.target
        attempt = post.status.attempt
        started = self.clock()
        if attempt == 1 and not post.status.history:
            self.metrics.publish_lateness.observe(
                max(0.0, (started - post.spec.publish_at).total_seconds())
            )
        token = signing.callback_token(
            self.config.callback_key, post.namespace, post.name, post.uid, attempt
        )
        body = payload(post, self.config.callback_endpoint, token)
        self.metrics.in_flight.inc()
        t0 = time.perf_counter()
        try:
            outcome = await self.n8n.dispatch(target, body)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.dispatch_duration.labels(target).observe(time.perf_counter() - t0)
        self._record_outcome(target, outcome)
        await self._apply_outcome(obj, outcome)

    def _record_outcome(self, target: str, outcome: engine.Outcome) -> None:
        circuit = self._circuit(target)
        if isinstance(outcome, engine.Accepted):
            label = "published" if outcome.published else "accepted"
            circuit.record_success(time.time())
        elif outcome.retryable:
            label = "transient"
            circuit.record_failure(time.time())
        else:
            label = "permanent"
            # n8n answered, so it is up: a permanent error is the post's problem.
            circuit.record_success(time.time())
        self.metrics.dispatch_total.labels(target, label).inc()
        self.metrics.circuit_state.labels(target).set(
            CIRCUIT_STATES[circuit.state(time.time()).value]
        )

    async def _apply_outcome(self, obj: dict[str, Any], outcome: engine.Outcome) -> None:
        """Record the request's outcome; on a lost race, re-read and decide again."""
        for _ in range(5):
            post = engine.from_object(obj)
            now = self.clock()
            decision = engine.dispatch_result(
                post, now, outcome, self.config.defaults, self.config.me
            )
            if decision.status is None:
                return  # a callback or another instance already moved the post on
            try:
                self._objects[post.uid] = await self.writer.apply(obj, post, decision, now)
                return
            except Conflict:
                fresh = await self._refresh(obj)
                if fresh is None:
                    return
                obj = fresh
            except NotFound:
                self.forget(post.uid)
                return
            except KubeError as exc:
                log.warning(
                    "%s/%s: could not record the outcome (%s); the attempt will be "
                    "recovered as stale",
                    post.namespace,
                    post.name,
                    exc,
                )
                return

    def _circuit(self, target: str) -> CircuitBreaker:
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = self._circuits[target] = CircuitBreaker(
                self.config.circuit_threshold,
                self.config.circuit_window,
                self.config.circuit_open_for,
            )
            self.metrics.circuit_state.labels(target).set(0)
        return circuit

    # --- views for metrics and probes --------------------------------------------------

    def _phase_counts(self) -> Iterable[PhaseCount]:
        counts: Counter[tuple[str, str]] = Counter()
        for obj in list(self._objects.values()):
            phase = (obj.get("status") or {}).get("phase") or "Pending"
            counts[(phase, obj["metadata"]["namespace"])] += 1
        return [PhaseCount(p, ns, n) for (p, ns), n in counts.items()]

    def _backlog(self) -> int:
        now = time.time()
        late = 0
        for obj in list(self._objects.values()):
            status = obj.get("status") or {}
            if status.get("phase") in (Phase.SCHEDULED, Phase.RETRYING):
                due = status.get("nextAttemptAt")
                if due and dt.datetime.fromisoformat(due).timestamp() <= now:
                    late += 1
        return late

    def heartbeat_age(self) -> float:
        return time.time() - self.last_beat


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0
