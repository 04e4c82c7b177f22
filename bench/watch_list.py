"""The operator's initial list, three ways, on a real API server: one response, in pages
(`HERALD_WATCH_CHUNK_SIZE`, kopf's `settings.watching.chunk_size`), or as a watch stream
(`HERALD_WATCH_INITIAL_STREAMING`, `sendInitialEvents`).

    python bench/watch_list.py --posts 5000 [--chunk 500] [--out DIR]

N live posts a day ahead, each with the status the operator left on the first one, then
for each mode a fresh `herald run`: seconds from start until its herald_posts gauge counts
all N, RSS then, and peak RSS (VmHWM). Prints one JSON line
per mode. The modes take turns on the same posts and API server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.controlplane import ControlPlane, free_port
from tests.support.herald_proc import start_operator

from bench.common import Api, post_body, rss_mib, wait_until
from bench.scenarios import CRD, FAR, operator_knows


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(
    cp: ControlPlane, ns: str, n: int, workdir: Path, **settings: Any
) -> dict[str, Any]:
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    started = time.monotonic()
    proc = await asyncio.to_thread(
        start_operator,
        cp.kubeconfig,
        "http://127.0.0.1:1/unused",
        workdir / f"operator-{settings.get('watch_chunk_size', 't')}-{time.monotonic_ns()}.log",
        namespaces=json.dumps([ns]),
        metrics_port=port,
        history_sweep_seconds=3600,
        **settings,
    )
    try:
        assert proc.proc is not None

        at = await wait_until(lambda: operator_knows(metrics, ns, n), 600, 0.2, "all known")
        return {
            "settings": settings,
            "known_after_start_s": round(at - started, 2),
            "rss_mib": round(rss_mib(proc.proc.pid), 1),
            "peak_rss_mib": round(peak_rss_mib(proc.proc.pid), 1),
        }
    finally:
        await asyncio.to_thread(proc.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="herald-watch-list-"))
    with ControlPlane(workdir=workdir / "cp") as cp:
        cp.kubectl("apply", "-f", str(CRD.parent))
        for crd in ("scheduledposts.herald.dev", "publications.herald.dev"):
            cp.wait_established(crd)
        api = Api(cp, concurrency=64)
        ns = "watch-list"
        await api.create_namespace(ns)
        far = time.time() + FAR
        # The first post's status, as the operator leaves it (Pending: the CRD's default,
        # unwritten), is the template for the rest.
        await api.create_post(post_body(ns, "template", far))
        logs = workdir / "logs"
        logs.mkdir()
        await measure(cp, ns, 1, logs)
        template = (await api.get_post(ns, "template"))["status"]
        took = await api.create_many(
            (post_body(ns, f"live{i:06d}", far) for i in range(args.posts - 1)), status=template
        )
        print(f"# {args.posts} Scheduled posts created in {took:.1f}s", flush=True)
        modes: list[dict[str, Any]] = [
            {"watch_chunk_size": 0},  # one response
            {"watch_chunk_size": args.chunk},
            {"watch_chunk_size": 0, "watch_initial_streaming": "true"},
        ]
        for _ in range(args.rounds):
            for mode in modes:
                print(json.dumps(await measure(cp, ns, args.posts, logs, **mode)), flush=True)
        await api.aclose()


if __name__ == "__main__":
    asyncio.run(main())
