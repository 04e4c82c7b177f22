"""Posts kept in git and applied by Argo CD or Flux (issue 20, items 5 and 6), end to end:
the real API server, a real `herald run` with its default settings, a fake n8n that
records every request, and real kubectl.

- A cluster rebuilt from git gets every old post again: the operator's default starting
  deadline (a day) fails them with MissedDeadline instead of publishing them years late.
- The status follows the kstatus conventions, so `kubectl wait --for=condition=Ready`
  and Flux's health checks see a Scheduled post as ready and a Failed one as stalled; a
  Pending post (never written: no conditions) is Current for Flux and Healthy for Argo CD:
  checked with the real kstatus library (hack/kstatus, built by `hack/tools.sh kstatus`)
  and the chart's Argo CD health check on live posts in every phase.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Posts, in_seconds
from tests.support.controlplane import ControlPlane, require_binary
from tests.support.fake_n8n import FakeN8n, Reply
from tests.support.herald_proc import HeraldProcess
from tests.support.window_helpers import status_patches
from tests.unit.test_argocd_health import health

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
            name,
            lambda s: s.get("phase") not in (None, "Pending", "Scheduled"),
            what="left Pending",
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
    posts.create("tomorrow", in_seconds(86400), suspend=True)  # accepted by a write
    pending = posts.create("later", in_seconds(86400))
    # Never written: Pending by the CRD's default, no conditions (kstatus: Current).
    assert pending["status"]["phase"] == "Pending" and "conditions" not in pending["status"]
    posts.wait_phase("tomorrow", "Suspended")
    posts.patch_spec("tomorrow", {"suspend": False})
    posts.wait_phase("tomorrow", "Scheduled")
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
    assert ready["observedGeneration"] == status["observedGeneration"] == 2

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
    # The kstatus conditions rode in the writes that happen anyway: claim, fail (a
    # Pending post has no accept write).
    time.sleep(1)  # nothing else is due: a write still on its way would show up here
    assert status_patches(admin_client, "200") - writes_before == 2
    assert failed["attempt"] == 1 and len(fake_n8n.for_post("refused")) == 1


def test_kstatus_library_and_argocd_health_of_live_posts_in_every_phase(
    posts: Posts,
    fake_n8n: FakeN8n,
    herald: Start,
    control_plane: ControlPlane,
    namespace: str,
    admin_client: httpx.Client,
) -> None:
    """The real sigs.k8s.io/cli-utils kstatus (what Flux computes) and the chart's Lua
    health check (what Argo CD computes) on live objects the operator wrote."""
    # A long backoff holds the failed attempt in Retrying; no callback holds Publishing.
    herald(fake_n8n.url, backoff_seconds=300, max_backoff_seconds=600)
    fake_n8n.script("retrying", 503)
    fake_n8n.script("published", Reply(200, {"status": "published", "externalId": "urn:1"}))
    fake_n8n.script("failed", Reply(400, {"message": "text refused"}))
    posts.create("pending", in_seconds(86400))
    posts.create("scheduled", in_seconds(86400), suspend=True)  # resumed below
    posts.create("suspended", in_seconds(60), suspend=True)
    for name in ("publishing", "retrying", "published", "failed"):
        posts.create(name, in_seconds(0))
    posts.wait_phase("scheduled", "Suspended")
    posts.patch_spec("scheduled", {"suspend": False})
    phases = {
        "pending": "Pending",
        "scheduled": "Scheduled",
        "suspended": "Suspended",
        "publishing": "Publishing",
        "retrying": "Retrying",
        "published": "Published",
        "failed": "Failed",
    }
    for name, phase in phases.items():
        posts.wait_phase(name, phase)

    # An edit the operator has not seen yet: a post in a namespace no operator watches,
    # given a Scheduled status for generation 1, then edited (generation 2).
    other = f"{namespace}-unwatched"
    control_plane.kubectl("create", "namespace", other)
    unwatched = Posts(control_plane, admin_client, other)
    unwatched.create("edited", in_seconds(86400))
    accepted = {**posts.status("scheduled"), "observedGeneration": 1}
    response = admin_client.put(
        unwatched.url("edited") + "/status",
        json={**unwatched.get("edited"), "status": accepted},
    )
    assert response.status_code == 200, response.text
    unwatched.patch_spec("edited", {"content": {"text": "Edited"}})
    assert unwatched.get("edited")["metadata"]["generation"] == 2

    live = json.loads(control_plane.kubectl("get", "sp", "-n", namespace, "-o", "json").stdout)
    live["items"] = [o for o in live["items"] if o["metadata"]["name"] in phases]
    live["items"].append(unwatched.get("edited"))
    computed = subprocess.run(
        [require_binary("kstatus-check")],
        input=json.dumps(live),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    kstatus = {r["name"]: r["status"] for r in map(json.loads, computed.splitlines())}
    assert kstatus == {
        "pending": "Current",
        "scheduled": "Current",
        "suspended": "Current",
        "publishing": "InProgress",
        "retrying": "InProgress",
        "published": "Current",
        "failed": "Failed",
        "edited": "InProgress",
    }, computed

    argocd = {o["metadata"]["name"]: health(o)["status"] for o in live["items"]}
    assert argocd == {
        "pending": "Healthy",
        "scheduled": "Healthy",
        "suspended": "Suspended",
        "publishing": "Progressing",
        "retrying": "Progressing",
        "published": "Healthy",
        "failed": "Degraded",
        "edited": "Progressing",
    }
