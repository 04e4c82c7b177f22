"""n8n outage: n8n answers 503, or refuses connections, for 30 s in the middle of a minute
of due posts. No post fails because of it, and the circuit breaker bounds how many
requests hit the dead n8n.

Shortened for a bounded test (said in the report): the posts' spec.retry backs off
5 s doubling to 20 s (default policy: 60 s to 1 h) with the default 5 attempts, and the
operator's circuit_open_seconds is 5 (default 300). Threshold (10 failures) and
concurrency (16) are the defaults.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.fake_n8n import OutageMode
from tests.support.faults import create_posts, metric_sum, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

THRESHOLD = 10
CONCURRENCY = 16
OPEN_SECONDS = 5
RETRY = {"backoffSeconds": 5, "maxBackoffSeconds": 20}


def _dispatches(url: str) -> dict[str, float]:
    metrics = scrape(url)
    return {
        outcome: metric_sum(metrics, "herald_dispatch_total", outcome=outcome)
        for outcome in ("accepted", "published", "transient", "permanent", "deferred_circuit_open")
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["503", "refuse"])
def test_outage_fails_nothing_and_the_breaker_bounds_requests(
    herald: Herald, n8n: StartN8n, report: Report, mode: OutageMode
) -> None:
    posts = size("outage_posts", 300)
    window = size("outage_window_seconds", 60)
    outage = size("outage_seconds", 30)
    fake = n8n(auto_callback=True)
    herald.sidecar()
    op = herald.operator(
        fake.url,
        "herald-0",
        circuit_open_seconds=OPEN_SECONDS,
        circuit_failure_threshold=THRESHOLD,
        concurrency=CONCURRENCY,
    )
    t0 = time.time() + 6.0 + posts / 100
    create_posts(
        herald.client,
        herald.namespace,
        [(f"out-{i:04d}", t0 + window * i / posts, {"retry": RETRY}) for i in range(posts)],
    )
    start = t0 + (window - outage) / 2
    end = start + outage
    fake.outage(start, end, mode)
    report.update(
        {
            "mode": mode,
            "posts": posts,
            "window_s": window,
            "outage_s": outage,
            "circuit_open_seconds": OPEN_SECONDS,
            "retry": RETRY,
        }
    )

    time.sleep(max(0.0, start - time.time()))
    before = _dispatches(op.metrics_url)
    time.sleep(max(0.0, end - time.time()))
    after = _dispatches(op.metrics_url)

    result, _ = herald.finish(fake, posts, report, timeout=120)
    # What reached n8n during the window (503 mode), and what the operator tried (both).
    seen = sum(1 for r in fake.snapshot() if start <= r.at < end)
    tried = after["transient"] - before["transient"]
    deferred = after["deferred_circuit_open"] - before["deferred_circuit_open"]
    bound = THRESHOLD + CONCURRENCY + math.ceil(outage / OPEN_SECONDS) + 2
    report.update(
        {
            "requests_seen_by_n8n_during_outage": seen,
            "failed_requests_during_outage": tried,
            "deferred_by_breaker_during_outage": deferred,
            "request_bound": bound,
        }
    )
    assert not result.violations, result.summary()
    assert result.figures["phases"].get("Failed", 0) == 0, result.summary()
    assert tried <= bound, f"{tried} requests failed during the {outage}s outage (bound {bound})"
