"""The publication ledger's I/O: one Publication object per fingerprint, by name only.

Exactly-once across objects, as the status compare-and-swap is within one: before the
first send of an attempt series the operator creates the post's record (create-if-absent);
a record that exists already is read and `engine.ledger_step` decides. When a sent post
ends (Published or Failed), whoever writes that status (the operator for a synchronous
answer, the callback sidecar for n8n's callback) first writes the record, then the post:
a crash in between leaves a record that is true (n8n did answer so) and a post whose own
path finishes it (n8n's callback is retried, a stale attempt is retried, and its next
first-of-series check finds the record Published). Nothing is kept in memory per record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herald import engine
from herald.kube import Conflict, KubeClient, KubeError, NotFound
from herald.models import ScheduledPostStatus, parse_publication
from herald.sweep import Sweep

log = logging.getLogger("herald.ledger")


def _dump(record: Any) -> dict[str, Any]:
    result: dict[str, Any] = record.model_dump(by_alias=True, exclude_none=True, mode="json")
    return result


@dataclass(frozen=True)
class Checked:
    """The ledger's verdict, and the new record's (uid, resourceVersion) when this check
    created it."""

    decision: engine.LedgerDecision
    created: tuple[str, str] | None = None


class Ledger:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def check(
        self, post: engine.Post, now: dt.datetime, defaults: engine.Defaults
    ) -> Checked:
        """Create the post's record, or decide about the one that exists; a take-over is
        written here (a lost compare-and-swap comes back as WAIT). Raises KubeError."""
        name = engine.publication_name(post)
        try:
            created = await self.kube.create_publication(
                post.namespace, name, _dump(engine.new_publication(post, now))
            )
            meta = created["metadata"]
            return Checked(
                engine.LedgerDecision(engine.LedgerStep.SEND),
                (meta["uid"], meta["resourceVersion"]),
            )
        except Conflict:
            pass  # it exists: read it
        except NotFound as exc:
            # Not sending is the safe side: "published once" is what the ledger is for.
            raise KubeError(
                f"{exc}: is the Publication CRD installed? (kubectl apply -f crds/)"
            ) from exc
        obj = await self.kube.get_publication(post.namespace, name)
        decision = engine.ledger_step(post, parse_publication(obj["spec"]), now, defaults)
        if decision.step is engine.LedgerStep.TAKE_OVER:
            assert decision.record is not None
            try:
                await self.kube.replace_publication(obj, _dump(decision.record))
            except (Conflict, NotFound):
                # Someone else took it over (or it expired): look again soon.
                until = now + dt.timedelta(seconds=defaults.ledger_recheck_seconds)
                return Checked(engine.LedgerDecision(engine.LedgerStep.WAIT, until=until))
            log.info("%s/%s: took publication record %s over", post.namespace, post.name, name)
        return Checked(decision)

    async def release(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete a record created for a claim that was never sent (its post deleted
        before its due second), if it is still the version created; never raises."""
        try:
            await self.kube.delete_publication(namespace, name, uid, resource_version)
            log.info("%s: record %s released (its post was deleted unsent)", namespace, name)
        except (Conflict, NotFound):
            pass  # taken over or gone meanwhile: then it is not ours to release
        except KubeError as exc:
            log.warning("%s: could not release record %s: %s", namespace, name, exc)

    async def finish(self, post: engine.Post, status: ScheduledPostStatus) -> None:
        """Write a sent post's outcome into its record; never raises (the post's own
        status write goes on: a record left Sending is taken over after the stale time,
        and the fingerprint's Idempotency-Key lets n8n drop the repeat)."""
        name = engine.publication_name(post)
        ops = engine.finish_ops(post, status)
        if ops is None:
            return
        try:
            await self.kube.patch_publication(post.namespace, name, ops)
            log.info("%s/%s: record %s: %s", post.namespace, post.name, name, status.phase)
            return
        except NotFound:
            return  # sent before the ledger existed, or expired
        except Conflict:
            pass  # not this post's Sending record any more: read it and decide
        except KubeError as exc:
            log.warning(
                "%s/%s: could not update record %s: %s", post.namespace, post.name, name, exc
            )
            return
        for _ in range(3):
            try:
                obj = await self.kube.get_publication(post.namespace, name)
                record = engine.finished_record(parse_publication(obj["spec"]), post, status)
                if record is None:
                    return
                await self.kube.replace_publication(obj, _dump(record))
                log.info("%s/%s: record %s: %s", post.namespace, post.name, name, record.state)
                return
            except NotFound:
                return  # sent before the ledger existed, or expired
            except Conflict:
                continue
            except KubeError as exc:
                log.warning(
                    "%s/%s: could not update record %s: %s", post.namespace, post.name, name, exc
                )
                return
        log.warning("%s/%s: record %s kept changing; not updated", post.namespace, post.name, name)

    async def finish_deleted(
        self, namespace: str, holder_uid: str, published: engine.Published, at: dt.datetime
    ) -> int:
        """n8n reports published a send whose post was deleted meanwhile (a GitOps sync
        while the operator was down, say): mark the records that object held Published,
        so the manifest applied again is not sent again. Returns how many were written;
        never raises."""
        written = 0
        try:
            items, _ = await self.kube.list_publications(
                namespace, 10, field_selector=f"spec.holderUid={holder_uid}"
            )
            for obj in items:
                record = engine.published_record(parse_publication(obj["spec"]), published, at)
                if record is None:
                    continue
                try:
                    await self.kube.replace_publication(obj, _dump(record))
                except (Conflict, NotFound):
                    continue  # taken over or expired meanwhile: no longer this send's
                written += 1
                log.info(
                    "%s: record %s: Published (n8n's callback for a deleted post)",
                    namespace,
                    obj["metadata"]["name"],
                )
        except KubeError as exc:
            log.warning(
                "%s: could not update the records of uid %s: %s", namespace, holder_uid, exc
            )
        return written


async def sweep(
    kube: KubeClient,
    namespaces: list[str],
    now: dt.datetime,
    retention_days: int,
    *,
    page_size: int = 100,
) -> Sweep:
    """Delete the records past their retention: listed in pages (limit/continue, so a
    large ledger is never held in memory at once), each deleted with its uid and
    resourceVersion as preconditions (a record taken over meanwhile is kept). Raises
    KubeError when a list fails (the next sweep starts again)."""
    result = Sweep()
    async for page in result.pages_of(kube.list_publications, namespaces, page_size):
        for obj in page:
            meta = obj["metadata"]
            if engine.publication_expired(parse_publication(obj["spec"]), now, retention_days):
                await result.delete(
                    kube.delete_publication(
                        meta["namespace"], meta["name"], meta["uid"], meta["resourceVersion"]
                    )
                )
    return result


async def sweep_forever(
    kube: KubeClient,
    namespaces: list[str],
    wall: Callable[[], dt.datetime],
    retention_days: int,
    every: float,
) -> None:
    """The operator's low-rate retention loop (every `every` seconds; never raises)."""
    while True:
        try:
            done = await sweep(kube, namespaces, wall(), retention_days)
            if done.deleted or done.changed:
                log.info(
                    "publication ledger: %d expired records deleted (%d changed meanwhile)",
                    done.deleted,
                    done.changed,
                )
        except KubeError as exc:
            log.warning("publication ledger sweep failed: %s", exc)
        except Exception:
            log.exception("publication ledger sweep failed")
        await asyncio.sleep(every)
