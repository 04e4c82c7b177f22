"""A scriptable stand-in for LinkedIn's REST API, on 127.0.0.1, for n8n workflow tests.

Speaks just enough of the Posts, Images and Videos APIs for n8n/publish.json's LinkedIn
branch:

  POST /rest/images?action=initializeUpload  -> {"value": {"uploadUrl", "image"}}
  PUT  /upload/<image id>                     -> 201 (stores the bytes)
  POST /rest/videos?action=initializeUpload  -> {"value": {"video", "uploadInstructions"
                                                  (4 MiB parts), "uploadToken"}}
  PUT  /upload-video/<video id>/<part>        -> 200 with an ETag (stores the bytes)
  POST /rest/videos?action=finalizeUpload    -> 200 (records uploadedPartIds)
  POST /rest/posts                            -> 201, `x-restli-id: urn:li:share:<n>`
  POST /oauth/v2/accessToken                  -> a fresh access token (refresh grant)
  GET  /media/<name>                          -> bytes registered with `serve_media`

Answers to POST /rest/posts can be scripted: `fake.script(503, 201)` answers the next two
creates in that order, then the default (201). Every request is recorded; `creates()`
lists the posts that were actually created. The server is tests/support/fake_api.py's.
"""

from __future__ import annotations

import itertools
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from tests.support.fake_api import Answer, FakeApi, Request


@dataclass(frozen=True)
class Create:
    """A post LinkedIn accepted (201)."""

    urn: str
    body: dict[str, Any]
    headers: dict[str, str]


ERRORS = {
    401: {"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN",
          "message": "Invalid access token"},
    403: {"status": 403, "serviceErrorCode": 100, "code": "ACCESS_DENIED",
          "message": "Not enough permissions to access: partnerApiPostsExternal.CREATE"},
    429: {"status": 429, "code": "TOO_MANY_REQUESTS", "message": "Resource level throttle limit"},
    422: {"status": 422, "code": "UNPROCESSABLE_ENTITY",
          "message": "Content is a duplicate of urn:li:share:7000000000000000001"},
    503: {"status": 503, "code": "SERVICE_UNAVAILABLE", "message": "Service Unavailable"},
}  # fmt: skip

# A scripted 201: the create happens, as without a script.
CREATE = Answer(201)


def scripted_answer(status: int | tuple[int, dict[str, Any], dict[str, str]] | Answer) -> Answer:
    """A status (its usual body), (status, body, headers) as given, or an Answer."""
    if isinstance(status, Answer):
        return status
    if isinstance(status, tuple):
        return Answer(*status)
    if status == 201:
        return CREATE
    return Answer(status, ERRORS.get(status, {"status": status, "message": f"HTTP {status}"}))


class FakeLinkedIn(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[Create] = []
        self.uploads: dict[str, bytes] = {}
        self.video_parts: dict[str, dict[int, bytes]] = {}
        self.finalized: list[dict[str, Any]] = []
        self._ids = itertools.count(7_000_000_000_000_000_001)

    def clear(self) -> None:
        self.created.clear()
        self.uploads.clear()
        self.video_parts.clear()
        self.finalized.clear()

    def script(self, *statuses: int | tuple[int, dict[str, Any], dict[str, str]] | Answer) -> None:
        """Answers for the next creates: a status (its usual body), or (status, body, headers)."""
        super().script(*(scripted_answer(status) for status in statuses))

    def post_requests(self) -> list[Request]:
        return self.of("POST", "/rest/posts")

    def creates(self) -> list[Create]:
        with self._cond:
            return list(self.created)

    def wait_posts(self, count: int, timeout: float = 30.0) -> list[Request]:
        return self.wait_for("POST", "/rest/posts", count, timeout)

    # --- the API ---------------------------------------------------------------------

    def route(self, request: Request) -> Answer:
        if request.method == "GET":
            name = request.path.removeprefix("/media/")
            return Answer(404, {"status": 404, "message": f"no media {name}"})
        if request.method == "PUT":
            return self._upload(request)
        url = urllib.parse.urlsplit(request.path)
        if url.path == "/oauth/v2/accessToken":
            return Answer(200, {"access_token": "refreshed-token", "expires_in": 3600})
        if url.path == "/rest/images" and "action=initializeUpload" in url.query:
            image = f"D4E10AQ{next(self._ids)}"
            return Answer(
                200,
                {
                    "value": {
                        "uploadUrlExpiresAt": int(time.time() * 1000) + 3_600_000,
                        "uploadUrl": f"{self.base_url}/upload/{image}",
                        "image": f"urn:li:image:{image}",
                    }
                },
            )
        if url.path == "/rest/videos" and "action=initializeUpload" in url.query:
            size = request.json()["initializeUploadRequest"]["fileSizeBytes"]
            video = f"C5F10AQ{next(self._ids)}"
            part = 4 * 1024 * 1024
            instructions = [
                {
                    "uploadUrl": f"{self.base_url}/upload-video/{video}/{i}",
                    "firstByte": first,
                    "lastByte": min(first + part, size) - 1,
                }
                for i, first in enumerate(range(0, size, part))
            ]
            return Answer(
                200,
                {
                    "value": {
                        "uploadUrlsExpireAt": int(time.time() * 1000) + 3_600_000,
                        "video": f"urn:li:video:{video}",
                        "uploadInstructions": instructions,
                        "uploadToken": "",
                    }
                },
            )
        if url.path == "/rest/videos" and "action=finalizeUpload" in url.query:
            with self._cond:
                self.finalized.append(request.json()["finalizeUploadRequest"])
            return Answer(200)
        if url.path != "/rest/posts":
            return Answer(404, {"status": 404, "message": f"no route {url.path}"})
        answer = self.create_answer()
        if answer is not None and answer is not CREATE:
            return answer
        urn = f"urn:li:share:{next(self._ids)}"
        with self._cond:
            self.created.append(Create(urn, request.json(), request.headers))
        return Answer(201, None, {"x-restli-id": urn, "x-linkedin-id": urn})

    def _upload(self, request: Request) -> Answer:
        if request.path.startswith("/upload-video/"):
            video, part = request.path.removeprefix("/upload-video/").split("/")
            with self._cond:
                self.video_parts.setdefault(video, {})[int(part)] = request.raw
            return Answer(200, None, {"ETag": f"/ambry-video/etag-{video}-{part}"})
        if not request.path.startswith("/upload/"):
            return Answer(404, {"status": 404, "message": "not found"})
        with self._cond:
            self.uploads[request.path.removeprefix("/upload/")] = request.raw
        return Answer(201)
