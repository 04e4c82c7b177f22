"""API server restart mid-burst: kube-apiserver is killed (SIGKILL: a SIGTERM'd one stops
serving at once but takes ~15 s to exit here), stays down 10 s and is started again on
the same port and etcd. The operator and the sidecar recover (the watch comes back,
pending writes are retried) and every post is finished, once.

The fake n8n retries a callback answered 503 or refused (up to 12 times, honouring the
sidecar's Retry-After up to 5 s), as the README asks of n8n's workflow.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.controlplane import ControlPlane
from tests.support.faults import create_posts

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


@pytest.mark.timeout(300)
def test_operator_and_sidecar_survive_an_apiserver_restart(
    herald: Herald, n8n: StartN8n, report: Report, control_plane: ControlPlane
) -> None:
    posts = size("apiserver_posts", 200)
    spread = size("apiserver_spread_seconds", 30)
    down_for = size("apiserver_down_seconds", 10)
    late_posts = 20
    fake = n8n(auto_callback=True, callback_retries=12)
    herald.sidecar()
    herald.operator(fake.url, "herald-0", concurrency=32)
    t0 = time.time() + 6.0 + posts / 100
    create_posts(
        herald.client,
        herald.namespace,
        [(f"api-{i:04d}", t0 + spread * i / posts, {}) for i in range(posts)],
    )
    time.sleep(max(0.0, t0 + spread / 4 - time.time()))
    stopped_at = time.time()
    try:
        control_plane.stop_apiserver(kill=True)
        time.sleep(down_for)
    finally:
        ready_in = control_plane.start_apiserver()
    report.update(
        {
            "posts": posts + late_posts,
            "spread_s": spread,
            "down_s": down_for,
            "stopped_at_s": round(stopped_at - t0, 1),
            "apiserver_ready_in_s": round(ready_in, 1),
            "outage_total_s": round(time.time() - stopped_at, 1),
        }
    )
    # Posts created after the restart prove the watch came back, not just the writes.
    t1 = time.time() + 5.0
    create_posts(
        herald.client,
        herald.namespace,
        [(f"after-{i:02d}", t1 + i * 0.1, {}) for i in range(late_posts)],
    )
    result, _ = herald.finish(fake, posts + late_posts, report, timeout=150)
    report["callback_503_or_refused"] = sum(1 for d in fake.deliveries if d.status in (0, 503))
    report.update(
        herald.log_counts(
            {
                "operator_write_retries": "status write failed",
                "operator_outcomes_unrecorded": "could not record the outcome",
                "sidecar_503": "API server unavailable",
            }
        )
    )
    assert not result.violations, result.summary()
