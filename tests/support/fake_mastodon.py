"""A stand-in for a Mastodon instance's REST API on 127.0.0.1, for n8n workflow tests.

  POST /api/v2/media      multipart (file, description) -> 200 MediaAttachment
  POST /api/v1/statuses   JSON {"status", "media_ids"?, "visibility"} with an
                          Idempotency-Key header -> 200 Status; a repeat of a key
                          answers the first status again, as Mastodon does
                          (it keeps keys for an hour)

Creates can be scripted (`script(Answer(...))`); `rate_limited(reset)` and
`unauthorized()` are Mastodon's documented answers. Every request is recorded.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from tests.support.fake_api import Answer, FakeApi, Request


def rate_limited(reset_in: int) -> Answer:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=reset_in)
    return Answer(
        429,
        {"error": "Too many requests"},
        {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
    )


def unauthorized() -> Answer:
    return Answer(401, {"error": "The access token is invalid"})


class FakeMastodon(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(113_000_000_000_000_001)
        self.created: list[dict[str, Any]] = []
        self.by_key: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, bytes]] = {}

    def clear(self) -> None:
        self.created.clear()
        self.by_key.clear()
        self.uploads.clear()

    def creates(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.created)

    def route(self, request: Request) -> Answer:
        if request.method == "POST" and request.path == "/api/v2/media":
            media_id = str(next(self._ids))
            form = request.form()
            with self._cond:
                self.uploads[media_id] = form
            return Answer(
                200,
                {
                    "id": media_id,
                    "type": "image",
                    "url": f"{self.base_url}/system/media/{media_id}.png",
                    "description": form.get("description", b"").decode() or None,
                },
            )
        if request.method == "POST" and request.path == "/api/v1/statuses":
            answer = self.create_answer()
            if answer is not None:
                return answer
            key = request.headers.get("idempotency-key")
            with self._cond:
                if key and key in self.by_key:
                    return Answer(200, self.by_key[key])
                status_id = str(next(self._ids))
                body = request.json()
                status = {
                    "id": status_id,
                    "url": f"https://mastodon.example/@herald/{status_id}",
                    "content": f"<p>{body['status']}</p>",
                    "visibility": body.get("visibility", "public"),
                    "media_attachments": [{"id": i} for i in body.get("media_ids", [])],
                }
                self.created.append({"id": status_id, "body": body, "headers": request.headers})
                if key:
                    self.by_key[key] = status
            return Answer(200, status)
        return Answer(404, {"error": "Record not found"})
