"""Rolling update: two operator replicas share a burst; mid-burst one is replaced as a
Deployment does it (the new pod starts, then the old one gets SIGTERM) while the other
keeps running. Nothing is lost, nothing is sent twice.

Default size 200 posts over 30 s (HERALD_FAULTS_ROLLING_POSTS to change it).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.faults import create_posts

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


@pytest.mark.timeout(240)
def test_replacing_one_of_two_replicas_mid_burst(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    posts = size("rolling_posts", 200)
    spread = size("rolling_spread_seconds", 30)
    fake = n8n(auto_callback=True)
    herald.sidecar()
    old = herald.operator(fake.url, "herald-6f7c9-aaaaa", concurrency=32)
    herald.operator(fake.url, "herald-6f7c9-bbbbb", concurrency=32)
    t0 = time.time() + 6.0 + posts / 100
    create_posts(
        herald.client,
        herald.namespace,
        [(f"roll-{i:04d}", t0 + spread * i / posts, {}) for i in range(posts)],
    )
    time.sleep(max(0.0, t0 + spread / 3 - time.time()))
    replaced_at = time.time()
    herald.operator(fake.url, "herald-58d4b-ccccc", concurrency=32)
    terminated_at = time.time()
    code = old.stop()
    report.update(
        {
            "posts": posts,
            "spread_s": spread,
            "new_replica_up_at_s": round(terminated_at - t0, 1),
            "new_replica_start_s": round(terminated_at - replaced_at, 1),
            "old_replica_exit": code,
            "old_replica_stop_s": round(time.time() - terminated_at, 1),
        }
    )
    result, objs = herald.finish(fake, posts, report, timeout=120)
    report["claimed_by"] = dict(
        Counter(str((o.get("status") or {}).get("claimedBy", "?")).split("/")[0][-5:] for o in objs)
    )
    assert not result.violations, result.summary()
