"""What every benchmark scenario needs: an async admin client for the API server, its
request counters, the Herald processes' /metrics, process CPU and memory, statistics.

The admin client has the control plane's `system:masters` client certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import ssl
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.support.accounts import default_accounts
from tests.support.controlplane import ControlPlane

API = "/apis/herald.dev/v1alpha1"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def iso(at: float) -> str:
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 100]; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def post_body(
    namespace: str,
    name: str,
    publish_at: float,
    *,
    labels: dict[str, str] | None = None,
    suspend: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"publishAt": iso(publish_at), "content": {"text": f"Post {name}"}}
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ScheduledPost",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": spec,
    }


class Api:
    """Admin access to the API server for setting scenarios up and reading its metrics.

    aiohttp, not the operator's httpx: setting up 100k posts is the bottleneck here, and
    aiohttp is several times faster per request on a busy machine."""

    def __init__(self, cp: ControlPlane, concurrency: int = 48) -> None:
        cert, key = cp.user_credentials("bench-admin", ["system:masters"])
        pem = cp.workdir / "bench-admin.pem"
        pem.write_bytes(cert + key)
        self.tls = ssl.create_default_context(cafile=str(cp.ca_file))
        self.tls.load_cert_chain(str(pem))
        self.server = cp.server
        self.pem = pem
        self.ca_file = cp.ca_file
        self.concurrency = concurrency
        self.session = self.new_session(concurrency)

    def new_session(self, connections: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=self.server,
            connector=aiohttp.TCPConnector(ssl=self.tls, limit=connections),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def aclose(self) -> None:
        await self.session.close()

    async def create_namespace(self, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        async with self.session.post("/api/v1/namespaces", json=body) as response:
            if response.status not in (201, 409):
                raise RuntimeError(f"namespace {name}: {response.status} {await response.text()}")
        # Every post publishes as an account: a default one per channel (issue #22).
        for account in default_accounts(name):
            url = f"/apis/herald.dev/v1alpha1/namespaces/{name}/socialaccounts"
            async with self.session.post(url, json=account) as response:
                if response.status not in (201, 409):
                    raise RuntimeError(f"account in {name}: {response.status}")

    async def _send(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        last = "no answer"
        for attempt in range(8):
            # 0.2, 0.4, ... 5 s: about 21 s in all, for an API server that stalls a while.
            backoff = min(0.2 * 2**attempt, 5.0)
            try:
                async with self.session.request(method, url, **kwargs) as response:
                    if response.status in (429, 500, 503, 504):
                        last = f"{response.status} {(await response.text())[:200]}"
                        await asyncio.sleep(backoff)
                        continue
                    if response.status >= 300:
                        text = await response.text()
                        raise RuntimeError(f"{method} {url}: {response.status} {text}")
                    result: dict[str, Any] = await response.json()
                    return result
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(backoff)
        raise RuntimeError(f"{method} {url}: gave up after retries; last: {last}")

    async def create_post(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = body["metadata"]["namespace"]
        return await self._send("POST", f"{API}/namespaces/{ns}/scheduledposts", json=body)

    async def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._send(
            "PATCH",
            f"{API}/namespaces/{namespace}/scheduledposts/{name}/status",
            data=json.dumps({"status": status}),
            headers={"Content-Type": MERGE_PATCH},
        )

    async def create_many(
        self, bodies: Iterable[dict[str, Any]], status: dict[str, Any] | None = None
    ) -> float:
        """Create posts (and set `status` on each), `concurrency` requests at a time.

        Returns the seconds it took."""
        started = time.monotonic()
        items = iter(bodies)

        async def worker() -> None:
            for body in items:  # shared iterator: each body goes to one worker
                await self.create_post(body)
                if status is not None:
                    meta = body["metadata"]
                    await self.set_status(meta["namespace"], meta["name"], status)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return time.monotonic() - started

    async def list_posts(
        self, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self._send(
                "GET", f"{API}/namespaces/{namespace}/scheduledposts", params=params
            )
            items += page["items"]
            token = page["metadata"].get("continue")
            if not token:
                return items
            params["continue"] = token

    async def record_bytes(self, namespace: str) -> float | None:
        """Mean size of the namespace's publication records as stored: etcd keeps a
        custom resource as its JSON, managedFields included (None: no records)."""
        try:
            body = await self._send("GET", f"{API}/namespaces/{namespace}/publications")
        except RuntimeError:
            return None  # a Herald without the ledger (a baseline run): no records
        items = body.get("items") or []
        if not items:
            return None
        sizes = [len(json.dumps(item, separators=(",", ":"))) for item in items]
        return sum(sizes) / len(sizes)

    async def get_post(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._send("GET", f"{API}/namespaces/{namespace}/scheduledposts/{name}")

    async def request_counts(self) -> Counter[tuple[str, str, str, str]]:
        """apiserver_request_total as {(verb, resource, subresource, code): count}."""
        async with self.session.get("/metrics") as response:
            response.raise_for_status()
            text = await response.text()
        counts: Counter[tuple[str, str, str, str]] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                key = (
                    labels.get("verb", ""),
                    labels.get("resource", ""),
                    labels.get("subresource", ""),
                    labels.get("code", ""),
                )
                counts[key] += int(sample.value)
        return counts


@dataclass
class Writes:
    """The API server's own count of the writes made between two scrapes."""

    status: int  # successful writes to scheduledposts/status
    other_post_writes: int  # successful writes to scheduledposts itself (besides creates)
    events: int  # successful Event creates/patches
    lost_cas: int  # status writes answered 409 or 422: lost compare-and-swaps
    by_key: dict[str, int]
    ledger: int = 0  # successful writes to publications (the publication ledger)

    @property
    def total(self) -> int:
        return self.status + self.other_post_writes + self.events + self.ledger

    def as_dict(self) -> dict[str, Any]:
        return {
            "status_writes": self.status,
            "other_post_writes": self.other_post_writes,
            "event_writes": self.events,
            "ledger_writes": self.ledger,
            "lost_cas": self.lost_cas,
            "total": self.total,
        }


def writes_between(
    before: Counter[tuple[str, str, str, str]],
    after: Counter[tuple[str, str, str, str]],
    *,
    ignore_post_creates: bool = True,
) -> Writes:
    status = other = events = lost = ledger = 0
    by_key: dict[str, int] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0)
        verb, resource, sub, code = key
        if delta <= 0 or verb not in WRITE_VERBS:
            continue
        by_key[" ".join(k for k in key if k)] = delta
        ok = code.startswith("2")
        if resource == "scheduledposts":
            if sub == "status":
                if ok:
                    status += delta
                elif code in ("409", "422"):
                    lost += delta
            elif ok and not (ignore_post_creates and verb == "POST"):
                other += delta
        elif resource == "events" and ok:
            events += delta
        elif resource == "publications" and ok:
            ledger += delta
    return Writes(status, other, events, lost, by_key, ledger)


def post_gets_between(
    before: Counter[tuple[str, str, str, str]], after: Counter[tuple[str, str, str, str]]
) -> int:
    """Single-post reads (GET scheduledposts/<name>) the API server answered between two
    scrapes: the operator's read before acting, the sidecar's before a callback."""
    return sum(
        value - before.get(key, 0)
        for key, value in after.items()
        if key[:3] == ("GET", "scheduledposts", "") and key[3].startswith("2")
    )


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """A Prometheus endpoint's samples as {'name{k="v",...}': value}; {} if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float | None:
    """Sum of the samples of `name` whose labels include `labels`; None if absent."""
    found = None
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            found = (found or 0.0) + value
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (VmHWM: its peak so far), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "loadavg_at_start": os.getloadavg(),
    }


async def wait_until(
    check: Any, within: float, interval: float = 0.25, what: str = "condition"
) -> float:
    """Await `check()` (sync or async) until truthy; return when (monotonic). Raises on
    timeout."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {within:.0f}s")
        await asyncio.sleep(interval)
