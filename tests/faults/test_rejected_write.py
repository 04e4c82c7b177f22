"""Rejected writes: one replica's claims are refused by the API server's schema, the
other replica's are not. The bad replica backs off (its rate of rejected writes is
bounded), says why in its log, and the good replica still publishes every post.

How the writes are made to fail: the CRD caps status.claimedBy at 253 characters
(crds/scheduledposts.herald.dev.yaml) and a claim writes `<identity>/<8 hex>`, so an
identity of 250 characters makes every claim of that replica invalid (422, naming
status.claimedBy), while its other writes (a suspended post's accept, a release) pass.
Backing off is measured where it shows: the rate of rejected writes 5-10 s after the
posts fell due must be at most 0.5 per post per second (a backoff starting at 1 s and
doubling makes at most 2 attempts per post in that window).
The rejected writes are counted by the API server itself: apiserver_request_total
{verb=PATCH, resource=scheduledposts, subresource=status, code=422}; the good replica
and the sidecar lose no compare-and-swap against a replica that never writes a claim,
so these are the bad replica's.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.faults import create_posts, metric_sum, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

BAD_IDENTITY = "herald-bad-" + "x" * 239  # 250 characters; claimedBy would be 259
ALONE_SECONDS = 10.0
MAX_PER_POST_PER_SECOND = 0.5


def rejected(client: httpx.Client) -> float:
    metrics = scrape("/metrics", client)
    return metric_sum(
        metrics,
        "apiserver_request_total",
        verb="PATCH",
        resource="scheduledposts",
        subresource="status",
        code="422",
    )


@pytest.mark.timeout(240)
def test_a_replica_whose_writes_are_rejected_backs_off(
    herald: Herald, n8n: StartN8n, report: Report, admin_client: httpx.Client
) -> None:
    first = size("rejected_posts_alone", 20)
    second = size("rejected_posts_shared", 40)
    assert len(BAD_IDENTITY) + 9 > 253
    fake = n8n(auto_callback=True)
    herald.sidecar()
    bad = herald.operator(fake.url, BAD_IDENTITY)

    # Phase 1: only the bad replica, facing due posts it cannot claim.
    t0 = time.time() + 4.0
    create_posts(
        herald.client, herald.namespace, [(f"alone-{i:02d}", t0, {}) for i in range(first)]
    )
    time.sleep(max(0.0, t0 - time.time()))
    r0, c0 = rejected(admin_client), time.monotonic()
    conflicts0 = metric_sum(scrape(bad.metrics_url), "herald_claim_conflicts_total")
    time.sleep(ALONE_SECONDS / 2)
    rh, ch = rejected(admin_client), time.monotonic()
    time.sleep(ALONE_SECONDS / 2)
    r1, c1 = rejected(admin_client), time.monotonic()
    conflicts1 = metric_sum(scrape(bad.metrics_url), "herald_claim_conflicts_total")
    first_half = (rh - r0) / (ch - c0)
    second_half = (r1 - rh) / (c1 - ch)

    # Phase 2: the good replica joins; more posts come due while both run.
    herald.operator(fake.url, "herald-good")
    t1 = time.time() + 4.0
    create_posts(
        herald.client,
        herald.namespace,
        [(f"shared-{i:02d}", t1 + i * 0.25, {}) for i in range(second)],
    )
    result, objs = herald.finish(fake, first + second, report, timeout=90)
    r2, c2 = rejected(admin_client), time.monotonic()
    bound = first * MAX_PER_POST_PER_SECOND
    log = bad.process.log()
    claimants = {str((o.get("status") or {}).get("claimedBy", "")).split("/")[0][:12] for o in objs}
    report.update(
        {
            "posts": first + second,
            "bad_identity_len": len(BAD_IDENTITY),
            "rejected_writes_alone": int(r1 - r0),
            "rejected_per_s_alone_first_5s": round(first_half, 1),
            "rejected_per_s_alone_last_5s": round(second_half, 1),
            "rejected_writes_shared_phase": int(r2 - r1),
            "rejected_per_s_shared_phase": round((r2 - r1) / (c2 - c1), 1),
            "bad_claim_conflicts_metric_alone": int(conflicts1 - conflicts0),
            "bound_per_s_alone_last_5s": bound,
            "bad_log_names_claimedBy": "claimedBy" in log,
            "claimants": sorted(claimants),
        }
    )
    assert not result.violations, result.summary()
    assert r1 - r0 > 0, "the bad replica's claims were not rejected: the scenario is void"
    assert second_half <= bound, (
        f"{second_half:.1f} rejected writes/s from the bad replica, 5-10 s after {first} posts "
        f"fell due (first 5 s: {first_half:.1f}/s; bound {bound:.0f}/s: backing off from 1 s "
        "would stay well under it)"
    )
    assert "claimedBy" in log, "the bad replica's log does not say which field was rejected"
    assert all(c.startswith("herald-good") for c in claimants), claimants
