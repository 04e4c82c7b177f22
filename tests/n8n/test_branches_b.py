"""The Bluesky, Facebook Page, Instagram and Threads branches, each alone, through a real n8n.

A test-only workflow (built here, never shipped) has one Webhook per network: a Code node
turns the request into the branch's entry item (the post, its key, media as binary
properties), the branch runs, and Respond to Webhook answers with the branch's exit item.
Each network is a fake on 127.0.0.1 (tests/support/fake_bluesky.py, fake_meta.py) that
records every request; the tests check what the fake saw and the outcome. One n8n for
the module.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support import fake_bluesky, fake_meta
from tests.support.controlplane import REPO
from tests.support.fake_bluesky import FakeBluesky
from tests.support.fake_meta import FakeMeta, graph_error
from tests.support.n8n_server import N8nServer

pytestmark = [pytest.mark.e2e, pytest.mark.n8n]

SRC = REPO / "n8n" / "src"
NETWORKS = ("bluesky",)
HARNESS_ID = "HeraldNetBTest01"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 4


def branch_module(network: str) -> Any:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    return importlib.import_module(f"net_{network}")


ENTRY_JS = """
// Test harness: the request body is the entry item; media bytes arrive base64-encoded.
const body = $input.first().json.body;
const binary = {};
const media = (body.media || []).map((m, i) => {
  const key = `media${i}`;
  binary[key] = { data: m.data, mimeType: m.mimeType, fileName: `media${i}` };
  return { url: m.url, altText: m.altText || '', mimeType: m.mimeType,
           bytes: Buffer.from(m.data, 'base64').length, binaryKey: key };
});
return [{ json: { post: body.post, idempotencyKey: body.idempotencyKey, media }, binary }];
"""


def harness() -> dict[str, Any]:
    """One workflow: per network Webhook → entry → branch → Respond with the exit item."""
    build = branch_module("bluesky").helpers()
    nodes: list[dict[str, Any]] = []
    edges: list[tuple[str, int, str]] = []
    for row, network in enumerate(NETWORKS):
        y = row * 800
        hook, entry, reply = f"{network} hook", f"{network} entry", f"{network} reply"
        branch_nodes, branch_edges, first, last = branch_module(network).branch(440, y)
        nodes += [
            build.node(
                hook,
                "webhook",
                2.1,
                0,
                y,
                httpMethod="POST",
                path=f"herald-test-{network}",
                responseMode="responseNode",
                options={},
                _extra={"webhookId": f"6f4f0c3e-6c2b-4f7e-9d55-0e6b0c1e0b{row:02d}"},
            ),
            build.node(entry, "code", 2, 220, y, jsCode=ENTRY_JS),
            *branch_nodes,
            build.node(
                reply,
                "respondToWebhook",
                1.1,
                440 + 14 * 220,
                y,
                respondWith="json",
                responseBody="={{ JSON.stringify($json) }}",
                options={"responseCode": 200},
            ),
        ]
        edges += [(hook, 0, entry), (entry, 0, first), *branch_edges, (last, 0, reply)]
    flow: dict[str, Any] = build.workflow(HARNESS_ID, "Herald netB branches (test)", nodes, edges)
    return flow


def credentials() -> list[dict[str, Any]]:
    login = {"body": {"identifier": fake_bluesky.HANDLE, "password": fake_bluesky.PASSWORD}}
    graph = {"accessToken": fake_meta.TOKEN}
    return [
        {"id": "HeraldBlueskyApp", "name": "Bluesky (Herald)", "type": "httpCustomAuth",
         "data": {"json": json.dumps(login)}},
        {"id": "HeraldFacebookPg", "name": "Facebook Page (Herald)",
         "type": "facebookGraphApi", "data": graph},
        {"id": "HeraldInstagram1", "name": "Instagram (Herald)", "type": "facebookGraphApi",
         "data": graph},
        {"id": "HeraldThreadsAcc", "name": "Threads (Herald)", "type": "facebookGraphApi",
         "data": graph},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeBluesky() as bluesky,
        FakeMeta("facebook") as facebook,
        FakeMeta("instagram") as instagram,
        FakeMeta("threads") as threads,
    ):
        yield {"bluesky": bluesky, "facebook": facebook, "instagram": instagram,
               "threads": threads}  # fmt: skip


@pytest.fixture(scope="module")
def n8n(fakes: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[N8nServer]:
    workdir = tmp_path_factory.mktemp("n8n-netb")
    server = N8nServer(
        workdir,
        env_extra={
            "BLUESKY_API_BASE_URL": fakes["bluesky"].base_url,
            "FACEBOOK_API_BASE_URL": fakes["facebook"].base_url,
            "INSTAGRAM_API_BASE_URL": fakes["instagram"].base_url,
            "THREADS_API_BASE_URL": fakes["threads"].base_url,
        },
    )
    flow = workdir / "harness.json"
    flow.write_text(json.dumps(harness()))
    server.setup([flow], credentials=credentials())
    try:
        server.start()
        wait_for_webhooks(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def bluesky(fakes: dict[str, Any]) -> FakeBluesky:
    fake: FakeBluesky = fakes["bluesky"]
    fake.reset()
    return fake


def meta(fakes: dict[str, Any], network: str) -> FakeMeta:
    fake: FakeMeta = fakes[network]
    fake.reset()
    return fake


def entry(
    channel: str,
    text: str,
    *,
    link: str | None = None,
    media: list[tuple[str, bytes, str, str]] = (),  # type: ignore[assignment]
    publish_at: datetime | None = None,
) -> dict[str, Any]:
    """The branch's entry: a Herald post; media as (url, bytes, mime type, alt text)."""
    at = publish_at or datetime.now(UTC)
    content: dict[str, Any] = {"text": text}
    if link:
        content["link"] = link
    if media:
        content["media"] = [{"url": url, "altText": alt} for url, _, _, alt in media]
    return {
        "post": {
            "id": "5d1c6a38-0000-4000-8000-000000000001",
            "namespace": "default",
            "name": f"{channel}-post",
            "attempt": 1,
            "publishAt": at.isoformat().replace("+00:00", "Z"),
            "channel": channel,
            "account": "default",
            "content": content,
            "callback": {"url": "http://127.0.0.1:9/unused", "token": "unused"},
        },
        "idempotencyKey": f"key-{channel}-{time.monotonic_ns()}",
        "media": [
            {"url": url, "altText": alt, "mimeType": mime, "data": base64.b64encode(data).decode()}
            for url, data, mime, alt in media
        ],
    }


def wait_for_webhooks(n8n: N8nServer, timeout: float = 120.0) -> None:
    """n8n answers "starting up" for a while after /healthz; a post that fails in the
    branch's first node (no network call) tells that the webhooks are registered."""
    deadline = time.monotonic() + timeout
    probe = entry("bluesky", "x" * 301)
    while True:
        try:
            if run(n8n, "bluesky", probe)["code"] == "BlueskyTextTooLong":
                return
        except (OSError, ValueError, AssertionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def run(n8n: N8nServer, network: str, body: dict[str, Any]) -> dict[str, Any]:
    """Send one entry item through the network's branch; the exit item's outcome."""
    request = urllib.request.Request(
        n8n.webhook_url(f"herald-test-{network}"),
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        exit_item = json.loads(response.read())
    assert set(exit_item) == {"outcome"}, exit_item
    outcome: dict[str, Any] = exit_item["outcome"]
    return outcome


# --- Bluesky ----------------------------------------------------------------------------


def test_bluesky_posts_text_with_facets_and_images_with_alt_text(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    text = "Déjà vu 🎉 #Herald ships https://example.com/x."
    outcome = run(
        n8n,
        "bluesky",
        entry(
            "bluesky",
            text,
            media=[
                ("https://cdn.example.com/a.png", PNG, "image/png", "A chart"),
                ("https://cdn.example.com/b.jpg", JPEG, "image/jpeg", ""),
            ],
        ),
    )

    (session,) = bluesky.calls("com.atproto.server.createSession")
    assert session.json() == {
        "identifier": fake_bluesky.HANDLE,
        "password": fake_bluesky.PASSWORD,
    }
    uploads = bluesky.calls("com.atproto.repo.uploadBlob")
    # n8n sends an HTTP node's items concurrently: the order of the uploads is free.
    assert sorted((u.raw, u.headers["content-type"]) for u in uploads) == sorted(
        [(PNG, "image/png"), (JPEG, "image/jpeg")]
    )
    (create,) = bluesky.calls("com.atproto.repo.createRecord")
    for call in [*uploads, create]:
        assert call.headers["authorization"] == f"Bearer {fake_bluesky.JWT}"
    body = create.json()
    assert body["repo"] == fake_bluesky.DID
    assert body["collection"] == "app.bsky.feed.post"
    record = body["record"]
    assert record["$type"] == "app.bsky.feed.post"
    assert record["text"] == text
    datetime.fromisoformat(record["createdAt"])
    encoded = text.encode()
    spans = {
        encoded[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(): f["features"][0]
        for f in record["facets"]
    }
    assert spans == {
        "#Herald": {"$type": "app.bsky.richtext.facet#tag", "tag": "Herald"},
        "https://example.com/x": {
            "$type": "app.bsky.richtext.facet#link",
            "uri": "https://example.com/x",
        },
    }
    embed = record["embed"]
    assert embed["$type"] == "app.bsky.embed.images"
    assert [i["alt"] for i in embed["images"]] == ["A chart", ""]
    # Each image is the blob uploaded from that medium's bytes, in the post's order.
    assert [bluesky.blobs[i["image"]["ref"]["$link"]] for i in embed["images"]] == [
        ("image/png", PNG),
        ("image/jpeg", JPEG),
    ]

    (stored,) = bluesky.records.values()
    uri = stored["uri"]
    rkey = uri.rsplit("/", 1)[1]
    assert outcome == {
        "ok": True,
        "externalId": uri,
        "externalUrl": f"https://bsky.app/profile/{fake_bluesky.DID}/post/{rkey}",
    }


def test_bluesky_link_without_images_is_an_external_card(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    outcome = run(n8n, "bluesky", entry("bluesky", "Read this", link="https://example.com/a"))

    assert outcome["ok"] is True
    assert bluesky.calls("com.atproto.repo.uploadBlob") == []
    (create,) = bluesky.calls("com.atproto.repo.createRecord")
    record = create.json()["record"]
    assert record["text"] == "Read this"
    assert "facets" not in record
    assert record["embed"] == {
        "$type": "app.bsky.embed.external",
        "external": {
            "uri": "https://example.com/a",
            "title": "https://example.com/a",
            "description": "",
        },
    }


def test_bluesky_post_already_in_the_repo_is_a_duplicate_with_its_uri(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    publish_at = datetime.now(UTC) - timedelta(minutes=5)
    made = (publish_at + timedelta(seconds=2)).isoformat()
    uri = bluesky.seed_post("Once only", made)

    outcome = run(n8n, "bluesky", entry("bluesky", "Once only", publish_at=publish_at))

    (listing,) = bluesky.calls("com.atproto.repo.listRecords")
    assert listing.query == {
        "repo": fake_bluesky.DID,
        "collection": "app.bsky.feed.post",
        "limit": "10",
    }
    assert bluesky.calls("com.atproto.repo.createRecord") == []
    rkey = uri.rsplit("/", 1)[1]
    assert outcome == {
        "ok": False,
        "code": "BlueskyDuplicate",
        "duplicate": True,
        "externalId": uri,
        "externalUrl": f"https://bsky.app/profile/{fake_bluesky.DID}/post/{rkey}",
        "message": f"Bluesky already has this post: {uri}",
    }


def test_bluesky_same_text_before_publish_at_is_a_new_post(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    publish_at = datetime.now(UTC)
    bluesky.seed_post("Good morning", (publish_at - timedelta(days=1)).isoformat())

    outcome = run(n8n, "bluesky", entry("bluesky", "Good morning", publish_at=publish_at))

    assert outcome["ok"] is True
    assert len(bluesky.calls("com.atproto.repo.createRecord")) == 1


def test_bluesky_429_reports_seconds_until_ratelimit_reset(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    reset = int(time.time()) + 3600
    bluesky.fail_next(
        "com.atproto.repo.createRecord",
        429,
        {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
        {"ratelimit-remaining": "0", "ratelimit-reset": str(reset)},
    )

    outcome = run(n8n, "bluesky", entry("bluesky", "Busy day"))

    retry = outcome.pop("retryAfterSeconds")
    assert reset - time.time() - 60 <= retry <= reset - time.time() + 1
    assert outcome == {
        "ok": False,
        "status": 429,
        "code": "BlueskyRateLimitExceeded",
        "message": "creating the post: Bluesky answered HTTP 429 RateLimitExceeded: "
        "Rate Limit Exceeded",
    }


def test_bluesky_wrong_app_password_is_401_naming_the_credential(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    bluesky.fail_next(
        "com.atproto.server.createSession",
        401,
        {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
    )

    outcome = run(n8n, "bluesky", entry("bluesky", "Hello"))

    assert [r.nsid for r in bluesky.requests] == ["com.atproto.server.createSession"]
    assert outcome == {
        "ok": False,
        "status": 401,
        "code": "BlueskyAuthenticationRequired",
        "credential": "Bluesky (Herald)",
        "message": 'signing in with the credential "Bluesky (Herald)": Bluesky answered '
        "HTTP 401 AuthenticationRequired: Invalid identifier or password",
    }


def test_bluesky_refuses_five_images_before_any_request(
    n8n: N8nServer, bluesky: FakeBluesky
) -> None:
    media = [(f"https://cdn.example.com/{i}.png", PNG, "image/png", "") for i in range(5)]

    outcome = run(n8n, "bluesky", entry("bluesky", "Too many", media=media))

    assert bluesky.requests == []
    assert outcome == {
        "ok": False,
        "code": "BlueskyTooManyImages",
        "message": "Bluesky takes at most 4 images per post; this post has 5",
    }
