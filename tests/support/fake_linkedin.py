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
lists the posts that were actually created.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


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


class FakeLinkedIn:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.created: list[Create] = []
        self.uploads: dict[str, bytes] = {}
        self.video_parts: dict[str, dict[int, bytes]] = {}
        self.finalized: list[dict[str, Any]] = []
        self.media: dict[str, tuple[str, bytes]] = {}
        self._script: deque[int | tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.delay = 0.0
        self._ids = itertools.count(7_000_000_000_000_000_001)
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeLinkedIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLinkedIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every request and script (one fake serves several tests)."""
        with self._cond:
            self.requests.clear()
            self.created.clear()
            self.uploads.clear()
            self.video_parts.clear()
            self.finalized.clear()
            self._script.clear()
            self.delay = 0.0

    def script(self, *statuses: int | tuple[int, dict[str, Any], dict[str, str]]) -> None:
        """Answers for the next creates: a status (its usual body), or (status, body, headers)."""
        with self._cond:
            self._script.extend(statuses)

    def serve_media(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at a URL a post's media can name; returns the URL."""
        self.media[name] = (content_type, data)
        return f"{self.base_url}/media/{name}"

    def post_requests(self) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.method == "POST" and r.path == "/rest/posts"]

    def creates(self) -> list[Create]:
        with self._cond:
            return list(self.created)

    def wait_posts(self, count: int, timeout: float = 30.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.method == "POST" and r.path == "/rest/posts"]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} creates in {timeout}s")
                self._cond.wait(left)

    # --- the server ----------------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _next_status(self) -> int | tuple[int, dict[str, Any], dict[str, str]]:
        with self._cond:
            return self._script.popleft() if self._script else 201

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _reply(
                self, status: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _read(self) -> Request:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Header names lower-cased: HTTP says their case means nothing.
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(time.time(), self.command, self.path, headers, raw)
                fake._record(request)
                return request

            def do_GET(self) -> None:
                self._read()
                name = self.path.removeprefix("/media/")
                if name in fake.media:
                    content_type, data = fake.media[name]
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self._reply(404, {"status": 404, "message": f"no media {name}"})

            def do_PUT(self) -> None:
                request = self._read()
                if self.path.startswith("/upload-video/"):
                    video, part = self.path.removeprefix("/upload-video/").split("/")
                    with fake._cond:
                        fake.video_parts.setdefault(video, {})[int(part)] = request.raw
                    self._reply(200, None, {"ETag": f"/ambry-video/etag-{video}-{part}"})
                    return
                if not self.path.startswith("/upload/"):
                    self._reply(404, {"status": 404, "message": "not found"})
                    return
                with fake._cond:
                    fake.uploads[self.path.removeprefix("/upload/")] = request.raw
                self._reply(201)

            def do_POST(self) -> None:
                request = self._read()
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/oauth/v2/accessToken":
                    self._reply(
                        200,
                        {"access_token": "refreshed-token", "expires_in": 3600},
                    )
                    return
                if url.path == "/rest/images" and "action=initializeUpload" in url.query:
                    image = f"D4E10AQ{next(fake._ids)}"
                    self._reply(
                        200,
                        {
                            "value": {
                                "uploadUrlExpiresAt": int(time.time() * 1000) + 3_600_000,
                                "uploadUrl": f"{fake.base_url}/upload/{image}",
                                "image": f"urn:li:image:{image}",
                            }
                        },
                    )
                    return
                if url.path == "/rest/videos" and "action=initializeUpload" in url.query:
                    size = request.json()["initializeUploadRequest"]["fileSizeBytes"]
                    video = f"C5F10AQ{next(fake._ids)}"
                    part = 4 * 1024 * 1024
                    instructions = [
                        {
                            "uploadUrl": f"{fake.base_url}/upload-video/{video}/{i}",
                            "firstByte": first,
                            "lastByte": min(first + part, size) - 1,
                        }
                        for i, first in enumerate(range(0, size, part))
                    ]
                    self._reply(
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
                    return
                if url.path == "/rest/videos" and "action=finalizeUpload" in url.query:
                    with fake._cond:
                        fake.finalized.append(request.json()["finalizeUploadRequest"])
                    self._reply(200)
                    return
                if url.path != "/rest/posts":
                    self._reply(404, {"status": 404, "message": f"no route {url.path}"})
                    return
                time.sleep(fake.delay)
                status = fake._next_status()
                if isinstance(status, tuple):
                    self._reply(*status)
                    return
                if status == 201:
                    urn = f"urn:li:share:{next(fake._ids)}"
                    with fake._cond:
                        fake.created.append(Create(urn, request.json(), request.headers))
                    self._reply(201, None, {"x-restli-id": urn, "x-linkedin-id": urn})
                    return
                error = ERRORS.get(status, {"status": status, "message": f"HTTP {status}"})
                self._reply(status, error)

        return Handler
