"""SIGKILL during the record grace while n8n's execution still runs (issue 16).

n8n answers 2xx at once and its workflow runs 8 s before it calls back. The operator,
which waits up to record_grace_seconds (5 s) for that callback before recording the
acknowledgement itself, is SIGKILLed 1.5 s after the 2xx: nothing durable says that
n8n has the post. It comes back with the same identity (a container restart). The post
must be published once: no request may reach n8n after its 2xx for the same
Idempotency-Key.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Herald, Report, StartN8n
from tests.support.faults import after_2xx, create_posts

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

EXECUTION = 8.0
KILL_AFTER_2XX = 1.5


@pytest.mark.timeout(120)
def test_sigkill_in_the_record_grace_does_not_publish_twice(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    fake = n8n(auto_callback=True, callback_delay=EXECUTION)
    herald.sidecar()
    op = herald.operator(fake.url, "herald-0")
    create_posts(herald.client, herald.namespace, [("graced", time.time() + 4.0, {})])

    deadline = time.monotonic() + 20
    answered: float | None = None
    while answered is None and time.monotonic() < deadline:
        sent = [r for r in fake.snapshot() if r.body.get("name") == "graced" and r.accepted]
        answered = sent[0].answered_at if sent else None
        time.sleep(0.02)
    assert answered is not None, "n8n never accepted the post"
    time.sleep(max(0.0, answered + KILL_AFTER_2XX - time.time()))
    op.kill()
    status = herald.client.get(
        f"/apis/herald.dev/v1alpha1/namespaces/{herald.namespace}/scheduledposts/graced"
    ).json()["status"]
    report.update(
        {
            "execution_s": EXECUTION,
            "killed_after_2xx_s": KILL_AFTER_2XX,
            "phase_at_kill": status.get("phase"),
            "acknowledgement_recorded_at_kill": bool(status.get("dispatchedAt")),
        }
    )
    assert status.get("phase") == "Publishing" and not status.get("dispatchedAt"), (
        f"the kill missed the record grace (status {status}): the test proves nothing"
    )
    herald.operator(fake.url, "herald-0")

    result, _ = herald.finish(fake, 1, report, timeout=60, grace=EXECUTION)
    again = [
        (ok.message, r.message, round(r.at - ok.at, 2)) for ok, r in after_2xx(fake.snapshot())
    ]
    report["requests_after_2xx_same_key"] = len(again)
    assert again == [], (
        f"sent again while n8n was still running the accepted attempt "
        f"((uid, attempt) accepted, (uid, attempt) re-sent, seconds later): {again}"
    )
    assert not result.violations, result.summary()
