"""A scriptable stand-in for n8n's webhook, on 127.0.0.1, for fault injection.

Each request is recorded (time, headers, JSON body). Responses are scripted per post
name: `fake.script("my-post", 500, 500, 200)` answers the next three requests for that
post in that order; after the script runs out, the default answer applies. A scripted
item is an int status, a `Reply(status, body, headers, delay)`, or `TIMEOUT` (hold the
request longer than the client waits). With `auto_callback=True` the fake behaves like
n8n's workflow: after answering 2xx it POSTs a "published" callback to the URL and
token the dispatch carried.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


TIMEOUT = Reply(status=200, delay=30.0)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


class FakeN8n:
    def __init__(self, default: Reply | None = None, *, auto_callback: bool = False) -> None:
        self.default = default or Reply(200, {"status": "accepted"})
        self.auto_callback = auto_callback
        self.requests: list[Received] = []
        self.callback_results: list[tuple[int, str]] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhook/herald"

    def start(self) -> FakeN8n:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeN8n:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, name: str, *replies: int | Reply) -> None:
        with self._lock:
            for reply in replies:
                self._scripts[name].append(reply if isinstance(reply, Reply) else Reply(reply))

    def for_post(self, name: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.body.get("name") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 20.0) -> list[Received]:
        """Block until `count` requests for post `name` arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.body.get("name") == name]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} requests for {name} in {timeout}s")
                self._cond.wait(left)

    def _next_reply(self, name: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(name)
            return queue.popleft() if queue else self.default

    def _record(self, received: Received) -> None:
        with self._cond:
            self.requests.append(received)
            self._cond.notify_all()

    def _send_callback(self, body: dict[str, Any]) -> None:
        cb = body["callback"]
        data = json.dumps(
            {
                "namespace": body["namespace"],
                "name": body["name"],
                "uid": body["id"],
                "attempt": body["attempt"],
                "status": "published",
                "externalId": f"urn:li:share:{body['attempt']}{body['id'][:8]}",
                "externalUrl": f"https://www.linkedin.com/feed/update/{body['id'][:8]}",
            }
        ).encode()
        request = urllib.request.Request(
            cb["url"],
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {cb['token']}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self.callback_results.append((response.status, response.read().decode()))
        except urllib.error.HTTPError as exc:
            self.callback_results.append((exc.code, exc.read().decode()))
        except OSError as exc:
            self.callback_results.append((0, str(exc)))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                fake._record(Received(time.time(), self.path, dict(self.headers), raw, body))
                reply = fake._next_reply(str(body.get("name", "")))
                if reply.delay and fake._stopping.wait(reply.delay):
                    return
                payload = json.dumps(reply.body or {}).encode()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    return  # the client gave up (a scripted timeout)
                if fake.auto_callback and 200 <= reply.status < 300 and body.get("callback"):
                    threading.Thread(target=fake._send_callback, args=(body,), daemon=True).start()

        return Handler
