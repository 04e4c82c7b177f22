"""The operator's kopf wiring, in process: controller.registry under kopf's KopfRunner.

Beside the subprocess end-to-end tests, this runs the same handlers in a thread of the
test process against the real control plane, where their objects can be looked at:
startup puts the runtime in kopf's memo, the liveness endpoint answers from the
dispatcher probe, a post gets its first status, and cleanup closes every client.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from kopf.testing import KopfRunner

from herald import controller
from tests.e2e.conftest import Posts, in_seconds
from tests.support import inprocess
from tests.support.controlplane import ControlPlane, free_port
from tests.support.fake_n8n import FakeN8n

pytestmark = pytest.mark.e2e


def wait_for_liveness(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first 200 of kopf's liveness endpoint (it answers 500 until startup is done)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            last = f"{response.status_code} {response.text}"
        time.sleep(0.1)
    raise TimeoutError(f"liveness endpoint not healthy in {timeout}s: {last}")


def test_wiring_startup_probe_first_status_and_cleanup(
    control_plane: ControlPlane,
    namespace: str,
    posts: Posts,
    fake_n8n: FakeN8n,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every handler reaches the runtime through controller._runtime(memo); the memos it is
    # given (recorded, nothing changed) show what startup left there.
    memos = inprocess.prepare(
        monkeypatch, control_plane.kubeconfig, fake_n8n.url, namespaces=json.dumps([namespace])
    )
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    args = ["run", "--standalone", "--namespace", namespace, "--liveness", liveness]

    with KopfRunner(args, registry=controller.registry, timeout=60) as runner:
        health = wait_for_liveness(liveness)
        # The probe's result is the dispatcher's heartbeat age, in seconds.
        assert set(health) == {"dispatcher"}, health
        assert 0 <= health["dispatcher"] < 60
        runtime = memos[-1]["herald"]
        assert isinstance(runtime, controller.Runtime)
        assert runtime.settings.namespaces == [namespace]
        assert runtime.loop_task is not None and not runtime.loop_task.done()

        uid = posts.create("in-process", in_seconds(3600))["metadata"]["uid"]
        deadline = time.monotonic() + 20
        while runtime.dispatcher.cache.get(uid) is None:
            assert time.monotonic() < deadline, "the operator never saw the post"
            time.sleep(0.1)
        # Known, and not written: a Pending post's first write is its claim.
        assert posts.status("in-process") == {
            "phase": "Pending",
            "attempt": 0,
            "retryEpoch": 0,
            "retryBaseAttempt": 0,
        }
        posts.create("in-process-due", in_seconds(1))
        [received] = fake_n8n.wait_for("in-process-due", 1, timeout=20)
        assert received.body["namespace"] == namespace
        posts.wait_phase("in-process-due", "Publishing", timeout=20)
        assert runtime.watching

    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    # Cleanup ran: the dispatcher loop ended and both HTTP clients are closed.
    assert runtime.loop_task is not None and runtime.loop_task.done()
    assert runtime.n8n._client.is_closed
    assert runtime.kube.closed
