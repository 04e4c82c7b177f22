"""Herald and a real n8n running the shipped workflows, end to end.

Real control plane, real `herald run` and `herald callback-server` subprocesses, a real
n8n (hack/n8n.sh install) running n8n/publish.json and n8n/publish-echo.json,
and LinkedIn's REST API faked on 127.0.0.1 (tests/support/fake_linkedin.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Posts, in_seconds, parse_time
from tests.n8n.harness import account_of
from tests.support import fake_mastodon
from tests.support.callback_relay import CallbackRelay
from tests.support.fake_linkedin import FakeLinkedIn
from tests.support.herald_proc import HeraldProcess
from tests.support.n8n_server import ECHO, LINKEDIN_AUTHOR, PUBLISH, N8nServer, Networks

pytestmark = [pytest.mark.e2e, pytest.mark.n8n]

SIGNING_KEY = "whsec_" + base64.b64encode(b"herald-n8n-e2e-signing-key-32byt").decode()
AUTHOR = LINKEDIN_AUTHOR
LINKEDIN_HOOK, ECHO_HOOK = "herald-publish", "herald-echo"
# A PNG's first bytes are enough: LinkedIn's upload takes whatever bytes it is given.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

Start = Callable[..., HeraldProcess]


@pytest.fixture(scope="module")
def networks() -> Iterator[Networks]:
    with Networks() as fakes:
        yield fakes


@pytest.fixture(scope="module")
def linkedin(networks: Networks) -> FakeLinkedIn:
    return networks.linkedin


@pytest.fixture(scope="module")
def n8n(networks: Networks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[N8nServer]:
    server = N8nServer(
        tmp_path_factory.mktemp("n8n"),
        env_extra={"HERALD_SIGNING_KEY": SIGNING_KEY, **networks.env()},
    )
    server.setup([PUBLISH, ECHO], credentials=networks.credentials())
    try:
        server.start(probe_path=LINKEDIN_HOOK)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh(linkedin: FakeLinkedIn) -> FakeLinkedIn:
    linkedin.reset()
    return linkedin


def operator(
    herald: Start, n8n: N8nServer, callback_url: str, hook: str = LINKEDIN_HOOK, **settings: Any
) -> HeraldProcess:
    settings.setdefault("signing_key", SIGNING_KEY)
    return herald(n8n.webhook_url(hook), callback_url=callback_url, **settings)


def little_text(text: str) -> str:
    """LinkedIn's little text of a text without hashtags: reserved characters escaped."""
    return "".join(f"\\{c}" if c in "\\|{}@[]()<>#*_~" else c for c in text)


def phases_until(posts: Posts, name: str, final: str, timeout: float) -> list[str]:
    """Poll the post's phase until `final`; the distinct phases seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = posts.status(name).get("phase", "")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        if phase == final:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"{name}: not {final} in {timeout}s; phases {seen}")


def test_post_goes_through_n8n_to_linkedin_once(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    _, callback = sidecar()
    operator(herald, n8n, callback)
    image = fresh.serve_media("launch.png", PNG)
    text = "Herald 1.0 is out (finally) #launch"
    link = "https://example.com/blog/herald-1-0"
    posts.create(
        "launch",
        in_seconds(3),
        content={"text": text, "link": link, "media": [{"url": image, "altText": "A rocket"}]},
    )
    phases = phases_until(posts, "launch", "Published", 60)
    # Due within the claim-ahead window: it may be claimed before a poll sees Pending.
    assert phases[0] in ("Pending", "Publishing") and phases[-1] == "Published", phases
    assert [e for e in posts.events("launch") if e["type"] == "Warning"] == []

    status = posts.status("launch")
    creates = fresh.creates()
    assert len(creates) == 1, creates
    assert len(fresh.post_requests()) == 1
    created = creates[0]
    assert status["externalId"] == created.urn
    assert status["externalUrl"] == f"https://www.linkedin.com/feed/update/{created.urn}/"
    # The credential's token (refreshed once a 401 test has run in this module).
    assert created.headers["authorization"] in (
        "Bearer test-access-token",
        "Bearer refreshed-token",
    )
    assert created.headers["x-restli-protocol-version"] == "2.0.0"
    assert created.headers["linkedin-version"].isdigit()
    body = created.body
    assert body["author"] == AUTHOR
    # The hashtag stays a hashtag; the rest is escaped.
    hashtag = "{hashtag|\\#|launch}"
    assert body["commentary"] == little_text("Herald 1.0 is out (finally) ") + hashtag
    assert body["lifecycleState"] == "PUBLISHED"
    article = body["content"]["article"]
    assert article["source"] == link
    # The media: downloaded from its URL once, uploaded to LinkedIn once, and the
    # uploaded image is the one the post shows.
    assert len(fresh.uploads) == 1
    ((image_id, uploaded),) = fresh.uploads.items()
    assert uploaded == PNG
    assert article["thumbnail"] == f"urn:li:image:{image_id}"
    downloads = [r for r in fresh.requests if r.method == "GET" and r.path == "/media/launch.png"]
    assert len(downloads) == 1


def test_images_without_a_link_become_a_multi_image_post(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    _, callback = sidecar()
    operator(herald, n8n, callback)
    media = [
        {"url": fresh.serve_media("one.png", PNG[:100]), "altText": "First"},
        {"url": fresh.serve_media("two.png", PNG[:200])},
    ]
    posts.create("gallery", in_seconds(1), content={"text": "Two pictures", "media": media})
    status = posts.wait_phase("gallery", "Published", 60)
    (created,) = fresh.creates()
    assert status["externalId"] == created.urn
    images = created.body["content"]["multiImage"]["images"]
    assert [i.get("altText") for i in images] == ["First", None]
    uploaded = [fresh.uploads[i["id"].removeprefix("urn:li:image:")] for i in images]
    assert uploaded == [PNG[:100], PNG[:200]]


def test_linkedin_503_then_201_publishes_on_attempt_2(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    _, callback = sidecar()
    operator(herald, n8n, callback)
    fresh.script(503, 201)
    posts.create("flaky", in_seconds(1), retry={"maxAttempts": 3, "backoffSeconds": 1})
    status = posts.wait_phase("flaky", "Published", 60)
    assert status["attempt"] == 2
    assert len(fresh.post_requests()) == 2
    (created,) = fresh.creates()
    assert status["externalId"] == created.urn
    assert "RetryScheduled" in [e["reason"] for e in posts.events("flaky")]


def test_linkedin_401_fails_the_post_for_good(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    _, callback = sidecar()
    operator(herald, n8n, callback)
    # 401 twice: n8n refreshes the OAuth2 token after the first and tries once more.
    fresh.script(401, 401)
    posts.create("denied", in_seconds(1), retry={"maxAttempts": 3, "backoffSeconds": 1})
    status = posts.wait_phase("denied", "Failed", 60)
    assert status["attempt"] == 1
    assert status["lastError"]["class"] == "Permanent"
    assert "LinkedIn answered HTTP 401" in status["lastError"]["message"]
    assert "Invalid access token" in status["lastError"]["message"]
    assert fresh.creates() == []
    tried = [(r.path, r.headers.get("authorization")) for r in fresh.requests]
    assert tried == [
        ("/rest/posts", "Bearer test-access-token"),
        ("/oauth/v2/accessToken", None),
        ("/rest/posts", "Bearer refreshed-token"),
    ]
    time.sleep(3)  # longer than the backoff: a retry would have happened by now
    assert posts.status("denied")["attempt"] == 1
    assert len(fresh.requests) == len(tried)


def test_redispatch_after_a_lost_callback_does_not_post_twice(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    """LinkedIn posts attempt 1, its callback is lost, Herald recovers the stale post and
    dispatches attempt 2 with the same Idempotency-Key: n8n answers it from its record."""
    _, callback = sidecar()
    with CallbackRelay(callback, drop=lambda body: body.get("attempt") == 1) as relay:
        operator(herald, n8n, relay.url)
        posts.create(
            "lost-callback",
            in_seconds(1),
            staleAfterSeconds=12,
            retry={"maxAttempts": 3, "backoffSeconds": 1},
        )
        status = posts.wait_phase("lost-callback", "Published", 90)
        # The relay records a callback once the sidecar has answered it, which can be
        # after the status it patched is visible.
        wait_until(lambda: any(not r.dropped for r in relay.records()), 10, "the record")
        records = relay.records()
    assert status["attempt"] == 2
    (created,) = fresh.creates()
    assert len(fresh.post_requests()) == 1
    assert status["externalId"] == created.urn
    assert any(r.dropped and r.body["attempt"] == 1 for r in records)
    delivered = [r for r in records if not r.dropped]
    assert [(r.body["attempt"], r.body["externalId"]) for r in delivered] == [(2, created.urn)]
    assert "StaleRecovered" in [e["reason"] for e in posts.events("lost-callback")]


def sign(key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    secret = base64.b64decode(key.removeprefix("whsec_"))
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_workflow_rejects_unsigned_and_badly_signed_requests(
    n8n: N8nServer, fresh: FakeLinkedIn
) -> None:
    body = json.dumps(
        {
            "id": "0a1b2c3d-0000-4000-8000-000000000001",
            "namespace": "default",
            "name": "forged",
            "attempt": 1,
            "publishAt": "2030-01-01T00:00:00Z",
            "channel": "linkedin",
            "account": account_of("linkedin"),
            "content": {"text": "forged"},
            "callback": {"url": "http://127.0.0.1:1/v1/callbacks", "token": "v1.x"},
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    now = int(time.time())
    msg = "msg_forged_1"
    good = {"webhook-id": msg, "webhook-timestamp": str(now), "Idempotency-Key": "forged"}
    wrong_key = "whsec_" + base64.b64encode(b"not-the-key").decode()
    cases = {
        "no signature headers": {"Idempotency-Key": "forged"},
        "wrong key": {**good, "webhook-signature": sign(wrong_key, msg, now, body)},
        "tampered body": {**good, "webhook-signature": sign(SIGNING_KEY, msg, now, body + b" ")},
        "other message id": {
            **good,
            "webhook-signature": sign(SIGNING_KEY, "msg_other", now, body),
        },
        "timestamp too old": {
            **good,
            "webhook-timestamp": str(now - 600),
            "webhook-signature": sign(SIGNING_KEY, msg, now - 600, body),
        },
    }
    for case, headers in cases.items():
        status, answer = post_webhook(n8n.webhook_url(LINKEDIN_HOOK), body, headers)
        assert status == 401, (case, status, answer)
        assert answer["code"] == "invalid_signature", (case, answer)
    time.sleep(1)  # anything that got through would have reached LinkedIn by now
    assert fresh.requests == []


def test_herald_with_the_wrong_key_is_refused_by_n8n(
    n8n: N8nServer, fresh: FakeLinkedIn, herald: Start, sidecar: Any, posts: Posts
) -> None:
    _, callback = sidecar()
    wrong = "whsec_" + base64.b64encode(b"a-key-n8n-does-not-know-at-all!!").decode()
    operator(herald, n8n, callback, signing_key=wrong)
    posts.create("misconfigured", in_seconds(1))
    status = posts.wait_phase("misconfigured", "Failed", 30)
    assert "401" in status["lastError"]["message"]
    assert "signature" in status["lastError"]["message"]
    assert fresh.requests == []


def test_echo_workflow_publishes(n8n: N8nServer, herald: Start, sidecar: Any, posts: Posts) -> None:
    _, callback = sidecar()
    operator(herald, n8n, callback, hook=ECHO_HOOK)
    created = posts.create("echoed", in_seconds(1))
    status = posts.wait_phase("echoed", "Published", 30)
    uid = created["metadata"]["uid"]
    assert status["externalId"] == f"echo:{uid}:1"
    assert "externalUrl" not in status  # it went nowhere, and says so
    assert f"herald echo: {posts.namespace}/echoed attempt 1" in n8n.log()


def test_dedup_record_survives_an_n8n_restart(n8n: N8nServer, fresh: FakeLinkedIn) -> None:
    """Publish through the workflow, restart n8n on the same user folder, re-dispatch the
    same Idempotency-Key: answered from the record, LinkedIn sees no second create."""
    with CallbackRelay(None) as sink:
        key = "restart-proof-key"

        def dispatch(attempt: int) -> int:
            body = json.dumps(
                {
                    "id": "0a1b2c3d-0000-4000-8000-0000000000aa",
                    "namespace": "default",
                    "name": "restart-proof",
                    "attempt": attempt,
                    "publishAt": "2030-01-01T00:00:00Z",
                    "channel": "linkedin",
                    "account": account_of("linkedin"),
                    "content": {"text": "survives restarts"},
                    "callback": {"url": f"{sink.url}/v1/callbacks", "token": "v1.t"},
                },
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
            now, msg = int(time.time()), f"msg_restart_{attempt}"
            headers = {
                "webhook-id": msg,
                "webhook-timestamp": str(now),
                "webhook-signature": sign(SIGNING_KEY, msg, now, body),
                "Idempotency-Key": key,
            }
            status, _ = post_webhook(n8n.webhook_url(LINKEDIN_HOOK), body, headers)
            return status

        assert dispatch(1) == 202
        wait_until(lambda: len(sink.records()) >= 1, 30, "the first callback")
        (created,) = fresh.creates()
        n8n.stop()
        n8n.start(probe_path=LINKEDIN_HOOK)
        assert dispatch(2) == 202
        wait_until(lambda: len(sink.records()) >= 2, 30, "the second callback")
        received = [r.body for r in sink.records()]
    assert [(b["attempt"], b["status"], b["externalId"]) for b in received[:2]] == [
        (1, "published", created.urn),
        (2, "published", created.urn),
    ]
    assert len(fresh.post_requests()) == 1


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen in {timeout}s")


def test_a_rate_limit_reset_from_the_network_is_waited_for(
    n8n: N8nServer, networks: Networks, herald: Start, sidecar: Any, posts: Posts
) -> None:
    """Mastodon answers 429 with X-RateLimit-Reset in 5 minutes: n8n reports
    error.retryAfterSeconds, Herald spends one attempt and schedules the next one no
    earlier than the reset, beyond maxBackoffSeconds."""
    networks.reset()
    _, callback = sidecar()
    operator(herald, n8n, callback)
    limited = fake_mastodon.rate_limited(300)
    reset = parse_time(limited.headers["X-RateLimit-Reset"].replace("Z", "+00:00"))
    networks.mastodon.script(limited)
    posts.create(
        "rate-limited",
        in_seconds(1),
        channel="mastodon",
        retry={"maxAttempts": 3, "backoffSeconds": 1, "maxBackoffSeconds": 2},
    )
    status = posts.wait_phase("rate-limited", "Retrying", 60)
    assert status["attempt"] == 1
    assert parse_time(status["nextAttemptAt"]) >= reset, (status, reset)
    assert status["lastError"]["class"] == "Transient", status
    assert len(networks.mastodon.of("POST", "/api/v1/statuses")) == 1
    time.sleep(4)  # twice maxBackoffSeconds: a retry on the backoff would have come by now
    status = posts.status("rate-limited")
    assert (status["phase"], status["attempt"]) == ("Retrying", 1)
    assert len(networks.mastodon.of("POST", "/api/v1/statuses")) == 1
    assert networks.mastodon.creates() == []


ROUND_TRIPS = 10
CHANNELS = ["linkedin", "x", "mastodon", "bluesky", "facebook", "instagram", "threads"]
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 4


def published_on(networks: Networks) -> dict[str, int]:
    """How many posts each network's fake has made."""
    return {
        "linkedin": len(networks.linkedin.creates()),
        "x": len(networks.x.creates()),
        "mastodon": len(networks.mastodon.creates()),
        "bluesky": len(networks.bluesky.records),
        "facebook": len(networks.facebook.published),
        "instagram": len(networks.instagram.published),
        "threads": len(networks.threads.published),
    }


@pytest.mark.parametrize("channel", CHANNELS)
def test_round_trip_publish_at_to_published(
    n8n: N8nServer,
    networks: Networks,
    herald: Start,
    sidecar: Any,
    posts: Posts,
    capsys: pytest.CaptureFixture[str],
    channel: str,
) -> None:
    """publishAt → Published through real n8n, per channel's branch; prints the p50."""
    networks.reset()
    _, callback = sidecar()
    operator(herald, n8n, callback)
    content: dict[str, Any] = {}
    if channel == "instagram":  # Instagram publishes only posts with an image
        image = networks.mastodon.serve_media("rt.jpg", JPEG, "image/jpeg")
        content["media"] = [{"url": image}]
    names = [f"rt-{channel}-{i:02d}" for i in range(ROUND_TRIPS)]
    for i, name in enumerate(names):
        # Spread out so each round trip is measured on its own, not as a burst.
        posts.create(
            name,
            in_seconds(3 + i * 0.5),
            channel=channel,
            content={"text": f"Round trip {name}", **content},
        )
    delays = []
    for name in names:
        status = posts.wait_phase(name, "Published", 90)
        spec = posts.get(name)["spec"]
        delays.append(parse_time(status["publishedAt"]) - parse_time(spec["publishAt"]))
    # Every post reached its own network, and no other.
    assert published_on(networks) == {c: ROUND_TRIPS if c == channel else 0 for c in CHANNELS}
    p50 = statistics.median(delays)
    with capsys.disabled():
        print(
            f"\nround trip publishAt -> Published through n8n {n8n.version()} ({channel}): "
            f"p50 {p50 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms over {ROUND_TRIPS} posts"
        )
    assert p50 < 5.0
