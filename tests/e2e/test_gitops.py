"""Posts kept in git and applied by Argo CD or Flux (issue 20, items 5 and 6), end to end:
the real API server, a real `herald run` with its default settings, a fake n8n that
records every request, and real kubectl.

- A cluster rebuilt from git gets every old post again: the operator's default starting
  deadline (a day) fails them with MissedDeadline instead of publishing them years late.
- The status follows the kstatus conventions, so `kubectl wait --for=condition=Ready`
  and Flux's health checks see a Scheduled post as ready and a Failed one as stalled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.herald_proc import HeraldProcess
from tests.support.window_helpers import status_patches

pytestmark = pytest.mark.e2e
Start = Callable[..., HeraldProcess]

THREE_DAYS = 3 * 86400
RESTORED = 20


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_posts_restored_three_days_late_fail_and_a_slightly_late_one_publishes(
    posts: Posts, fake_n8n: FakeN8n, herald: Start
) -> None:
    herald(fake_n8n.url)  # the operator's own default deadline: no setting passed
    long_ago = in_seconds(-THREE_DAYS)
    names = [f"restored-{i}" for i in range(RESTORED)]
    for name in names:
        posts.create(name, long_ago)
    # Its own deadline (a year) overrides the operator's default: published late.
    posts.create("wants-late", long_ago, startingDeadlineSeconds=31536000)
    posts.create("just-late", in_seconds(-30))  # within the default deadline: at once

    fake_n8n.wait_for("just-late", 1, timeout=20)
    fake_n8n.wait_for("wants-late", 1, timeout=20)
    ended = {
        name: posts.wait(
            name, lambda s: s.get("phase") not in (None, "Scheduled"), what="left Scheduled"
        )
        for name in names
    }
    sent = [r.body["name"] for r in fake_n8n.snapshot() if r.body["name"] in ended]
    assert sent == [], f"{len(set(sent))} of {RESTORED} posts due 3 days ago reached n8n"
    for name, status in ended.items():
        assert status["phase"] == "Failed", (name, status)
        assert status["lastError"]["code"] == "MissedDeadline", (name, status)
        assert conditions(status)["Published"] == ("False", "MissedDeadline")
    event = posts.wait_event(names[0], "MissedDeadline")
    assert event["type"] == "Warning"
    # How late, and which setting: the user can tell what to change.
    assert "(3d 0h) after the scheduled time" in event["message"], event["message"]
    assert "defaultStartingDeadlineSeconds=86400" in event["message"], event["message"]


def test_kstatus_conditions_ready_for_kubectl_wait_and_stalled_when_failed(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    namespace: str,
    admin_client: httpx.Client,
) -> None:
    herald(fake_n8n.url)
    fake_n8n.script("refused", Reply(400, {"message": "text too long for channel"}))
    posts.create("tomorrow", in_seconds(86400))
    waited = control_plane.kubectl(
        "wait",
        "--for=condition=Ready",
        "scheduledpost/tomorrow",
        "-n",
        namespace,
        "--timeout=20s",
        check=False,
    )
    assert waited.returncode == 0, waited.stderr
    status = posts.status("tomorrow")
    assert status["phase"] == "Scheduled"
    assert conditions(status)["Ready"] == ("True", "Scheduled")
    assert "Reconciling" not in conditions(status) and "Stalled" not in conditions(status)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("Publishes at "), ready
    assert ready["observedGeneration"] == status["observedGeneration"] == 1

    writes_before = status_patches(admin_client, "200")
    posts.create("refused", in_seconds(0))
    failed = posts.wait_phase("refused", "Failed")
    got = conditions(failed)
    assert got["Stalled"] == ("True", "PermanentFailure"), got
    assert got["Ready"] == ("False", "PermanentFailure"), got
    assert "Reconciling" not in got
    stalled = control_plane.kubectl(
        "wait",
        "--for=condition=Stalled",
        "scheduledpost/refused",
        "-n",
        namespace,
        "--timeout=5s",
        check=False,
    )
    assert stalled.returncode == 0, stalled.stderr
    # The kstatus conditions rode in the writes that happen anyway: accept, claim, fail.
    time.sleep(1)  # nothing else is due: a write still on its way would show up here
    assert status_patches(admin_client, "200") - writes_before == 3
    assert failed["attempt"] == 1 and len(fake_n8n.for_post("refused")) == 1
