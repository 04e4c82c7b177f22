"""A stand-in for X's API v2 on 127.0.0.1, for n8n workflow tests.

  POST /2/media/upload   multipart (media, media_category, media_type)
                         -> 200 {"data": {"id", "media_key", "expires_after_secs"}}
  POST /2/media/metadata JSON {"id", "metadata": {"alt_text": {"text"}}}
                         -> 200 {"data": {"id", "associated_metadata": …}}
  POST /2/tweets         JSON {"text", "media": {"media_ids"}, "reply_settings"?}
                         -> 201 {"data": {"id", "text", "edit_history_tweet_ids"}}
  POST /2/oauth2/token   -> a fresh access token (refresh grant)

Creates can be scripted (`script(Answer(...))`); `duplicate()`, `rate_limited(reset)` and
`unauthorized()` are X's documented answers. Every request is recorded.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from tests.support.fake_api import Answer, FakeApi, Request


def duplicate() -> Answer:
    return Answer(
        403,
        {
            "detail": "You are not allowed to create a Tweet with duplicate content.",
            "type": "about:blank",
            "title": "Forbidden",
            "status": 403,
        },
    )


def rate_limited(reset_in: int) -> Answer:
    reset = int(time.time()) + reset_in
    return Answer(
        429,
        {
            "title": "Too Many Requests",
            "detail": "Too Many Requests",
            "type": "about:blank",
            "status": 429,
        },
        {
            "x-rate-limit-limit": "100",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(reset),
        },
    )


def unauthorized() -> Answer:
    return Answer(
        401,
        {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"},
    )


class FakeX(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1_880_000_000_000_000_001)
        self.created: list[dict[str, Any]] = []
        self.uploads: dict[str, dict[str, bytes]] = {}
        self.alt_texts: dict[str, str] = {}

    def clear(self) -> None:
        self.created.clear()
        self.uploads.clear()
        self.alt_texts.clear()

    def creates(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.created)

    def route(self, request: Request) -> Answer:
        if request.method == "POST" and request.path == "/2/oauth2/token":
            return Answer(
                200, {"access_token": "refreshed-token", "token_type": "bearer", "expires_in": 7200}
            )
        if request.method == "POST" and request.path == "/2/media/upload":
            media_id = str(next(self._ids))
            with self._cond:
                self.uploads[media_id] = request.form()
            return Answer(
                200,
                {
                    "data": {
                        "id": media_id,
                        "media_key": f"3_{media_id}",
                        "expires_after_secs": 86400,
                    }
                },
            )
        if request.method == "POST" and request.path == "/2/media/metadata":
            body = request.json()
            if body["id"] not in self.uploads:
                return Answer(
                    400, {"title": "Invalid Request", "status": 400, "detail": "no media"}
                )
            with self._cond:
                self.alt_texts[body["id"]] = body["metadata"]["alt_text"]["text"]
            return Answer(
                200, {"data": {"id": body["id"], "associated_metadata": body["metadata"]}}
            )
        if request.method == "POST" and request.path == "/2/tweets":
            answer = self.create_answer()
            if answer is not None:
                return answer
            tweet_id = str(next(self._ids))
            body = request.json()
            with self._cond:
                self.created.append({"id": tweet_id, "body": body, "headers": request.headers})
            return Answer(
                201,
                {
                    "data": {
                        "id": tweet_id,
                        "text": body["text"],
                        "edit_history_tweet_ids": [tweet_id],
                    }
                },
            )
        return Answer(
            404, {"title": "Not Found", "status": 404, "detail": f"no route {request.path}"}
        )
