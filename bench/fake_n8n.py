"""A fast stand-in for n8n's webhook for the benchmark: aiohttp, in its own process.

The e2e suite's `tests/support/fake_n8n.py` is a threaded `http.server` built for fault
injection; at thousands of requests a second it, and the benchmark's own work in the
same interpreter, would become what is measured. This one runs alone in a subprocess,
answers every webhook 200 at once, records the arrival time (`time.time()`, taken before
the body is parsed) and, like n8n's workflow, POSTs a "published" callback to the URL
and token the dispatch carried (bounded concurrency, retried on a refused connection).

    python bench/fake_n8n.py [--port 0]     # prints "listening on <port>" when ready

`GET /bench/records?namespace=ns` returns the arrivals of one namespace,
`GET /bench/stats?namespace=ns` their counts; `FakeN8nProcess` drives it from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

WEBHOOK_PATH = "/webhook/herald"
CALLBACK_CONCURRENCY = 64


class Recorder:
    def __init__(self) -> None:
        # namespace -> [arrival, name, publishAt, attempt]
        self.arrivals: dict[str, list[list[Any]]] = defaultdict(list)
        self.callbacks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.session: ClientSession | None = None
        self.slots = asyncio.Semaphore(CALLBACK_CONCURRENCY)
        self.pending: set[asyncio.Task[None]] = set()

    async def webhook(self, request: web.Request) -> web.Response:
        at = time.time()
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        ns = str(body.get("namespace", ""))
        self.arrivals[ns].append([at, body.get("name"), body.get("publishAt"), body.get("attempt")])
        callback = body.get("callback")
        if isinstance(callback, dict) and callback.get("url"):
            task = asyncio.create_task(self._callback(body, callback))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return web.json_response({"status": "accepted"})

    async def _callback(self, body: dict[str, Any], callback: dict[str, Any]) -> None:
        assert self.session is not None
        ns = str(body.get("namespace", ""))
        data = {
            "namespace": body["namespace"],
            "name": body["name"],
            "uid": body["id"],
            "attempt": body["attempt"],
            "status": "published",
            "externalId": f"urn:li:share:{body['attempt']}{body['id'][:8]}",
            "externalUrl": f"https://www.linkedin.com/feed/update/{body['id'][:8]}",
        }
        headers = {"Authorization": f"Bearer {callback['token']}"}
        async with self.slots:
            for attempt in range(5):
                try:
                    async with self.session.post(
                        callback["url"], json=data, headers=headers
                    ) as response:
                        await response.read()
                        self.callbacks[ns][str(response.status)] += 1
                        if response.status < 500:
                            return
                except (ClientError, TimeoutError):
                    self.callbacks[ns]["error"] += 1
                await asyncio.sleep(0.2 * (attempt + 1))

    async def records(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace", "")
        return web.json_response(self.arrivals.get(ns, []))

    async def stats(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace", "")
        got = self.arrivals.get(ns, [])
        return web.json_response(
            {
                "received": len(got),
                "unique": len({r[1] for r in got}),
                "callbacks": dict(self.callbacks.get(ns, {})),
                "pending_callbacks": len(self.pending),
            }
        )


async def serve(port: int) -> None:
    recorder = Recorder()
    recorder.session = ClientSession(
        connector=TCPConnector(limit=CALLBACK_CONCURRENCY), timeout=ClientTimeout(total=15)
    )
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(WEBHOOK_PATH, recorder.webhook)
    app.router.add_get("/bench/records", recorder.records)
    app.router.add_get("/bench/stats", recorder.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(f"listening on {bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await recorder.session.close()
        await runner.cleanup()


class FakeN8nProcess:
    """The fake in a subprocess; `url` is the webhook, `records(ns)` the arrivals."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> FakeN8nProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log_path.open("ab"),
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until the server is bound
        if not line.startswith("listening on ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"fake n8n did not start: {line!r} {self.log_path.read_text()}")
        self.port = int(line.split()[-1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return json.loads(r.read())

    def records(self, namespace: str) -> list[list[Any]]:
        result: list[list[Any]] = self._get(f"/bench/records?namespace={namespace}")
        return result

    def stats(self, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/bench/stats?namespace={namespace}")
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
