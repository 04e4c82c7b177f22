"""SIGKILLs around the publication ledger (issue 20): a post is published once, across
restarts and across a delete and re-apply of its manifest.

1. Killed between the record's creation and the send. The record is written with the
   claim, ahead of the due second; the operator dies before the due second and comes
   back with the same identity (a container restart). The post is published once.
2. Killed after the send, before the status write. n8n holds the request 2 s (so the
   operator dies with it in flight) and calls back 3 s after answering. While the
   operator is down the post is deleted and its manifest applied again (a GitOps sync);
   the callback for the deleted post reaches the sidecar. After the restart the new
   object must not be sent: the record says Published.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.conftest import Herald, Report, StartN8n
from tests.support.fake_n8n import Reply
from tests.support.faults import API, create_posts

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def post_url(herald: Herald, name: str) -> str:
    return f"{API}/namespaces/{herald.namespace}/scheduledposts/{name}"


def records(herald: Herald) -> list[dict[str, Any]]:
    response = herald.client.get(f"{API}/namespaces/{herald.namespace}/publications")
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_status(herald: Herald, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = herald.client.get(post_url(herald, name))
        if response.status_code == 200:
            status = response.json().get("status") or {}
            if status.get("phase") in phases:
                return status
        time.sleep(0.2)
    raise AssertionError(f"{name}: not {sorted(phases)} in {timeout}s; last status {status}")


def reason(status: dict[str, Any]) -> str | None:
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Published"), {})
    return cond.get("reason")


@pytest.mark.timeout(120)
def test_sigkill_between_the_record_and_the_send_publishes_once_after_restart(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    fake = n8n(auto_callback=True, callback_delay=0.5)
    herald.sidecar()
    # A short request deadline (so a short claim timeout): the restarted operator takes
    # its own orphaned claim over soon.
    settings = {"targets__default__timeout_seconds": 2, "record_grace_seconds": 1}
    op = herald.operator(fake.url, "herald-0", **settings)
    due = time.time() + 8.0
    create_posts(herald.client, herald.namespace, [("ahead", due, {})])
    deadline = time.monotonic() + 6
    while not records(herald) and time.monotonic() < deadline:
        time.sleep(0.05)
    held = records(herald)
    op.kill()
    assert held and time.time() < due, "the record was not written before the due second"
    assert held[0]["spec"]["state"] == "Sending"
    assert fake.for_post("ahead") == [], "sent before the kill: the test proves nothing"
    herald.operator(fake.url, "herald-0", **settings)

    status = wait_status(herald, "ahead", {"Published", "Failed"}, 60)
    time.sleep(2.0)  # a second send would show now
    sent = fake.for_post("ahead")
    report.update({"killed_before_due_s": round(due - time.time(), 1), "requests": len(sent)})
    assert status["phase"] == "Published", status
    assert len(sent) == 1, [r.message for r in sent]
    [record] = records(herald)
    assert record["spec"]["state"] == "Published"


@pytest.mark.timeout(120)
def test_sigkill_after_the_send_then_re_created_is_not_sent_again(
    herald: Herald, n8n: StartN8n, report: Report
) -> None:
    fake = n8n(auto_callback=True, callback_delay=3.0, runs_when_abandoned=True)
    fake.default = Reply(200, {"status": "accepted"}, delay=2.0)
    herald.sidecar()
    op = herald.operator(fake.url, "herald-0")
    due = time.time() + 4.0
    create_posts(herald.client, herald.namespace, [("again", due, {})])
    fake.wait_for("again", 1, timeout=20)
    op.kill()  # the request is in flight: n8n holds it 2 s
    first = herald.client.get(post_url(herald, "again")).json()
    assert first["status"].get("phase") == "Publishing" and not first["status"].get(
        "dispatchedAt"
    ), f"the kill missed the send (status {first['status']}): the test proves nothing"

    # The GitOps tool syncs while the operator is down: deleted, applied again.
    herald.client.delete(post_url(herald, "again")).raise_for_status()
    deadline = time.monotonic() + 10
    while herald.client.get(post_url(herald, "again")).status_code != 404:
        assert time.monotonic() < deadline, "the post was not deleted"
        time.sleep(0.1)
    create_posts(herald.client, herald.namespace, [("again", due, {})])
    deadline = time.monotonic() + 20
    while not fake.deliveries and time.monotonic() < deadline:
        time.sleep(0.1)  # n8n's callback for the old object reaches the sidecar
    assert fake.deliveries, "n8n never called back"
    herald.operator(fake.url, "herald-0")

    status = wait_status(herald, "again", {"Published", "Failed"}, 40)
    time.sleep(2.0)  # a second send would show now
    sent = fake.for_post("again")
    report.update({"requests": len(sent), "callback_answers": [d.status for d in fake.deliveries]})
    assert len(sent) == 1, [r.message for r in sent]
    assert (status["phase"], reason(status)) == ("Published", "AlreadyPublished"), status
