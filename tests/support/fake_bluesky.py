"""A scriptable stand-in for a Bluesky PDS (AT Protocol XRPC) on 127.0.0.1, for n8n tests.

Speaks the calls n8n/src/net_bluesky.py makes, with the lexicons' request and answer shapes:

  POST /xrpc/com.atproto.server.createSession {identifier, password} -> {accessJwt, did, …}
  POST /xrpc/com.atproto.repo.uploadBlob  (raw bytes, Content-Type)  -> {"blob": {…}}
  GET  /xrpc/com.atproto.identity.resolveHandle?handle               -> {"did"} (or 400)
  GET  /xrpc/com.atproto.repo.listRecords?repo&collection&limit      -> {"records": […]}
  POST /xrpc/com.atproto.repo.createRecord {repo, collection, record} -> {uri, cid, …}

Every answer carries the PDS's rate-limit headers (ratelimit-limit/-remaining/-reset,
reset in epoch seconds). XRPC errors are {"error": <name>, "message": …}. Requests after
createSession need `Authorization: Bearer <accessJwt>`. `fail_next(method, status, error,
headers)` answers the next call of that XRPC method with an error instead (status 0:
drops the connection without an answer).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANDLE, PASSWORD = "herald.test", "abcd-efgh-ijkl-mnop"
DID = "did:plc:heraldtestaccount0000000"
JWT = "eyJhbGciOiJFUzI1NksifQ.herald-access.sig"
# Handles com.atproto.identity.resolveHandle knows; any other is answered 400.
HANDLES = {HANDLE: DID, "alice.example.com": "did:plc:alice00000000000000000000"}
TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Request:
    at: float
    method: str
    nsid: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


def tid(micros: int) -> str:
    value, out = micros << 10, ""
    for _ in range(13):
        out = TID_CHARS[value & 31] + out
        value >>= 5
    return out


class FakeBluesky:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.records: dict[str, dict[str, Any]] = {}  # rkey -> {"uri", "cid", "value"}
        self.blobs: dict[str, tuple[str, bytes]] = {}
        self._failures: deque[tuple[str, int, dict[str, Any], dict[str, str]]] = deque()
        self._clock = itertools.count(int(time.time() * 1_000_000))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeBluesky:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeBluesky:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.records.clear()
            self.blobs.clear()
            self._failures.clear()

    def fail_next(
        self, nsid: str, status: int, error: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        with self._lock:
            self._failures.append((nsid, status, error, headers or {}))

    def seed_post(self, text: str, created_at: str) -> str:
        """A post already in the repo (as if an earlier attempt made it); its at:// URI."""
        rkey = tid(next(self._clock))
        uri = f"at://{DID}/app.bsky.feed.post/{rkey}"
        value = {"$type": "app.bsky.feed.post", "text": text, "createdAt": created_at}
        with self._lock:
            self.records[rkey] = {"uri": uri, "cid": "bafyreiseeded", "value": value}
        return uri

    def calls(self, nsid: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.nsid == nsid]

    # --- the server ----------------------------------------------------------------

    def _answer(self, request: Request) -> tuple[int, Any]:
        if request.nsid == "com.atproto.server.createSession":
            body = request.json()
            if body.get("identifier") != HANDLE or body.get("password") != PASSWORD:
                return 401, {"error": "AuthenticationRequired",
                             "message": "Invalid identifier or password"}  # fmt: skip
            return 200, {"accessJwt": JWT, "refreshJwt": "refresh", "handle": HANDLE,
                         "did": DID, "active": True}  # fmt: skip
        if request.headers.get("authorization") != f"Bearer {JWT}":
            return 401, {"error": "AuthenticationRequired", "message": "Authentication Required"}
        if request.nsid == "com.atproto.identity.resolveHandle" and request.method == "GET":
            did = HANDLES.get(request.query.get("handle", ""))
            if did is None:
                return 400, {"error": "InvalidRequest", "message": "Unable to resolve handle"}
            return 200, {"did": did}
        if request.nsid == "com.atproto.repo.uploadBlob" and request.method == "POST":
            cid = "bafkrei" + hashlib.sha256(request.raw).hexdigest()[:52]
            mime = request.headers.get("content-type", "*/*")
            with self._lock:
                self.blobs[cid] = (mime, request.raw)
            blob = {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime,
                    "size": len(request.raw)}  # fmt: skip
            return 200, {"blob": blob}
        if request.nsid == "com.atproto.repo.listRecords" and request.method == "GET":
            with self._lock:
                records = list(reversed(self.records.values()))
            return 200, {"records": records[: int(request.query.get("limit", "50"))]}
        if request.nsid == "com.atproto.repo.createRecord" and request.method == "POST":
            body = request.json()
            if body.get("repo") != DID or body.get("collection") != "app.bsky.feed.post":
                return 400, {"error": "InvalidRequest", "message": "bad repo or collection"}
            record = body.get("record") or {}
            if record.get("$type") != "app.bsky.feed.post" or "createdAt" not in record:
                return 400, {"error": "InvalidRequest", "message": "Invalid app.bsky.feed.post"}
            for image in (record.get("embed") or {}).get("images", []):
                if image["image"]["ref"]["$link"] not in self.blobs:
                    return 400, {"error": "BlobNotFound", "message": "Could not find blob"}
            rkey = tid(next(self._clock))
            uri = f"at://{DID}/app.bsky.feed.post/{rkey}"
            with self._lock:
                self.records[rkey] = {"uri": uri, "cid": f"bafyrei{rkey}", "value": record}
            return 200, {"uri": uri, "cid": f"bafyrei{rkey}", "validationStatus": "valid"}
        return 501, {"error": "MethodNotImplemented", "message": request.nsid}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                url = urllib.parse.urlsplit(self.path)
                nsid = url.path.removeprefix("/xrpc/")
                query = dict(urllib.parse.parse_qsl(url.query))
                request = Request(time.time(), self.command, nsid, query, headers, raw)
                extra = {
                    "ratelimit-limit": "3000",
                    "ratelimit-remaining": "2999",
                    "ratelimit-reset": str(int(time.time()) + 300),
                    "ratelimit-policy": "3000;w=300",
                }
                with fake._lock:
                    fake.requests.append(request)
                    failure = next(
                        (f for f in fake._failures if f[0] == nsid),
                        None,
                    )
                    if failure is not None:
                        fake._failures.remove(failure)
                if failure is not None and failure[1] == 0:
                    # Status 0: no answer at all; the connection is dropped.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if failure is not None:
                    _, status, body, scripted = failure
                    extra.update(scripted)
                else:
                    status, body = fake._answer(request)
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle
            do_POST = _handle

        return Handler
