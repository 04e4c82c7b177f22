"""The publication ledger (issue #20) on the real API server: a post deleted and applied
again is not published twice.

Each test runs a real `herald run` against the real kube-apiserver and a fake n8n that
records every request; the fake answers synchronously ("published", with a URL), so the
operator itself writes the outcome (no callback sidecar needed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from herald import ledger
from herald.kube import Conflict, KubeClient, discover
from herald.models import format_time
from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.herald_proc import HeraldProcess

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]
URL = "https://social.example/p/first"


def published(delay: float = 0.0) -> Reply:
    return Reply(
        200, {"status": "published", "externalId": "first", "externalUrl": URL}, delay=delay
    )


@pytest.fixture
def n8n_published() -> Iterator[FakeN8n]:
    with FakeN8n(published()) as fake:
        yield fake


def manifest(posts: Posts, name: str, publish_at: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": name, "namespace": posts.namespace},
        "spec": {"publishAt": publish_at, "content": {"text": f"Post {name}"}, **spec},
    }


def apply(posts: Posts, body: dict[str, Any]) -> dict[str, Any]:
    response = posts.client.post(
        f"{posts.url(body['metadata']['name']).rsplit('/', 1)[0]}", json=body
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def watch_status(
    posts: Posts,
    created: dict[str, Any],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    """The first status of this object (by uid) that satisfies `predicate`, seen through a
    watch from its creation (the object may be deleted by its TTL right after)."""
    meta = created["metadata"]
    base = posts.url(meta["name"]).rsplit("/", 1)[0]
    params = {
        "watch": "1",
        "resourceVersion": meta["resourceVersion"],
        "fieldSelector": f"metadata.name={meta['name']}",
        "timeoutSeconds": str(int(timeout)),
    }
    seen: dict[str, Any] = {}
    with posts.client.stream("GET", base, params=params, timeout=timeout + 5) as response:
        for line in response.iter_lines():
            event = json.loads(line)
            obj = event["object"]
            if obj.get("metadata", {}).get("uid") != meta["uid"]:
                continue
            seen = obj.get("status") or {}
            if predicate(seen):
                return seen
    raise AssertionError(f"{meta['name']}: not reached in {timeout}s; last status {seen}")


def gone(posts: Posts, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in posts.names():
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} not deleted in {timeout}s")


def reason(status: dict[str, Any]) -> str | None:
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Published"), {})
    return cond.get("reason")


def publications(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "publications", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_a_post_deleted_by_its_ttl_and_applied_again_is_not_sent_again(
    posts: Posts, n8n_published: FakeN8n, herald: Start, control_plane: ControlPlane
) -> None:
    herald(n8n_published.url, history_sweep_seconds=1)  # a Published post's TTL is swept
    body = manifest(posts, "ttl", in_seconds(1), ttlSecondsAfterFinished=3)
    first = apply(posts, body)
    done = watch_status(posts, first, lambda s: s.get("phase") == "Published", 30)
    assert done["externalUrl"] == URL
    gone(posts, "ttl", 20)

    again = apply(posts, body)  # the GitOps tool puts the manifest back
    status = watch_status(posts, again, lambda s: s.get("phase") in ("Published", "Failed"), 30)
    assert (status["phase"], reason(status)) == ("Published", "AlreadyPublished"), status
    assert status["externalUrl"] == URL and status["externalId"] == "first"
    assert status["publishedAt"] == done["publishedAt"]
    time.sleep(1.0)  # anything sent late would show now
    assert len(n8n_published.for_post("ttl")) == 1
    event = posts.wait_event("ttl", "AlreadyPublished")
    assert event["type"] == "Normal" and done["publishedAt"][:19] in event["message"]
    [record] = publications(control_plane, posts.namespace)
    assert record["spec"]["state"] == "Published"
    assert record["spec"]["holderUid"] == first["metadata"]["uid"]


def test_delete_and_apply_while_the_first_send_is_in_flight_sends_once(
    posts: Posts, herald: Start, control_plane: ControlPlane
) -> None:
    with FakeN8n(published(delay=5.0)) as fake:
        # The request outlasts the hold: its answer (published) is what the record gets.
        herald(fake.url, ledger_recheck_seconds=1, targets__default__timeout_seconds=10)
        body = manifest(posts, "inflight", in_seconds(1))
        apply(posts, body)
        fake.wait_for("inflight", 1, timeout=20)
        control_plane.kubectl("delete", "sp", "inflight", "-n", posts.namespace, "--wait=false")
        gone(posts, "inflight", 10)
        again = apply(posts, body)
        status = watch_status(posts, again, lambda s: s.get("phase") in ("Published", "Failed"), 40)
        assert (status["phase"], reason(status)) == ("Published", "AlreadyPublished"), status
        assert status["externalUrl"] == URL
        time.sleep(1.0)
        assert len(fake.for_post("inflight")) == 1


def test_two_replicas_and_a_post_re_created_during_its_send_send_once(
    posts: Posts, herald: Start, control_plane: ControlPlane
) -> None:
    with FakeN8n(published(delay=5.0)) as fake:
        common = {"ledger_recheck_seconds": 1, "targets__default__timeout_seconds": 10}
        herald(fake.url, identity="herald-a", **common)
        herald(fake.url, identity="herald-b", **common)
        body = manifest(posts, "replicas", in_seconds(2))
        apply(posts, body)
        fake.wait_for("replicas", 1, timeout=20)
        control_plane.kubectl("delete", "sp", "replicas", "-n", posts.namespace, "--wait=false")
        gone(posts, "replicas", 10)
        again = apply(posts, body)
        status = watch_status(posts, again, lambda s: s.get("phase") in ("Published", "Failed"), 40)
        assert (status["phase"], reason(status)) == ("Published", "AlreadyPublished"), status
        time.sleep(1.0)  # a send by either replica would show now
        assert len(fake.for_post("replicas")) == 1


def test_without_the_ledger_a_re_created_post_gets_the_same_idempotency_key(
    posts: Posts, n8n_published: FakeN8n, herald: Start, control_plane: ControlPlane
) -> None:
    herald(n8n_published.url)
    body = manifest(posts, "restored", in_seconds(1))
    first = apply(posts, body)
    watch_status(posts, first, lambda s: s.get("phase") == "Published", 30)
    control_plane.kubectl("delete", "sp", "restored", "-n", posts.namespace)
    # A restore without etcd: the ledger is gone too.
    control_plane.kubectl("delete", "publications", "--all", "-n", posts.namespace)
    again = apply(posts, body)
    watch_status(posts, again, lambda s: s.get("phase") == "Published", 30)
    sent = n8n_published.for_post("restored")
    assert len(sent) == 2
    assert sent[0].idempotency_key == sent[1].idempotency_key
    assert sent[0].idempotency_key != first["metadata"]["uid"]


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_the_record_is_written_at_the_claim_so_the_due_second_only_sends(
    posts: Posts, n8n_published: FakeN8n, herald: Start, control_plane: ControlPlane
) -> None:
    """The record's POST is off the due second's path: it is written with the claim (up
    to claimAhead before publishAt), not between the due second and the request."""
    herald(n8n_published.url, claim_ahead_seconds=30)
    publish_at = in_seconds(6)
    first = apply(posts, manifest(posts, "ahead", publish_at))
    done = watch_status(posts, first, lambda s: s.get("phase") == "Published", 30)
    [record] = publications(control_plane, posts.namespace)
    since, due = parse_time(record["spec"]["since"]), parse_time(publish_at)
    assert since <= due - dt.timedelta(seconds=1), (record["spec"]["since"], publish_at)
    assert record["spec"]["state"] == "Published" and done["externalUrl"] == URL
    assert len(n8n_published.for_post("ahead")) == 1


def test_a_post_deleted_after_its_claim_releases_its_record_and_comes_back_on_time(
    posts: Posts, n8n_published: FakeN8n, herald: Start, control_plane: ControlPlane
) -> None:
    """Deleted between its claim (record written) and its due second: nothing went out,
    so the record is released and the same manifest applied again is published at its
    due second, not after a take-over wait."""
    herald(n8n_published.url, claim_ahead_seconds=30)
    body = manifest(posts, "early", in_seconds(12))
    first = apply(posts, body)
    watch_status(posts, first, lambda s: s.get("phase") == "Publishing", 10)
    deadline = time.monotonic() + 5
    while not publications(control_plane, posts.namespace) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert publications(control_plane, posts.namespace), "no record written at the claim"
    control_plane.kubectl("delete", "sp", "early", "-n", posts.namespace)
    deadline = time.monotonic() + 5
    while publications(control_plane, posts.namespace) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert publications(control_plane, posts.namespace) == [], "record not released"
    again = apply(posts, body)
    status = watch_status(posts, again, lambda s: s.get("phase") in ("Published", "Failed"), 30)
    assert status["phase"] == "Published" and reason(status) != "AlreadyPublished", status
    assert len(n8n_published.for_post("early")) == 1


SWEEP_NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def record_body(namespace: str, name: str, published_days_ago: float) -> dict[str, Any]:
    at = format_time(SWEEP_NOW - dt.timedelta(days=published_days_ago))
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Publication",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "post": name,
            "channel": "linkedin",
            "publishAt": at,
            "contentHash": "0" * 64,
            "state": "Published",
            "holderUid": f"uid-{name}",
            "since": at,
            "publishedAt": at,
        },
    }


def test_the_retention_sweep_deletes_expired_records_in_pages_with_preconditions(
    posts: Posts, control_plane: ControlPlane, namespace: str
) -> None:
    url = f"/apis/herald.dev/v1alpha1/namespaces/{namespace}/publications"
    expired = {f"old-{i:02d}" for i in range(20)}  # published 401 days before SWEEP_NOW
    kept = {f"new-{i:02d}" for i in range(15)}  # 399 days: inside the 400-day retention
    for name in sorted(expired | kept):
        age = 401 if name in expired else 399
        response = posts.client.post(url, json=record_body(namespace, name, age))
        assert response.status_code == 201, response.text
    stale = posts.client.get(f"{url}/old-00").json()
    changed = {**stale, "spec": {**stale["spec"], "externalId": "edited"}}
    assert posts.client.put(f"{url}/old-00", json=changed).status_code == 200

    async def run() -> ledger.Sweep:
        kube = KubeClient(discover(str(control_plane.kubeconfig)))
        try:
            meta = stale["metadata"]
            # The precondition holds: a record changed since it was read is not deleted.
            with pytest.raises(Conflict):
                await kube.delete_publication(
                    namespace, "old-00", meta["uid"], meta["resourceVersion"]
                )
            return await ledger.sweep(kube, [namespace], SWEEP_NOW, 400, page_size=10)
        finally:
            await kube.aclose()

    result = asyncio.run(run())
    assert (result.pages, result.seen, result.deleted, result.changed) == (4, 35, 20, 0)
    left = {item["metadata"]["name"] for item in publications(control_plane, namespace)}
    assert left == kept
