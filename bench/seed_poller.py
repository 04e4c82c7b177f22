"""The seed's design, as a benchmark baseline (not product code).

The design notes (/work/shared/seeds/) run a cron route every minute
(`schedule: '*/1 * * * *'`) that selects the posts whose `scheduled_at` has passed and
whose status is still `scheduled`, marks each `publishing`, and sends them to the n8n
webhook in batches of five (`Promise.allSettled` over slices of 5, one slice after the
other). Here the table is the ScheduledPosts of one namespace and the status column an
annotation (`bench.herald.dev/seed-state`), written with a merge patch as the row update
would be; the cron ticks on multiples of `--interval` seconds of wall-clock time, as
cron does on the minute, and a tick that overruns delays the next one, as a single
cron route would.

    python bench/seed_poller.py --server URL --ca CA --cert PEM --namespace NS --webhook URL
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import ssl
import time
from typing import Any

import httpx

API = "/apis/herald.dev/v1alpha1"
STATE = "bench.herald.dev/seed-state"


def _due(item: dict[str, Any], now: float) -> bool:
    annotations = item["metadata"].get("annotations") or {}
    publish_at = dt.datetime.fromisoformat(item["spec"]["publishAt"].replace("Z", "+00:00"))
    return STATE not in annotations and publish_at.timestamp() <= now


async def _list(api: httpx.AsyncClient, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {"limit": "500"}
    while True:
        response = await api.get(f"{API}/namespaces/{namespace}/scheduledposts", params=params)
        response.raise_for_status()
        page = response.json()
        items += page["items"]
        if not page["metadata"].get("continue"):
            return items
        params["continue"] = page["metadata"]["continue"]


async def _mark(api: httpx.AsyncClient, item: dict[str, Any], state: str) -> None:
    meta = item["metadata"]
    await api.patch(
        f"{API}/namespaces/{meta['namespace']}/scheduledposts/{meta['name']}",
        content=json.dumps({"metadata": {"annotations": {STATE: state}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )


async def _process(
    api: httpx.AsyncClient, n8n: httpx.AsyncClient, webhook: str, item: dict[str, Any]
) -> None:
    meta, spec = item["metadata"], item["spec"]
    await _mark(api, item, "publishing")
    body = {
        "id": meta["uid"],
        "namespace": meta["namespace"],
        "name": meta["name"],
        "attempt": 1,
        "publishAt": spec["publishAt"],
        "content": spec["content"],
    }
    try:
        response = await n8n.post(webhook, json=body)
        ok = response.status_code < 300
    except httpx.HTTPError:
        ok = False
    # The seed's row stays `publishing` until n8n's callback; a failure marks it failed.
    if not ok:
        await _mark(api, item, "failed")


async def tick(
    api: httpx.AsyncClient, n8n: httpx.AsyncClient, namespace: str, webhook: str, batch: int
) -> int:
    now = time.time()
    due = sorted(
        (i for i in await _list(api, namespace) if _due(i, now)),
        key=lambda i: str(i["spec"]["publishAt"]),
    )
    for start in range(0, len(due), batch):
        await asyncio.gather(
            *(_process(api, n8n, webhook, item) for item in due[start : start + batch]),
            return_exceptions=True,
        )
    return len(due)


async def run(args: argparse.Namespace) -> None:
    tls = ssl.create_default_context(cafile=args.ca)
    tls.load_cert_chain(args.cert)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with (
        httpx.AsyncClient(base_url=args.server, verify=tls, timeout=30) as api,
        httpx.AsyncClient(timeout=10) as n8n,
    ):
        print("seed poller started", flush=True)
        while not stop.is_set():
            # Sleep to the next multiple of the interval, as cron fires on the minute.
            wait = args.interval - (time.time() % args.interval)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
                break
            except TimeoutError:
                pass
            started = time.monotonic()
            count = await tick(api, n8n, args.namespace, args.webhook, args.batch)
            print(f"tick: {count} due, {time.monotonic() - started:.2f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True, help="the API server's CA bundle")
    parser.add_argument("--cert", required=True, help="client certificate + key, PEM")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--webhook", required=True)
    parser.add_argument("--interval", type=float, default=60.0, help="cron period, seconds")
    parser.add_argument("--batch", type=int, default=5, help="posts sent concurrently")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
