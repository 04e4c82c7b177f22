"""A lossy relay in front of Herald's callback sidecar, on 127.0.0.1.

n8n calls the relay; the relay forwards each callback to the sidecar unchanged, except
the ones `drop` selects, which it answers 503 and never forwards: a callback lost on the
way, as when the network between n8n and Herald fails after LinkedIn already posted.
With no target it is a sink that answers 200 to everything it does not drop. Every
callback is recorded with the answer it got. The server is tests/support/fake_api.py's
`LocalServer`.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.fake_api import LocalServer


@dataclass(frozen=True)
class Relayed:
    body: dict[str, Any]
    status: int
    dropped: bool


class CallbackRelay(LocalServer):
    def __init__(
        self, target: str | None, drop: Callable[[dict[str, Any]], bool] = lambda _: False
    ) -> None:
        self.target = target.rstrip("/") if target else None
        self.drop = drop
        self.seen: list[Relayed] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        return self.base_url

    def records(self) -> list[Relayed]:
        with self._lock:
            return list(self.seen)

    def _forward(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.target is None:
            return 200, b'{"result":"applied"}'
        request = urllib.request.Request(
            self.target + path,
            data=raw,
            method="POST",
            headers={
                "Content-Type": headers.get("content-type", "application/json"),
                "Authorization": headers.get("authorization", ""),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                if relay.drop(body):
                    status, answer = 503, b'{"code":"unavailable","message":"dropped by relay"}'
                    dropped = True
                else:
                    # Header names lower-cased: n8n sends them so, HTTP ignores case.
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, answer = relay._forward(self.path, raw, headers)
                    dropped = False
                with relay._lock:
                    relay.seen.append(Relayed(body, status, dropped))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler
