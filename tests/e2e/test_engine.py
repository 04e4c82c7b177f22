"""The publishing engine end to end: real API server, real `herald run`, a fake n8n."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from herald import engine, signing
from tests.e2e.conftest import Posts, in_seconds, parse_time
from tests.support.accounts import account
from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import TIMEOUT, FakeN8n, Reply
from tests.support.faults import after_2xx
from tests.support.herald_proc import CALLBACK_KEY, SIGNING_KEY, HeraldProcess

pytestmark = pytest.mark.e2e


def fingerprint_key(obj: dict[str, Any]) -> str:
    """The Idempotency-Key of a post's first epoch: its publication fingerprint."""
    return engine.fingerprint(engine.from_object(obj))


Start = Callable[..., HeraldProcess]


CLAIM_TIMEOUT = 2.0 + 5.0 + 10.0
"""The take-over deadline after a claim's send time with the fixture's settings."""

MS = 0.001
"""Herald's times are whole milliseconds (SystemClock.wall), so a delay it counts from an
instant it wrote can end up to 1 ms before the same delay on the fake's float clock (one CI
run: 1.99968 s between two requests 2 s apart)."""


def publish_via_status(posts: Posts, name: str, attempt: int) -> None:
    """What the sidecar does on a 'published' callback, done by hand (see test_callbacks)."""
    obj = posts.get(name)
    status = dict(obj["status"])
    status.update(phase="Published", publishedAt=in_seconds(0))
    patch = [
        {"op": "test", "path": "/status/attempt", "value": attempt},
        {"op": "replace", "path": "/status", "value": status},
    ]
    r = posts.client.patch(
        posts.url(name) + "/status",
        json=patch,
        headers={"Content-Type": "application/json-patch+json"},
    )
    r.raise_for_status()


def test_due_post_is_dispatched_on_time_signed_and_published(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    herald(fake_n8n.url, routine_events="true")
    page = account(
        posts.namespace, "company-page", channel="linkedin", handle="urn:li:organization:42"
    )
    posts.cp.kubectl("create", "-f", "-", input=json.dumps(page))
    publish_at = in_seconds(2)
    posts.create(
        "on-time",
        publish_at,
        account="company-page",
        content={"text": "Hello", "link": "https://example.com"},
    )
    # Due within the claim-ahead window: claimed at once, sent at its second.
    claimed = posts.wait("on-time", lambda s: s.get("phase") == "Publishing", what="claimed")
    # The same instant; Herald writes a whole second without ".000" (herald.models.format_time).
    assert parse_time(claimed["nextAttemptAt"]) == parse_time(publish_at)
    assert claimed["attempt"] == 1 and claimed["claimedGeneration"] == 1
    assert parse_time(claimed["claimedAt"]) < parse_time(publish_at)
    cond = {c["type"]: c for c in claimed["conditions"]}
    assert cond["Published"]["status"] == "Unknown"

    (request,) = fake_n8n.wait_for("on-time", timeout=10)
    lateness = request.at - parse_time(publish_at)
    assert 0 <= lateness < 1.0, f"received {lateness:.3f}s after publishAt"

    uid = posts.get("on-time")["metadata"]["uid"]
    body = request.body
    assert body["id"] == uid and body["attempt"] == 1 and body["name"] == "on-time"
    assert parse_time(body["publishAt"]) == parse_time(publish_at) and body["channel"] == "linkedin"
    assert body["account"] == {
        "kind": "SocialAccount",
        "name": "company-page",
        "handle": "urn:li:organization:42",
        "channel": "linkedin",
    }
    assert body["content"] == {"text": "Hello", "link": "https://example.com"}
    assert body["callback"]["url"] == "http://127.0.0.1:1/v1/callbacks"
    assert signing.verify_callback_token(
        CALLBACK_KEY.encode(), body["callback"]["token"], posts.namespace, "on-time", uid, 1
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["idempotency-key"] == fingerprint_key(posts.get("on-time"))
    assert signing.verify_webhook_signature(
        SIGNING_KEY.encode(),
        headers["webhook-id"],
        int(headers["webhook-timestamp"]),
        request.raw,
        headers["webhook-signature"],
    )
    publishing = posts.wait("on-time", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    assert publishing["phase"] == "Publishing"
    assert publishing["claimedBy"].startswith("")
    publish_via_status(posts, "on-time", 1)
    assert posts.wait_phase("on-time", "Published")["attempt"] == 1
    reasons = [e["reason"] for e in posts.events("on-time")]
    # No accept (a Pending post is written first by its claim), no Event per dispatch.
    assert "Scheduled" not in reasons and "Dispatched" not in reasons


def test_transient_errors_back_off_then_succeed(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    herald(fake_n8n.url, backoff_seconds=1, max_backoff_seconds=30, jitter_ratio=0)
    fake_n8n.script(
        "flaky", 500, 503, Reply(200, {"status": "published", "externalUrl": "https://x.test/p/1"})
    )
    posts.create("flaky", in_seconds(0.5))
    status = posts.wait_phase("flaky", "Published", timeout=20)
    requests = fake_n8n.for_post("flaky")
    assert [r.body["attempt"] for r in requests] == [1, 2, 3]
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    # backoff 1 s, then 2 s (doubling), no jitter; a little slack for the round trips.
    assert 1.0 <= gaps[0] < 1.8, gaps
    assert 2.0 <= gaps[1] < 2.8, gaps
    assert {r.headers["Idempotency-Key"] for r in requests} == {fingerprint_key(posts.get("flaky"))}
    assert status["attempt"] == 3
    assert status["externalUrl"] == "https://x.test/p/1"
    assert [h["outcome"] for h in status["history"]] == ["Transient", "Transient", "Published"]
    posts.wait_event("flaky", "RetryScheduled")


def test_client_error_fails_at_once(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url)
    fake_n8n.script("rejected", Reply(400, {"message": "text too long for channel"}))
    posts.create("rejected", in_seconds(0))
    status = posts.wait_phase("rejected", "Failed")
    assert status["attempt"] == 1
    assert status["lastError"]["class"] == "Permanent"
    assert status["lastError"]["code"] == "HTTP400"
    assert "text too long" in status["lastError"]["message"]
    cond = {c["type"]: c for c in status["conditions"]}["Published"]
    assert (cond["status"], cond["reason"]) == ("False", "PermanentFailure")
    time.sleep(1.5)
    assert len(fake_n8n.for_post("rejected")) == 1, "a permanent failure is not retried"


def test_timeout_is_retried(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url, backoff_seconds=1)
    fake_n8n.script("slow", TIMEOUT)  # then the default 200
    posts.create("slow", in_seconds(0))
    posts.wait(
        "slow",
        lambda s: s.get("attempt") == 2 and bool(s.get("dispatchedAt")),
        timeout=20,
        what="attempt 2 dispatched",
    )
    status = posts.status("slow")
    assert status["history"][0]["code"] == "Timeout"


def test_retry_after_is_honoured(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url, backoff_seconds=0, max_backoff_seconds=60)
    fake_n8n.script("throttled", Reply(429, {"message": "slow down"}, {"Retry-After": "2"}))
    posts.create("throttled", in_seconds(0))
    first, second = fake_n8n.wait_for("throttled", 2, timeout=15)
    assert second.at - first.at >= 2.0 - MS


def test_stale_attempt_is_redispatched_with_the_same_key(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    herald(fake_n8n.url, stale_after_seconds=2, backoff_seconds=0)
    posts.create("silent", in_seconds(0))
    first, second = fake_n8n.wait_for("silent", 2, timeout=15)
    assert second.at - first.at >= 2.0 - MS
    assert second.body["attempt"] == 2
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    status = posts.status("silent")
    assert status["history"][0]["outcome"] == "Stale"
    posts.wait_event("silent", "StaleRecovered")


def test_operator_killed_between_claim_and_post_redispatches_once(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    """A claim written by a process that died before it sent the webhook."""
    op = herald(fake_n8n.url, identity="herald-0")
    posts.create("orphan", in_seconds(3600))
    posts.wait_phase("orphan", "Pending")
    op.kill()
    # Exactly the state a SIGKILL right after the claim's write leaves behind: claimed by
    # an earlier incarnation of this pod, never acknowledged.
    obj = posts.get("orphan")
    status = dict(
        obj["status"],
        phase="Publishing",
        attempt=1,
        claimedAt=in_seconds(0),
        claimedBy="herald-0/deadbeef",
        nextAttemptAt=in_seconds(0),
    )
    r = posts.client.patch(
        posts.url("orphan") + "/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    r.raise_for_status()
    claimed_at = time.time()
    herald(fake_n8n.url, identity="herald-0")
    (request,) = fake_n8n.wait_for("orphan", 1, timeout=40)
    # The claim's send time had come, so its request may have been at n8n: the new
    # incarnation waits for the take-over deadline like any peer (claim timeout: the
    # target's 2 s + the 5 s record grace + 10 s), then sends at once.
    assert CLAIM_TIMEOUT - 1.0 <= request.at - claimed_at < CLAIM_TIMEOUT + 8.0
    # Sent again as claimed, under a new attempt number (attempt 1 may have reached n8n)
    # and the same Idempotency-Key.
    assert request.body["attempt"] == 2, "a new attempt number, never a reused one"
    key = {k.lower(): v for k, v in request.headers.items()}["idempotency-key"]
    assert key == fingerprint_key(obj)
    posts.wait("orphan", lambda s: bool(s.get("dispatchedAt")), what="acknowledged")
    time.sleep(1)
    assert len(fake_n8n.for_post("orphan")) == 1
    posts.wait_event("orphan", "Reclaimed")


def test_sigkill_right_after_claim_really(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    """The same, with a real SIGKILL while the process holds the claim: n8n hangs the
    request so the kill lands between the claim and n8n's acknowledgement."""
    op = herald(fake_n8n.url, identity="herald-1")
    fake_n8n.script("killed", TIMEOUT)
    posts.create("killed", in_seconds(0))
    fake_n8n.wait_for("killed", 1, timeout=10)
    op.kill()
    assert posts.status("killed")["phase"] == "Publishing"
    assert not posts.status("killed").get("dispatchedAt")
    herald(fake_n8n.url, identity="herald-1")
    requests = fake_n8n.wait_for("killed", 2, timeout=CLAIM_TIMEOUT + 15)
    assert [r.body["attempt"] for r in requests] == [1, 2]
    keys = {k.lower(): v for k, v in requests[0].headers.items()}["idempotency-key"]
    assert keys == {k.lower(): v for k, v in requests[1].headers.items()}["idempotency-key"]
    posts.wait("killed", lambda s: bool(s.get("dispatchedAt")), what="acknowledged")


def test_two_operators_never_dispatch_the_same_attempt_twice(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    herald(fake_n8n.url, identity="replica-a", concurrency=32)
    herald(fake_n8n.url, identity="replica-b", concurrency=32)
    publish_at = in_seconds(6)
    docs = "\n---\n".join(
        json.dumps(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "ScheduledPost",
                "metadata": {"name": f"burst-{i}", "namespace": namespace},
                "spec": {"publishAt": publish_at, "content": {"text": f"burst {i}"}},
            }
        )
        for i in range(200)
    )
    control_plane.kubectl("apply", "-f", "-", input=docs, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(fake_n8n.requests) < 200:
        time.sleep(0.2)
    time.sleep(2)  # let any duplicate arrive
    keys = Counter((r.body["id"], r.body["attempt"]) for r in fake_n8n.requests)
    assert len(keys) == 200, f"{len(keys)} distinct posts dispatched"
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]
    # A take-over sends a new attempt number under the same Idempotency-Key: count those.
    resent = [(ok.message, r.message) for ok, r in after_2xx(fake_n8n.requests)]
    assert resent == [], f"sent again after n8n's 2xx: {resent[:5]}"
    claimants = Counter(
        posts.status(f"burst-{i}").get("claimedBy", "?").split("/")[0] for i in range(0, 200, 10)
    )
    assert set(claimants) <= {"replica-a", "replica-b"}


def test_suspend_and_resume(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url)
    posts.create("paused", in_seconds(1), suspend=True)
    posts.wait_phase("paused", "Suspended")
    time.sleep(1.5)
    assert fake_n8n.for_post("paused") == []
    posts.patch_spec("paused", {"suspend": False})
    fake_n8n.wait_for("paused", 1, timeout=10)
    posts.wait_event("paused", "Resumed")


def test_edit_before_due_replans(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url)
    posts.create("edited", in_seconds(3600))
    posts.wait_phase("edited", "Pending")
    new_at = in_seconds(1)
    posts.patch_spec("edited", {"publishAt": new_at, "content": {"text": "Second draft"}})
    (request,) = fake_n8n.wait_for("edited", 1, timeout=10)
    assert request.body["content"]["text"] == "Second draft"
    assert request.body["publishAt"] == new_at


def test_edit_after_dispatch_does_not_change_what_was_sent(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    herald(fake_n8n.url)
    posts.create("sent", in_seconds(0))
    posts.wait("sent", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    posts.patch_spec("sent", {"content": {"text": "Too late"}})
    status = posts.wait(
        "sent",
        lambda s: any(
            c["type"] == "SpecApplied" and c["status"] == "False" for c in s.get("conditions", [])
        ),
        what="SpecApplied=False",
    )
    assert status["phase"] == "Publishing"
    assert status["observedGeneration"] == 2
    assert len(fake_n8n.for_post("sent")) == 1


def test_delete_before_due_cancels(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, control_plane: ControlPlane, namespace: str
) -> None:
    herald(fake_n8n.url)
    posts.create("deleted", in_seconds(2))
    # Due within the claim-ahead window, so it may already be claimed: still not sent.
    posts.wait("deleted", lambda s: s.get("phase") in ("Pending", "Publishing"), what="planned")
    control_plane.kubectl("delete", "sp", "deleted", "-n", namespace)
    time.sleep(3)
    assert fake_n8n.for_post("deleted") == []


def test_missed_deadline(posts: Posts, fake_n8n: FakeN8n, herald: Start) -> None:
    herald(fake_n8n.url)
    posts.create("late", in_seconds(-120), startingDeadlineSeconds=60)
    status = posts.wait_phase("late", "Failed")
    assert status["lastError"]["code"] == "MissedDeadline"
    assert status["lastError"]["class"] == "Deadline"
    posts.wait_event("late", "MissedDeadline")
    posts.create("late-but-ok", in_seconds(-120))  # no deadline: published late
    fake_n8n.wait_for("late-but-ok", 1, timeout=10)
    assert fake_n8n.for_post("late") == []


def test_manual_retry_annotation(
    posts: Posts, fake_n8n: FakeN8n, herald: Start, control_plane: ControlPlane, namespace: str
) -> None:
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
        "herald.dev/retry-requested-at=2026-11-22T12:00:00Z",
    )
    requests = fake_n8n.wait_for("retry-me", 2, timeout=10)
    # Attempt numbers keep counting (attempt 1's token and webhook-id stay spent); the
    # idempotency key is new, so an n8n that de-duplicates does not drop the retry.
    assert [r.body["attempt"] for r in requests] == [1, 2]
    keys = [{k.lower(): v for k, v in r.headers.items()}["idempotency-key"] for r in requests]
    first_key = fingerprint_key(posts.get("retry-me"))
    assert keys == [first_key, first_key + ".1"]
    status = posts.wait("retry-me", lambda s: bool(s.get("dispatchedAt")), what="dispatched")
    assert status["lastHandledRetryRequest"] == "2026-11-22T12:00:00Z"
    posts.wait_event("retry-me", "RetryRequested")


def test_kubectl_wait_for_published_condition(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    fake_n8n.default = Reply(200, {"status": "published", "externalId": "urn:li:share:1"})
    herald(fake_n8n.url)
    posts.create("waited", in_seconds(1))
    out = control_plane.kubectl(
        "wait",
        "--for=condition=Published",
        "sp/waited",
        "-n",
        namespace,
        "--timeout=20s",
        timeout=30,
    ).stdout
    assert "condition met" in out
    assert posts.status("waited")["externalId"] == "urn:li:share:1"
