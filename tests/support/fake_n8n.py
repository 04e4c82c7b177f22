"""A scriptable stand-in for n8n's webhook, on 127.0.0.1, for fault injection.

Each request is recorded (time, target, headers, JSON body, the (uid, attempt) named by
the `webhook-id` header `msg_<uid>_<attempt>`, the `Idempotency-Key`, and the answer the
client actually received). Responses are scripted per post name:
`fake.script("my-post", 500, 500, 200)` answers the next three requests for that post in
that order; after the script runs out, the default answer applies. A scripted item is an
int status, a `Reply(status, body, headers, delay)`, or `TIMEOUT` (hold the request
longer than the client waits).

Faults, for the fault-injection suite (tests/faults):
- several targets on one server: `fake.url_for("slow")` is `/webhook/slow`; a request's
  `target` is the last path segment; `fake.delays["slow"] = 20` holds every answer of
  that target 20 s;
- outages: `fake.outage(start, end, "503")` answers 503 to everything in that window (unix
  time); `fake.outage(start, end, "refuse")` closes the listening socket for the window,
  so connections are refused, then listens again on the same port. `go_down()` and
  `come_up()` do the same by hand;
- callbacks: with `auto_callback=True` the fake behaves like n8n's workflow: after
  answering 2xx it POSTs the callback(s) `callback_bodies(request_body)` returns
  (default: one "published") to the URL and token the dispatch carried, each one
  `callback_copies` times at random moments within `callback_spread` seconds (seeded)
  after `callback_delay` seconds (how long the workflow's execution runs),
  so copies of different attempts' callbacks interleave. Like n8n's "Retry On Fail", a
  delivery answered 503 or refused is retried (`callback_retries` times, honouring
  Retry-After up to 5 s). Every delivery is recorded in `deliveries`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import random
import re
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

OutageMode = Literal["503", "refuse"]
_MSG_ID = re.compile(r"^msg_(?P<uid>.+)_(?P<attempt>\d+)$")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


TIMEOUT = Reply(status=200, delay=30.0)
OUTAGE_REPLY = Reply(503, {"message": "n8n is down (fault injected)"})


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    answered: int | None = None
    """The status the client received; None while pending or when it had gone away."""
    answered_at: float | None = None
    abandoned: bool = False
    """The client closed the connection before the (delayed) answer was ready."""

    @property
    def target(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    @property
    def message(self) -> tuple[str, int] | None:
        """(uid, attempt) from the webhook-id header `msg_<uid>_<attempt>`."""
        match = _MSG_ID.match(self.header("webhook-id") or "")
        return (match["uid"], int(match["attempt"])) if match else None

    @property
    def accepted(self) -> bool:
        """n8n answered 2xx and the client was there to read it."""
        return self.answered is not None and 200 <= self.answered < 300


@dataclass(frozen=True)
class Outage:
    start: float
    end: float
    mode: OutageMode

    def covers(self, at: float) -> bool:
        return self.start <= at < self.end


@dataclass
class Delivery:
    """One POST of a callback to the sidecar (a copy, or a retry of one)."""

    at: float
    name: str
    uid: str
    attempt: int
    outcome: str
    copy: int
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    answer: str


def published_callback(body: dict[str, Any]) -> list[dict[str, Any]]:
    """What a successful n8n workflow reports: the post is live."""
    return [
        {
            "status": "published",
            "externalId": f"urn:li:share:{body['attempt']}{body['id'][:8]}",
            "externalUrl": f"https://www.linkedin.com/feed/update/{body['id'][:8]}",
        }
    ]


def _client_gone(conn: socket.socket) -> bool:
    """True if the peer closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) overflows when a burst of dispatches connects at
    # once; Linux then drops the SYNs and the clients retry after a 1 s RTO, which would
    # show up as lateness that is the fake's, not Herald's. n8n's own backlog is 511.
    request_queue_size = 512


class FakeN8n:
    def __init__(
        self,
        default: Reply | None = None,
        *,
        auto_callback: bool = False,
        callback_bodies: Callable[[dict[str, Any]], list[dict[str, Any]]] = published_callback,
        callback_copies: int = 1,
        callback_spread: float = 0.0,
        callback_delay: float = 0.0,
        callback_retries: int = 5,
        runs_when_abandoned: bool = False,
        seed: int = 0,
    ) -> None:
        self.default = default or Reply(200, {"status": "accepted"})
        self.auto_callback = auto_callback
        self.callback_bodies = callback_bodies
        self.callback_copies = callback_copies
        self.callback_spread = callback_spread
        self.callback_delay = callback_delay
        self.callback_retries = callback_retries
        self.runs_when_abandoned = runs_when_abandoned
        """The workflow runs (and calls back) even when the client went away before the
        answer, as n8n's executions do; default: an abandoned request is not run."""
        self.delays: dict[str, float] = {}
        self.requests: list[Received] = []
        self.callback_results: list[tuple[int, str]] = []
        self.deliveries: list[Delivery] = []
        self.outages: list[Outage] = []
        self._rng = random.Random(seed)
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = self._listen(0)
        self.port = int(self._server.server_address[1])
        self._serving: threading.Thread | None = None
        self._up = False
        self._started = False
        # Callbacks: a heap of (due time, seq, job) drained into a small thread pool.
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fake-n8n-cb")
        self._scheduler = threading.Thread(target=self._schedule_loop, daemon=True)
        self._supervisor = threading.Thread(target=self._outage_loop, daemon=True)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_for("herald")

    def url_for(self, target: str) -> str:
        """The webhook URL of one target; requests to it are recorded with that target."""
        return f"http://127.0.0.1:{self.port}/webhook/{target}"

    def start(self) -> FakeN8n:
        self._started = True
        self._serve()
        self._scheduler.start()
        self._supervisor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.go_down()
        if self._started:
            self._scheduler.join(timeout=5)
            self._supervisor.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FakeN8n:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = _Server(("127.0.0.1", port), self._handler())
        server.daemon_threads = True
        return server

    def _serve(self) -> None:
        # A short poll interval: go_down() takes effect (connections refused) at once.
        self._serving = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._serving.start()
        self._up = True

    def go_down(self) -> None:
        """Stop listening: new connections are refused (requests under way finish)."""
        if not self._up:
            return
        self._up = False
        self._server.shutdown()
        self._server.server_close()
        if self._serving is not None:
            self._serving.join(timeout=5)

    def come_up(self) -> None:
        """Listen again, on the same port."""
        if self._up or self._stopping.is_set():
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = self._listen(self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._serve()

    # --- scripting -------------------------------------------------------------------

    def script(self, name: str, *replies: int | Reply) -> None:
        with self._lock:
            for reply in replies:
                self._scripts[name].append(reply if isinstance(reply, Reply) else Reply(reply))

    def outage(self, start: float, end: float, mode: OutageMode = "503") -> Outage:
        """n8n is down between the unix times `start` and `end`."""
        window = Outage(start, end, mode)
        with self._cond:
            self.outages.append(window)
            self._cond.notify_all()
        return window

    def _in_outage(self, at: float, mode: OutageMode) -> bool:
        return any(o.mode == mode and o.covers(at) for o in self.outages)

    def _outage_loop(self) -> None:
        """Closes and reopens the listening socket as "refuse" windows begin and end."""
        while not self._stopping.is_set():
            down = self._in_outage(time.time(), "refuse")
            if down and self._up:
                self.go_down()
            elif not down and not self._up:
                self.come_up()
            self._stopping.wait(0.02)

    # --- observation -----------------------------------------------------------------

    def for_post(self, name: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.body.get("name") == name]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

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

    def callbacks_settled(self) -> bool:
        """No callback copy is waiting to be delivered."""
        with self._lock:
            return not self._pending and self._in_flight == 0

    def _next_reply(self, name: str, at: float) -> Reply:
        if self._in_outage(at, "503"):
            return OUTAGE_REPLY
        with self._lock:
            queue = self._scripts.get(name)
            return queue.popleft() if queue else self.default

    def _record(self, received: Received) -> None:
        with self._cond:
            self.requests.append(received)
            self._cond.notify_all()

    # --- callbacks -------------------------------------------------------------------

    def _run_abandoned(self, body: dict[str, Any], reply: Reply) -> None:
        ran = self.runs_when_abandoned and self.auto_callback and 200 <= reply.status < 300
        if ran and body.get("callback"):
            self._plan_callbacks(body)

    def _plan_callbacks(self, body: dict[str, Any]) -> None:
        now = time.time()
        with self._cond:
            for outcome in self.callback_bodies(body):
                for copy in range(self.callback_copies):
                    at = now + self.callback_delay + self._rng.uniform(0, self.callback_spread)
                    job = self._delivery(body, outcome, copy)
                    heapq.heappush(self._pending, (at, next(self._seq), job))
            self._cond.notify_all()

    def _schedule_loop(self) -> None:
        with self._cond:
            while not self._stopping.is_set():
                now = time.time()
                while self._pending and self._pending[0][0] <= now:
                    _, _, job = heapq.heappop(self._pending)
                    self._in_flight += 1
                    self._pool.submit(job)
                wait = self._pending[0][0] - now if self._pending else 1.0
                self._cond.wait(max(0.001, min(wait, 1.0)))

    def _delivery(
        self, body: dict[str, Any], outcome: dict[str, Any], copy: int
    ) -> Callable[[], None]:
        def deliver() -> None:
            try:
                self._deliver(body, outcome, copy)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

        return deliver

    def _deliver(self, body: dict[str, Any], outcome: dict[str, Any], copy: int) -> None:
        cb = body["callback"]
        data = json.dumps(
            {
                "namespace": body["namespace"],
                "name": body["name"],
                "uid": body["id"],
                "attempt": body["attempt"],
                **outcome,
            }
        ).encode()
        for _ in range(self.callback_retries + 1):
            if self._stopping.is_set():
                return
            request = urllib.request.Request(
                cb["url"],
                data=data,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {cb['token']}",
                },
            )
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    status, answer = response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, exc.read().decode()
                with contextlib.suppress(TypeError, ValueError):
                    retry_after = float(exc.headers.get("Retry-After"))
            except OSError as exc:
                status, answer = 0, str(exc)
            with self._lock:
                self.callback_results.append((status, answer))
                self.deliveries.append(
                    Delivery(
                        time.time(),
                        body["name"],
                        body["id"],
                        body["attempt"],
                        str(outcome.get("status")),
                        copy,
                        status,
                        answer,
                    )
                )
            if status not in (0, 503):
                return
            self._stopping.wait(min(retry_after or 1.0, 5.0))

    # --- HTTP ------------------------------------------------------------------------

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
                received = Received(time.time(), self.path, dict(self.headers), raw, body)
                fake._record(received)
                reply = fake._next_reply(str(body.get("name", "")), received.at)
                delay = reply.delay + fake.delays.get(received.target, 0.0)
                if delay and fake._stopping.wait(delay):
                    return
                if delay and _client_gone(self.connection):
                    received.abandoned = True  # the client timed out: it never sees this
                    fake._run_abandoned(body, reply)
                    return
                payload = json.dumps(reply.body or {}).encode()
                # Recorded before the bytes leave: a client that reads the answer and
                # looks at the record at once must find it there.
                received.answered, received.answered_at = reply.status, time.time()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except OSError:
                    received.answered = received.answered_at = None
                    received.abandoned = True
                    fake._run_abandoned(body, reply)
                    return  # the client gave up (a scripted timeout)
                if fake.auto_callback and 200 <= reply.status < 300 and body.get("callback"):
                    fake._plan_callbacks(body)

        return Handler
