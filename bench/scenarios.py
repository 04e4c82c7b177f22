"""The benchmark's scenarios, each against the real API server and real Herald processes.

Every scenario gets fresh namespaces (the history scenario its own control plane, so its
100k objects burden nothing else) and starts its own `herald run` / `herald
callback-server` subprocesses, stopped when it ends. Nothing here reaches into the
operator's code: what is measured is whatever `herald run` does, seen from outside
through the fake n8n's arrival times, the API server's `apiserver_request_total`, the
processes' own /metrics, and /proc.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.support.controlplane import REPO, ControlPlane, free_port
from tests.support.herald_proc import HeraldProcess, herald_env, start_operator

from bench.common import (
    API,
    JSON_PATCH,
    Api,
    cpu_seconds,
    metric_sum,
    parse_time,
    post_body,
    post_gets_between,
    rss_mib,
    scrape,
    summary,
    wait_until,
    writes_between,
)
from bench.fake_n8n import FakeN8nProcess
from herald.kube import Connection, KubeClient, KubeError

CRD = REPO / "crds" / "scheduledposts.herald.dev.yaml"
FAR = 86400.0  # "in the future": a day ahead


@dataclass
class Sizes:
    """Every scenario's size; the defaults are the full benchmark."""

    concurrency: int = 16  # the operator's dispatch concurrency (its default)
    ceiling_seconds: float = 20.0  # how long to hammer status writes
    ceiling_posts: int = 500  # posts published to count writes per post
    precision_posts: int = 1000
    precision_spread: float = 60.0
    seed_interval: float = 60.0  # the seed's cron period
    seed_batch: int = 5  # the seed's dispatch concurrency
    burst_posts: int = 2000
    idle_posts: int = 20000
    idle_window: float = 60.0  # seconds over which idle CPU is averaged
    history_finished: int = 100000
    history_live: int = 1000
    tenants_a: int = 5000
    tenants_b: int = 1
    replicas_posts: int = 2000
    # Posts due "at once" are created this long before they are due, so that the operator
    # has taken them all in (written their first status) by then: lead_base + n / intake_rate
    # seconds, unless `lead` is given. The "before" operator takes in ~15 posts/s on the
    # shared 2-core machine; the figures say (known_before_due_s < 0) when it was too short.
    lead: float | None = None
    lead_base: float = 6.0
    intake_rate: float = 10.0
    timeout: float = 600.0  # per wait


QUICK = Sizes(
    ceiling_seconds=2.0,
    ceiling_posts=15,
    precision_posts=24,
    precision_spread=5.0,
    seed_interval=5.0,
    burst_posts=40,
    idle_posts=100,
    idle_window=3.0,
    history_finished=200,
    history_live=10,
    tenants_a=40,
    replicas_posts=40,
    lead_base=3.0,
    intake_rate=15.0,
    timeout=90.0,
)

Result = dict[str, Any]
ROLES = {"run": "operator", "callback-server": "sidecar"}
PY_SPY = [str(Path(sys.executable).with_name("py-spy"))]
"""py-spy from the `profile` extra, next to the interpreter running the benchmark."""
PROFILE_RATE = 50  # samples/s: enough for a flame graph of a burst, cheap to take


@dataclass
class Usage:
    """CPU seconds (user + system, /proc/<pid>/stat) and new API-server connections
    (herald_kube_connections_total{kind}) of the Herald processes at one moment, by role;
    the operators of a multi-replica scenario are summed."""

    cpu: dict[str, float]
    connections: dict[str, dict[str, float]]

    def per_post(self, before: Usage, posts: int) -> dict[str, dict[str, float | None]]:
        """From `before` to this one, for `posts` published posts: per role, CPU ms per
        post and the new TCP connections / TLS handshakes (total and per post)."""
        out: dict[str, dict[str, float | None]] = {}
        for role, cpu in self.cpu.items():
            if role not in before.cpu:
                continue
            d = {
                k: v - before.connections.get(role, {}).get(k, 0.0)
                for k, v in self.connections.get(role, {}).items()
            }
            out[role] = {
                "cpu_s": round(cpu - before.cpu[role], 3),
                "cpu_ms_per_post": round(1000 * (cpu - before.cpu[role]) / posts, 3)
                if posts
                else None,
                "tcp_connections": d.get("tcp"),
                "tls_handshakes": d.get("tls"),
                "tls_handshakes_per_post": round(d["tls"] / posts, 4)
                if posts and "tls" in d
                else None,
            }
        return out


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress, so a long full run shows where it is."""
    print(f"  [{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


@dataclass
class Bench:
    """One control plane, the fake n8n, and the processes a scenario starts."""

    cp: ControlPlane
    n8n: FakeN8nProcess
    workdir: Path
    sizes: Sizes
    api: Api = field(init=False)
    procs: list[HeraldProcess] = field(default_factory=list)
    metrics_of: dict[int, str] = field(default_factory=dict)  # id(proc) -> its /metrics URL
    profile_dir: Path | None = None  # `--profile`: py-spy flame graphs of the burst here
    # `--set KEY=VALUE`: Herald settings (HERALD_<KEY>) for every operator started here.
    operator_settings: dict[str, str] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.api = Api(self.cp)

    async def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{next(self._names)}-{uuid.uuid4().hex[:5]}"
        await self.api.create_namespace(name)
        return name

    async def herald(self, namespaces: list[str], replicas: int = 1) -> tuple[str, list[str]]:
        """Start the callback sidecar and `replicas` operators side by side; return the
        sidecar's base URL and the operators' /metrics URLs once all are up."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = herald_env(
            self.cp.kubeconfig,
            "http://127.0.0.1:1/unused",
            callback_port=port,
            callback_host="127.0.0.1",
        )
        log = self.workdir / f"sidecar-{len(self.procs)}.log"
        side = HeraldProcess("callback-server", env, log).start()
        self.procs.append(side)
        self.metrics_of[id(side)] = f"{base}/metrics"
        operators = await asyncio.gather(
            *(self.operator(namespaces, base, f"bench-replica-{r}") for r in range(replicas))
        )

        def healthy() -> bool:
            if side.proc is not None and side.proc.poll() is not None:
                raise RuntimeError(f"callback-server exited:\n{side.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        await wait_until(lambda: asyncio.to_thread(healthy), 60, 0.1, "callback-server up")
        return base, [url for _, url in operators]

    async def operator(
        self, namespaces: list[str], callback: str, identity: str = "bench-operator"
    ) -> tuple[HeraldProcess, str]:
        """Start `herald run`; returns it and its /metrics URL once it is up."""
        port = free_port()
        log = self.workdir / f"operator-{len(self.procs)}.log"
        proc = await asyncio.to_thread(
            start_operator,
            self.cp.kubeconfig,
            self.n8n.url,
            log,
            callback_url=callback,
            namespaces=json.dumps(namespaces),
            metrics_port=port,
            identity=identity,
            **{"concurrency": str(self.sizes.concurrency), **self.operator_settings},
        )
        self.procs.append(proc)
        self.metrics_of[id(proc)] = f"http://127.0.0.1:{port}/metrics"
        return proc, f"http://127.0.0.1:{port}/metrics"

    async def stop_all(self) -> None:
        for proc in self.procs:
            await asyncio.to_thread(proc.stop)
        self.procs.clear()
        self.metrics_of.clear()

    async def usage(self) -> Usage:
        """What the running Herald processes have used so far, by role."""
        cpu: dict[str, float] = {}
        conns: dict[str, dict[str, float]] = {}
        for proc in self.procs:
            if proc.proc is None or proc.proc.poll() is not None:
                continue
            role = ROLES[proc.command]
            cpu[role] = cpu.get(role, 0.0) + cpu_seconds(proc.proc.pid)
            samples = await asyncio.to_thread(scrape, self.metrics_of[id(proc)])
            mine = conns.setdefault(role, {})
            for kind in ("tcp", "tls"):
                got = metric_sum(samples, "herald_kube_connections_total", kind=kind)
                mine[kind] = mine.get(kind, 0.0) + (got or 0.0)
        return Usage(cpu, conns)

    def start_profiles(self, label: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
        """py-spy on every running Herald process until `stop_profiles`: one flame graph
        (SVG) per process in `profile_dir`, named `<label>-<role>.svg`. --nonblocking: the
        processes are sampled without being paused, so the profile does not slow them."""
        if self.profile_dir is None:
            return []
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        spies = []
        for proc in self.procs:
            if proc.proc is None or proc.proc.poll() is not None:
                continue
            svg = self.profile_dir / f"{label}-{ROLES[proc.command]}.svg"
            log = (self.workdir / f"py-spy-{ROLES[proc.command]}.log").open("ab")
            spy = subprocess.Popen(
                [
                    *PY_SPY,
                    "record",
                    "--pid",
                    str(proc.proc.pid),
                    "--rate",
                    str(PROFILE_RATE),
                    "--nonblocking",
                    "--format",
                    "flamegraph",
                    "--output",
                    str(svg),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            spies.append((spy, svg))
        return spies

    @staticmethod
    async def stop_profiles(spies: list[tuple[subprocess.Popen[bytes], Path]]) -> list[str]:
        """Stop py-spy as Ctrl-C would (it then writes its flame graph); the SVGs' paths."""
        for spy, _ in spies:
            spy.send_signal(signal.SIGINT)
        written = []
        for spy, svg in spies:
            try:
                await asyncio.to_thread(spy.wait, 60)
            except subprocess.TimeoutExpired:
                spy.kill()
                await asyncio.to_thread(spy.wait)
            if svg.exists():
                written.append(str(svg))
        return written

    def lead(self, posts: int) -> float:
        """Time to create `posts` and let the operator take them in before they are due."""
        if self.sizes.lead is not None:
            return self.sizes.lead
        return self.sizes.lead_base + posts / self.sizes.intake_rate

    def timeout(self, extra: float = 0.0) -> float:
        return self.sizes.timeout + extra


# --- shared steps ----------------------------------------------------------------------


async def _n8n_unique(bench: Bench, namespace: str) -> int:
    stats = await asyncio.to_thread(bench.n8n.stats, namespace)
    return int(stats["unique"])


def _first_arrivals(records: list[list[Any]]) -> dict[str, tuple[float, float]]:
    """name -> (first arrival, publishAt)."""
    first: dict[str, tuple[float, float]] = {}
    for at, name, publish_at, _attempt in records:
        if name not in first or at < first[name][0]:
            first[name] = (at, parse_time(publish_at))
    return first


def _published(urls: list[str]) -> float:
    """herald_published_total summed over the operators and sidecars."""
    total = 0.0
    for url in urls:
        total += metric_sum(scrape(url), "herald_published_total") or 0.0
    return total


async def operator_knows(
    metrics_url: str, namespace: str, count: int, *, published: bool = True
) -> bool:
    """True once the operator's herald_posts gauge counts `count` posts in `namespace`:
    it has seen and planned them. A new post stays Pending (the CRD's default) until its
    claim writes it, so Pending counts (before issue 17 item 4 it meant "not accepted
    yet": runs of older code use that code's bench). `published=False` leaves out the
    Published ones, which the history sweep counts, not the watch."""
    samples = await asyncio.to_thread(scrape, metrics_url)
    seen = metric_sum(samples, "herald_posts", namespace=namespace)
    if seen is None:
        # Nothing counted yet. (Not the objects' phases instead: every post shows one,
        # Pending, from the moment it is created.)
        return False
    if not published:
        done = metric_sum(samples, "herald_posts", namespace=namespace, phase="Published")
        seen -= done or 0.0
    return seen >= count


async def _create_due_at(
    bench: Bench, namespace: str, count: int, due: Callable[[int], float], prefix: str = "p"
) -> float:
    bodies = (post_body(namespace, f"{prefix}{i:06d}", due(i)) for i in range(count))
    return await bench.api.create_many(bodies)


async def _all_due_together(
    bench: Bench,
    groups: list[tuple[str, int]],
    metrics_urls: list[str],
    publish_urls: list[str],
    profile: str | None = None,
) -> Result:
    """Create every group's posts due at one instant T, once the operators are up, and
    wait until n8n has them all and all are Published. Times are from T."""
    total = sum(n for _, n in groups)
    before = await bench.api.request_counts()
    used_at_start = await bench.usage()
    due_at = time.time() + bench.lead(total)
    created_in = 0.0
    say(f"creating {total} posts due in {due_at - time.time():.0f}s")
    for namespace, count in groups:
        created_in += await _create_due_at(bench, namespace, count, lambda _i: due_at)
    say(f"created in {created_in:.1f}s; waiting for the operator to take them in")
    known_at = None
    try:
        for namespace, count in groups:
            await wait_until(
                lambda ns=namespace, n=count: operator_knows(metrics_urls[0], ns, n),
                within=max(0.0, due_at - time.time()) + 1,
                interval=0.5,
                what="operator knows every post",
            )
        known_at = time.time()
    except TimeoutError:
        pass
    published_before = _published(publish_urls)
    used_at_due = await bench.usage()
    spies = bench.start_profiles(profile) if profile else []
    say(f"known {'%.1fs before due' % (due_at - known_at) if known_at else 'NOT before due'}")

    async def all_at_n8n() -> bool:
        for namespace, count in groups:
            if await _n8n_unique(bench, namespace) < count:
                return False
        return True

    await wait_until(all_at_n8n, bench.timeout(bench.lead(total)), 0.2, "all posts at n8n")
    say(f"all at n8n {time.time() - due_at:.1f}s after due")
    await wait_until(
        lambda: _published(publish_urls) - published_before >= total or None,
        bench.timeout(),
        0.2,
        "all posts Published",
    )
    published_at = time.time()
    used_at_end = await bench.usage()
    profiles = await bench.stop_profiles(spies)
    say(f"all Published {published_at - due_at:.1f}s after due")
    await asyncio.sleep(1.0)  # let the last Events land
    after = await bench.api.request_counts()
    arrivals = {
        ns: _first_arrivals(await asyncio.to_thread(bench.n8n.records, ns)) for ns, _ in groups
    }
    received = {ns: len(await asyncio.to_thread(bench.n8n.records, ns)) for ns, _ in groups}
    last_arrival = max(at for per in arrivals.values() for at, _ in per.values())
    writes = writes_between(before, after)
    return {
        "due_at": due_at,
        "created_in_s": round(created_in, 2),
        "known_before_due_s": None if known_at is None else round(due_at - known_at, 2),
        "all_at_n8n_s": round(last_arrival - due_at, 3),
        "all_published_s": round(published_at - due_at, 3),
        "arrivals": arrivals,
        "duplicates_at_n8n": sum(received.values()) - sum(len(a) for a in arrivals.values()),
        "writes": writes.as_dict(),
        "writes_per_post": round(writes.total / total, 2),
        "writes_by_request": writes.by_key,
        "post_gets_per_post": round(post_gets_between(before, after) / total, 2),
        # From before the posts were created until all were Published: intake and burst.
        "per_post": used_at_end.per_post(used_at_start, total),
        # From when the operator knew every post (usually well before the due second)
        # until all were Published: the claims and the burst, without the intake.
        "burst_per_post": used_at_end.per_post(used_at_due, total),
        "profiles": profiles,
    }


def _conflicts(urls: list[str]) -> dict[str, float]:
    return {url: metric_sum(scrape(url), "herald_claim_conflicts_total") or 0.0 for url in urls}


# --- scenarios -------------------------------------------------------------------------


class _Patcher:
    """One status JSON patch, sent with aiohttp (raw), httpx (raw; the operator's client
    for the API server until issue 17, and still its client for n8n) or `herald.kube`'s
    KubeClient (the operator's and the sidecar's client for the API server)."""

    def __init__(self, bench: Bench, library: str, connections: int) -> None:
        self.library = library
        self.aio = bench.api.new_session(connections) if library == "aiohttp" else None
        self.kube = (
            KubeClient(
                Connection(server=bench.api.server, tls=bench.api.tls),
                timeout=30,
                max_connections=connections,
            )
            if library == "herald"
            else None
        )
        self.hx = (
            httpx.AsyncClient(
                base_url=bench.api.server,
                verify=bench.api.tls,
                timeout=30,
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
            )
            if library == "httpx"
            else None
        )

    async def patch(self, url: str, ops: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(ops)
        headers = {"Content-Type": JSON_PATCH}
        if self.aio is not None:
            async with self.aio.patch(url, data=data, headers=headers) as response:
                return response.status, await response.json()
        if self.kube is not None:
            try:
                reply = await self.kube._request(
                    "PATCH", url, "ceiling", body=ops, content_type=JSON_PATCH
                )
            except KubeError:
                return 422, {}
            return reply.status, reply.json()
        assert self.hx is not None
        reply = await self.hx.patch(url, content=data, headers=headers)
        return reply.status_code, reply.json()

    async def aclose(self) -> None:
        if self.aio is not None:
            await self.aio.close()
        if self.hx is not None:
            await self.hx.aclose()
        if self.kube is not None:
            await self.kube.aclose()


async def _hammer(
    bench: Bench, ns: str, names: list[str], uids: dict[str, str], library: str
) -> dict[str, Any]:
    """Compare-and-swap status writes as fast as `concurrency` workers can, for a while.

    Each write has the shape of the operator's: test the uid and the whole old status,
    then replace it."""
    workers = bench.sizes.concurrency
    patcher = _Patcher(bench, library, workers)
    done = failed = 0
    status: dict[str, Any] = {}
    async with bench.api.session.get(f"{API}/namespaces/{ns}/scheduledposts") as response:
        for item in (await response.json())["items"]:
            status[item["metadata"]["name"]] = item.get("status")
    deadline = time.monotonic() + bench.sizes.ceiling_seconds

    async def worker(index: int) -> None:
        nonlocal done, failed
        mine = names[index::workers]
        i = 0
        while time.monotonic() < deadline:
            name = mine[i % len(mine)]
            new = {"phase": "Suspended", "attempt": 0, "message": f"{library} write {i}"}
            code, body = await patcher.patch(
                f"{API}/namespaces/{ns}/scheduledposts/{name}/status",
                [
                    {"op": "test", "path": "/metadata/uid", "value": uids[name]},
                    {"op": "test", "path": "/status", "value": status[name]},
                    {"op": "add", "path": "/status", "value": new},
                ],
            )
            if code == 200:
                done += 1
                status[name] = body["status"]
            else:
                failed += 1
            i += 1

    started = time.monotonic()
    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(worker(i) for i in range(workers)))
    finally:
        cpu = time.process_time() - cpu_before
        await patcher.aclose()
    elapsed = time.monotonic() - started
    return {
        "writes": done,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "writes_per_s": round(done / elapsed, 1),
        # The bench process's CPU (all threads) per write: the client library's cost, in
        # the same process and the same session as the other libraries'.
        "client_cpu_ms_per_write": round(1000 * cpu / done, 3) if done else None,
    }


async def ceiling(bench: Bench) -> Result:
    """Raw JSON-patch status writes/s at the operator's concurrency, and writes per post."""
    sizes = bench.sizes
    ns = await bench.namespace("ceiling")
    workers = sizes.concurrency
    far = time.time() + FAR
    bodies = [post_body(ns, f"w{i:04d}", far, suspend=True) for i in range(workers * 4)]
    uids = {}
    for body in bodies:
        uids[body["metadata"]["name"]] = (await bench.api.create_post(body))["metadata"]["uid"]
    names = sorted(uids)
    raw = await _hammer(bench, ns, names, uids, "aiohttp")
    say(f"raw: {raw['writes_per_s']} status writes/s")
    with_httpx = await _hammer(bench, ns, names, uids, "httpx")
    say(f"httpx: {with_httpx['writes_per_s']} status writes/s")
    with_herald = await _hammer(bench, ns, names, uids, "herald")
    say(f"herald.kube: {with_herald['writes_per_s']} status writes/s")

    # Writes per published post: the real processes publish a small batch.
    ns2 = await bench.namespace("wpp")
    side, metrics = await bench.herald([ns2])
    got = await _all_due_together(
        bench, [(ns2, sizes.ceiling_posts)], metrics, [*metrics, side + "/metrics"]
    )
    await bench.stop_all()
    wpp = got["writes_per_post"]
    return {
        "concurrency": workers,
        "status_writes_per_s": raw["writes_per_s"],
        "raw_aiohttp": raw,
        "httpx_status_writes_per_s": with_httpx["writes_per_s"],
        "httpx": with_httpx,
        "herald_status_writes_per_s": with_herald["writes_per_s"],
        "herald": with_herald,
        "published_posts": sizes.ceiling_posts,
        "writes_per_post": wpp,
        "writes": got["writes"],
        "writes_by_request": got["writes_by_request"],
        "ideal_posts_per_s": round(raw["writes_per_s"] / wpp, 1) if wpp else None,
    }


def _lateness(arrivals: dict[str, tuple[float, float]]) -> list[float]:
    return [at - due for at, due in arrivals.values()]


async def _spread_run(
    bench: Bench, ns: str, *, wait_extra: float, publish_urls: list[str] | None = None
) -> tuple[list[float], float, dict[str, Any]]:
    """Posts due one after another over the spread; their lateness at n8n, the seconds
    their creation took, and (with `publish_urls`, Herald's /metrics) what Herald's
    processes used per post until every post was Published."""
    sizes = bench.sizes
    n, spread = sizes.precision_posts, sizes.precision_spread
    used_at_start = await bench.usage()
    start = time.time() + bench.lead(n)
    say(f"creating {n} posts due over {spread:.0f}s from {start - time.time():.0f}s on")
    created = await _create_due_at(bench, ns, n, lambda i: start + spread * i / n)
    await wait_until(
        lambda: _wait_count(bench, ns, n),
        bench.timeout(bench.lead(n) + spread + wait_extra),
        0.5,
        f"{n} posts at n8n",
    )
    arrivals = _first_arrivals(await asyncio.to_thread(bench.n8n.records, ns))
    per_post: dict[str, Any] = {}
    if publish_urls:
        await wait_until(
            lambda: _published(publish_urls) >= n or None,
            bench.timeout(),
            0.2,
            "all posts Published",
        )
        per_post = (await bench.usage()).per_post(used_at_start, n)
    return _lateness(arrivals), created, per_post


async def _wait_count(bench: Bench, ns: str, n: int) -> bool:
    return await _n8n_unique(bench, ns) >= n


async def precision(bench: Bench) -> Result:
    """Posts spread over a minute: lateness at n8n; the seed's poller on the same load."""
    sizes = bench.sizes
    ns = await bench.namespace("precision")
    side, metrics = await bench.herald([ns])
    herald, created, per_post = await _spread_run(
        bench, ns, wait_extra=60, publish_urls=[*metrics, side + "/metrics"]
    )
    await bench.stop_all()
    say("Herald done; now the seed's poller")

    ns_seed = await bench.namespace("seed")
    with (bench.workdir / "seed-poller.log").open("ab") as log:
        seed = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("seed_poller.py")),
            f"--server={bench.api.server}",
            f"--ca={bench.api.ca_file}",
            f"--cert={bench.api.pem}",
            f"--namespace={ns_seed}",
            f"--webhook={bench.n8n.url}",
            f"--interval={sizes.seed_interval}",
            f"--batch={sizes.seed_batch}",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait = 2 * sizes.seed_interval + 60
            seed_lateness, _, _ = await _spread_run(bench, ns_seed, wait_extra=wait)
        finally:
            seed.terminate()
            await asyncio.wait_for(seed.wait(), 10)
    mine, theirs = summary(herald), summary(seed_lateness)
    ratios = {
        k: (round(mine[k] / theirs[k], 4) if mine[k] is not None and theirs[k] else None)  # type: ignore[operator]
        for k in ("p50", "p99", "max")
    }
    return {
        "posts": sizes.precision_posts,
        "spread_s": sizes.precision_spread,
        "created_in_s": round(created, 2),
        "herald_lateness_s": _rounded(mine),
        "seed_lateness_s": _rounded(theirs),
        "herald_vs_seed": ratios,
        "seed_design": {"interval_s": sizes.seed_interval, "batch": sizes.seed_batch},
        "per_post": per_post,
        "samples": {"herald": sorted(herald), "seed": sorted(seed_lateness)},
    }


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


async def burst(bench: Bench, replicas: int = 1) -> Result:
    """N posts due in the same second: how long until n8n has them and they are Published."""
    n = bench.sizes.replicas_posts if replicas > 1 else bench.sizes.burst_posts
    ns = await bench.namespace("burst" if replicas == 1 else "replicas")
    side, metrics = await bench.herald([ns], replicas)
    publish_urls = [*metrics, side + "/metrics"]
    got = await _all_due_together(
        bench, [(ns, n)], metrics, publish_urls, profile=f"burst-{n}" if replicas == 1 else None
    )
    conflicts = _conflicts(publish_urls)
    record_bytes = await bench.api.record_bytes(ns)
    peaks: dict[str, list[float]] = {}
    for proc in bench.procs:
        if proc.proc is not None and proc.proc.poll() is None:
            peaks.setdefault(ROLES[proc.command], []).append(rss_mib(proc.proc.pid, "VmHWM"))
    await bench.stop_all()
    lateness = _lateness(got["arrivals"][ns])
    return {
        "posts": n,
        "bytes_per_record": None if record_bytes is None else round(record_bytes),
        "peak_rss_mib": {role: round(max(values), 1) for role, values in peaks.items()},
        "replicas": replicas,
        "created_in_s": got["created_in_s"],
        "known_before_due_s": got["known_before_due_s"],
        "all_at_n8n_s": got["all_at_n8n_s"],
        "all_published_s": got["all_published_s"],
        "n8n_posts_per_s": round(n / max(got["all_at_n8n_s"], 1e-3), 1),
        "published_posts_per_s": round(n / max(got["all_published_s"], 1e-3), 1),
        "lateness_s": _rounded(summary(lateness)),
        "duplicates_at_n8n": got["duplicates_at_n8n"],
        "writes_per_post": got["writes_per_post"],
        "writes": got["writes"],
        "writes_by_request": got["writes_by_request"],
        "post_gets_per_post": got["post_gets_per_post"],
        "lost_cas_apiserver": got["writes"]["lost_cas"],
        "claim_conflicts_herald": sum(conflicts.values()),
        "per_post": got["per_post"],
        "burst_per_post": got["burst_per_post"],
        "profiles": got["profiles"],
    }


async def two_replicas(bench: Bench) -> Result:
    return await burst(bench, replicas=2)


async def tenants(bench: Bench) -> Result:
    """A big tenant's burst must not delay a small tenant's post due at the same time."""
    sizes = bench.sizes
    a, b = await bench.namespace("tenant-a"), await bench.namespace("tenant-b")
    side, metrics = await bench.herald([a, b])
    got = await _all_due_together(
        bench, [(a, sizes.tenants_a), (b, sizes.tenants_b)], metrics, [*metrics, side + "/metrics"]
    )
    await bench.stop_all()
    late_a = _lateness(got["arrivals"][a])
    late_b = _lateness(got["arrivals"][b])
    order = sorted([(at, ns) for ns in (a, b) for at, _ in got["arrivals"][ns].values()])
    first_b = next(i for i, (_, ns) in enumerate(order) if ns == b)
    return {
        "posts_a": sizes.tenants_a,
        "posts_b": sizes.tenants_b,
        "known_before_due_s": got["known_before_due_s"],
        "b_lateness_s": _rounded(summary(late_b)),
        "a_lateness_s": _rounded(summary(late_a)),
        "b_first_arrival_rank": first_b + 1,
        "all_published_s": got["all_published_s"],
    }


async def idle(bench: Bench) -> Result:
    """Many posts due later: how fast the operator takes them in, and what it costs idle."""
    sizes = bench.sizes
    n = sizes.idle_posts
    ns = await bench.namespace("idle")
    far = time.time() + FAR
    created = await _create_due_at(bench, ns, n, lambda _i: far)
    say(f"{n} posts created in {created:.1f}s; starting the operator")
    started = time.monotonic()
    proc, metrics = await bench.operator([ns], "http://127.0.0.1:1")
    assert proc.proc is not None
    pid = proc.proc.pid
    known = await wait_until(
        lambda: operator_knows(metrics, ns, n), bench.timeout(n * 0.05), 0.5, "all posts known"
    )
    rss_known = rss_mib(pid)
    say(f"all known {known - started:.1f}s after start; measuring idle CPU")
    spies = bench.start_profiles(f"idle-{n}")  # `--profile`: what the idle CPU is
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(sizes.idle_window)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    rss = rss_mib(pid)
    await bench.stop_profiles(spies)
    await bench.stop_all()
    return {
        "posts": n,
        "setup_s": round(created, 1),
        "known_after_start_s": round(known - started, 2),
        "idle_cpu_pct_of_core": round(cpu * 100, 2),
        "idle_window_s": sizes.idle_window,
        "rss_mib_when_known": round(rss_known, 1),
        "rss_mib_after_idle": round(rss, 1),
    }


async def history(bench: Bench) -> Result:
    """Many finished posts and a few live ones: start-up time and memory."""
    sizes = bench.sizes
    ns = await bench.namespace("history")
    # A real Published status, made by the real processes, is the template for the rest.
    await bench.herald([ns])
    await bench.api.create_post(post_body(ns, "template", time.time()))
    await wait_until(
        lambda: _status_phase(bench, ns, "template", "Published"), 60, 0.2, "template Published"
    )
    template = (await bench.api.get_post(ns, "template"))["status"]
    await bench.stop_all()
    say(f"creating {sizes.history_finished} Published + {sizes.history_live} live posts")

    f, live = sizes.history_finished, sizes.history_live
    far = time.time() + FAR
    t0 = time.monotonic()
    bench.api.concurrency = 64
    finished_in = await bench.api.create_many(
        (post_body(ns, f"done{i:07d}", time.time() - 3600) for i in range(f)), status=template
    )
    live_in = await _create_due_at(bench, ns, live, lambda _i: far, prefix="live")
    setup = time.monotonic() - t0
    say(f"setup {setup:.1f}s ({f / finished_in:.0f} finished posts/s); starting the operator")
    before = await bench.api.request_counts()
    started = time.monotonic()
    proc, metrics = await bench.operator([ns], "http://127.0.0.1:1")
    assert proc.proc is not None
    pid = proc.proc.pid
    total = f + live + 1
    live_known = await wait_until(
        lambda: operator_knows(metrics, ns, live, published=False),
        bench.timeout(total * 0.01),
        0.5,
        "live posts known",
    )
    all_known = await wait_until(
        lambda: operator_knows(metrics, ns, total), bench.timeout(total * 0.01), 0.5, "all known"
    )
    rss_known = rss_mib(pid)
    say(f"live known {live_known - started:.1f}s, all {all_known - started:.1f}s after start")
    cpu0, c0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(min(10.0, sizes.idle_window))
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - c0)
    rss = rss_mib(pid)
    after = await bench.api.request_counts()
    await bench.stop_all()
    writes = writes_between(before, after)
    return {
        "finished": f,
        "live": live,
        "setup_s": round(setup, 1),
        "setup_finished_posts_per_s": round(f / finished_in, 1) if finished_in else None,
        "setup_live_s": round(live_in, 2),
        "live_known_after_start_s": round(live_known - started, 2),
        "all_known_after_start_s": round(all_known - started, 2),
        "rss_mib_when_known": round(rss_known, 1),
        "rss_mib_settled": round(rss, 1),
        "cpu_pct_of_core_settled": round(cpu * 100, 2),
        "operator_writes_at_startup": writes.as_dict(),
    }


async def _status_phase(bench: Bench, ns: str, name: str, phase: str) -> bool:
    obj = await bench.api.get_post(ns, name)
    return (obj.get("status") or {}).get("phase") == phase


Scenario = Callable[[Bench], Awaitable[Result]]
SCENARIOS: dict[str, Scenario] = {
    "ceiling": ceiling,
    "precision": precision,
    "burst": burst,
    "tenants": tenants,
    "two_replicas": two_replicas,
    "idle": idle,
    "history": history,
}
OWN_CONTROL_PLANE = frozenset({"history"})


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
