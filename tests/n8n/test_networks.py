"""The shipped publish.json in a real n8n, with every network faked on 127.0.0.1.

No Kubernetes: each test signs Herald's webhook request itself (as Herald does) and
reads the callback n8n sends to a sink. One n8n serves the module. Covers issue #15:
routing on channel, each network's request shapes and answers (duplicate, 429 with a
reset, 401), media safety, and de-duplication under concurrency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from typing import Any

import pytest

from herald.models import Channel
from tests.n8n.conftest import HOOK, SIGNING_KEY, Fakes
from tests.n8n.harness import account_of
from tests.n8n.test_workflows import build_module
from tests.support import fake_bluesky, fake_mastodon, fake_meta, fake_x
from tests.support.callback_relay import CallbackRelay
from tests.support.fake_api import Answer
from tests.support.n8n_server import LINKEDIN_AUTHOR, N8nServer

pytestmark = [pytest.mark.n8n]

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 4
BRANCHES = [channel for channel, _ in build_module().branches()]


@pytest.fixture
def f(networks: Fakes, n8n: N8nServer) -> Fakes:
    networks.reset()
    return networks


def sign(msg_id: str, timestamp: int, body: bytes) -> str:
    secret = base64.b64decode(SIGNING_KEY.removeprefix("whsec_"))
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def make_post(name: str, channel: str, sink: CallbackRelay, **content: Any) -> dict[str, Any]:
    content.setdefault("text", f"Post {name}")
    return {
        "id": str(uuid.uuid4()),
        "namespace": "default",
        "name": name,
        "attempt": 1,
        "publishAt": "2030-01-01T00:00:00Z",
        "channel": channel,
        "account": account_of(channel),
        "content": content,
        "callback": {"url": f"{sink.url}/v1/callbacks", "token": "v1.t"},
    }


def dispatch(n8n: N8nServer, post: dict[str, Any], key: str | None = None) -> int:
    body = json.dumps(post, separators=(",", ":"), sort_keys=True).encode()
    now, msg = int(time.time()), f"msg_{uuid.uuid4().hex}"
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(msg, now, body),
        "Idempotency-Key": key or post["id"],
    }
    request = urllib.request.Request(n8n.webhook_url(HOOK), data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def callbacks(sink: CallbackRelay, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [r.body for r in sink.records()]
        if len(got) >= count:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{len(sink.records())} of {count} callbacks in {timeout}s")


def one(n8n: N8nServer, f: Fakes, post: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    assert dispatch(n8n, post, key) == 202
    (body,) = callbacks(f.sink, 1)
    return body


def test_every_post_reaches_its_own_network_and_only_it(n8n: N8nServer, f: Fakes) -> None:
    """One post per channel of the CRD, in one run of publish.json: each network's fake
    sees its own post, in the request shapes it checks, and nothing else."""
    assert [c.value for c in Channel] == BRANCHES  # every channel has its branch
    png = f.linkedin.serve_media("li.png", PNG)
    x_png = f.x.serve_media("x.png", PNG[:300])
    m_png = f.mastodon.serve_media("m.png", PNG[:400])
    b_png = f.x.serve_media("b.png", PNG[:500])
    i_jpg = f.mastodon.serve_media("i.jpg", JPEG, "image/jpeg")
    posts = {
        "linkedin": make_post(
            "to-linkedin",
            "linkedin",
            f.sink,
            text="Launch #herald",
            media=[{"url": png, "altText": "Rocket"}],
        ),
        "x": make_post(
            "to-x",
            "x",
            f.sink,
            text="On X",
            link="https://example.com/a",
            media=[{"url": x_png, "altText": "An X picture"}, {"url": x_png}],
        ),
        "mastodon": make_post(
            "to-mastodon",
            "mastodon",
            f.sink,
            text="On Mastodon",
            media=[{"url": m_png, "altText": "A toot picture"}],
        ),
        "bluesky": make_post(
            "to-bluesky",
            "bluesky",
            f.sink,
            text="On Bluesky #herald",
            media=[{"url": b_png, "altText": "A sky"}],
        ),
        "facebook": make_post(
            "to-facebook", "facebook", f.sink, text="On the Page", link="https://example.com/f"
        ),
        "instagram": make_post(
            "to-instagram",
            "instagram",
            f.sink,
            text="On Instagram",
            media=[{"url": i_jpg, "altText": "A square"}],
        ),
        "threads": make_post(
            "to-threads", "threads", f.sink, text="On Threads", link="https://example.com/t"
        ),
    }
    assert sorted(posts) == sorted(BRANCHES)
    for channel, post in posts.items():
        assert dispatch(n8n, post) == 202, channel
    by_name = {b["name"]: b for b in callbacks(f.sink, len(posts))}
    for channel in posts:
        assert by_name[f"to-{channel}"]["status"] == "published", by_name[f"to-{channel}"]

    (li,) = f.linkedin.creates()
    assert by_name["to-linkedin"]["externalId"] == li.urn
    assert li.body["author"] == LINKEDIN_AUTHOR
    assert li.body["commentary"] == "Launch {hashtag|\\#|herald}"
    assert li.body["content"]["media"]["altText"] == "Rocket"
    assert li.headers["authorization"] == "Bearer test-access-token"

    (tweet,) = f.x.creates()
    assert by_name["to-x"]["externalId"] == tweet["id"]
    assert by_name["to-x"]["externalUrl"] == f"https://x.com/i/web/status/{tweet['id']}"
    media_ids = tweet["body"]["media"]["media_ids"]
    assert tweet["body"]["text"] == "On X https://example.com/a"
    assert "reply_settings" not in tweet["body"]  # not restricted unless configured
    for media_id in media_ids:
        upload = f.x.uploads[media_id]
        assert upload["media"] == PNG[:300] and upload["media_category"] == b"tweet_image"
    # Alt text where the post has one, none made up for the other.
    assert f.x.alt_texts == {media_ids[0]: "An X picture"}

    (toot,) = f.mastodon.creates()
    assert by_name["to-mastodon"]["externalId"] == toot["id"]
    assert toot["headers"]["idempotency-key"] == posts["mastodon"]["id"]
    assert toot["headers"]["authorization"] == "Bearer mastodon-token"
    (mid,) = toot["body"]["media_ids"]
    assert f.mastodon.uploads[mid] == {"file": PNG[:400], "description": b"A toot picture"}

    (record,) = f.bluesky.records.values()
    uri = record["uri"]
    assert by_name["to-bluesky"]["externalId"] == uri
    rkey = uri.rsplit("/", 1)[1]
    assert by_name["to-bluesky"]["externalUrl"] == (
        f"https://bsky.app/profile/{fake_bluesky.DID}/post/{rkey}"
    )
    (session,) = f.bluesky.calls("com.atproto.server.createSession")
    assert session.json() == {"identifier": fake_bluesky.HANDLE, "password": fake_bluesky.PASSWORD}
    (blob,) = f.bluesky.calls("com.atproto.repo.uploadBlob")
    assert (blob.raw, blob.headers["content-type"]) == (PNG[:500], "image/png")
    post_record = record["value"]
    assert post_record["text"] == "On Bluesky #herald"
    datetime.fromisoformat(post_record["createdAt"])
    (tag,) = post_record["facets"]
    assert tag["features"] == [{"$type": "app.bsky.richtext.facet#tag", "tag": "herald"}]
    (image,) = post_record["embed"]["images"]
    assert image["alt"] == "A sky"
    assert f.bluesky.blobs[image["image"]["ref"]["$link"]] == ("image/png", PNG[:500])

    facebook = f.facebook
    assert [(r.method, r.path) for r in facebook.requests] == [
        ("GET", f"/{facebook.version}/me"),
        ("POST", f"/{facebook.version}/{facebook.account_id}/feed"),
    ]
    assert facebook.requests[1].json() == {
        "message": "On the Page",
        "link": "https://example.com/f",
    }
    (fb_id,) = facebook.published
    assert by_name["to-facebook"]["externalId"] == fb_id
    assert by_name["to-facebook"]["externalUrl"] == f"https://www.facebook.com/{fb_id}"

    instagram = f.instagram
    (ig_id,) = instagram.published
    assert by_name["to-instagram"]["externalId"] == ig_id
    # Instagram fetches the image itself: the post's URL, never the bytes.
    assert instagram.published[ig_id]["container"] == {
        "image_url": i_jpg,
        "caption": "On Instagram",
        "alt_text": "A square",
    }

    threads = f.threads
    (th_id,) = threads.published
    assert by_name["to-threads"]["externalId"] == th_id
    assert threads.published[th_id]["container"] == {
        "media_type": "TEXT",
        "text": "On Threads",
        "link_attachment": "https://example.com/t",
    }

    # Each network saw its own post only, with its own credential.
    assert len(f.linkedin.post_requests()) == 1
    assert len(f.x.of("POST", "/2/tweets")) == 1
    assert len(f.mastodon.of("POST", "/api/v1/statuses")) == 1
    assert len(f.bluesky.calls("com.atproto.repo.createRecord")) == 1
    for meta in (facebook, instagram, threads):
        assert all(r.query["access_token"] == fake_meta.TOKEN for r in meta.requests)
    assert len(facebook.calls("POST", "")) == 1
    assert len(instagram.calls("POST", "/media")) == 1
    assert len(instagram.calls("POST", "/media_publish")) == 1
    assert len(threads.calls("POST", "/threads")) == 1
    assert len(threads.calls("POST", "/threads_publish")) == 1


def test_a_channel_without_a_branch_is_posted_nowhere(n8n: N8nServer, f: Fakes) -> None:
    """Herald's CRD knows no such channel; a caller that signs one gets a permanent
    ChannelNotConfigured, and no network is called."""
    body = one(n8n, f, make_post("to-myspace", "myspace", f.sink))
    assert body["status"] == "failed"
    assert body["error"]["code"] == "ChannelNotConfigured"
    assert body["error"]["retryable"] is False
    assert '"myspace"' in body["error"]["message"]
    assert f.linkedin.requests == [] and f.x.requests == [] and f.mastodon.requests == []
    assert f.bluesky.requests == []
    assert f.facebook.requests == f.instagram.requests == f.threads.requests == []


# --- who posts: only the account in the body (issue #22) ------------------------------


def nothing_reached_a_network(f: Fakes) -> bool:
    return (
        f.linkedin.requests == f.x.requests == f.mastodon.requests == f.bluesky.requests == []
        and f.facebook.requests == f.instagram.requests == f.threads.requests == []
    )


def test_linkedin_posts_as_the_handle_of_the_account_in_the_body(n8n: N8nServer, f: Fakes) -> None:
    post = make_post("as-person", "linkedin", f.sink)
    post["account"] = {**account_of("linkedin"), "handle": "urn:li:person:777"}
    body = one(n8n, f, post)
    assert body["status"] == "published", body
    (li,) = f.linkedin.creates()
    assert li.body["author"] == "urn:li:person:777"


@pytest.mark.parametrize(
    ("account", "code"),
    [
        pytest.param(None, "NoAccount", id="no-account"),
        pytest.param("urn:li:organization:1000001", "NoAccount", id="raw-urn-string"),
        pytest.param(
            {"kind": "SocialAccount", "name": "a", "channel": "linkedin"},
            "NoAccount",
            id="no-handle",
        ),
        pytest.param({**account_of("x"), "channel": "x"}, "AccountChannelMismatch", id="x-account"),
        pytest.param(
            {**account_of("linkedin"), "handle": "@someone"}, "LinkedInAccount", id="not-a-urn"
        ),
    ],
)
def test_a_body_without_a_usable_handle_fails_and_posts_nowhere(
    n8n: N8nServer, f: Fakes, account: Any, code: str
) -> None:
    post = make_post("no-handle", "linkedin", f.sink)
    post["account"] = account
    body = one(n8n, f, post)
    assert body["status"] == "failed", body
    assert body["error"]["code"] == code
    assert body["error"]["retryable"] is False
    assert nothing_reached_a_network(f)


# --- per network: duplicate, 429 with a reset, 401 -----------------------------------


def test_linkedin_duplicate_is_published_with_the_urn_it_names(n8n: N8nServer, f: Fakes) -> None:
    f.linkedin.script(422)
    body = one(n8n, f, make_post("li-dup", "linkedin", f.sink))
    assert body["status"] == "published"
    assert body["externalId"] == "urn:li:share:7000000000000000001"
    assert f.linkedin.creates() == []


def test_x_duplicate_fails_for_good_as_duplicate(n8n: N8nServer, f: Fakes) -> None:
    f.x.script(fake_x.duplicate())
    body = one(n8n, f, make_post("x-dup", "x", f.sink))
    assert body["status"] == "failed"
    assert body["error"]["code"] == "Duplicate"
    assert body["error"]["retryable"] is False
    assert "duplicate content" in body["error"]["message"]


def test_mastodon_repeat_of_a_key_is_the_first_status(n8n: N8nServer, f: Fakes) -> None:
    """Mastodon's own Idempotency-Key: even with n8n's record gone (a new n8n), the
    instance answers the first status."""
    post = make_post("m-dup", "mastodon", f.sink)
    first = one(n8n, f, post, key="mastodon-key-1")
    f.sink.seen.clear()
    for record in (n8n.workdir / "herald-dedup").glob("*.json"):
        record.unlink()  # as if n8n's records were lost
    second = one(n8n, f, {**post, "attempt": 2}, key="mastodon-key-1")
    assert (second["attempt"], second["externalId"]) == (2, first["externalId"])
    assert len(f.mastodon.creates()) == 1
    assert len(f.mastodon.of("POST", "/api/v1/statuses")) == 2


def test_mastodon_text_over_the_instance_limit_fails_before_any_request(
    n8n: N8nServer, f: Fakes
) -> None:
    """MASTODON_MAX_CHARACTERS (unset here: Mastodon's default, 500), counted as Mastodon
    counts: the link the branch appends counts 23 characters, whatever its length."""
    link = "https://example.com/" + "l" * 80
    fits = make_post("m-fits", "mastodon", f.sink, text="a" * 475, link=link)  # 475+2+23
    long = make_post("m-long", "mastodon", f.sink, text="é" * 501)
    for post in (fits, long):
        assert dispatch(n8n, post) == 202
    by_name = {b["name"]: b for b in callbacks(f.sink, 2)}
    assert by_name["m-fits"]["status"] == "published", by_name["m-fits"]
    (toot,) = f.mastodon.creates()
    assert toot["body"]["status"] == "a" * 475 + "\n\n" + link
    error = by_name["m-long"]["error"]
    assert (error["code"], error["retryable"]) == ("MastodonTextTooLong", False)
    assert "up to 500 characters" in error["message"]
    assert "MASTODON_MAX_CHARACTERS" in error["message"]
    assert "this post has 501" in error["message"]
    assert len(f.mastodon.of("POST", "/api/v1/statuses")) == 1  # the one that fits


@pytest.mark.parametrize("channel", ["linkedin", "x", "mastodon"])
def test_429_with_a_reset_time_carries_retry_after_seconds(
    n8n: N8nServer, f: Fakes, channel: str
) -> None:
    if channel == "linkedin":
        f.linkedin.script((429, {"status": 429, "message": "Daily limit"}, {"Retry-After": "3600"}))
    elif channel == "x":
        f.x.script(fake_x.rate_limited(900))
    else:
        f.mastodon.script(fake_mastodon.rate_limited(300))
    body = one(n8n, f, make_post(f"{channel}-429", channel, f.sink))
    wanted = {"linkedin": 3600, "x": 900, "mastodon": 300}[channel]
    assert body["status"] == "failed"
    assert body["error"]["retryable"] is True
    assert wanted - 5 <= body["error"]["retryAfterSeconds"] <= wanted + 1, body


@pytest.mark.parametrize("channel", ["linkedin", "x", "mastodon"])
def test_401_asks_to_reconnect_the_credential(n8n: N8nServer, f: Fakes, channel: str) -> None:
    # OAuth2 credentials: n8n refreshes the token after the first 401 and tries once more.
    if channel == "linkedin":
        f.linkedin.script(401, 401)
    elif channel == "x":
        f.x.script(fake_x.unauthorized(), fake_x.unauthorized())
    else:
        f.mastodon.script(fake_mastodon.unauthorized())
    body = one(n8n, f, make_post(f"{channel}-401", channel, f.sink))
    credential = {
        "linkedin": "LinkedIn (Herald)",
        "x": "X (Herald)",
        "mastodon": "Mastodon (Herald)",
    }
    assert body["status"] == "failed"
    assert body["error"]["code"] == "ReconnectAccount"
    assert body["error"]["retryable"] is False
    assert f'"{credential[channel]}"' in body["error"]["message"]


# --- media safety --------------------------------------------------------------------


def test_hostile_media_urls_are_never_fetched(n8n: N8nServer, f: Fakes) -> None:
    inside = f.intranet.serve_media("secret.png", PNG)  # http://127.0.0.1:<not allowed>/…
    https_inside = inside.replace("http://", "https://")
    hostile = {
        "loopback": inside,
        "loopback over https": https_inside,
        "localhost name": https_inside.replace("127.0.0.1", "localhost"),
        "metadata": "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "redirect to loopback": f.x.redirect("hop.png", https_inside),
        "redirect to private": f.x.redirect("hop2.png", "https://10.0.0.7/secret.png"),
    }
    for case, url in hostile.items():
        post = make_post(case.replace(" ", "-"), "x", f.sink, media=[{"url": url}])
        assert dispatch(n8n, post) == 202, case
    by_name = {b["name"]: b for b in callbacks(f.sink, len(hostile))}
    for case, url in hostile.items():
        error = by_name[case.replace(" ", "-")]["error"]
        assert error["code"] == "MediaRefused", (case, error)
        assert error["retryable"] is False, case
        assert url in error["message"], (case, error)
    assert f.intranet.requests == []
    assert f.x.creates() == [] and f.x.of("POST", "/2/media/upload") == []


def test_media_of_the_wrong_type_or_size_is_refused(n8n: N8nServer, f: Fakes) -> None:
    page = f.x.serve_media("page.png", b"<html>login</html>", "text/html")
    big = f.x.serve_media("big.png", b"\x89PNG" + bytes(5 * 1024 * 1024 + 1))  # X: 5 MiB
    for name, url in (("html", page), ("big", big)):
        assert dispatch(n8n, make_post(name, "x", f.sink, media=[{"url": url}])) == 202
    by_name = {b["name"]: b["error"] for b in callbacks(f.sink, 2)}
    assert by_name["html"]["code"] == "MediaRefused" and "text/html" in by_name["html"]["message"]
    assert (
        by_name["big"]["code"] == "MediaRefused"
        and str(5 * 1024 * 1024) in by_name["big"]["message"]
    )
    assert f.x.creates() == []


def test_linkedin_link_with_several_images_is_refused_not_trimmed(n8n: N8nServer, f: Fakes) -> None:
    media = [{"url": f.linkedin.serve_media(n, PNG)} for n in ("a.png", "b.png")]
    post = make_post("li-link-images", "linkedin", f.sink, link="https://example.com", media=media)
    body = one(n8n, f, post)
    assert body["error"]["code"] == "MediaNotSupported"
    assert "link and 2 images" in body["error"]["message"]
    assert f.linkedin.creates() == [] and f.linkedin.uploads == {}


def test_linkedin_video_goes_through_the_videos_api_in_parts(n8n: N8nServer, f: Fakes) -> None:
    part = 4 * 1024 * 1024
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * (part // 256 + 100)
    url = f.linkedin.serve_media("clip.mp4", video, "video/mp4")
    post = make_post("li-video", "linkedin", f.sink, media=[{"url": url, "type": "video"}])
    body = one(n8n, f, post)
    (created,) = f.linkedin.creates()
    assert (body["status"], body["externalId"]) == ("published", created.urn)
    assert f.linkedin.uploads == {}  # nothing went to the Images API
    ((video_id, parts),) = f.linkedin.video_parts.items()
    assert b"".join(parts[i] for i in sorted(parts)) == video
    assert len(parts) == 2
    (finalized,) = f.linkedin.finalized
    assert finalized["video"] == f"urn:li:video:{video_id}"
    assert finalized["uploadedPartIds"] == [f"/ambry-video/etag-{video_id}-{i}" for i in (0, 1)]
    assert created.body["content"]["media"]["id"] == f"urn:li:video:{video_id}"


# --- de-duplication under concurrency ------------------------------------------------


def fire(n8n: N8nServer, jobs: list[tuple[dict[str, Any], str]]) -> list[int]:
    statuses: list[int] = [0] * len(jobs)

    def run(i: int) -> None:
        statuses[i] = dispatch(n8n, *jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


BURST = 50


def test_a_burst_then_every_key_again_posts_each_once(n8n: N8nServer, f: Fakes) -> None:
    posts = [make_post(f"burst-{i:02d}", "x", f.sink) for i in range(BURST)]
    assert fire(n8n, [(p, f"burst-key-{i}") for i, p in enumerate(posts)]) == [202] * BURST
    first = {b["name"]: b for b in callbacks(f.sink, BURST, timeout=240)}
    assert len(f.x.creates()) == BURST
    again = [{**p, "attempt": 2} for p in posts]
    assert fire(n8n, [(p, f"burst-key-{i}") for i, p in enumerate(again)]) == [202] * BURST
    second = [b for b in callbacks(f.sink, 2 * BURST, timeout=240) if b["attempt"] == 2]
    assert len(second) == BURST
    for body in second:
        assert body["status"] == "published"
        assert body["externalId"] == first[body["name"]]["externalId"]
    assert len(f.x.creates()) == BURST
    assert len(f.x.of("POST", "/2/tweets")) == BURST


def test_a_second_delivery_during_a_slow_publish_posts_once(n8n: N8nServer, f: Fakes) -> None:
    f.x.delay = 5.0
    post = make_post("slow", "x", f.sink)
    assert dispatch(n8n, post, "slow-key") == 202
    time.sleep(1)
    assert dispatch(n8n, {**post, "attempt": 2}, "slow-key") == 202
    bodies = callbacks(f.sink, 2, timeout=60)
    (tweet,) = f.x.creates()
    assert sorted((b["attempt"], b["status"], b["externalId"]) for b in bodies) == [
        (1, "published", tweet["id"]),
        (2, "published", tweet["id"]),
    ]
    assert len(f.x.of("POST", "/2/tweets")) == 1


def test_a_failed_attempt_releases_its_key(n8n: N8nServer, f: Fakes) -> None:
    f.x.script(Answer(503, {"title": "Service Unavailable", "status": 503}))
    # With an image without alt text: no metadata request is made for it.
    post = make_post("retry-me", "x", f.sink, media=[{"url": f.x.serve_media("r.png", PNG)}])
    failed = one(n8n, f, post, "retry-key")
    assert failed["error"] == {**failed["error"], "code": "X503", "retryable": True}
    f.sink.seen.clear()
    published = one(n8n, f, {**post, "attempt": 2}, "retry-key")
    (tweet,) = f.x.creates()
    assert (published["status"], published["externalId"]) == ("published", tweet["id"])
    assert len(tweet["body"]["media"]["media_ids"]) == 1
    assert f.x.alt_texts == {} and f.x.of("POST", "/2/media/metadata") == []
