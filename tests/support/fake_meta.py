"""A scriptable stand-in for Meta's Graph APIs (Facebook Page, Instagram, Threads) on 127.0.0.1.

One instance plays one network (`FakeMeta("facebook" | "instagram" | "threads")`) with the
request and answer shapes of that network's documentation, enough for the Herald branches
in n8n/src/net_facebook.py, net_instagram.py and net_threads.py:

  every network  GET  /me?fields=…                 -> the account the token belongs to
  facebook       POST /{page-id}/feed              -> {"id": "<page>_<post>"}
                 POST /{page-id}/photos (multipart) -> {"id", "post_id"} ({"id"} unpublished)
  instagram      GET  /{ig-user-id}/media           -> {"data": [recent media]}
                 POST /{ig-user-id}/media           -> {"id": "<container>"}
                 POST /{ig-user-id}/media_publish   -> {"id": "<media>"}
  threads        GET  /{threads-user-id}/threads    -> {"data": [recent threads]}
                 POST /{threads-user-id}/threads    -> {"id": "<container>"}
                 POST /{threads-user-id}/threads_publish -> {"id": "<media>"}

The token is the `access_token` query parameter (n8n's "Facebook Graph API" credential sends
it that way); a request without the expected token is answered with Graph's error 190.
`fail_next(path_suffix, status, error, headers)` answers the next request whose path ends
with `path_suffix` with a Graph error instead. Every request is recorded. The server is
tests/support/fake_api.py's.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_api import Answer, RecordingServer, form_parts, part_bytes

TOKEN = "herald-test-graph-token"
ACCOUNT_IDS = {"facebook": "104857600", "instagram": "17841400000000001", "threads": "2600000001"}
VERSIONS = {"facebook": "v23.0", "instagram": "v23.0", "threads": "v1.0"}


@dataclass(frozen=True)
class GraphRequest:
    """A recorded request: `path` without the query, which is in `query`; a form body's
    fields in `form`."""

    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    form: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.raw)


def graph_error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    """Graph's error body: {"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}."""
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEfGhIjK",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """Form fields as str, files as (filename, content type, bytes)."""
    fields: dict[str, Any] = {}
    for part in form_parts(content_type, raw):
        name = part.get_param("name", header="content-disposition")
        payload = part_bytes(part)
        if part.get_filename() is not None:
            fields[str(name)] = (part.get_filename(), part.get_content_type(), payload)
        else:
            fields[str(name)] = payload.decode()
    return fields


class FakeMeta(RecordingServer[GraphRequest]):
    def __init__(self, network: str) -> None:
        super().__init__()
        self.network = network
        self.account_id = ACCOUNT_IDS[network]
        self.version = VERSIONS[network]
        # What the account has published: id -> {"text", "timestamp", "permalink", ...}.
        self.published: dict[str, dict[str, Any]] = {}
        self.containers: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(18_000_000_000_000_001)

    @property
    def base_url(self) -> str:
        """What the branch's `<NETWORK>_API_BASE_URL` is set to (version included)."""
        return f"http://{self.host}/{self.version}"

    def clear(self) -> None:
        self.published.clear()
        self.containers.clear()

    def fail_next(
        self,
        path_suffix: str,
        status: int,
        error: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.fail(lambda r: r.path.endswith(path_suffix), Answer(status, error, headers or {}))

    def seed_post(self, text: str, timestamp: str) -> str:
        """A post the account already has (as if an earlier attempt published it)."""
        media_id = str(next(self._ids))
        with self._cond:
            self.published[media_id] = {
                "text": text,
                "timestamp": timestamp,
                "permalink": f"https://example.test/{self.network}/{media_id}",
            }
        return media_id

    def calls(self, method: str, suffix: str) -> list[GraphRequest]:
        with self._cond:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # --- the Graph API ---------------------------------------------------------------

    def parse(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> GraphRequest:
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        form: dict[str, Any] = {}
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = parse_multipart(content_type, raw)
        elif content_type.startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(raw.decode()))
        return GraphRequest(time.time(), method, url.path, query, headers, raw, form)

    def route(self, request: GraphRequest) -> Answer:
        return Answer(*self._route(request))

    def _route(self, request: GraphRequest) -> tuple[int, Any]:
        prefix = f"/{self.version}/"
        if not request.path.startswith(prefix):
            return 404, graph_error(803, f"Unknown path {request.path}")
        if request.query.get("access_token") != TOKEN:
            return 400, graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        node, _, edge = request.path.removeprefix(prefix).partition("/")
        if node == "me" and not edge and request.method == "GET":
            if self.network == "instagram":
                return 200, {"user_id": self.account_id, "username": "herald", "id": "9"}
            return 200, {"id": self.account_id, "name": "Herald test"}
        if node != self.account_id:
            return 400, graph_error(100, f"Unsupported request: no object {node}", 33)
        listing = {"instagram": "media", "threads": "threads"}.get(self.network)
        if request.method == "GET" and edge == listing:
            key = "caption" if self.network == "instagram" else "text"
            with self._cond:
                data = [
                    {"id": pid, key: post["text"], "timestamp": post["timestamp"],
                     "permalink": post["permalink"]}
                    for pid, post in reversed(self.published.items())
                ]  # fmt: skip
            return 200, {"data": data[: int(request.query.get("limit", "25"))]}
        if request.method != "POST":
            return 400, graph_error(100, f"Unsupported get request {request.path}")
        body: dict[str, Any] = dict(request.form) if request.form else {}
        if not body and request.raw:
            body = request.json()
        return self._create(edge, body)

    def _create(self, edge: str, body: dict[str, Any]) -> tuple[int, Any]:
        new = str(next(self._ids))
        now = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())
        if self.network == "facebook" and edge == "feed":
            if not body.get("message") and not body.get("link"):
                return 400, graph_error(100, "(#100) Missing message or attachment")
            post_id = f"{self.account_id}_{new}"
            with self._cond:
                self.published[post_id] = {"text": body.get("message", ""), "timestamp": now,
                                           "permalink": "", "body": body}  # fmt: skip
            return 200, {"id": post_id}
        if self.network == "facebook" and edge == "photos":
            if "source" not in body and "url" not in body:
                return 400, graph_error(324, "(#324) Requires upload file")
            if str(body.get("published", "true")) == "false":
                return 200, {"id": new}
            post_id = f"{self.account_id}_{next(self._ids)}"
            with self._cond:
                self.published[post_id] = {"text": body.get("message", ""), "timestamp": now,
                                           "permalink": "", "body": body}  # fmt: skip
            return 200, {"id": new, "post_id": post_id}
        container_edge = {"instagram": "media", "threads": "threads"}.get(self.network)
        publish_edge = {"instagram": "media_publish", "threads": "threads_publish"}.get(
            self.network
        )
        if edge == container_edge:
            with self._cond:
                self.containers[new] = body
            return 200, {"id": new}
        if edge == publish_edge:
            with self._cond:
                container = self.containers.pop(str(body.get("creation_id")), None)
            if container is None:
                return 400, graph_error(24, "The requested resource does not exist", 4279009)
            text = container.get("caption" if self.network == "instagram" else "text", "")
            with self._cond:
                self.published[new] = {
                    "text": text,
                    "timestamp": now,
                    "permalink": f"https://example.test/{self.network}/{new}",
                    "container": container,
                    "creation_id": str(body.get("creation_id")),
                }
            return 200, {"id": new}
        return 400, graph_error(100, f"Unsupported post request {edge}")
