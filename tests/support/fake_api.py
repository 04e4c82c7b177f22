"""The plumbing the fake social networks share: a threaded HTTP server on 127.0.0.1
that records every request, serves media files, and answers "create" requests from a
script (status, body, headers) with an optional delay. tests/support/fake_x.py and
fake_mastodon.py build on it; each fake speaks its network's documented shapes.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
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

    def form(self) -> dict[str, bytes]:
        """The fields of a multipart/form-data body, by name (file fields: their bytes)."""
        head = f"Content-Type: {self.headers.get('content-type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.raw)
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True) or b""
        return fields


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeApi:
    """Subclasses implement `route(request) -> Answer`; `create_answer()` pops the script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.media: dict[str, tuple[str, bytes]] = {}
        self.redirects: dict[str, str] = {}
        self.delay = 0.0
        self._script: deque[Answer] = deque()
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._cond:
            self.requests.clear()
            self._script.clear()
            self.delay = 0.0
            self.clear()

    def clear(self) -> None:
        """Subclasses forget what they created."""

    def script(self, *answers: Answer) -> None:
        with self._cond:
            self._script.extend(answers)

    def serve_media(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        self.media[name] = (content_type, data)
        return f"{self.base_url}/media/{name}"

    def redirect(self, name: str, location: str) -> str:
        """A media URL that answers 302 to `location`."""
        self.redirects[name] = location
        return f"{self.base_url}/media/{name}"

    def of(self, method: str, path: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.method == method and r.path == path]

    def wait_for(self, method: str, path: str, count: int, timeout: float = 30.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if r.method == method and r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} {method} {path} in {timeout}s")
                self._cond.wait(left)

    def scripted(self) -> Answer | None:
        with self._cond:
            return self._script.popleft() if self._script else None

    def route(self, request: Request) -> Answer:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(time.time(), self.command, self.path, headers, raw)
                with fake._cond:
                    fake.requests.append(request)
                    fake._cond.notify_all()
                name = self.path.removeprefix("/media/")
                if self.command == "GET" and name in fake.redirects:
                    answer = Answer(302, None, {"Location": fake.redirects[name]})
                elif self.command == "GET" and name in fake.media:
                    content_type, data = fake.media[name]
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                else:
                    answer = fake.route(request)
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                if answer.body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _serve

        return Handler
