"""The n8n adapter: sends one attempt of a post to its target's webhook.

Translates HTTP into the engine's outcomes and never raises for anything the network or
n8n does: 2xx → Accepted (or Published when n8n answers synchronously); timeouts,
connection errors, 408, 425, 429 and 5xx → transient Failure (with Retry-After, if any);
other 4xx → permanent Failure. Which URL is called is decided by the operator's
configuration alone: a post names a target, never a URL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from herald import engine, signing
from herald.config import Target
from herald.models import ErrorClass, format_time
from herald.statuses import is_retryable

_BODY_SNIPPET = 300


def payload(post: engine.Post, callback_url: str, callback_token: str) -> dict[str, Any]:
    """The JSON body n8n's workflow receives (see n8n/README.md)."""
    spec = post.spec
    return {
        "id": post.uid,
        "namespace": post.namespace,
        "name": post.name,
        "attempt": post.status.attempt,
        "publishAt": format_time(spec.publish_at),
        "channel": spec.channel.value,
        "account": spec.account,
        "content": spec.content.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "callback": {"url": callback_url, "token": callback_token},
    }


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _synchronous_result(response: httpx.Response) -> engine.Published | None:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("status") != "published":
        return None
    ext_id, ext_url = body.get("externalId"), body.get("externalUrl")
    return engine.Published(
        external_id=str(ext_id)[:512] if ext_id is not None else None,
        external_url=str(ext_url)[:2048] if ext_url is not None else None,
    )


def classify(response: httpx.Response, now: dt.datetime) -> engine.Outcome:
    code = response.status_code
    if 200 <= code < 300:
        return engine.Accepted(published=_synchronous_result(response))
    snippet = response.text[:_BODY_SNIPPET].strip() or response.reason_phrase
    message = f"n8n answered {code}: {snippet}"
    if is_retryable(code):
        return engine.Failure(
            ErrorClass.TRANSIENT,
            f"HTTP{code}",
            message,
            parse_retry_after(response.headers.get("Retry-After"), now),
        )
    return engine.Failure(ErrorClass.PERMANENT, f"HTTP{code}", message)


class N8nClient:
    """One shared httpx.AsyncClient for every target."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        signing_key: bytes,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_connections: int = 16,
    ) -> None:
        self._targets = dict(targets)
        self._key = signing_key
        # As many connections as dispatches may run at once: a request never waits for
        # a pooled connection, so its deadline is spent on n8n, not in a queue.
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )
        self._clock = clock
        # Resolve auth headers once: a missing Secret file fails startup, not a dispatch.
        self._auth = {name: t.auth_header() for name, t in self._targets.items()}

    def knows(self, target: str) -> bool:
        return target in self._targets

    async def dispatch(
        self, target: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> engine.Outcome:
        """Send one attempt. The whole request (connect, send, every read) runs under one
        deadline, the target's timeout_seconds: the orphan-claim timeout relies on it."""
        config = self._targets.get(target)
        if config is None:
            return engine.Failure(
                ErrorClass.PERMANENT,
                "UnknownTarget",
                f"spec.target {target!r} is not configured in the operator "
                f"(configured: {', '.join(sorted(self._targets)) or 'none'})",
            )
        raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        msg_id = signing.message_id(body["id"], body["attempt"])
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key or body["id"],
            **signing.webhook_headers(self._key, msg_id, timestamp, raw),
            "User-Agent": "herald-operator",
        }
        auth = self._auth.get(target)
        if auth is not None:
            headers[auth[0]] = auth[1]
        try:
            async with asyncio.timeout(config.timeout_seconds):
                try:
                    response = await self._post(str(config.url), raw, headers, config)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # Usually a pooled keep-alive connection n8n had already closed: send
                    # once more on a fresh one, within the same deadline. Should n8n have
                    # got the first after all, the Idempotency-Key lets it drop this one.
                    response = await self._post(str(config.url), raw, headers, config)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return engine.Failure(
                ErrorClass.TRANSIENT,
                "Timeout",
                f"no answer from n8n within {config.timeout_seconds:g}s ({type(exc).__name__})",
            )
        except httpx.ConnectError as exc:
            return engine.Failure(ErrorClass.TRANSIENT, "ConnectError", f"{exc}"[:300])
        except httpx.HTTPError as exc:
            return engine.Failure(
                ErrorClass.TRANSIENT, "NetworkError", f"{type(exc).__name__}: {exc}"[:300]
            )
        return classify(response, self._clock())

    async def _post(
        self, url: str, raw: bytes, headers: dict[str, str], config: Target
    ) -> httpx.Response:
        return await self._client.post(
            url, content=raw, headers=headers, timeout=config.timeout_seconds
        )

    async def aclose(self) -> None:
        await self._client.aclose()
