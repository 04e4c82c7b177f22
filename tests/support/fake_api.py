"""The plumbing the fake social networks share, so that each fake only speaks its network.

`LocalServer` is a threaded HTTP server on 127.0.0.1 on a daemon thread, started and
stopped by `with` (tests/support/callback_relay.py uses just that). `RecordingServer`
adds what every fake network needs: it records every request (as the fake's own request
type, made by `parse`), serves media files and redirects, answers faults injected with
`fail()` (status 0 drops the connection without an answer), and hands the rest to the
fake's `route(request) -> Answer`; creates can be scripted (`script`) and delayed
(`delay`, see `create_answer`). `FakeApi` records the plain `Request`.
tests/support/fake_x.py, fake_mastodon.py, fake_linkedin.py, fake_bluesky.py and
fake_meta.py build on it; each speaks its network's documented shapes.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Protocol, Self, TypeVar


def form_parts(content_type: str, raw: bytes) -> list[email.message.EmailMessage]:
    """The parts of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    assert isinstance(message, email.message.EmailMessage)  # what policy.HTTP makes
    return list(message.iter_parts())  # type: ignore[arg-type]


def part_bytes(part: email.message.EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


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
        return {
            str(part.get_param("name", header="content-disposition")): part_bytes(part)
            for part in form_parts(self.headers.get("content-type", ""), self.raw)
        }


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Recorded(Protocol):
    """What the server needs of a fake's request type."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


R = TypeVar("R", bound=Recorded)


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (a free port), served on a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RecordingServer(LocalServer, Generic[R]):
    """Subclasses implement `parse` (the request record) and `route(request) -> Answer`."""

    # The Content-Type of a JSON answer.
    content_type = "application/json"

    def __init__(self) -> None:
        self.requests: list[R] = []
        self.media: dict[str, tuple[str, bytes]] = {}
        self.redirects: dict[str, str] = {}
        self.delay = 0.0
        self._script: deque[Answer] = deque()
        self._faults: deque[tuple[Callable[[R], bool], Answer]] = deque()
        self._cond = threading.Condition()
        super().__init__(self._handler())

    def reset(self) -> None:
        """Forget every request, script and fault (one fake serves several tests)."""
        with self._cond:
            self.requests.clear()
            self._script.clear()
            self._faults.clear()
            self.delay = 0.0
            self.clear()

    def clear(self) -> None:
        """Subclasses forget what they created."""

    def script(self, *answers: Answer) -> None:
        with self._cond:
            self._script.extend(answers)

    def fail(self, match: Callable[[R], bool], answer: Answer) -> None:
        """Answer the next request `match` selects with `answer` (status 0: drop it)."""
        with self._cond:
            self._faults.append((match, answer))

    def serve_media(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at a URL a post's media can name; returns the URL."""
        self.media[name] = (content_type, data)
        return f"http://{self.host}/media/{name}"

    def redirect(self, name: str, location: str) -> str:
        """A media URL that answers 302 to `location`."""
        self.redirects[name] = location
        return f"http://{self.host}/media/{name}"

    def of(self, method: str, path: str) -> list[R]:
        with self._cond:
            return [r for r in self.requests if r.method == method and r.path == path]

    def wait_for(self, method: str, path: str, count: int, timeout: float = 30.0) -> list[R]:
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

    def create_answer(self) -> Answer | None:
        """For a create: wait `delay` seconds, then the next scripted answer, if any."""
        time.sleep(self.delay)
        return self.scripted()

    def common_headers(self) -> dict[str, str]:
        """Headers every answer carries (an answer's own headers win)."""
        return {}

    def parse(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> R:
        """The record of one request (`target` as sent: path and query)."""
        raise NotImplementedError

    def route(self, request: R) -> Answer:
        raise NotImplementedError

    def _fault(self, request: R) -> Answer | None:
        with self._cond:
            for index, (match, answer) in enumerate(self._faults):
                if match(request):
                    del self._faults[index]
                    return answer
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Header names lower-cased: HTTP says their case means nothing.
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = fake.parse(self.command, self.path, headers, raw)
                with fake._cond:
                    fake.requests.append(request)
                    fake._cond.notify_all()
                name = self.path.removeprefix("/media/")
                answer = fake._fault(request)
                if answer is None and self.command == "GET" and name in fake.redirects:
                    answer = Answer(302, None, {"Location": fake.redirects[name]})
                elif answer is None and self.command == "GET" and name in fake.media:
                    content_type, data = fake.media[name]
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if answer is None:
                    answer = fake.route(request)
                if answer.status == 0:
                    # No answer at all: the connection is dropped.
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for key, value in {**fake.common_headers(), **answer.headers}.items():
                    self.send_header(key, value)
                if answer.body is not None:
                    self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _serve

        return Handler


class FakeApi(RecordingServer[Request]):
    """A fake whose requests are the plain `Request` (path as sent, with its query)."""

    def parse(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Request:
        return Request(time.time(), method, target, headers, raw)
