"""The tests' raw API-server clients retry a 429 that carries Retry-After, as client-go
does, and hand back any other answer (a 429 without Retry-After included) at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.controlplane import AsyncRetryingTransport, RetryingTransport


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """Answers 429 (with Retry-After: 0 unless the path is /bare) twice per path, then 200."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            seen.append(f"{self.path} {body}")
            if sum(s.startswith(self.path + " ") for s in seen) <= 2:
                self.send_response(429)
                if self.path != "/bare":
                    self.send_header("Retry-After", "0")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_429_with_retry_after_is_retried_with_its_body(server: tuple[str, list[str]]) -> None:
    url, seen = server
    with httpx.Client(base_url=url, transport=RetryingTransport(), timeout=5) as client:
        assert client.post("/list", json={"n": 1}).status_code == 200
        assert client.post("/bare", json={"n": 2}).status_code == 429
    assert seen == ['/list {"n":1}'] * 3 + ['/bare {"n":2}']


def test_the_async_transport_retries_too(server: tuple[str, list[str]]) -> None:
    url, seen = server

    async def run() -> int:
        transport = AsyncRetryingTransport()
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=5) as client:
            return (await client.post("/list", json={"n": 1})).status_code

    assert asyncio.run(run()) == 200
    assert len(seen) == 3
