"""The Bluesky, Facebook Page, Instagram and Threads branches, each alone, through a real n8n.

A test-only workflow (tests/n8n/harness.py, never shipped) has one Webhook per network: a
Code node turns the request into the branch's entry item (the post, its key, media as
binary properties), the branch runs, and Respond to Webhook answers with the branch's exit
item. Each network is a fake on 127.0.0.1 (tests/support/fake_bluesky.py, fake_meta.py) that
records every request; the tests check what the fake saw and the outcome. The n8n is the
one of tests/n8n/conftest.py: publish.json and the harness side by side.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.n8n.harness import NETWORKS, branch_module, entry, run
from tests.support import fake_bluesky, fake_meta
from tests.support.fake_bluesky import FakeBluesky
from tests.support.fake_meta import FakeMeta, graph_error
from tests.support.n8n_server import N8nServer, Networks

pytestmark = [pytest.mark.e2e, pytest.mark.n8n]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 4


@pytest.fixture(scope="module")
def fakes(networks: Networks) -> dict[str, Any]:
    return networks.by_channel()


@pytest.fixture
def bluesky(fakes: dict[str, Any]) -> FakeBluesky:
    fake: FakeBluesky = fakes["bluesky"]
    fake.reset()
    return fake


def meta(fakes: dict[str, Any], network: str) -> FakeMeta:
    fake: FakeMeta = fakes[network]
    fake.reset()
    return fake


@pytest.mark.parametrize("network", NETWORKS)
def test_branch_nodes_are_prefixed_and_wired(network: str) -> None:
    """No n8n needed: what build.py places is self-consistent and holds no secret."""
    nodes, edges, first, last = branch_module(network).branch(0, 0)
    names = [n["name"] for n in nodes]
    assert len(set(names)) == len(names)
    assert all(name.startswith(f"{network.capitalize()}: ") for name in names)
    assert {first, last} <= set(names)
    for source, _, target in edges:
        assert source in names and target in names
    # Every node but the exit leads somewhere; nothing leads back to the entry.
    assert {s for s, _, _ in edges} == set(names) - {last}
    assert first not in {t for _, _, t in edges}
    text = json.dumps(nodes)
    for secret in (fake_meta.TOKEN, fake_bluesky.PASSWORD, fake_bluesky.JWT):
        assert secret not in text
    for n in nodes:
        for credential in n.get("credentials", {}).values():
            assert set(credential) == {"id", "name"}
            assert credential["name"].endswith("(Herald)")


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


def test_bluesky_mentions_link_to_the_resolved_did(n8n: N8nServer, bluesky: FakeBluesky) -> None:
    text = "Thanks @alice.example.com and @nobody.example.com."

    outcome = run(n8n, "bluesky", entry("bluesky", text))

    assert outcome["ok"] is True
    resolved = bluesky.calls("com.atproto.identity.resolveHandle")
    assert sorted(r.query["handle"] for r in resolved) == [
        "alice.example.com",
        "nobody.example.com",
    ]
    (create,) = bluesky.calls("com.atproto.repo.createRecord")
    record = create.json()["record"]
    encoded = text.encode()
    # The unknown handle stays plain text, as in Bluesky's own app.
    assert [
        (encoded[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(), f["features"])
        for f in record["facets"]
    ] == [
        (
            "@alice.example.com",
            [
                {
                    "$type": "app.bsky.richtext.facet#mention",
                    "did": fake_bluesky.HANDLES["alice.example.com"],
                }
            ],
        )
    ]


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

    before = time.time()
    outcome = run(n8n, "bluesky", entry("bluesky", "Busy day"))
    after = time.time()

    # n8n reads its clock between `before` and `after` and rounds the wait up.
    retry = outcome.pop("retryAfterSeconds")
    assert reset - after - 60 <= retry <= reset - before + 1
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


def test_bluesky_no_answer_has_no_status(n8n: N8nServer, bluesky: FakeBluesky) -> None:
    bluesky.fail_next("com.atproto.repo.createRecord", 0, {})

    outcome = run(n8n, "bluesky", entry("bluesky", "Into the void"))

    # No status: the shared Outcome stage reads that as "no answer", worth another attempt.
    assert "status" not in outcome
    assert outcome["ok"] is False
    assert outcome["code"] == "BlueskyUnreachable"
    assert outcome["message"].startswith("creating the post: Bluesky gave no answer: ")


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
        "permanent": True,
    }


# --- Meta Graph APIs: Facebook Page, Instagram, Threads --------------------------------


def usage_header(account: str, minutes: int) -> dict[str, str]:
    """X-Business-Use-Case-Usage as Graph sends it when a Page or account is throttled."""
    row = {"type": "pages", "call_count": 100, "total_cputime": 12, "total_time": 14,
           "estimated_time_to_regain_access": minutes}  # fmt: skip
    return {"x-business-use-case-usage": json.dumps({account: [row]})}


def assert_token(fake: FakeMeta) -> None:
    """Every call carries the credential's token, as n8n's Facebook Graph API credential
    sends it (the access_token query parameter), and nothing else authenticates."""
    assert fake.requests
    for call in fake.requests:
        assert call.query["access_token"] == fake_meta.TOKEN, call.path
        assert "authorization" not in call.headers


def graph_path(fake: FakeMeta, edge: str) -> str:
    return f"/{fake.version}/{fake.account_id}/{edge}"


def test_facebook_link_post_goes_to_the_page_feed(n8n: N8nServer, fakes: dict[str, Any]) -> None:
    facebook = meta(fakes, "facebook")

    outcome = run(
        n8n, "facebook", entry("facebook", "New release #herald", link="https://example.com/r")
    )

    assert [(r.method, r.path) for r in facebook.requests] == [
        ("GET", f"/{facebook.version}/me"),
        ("POST", graph_path(facebook, "feed")),
    ]
    assert facebook.requests[0].query["fields"] == "id,name"
    assert_token(facebook)
    assert facebook.requests[1].json() == {
        "message": "New release #herald",
        "link": "https://example.com/r",
    }
    (post_id,) = facebook.published
    assert post_id.startswith(f"{facebook.account_id}_")
    assert outcome == {
        "ok": True,
        "externalId": post_id,
        "externalUrl": f"https://www.facebook.com/{post_id}",
    }


def test_facebook_one_photo_is_the_post_with_its_caption(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    facebook = meta(fakes, "facebook")

    outcome = run(
        n8n,
        "facebook",
        entry(
            "facebook",
            "Our stand",
            link="https://example.com/s",
            media=[("https://cdn.example.com/a.png", PNG, "image/png", "The stand")],
        ),
    )

    (photo,) = facebook.calls("POST", "/photos")
    assert photo.path == graph_path(facebook, "photos")
    assert photo.form["source"][1:] == ("image/png", PNG)
    assert photo.form["published"] == "true"
    # No link preview on a photo: the link goes into the caption, not dropped.
    assert photo.form["message"] == "Our stand\nhttps://example.com/s"
    assert photo.form["alt_text_custom"] == "The stand"
    assert facebook.calls("POST", "/feed") == []
    assert_token(facebook)
    (post_id,) = facebook.published
    assert outcome == {
        "ok": True,
        "externalId": post_id,
        "externalUrl": f"https://www.facebook.com/{post_id}",
    }


def test_facebook_several_photos_are_attached_to_one_feed_post(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    facebook = meta(fakes, "facebook")
    media = [
        ("https://cdn.example.com/a.png", PNG, "image/png", ""),
        ("https://cdn.example.com/b.jpg", JPEG, "image/jpeg", ""),
    ]

    outcome = run(n8n, "facebook", entry("facebook", "Two views", media=media))

    photos = facebook.calls("POST", "/photos")
    assert sorted(p.form["source"][2] for p in photos) == sorted([PNG, JPEG])
    assert {p.form["published"] for p in photos} == {"false"}
    (feed,) = facebook.calls("POST", "/feed")
    body = feed.json()
    assert body["message"] == "Two views"
    assert len(body["attached_media"]) == 2
    assert outcome["ok"] is True
    assert facebook.published[outcome["externalId"]]["body"] == body


def test_facebook_duplicate_status_message_is_a_duplicate(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    facebook = meta(fakes, "facebook")
    facebook.fail_next("/feed", 400, graph_error(506, "Duplicate status message"))

    outcome = run(n8n, "facebook", entry("facebook", "Said it already"))

    assert outcome == {
        "ok": False,
        "status": 400,
        "code": "FacebookDuplicate",
        "duplicate": True,
        "message": "creating the post: Facebook answered HTTP 400 (#506): Duplicate status message",
    }


def test_facebook_page_rate_limit_is_429_with_the_time_to_regain_access(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    facebook = meta(fakes, "facebook")
    facebook.fail_next(
        "/feed",
        400,
        graph_error(32, "Page request limit reached"),
        usage_header(facebook.account_id, 17),
    )

    outcome = run(n8n, "facebook", entry("facebook", "Busy page"))

    assert outcome == {
        "ok": False,
        "status": 429,
        "code": "FacebookError32",
        "retryAfterSeconds": 17 * 60,
        "message": "creating the post: Facebook answered HTTP 400 (#32): "
        "Page request limit reached",
    }


def test_facebook_expired_token_is_401_naming_the_credential(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    facebook = meta(fakes, "facebook")
    facebook.fail_next(
        "/me", 400, graph_error(190, "Error validating access token: Session has expired", 463)
    )

    outcome = run(n8n, "facebook", entry("facebook", "Hello"))

    assert [r.path for r in facebook.requests] == [f"/{facebook.version}/me"]
    assert outcome == {
        "ok": False,
        "status": 401,
        "code": "FacebookError190",
        "credential": "Facebook Page (Herald)",
        "message": 'reading the Page of the credential "Facebook Page (Herald)": Facebook '
        "answered HTTP 400 (#190/463): Error validating access token: Session has expired",
    }


def test_instagram_one_image_is_a_container_then_media_publish(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    instagram = meta(fakes, "instagram")
    url = "https://cdn.example.com/photo.jpg"

    outcome = run(
        n8n,
        "instagram",
        entry("instagram", "Sunrise #nofilter", link="https://example.com/sun",
              media=[(url, JPEG, "image/jpeg", "Sun over hills")]),
    )  # fmt: skip

    assert [(r.method, r.path) for r in instagram.requests] == [
        ("GET", f"/{instagram.version}/me"),
        ("GET", graph_path(instagram, "media")),
        ("POST", graph_path(instagram, "media")),
        ("POST", graph_path(instagram, "media_publish")),
    ]
    assert instagram.requests[0].query["fields"] == "user_id,username"
    assert_token(instagram)
    container = instagram.requests[2].json()
    # Instagram fetches the image itself: the original URL, never the bytes.
    assert container == {
        "image_url": url,
        "caption": "Sunrise #nofilter\nhttps://example.com/sun",
        "alt_text": "Sun over hills",
    }
    (media_id,) = instagram.published
    assert instagram.requests[3].json() == {
        "creation_id": instagram.published[media_id]["creation_id"]
    }
    assert instagram.published[media_id]["container"] == container
    assert outcome == {"ok": True, "externalId": media_id}


def test_instagram_several_images_are_a_carousel(n8n: N8nServer, fakes: dict[str, Any]) -> None:
    instagram = meta(fakes, "instagram")
    urls = ["https://cdn.example.com/1.jpg", "https://cdn.example.com/2.jpg"]

    outcome = run(
        n8n,
        "instagram",
        entry("instagram", "Two", media=[(u, JPEG, "image/jpeg", "") for u in urls]),
    )

    containers = instagram.calls("POST", "/media")
    items, carousel = containers[:2], containers[2]
    assert sorted(c.json()["image_url"] for c in items) == urls
    assert all(c.json()["is_carousel_item"] is True for c in items)
    assert all("caption" not in c.json() for c in items)
    body = carousel.json()
    assert body["media_type"] == "CAROUSEL"
    assert body["caption"] == "Two"
    assert len(body["children"].split(",")) == 2
    assert outcome["ok"] is True
    assert instagram.published[outcome["externalId"]]["container"] == body


def test_instagram_without_an_image_fails_before_any_request(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    instagram = meta(fakes, "instagram")

    outcome = run(n8n, "instagram", entry("instagram", "Words only"))

    assert instagram.requests == []
    assert outcome == {
        "ok": False,
        "code": "InstagramNeedsImage",
        "message": "Instagram publishes only posts with at least one image; this post has none",
        "permanent": True,
    }


def test_instagram_post_already_published_is_a_duplicate_with_its_id(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    instagram = meta(fakes, "instagram")
    publish_at = datetime.now(UTC) - timedelta(minutes=3)
    made = (publish_at + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    media_id = instagram.seed_post("Again?", made)

    outcome = run(
        n8n,
        "instagram",
        entry("instagram", "Again?", publish_at=publish_at,
              media=[("https://cdn.example.com/a.jpg", JPEG, "image/jpeg", "")]),
    )  # fmt: skip

    assert instagram.calls("POST", "") == []
    (listing,) = instagram.calls("GET", "/media")
    assert listing.query["fields"] == "id,caption,timestamp,permalink"
    assert outcome == {
        "ok": False,
        "code": "InstagramDuplicate",
        "duplicate": True,
        "externalId": media_id,
        "externalUrl": f"https://example.test/instagram/{media_id}",
        "message": f"Instagram already has this post: {media_id}",
    }


def test_instagram_rate_limit_is_429_with_the_time_to_regain_access(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    instagram = meta(fakes, "instagram")
    instagram.fail_next(
        "/media_publish",
        403,
        graph_error(4, "Application request limit reached", 2207051),
        usage_header(instagram.account_id, 5),
    )

    outcome = run(
        n8n,
        "instagram",
        entry("instagram", "Later", media=[("https://cdn.example.com/a.jpg", JPEG,
                                            "image/jpeg", "")]),
    )  # fmt: skip

    assert outcome == {
        "ok": False,
        "status": 429,
        "code": "InstagramError4",
        "retryAfterSeconds": 300,
        "message": "publishing: Instagram answered HTTP 403 (#4/2207051): "
        "Application request limit reached",
    }


def test_instagram_expired_token_is_401_naming_the_credential(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    instagram = meta(fakes, "instagram")
    instagram.fail_next("/me", 400, graph_error(190, "Error validating access token", 460))

    outcome = run(
        n8n,
        "instagram",
        entry("instagram", "Hi", media=[("https://cdn.example.com/a.jpg", JPEG,
                                         "image/jpeg", "")]),
    )  # fmt: skip

    assert len(instagram.requests) == 1
    assert outcome["status"] == 401
    assert outcome["credential"] == "Instagram (Herald)"
    assert outcome["code"] == "InstagramError190"


def test_threads_text_post_with_its_link_as_attachment(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    threads = meta(fakes, "threads")

    outcome = run(
        n8n, "threads", entry("threads", "Read the notes #herald", link="https://example.com/n")
    )

    assert [(r.method, r.path) for r in threads.requests] == [
        ("GET", f"/{threads.version}/me"),
        ("GET", graph_path(threads, "threads")),
        ("POST", graph_path(threads, "threads")),
        ("POST", graph_path(threads, "threads_publish")),
    ]
    assert threads.requests[0].query["fields"] == "id,username"
    assert threads.requests[1].query["fields"] == "id,text,timestamp,permalink"
    assert_token(threads)
    container = threads.requests[2].json()
    assert container == {
        "media_type": "TEXT",
        "text": "Read the notes #herald",
        "link_attachment": "https://example.com/n",
    }
    (media_id,) = threads.published
    assert threads.published[media_id]["container"] == container
    assert outcome == {"ok": True, "externalId": media_id}


def test_threads_images_are_a_carousel_with_alt_text(n8n: N8nServer, fakes: dict[str, Any]) -> None:
    threads = meta(fakes, "threads")
    media = [
        ("https://cdn.example.com/1.png", PNG, "image/png", "first"),
        ("https://cdn.example.com/2.jpg", JPEG, "image/jpeg", "second"),
    ]

    outcome = run(n8n, "threads", entry("threads", "Pair", media=media))

    containers = [c.json() for c in threads.calls("POST", "/threads")]
    assert sorted((c["image_url"], c["alt_text"]) for c in containers[:2]) == [
        ("https://cdn.example.com/1.png", "first"),
        ("https://cdn.example.com/2.jpg", "second"),
    ]
    assert all(c["media_type"] == "IMAGE" and c["is_carousel_item"] for c in containers[:2])
    assert containers[2]["media_type"] == "CAROUSEL"
    assert containers[2]["text"] == "Pair"
    assert outcome["ok"] is True


def test_threads_post_already_published_is_a_duplicate_with_its_id(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    threads = meta(fakes, "threads")
    publish_at = datetime.now(UTC) - timedelta(minutes=1)
    made = (publish_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    media_id = threads.seed_post("Once", made)

    outcome = run(n8n, "threads", entry("threads", "Once", publish_at=publish_at))

    assert threads.calls("POST", "") == []
    assert outcome["duplicate"] is True
    assert outcome["externalId"] == media_id
    assert outcome["code"] == "ThreadsDuplicate"


def test_threads_rate_limit_is_429_with_the_time_to_regain_access(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    threads = meta(fakes, "threads")
    threads.fail_next(
        "/threads_publish",
        400,
        graph_error(613, "Calls to this api have exceeded the rate limit."),
        usage_header(threads.account_id, 60),
    )

    outcome = run(n8n, "threads", entry("threads", "Slow down"))

    assert outcome["status"] == 429
    assert outcome["retryAfterSeconds"] == 3600
    assert outcome["code"] == "ThreadsError613"


def test_threads_revoked_token_is_401_naming_the_credential(
    n8n: N8nServer, fakes: dict[str, Any]
) -> None:
    threads = meta(fakes, "threads")
    threads.fail_next(
        "/threads_publish",
        401,
        graph_error(190, "Error validating access token: The user has not authorized application."),
    )

    outcome = run(n8n, "threads", entry("threads", "Hi"))

    assert outcome == {
        "ok": False,
        "status": 401,
        "code": "ThreadsError190",
        "credential": "Threads (Herald)",
        "message": "publishing: Threads answered HTTP 401 (#190): Error validating access "
        "token: The user has not authorized application.",
    }
