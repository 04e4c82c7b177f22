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
drops the connection without an answer). The server is tests/support/fake_api.py's.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import urllib.parse
from typing import Any

from tests.support.fake_api import Answer, RecordingServer, Request

HANDLE, PASSWORD = "herald.test", "abcd-efgh-ijkl-mnop"
DID = "did:plc:heraldtestaccount0000000"
JWT = "eyJhbGciOiJFUzI1NksifQ.herald-access.sig"
# Handles com.atproto.identity.resolveHandle knows; any other is answered 400.
HANDLES = {HANDLE: DID, "alice.example.com": "did:plc:alice00000000000000000000"}
TID_CHARS = "234567abcdefghijklmnopqrstuvwxyz"


class XrpcRequest(Request):
    """A recorded request, with the XRPC method it calls and its query parameters."""

    @property
    def nsid(self) -> str:
        return urllib.parse.urlsplit(self.path).path.removeprefix("/xrpc/")

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))


def tid(micros: int) -> str:
    value, out = micros << 10, ""
    for _ in range(13):
        out = TID_CHARS[value & 31] + out
        value >>= 5
    return out


class FakeBluesky(RecordingServer[XrpcRequest]):
    content_type = "application/json; charset=utf-8"

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, dict[str, Any]] = {}  # rkey -> {"uri", "cid", "value"}
        self.blobs: dict[str, tuple[str, bytes]] = {}
        self._clock = itertools.count(int(time.time() * 1_000_000))

    def clear(self) -> None:
        self.records.clear()
        self.blobs.clear()

    def fail_next(
        self, nsid: str, status: int, error: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self.fail(lambda request: request.nsid == nsid, Answer(status, error, headers or {}))

    def seed_post(self, text: str, created_at: str) -> str:
        """A post already in the repo (as if an earlier attempt made it); its at:// URI."""
        rkey = tid(next(self._clock))
        uri = f"at://{DID}/app.bsky.feed.post/{rkey}"
        value = {"$type": "app.bsky.feed.post", "text": text, "createdAt": created_at}
        with self._cond:
            self.records[rkey] = {"uri": uri, "cid": "bafyreiseeded", "value": value}
        return uri

    def calls(self, nsid: str) -> list[XrpcRequest]:
        with self._cond:
            return [r for r in self.requests if r.nsid == nsid]

    # --- the PDS ---------------------------------------------------------------------

    def parse(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> XrpcRequest:
        return XrpcRequest(time.time(), method, target, headers, raw)

    def common_headers(self) -> dict[str, str]:
        return {
            "ratelimit-limit": "3000",
            "ratelimit-remaining": "2999",
            "ratelimit-reset": str(int(time.time()) + 300),
            "ratelimit-policy": "3000;w=300",
        }

    def route(self, request: XrpcRequest) -> Answer:
        return Answer(*self._answer(request))

    def _answer(self, request: XrpcRequest) -> tuple[int, Any]:
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
            with self._cond:
                self.blobs[cid] = (mime, request.raw)
            blob = {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime,
                    "size": len(request.raw)}  # fmt: skip
            return 200, {"blob": blob}
        if request.nsid == "com.atproto.repo.listRecords" and request.method == "GET":
            with self._cond:
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
            with self._cond:
                self.records[rkey] = {"uri": uri, "cid": f"bafyrei{rkey}", "value": record}
            return 200, {"uri": uri, "cid": f"bafyrei{rkey}", "validationStatus": "valid"}
        return 501, {"error": "MethodNotImplemented", "message": request.nsid}
