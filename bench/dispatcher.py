"""Benchmark: Herald's heap dispatcher against one timer task per post, same process.

Both dispatch N posts due over a few seconds through the same in-memory API-server and
n8n stand-ins (so only the scheduling differs) and report dispatch lateness (dispatch
start minus due time) and traced memory. Figures are ratios against the baseline run in
the same process: absolute numbers on a shared 2-core machine mean little.

    python bench/dispatcher.py [--posts 10000] [--spread 5]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from herald import engine
from herald.dispatcher import DispatchConfig, Dispatcher
from herald.metrics import Metrics
from herald.writer import dump_status


class MemoryKube:
    """Compare-and-swap on dicts: what the API server does, minus the network."""

    def __init__(self) -> None:
        self.rv = 0

    async def cas_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        meta = dict(obj["metadata"], resourceVersion=str(self.rv))
        return {**obj, "metadata": meta, "status": status}

    async def post_event(self, *args: Any) -> None:
        return None


class Recorder:
    def __init__(self) -> None:
        self.lateness: list[float] = []

    async def dispatch(self, target: str, body: dict[str, Any]) -> engine.Outcome:
        due = dt.datetime.fromisoformat(body["publishAt"]).timestamp()
        self.lateness.append(time.time() - due)
        return engine.Accepted()


def make_posts(n: int, spread: float, start: float) -> list[dict[str, Any]]:
    posts = []
    for i in range(n):
        due = dt.datetime.fromtimestamp(start + spread * i / n, dt.UTC)
        at = due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        status = engine.plan(engine.from_object(_obj(i, at, None)), due, engine.Defaults()).status
        assert status is not None
        posts.append(_obj(i, at, dump_status(status)))
    return posts


def _obj(i: int, at: str, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "namespace": "bench",
            "name": f"p{i}",
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {"publishAt": at, "content": {"text": "x"}},
    }
    if status:
        obj["status"] = status
    return obj


def new_dispatcher(recorder: Recorder) -> Dispatcher:
    from herald.writer import Writer

    metrics = Metrics()
    kube: Any = MemoryKube()
    config = DispatchConfig(engine.Defaults(), "bench/1", "http://cb", b"k", 64, 10, 600, 300)
    return Dispatcher(config, kube, recorder, Writer(kube, metrics, "bench"), metrics)  # type: ignore[arg-type]


async def heap_run(posts: list[dict[str, Any]], recorder: Recorder, ready: Any) -> None:
    dispatcher = new_dispatcher(recorder)
    for obj in posts:
        dispatcher.track(obj)
    ready()
    loop = asyncio.create_task(dispatcher.run())
    while len(recorder.lateness) < len(posts):  # noqa: ASYNC110 - a benchmark's poll
        await asyncio.sleep(0.05)
    loop.cancel()
    await dispatcher.stop()


async def timers_run(posts: list[dict[str, Any]], recorder: Recorder, ready: Any) -> None:
    """The baseline: one sleeping task per post, as per-object timers would be, each
    then doing exactly the dispatcher's work for that post."""
    dispatcher = new_dispatcher(recorder)

    async def one(obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        dispatcher._objects[uid] = obj
        due = dt.datetime.fromisoformat(obj["spec"]["publishAt"]).timestamp()
        await asyncio.sleep(max(0.0, due - time.time()))
        dispatcher._busy.add(uid)
        await dispatcher._process(uid)

    tasks = [asyncio.create_task(one(obj)) for obj in posts]
    await asyncio.sleep(0)
    ready()
    await asyncio.gather(*tasks)
    await dispatcher.stop()


def measure(name: str, runner: Any, n: int, spread: float) -> dict[str, float]:
    # Memory held while waiting, with tracemalloc, in a run of its own (tracing slows
    # allocation-heavy code down too much to time anything under it).
    posts = make_posts(n, spread, time.time() + 1.0)
    held: list[float] = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    asyncio.run(
        runner(posts, Recorder(), lambda: held.append(tracemalloc.get_traced_memory()[0] - base))
    )
    tracemalloc.stop()

    posts = make_posts(n, spread, time.time() + 2.0)
    recorder = Recorder()
    cpu = time.process_time()
    asyncio.run(runner(posts, recorder, lambda: None))
    cpu = time.process_time() - cpu
    late = sorted(recorder.lateness)
    result = {
        "p50_ms": statistics.median(late) * 1000,
        "p99_ms": late[int(len(late) * 0.99) - 1] * 1000,
        "held_mib": held[0] / 2**20,
        "cpu_s": cpu,
    }
    print(
        f"{name:>8}: lateness p50 {result['p50_ms']:8.2f} ms, p99 {result['p99_ms']:8.2f} ms; "
        f"memory held while waiting {result['held_mib']:6.2f} MiB; CPU {cpu:5.2f} s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=10000)
    parser.add_argument("--spread", type=float, default=20.0)
    args = parser.parse_args()
    print(f"{args.posts} posts due over {args.spread:g} s, same process, same stand-ins")
    base = measure("timers", timers_run, args.posts, args.spread)
    heap = measure("heap", heap_run, args.posts, args.spread)
    print(
        f"ratios heap/timers: p50 {heap['p50_ms'] / base['p50_ms']:.2f}, "
        f"p99 {heap['p99_ms'] / base['p99_ms']:.2f}, "
        f"memory {heap['held_mib'] / base['held_mib']:.2f}, "
        f"CPU {heap['cpu_s'] / base['cpu_s']:.2f}"
    )


if __name__ == "__main__":
    main()
