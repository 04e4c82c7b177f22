"""Published posts, which the operator does not watch: their TTL, edits and count.

The operator's ScheduledPost watch carries the server-side field selector
`WATCH_SELECTOR` (status.phase is a selectable field of the CRD): a post that reaches
`Published` leaves the watch (the API server reports it as DELETED) and the operator
forgets it at once, so history costs the operator no memory and no parse at start-up.
`Failed` posts stay watched: they are the dead-letter queue (few, and bounded by their
own TTL), and a manual retry is an annotation the watch must see.

What still concerns Published posts is done by a low-rate sweep that lists them in pages
(`status.phase=Published`, limit/continue: one page held at a time) every
`HERALD_HISTORY_SWEEP_SECONDS` and asks the state machine about each, as a watch event
would: a post past its TTL is deleted with uid and resourceVersion preconditions, and a
post edited after it was published gets its `ChangedAfterDispatch` status write. The same
pass counts them: `herald_posts{phase="Published"}` is the count of the last complete
sweep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from herald import engine
from herald.kube import Conflict, KubeClient, KubeError, NotFound
from herald.models import RETRY_ANNOTATION, Phase
from herald.sweep import Sweep
from herald.writer import Writer

log = logging.getLogger("herald.history")

WATCH_SELECTOR = "status.phase!=Published"
"""The operator's watch: every post but the Published ones (a post with no status yet
has an empty phase, which matches)."""
PUBLISHED_SELECTOR = "status.phase=Published"
PAGE_SIZE = 100
FIRST_SWEEP_AFTER = 30.0
"""Seconds from start-up to the first sweep (at most): start-up is for the live posts."""


def watched(post: engine.Post) -> bool:
    """Whether the operator's watch shows the post (see WATCH_SELECTOR)."""
    return post.status.phase is not Phase.PUBLISHED


@dataclass
class History(Sweep):
    """What one sweep of the Published posts did."""

    written: int = 0
    """Status writes (an edit after publication)."""
    counts: Counter[str] = field(default_factory=Counter)
    """Published posts left, by namespace."""


async def sweep(
    kube: KubeClient,
    writer: Writer,
    namespaces: list[str],
    now: dt.datetime,
    defaults: engine.Defaults,
    me: str,
    *,
    page_size: int = PAGE_SIZE,
) -> History:
    """One pass over the Published posts (see the module docstring). Raises KubeError
    when a list fails (the next sweep starts again)."""
    result = History()
    lister = functools.partial(kube.list_posts, field_selector=PUBLISHED_SELECTOR)
    async for page in result.pages_of(lister, namespaces, page_size):
        for obj in page:
            meta = obj["metadata"]
            if _settled(obj, defaults):
                result.counts[meta["namespace"]] += 1
                continue
            try:
                post = engine.from_object(obj)
            except ValidationError as exc:
                log.warning("%s/%s: unreadable, ignoring: %s", meta["namespace"], meta["name"], exc)
                result.counts[meta["namespace"]] += 1
                continue
            decision = engine.act(post, now, defaults, me)
            if decision.action is engine.Action.DELETE:
                gone = kube.delete_post(
                    post.namespace, post.name, post.uid, meta["resourceVersion"]
                )
                if await result.delete(gone):
                    writer.metrics.deleted.labels(Phase.PUBLISHED.value).inc()
                    log.info(
                        "%s/%s: deleted, Published and past its TTL", post.namespace, post.name
                    )
                    continue
            elif decision.status is not None:
                try:
                    await writer.apply(obj, post, decision, now)
                    result.written += 1
                except (Conflict, NotFound):
                    result.changed += 1  # moved on meanwhile: the next sweep looks again
                except KubeError as exc:
                    log.warning("%s/%s: status write failed: %s", post.namespace, post.name, exc)
            result.counts[post.namespace] += 1
    return result


def _settled(obj: dict[str, Any], defaults: engine.Defaults) -> bool:
    """Nothing can be due for this Published post: no TTL applies, its spec is the one
    it was published with, and no retry was asked for since. Checked on the raw object,
    because parsing every Published post on every sweep would be most of the operator's
    CPU with 100,000 of them (engine.act decides for the others)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    if defaults.ttl_after_published is not None or spec.get("ttlSecondsAfterFinished") is not None:
        return False
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    request = engine.handled_request((meta.get("annotations") or {}).get(RETRY_ANNOTATION))
    return request is None or request == status.get("lastHandledRetryRequest")


async def sweep_forever(
    kube: KubeClient,
    writer: Writer,
    namespaces: list[str],
    wall: Callable[[], dt.datetime],
    defaults: engine.Defaults,
    me: str,
    every: float,
    publish: Callable[[Counter[str]], None],
) -> None:
    """The operator's history loop (every `every` seconds; never raises). The first pass
    waits min(`every`, FIRST_SWEEP_AFTER): the live posts' initial list and first writes
    go first. `publish` receives the count of Published posts by namespace after each
    complete pass."""
    await asyncio.sleep(min(every, FIRST_SWEEP_AFTER))
    while True:
        try:
            done = await sweep(kube, writer, namespaces, wall(), defaults, me)
            publish(done.counts)
            if done.deleted or done.changed or done.written:
                log.info(
                    "history: %d Published posts past their TTL deleted (%d changed "
                    "meanwhile), %d edited after publication",
                    done.deleted,
                    done.changed,
                    done.written,
                )
        except KubeError as exc:
            log.warning("history sweep failed: %s", exc)
        except Exception:
            log.exception("history sweep failed")
        await asyncio.sleep(every)
