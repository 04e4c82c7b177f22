"""A late send against a take-over (issue 16, window 2).

Two replicas. Replica "herald-a" may send one request at a time to the target (its
target concurrency is 1), n8n takes 3 s per request, and 24 posts fall due at once:
whatever herald-a claimed waits in line behind its own sends, up to half a minute,
past the moment its peer may take a claim over (request deadline 5 s + record grace
5 s + 10 s). Whoever sends, n8n must never have two attempts of one post at the same
time, and no request may reach n8n after its 2xx for the same Idempotency-Key.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.fake_n8n import Reply
from tests.support.faults import after_2xx, create_posts, overlapping

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

N8N_TAKES = 3.0
TIMEOUT = 5


@pytest.mark.timeout(180)
def test_a_parked_claim_is_not_sent_beside_a_take_over(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    posts = size("takeover_posts", 24)
    fake = n8n(auto_callback=True)
    fake.default = Reply(200, {"status": "accepted"}, delay=N8N_TAKES)
    herald.sidecar()
    common = {"targets__default__timeout_seconds": TIMEOUT}
    herald.operator(fake.url, "herald-a", targets__default__concurrency=1, **common)
    herald.operator(fake.url, "herald-b", **common)
    t0 = time.time() + 8.0
    create_posts(herald.client, herald.namespace, [(f"race-{i:02d}", t0, {}) for i in range(posts)])
    report.update({"posts": posts, "n8n_takes_s": N8N_TAKES, "replica_a_target_concurrency": 1})

    result, _ = herald.finish(fake, posts, report, timeout=90, grace=4.0)
    requests = fake.snapshot()
    both = [
        (a.message, b.message, round(b.at - a.at, 2))
        for a, b in overlapping(requests, deadline=TIMEOUT)
    ]
    again = [(ok.message, r.message, round(r.at - ok.at, 2)) for ok, r in after_2xx(requests)]
    report.update({"overlapping_attempts": len(both), "requests_after_2xx_same_key": len(again)})
    assert both == [], f"two attempts of one post at n8n at once ((uid, attempt) pairs): {both}"
    assert again == [], f"sent again after n8n's 2xx for the same Idempotency-Key: {again}"
    assert not result.violations, result.summary()
