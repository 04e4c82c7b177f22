"""The n8n adapter (herald.n8n): HTTP → engine outcomes, and what a dispatch sends.

`classify` and `parse_retry_after` are tested on constructed responses; `N8nClient`
against a real aiohttp server on 127.0.0.1 that records what it receives.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from herald import n8n, signing
from herald.config import Target
from herald.engine import Accepted, Failure, Post, Published
from herald.models import (
    AccountRef,
    Content,
    ErrorClass,
    Media,
    ScheduledPostSpec,
    ScheduledPostStatus,
)

NOW = dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=dt.UTC)
KEY = b"signing-key-for-tests"
UID = "0b1f6a52-1c47-4c2e-9d7a-3f0e5c8a9d10"


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    request = httpx.Request("POST", "http://n8n.test/webhook/herald")
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    if isinstance(body, bytes):
        return httpx.Response(status, content=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


# --- classify --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(200, None, id="200-empty"),
        pytest.param(201, {"status": "accepted"}, id="201-accepted"),
        pytest.param(202, {"executionId": "42"}, id="202-json"),
        pytest.param(204, None, id="204"),
        pytest.param(200, b"<html>ok</html>", id="200-not-json"),
        pytest.param(200, ["published"], id="200-json-list"),
        pytest.param(200, {"status": "queued", "externalId": "x"}, id="200-other-status"),
    ],
)
def test_2xx_is_accepted(status: int, body: Any) -> None:
    assert n8n.classify(response(status, body), NOW) == Accepted(published=None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"status": "published", "externalId": "urn:1", "externalUrl": "https://s.example/1"},
            Published("urn:1", "https://s.example/1"),
            id="ids-and-url",
        ),
        pytest.param({"status": "published"}, Published(None, None), id="no-ids"),
        pytest.param(
            {"status": "published", "externalId": 12345},
            Published("12345", None),
            id="numeric-id-as-string",
        ),
        pytest.param(
            {"status": "published", "externalId": "i" * 600, "externalUrl": "u" * 3000},
            Published("i" * 512, "u" * 2048),
            id="long-values-truncated-to-status-limits",
        ),
    ],
)
def test_2xx_with_published_body_is_a_synchronous_publish(
    body: dict[str, Any], expected: Published
) -> None:
    assert n8n.classify(response(200, body), NOW) == Accepted(published=expected)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status: int) -> None:
    outcome = n8n.classify(response(status, b"upstream busy"), NOW)
    assert outcome == Failure(
        ErrorClass.TRANSIENT, f"HTTP{status}", f"n8n answered {status}: upstream busy", None
    )
    assert outcome.retryable is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 422])
def test_permanent_statuses(status: int) -> None:
    outcome = n8n.classify(response(status, {"message": "nope"}), NOW)
    assert outcome == Failure(
        ErrorClass.PERMANENT, f"HTTP{status}", f'n8n answered {status}: {{"message":"nope"}}'
    )
    assert outcome.retryable is False


def test_permanent_failure_ignores_retry_after() -> None:
    outcome = n8n.classify(response(400, b"bad", {"Retry-After": "60"}), NOW)
    assert isinstance(outcome, Failure)
    assert outcome.retry_after_seconds is None


def test_empty_error_body_uses_the_reason_phrase() -> None:
    outcome = n8n.classify(response(503), NOW)
    assert isinstance(outcome, Failure)
    assert outcome.message == "n8n answered 503: Service Unavailable"


def test_long_error_body_is_cut_to_a_snippet() -> None:
    outcome = n8n.classify(response(500, b"e" * 5000), NOW)
    assert isinstance(outcome, Failure)
    assert outcome.message == "n8n answered 500: " + "e" * 300


def test_transient_failure_carries_retry_after() -> None:
    outcome = n8n.classify(response(429, b"slow down", {"Retry-After": "120"}), NOW)
    assert outcome == Failure(
        ErrorClass.TRANSIENT, "HTTP429", "n8n answered 429: slow down", retry_after_seconds=120.0
    )


# --- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param("0", 0.0, id="zero-seconds"),
        pytest.param("  30 ", 30.0, id="seconds-with-spaces"),
        pytest.param(
            email.utils.format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True),
            90.0,
            id="http-date-in-90s",
        ),
        pytest.param("Tue, 15 Jan 2030 09:10:00 GMT", 600.0, id="http-date-literal"),
        pytest.param("Tue, 15 Jan 2030 08:00:00 GMT", 0.0, id="http-date-in-the-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fractional"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert n8n.parse_retry_after(value, NOW) == expected


# --- payload ---------------------------------------------------------------------------


COMPANY = AccountRef(kind="SocialAccount", name="company", handle="@company@mastodon.example")


def make_post(attempt: int = 2, account: AccountRef | None = COMPANY, **spec_changes: Any) -> Post:
    fields: dict[str, Any] = {
        "publish_at": dt.datetime(2030, 3, 2, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "channel": "mastodon",
        "account": "company",
        "content": Content(
            text="Thank you!",
            link="https://example.com/blog",
            media=[
                Media(url="https://example.com/a.jpg", alt_text="stage"),
                Media(url="https://example.com/b.jpg"),
            ],
        ),
    }
    if "account_name" in spec_changes:
        fields["account"] = spec_changes.pop("account_name")
    fields.update(spec_changes)
    return Post(
        namespace="marketing",
        name="conference-photos",
        uid=UID,
        generation=1,
        spec=ScheduledPostSpec(**fields),
        status=ScheduledPostStatus(phase="Publishing", attempt=attempt, account=account),
    )


def test_payload_fields() -> None:
    body = n8n.payload(make_post(), "http://herald-callback:8080/v1/callbacks", "v1.tok")
    assert body == {
        "id": UID,
        "namespace": "marketing",
        "name": "conference-photos",
        "attempt": 2,
        "publishAt": "2030-03-02T16:30:00Z",
        "channel": "mastodon",
        "account": {
            "kind": "SocialAccount",
            "name": "company",
            "handle": "@company@mastodon.example",
            "channel": "mastodon",
        },
        "content": {
            "text": "Thank you!",
            "link": "https://example.com/blog",
            "media": [
                {"url": "https://example.com/a.jpg", "altText": "stage"},
                {"url": "https://example.com/b.jpg"},
            ],
        },
        "callback": {"url": "http://herald-callback:8080/v1/callbacks", "token": "v1.tok"},
    }
    json.dumps(body)  # serialisable as it is


def test_payload_carries_the_resolved_account_never_spec_account() -> None:
    """spec.account is a name to resolve; only the claim's account (status.account) is
    what n8n may post as: a raw handle in spec.account never reaches the body."""
    p = make_post(account=COMPANY, account_name="urn:li:organization:1000001")
    body = n8n.payload(p, "http://cb/v1/callbacks", "t")
    assert body["account"]["handle"] == "@company@mastodon.example"
    assert "urn:li:organization:1000001" not in json.dumps(body)


def test_payload_minimal_post() -> None:
    p = make_post(attempt=1, account=None, channel="linkedin", content=Content(text="hi"))
    body = n8n.payload(p, "http://cb/v1/callbacks", "t")
    assert body["account"] is None
    assert body["channel"] == "linkedin"
    assert body["content"] == {"text": "hi"}
    assert body["attempt"] == 1


# --- N8nClient against a real local server -----------------------------------------------


@dataclass
class Recorded:
    headers: dict[str, str]
    raw: bytes


@dataclass
class Server:
    url: str
    received: list[Recorded] = field(default_factory=list)
    reply: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        state.received.append(Recorded(dict(request.headers), await request.read()))
        if state.reply is not None:
            return await state.reply(request)
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/webhook/herald", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/webhook/herald"
    try:
        yield state
    finally:
        state.release.set()
        await asyncio.wait_for(runner.cleanup(), timeout=10)


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth"
    path.write_text("s3cret-header-value\n")
    return path


def client_for(url: str, auth_file: Path | None = None, timeout: float = 5.0) -> n8n.N8nClient:
    target = Target(
        url=url,
        timeout_seconds=timeout,
        auth_header_name="X-Herald-Auth" if auth_file else None,
        auth_header_value_file=auth_file,
    )
    return n8n.N8nClient({"default": target}, KEY)


async def test_unknown_target_is_permanent_without_a_request(server: Server) -> None:
    client = client_for(server.url)
    try:
        body = n8n.payload(make_post(), "http://cb/v1/callbacks", "t")
        outcome = await client.dispatch("eu-west", body)
    finally:
        await client.aclose()
    assert outcome == Failure(
        ErrorClass.PERMANENT,
        "UnknownTarget",
        "spec.target 'eu-west' is not configured in the operator (configured: default)",
    )
    assert server.received == []
    assert client.knows("default") is True
    assert client.knows("eu-west") is False


async def test_dispatch_sends_signed_authenticated_idempotent_request(
    server: Server, auth_file: Path
) -> None:
    client = client_for(server.url, auth_file)
    body = n8n.payload(make_post(attempt=3), "http://cb/v1/callbacks", "v1.token")
    before = int(time.time())
    try:
        outcome = await client.dispatch("default", body)
    finally:
        await client.aclose()
    after = int(time.time())
    assert outcome == Accepted(published=None)
    (got,) = server.received
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert json.loads(got.raw) == body
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == UID
    assert headers["x-herald-auth"] == "s3cret-header-value"
    assert headers["user-agent"] == "herald-operator"
    assert headers["webhook-id"] == f"msg_{UID}_3"
    timestamp = int(headers["webhook-timestamp"])
    assert before <= timestamp <= after
    # Standard Webhooks over the exact bytes on the wire, computed independently.
    signed = f"{headers['webhook-id']}.{timestamp}.".encode() + got.raw
    expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected
    assert signing.verify_webhook_signature(
        KEY, headers["webhook-id"], timestamp, got.raw, headers["webhook-signature"]
    )


async def test_dispatch_without_auth_sends_no_auth_header(server: Server) -> None:
    client = client_for(server.url)
    try:
        await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    (got,) = server.received
    assert "x-herald-auth" not in {k.lower() for k in got.headers}


async def test_dispatch_synchronous_publish(server: Server) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"status": "published", "externalId": "123", "externalUrl": "https://s/1"}
        )

    server.reply = reply
    client = client_for(server.url)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert outcome == Accepted(published=Published("123", "https://s/1"))


async def test_dispatch_transient_http_error_with_retry_after(server: Server) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance", headers={"Retry-After": "45"})

    server.reply = reply
    client = client_for(server.url)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert outcome == Failure(
        ErrorClass.TRANSIENT, "HTTP503", "n8n answered 503: maintenance", 45.0
    )


async def test_dispatch_permanent_http_error(server: Server) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=422, text="text too long")

    server.reply = reply
    client = client_for(server.url)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert outcome == Failure(ErrorClass.PERMANENT, "HTTP422", "n8n answered 422: text too long")


async def test_dispatch_does_not_follow_redirects(server: Server) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": "http://127.0.0.1:1/elsewhere"})

    server.reply = reply
    client = client_for(server.url)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert isinstance(outcome, Failure)
    assert (outcome.error_class, outcome.code) == (ErrorClass.PERMANENT, "HTTP307")
    assert len(server.received) == 1


async def test_dispatch_timeout_is_transient(server: Server) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(server.release.wait(), timeout=5)
        return web.json_response({"status": "accepted"})

    server.reply = reply
    client = client_for(server.url, timeout=0.3)
    started = time.monotonic()
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started
    assert isinstance(outcome, Failure)
    assert (outcome.error_class, outcome.code) == (ErrorClass.TRANSIENT, "Timeout")
    # httpx's read timeout and the whole-request deadline fire together; either may win.
    assert outcome.message in {
        "no answer from n8n within 0.3s (ReadTimeout)",
        "no answer from n8n within 0.3s (TimeoutError)",
    }
    assert 0.25 <= elapsed < 3.0


async def test_dispatch_deadline_covers_the_whole_request(server: Server) -> None:
    """A server that answers at once and then trickles its body never leaves a single
    read idle for the timeout, yet the request as a whole must end by the deadline: the
    orphan-claim timeout counts on it."""

    async def reply(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(40):  # 40 x 0.1 s: far past the 0.5 s deadline
            await response.write(b" ")
            if await _released(server, 0.1):
                break
        await response.write_eof()
        return response

    server.reply = reply
    client = client_for(server.url, timeout=0.5)
    started = time.monotonic()
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started
    assert outcome == Failure(
        ErrorClass.TRANSIENT, "Timeout", "no answer from n8n within 0.5s (TimeoutError)"
    )
    assert 0.45 <= elapsed < 3.0


async def _released(server: Server, seconds: float) -> bool:
    try:
        await asyncio.wait_for(server.release.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(None, UID, id="defaults-to-the-post-uid"),
        pytest.param(f"{UID}.2", f"{UID}.2", id="manual-retry-epoch-key"),
    ],
)
async def test_dispatch_idempotency_key_header(
    server: Server, key: str | None, expected: str
) -> None:
    client = client_for(server.url)
    body = n8n.payload(make_post(attempt=5), "http://cb/v1/callbacks", "t")
    try:
        if key is None:
            outcome = await client.dispatch("default", body)
        else:
            outcome = await client.dispatch("default", body, idempotency_key=key)
    finally:
        await client.aclose()
    assert outcome == Accepted(published=None)
    (got,) = server.received
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["idempotency-key"] == expected
    # The webhook-id still names the attempt, whatever the key.
    assert headers["webhook-id"] == f"msg_{UID}_5"


async def test_dispatch_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on `port` any more.
    client = client_for(f"http://127.0.0.1:{port}/webhook/herald", timeout=2.0)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert isinstance(outcome, Failure)
    assert (outcome.error_class, outcome.code) == (ErrorClass.TRANSIENT, "ConnectError")
    assert outcome.retryable is True


def test_missing_auth_file_fails_at_construction(tmp_path: Path) -> None:
    from herald.config import ConfigError

    with pytest.raises(ConfigError, match="auth_header_value_file"):
        client_for("http://127.0.0.1:1/x", tmp_path / "missing")


# --- issue 16: what may have reached n8n, and what never leaves ---------------------------


@dataclass
class Hangup:
    """A raw server that reads each request whole, then closes without answering: n8n
    crashing (or a proxy dropping the connection) after it read the request."""

    url: str = ""
    requests: int = 0


@pytest.fixture
async def hangup() -> AsyncIterator[Hangup]:
    state = Hangup()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            state.requests += 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}/webhook/herald"
    try:
        yield state
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), timeout=5)


async def test_no_resend_after_n8n_read_the_request(hangup: Hangup) -> None:
    """Window 4: a connection that breaks after the request was sent is a spent attempt
    (a transient Failure), never sent again at once: n8n may have read and run it."""
    client = client_for(hangup.url, timeout=2.0)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert hangup.requests == 1, f"n8n read the same attempt {hangup.requests} times"
    assert isinstance(outcome, Failure)
    assert outcome.error_class is ErrorClass.TRANSIENT
    assert outcome.code == "NetworkError"
    assert "may have reached n8n" in outcome.message


def _raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


class _Counting(httpx.AsyncBaseTransport):
    """Fails the first `fail` requests with `exc` before anything is sent, then answers."""

    def __init__(self, exc: Exception, fail: int = 1) -> None:
        self.exc, self.fail, self.calls = exc, fail, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.exc
        return httpx.Response(202, json={"status": "accepted"}, request=request)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(httpx.ConnectError("connection refused"), id="ConnectError"),
        pytest.param(httpx.ConnectTimeout("connect timed out"), id="ConnectTimeout"),
        pytest.param(httpx.PoolTimeout("no free connection"), id="PoolTimeout"),
    ],
)
async def test_a_request_that_never_left_is_sent_again_at_once(exc: Exception) -> None:
    transport = _Counting(exc)
    target = Target(url="http://n8n.test/webhook/herald", timeout_seconds=2)
    client = n8n.N8nClient({"default": target}, KEY, client=httpx.AsyncClient(transport=transport))
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert outcome == Accepted(published=None)
    assert transport.calls == 2


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(httpx.ReadError("connection reset"), id="ReadError"),
        pytest.param(httpx.RemoteProtocolError("server disconnected"), id="RemoteProtocolError"),
        pytest.param(httpx.WriteError("broken pipe"), id="WriteError"),
    ],
)
async def test_a_request_that_may_have_left_is_not_sent_again(exc: Exception) -> None:
    transport = _Counting(exc)
    target = Target(url="http://n8n.test/webhook/herald", timeout_seconds=2)
    client = n8n.N8nClient({"default": target}, KEY, client=httpx.AsyncClient(transport=transport))
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert transport.calls == 1
    assert isinstance(outcome, Failure)
    assert (outcome.error_class, outcome.code) == (ErrorClass.TRANSIENT, "NetworkError")


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(
            UnicodeEncodeError("ascii", "Bearer \u00e9", 7, 8, "ordinal not in range(128)"),
            id="UnicodeEncodeError",
        ),
        pytest.param(httpx.LocalProtocolError("Illegal header value"), id="LocalProtocolError"),
        pytest.param(httpx.UnsupportedProtocol("unsupported protocol"), id="UnsupportedProtocol"),
    ],
)
async def test_a_request_that_cannot_be_made_is_a_permanent_failure(exc: Exception) -> None:
    """Window 3: the client never raises for what the request does. A request httpx
    cannot even encode will never succeed: a permanent Failure that says why."""
    target = Target(url="http://n8n.test/webhook/herald", timeout_seconds=2)
    transport = httpx.MockTransport(_raising(exc))
    client = n8n.N8nClient({"default": target}, KEY, client=httpx.AsyncClient(transport=transport))
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert isinstance(outcome, Failure)
    assert (outcome.error_class, outcome.code) == (ErrorClass.PERMANENT, "InvalidRequest")
    assert type(exc).__name__ in outcome.message
    assert "target default" in outcome.message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("Bearer s\u00e9cret", "not ASCII", id="non-ascii"),
        pytest.param("Bearer a\r\nX-Evil: 1", "control character", id="crlf"),
        pytest.param("Bearer a\x00b", "control character", id="nul"),
    ],
)
def test_a_bad_auth_header_value_is_refused_at_startup(value: str, problem: str) -> None:
    """Window 3, at the source: a header value httpx cannot send is refused when the
    configuration is read, with the field named, instead of failing every dispatch."""
    from herald.config import ConfigError, load

    with pytest.raises(ConfigError, match=rf"targets\.default\.auth_header_value: .*{problem}"):
        load(
            targets={
                "default": {
                    "url": "http://n8n.test/webhook/herald",
                    "auth_header_name": "X-Herald-Auth",
                    "auth_header_value": value,
                }
            },
            signing_key="whsec_" + base64.b64encode(b"k" * 32).decode(),
            callback_key="callback-key",
        )


def test_a_bad_auth_header_value_file_is_refused_at_construction(tmp_path: Path) -> None:
    from herald.config import ConfigError

    path = tmp_path / "auth"
    path.write_bytes("s\u00e9cret\n".encode())
    with pytest.raises(ConfigError, match=r"targets\.default\.auth_header_value_file .*not ASCII"):
        client_for("http://127.0.0.1:1/x", path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"targets\.default\.auth_header_value_file .*not ASCII"):
        client_for("http://127.0.0.1:1/x", path)


def test_a_bad_auth_header_name_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="auth_header_name"):
        Target(
            url="http://n8n.test/webhook/herald",
            auth_header_name="X Herald: Auth",
            auth_header_value="v",
        )


async def test_the_webhook_timestamp_comes_from_the_clock(server: Server) -> None:
    from herald.clock import FakeClock

    clock = FakeClock(dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC))
    target = Target(url=server.url, timeout_seconds=5)
    client = n8n.N8nClient({"default": target}, KEY, clock=clock)
    try:
        await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    (got,) = server.received
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["webhook-timestamp"] == str(int(clock.wall().timestamp()))


async def test_retry_after_as_a_date_is_read_on_the_clock(server: Server) -> None:
    from herald.clock import FakeClock

    clock = FakeClock(dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC))
    later = email.utils.format_datetime(clock.wall() + dt.timedelta(seconds=90), usegmt=True)

    async def reply(request: web.Request) -> web.StreamResponse:
        return web.json_response({}, status=503, headers={"Retry-After": later})

    server.reply = reply
    client = n8n.N8nClient({"default": Target(url=server.url)}, KEY, clock=clock)
    try:
        outcome = await client.dispatch("default", n8n.payload(make_post(), "http://cb", "t"))
    finally:
        await client.aclose()
    assert isinstance(outcome, Failure)
    assert outcome.retry_after_seconds == 90.0
