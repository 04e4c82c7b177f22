"""Slow n8n: one target answers after 20 s, past its 5 s timeout; posts for a second
target due at the same moments still go out on time (p99 lateness < 1 s).

Two targets (HERALD_TARGETS__FAST__URL / __SLOW__URL) on one fake n8n. Settings for a
bounded, focused test (said in the report): the slow posts have spec.retry.maxAttempts 1
(they end Failed with reason RetriesExhausted/Timeout after one timeout) and the
operator's circuit_failure_threshold is 1000, so the breaker never opens: what is tested
is that a hung target cannot starve another, not the breaker. Concurrency is the
default (16).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.accounts import account
from tests.support.faults import create_posts, percentile, rounded

# `alone`: its bound is a latency (p99 < 1 s), which a busy neighbouring test would measure.
pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.alone]

SLOW_DELAY = 20.0
SLOW_TIMEOUT = 5


@pytest.mark.timeout(180)
def test_a_hung_target_does_not_delay_another(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    waves = size("slow_waves", 5)
    per_wave = size("slow_per_wave", 10)
    gap = 2.0
    fake = n8n(auto_callback=True)
    fake.delays["slow"] = SLOW_DELAY
    herald.sidecar()
    herald.operator(
        fake.url_for("fast"),
        "herald-0",
        targets__slow__url=fake.url_for("slow"),
        targets__slow__timeout_seconds=SLOW_TIMEOUT,
        circuit_failure_threshold=1000,
    )
    # The slow target is reached through an account of its own (issue #22).
    slow = account(
        herald.namespace, "slow", channel="linkedin", target="slow", handle="urn:li:organization:2"
    )
    herald.cp.kubectl("create", "-f", "-", input=json.dumps(slow))
    t0 = time.time() + 6.0
    plan = []
    for w in range(waves):
        at = t0 + w * gap
        plan += [(f"fast-{w}-{i}", at, {}) for i in range(per_wave)]
        plan += [
            (
                f"slow-{w}-{i}",
                at,
                {"target": "slow", "account": "slow", "retry": {"maxAttempts": 1}},
            )
            for i in range(per_wave)
        ]
    create_posts(herald.client, herald.namespace, plan)
    total = len(plan)
    report.update(
        {
            "posts": total,
            "waves": waves,
            "per_wave_per_target": per_wave,
            "slow_delay_s": SLOW_DELAY,
            "slow_timeout_s": SLOW_TIMEOUT,
        }
    )

    result, objs = herald.finish(fake, total, report, timeout=90)
    fast = [v for k, v in result.lateness.items() if k.startswith("fast-")]
    slow_failed = sum(
        1
        for o in objs
        if o["metadata"]["name"].startswith("slow-")
        and (o.get("status") or {}).get("phase") == "Failed"
    )
    p99 = percentile(fast, 99)
    report.update(
        {
            "fast_dispatched": len(fast),
            "fast_lateness_p50_s": rounded(percentile(fast, 50)),
            "fast_lateness_p99_s": rounded(p99),
            "fast_lateness_max_s": rounded(max(fast) if fast else None),
            "slow_failed": slow_failed,
        }
    )
    assert not result.violations, result.summary()
    assert len(fast) == waves * per_wave
    assert p99 is not None and p99 < 1.0, (
        f"fast target's p99 lateness {p99:.2f}s behind a hung target (max {max(fast):.2f}s)"
    )
