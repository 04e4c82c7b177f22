"""Applies a state-machine Decision: compare-and-swap the status, count it, post its Events.

Shared by the operator and the callback sidecar so a transition is written, measured and
announced the same way whoever makes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Coroutine
from typing import Any

from herald import engine
from herald.kube import Conflict, Invalid, KubeClient, KubeError
from herald.ledger import Ledger
from herald.metrics import Metrics, failed_reason
from herald.models import Phase, ScheduledPostStatus

log = logging.getLogger("herald.writer")


def post_context(post: engine.Post, attempt: int | None = None) -> dict[str, Any]:
    """`extra` for log calls about a post: JSON logs carry these as fields."""
    return {
        "post": {
            "namespace": post.namespace,
            "name": post.name,
            "uid": post.uid,
            "attempt": post.status.attempt if attempt is None else attempt,
        }
    }


def dump_status(status: ScheduledPostStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def status_patch(
    obj: dict[str, Any], post: engine.Post, decision: engine.Decision
) -> list[dict[str, Any]]:
    """The JSON patch that writes `decision.status` over `obj`'s status.

    `test` ops first (the compare-and-swap: what the decision depended on, per its guard),
    then one op per top-level status field that changed. Fields this version of Herald
    does not know (written by a newer replica during a rolling update) are never touched.
    """
    assert decision.status is not None
    meta = obj["metadata"]
    raw = obj.get("status")
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": meta["uid"]}]
    if decision.spec_dependent:
        ops.append(
            {"op": "test", "path": "/metadata/generation", "value": meta.get("generation", 1)}
        )
    new = dump_status(decision.status)
    if not raw:
        ops.append({"op": "test", "path": "/status", "value": None})
        ops.append({"op": "add", "path": "/status", "value": new})
        return ops
    if decision.guard is engine.Guard.WHOLE:
        ops.append({"op": "test", "path": "/status", "value": raw})
    else:
        fields = (
            ("phase", "attempt")
            if decision.guard is engine.Guard.ATTEMPT
            else (
                "attempt",
                "claimedBy",
            )
        )
        ops.extend(
            {"op": "test", "path": f"/status/{field}", "value": raw.get(field)} for field in fields
        )
    # Against the stored status, not post.status: a new post's is read as planned
    # (engine.as_planned: Scheduled) over the stored Pending one.
    old = dump_status(post.status)
    for key, value in new.items():
        if raw.get(key) != value:
            ops.append({"op": "add", "path": f"/status/{key}", "value": value})
    ops.extend(
        {"op": "remove", "path": f"/status/{key}"} for key in old if key not in new and key in raw
    )
    return ops


def count(metrics: Metrics, post: engine.Post, decision: engine.Decision) -> None:
    """Bump the counters a transition implies (labels bounded: reason, channel)."""
    for event in decision.events:
        if event.reason == engine.Reason.RETRY_SCHEDULED:
            metrics.retries_scheduled.inc()
        elif event.reason == engine.Reason.STALE_RECOVERED:
            metrics.stale_recoveries.inc()
        elif event.reason == engine.Reason.RECLAIMED:
            metrics.reclaims.inc()
    new = decision.status
    if new is None or new.phase == post.status.phase:
        return
    if new.phase is Phase.PUBLISHED:
        if any(e.reason == engine.Reason.ALREADY_PUBLISHED for e in decision.events):
            return  # an earlier object published it, and was counted then
        metrics.published.labels(post.spec.channel.value).inc()
        if new.published_at is not None:
            lag = (new.published_at - post.spec.publish_at).total_seconds()
            metrics.time_to_published.observe(max(lag, 0.0))
    elif new.phase is Phase.FAILED:
        cond = next((c for c in new.conditions or [] if c.type == engine.PUBLISHED), None)
        code = new.last_error.code if new.last_error else None
        metrics.failed.labels(failed_reason(cond.reason if cond else "Unknown", code)).inc()


class Writer:
    """Writes transitions for one process. `_pending` holds the background work under
    way (Event posts, publication records released)."""

    def __init__(
        self,
        kube: KubeClient,
        metrics: Metrics,
        instance: str,
        *,
        routine_events: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        self.kube = kube
        self.ledger = ledger
        self.metrics = metrics
        self.instance = instance
        self.routine_events = routine_events
        self._pending: set[asyncio.Task[None]] = set()

    async def apply(
        self,
        obj: dict[str, Any],
        post: engine.Post,
        decision: engine.Decision,
        now: dt.datetime,
    ) -> dict[str, Any]:
        """Write decision.status over obj's status; raises kube.Conflict when it lost,
        kube.Invalid when the API server rejects the status itself."""
        assert decision.status is not None
        if self.ledger is not None and engine.ledger_outcome(post, decision) is not None:
            # The record first: see herald.ledger for why this order is crash-safe.
            await self.ledger.finish(post, decision.status)
        try:
            updated = await self.kube.patch_status(obj, status_patch(obj, post, decision))
        except Conflict:
            self.metrics.claim_conflicts.inc()
            raise
        except Invalid as exc:
            self.metrics.write_errors.labels("invalid").inc()
            log.error(
                "%s/%s: the API server rejected a status write (a bug, please report it): %s",
                post.namespace,
                post.name,
                exc,
                extra=post_context(post),
            )
            self.announce(
                obj, (engine.Event("Warning", engine.Reason.STATUS_WRITE_REJECTED, str(exc)),), now
            )
            raise
        except KubeError:
            self.metrics.write_errors.labels("unavailable").inc()
            raise
        count(self.metrics, post, decision)
        new = decision.status
        log.info(
            "%s/%s: %s -> %s (attempt %s): %s",
            post.namespace,
            post.name,
            post.status.phase or "new",
            new.phase,
            new.attempt,
            new.message or "",
            extra=post_context(post, new.attempt),
        )
        self.announce(updated, decision.events, now)
        return updated

    def announce(
        self, obj: dict[str, Any], events: tuple[engine.Event, ...], now: dt.datetime
    ) -> None:
        """Post Events in the background: they must never delay or fail a transition."""
        for event in events:
            if event.routine and not self.routine_events:
                continue
            self.background(self._post(obj, event, now))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the transitions (awaited by `drain` at shutdown)."""
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, obj: dict[str, Any], event: engine.Event, now: dt.datetime) -> None:
        try:
            await self.kube.post_event(
                obj, event.type, event.reason, event.message, self.instance, now
            )
        except KubeError as exc:
            log.warning("could not post event %s: %s", event.reason, exc)

    async def drain(self, grace: float = 5.0) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=grace)
