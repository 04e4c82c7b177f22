"""The n8n adapter: sends one attempt of a post to its target's webhook.

Translates HTTP into the engine's outcomes and never raises for anything the request,
the network or n8n does: 2xx → Accepted (or Published when n8n answers synchronously);
timeouts, connection errors, 408, 425, 429 and 5xx → transient Failure (with Retry-After,
if any); other 4xx, and a request httpx cannot even make (a header it cannot encode) →
permanent Failure. Which URL is called is decided by the operator's configuration alone:
a post names a target, never a URL.

A request is sent a second time, at once and within the same deadline, only when it
provably never left (no connection was made, or none was free): once its bytes may have
reached n8n, the attempt is spent and its failure goes to the engine, whose retry is a
new attempt with the same Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
from collections.abc import Mapping
from typing import Any

import httpx

from herald import engine, signing
from herald.clock import SYSTEM, Clock
from herald.config import ConfigError, Target
from herald.models import ErrorClass, format_time
from herald.statuses import is_retryable

_BODY_SNIPPET = 300


def payload(post: engine.Post, callback_url: str, callback_token: str) -> dict[str, Any]:
    """The JSON body n8n's workflow receives (see n8n/README.md). `account` is the account
    the claim resolved (status.account), the only identity n8n may post as."""
    spec = post.spec
    ref = post.status.account
    account = (
        None
        if ref is None
        else {"kind": ref.kind, "name": ref.name, "handle": ref.handle, "channel": spec.channel}
    )
    return {
        "id": post.uid,
        "namespace": post.namespace,
        "name": post.name,
        "attempt": post.status.attempt,
        "publishAt": format_time(spec.publish_at),
        "channel": spec.channel.value,
        "account": account,
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


_NEVER_LEFT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Errors raised before any byte of the request reached n8n."""

_CANNOT_BE_MADE = (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL)
"""httpx refused to make the request as it was built: it can never succeed."""


def _invalid_request(target: str, exc: Exception) -> engine.Failure:
    message = (
        f"the request to target {target} cannot be made ({type(exc).__name__}: {exc}); "
        "check the target's configuration (auth_header_name, auth_header_value, url)"
    )
    return engine.Failure(ErrorClass.PERMANENT, "InvalidRequest", message[:600])


class N8nClient:
    """One shared httpx.AsyncClient for every target."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        signing_key: bytes,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Clock = SYSTEM,
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
        # Resolve auth headers once: a missing Secret file, or a value no HTTP request can
        # carry, fails startup (naming the target) rather than every dispatch.
        self._auth = {}
        for name, t in self._targets.items():
            try:
                self._auth[name] = t.auth_header()
            except ConfigError as exc:
                raise ConfigError(f"targets.{name}.{exc}") from exc

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
        timestamp = int(self._clock.wall().timestamp())
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
                except _NEVER_LEFT:
                    # No connection carried the request (refused, or none free in time; a
                    # pooled keep-alive connection n8n had closed is detected and replaced
                    # by httpx before use): nothing reached n8n, so send it once more on a
                    # fresh connection, within the same deadline.
                    response = await self._post(str(config.url), raw, headers, config)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return engine.Failure(
                ErrorClass.TRANSIENT,
                "Timeout",
                f"no answer from n8n within {config.timeout_seconds:g}s ({type(exc).__name__})",
            )
        except httpx.ConnectError as exc:
            return engine.Failure(ErrorClass.TRANSIENT, "ConnectError", f"{exc}"[:300])
        except _CANNOT_BE_MADE as exc:
            return _invalid_request(target, exc)
        except httpx.HTTPError as exc:
            # Read/write errors and a connection closed without an answer: the request may
            # have reached n8n (which may be running it), so this attempt is spent.
            return engine.Failure(
                ErrorClass.TRANSIENT,
                "NetworkError",
                f"{type(exc).__name__}: {exc}"[:200]
                + " (the request may have reached n8n; not sent again under this attempt)",
            )
        except (UnicodeError, ValueError, TypeError) as exc:
            # httpx raises these for a request it cannot encode (a header value that is
            # not ASCII, say): nothing was sent, and sending again would fail the same way.
            return _invalid_request(target, exc)
        return classify(response, self._clock.wall())

    async def _post(
        self, url: str, raw: bytes, headers: dict[str, str], config: Target
    ) -> httpx.Response:
        return await self._client.post(
            url, content=raw, headers=headers, timeout=config.timeout_seconds
        )

    async def aclose(self) -> None:
        await self._client.aclose()
