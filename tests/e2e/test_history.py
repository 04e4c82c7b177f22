"""History costs nothing (issue #17), on the real API server: the operator watches only
live posts (a field selector leaves the Published ones out), forgets a post when it
leaves the watch, and handles Published posts with a paged sweep (herald.history).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from kopf._cogs.clients import fetching
from kopf._core.reactor import inventory
from kopf.testing import KopfRunner

from herald import controller, engine, history
from herald.dispatcher import Dispatcher
from herald.kube import Conflict, KubeClient, discover
from herald.metrics import Metrics
from herald.models import format_time
from herald.writer import Writer
from tests.e2e.conftest import Posts, in_seconds
from tests.support import inprocess
from tests.support.controlplane import AsyncRetryingTransport, ControlPlane
from tests.support.fake_n8n import FakeN8n
from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]
API = "/apis/herald.dev/v1alpha1"
FINISHED_AT_START = 500
"""Published posts present when the operator starts. The issue asks for 5,000: this test
took 120 s with 5,000 and 29 s with 1,000 on the shared 2-core machine (seeding is a
create and a status write per post), so CI uses 500; the assertion (none of them is
delivered) does not depend on the number, and bench/run.py's history scenario starts
with 10,000 and more."""


def body(namespace: str, name: str, publish_at: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"publishAt": publish_at, "content": {"text": f"Post {name}"}, **spec},
    }


def published_status(ago: float) -> dict[str, Any]:
    """A Published status as the sidecar writes it, `ago` seconds ago."""
    at = format_time(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago))
    return {"phase": "Published", "publishedAt": at, "observedGeneration": 1, "attempt": 1}


def seed_published(
    control_plane: ControlPlane, namespace: str, names: list[str], ago: float = 60, **spec: Any
) -> None:
    """Create Published posts, 16 requests at a time (as fast as the API server takes them)."""

    async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore, name: str) -> None:
        async with gate:
            url = f"{API}/namespaces/{namespace}/scheduledposts"
            created = await client.post(url, json=body(namespace, name, in_seconds(-ago), **spec))
            assert created.status_code == 201, created.text
            patched = await client.patch(
                f"{url}/{name}/status",
                json={"status": published_status(ago)},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert patched.status_code == 200, patched.text

    async def run() -> None:
        cert, key = control_plane.user_credentials("history-seeder", ["system:masters"])
        pem = control_plane.workdir / "history-seeder.pem"
        pem.write_bytes(cert + key)
        tls = ssl.create_default_context(cafile=str(control_plane.ca_file))
        tls.load_cert_chain(str(pem))
        gate = asyncio.Semaphore(16)
        transport = AsyncRetryingTransport(verify=tls)
        server = control_plane.server
        async with httpx.AsyncClient(base_url=server, transport=transport, timeout=30) as c:
            await asyncio.gather(*(one(c, gate, name) for name in names))

    asyncio.run(run())


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout}s")
        time.sleep(0.05)


INITIAL_LISTS = {
    # Pages of 2: the four live posts take more than one page.
    "pages": {"watch_chunk_size": 2},
    # A watch stream (sendInitialEvents), which the API server serves from its watch cache.
    "stream": {"watch_initial_streaming": "true"},
}


@pytest.mark.parametrize("initial_list", sorted(INITIAL_LISTS))
def test_finished_posts_are_never_delivered_and_a_published_post_leaves_memory(
    control_plane: ControlPlane,
    namespace: str,
    posts: Posts,
    fake_n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
    initial_list: str,
) -> None:
    finished = [f"done-{i:04d}" for i in range(FINISHED_AT_START)]
    seed_published(control_plane, namespace, finished)
    live = [f"live-{i}" for i in range(3)]
    for name in live:
        posts.create(name, in_seconds(3600))
    posts.create("dead-letter", in_seconds(3600))

    memos = inprocess.prepare(
        monkeypatch,
        control_plane.kubeconfig,
        fake_n8n.url,
        namespaces=json.dumps([namespace]),
        history_sweep_seconds=1,
        **INITIAL_LISTS[initial_list],
    )
    # What kopf delivers to Herald, and what kopf itself remembers per object.
    delivered: list[dict[str, Any]] = []
    real_observe = Dispatcher.observe

    def counting_observe(self: Dispatcher, obj: dict[str, Any], *, own: bool = False) -> Any:
        if not own:
            delivered.append(obj)
        return real_observe(self, obj, own=own)

    monkeypatch.setattr(Dispatcher, "observe", counting_observe)
    # The pages of the initial list of posts kopf fetched (none when it streams).
    pages: list[int] = []
    real_fetch = fetching.fetch_objs

    async def counting_fetch(*, resource: Any, **kw: Any) -> AsyncIterator[Any]:
        async for chunk, version in real_fetch(resource=resource, **kw):
            if resource.plural == "scheduledposts":
                pages.append(len(chunk))
            yield chunk, version

    monkeypatch.setattr(fetching, "fetch_objs", counting_fetch)
    kopf_memories: list[inventory.ResourceMemories] = []
    real_recall = inventory.ResourceMemories.recall

    async def recording_recall(self: inventory.ResourceMemories, *a: Any, **kw: Any) -> Any:
        if self not in kopf_memories:
            kopf_memories.append(self)
        return await real_recall(self, *a, **kw)

    monkeypatch.setattr(inventory.ResourceMemories, "recall", recording_recall)

    def kopf_remembers(uid: str) -> bool:
        return any(uid in m._items for m in kopf_memories)

    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=controller.registry, timeout=60) as runner:
        # Pending posts need no write: the operator knowing them is its cache holding them.
        wait(lambda: bool(memos) and "herald" in memos[-1], 30, "started")
        runtime: controller.Runtime = memos[-1]["herald"]
        cache = runtime.dispatcher.cache
        uids = [posts.get(name)["metadata"]["uid"] for name in [*live, "dead-letter"]]
        wait(lambda: all(cache.get(uid) is not None for uid in uids), 30, "live posts known")
        # The history sweep counted the Published posts without the watch delivering any.
        wait(lambda: runtime.dispatcher.published == {namespace: FINISHED_AT_START}, 30, "count")
        names = {obj["metadata"]["name"] for obj in delivered}
        assert not names & set(finished), sorted(names & set(finished))[:5]
        assert names >= {*live, "dead-letter"}
        assert len(cache) == len(live) + 1
        assert pages == ([2, 2] if initial_list == "pages" else []), pages

        # A post that becomes Published (the sidecar's write) leaves the watch: Herald's
        # cache, its tracks and schedule, and kopf's per-object memory let go of it.
        uid = posts.get("live-0")["metadata"]["uid"]
        assert cache.get(uid) is not None and kopf_remembers(uid)
        patched = posts.client.patch(
            posts.url("live-0") + "/status",
            json={"status": published_status(0)},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        wait(lambda: cache.get(uid) is None and not kopf_remembers(uid), 10, "forgotten")
        assert uid not in runtime.dispatcher.tracks and uid not in runtime.dispatcher.schedule
        wait(lambda: runtime.dispatcher.published[namespace] == FINISHED_AT_START + 1, 30, "+1")

        # A Failed post stays in the watch: it is the dead-letter queue.
        failed = posts.client.patch(
            posts.url("dead-letter") + "/status",
            json={"status": {"phase": "Failed", "observedGeneration": 1}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert failed.status_code == 200, failed.text
        dead = posts.get("dead-letter")["metadata"]["uid"]
        wait(lambda: (cache.get(dead) or cache._done.get(dead)) is not None, 10, "Failed seen")
        assert kopf_remembers(dead)
        assert not any(obj["metadata"]["name"] in finished for obj in delivered)

    assert runner.exception is None, runner.output


def held_post_events() -> int:
    """Watch events of ScheduledPosts (kopf's raw events: `type` and the whole `object`)
    that something in this process still references."""
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if type(o) is dict
        and o.keys() == {"type", "object"}
        and isinstance(o["object"], dict)
        and o["object"].get("kind") == "ScheduledPost"
    )


def test_kopf_lets_go_of_each_post_object_once_herald_has_it(
    control_plane: ControlPlane,
    namespace: str,
    posts: Posts,
    fake_n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Herald keeps a projection of a live post; kopf's worker for the post keeps the whole
    object it last handled until the worker exits, `idle_timeout` after the post's last
    event. At kopf's default (5 s) every post taken in during the last 5 s is held whole:
    about 95 MiB for 20,000 posts at start-up (bench/RESULTS.md). Herald sets 0.1 s."""
    names = [f"held-{i:02d}" for i in range(40)]
    for name in names:
        posts.create(name, in_seconds(3600))
    memos = inprocess.prepare(
        monkeypatch, control_plane.kubeconfig, fake_n8n.url, namespaces=json.dumps([namespace])
    )
    args = ["run", "--standalone", "--namespace", namespace]
    with KopfRunner(args, registry=controller.registry, timeout=60) as runner:
        wait(lambda: bool(memos) and "herald" in memos[-1], 30, "started")
        cache = memos[-1]["herald"].dispatcher.cache
        uids = [posts.get(name)["metadata"]["uid"] for name in names]
        wait(lambda: all(cache.get(uid) is not None for uid in uids), 30, "all known")
        known = time.monotonic()
        held = held_post_events()
        # Well within kopf's default idle time, after which its workers would let go too.
        while held and time.monotonic() - known < 2.0:
            time.sleep(0.1)
            held = held_post_events()
        waited = time.monotonic() - known
        assert held == 0, f"{held} whole post objects still held {waited:.1f}s after all known"
    assert runner.exception is None, runner.output


def test_the_ttl_sweep_deletes_published_posts_in_pages_with_preconditions(
    control_plane: ControlPlane, namespace: str, posts: Posts
) -> None:
    expired = [f"old-{i:02d}" for i in range(20)]  # TTL 0, published a minute ago
    kept = [f"new-{i:02d}" for i in range(15)]  # TTL one hour
    seed_published(control_plane, namespace, expired, ttlSecondsAfterFinished=0)
    seed_published(control_plane, namespace, kept, ttlSecondsAfterFinished=3600)
    posts.create("live", in_seconds(3600), ttlSecondsAfterFinished=0)  # not Published
    stale = posts.get("old-00")
    posts.client.patch(
        posts.url("old-00"),
        json={"metadata": {"labels": {"edited": "yes"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    ).raise_for_status()

    async def run() -> history.History:
        kube = KubeClient(discover(str(control_plane.kubeconfig)))
        writer = Writer(kube, Metrics(), "history-test/1")
        try:
            meta = stale["metadata"]
            # The precondition holds: a post changed since it was read is not deleted.
            with pytest.raises(Conflict):
                await kube.delete_post(namespace, "old-00", meta["uid"], meta["resourceVersion"])
            listed = kube.list_posts

            async def list_then_edit(*args: Any, **kwargs: Any) -> Any:
                page = await listed(*args, **kwargs)
                if any(o["metadata"]["name"] == "old-01" for o in page[0]):
                    # Changed after it was listed, before its delete: kept.
                    await kube._request(
                        "PATCH",
                        kube._path(namespace, "old-01"),
                        "label",
                        body={"metadata": {"labels": {"edited": "yes"}}},
                        content_type="application/merge-patch+json",
                    )
                return page

            kube.list_posts = list_then_edit  # type: ignore[method-assign]
            now = dt.datetime.now(dt.UTC)
            return await history.sweep(
                kube, writer, [namespace], now, engine.Defaults(), "history-test/1", page_size=10
            )
        finally:
            await kube.aclose()

    result = asyncio.run(run())
    assert (result.pages, result.seen, result.deleted, result.changed) == (4, 35, 19, 1)
    assert result.counts == {namespace: 16}
    assert set(posts.names()) == {*kept, "old-01", "live"}


def test_a_failed_post_is_retried_by_annotation_with_the_filtered_watch(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, control_plane: ControlPlane, namespace: str
) -> None:
    """`herald run` always watches with history.WATCH_SELECTOR (the test above shows it in
    effect): Failed posts are in it, so the retry annotation is seen."""
    herald(fake_n8n.url)
    fake_n8n.script("retry-me", 400)
    posts.create("retry-me", in_seconds(0))
    posts.wait_phase("retry-me", "Failed")
    control_plane.kubectl(
        "annotate",
        "sp",
        "retry-me",
        "-n",
        namespace,
        "herald.dev/retry-requested-at=2026-12-03T09:00:00Z",
    )
    requests = fake_n8n.wait_for("retry-me", 2, timeout=15)
    assert [r.body["attempt"] for r in requests] == [1, 2]
    status = posts.wait("retry-me", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    assert status["lastHandledRetryRequest"] == "2026-12-03T09:00:00Z"
