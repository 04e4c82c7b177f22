"""A hung half-open probe: posts due for that target wait for the probe's outcome without
writing (issue 16, window 1).

n8n answers 503 to three posts, which opens the target's circuit (threshold 3, first
open period 2 s). Then n8n accepts requests but holds each one 15 s (the target's
timeout is 20 s, so the probe really hangs), and 200 posts fall due. The first of them
is the half-open probe; the other 199 are due while it is out. While the probe hangs,
the API server must see at most one status write per post (PATCHes of
scheduledposts/status, any answer, counted by the API server itself, as bench/ does),
and n8n no other request. Then the probe's 2xx closes the circuit and every post is
published.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n, size
from tests.support.fake_n8n import Received, Reply
from tests.support.faults import create_posts
from tests.support.window_helpers import apiserver_count

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

PROBE_HANGS = 15.0
OPENERS = 3


def _status_patches(herald: Herald) -> float:
    return apiserver_count(
        herald.client,
        "apiserver_request_total",
        resource="scheduledposts",
        subresource="status",
        verb="PATCH",
    )


def _gets(herald: Herald) -> float:
    return apiserver_count(
        herald.client, "apiserver_request_total", resource="scheduledposts", verb="GET"
    )


def _first_due(requests: list[Received]) -> Received | None:
    due = [r for r in requests if str(r.body.get("name", "")).startswith("due-")]
    return min(due, key=lambda r: r.at) if due else None


@pytest.mark.timeout(150)
def test_posts_due_during_a_hung_probe_wait_without_writing(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    posts = size("probe_posts", 200)
    fake = n8n(auto_callback=True)
    fake.default = Reply(200, {"status": "accepted"}, delay=PROBE_HANGS)
    herald.sidecar()
    herald.operator(
        fake.url,
        "herald-0",
        targets__default__timeout_seconds=PROBE_HANGS + 5,
        circuit_failure_threshold=OPENERS,
        circuit_open_min_seconds=2,
    )
    t0 = time.time() + 6.0 + posts / 40
    openers = [f"opener-{i}" for i in range(OPENERS)]
    for name in openers:
        fake.script(name, 503)
    plan = [(name, t0, {"retry": {"maxAttempts": 1}}) for name in openers]
    plan += [(f"due-{i:03d}", t0 + 5.0, {}) for i in range(posts)]
    create_posts(herald.client, herald.namespace, plan)
    report.update({"posts": len(plan), "due_during_probe": posts - 1, "probe_hangs_s": 15})

    deadline = time.time() + 5.0 + (t0 - time.time()) + 20.0
    probe = _first_due(fake.snapshot())
    while probe is None and time.time() < deadline:
        time.sleep(0.05)
        probe = _first_due(fake.snapshot())
    assert probe is not None, "no post was sent after the circuit opened: no probe"
    fake.default = Reply(200, {"status": "accepted"})  # later requests are answered at once
    opened = [r for r in fake.snapshot() if r.body.get("name") in openers and r.answered == 503]
    assert len(opened) == OPENERS, f"{len(opened)} of {OPENERS} failures: did the circuit open?"

    # Measure while the probe is certainly out: from 0.5 s after it left to 0.5 s before
    # its answer is due.
    time.sleep(max(0.0, probe.at + 0.5 - time.time()))
    patches, gets = _status_patches(herald), _gets(herald)
    time.sleep(max(0.0, probe.at + PROBE_HANGS - 0.5 - time.time()))
    patches = _status_patches(herald) - patches
    gets = _gets(herald) - gets
    measured = PROBE_HANGS - 1.0
    sent_meanwhile = [
        r
        for r in fake.snapshot()
        if r is not probe and probe.at < r.at < probe.at + PROBE_HANGS - 0.5
    ]
    report.update(
        {
            "status_patches_during_probe": int(patches),
            "gets_during_probe": int(gets),
            "measured_s": measured,
            "requests_during_probe": len(sent_meanwhile),
        }
    )

    result, _ = herald.finish(fake, len(plan), report, timeout=60)
    assert patches <= posts, (
        f"{patches:.0f} status PATCHes (and {gets:.0f} GETs) in {measured:.0f} s while one "
        f"probe hung, for {posts - 1} posts due meanwhile: more than one write per post"
    )
    assert sent_meanwhile == [], f"{len(sent_meanwhile)} requests went out beside the probe"
    assert not result.violations, result.summary()
