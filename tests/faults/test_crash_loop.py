"""Crash loop: the operator is SIGKILLed at random moments (seeded) during a burst and
comes back with the same identity (a pod's container restarting). Nothing is lost,
nothing is sent twice.

Default size: 300 posts due over 30 s and 10 kills, to stay near 3 minutes on a loaded
2-core machine; the issue's 500-post burst is HERALD_FAULTS_CRASH_POSTS=500
HERALD_FAULTS_CRASH_SPREAD_SECONDS=40.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.faults import create_posts

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SEED = 20261130


@pytest.mark.timeout(300)
def test_sigkill_loop_during_burst(herald: Herald, n8n: StartN8n, report: Report) -> None:
    posts = size("crash_posts", 300)
    kills = size("crash_kills", 10)
    spread = size("crash_spread_seconds", 30)
    rng = random.Random(SEED)
    fake = n8n(auto_callback=True)
    herald.sidecar()
    identity = "herald-0"
    op = herald.operator(fake.url, identity, concurrency=32)

    lead = 8.0 + posts / 100  # time to create the posts before the first is due
    t0 = time.time() + lead
    created = create_posts(
        herald.client,
        herald.namespace,
        [(f"crash-{i:04d}", t0 + spread * i / posts, {}) for i in range(posts)],
    )
    report.update(
        {"posts": posts, "kills_planned": kills, "spread_s": spread, "create_s": round(created, 1)}
    )
    time.sleep(max(0.0, t0 - time.time()))

    # Kill at random moments while the burst is due: sometimes right after the restart
    # (reclaiming orphans), sometimes in the middle of dispatching.
    kill_times: list[float] = []
    restart_seconds: list[float] = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 4.0))
        op.kill()
        kill_times.append(round(time.time() - t0, 2))
        started = time.monotonic()
        op = herald.operator(fake.url, identity, concurrency=32)
        restart_seconds.append(round(time.monotonic() - started, 2))
    report["kills"] = len(kill_times)
    report["kill_at_s"] = kill_times
    report["restart_s_max"] = max(restart_seconds) if restart_seconds else None

    result, _ = herald.finish(fake, posts, report, timeout=120)
    assert len(kill_times) >= kills
    assert not result.violations, result.summary()
